"""Operator API: what went out (seed 001, "Мониторинг и отладка"); what came in is each
provider's own (its receiver module's operator routes, e.g. received webhook events).

- `GET /api/v1/logs?skip&limit[&provider]`: the provider API call log, newest first,
  with every text masked (crm_sync.redaction): secret-named query values and JSON
  fields, `Bearer` tokens, operator tokens, and the literal secrets of every
  integration (webhook tokens and keys, credentials, cached access tokens).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from crm_schema.integrations import open_credentials
from crm_schema.tables import api_call_log, integrations, provider_tokens
from crm_sync import encryption
from crm_sync.redaction import MASK, mask_literals, mask_url, mask_webhook_path, redact_body
from crm_sync.registry import provider_names
from webhook_receiver.openapi import Operation
from webhook_receiver.operator_api.common import (
    OperatorApi,
    answer,
    endpoint,
    invalid,
    iso,
    paging,
)

LOGS_PATH = "/api/v1/logs"
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+")
_OPERATOR_TOKEN = re.compile(r"crmop_[A-Za-z0-9_-]{8,}")
_BODY_LIMIT = 64 * 1024


class ApiCallView(BaseModel):
    """One provider API call (`api_call_log` row), secrets masked."""

    id: int
    provider: str
    integration_id: int | None
    method: str
    url: str
    status_code: int | None
    duration_ms: float | None
    attempt: int
    request_body: str | None
    response_body: str | None
    error: str | None
    run_id: str | None
    created_at: str | None


class LogsPage(BaseModel):
    """A page of API calls, newest first."""

    items: list[ApiCallView]
    skip: int
    limit: int
    has_more: bool


def known_secrets(conn: Connection) -> list[str]:
    """Every secret stored for an integration, in plaintext, longest first (so a secret
    that contains another is masked whole)."""
    found: set[str] = set()
    for row in conn.execute(
        select(
            integrations.c.id,
            integrations.c.webhook_key,
            integrations.c.webhook_secret,
            integrations.c.credentials,
        )
    ):
        found.update(v for v in (row.webhook_key, row.webhook_secret) if v)
        try:
            values = open_credentials(row.credentials, row.id).values()
        except encryption.EncryptionError:  # no key here: the regex masks still apply
            values = ()
        found.update(v for v in values if isinstance(v, str))
    for row in conn.execute(
        select(provider_tokens.c.access_token, provider_tokens.c.refresh_token)
    ):
        for stored in (row.access_token, row.refresh_token):
            if stored:
                with contextlib.suppress(encryption.EncryptionError):
                    found.add(encryption.decrypt(stored, "a provider token"))
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


def mask_text(text: str | None, secrets: list[str]) -> str | None:
    """``text`` with every known secret, Bearer token and operator token masked."""
    if text is None:
        return None
    text = mask_literals(text, secrets)
    text = _BEARER.sub(rf"\g<1>{MASK}", text)
    return _OPERATOR_TOKEN.sub(MASK, text)


def _masked_url(url: str, secrets: list[str]) -> str:
    try:
        url = mask_url(url, secrets)
    except ValueError:
        url = mask_literals(url, secrets)
    return mask_text(mask_webhook_path(url), secrets) or ""


def _call(row: Any, secrets: list[str]) -> dict[str, Any]:
    def body(value: str | None) -> str | None:
        return mask_text(redact_body(value, secrets, limit=_BODY_LIMIT), secrets)

    return {
        "id": row.id,
        "provider": row.provider,
        "integration_id": row.integration_id,
        "method": row.method,
        "url": _masked_url(row.url, secrets),
        "status_code": row.status_code,
        "duration_ms": row.duration_ms,
        "attempt": row.attempt,
        "request_body": body(row.request_body),
        "response_body": body(row.response_body),
        "error": body(row.error),
        "run_id": row.run_id,
        "created_at": iso(row.created_at),
    }


def list_calls(
    conn: Connection, skip: int, limit: int, provider: str | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """A page of `api_call_log`, newest first, masked; and whether more follow."""
    query = select(api_call_log).order_by(api_call_log.c.id.desc())
    if provider is not None:
        query = query.where(api_call_log.c.provider == provider)
    rows = conn.execute(query.offset(skip).limit(limit + 1)).all()
    secrets = known_secrets(conn) if rows else []
    return [_call(r, secrets) for r in rows[:limit]], len(rows) > limit


class MonitoringRoutes:
    """The handlers (one instance per app)."""

    def __init__(self, api: OperatorApi) -> None:
        self.api = api

    async def logs(self, request: Request) -> Response:
        await self.api.authenticate(request)
        skip, limit, problems = paging(request)
        provider = request.query_params.get("provider") or None
        if provider is not None and (len(provider) > 32 or not provider.isprintable()):
            problems.append(
                {"field": "provider", "error": "a provider name (at most 32 characters)"}
            )
        if problems:
            raise invalid(problems)
        items, more = await self.api.transaction(
            lambda conn: list_calls(conn, skip, limit, provider)
        )
        return answer({"items": items, "skip": skip, "limit": limit, "has_more": more})


def operator_routes(api: OperatorApi) -> list[BaseRoute]:
    """The monitoring routes."""
    handlers = MonitoringRoutes(api)
    return [Route(LOGS_PATH, endpoint(handlers.logs), methods=["GET"])]


PAGE_ERRORS = {
    401: "No or unknown operator token.",
    422: "Bad skip / limit (0 <= skip, 1 <= limit <= 500) or filter.",
    503: "The database is unavailable.",
}
PAGING_PARAMS = {
    "skip": "Rows to skip (default 0).",
    "limit": "Rows to return, 1 to 500 (default 50).",
}
OPERATOR_OPERATIONS = (
    Operation(
        path=LOGS_PATH,
        method="get",
        summary="Provider API calls, newest first, secrets masked",
        ok=LogsPage,
        errors=PAGE_ERRORS,
        tags=("operator",),
    ),
)
OPERATOR_QUERY_PARAMS = {
    LOGS_PATH: PAGING_PARAMS
    | {"provider": f"Only this provider's calls (one of: {', '.join(provider_names())})."},
}
