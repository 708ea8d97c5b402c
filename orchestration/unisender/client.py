"""Unisender's API client: ``POST {base}/{method}?format=json&api_key=KEY`` (form body).

Errors come inside HTTP 200 as ``{"error": "...", "code": "..."}`` and are classified
by :meth:`UnisenderClient.parse_response`:

- ``retry_later``, ``api_call_limit_exceeded_*`` → :class:`ProviderRateLimitedError`
  (retried; the shared limiter keys are pushed forward for every process);
- ``invalid_api_key``, ``access_denied`` → the account is marked "needs attention"
  and a :class:`ProviderAuthError` is raised (never retried);
- ``invalid_arg`` and any other code → :class:`ProviderRequestError` with Unisender's
  message (never retried).

The API key travels as a query parameter; it is a client secret, so the transport
masks it in the call log (and ``api_key`` is a secret-looking parameter name anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from crm_sync.redaction import redact_body
from orchestration.resources.base import ProviderClient
from orchestration.resources.errors import (
    ProviderAuthError,
    ProviderRateLimitedError,
    ProviderRequestError,
    ProviderResponseError,
)

PROVIDER = "unisender"
ATTENTION_PREFIX = "needs attention"
AUTH_CODES = frozenset({"invalid_api_key", "access_denied"})
RATE_CODES = frozenset({"retry_later"})
RATE_PREFIX = "api_call_limit_exceeded"
IMPORT_FIELDS = ("email", "Name", "email_list_ids")
DELETE_FIELD = "delete"

__all__ = [
    "ATTENTION_PREFIX",
    "IMPORT_FIELDS",
    "PROVIDER",
    "UnisenderClient",
    "import_form",
]


def import_form(field_names: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, str]:
    """``importContacts`` form fields: ``field_names[k]`` and ``data[i][j]``."""
    form = {f"field_names[{k}]": name for k, name in enumerate(field_names)}
    for i, row in enumerate(rows):
        if len(row) != len(field_names):
            raise ValueError(f"row {i} has {len(row)} values for {len(field_names)} fields")
        for j, value in enumerate(row):
            form[f"data[{i}][{j}]"] = "" if value is None else str(value)
    return form


class UnisenderClient(ProviderClient):
    """One Unisender account (API key). ``on_attention(reason)`` records "needs attention"."""

    provider = PROVIDER

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        on_attention: Callable[[str], None] | None = None,
        **kwargs: Any,
    ) -> None:
        if not api_key:
            raise ValueError("a Unisender API key is required")
        secrets = [api_key, *kwargs.pop("secrets", ())]
        super().__init__(base_url, secrets=secrets, **kwargs)
        self._api_key = api_key
        self._on_attention = on_attention

    # -- calls ------------------------------------------------------------------------------

    def call(self, method: str, form: Mapping[str, Any] | None = None) -> Any:
        """Call one API method (POST, form body); returns the envelope's ``result``."""
        return self.request(
            "POST",
            f"/{method}",
            params={"format": "json", "api_key": self._api_key},
            data=dict(form or {}),
        )

    def get_lists(self) -> list[dict[str, Any]]:
        """The account's lists: ``[{"id": int, "title": str}, ...]``."""
        result = self.call("getLists")
        return list(result or [])

    def import_contacts(
        self, rows: Sequence[Sequence[Any]], field_names: Sequence[str] = IMPORT_FIELDS
    ) -> dict[str, Any]:
        """``importContacts`` for ≤ 500 rows; the result (total, inserted, …, log)."""
        result = self.call("importContacts", import_form(field_names, rows))
        if not isinstance(result, dict):
            raise ProviderResponseError(
                "importContacts returned no result object", provider=PROVIDER, retryable=True
            )
        return result

    # -- envelope -----------------------------------------------------------------------------

    def parse_response(self, response: httpx.Response) -> Any:
        """``result`` of the envelope, or the typed error inside the HTTP 200."""
        body = self.decode_json(response)
        if not isinstance(body, dict):
            raise ProviderResponseError(
                "body is not a JSON object", provider=PROVIDER, retryable=True
            )
        if "error" not in body and "code" not in body:
            if "result" not in body:
                raise ProviderResponseError(
                    "envelope without result", provider=PROVIDER, retryable=True
                )
            return body["result"]
        code = str(body.get("code") or "")
        message = redact_body(str(body.get("error") or code), self._secrets, 500) or code
        text = f"{code}: {message}" if code else message
        status = response.status_code
        if code in RATE_CODES or code.startswith(RATE_PREFIX):
            raise ProviderRateLimitedError(
                f"rate limited ({text})", provider=PROVIDER, status_code=status
            )
        if code in AUTH_CODES:
            if self._on_attention is not None:
                self._on_attention(f"{ATTENTION_PREFIX}: Unisender refused the API key ({text})")
            raise ProviderAuthError(
                f"authentication failed ({text})", provider=PROVIDER, status_code=status
            )
        raise ProviderRequestError(text, provider=PROVIDER, status_code=status)
