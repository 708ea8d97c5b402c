"""amoCRM's OAuth redirect: `GET /oauth/amocrm/callback?code=…&state=…`.

The usual "install the integration" flow: `crm-sync amocrm auth-url ID` prints
amoCRM's authorization URL with a fresh ``state`` (stored only as a hash, single use,
expiring: crm_schema.provider_tokens); the account's admin approves, and amoCRM sends
the browser here with a code that lives 20 minutes. The state names the integration;
the code is exchanged at once (``POST {base}/oauth2/access_token``) and the pair is
stored encrypted in `provider_tokens`, shared by every process; the integration's
``attention`` ("needs re-authorization") is cleared.

A missing code or state is a 400, an unknown, used or expired state a 403; neither
changes anything. A code amoCRM
refuses is a 400 naming amoCRM's reason (never the code or the secret); amoCRM out of
reach is a 502. Database and HTTP work run in a worker thread (this is not the hot
path). The code and the state are masked in the access log.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from pydantic import BaseModel, Field
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from crm_schema import integrations as integ
from crm_schema.engine import make_engine
from crm_schema.provider_tokens import NewToken, StoredToken, TokenStore, consume_state
from crm_sync import encryption
from crm_sync.oauth import OAuthError, exchange_code
from crm_sync.providers.amocrm import default_api_base_url
from webhook_receiver.lazy_engine import LazyEngine
from webhook_receiver.openapi import Operation
from webhook_receiver.responses import error_response, json_response

if TYPE_CHECKING:
    from webhook_receiver.app import Receiver

log = logging.getLogger(__name__)

PROVIDER = "amocrm"
CALLBACK_PATH = "/oauth/amocrm/callback"
TOKEN_PATH = "/oauth2/access_token"  # noqa: S105 - a path, not a secret
AUTHORIZE_BASE = "https://www.amocrm.ru"  # where amoCRM asks the admin to approve
TOKEN_NAME = "oauth"  # noqa: S105 - the provider_tokens row, not a secret
# The code and state arrive in the query: keep them out of the access log.
_QUERY_SECRET = re.compile(r"([?&](?:code|state)=)[^&\s\"']*")
_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def base_url(integration: integ.Integration) -> str:
    """The account's API base: ``api_base_url`` or ``https://{subdomain}.amocrm.ru``."""
    if integration.api_base_url:
        return str(integration.api_base_url).rstrip("/")
    return default_api_base_url(str(integration.settings.get("subdomain") or ""))


def token_url(integration: integ.Integration) -> str:
    """Where codes and refresh tokens are exchanged."""
    return base_url(integration) + TOKEN_PATH


def authorization_url(integration: integ.Integration, state: str) -> str:
    """amoCRM's page where the account's admin approves the integration.

    ``https://www.amocrm.ru/oauth?client_id=…&state=…&mode=post_message`` (an emulator
    named by ``api_base_url`` serves its own ``/oauth``).
    """
    root = base_url(integration) if integration.api_base_url else AUTHORIZE_BASE
    query = {
        "client_id": integration.settings.get("client_id") or "",
        "state": state,
        "mode": "post_message",
    }
    return f"{root}/oauth?{urlencode(query)}"


def exchange_for(integration: integ.Integration, code: str) -> NewToken:
    """Trade an authorization ``code`` for the integration's pair (:class:`OAuthError`).

    ``client_id`` and ``redirect_uri`` come from its settings, ``client_secret`` from
    its credentials.
    """
    settings, credentials = integration.settings, integration.credentials
    wanted = {
        "client_id": settings.get("client_id"),
        "redirect_uri": settings.get("redirect_uri"),
        "client_secret": credentials.get("client_secret"),
    }
    missing = [name for name, value in wanted.items() if not value]
    if missing:
        raise OAuthError(f"integration {integration.id} has no {', '.join(missing)}")
    return exchange_code(
        token_url(integration),
        client_id=str(wanted["client_id"]),
        client_secret=str(wanted["client_secret"]),
        redirect_uri=str(wanted["redirect_uri"]),
        code=code,
    )


def store_tokens(conn: Connection, integration_id: int, token: NewToken) -> StoredToken:
    """Keep a freshly exchanged pair (encrypted) in the caller's transaction and clear the
    integration's attention: it is authorized again."""
    stored = TokenStore(conn.engine, integration_id, TOKEN_NAME).seed(token, conn)
    integ.clear_attention(conn, integration_id)
    return stored


