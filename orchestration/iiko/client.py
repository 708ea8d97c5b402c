"""iiko Cloud API client on the shared provider base.

Only iiko specifics live here: every method is ``POST /api/1/...`` with JSON, errors
come as ``{"correlationId", "errorDescription", "error"}`` with 400/401/408/500, the
access token is fetched with ``apiLogin`` (orchestration.defs.iiko.resources wires
``FetchedTokenAuth``), and ``deliveries/by_id`` takes at most 200 order ids a call.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

import httpx

from crm_sync.redaction import redact_body
from orchestration.resources.base import ProviderClient, parse_retry_after
from orchestration.resources.errors import (
    ProviderAuthError,
    ProviderRateLimitedError,
    ProviderRequestError,
    ProviderResponseError,
    ProviderUnavailableError,
)

API_PREFIX = "/api/1/"
ACCESS_TOKEN_PATH = "/api/1/access_token"  # noqa: S105 - a name, not a secret
BY_ID_BATCH = 200  # deliveries/by_id: "Maximum allowed orderIds to request - 200"
TOKEN_TTL_SECONDS = 3600  # "The standard token lifetime is 1 hour."
DATE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # iiko's "yyyy-MM-dd HH:mm:ss.fff"


def iiko_time(value: datetime | date | str) -> str:
    """A time as iiko writes it: ``yyyy-MM-dd HH:mm:ss.fff`` (a date is its midnight)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return value.strftime(DATE_FORMAT)[:-3]


def api_path(path: str) -> str:
    """``deliveries/by_id`` → ``/api/1/deliveries/by_id`` (full paths are kept)."""
    path = path.strip()
    if path.startswith("/api/"):
        return path
    return API_PREFIX + path.lstrip("/")


def error_text(body: Any) -> str | None:
    """``errorDescription (error)`` of iiko's error envelope, or None when it is not one."""
    if not isinstance(body, dict) or "errorDescription" not in body:
        return None
    text = str(body.get("errorDescription") or "").strip() or "no description"
    code = body.get("error")
    return f"{text} ({code})" if code else text


class IikoClient(ProviderClient):
    """One iiko integration (apiLogin) at one base URL."""

    provider = "iiko"
    # The integration's organizations (set by IikoResource): asked when an event named none.
    organization_ids: tuple[str, ...] = ()

    # -- generic ------------------------------------------------------------------------

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/1/{path}`` with ``body``; the decoded answer (an object).

        Raises a ``ProviderError`` subclass: ``ProviderRequestError`` for 400 (its
        message is iiko's ``errorDescription``), ``ProviderAuthError`` for a 401 that a
        fresh token did not cure, ``ProviderUnavailableError`` for 408/5xx after retries.
        """
        return self.request("POST", api_path(path), json=body)

    # -- orders -------------------------------------------------------------------------

    def by_id(self, organization_id: str, order_ids: Iterable[str]) -> list[dict[str, Any]]:
        """``deliveries/by_id`` for ``order_ids`` in calls of at most 200 ids.

        Returns iiko's order objects (``{"id", "organizationId", "timestamp",
        "creationStatus", "errorInfo", "order"}``); ids iiko does not know are absent.
        """
        wanted = list(dict.fromkeys(str(i) for i in order_ids))
        self.stats.add(ids_requested=len(wanted))
        orders: list[dict[str, Any]] = []
        for start in range(0, len(wanted), BY_ID_BATCH):
            batch = wanted[start : start + BY_ID_BATCH]
            answer = self.call(
                "deliveries/by_id", {"organizationId": organization_id, "orderIds": batch}
            )
            orders.extend(_objects(answer, "orders", self.provider))
        return orders

    def by_delivery_date_and_status(
        self,
        organization_ids: Sequence[str],
        date_from: datetime | date | str,
        date_to: datetime | date | str | None = None,
        statuses: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """``deliveries/by_delivery_date_and_status``: every order of ``organization_ids``
        delivered between ``date_from`` and ``date_to`` (iiko's terminal-local times),
        flattened over ``ordersByOrganizations`` (each order keeps its organizationId)."""
        body: dict[str, Any] = {
            "organizationIds": list(organization_ids),
            "deliveryDateFrom": iiko_time(date_from),
        }
        if date_to is not None:
            body["deliveryDateTo"] = iiko_time(date_to)
        if statuses:
            body["statuses"] = list(statuses)
        answer = self.call("deliveries/by_delivery_date_and_status", body)
        orders: list[dict[str, Any]] = []
        for group in _objects(answer, "ordersByOrganizations", self.provider):
            organization = group.get("organizationId")
            for order in _objects(group, "orders", self.provider):
                if organization and not order.get("organizationId"):
                    order = {**order, "organizationId": organization}
                orders.append(order)
        return orders

    # -- envelope -----------------------------------------------------------------------

    def parse_response(self, response: httpx.Response) -> Any:
        """A JSON object; iiko's error envelope in a 2xx is an error too."""
        if response.status_code == 204 or not response.content.strip():
            return {}
        body = self.decode_json(response)
        if not isinstance(body, dict):
            raise ProviderResponseError(
                "unexpected body: want a JSON object",
                provider=self.provider,
                status_code=response.status_code,
            )
        if "errorDescription" in body and "correlationId" in body and len(body) <= 3:
            raise ProviderRequestError(
                f"error envelope: {self._clean(error_text(body))}",
                provider=self.provider,
                status_code=response.status_code,
            )
        return body

    def _raise_for_status(self, response: httpx.Response) -> None:
        """Typed errors that carry iiko's ``errorDescription`` (secrets masked)."""
        status = response.status_code
        if status < 400:
            return
        try:
            detail = error_text(response.json())
        except ValueError:
            detail = None
        detail = self._clean(detail or response.text)
        if status == 429:
            retry_after = parse_retry_after(
                response.headers.get("Retry-After"), self.max_retry_after_seconds
            )
            raise ProviderRateLimitedError(
                "rate limited (429)",
                provider=self.provider,
                status_code=status,
                retry_after=retry_after,
            )
        if status in (401, 403):
            raise ProviderAuthError(
                f"authentication failed ({status}): {detail}",
                provider=self.provider,
                status_code=status,
            )
        if status >= 500 or status == 408:
            raise ProviderUnavailableError(
                f"server error ({status}): {detail}", provider=self.provider, status_code=status
            )
        raise ProviderRequestError(
            f"request rejected ({status}): {detail}", provider=self.provider, status_code=status
        )

    def _clean(self, text: str | None) -> str:
        return redact_body(text or "", self._secrets, 300) or ""


def _objects(body: Any, key: str, provider: str) -> list[dict[str, Any]]:
    """``body[key]`` as a list of objects, or a ProviderResponseError."""
    value = body.get(key) if isinstance(body, dict) else None
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ProviderResponseError(
            f"unexpected body: `{key}` missing or not a list of objects", provider=provider
        )
    return value
