"""amoCRM's Dagster resource: a rate-limited client per integration, one shared token pair.

OAuth integrations keep their pair in ``provider_tokens`` (name ``oauth``, encrypted),
shared by every process and host: refresh tokens are single-use, so one process
refreshes under the compare-and-swap lease and stores the new pair before anyone uses
it (orchestration.resources.auth). A refused refresh marks the integration
"needs re-authorization" (``crm-sync amocrm auth-url ID``); a 403 marks it "amoCRM
blocked this IP" and holds the account's shared limiter key off for ``block_seconds``.
Long-lived-token integrations send that token as a bearer.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from crm_schema.integrations import (
    Integration,
    clear_attention,
    integration_attention,
    set_attention,
)
from crm_schema.provider_tokens import NewToken, TokenStore
from crm_schema.task_queue import now_utc
from crm_sync.oauth import OAuthError, read_token
from crm_sync.providers.amocrm import default_api_base_url
from crm_sync.ratelimit import Limiter
from orchestration.amocrm.client import (
    BLOCK_SECONDS,
    BLOCKED_PREFIX,
    REAUTHORIZE_PREFIX,
    TOKEN_PATH,
    AmocrmBlockedError,
    AmocrmClient,
)
from orchestration.db import shared_engine
from orchestration.resources.auth import BearerAuth, OAuth2RefreshAuth
from orchestration.resources.base import ProviderResource
from orchestration.resources.errors import ProviderResponseError
from orchestration.resources.transport import CallStats

TOKEN_NAME = "oauth"  # noqa: S105 - a name, not a secret

__all__ = [
    "TOKEN_NAME",
    "AmocrmOAuth",
    "AmocrmResource",
    "api_base_url",
    "build_resources",
    "integration_attention",
    "token_store",
]


def api_base_url(integration: Integration) -> str:
    """The integration's API base: its ``api_base_url``, else ``https://{subdomain}.amocrm.ru``."""
    if integration.api_base_url:
        return str(integration.api_base_url).rstrip("/")
    subdomain = integration.settings.get("subdomain")
    if not subdomain:
        raise ValueError(f"amoCRM integration {integration.id} has no subdomain")
    return default_api_base_url(str(subdomain))


def token_store(engine: Any, integration_id: int) -> TokenStore:
    """The integration's shared OAuth pair."""
    return TokenStore(engine, integration_id, TOKEN_NAME)


def _read_pair(response: httpx.Response) -> NewToken:
    try:
        return read_token(response)
    except OAuthError as exc:
        raise ProviderResponseError(
            str(exc), provider="amocrm", status_code=response.status_code, retryable=True
        ) from None


class AmocrmOAuth(OAuth2RefreshAuth):
    """amoCRM's refresh (``POST /oauth2/access_token`` grant_type=refresh_token).

    A 403 from the token endpoint is the IP block, not a refusal of the token: the
    refresh token was not spent, so it must not ask for re-authorization.
    """

    provider = "amocrm"
    on_blocked: Any = None  # the client's ``block`` (set by the resource)

    def _check(self, response: httpx.Response) -> None:
        if response.status_code == 403 and self.on_blocked is not None:
            self.on_blocked(f"{BLOCKED_PREFIX} (403) at the token endpoint")
        super()._check(response)


def amocrm_oauth(
    integration: Integration,
    engine: Any,
    client_secret: str,
    *,
    margin_seconds: float = 300.0,
    wait_seconds: float = 30.0,
) -> AmocrmOAuth:
    """The refreshing auth of one OAuth integration; a refusal marks it for re-authorization."""
    url = api_base_url(integration) + TOKEN_PATH
    settings = integration.settings

    def refresh(refresh_token: str) -> httpx.Request:
        return httpx.Request(
            "POST",
            url,
            json={
                "client_id": settings.get("client_id"),
                "client_secret": client_secret,
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "redirect_uri": settings.get("redirect_uri"),
            },
        )

    def refused(message: str) -> None:
        reason = message.replace(": needs re-authorization", "")
        reason = f"{REAUTHORIZE_PREFIX}: {reason} (crm-sync amocrm auth-url {integration.id})"
        with engine.begin() as conn:
            set_attention(conn, integration.id, reason)

    return AmocrmOAuth(
        token_store(engine, integration.id),
        refresh=refresh,
        read=_read_pair,
        margin=timedelta(seconds=margin_seconds),
        wait_seconds=wait_seconds,
        on_refused=refused,
    )


class AmocrmResource(ProviderResource):
    """``amocrm.client_for(integration)`` → :class:`AmocrmClient`.

    ``block_seconds``: how long a 403 (IP blocked) keeps every process off the
    account; ``token_margin_seconds``: refresh this long before the access token ends.
    """

    block_seconds: float = BLOCK_SECONDS
    token_margin_seconds: float = 300.0
    refresh_wait_seconds: float = 30.0

    def client_for(
        self,
        integration: Integration,
        *,
        run_id: str | None = None,
        stats: CallStats | None = None,
        limiter: Limiter | None = None,
    ) -> AmocrmClient:
        """A client for one amoCRM integration (close it, or use it as a context manager).

        Refused at once (:class:`AmocrmBlockedError`) while the integration's IP block
        is recent: calls would only prolong it.
        """
        engine = shared_engine(self.database_url)
        if self._recently_blocked(integration):
            raise AmocrmBlockedError(str(integration.attention), provider="amocrm", status_code=403)
        credentials = integration.credentials
        long_lived = str(credentials.get("long_lived_token") or "")
        client_secret = str(credentials.get("client_secret") or "")
        auth: httpx.Auth
        if long_lived:
            auth = BearerAuth(long_lived)
        else:
            if not client_secret:
                raise ValueError(f"amoCRM integration {integration.id} has no client_secret")
            auth = amocrm_oauth(
                integration,
                engine,
                client_secret,
                margin_seconds=self.token_margin_seconds,
                wait_seconds=self.refresh_wait_seconds,
            )

        def on_attention(reason: str) -> None:
            with engine.begin() as conn:
                set_attention(conn, integration.id, reason)

        def on_recovered() -> None:
            with engine.begin() as conn:
                clear_attention(conn, integration.id)

        marked = (integration.attention or "").startswith((BLOCKED_PREFIX, REAUTHORIZE_PREFIX))

        client = AmocrmClient(
            api_base_url(integration),
            throttle=self.throttle_for("amocrm", integration, limiter=limiter),
            integration_id=integration.id,
            auth=auth,
            secrets=[s for s in (client_secret, long_lived) if s],
            on_attention=on_attention,
            on_recovered=on_recovered if marked else None,
            block_seconds=self.block_seconds,
            **self.client_options(run_id, stats, integration),
        )
        if isinstance(auth, AmocrmOAuth):
            auth.on_blocked = client.block
        return client

    def _recently_blocked(self, integration: Integration) -> bool:
        attention, since = integration.attention, integration.attention_at
        if not attention or not attention.startswith(BLOCKED_PREFIX) or since is None:
            return False
        return now_utc() - since < timedelta(seconds=self.block_seconds)


def build_resources(database_url: str | None = None) -> dict[str, Any]:
    """The resources amoCRM's assets and jobs need (besides `crm_db`)."""
    return {"amocrm": AmocrmResource(database_url=database_url)}
