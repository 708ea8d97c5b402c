"""iiko's Dagster resource: a rate-limited client per integration, one shared token.

The access token is fetched with the integration's ``apiLogin`` and kept in
``provider_tokens`` (encrypted), so every process and host uses the same one until
``token_margin_seconds`` before its hour ends; a 401 fetches a new one once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import orjson

from crm_schema.integrations import Integration
from crm_sync.providers.iiko import IikoSettings
from crm_sync.ratelimit import Limiter
from orchestration.db import shared_engine
from orchestration.iiko.client import ACCESS_TOKEN_PATH, TOKEN_TTL_SECONDS, IikoClient
from orchestration.resources.auth import FetchedTokenAuth, NewToken, TokenStore
from orchestration.resources.base import ProviderResource
from orchestration.resources.errors import ProviderResponseError
from orchestration.resources.transport import CallStats

TOKEN_NAME = "access"  # noqa: S105 - a name, not a secret


def _read_token(response: httpx.Response) -> NewToken:
    """``{"correlationId", "token"}`` → the token, valid an hour."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise ProviderResponseError(
            "access_token answer has no token",
            provider="iiko",
            status_code=response.status_code,
            retryable=True,
        )
    return NewToken(token, TOKEN_TTL_SECONDS)


def iiko_auth(
    integration: Integration, engine: Any, api_login: str, margin_seconds: float
) -> FetchedTokenAuth:
    """``FetchedTokenAuth`` for one integration: ``POST /api/1/access_token {"apiLogin"}``."""
    url = f"{str(integration.api_base_url).rstrip('/')}{ACCESS_TOKEN_PATH}"
    auth = FetchedTokenAuth(
        TokenStore(engine, integration.id, TOKEN_NAME),
        fetch=lambda: httpx.Request("POST", url, json={"apiLogin": api_login}),
        read=_read_token,
        margin=timedelta(seconds=margin_seconds),
    )
    auth.provider = "iiko"
    return auth


class IikoResource(ProviderResource):
    """``iiko.client_for(integration)`` → :class:`IikoClient`.

    apiLogin from ``integration.credentials["api_login"]``, base URL from
    ``integration.api_base_url``, token margin from its settings.
    """

    def client_for(
        self,
        integration: Integration,
        *,
        run_id: str | None = None,
        stats: CallStats | None = None,
        limiter: Limiter | None = None,
    ) -> IikoClient:
        """A client for one iiko integration (close it, or use it as a context manager)."""
        api_login = str(integration.credentials.get("api_login") or "")
        if not api_login:
            raise ValueError(f"iiko integration {integration.id} has no credentials.api_login")
        if not integration.api_base_url:
            raise ValueError(f"iiko integration {integration.id} has no api_base_url")
        margin = float(
            integration.settings.get(
                "token_margin_seconds", IikoSettings.model_fields["token_margin_seconds"].default
            )
        )
        auth = iiko_auth(integration, shared_engine(self.database_url), api_login, margin)
        client = IikoClient(
            integration.api_base_url,
            throttle=self.throttle_for("iiko", integration, limiter=limiter),
            integration_id=integration.id,
            auth=auth,
            secrets=[api_login],
            **self.client_options(run_id, stats, integration),
        )
        client.organization_ids = tuple(
            str(o) for o in integration.settings.get("organization_ids") or ()
        )
        return client


def build_resources(database_url: str | None = None) -> dict[str, Any]:
    """The resources iiko's assets and jobs need (besides `crm_db`)."""
    return {"iiko": IikoResource(database_url=database_url)}
