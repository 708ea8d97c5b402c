"""ALLIO client: ``POST /reserve/list`` and ``/dealcard/list`` on the shared provider base.

Only ALLIO specifics live here: Bearer auth, the ``{"success", "data", "total"}``
envelope, 100 ids per call with ``limit``/``offset`` paging.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import httpx

from orchestration.resources.base import ProviderClient
from orchestration.resources.errors import ProviderResponseError

Entity = Literal["reserve", "dealcard"]
BATCH_SIZE = 100


def unique_ids(ids: Iterable[int | str]) -> list[int]:
    """Ids as ints, duplicates dropped, first-seen order kept."""
    return list(dict.fromkeys(int(i) for i in ids))


class AllioClient(ProviderClient):
    """One ALLIO account (token) at one base URL."""

    provider = "allio"

    def reserve_list(self, ids: Iterable[int | str]) -> list[dict[str, Any]]:
        """Reserves for ``ids`` (missing ids are simply absent)."""
        return self.list_records("reserve", ids)

    def dealcard_list(self, ids: Iterable[int | str]) -> list[dict[str, Any]]:
        """Deal cards for ``ids`` (missing ids are simply absent)."""
        return self.list_records("dealcard", ids)

    def list_records(self, entity: Entity, ids: Iterable[int | str]) -> list[dict[str, Any]]:
        """``/{entity}/list`` in batches of 100 ids, following ``total``/``offset``."""
        wanted = unique_ids(ids)
        self.stats.add(ids_requested=len(wanted))
        records: list[dict[str, Any]] = []
        for start in range(0, len(wanted), BATCH_SIZE):
            batch = wanted[start : start + BATCH_SIZE]
            offset = 0
            while True:
                body = {"indexes": batch, "limit": BATCH_SIZE, "offset": offset}
                page = self.request("POST", f"/{entity}/list", json=body)
                records.extend(page["data"])
                offset += len(page["data"])
                if not page["data"] or offset >= page["total"]:
                    break
        return records

    def parse_response(self, response: httpx.Response) -> dict[str, Any]:
        """Check the ``{"success": true, "data": [...], "total": N}`` envelope."""
        body = self.decode_json(response)
        if isinstance(body, dict) and body.get("success") is False:
            raise ProviderResponseError(
                f"error envelope: {str(body.get('error'))[:200]}",
                provider=self.provider,
                status_code=response.status_code,
            )
        if (
            not isinstance(body, dict)
            or body.get("success") is not True
            or not isinstance(body.get("data"), list)
            or not all(isinstance(r, dict) for r in body["data"])
        ):
            raise ProviderResponseError(
                "unexpected body: want {success: true, data: [objects], total}",
                provider=self.provider,
                status_code=response.status_code,
            )
        total = body.get("total")
        # Without `total` a short page could hide the rest: paging, and delete control's
        # "absent" verdict, would be guesses.
        if not isinstance(total, int) or isinstance(total, bool) or total < 0:
            raise ProviderResponseError(
                "unexpected body: `total` missing or not a non-negative integer",
                provider=self.provider,
                status_code=response.status_code,
            )
        return body