def exchange_and_store(conn: Connection, integration: integ.Integration, code: str) -> None:
    """:func:`exchange_for` then :func:`store_tokens` (OAuthError: nothing stored)."""
    store_tokens(conn, integration.id, exchange_for(integration, code))


class Authorized(BaseModel):
    """The code was exchanged and the tokens stored."""

    status: str = Field(examples=["authorized"])
    integration_id: int


OPERATIONS = (
    Operation(
        path=CALLBACK_PATH,
        method="get",
        summary="amoCRM's OAuth redirect: exchange the code, store the tokens",
        description="Query `code` (amoCRM's authorization code) and `state` (from "
        "`crm-sync amocrm auth-url ID`: single use, expires). The token pair is stored "
        "encrypted and the integration's `attention` cleared.",
        ok=Authorized,
        errors={
            400: "Missing code or state; declined; or amoCRM refused the code.",
            403: "Unknown, already used or expired state.",
            502: "amoCRM could not be reached.",
            503: "The database does not answer.",
        },
        query_params={
            "code": "amoCRM's authorization code.",
            "state": "The state `crm-sync amocrm auth-url ID` put in the authorization URL.",
        },
        required_params=frozenset({"code", "state"}),
        tags=("amocrm",),
    ),
)


class _QueryMask(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                _QUERY_SECRET.sub(r"\1****", a) if isinstance(a, str) else a for a in record.args
            )
        elif isinstance(record.msg, str):
            record.msg = _QUERY_SECRET.sub(r"\1****", record.msg)
        return True


_mask_installed = False


def _install_query_mask() -> None:
    global _mask_installed
    if not _mask_installed:
        logging.getLogger("uvicorn.access").addFilter(_QueryMask())
        _mask_installed = True


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class OAuthCallback:
    """The callback endpoint; its engine is made on first use and closed with the receiver."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self._lazy = LazyEngine(lambda: make_engine(receiver.config.database_url))

    @property
    def engine(self) -> Engine:
        """The callback's engine (made on first use)."""
        return self._lazy.engine

    def close(self) -> None:
        """Release the engine's connections (at shutdown)."""
        self._lazy.close()

    async def endpoint(self, request: Request) -> Response:
        params = request.query_params
        if params.get("error"):
            reason = str(params.get("error"))[:100]
            return self._error(400, f"the authorization was declined in amoCRM ({reason})")
        code, state = params.get("code") or "", params.get("state") or ""
        if not code or not state:
            return self._error(400, "`code` and `state` are required")
        try:
            integration_id = await run_in_threadpool(self._authorize, code, state)
        except _Refused as exc:
            return self._error(exc.status, exc.message)
        except (OperationalError, DBAPIError):
            log.warning("amoCRM OAuth callback: database unavailable")
            return self._error(503, "database unavailable")
        except encryption.EncryptionError as exc:
            log.error("amoCRM OAuth callback: %s", exc)
            return self._error(503, "tokens cannot be stored: no encryption key configured")
        return json_response(
            {"status": "authorized", "integration_id": integration_id}, headers=_NO_STORE
        )

    def _error(self, status: int, message: str) -> Response:
        return error_response(status, message, headers=_NO_STORE)

    def _authorize(self, code: str, state: str) -> int:
        encryption.current_cipher()  # no key: refuse before the state (single use) is spent
        integration_id = consume_state(self.engine, state)
        if integration_id is None:
            raise _Refused(403, "unknown, already used or expired state: run auth-url again")
        with self.engine.connect() as conn:
            integration = integ.get_integration(conn, integration_id)
        if integration.provider != PROVIDER:
            raise _Refused(403, "unknown, already used or expired state: run auth-url again")
        try:
            token = exchange_for(integration, code)
        except OAuthError as exc:
            status = 400 if exc.refused else 502
            raise _Refused(status, f"amoCRM: {exc}") from None
        with self.engine.begin() as conn:
            store_tokens(conn, integration.id, token)
        log.info("amoCRM integration %s authorized through the OAuth callback", integration.id)
        return integration.id


def routes(receiver: Receiver) -> list[BaseRoute]:
    """The OAuth callback route (included by the amoCRM receiver module)."""
    _install_query_mask()
    callback = OAuthCallback(receiver)
    receiver.on_close.append(callback.close)
    return [Route(CALLBACK_PATH, callback.endpoint, methods=["GET"])]
