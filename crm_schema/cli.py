"""The `crm-sync` command line: database migrations and integration management.

Extra command groups (e.g. `crm-sync emulate`) plug in through the
`crm_sync.commands` entry point group, so this module imports no other layer.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import urlsplit

import click
from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError

from crm_schema import integrations as integ
from crm_schema.engine import DatabaseUrlError, make_engine
from crm_schema.settings import get_settings


def _safe_url(raw: str) -> str:
    try:
        return make_url(raw).render_as_string(hide_password=True)
    except Exception:
        return "<invalid DATABASE_URL>"


@contextmanager
def _connection(database_url: str | None) -> Iterator[Connection]:
    """A transaction on the database with every failure turned into a clear CLI error."""
    url = database_url or get_settings().database_url
    try:
        engine = make_engine(url)
    except DatabaseUrlError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        with engine.begin() as conn:
            yield conn
    except integ.IntegrationError as exc:
        raise click.ClickException(str(exc)) from None
    except (OperationalError, ProgrammingError) as exc:
        first = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        if "no such table" in first or "does not exist" in first and "relation" in first:
            raise click.ClickException(
                "the database is not migrated: run `crm-sync db upgrade` first"
            ) from None
        raise click.ClickException(
            f"cannot use the database at {_safe_url(url)}: {first}"
        ) from None
    except SQLAlchemyError as exc:
        # Driver messages can echo bound parameters (secrets): name the error only.
        raise click.ClickException(f"database error ({type(exc).__name__})") from None
    finally:
        engine.dispose()


database_option = click.option(
    "--database-url",
    envvar="DATABASE_URL",
    default=None,
    help="sqlite:///path or postgresql://user@host:port/db (default: DATABASE_URL or .data/).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """crm-sync: keep the CRM database in step with ALLIO and other providers."""


@main.group()
def db() -> None:
    """Database migrations."""


def _migrate(direction: str, database_url: str | None, revision: str) -> None:
    """Run Alembic one way, every failure turned into a clear CLI error."""
    from crm_schema import migrate

    url = database_url or get_settings().database_url
    try:
        getattr(migrate, direction)(url, revision)
    except DatabaseUrlError as exc:
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise click.ClickException(f"cannot {direction} {_safe_url(url)}: {first}") from None
    click.echo(f"database at {_safe_url(url)}: {direction} to {revision} done")


@db.command("upgrade")
@database_option
@click.option("--revision", default="head", show_default=True)
def db_upgrade(database_url: str | None, revision: str) -> None:
    """Apply migrations (creates the SQLite file when needed)."""
    _migrate("upgrade", database_url, revision)


@db.command("downgrade")
@database_option
@click.option("--revision", default="base", show_default=True)
def db_downgrade(database_url: str | None, revision: str) -> None:
    """Revert migrations (default: all of them)."""
    _migrate("downgrade", database_url, revision)


@main.group()
def integrations() -> None:
    """Connected provider accounts."""


def _validate_uuid(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        uuid.UUID(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a UUID") from None
    return value


def _validate_http_url(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise click.BadParameter("must be an http(s) URL such as https://api.example.com")
    return value.rstrip("/")


def _validate_nonblank(_ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value or not value.strip():
        raise click.BadParameter(f"{param.name} must not be empty")
    return value.strip()


def _webhook_url(item: integ.Integration) -> str:
    return get_settings().receiver_public_base_url.rstrip("/") + item.webhook_path


def _print_one(item: integ.Integration, as_json: bool) -> None:
    data = item.public_dict() | {"webhook_url": _webhook_url(item)}
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    for key in ("id", "provider", "name", "integration_uuid", "api_base_url", "is_active"):
        click.echo(f"{key}: {data[key]}")
    click.echo(f"credentials: {data['credentials']}")
    click.echo(f"settings: {json.dumps(data['settings'], ensure_ascii=False)}")
    click.echo(f"webhook_url: {data['webhook_url']}")


@integrations.command("add")
@click.option("--provider", required=True, type=click.Choice(integ.PROVIDERS))
@click.option("--name", required=True, callback=_validate_nonblank)
@click.option("--integration-uuid", required=True, callback=_validate_uuid)
@click.option("--api-base-url", required=True, callback=_validate_http_url)
@click.option(
    "--api-token",
    required=True,
    envvar="CRM_SYNC_API_TOKEN",
    callback=_validate_nonblank,
    help="Provider API token (or CRM_SYNC_API_TOKEN). Stored, never printed.",
)
@click.option("--delete-control", is_flag=True, help="Let the daily sweep apply *_DEL tasks.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@database_option
def integrations_add(
    provider: str,
    name: str,
    integration_uuid: str,
    api_base_url: str,
    api_token: str,
    delete_control: bool,
    as_json: bool,
    database_url: str | None,
) -> None:
    """Connect a provider account and print its webhook URL."""
    with _connection(database_url) as conn:
        item = integ.add_integration(
            conn,
            provider=provider,
            name=name,
            integration_uuid=integration_uuid,
            api_base_url=api_base_url,
            credentials={"api_token": api_token},
            settings={"delete_control": delete_control},
        )
    if as_json:
        _print_one(item, as_json=True)
    else:
        click.echo(f"integration {item.id} ({item.provider}, {item.name}) added")
        click.echo(f"webhook URL: {_webhook_url(item)}")


@integrations.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@database_option
def integrations_list(as_json: bool, database_url: str | None) -> None:
    """List integrations (secrets masked)."""
    with _connection(database_url) as conn:
        items = integ.list_integrations(conn)
    if as_json:
        rows = [i.public_dict() | {"webhook_url": _webhook_url(i)} for i in items]
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not items:
        click.echo("no integrations")
        return
    click.echo(f"{'id':>4}  {'provider':<10} {'active':<6} {'name':<30} webhook_path")
    for i in items:
        active = "yes" if i.is_active else "no"
        click.echo(f"{i.id:>4}  {i.provider:<10} {active:<6} {i.name[:30]:<30} {i.webhook_path}")


@integrations.command("show")
@click.argument("integration_id", type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True)
@database_option
def integrations_show(integration_id: int, as_json: bool, database_url: str | None) -> None:
    """Show one integration (secrets masked)."""
    with _connection(database_url) as conn:
        item = integ.get_integration(conn, integration_id)
    _print_one(item, as_json)


def _toggle(active: bool) -> Callable[..., None]:
    def command(integration_id: int, database_url: str | None) -> None:
        with _connection(database_url) as conn:
            item = integ.set_active(conn, integration_id, active)
        state = "enabled" if active else "disabled"
        click.echo(f"integration {item.id} {state}; running receivers apply it within 5 s")

    return command


for _name, _active, _help in (
    ("enable", True, "Accept webhooks and sync this integration again."),
    ("disable", False, "Refuse its webhooks (404) and stop syncing it."),
):
    integrations.command(_name, help=_help)(
        click.argument("integration_id", type=click.IntRange(min=1))(
            database_option(_toggle(_active))
        )
    )


def _load_plugins(group: click.Group) -> None:
    for ep in entry_points(group="crm_sync.commands"):
        try:
            command: Any = ep.load()
        except ImportError as exc:  # a broken plugin must not take the CLI down
            print(f"crm-sync: command '{ep.name}' unavailable: {exc}", file=sys.stderr)
            continue
        group.add_command(command, ep.name)


_load_plugins(main)
