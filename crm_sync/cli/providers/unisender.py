"""`crm-sync unisender`: an account's synced and unsynced contacts; and the provider
hooks of `crm-sync integrations`: `before_add` (the amoCRM integration must exist),
`check` (getLists: the key works, the lists exist) and `owned_rows` (for `remove`).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import click
from pydantic import BaseModel
from sqlalchemy import Connection

from crm_schema import integrations as integ
from crm_sync.cli.common import connection, database_option
from crm_sync.settings import get_settings
from webhook_receiver.providers.unisender import accounts

STATUS_PAGE = 500


def before_add(conn: Connection, setup: BaseModel) -> None:
    """`integrations add --provider unisender`: `--amocrm` must name an amoCRM integration."""
    amocrm_id = int(setup.amocrm)  # type: ignore[attr-defined]
    try:
        linked = integ.get_integration(conn, amocrm_id)
    except integ.IntegrationError:
        raise click.UsageError(
            f"--amocrm {amocrm_id}: no integration with this id "
            "(add the amoCRM integration first: crm-sync integrations add --provider amocrm)"
        ) from None
    if linked.provider != "amocrm":
        raise click.UsageError(
            f"--amocrm {amocrm_id}: integration {amocrm_id} is {linked.provider}, not amoCRM"
        )


def owned_rows(conn: Connection, item: integ.Integration) -> list[tuple[Any, Any]]:
    """The account's rows, deleted by `integrations remove` (the amoCRM contacts stay)."""
    return accounts.owned_rows(conn, item)


def _client(item: integ.Integration, url: str) -> Any:
    """A client for the account, through the orchestration's resource (both limiter
    keys, the call log with the key masked, "needs attention" on a refused key)."""
    from orchestration.defs.unisender.resources import UnisenderResource

    # One attempt: a check answers now rather than retrying for seconds.
    resource = UnisenderResource(database_url=url).model_copy(update={"max_attempts": 1})
    return resource.client_for(item, run_id=f"cli-check-{uuid.uuid4().hex[:12]}")


def check(
    integration: integ.Integration, database_url: str | None
) -> tuple[bool, str, dict[str, Any]]:
    """getLists: whether the API key works and every list id of the account exists."""
    from orchestration.db import shared_engine
    from orchestration.defs.unisender.resources import mark_recovered
    from orchestration.resources.errors import ProviderError

    url = database_url or get_settings().database_url
    wanted = [int(i) for i in integration.settings.get("list_ids") or []]
    details: dict[str, Any] = {"list_ids": wanted}
    try:
        with _client(integration, url) as client:
            lists = client.get_lists()
    except (ProviderError, ValueError) as exc:
        details["error"] = str(exc)
        return False, f"getLists failed: {exc}", details
    mark_recovered(shared_engine(url), integration)  # the key works again
    found = {int(entry["id"]): str(entry.get("title") or "") for entry in lists}
    missing = [i for i in wanted if i not in found]
    details |= {
        "lists": [{"id": i, "title": t} for i, t in sorted(found.items())],
        "missing_list_ids": missing,
    }
    if missing:
        names = ", ".join(str(i) for i in missing)
        return False, f"the API key works, but list(s) {names} do not exist", details
    return True, f"the API key works and list(s) {', '.join(map(str, wanted))} exist", details


@click.group("unisender")
def unisender() -> None:
    """Unisender: an account's synced and unsynced contacts."""


def _all(conn: Connection, item: integ.Integration, synced: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    more = True
    while more:
        page, more = accounts.contacts_page(
            conn, item, synced=synced, skip=len(rows), limit=STATUS_PAGE
        )
        rows += page
    return rows


@unisender.command("status")
@click.argument("account_id", type=click.IntRange(min=1))
@click.option("--unsynced", is_flag=True, help="Only the unsynced contacts, with the reasons.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@database_option
def status(account_id: int, unsynced: bool, as_json: bool, database_url: str | None) -> None:
    """An account's synced and unsynced contacts (the reason for each unsynced one)."""
    with connection(database_url) as conn:
        try:
            item = accounts.get_account(conn, account_id)
        except accounts.AccountError as exc:
            raise click.ClickException(str(exc)) from None
        account = accounts.account_view(conn, item)
        synced_rows = [] if unsynced else _all(conn, item, True)
        unsynced_rows = _all(conn, item, False)
    if as_json:
        data: dict[str, Any] = {"account": account, "unsynced": unsynced_rows}
        if not unsynced:
            data["synced"] = synced_rows
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    counts = account["counts"]
    click.echo(
        f"account {item.id} ({item.name}), amoCRM integration "
        f"{account['amocrm_integration_id']}, lists {account['list_ids']}, "
        f"{'active' if item.is_active else 'disconnected'}"
    )
    if item.attention:
        click.echo(f"attention: {item.attention}")
    click.echo("counts: " + ", ".join(f"{k} {v}" for k, v in counts.items() if k != "unsynced"))
    if not unsynced:
        click.echo(f"synced ({len(synced_rows)}):")
        for row in synced_rows:
            click.echo(f"  {row['contact_id']:>8}  {row['email'] or '-':<40} {row['synced_at']}")
    click.echo(f"unsynced ({len(unsynced_rows)}):")
    for row in unsynced_rows:
        click.echo(
            f"  {row['contact_id']:>8}  {row['email'] or '-':<40} {row['status']:<12} "
            f"{row['reason'] or '-'}"
        )


CLI_COMMANDS = (unisender,)
