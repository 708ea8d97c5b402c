"""`crm-sync uon notify`: a notification to a U-ON manager; and the provider hooks of
`crm-sync integrations`: `before_add` (what the fields cannot check one by one),
`check` (the key works, and what U-ON knows of the test number) and `owned_rows`
(for `remove`).

Every U-ON call goes through the orchestration's client: the shared rate limit of the
API key, the call log with the key masked. The key is never printed.
"""

from __future__ import annotations

import json
import string
import uuid
from typing import Any

import click
from pydantic import BaseModel
from sqlalchemy import Connection

from crm_schema import integrations as integ
from crm_schema.providers.uon import (
    customers,
    uon_calls,
    uon_inbox,
    uon_originations,
    uon_phone_cache,
    uon_requests,
    uon_tasks,
)
from crm_sync.cli.common import connection, database_option
from crm_sync.phones import normalize_phone
from crm_sync.providers.uon import DEFAULT_ORIGINATE_URL, UonSettings
from crm_sync.settings import get_settings

PROVIDER = "uon"
TEXT_LIMIT = 2000

__all__ = ["CLI_COMMANDS", "before_add", "check", "owned_rows", "uon"]


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def before_add(conn: Connection, setup: BaseModel) -> None:
    """`integrations add --provider uon`: a template naming {pbx} has a --pbx-url, and
    the account id and subdomain name one integration only (U-ON's webhooks are routed
    by them)."""
    given = setup.model_fields_set
    template = str(getattr(setup, "pbx_originate_url", DEFAULT_ORIGINATE_URL))
    if given & {"pbx_url", "pbx_originate_url", "pbx_secret"}:
        names = _placeholders(template)
        # {secret} may stay empty: a PBX that checks no client id takes any.
        if "pbx" in names and getattr(setup, "pbx_url", None) is None:
            raise click.UsageError("--pbx-originate-url names {pbx}: give --pbx-url too")
    for name, flag in (("account_id", "--account-id"), ("uon_subdomain", "--uon-subdomain")):
        value = getattr(setup, name, None)
        if value is None:
            continue
        for other in integ.list_integrations(conn, provider=PROVIDER):
            if str(other.settings.get(name) or "") == str(value):
                raise click.UsageError(
                    f"{flag} {value}: integration {other.id} already has it (U-ON's "
                    "webhooks are routed to one integration by it)"
                )


def owned_rows(conn: Connection, item: integ.Integration) -> list[tuple[Any, Any]]:
    """The integration's rows, in deletion order: (table, where clause)."""
    del conn
    return [
        (uon_tasks, uon_tasks.c.integration_id == item.id),
        (uon_originations, uon_originations.c.integration_id == item.id),
        (uon_inbox, uon_inbox.c.integration_id == item.id),
        (uon_calls, uon_calls.c.integration_id == item.id),
        (uon_requests, uon_requests.c.integration_id == item.id),
        (uon_phone_cache, uon_phone_cache.c.integration_id == item.id),
        (customers, customers.c.integration_id == item.id),
    ]


def _client(item: integ.Integration, url: str, *, attempts: int) -> Any:
    """A client through the orchestration's resource (limiter, masked call log)."""
    from orchestration.defs.uon.resources import UonResource

    resource = UonResource(database_url=url).model_copy(update={"max_attempts": attempts})
    return resource.client_for(item, run_id=f"cli-{uuid.uuid4().hex[:12]}")


def _summary(user: dict[str, Any]) -> dict[str, Any]:
    parts = [user.get(k) for k in ("u_surname", "u_name", "u_sname")]
    return {
        "uon_id": str(user.get("u_id") or user.get("id") or ""),
        "name": " ".join(str(p).strip() for p in parts if p and str(p).strip()) or None,
        "manager_id": str(user["manager_id"]) if user.get("manager_id") else None,
    }


def check(
    integration: integ.Integration, database_url: str | None
) -> tuple[bool, str, dict[str, Any]]:
    """`countries` (the key works), then `user/phone` of the integration's test number."""
    from orchestration.resources.errors import ProviderAuthError, ProviderError

    url = database_url or get_settings().database_url
    settings = UonSettings.model_validate(integration.settings or {})
    phone = normalize_phone(settings.test_phone, settings.default_region) or settings.test_phone
    details: dict[str, Any] = {"test_phone": phone}
    try:
        with _client(integration, url, attempts=2) as client:
            details["countries"] = len(client.ping())
            users = client.users_by_phone(phone)
    except ProviderAuthError as exc:
        details["error"] = str(exc)
        return False, f"U-ON refused the API key: {exc}", details
    except (ProviderError, ValueError) as exc:
        details["error"] = str(exc)
        return False, f"U-ON could not be reached: {exc}", details
    found = [_summary(u) for u in users]
    details |= {"found": bool(found), "customers": found}
    if not found:
        return True, f"the API key works; no U-ON client has the test number {phone}", details
    first = found[0]
    who = f"U-ON client {first['uon_id']}"
    who += f" ({first['name']})" if first["name"] else ""
    who += f", manager {first['manager_id']}" if first["manager_id"] else ""
    more = f" and {len(found) - 1} more" if len(found) > 1 else ""
    return True, f"the API key works; test number {phone}: {who}{more}", details


@click.group(PROVIDER)
def uon() -> None:
    """U-ON.Travel: notifications to managers."""


def _manager(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    text = value.strip()
    if not text.isdigit() or len(text) > 16:
        raise click.BadParameter(f"'{value}' is not a U-ON manager id (digits)")
    return text


def _text(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    text = value.strip()
    if not text:
        raise click.BadParameter("must not be empty")
    if len(text) > TEXT_LIMIT:
        raise click.BadParameter(f"at most {TEXT_LIMIT} characters")
    return text


@uon.command("notify")
@click.option("--integration", "integration_id", type=click.IntRange(min=1), required=True)
@click.option("--manager", required=True, callback=_manager, help="The U-ON manager id.")
@click.option("--text", required=True, callback=_text, help="What the manager sees.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@database_option
def notify(
    integration_id: int, manager: str, text: str, as_json: bool, database_url: str | None
) -> None:
    """Show a notification to a U-ON manager (notification/create, rate-limited)."""
    from orchestration.resources.errors import ProviderError

    with connection(database_url) as conn:
        item = integ.get_integration(conn, integration_id)
    if item.provider != PROVIDER:
        raise click.ClickException(f"integration {item.id} is {item.provider}, not U-ON")
    if not item.is_active:
        raise click.ClickException(
            f"integration {item.id} is disabled (crm-sync integrations enable {item.id})"
        )
    url = database_url or get_settings().database_url
    try:
        with _client(item, url, attempts=5) as client:
            client.notify(manager, text)
    except (ProviderError, ValueError) as exc:
        raise click.ClickException(f"notification/create failed: {exc}") from None
    if as_json:
        data = {"integration": item.id, "manager_id": manager, "sent": True}
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    click.echo(f"notification sent to U-ON manager {manager} (integration {item.id})")


CLI_COMMANDS = (uon,)
