"""`crm-sync amocrm`: authorize an amoCRM integration (OAuth 2).

- `integrations add --provider amocrm ... --auth-code CODE` exchanges the code at once
  (``after_add`` below, in the same transaction as the new row: a refused code leaves
  nothing behind);
- `amocrm auth-url ID` prints amoCRM's authorization URL with a fresh single-use
  ``state`` (stored hashed, expiring); amoCRM then redirects to the receiver's
  `GET /oauth/amocrm/callback`, which exchanges the code;
- `amocrm authorize ID --auth-code CODE` re-authorizes by hand (e.g. after
  "needs re-authorization" shows in `integrations list`).

Codes, tokens and the client secret are never printed.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import click
from pydantic import BaseModel, SecretStr

from crm_schema import integrations as integ
from crm_schema.engine import make_engine
from crm_schema.provider_tokens import issue_state
from crm_sync.cli.common import connection, database_option
from crm_sync.oauth import OAuthError
from crm_sync.settings import get_settings
from webhook_receiver.providers.amocrm.oauth import authorization_url, exchange_and_store

PROVIDER = "amocrm"


def _exchange_and_store(conn: Any, item: integ.Integration, code: str) -> None:
    try:
        exchange_and_store(conn, item, code)
    except OAuthError as exc:
        raise click.ClickException(f"amoCRM authorization failed: {exc}") from None


def after_add(conn: Any, item: integ.Integration, setup: BaseModel) -> None:
    """`integrations add`: exchange ``--auth-code`` now (it lives 20 minutes).

    Runs in the transaction that inserted the integration: if amoCRM refuses the code
    the error rolls the new row back, so nothing is left behind.
    """
    code = getattr(setup, "auth_code", None)
    if code is None:
        return  # a long-lived token: nothing to exchange
    value = code.get_secret_value() if isinstance(code, SecretStr) else str(code)
    try:
        _exchange_and_store(conn, item, value)
    except click.ClickException as exc:
        raise click.ClickException(f"{exc.message}; nothing was added") from None


def _amocrm(conn: Any, integration_id: int) -> integ.Integration:
    item = integ.get_integration(conn, integration_id)
    if item.provider != PROVIDER:
        raise click.ClickException(f"integration {integration_id} is {item.provider}, not amoCRM")
    if item.credentials.get("long_lived_token"):
        raise click.ClickException(
            f"integration {integration_id} uses a long-lived token: give a new one with "
            "`crm-sync integrations update ID --long-lived-token ...`"
        )
    return item


@click.group(PROVIDER)
def amocrm() -> None:
    """amoCRM: authorize integrations (OAuth 2)."""


@amocrm.command("auth-url")
@click.argument("integration_id", type=click.IntRange(min=1))
@click.option(
    "--expires-minutes",
    type=click.IntRange(1, 24 * 60),
    default=30,
    show_default=True,
    help="How long the state (and so this URL) stays valid.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@database_option
def auth_url(
    integration_id: int, expires_minutes: int, as_json: bool, database_url: str | None
) -> None:
    """Print amoCRM's authorization URL (a fresh single-use state; the last one stops working).

    Open it as the account's admin; amoCRM redirects to the integration's redirect URI
    (the receiver's /oauth/amocrm/callback), which stores the tokens.
    """
    with connection(database_url) as conn:
        item = _amocrm(conn, integration_id)
    engine = make_engine(database_url or get_settings().database_url)
    try:
        state = issue_state(engine, item.id, timedelta(minutes=expires_minutes))
    finally:
        engine.dispose()
    url = authorization_url(item, state)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "integration_id": item.id,
                    "url": url,
                    "redirect_uri": item.settings.get("redirect_uri"),
                    "expires_minutes": expires_minutes,
                }
            )
        )
        return
    click.echo(url)
    click.echo(
        f"valid {expires_minutes} min, once; amoCRM redirects to "
        f"{item.settings.get('redirect_uri')}",
        err=True,
    )


@amocrm.command("authorize")
@click.argument("integration_id", type=click.IntRange(min=1))
@click.option(
    "--auth-code",
    required=True,
    envvar="CRM_SYNC_AMOCRM_AUTH_CODE",
    help="An authorization code from amoCRM (lives 20 minutes; or CRM_SYNC_AMOCRM_AUTH_CODE).",
)
@database_option
def authorize(integration_id: int, auth_code: str, database_url: str | None) -> None:
    """Exchange an authorization code for the integration's tokens (re-authorization)."""
    if not auth_code.strip():
        raise click.BadParameter("must not be empty", param_hint="--auth-code")
    with connection(database_url) as conn:
        item = _amocrm(conn, integration_id)
        _exchange_and_store(conn, item, auth_code.strip())
    click.echo(f"integration {item.id} authorized: tokens stored, attention cleared")


CLI_COMMANDS = (amocrm,)
