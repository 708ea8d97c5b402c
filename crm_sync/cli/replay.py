"""`crm-sync replay`: re-send a provider's stored webhooks received in a time range.

Rows go in id order, per integration, to `--to-url` or else each integration's
`mirror_url`, as the provider sent them (orchestration.core.mirror); the target's
answers are counted, never acted on, and the mirror cursors are left alone. Webhook
keys, secrets and URL credentials are never printed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import click
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError

from crm_schema.engine import DatabaseUrlError, make_engine
from crm_sync.cli.common import database_option, first_line, safe_url
from crm_sync.registry import UnknownProvider, provider_names
from crm_sync.settings import get_settings


def _instant(_ctx: click.Context, param: click.Parameter, value: str) -> datetime:
    """An ISO 8601 date or time; without a zone it is UTC."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"'{value}' is not an ISO 8601 date or time (e.g. 2026-11-30T06:00:00Z)",
            param=param,
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _http_url(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter("must be an http(s) URL such as https://test.example", param=param)
    return value.strip()


def _summary(item: dict[str, Any]) -> str:
    statuses = ", ".join(f"{n}×{code}" for code, n in item["statuses"].items()) or "none"
    text = (
        f"integration {item['integration_id']} ({item['name']}): {item['rows']} rows, "
        f"sent {item['sent']} to {item['target']} (answers: {statuses})"
    )
    if item["skipped_rows"]:
        text += f"; rows that could not be rebuilt: {item['skipped_rows']}"
    if item["error"]:
        text += f"; stopped: {item['error']}"
    return text


@click.command("replay")
@click.option(
    "--provider",
    required=True,
    type=click.Choice(provider_names()),
    help="Whose stored webhooks to re-send.",
)
@click.option(
    "--from",
    "start",
    required=True,
    callback=_instant,
    help="Rows received at or after this (ISO 8601; UTC without a zone).",
)
@click.option(
    "--to", "end", required=True, callback=_instant, help="Rows received before this (ISO 8601)."
)
@click.option("--integration", "integration_id", type=int, help="Only this integration.")
@click.option(
    "--to-url",
    callback=_http_url,
    help="Send here instead of each integration's mirror_url (an http(s) base URL).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@database_option
def replay(
    provider: str,
    start: datetime,
    end: datetime,
    integration_id: int | None,
    to_url: str | None,
    as_json: bool,
    database_url: str | None,
) -> None:
    """Re-send a provider's stored webhooks received in [--from, --to), in order."""
    # Imported here: only this command needs the forwarder.
    from orchestration.core import mirror

    if end <= start:
        raise click.BadParameter("must be after --from", param_hint="--to")
    url = database_url or get_settings().database_url
    try:
        engine = make_engine(url)
    except DatabaseUrlError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        reports = mirror.replay(
            engine, provider, start, end, integration_id=integration_id, to_url=to_url
        )
    except (UnknownProvider, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except (OperationalError, ProgrammingError) as exc:
        raise click.ClickException(
            f"cannot use the database at {safe_url(url)}: {first_line(exc)}"
        ) from None
    except SQLAlchemyError as exc:
        # Driver messages can echo bound parameters: name the error only.
        raise click.ClickException(f"database error ({type(exc).__name__})") from None
    finally:
        engine.dispose()
    items = [r.as_dict() for r in reports]
    rows = sum(i["rows"] for i in items)
    sent = sum(i["sent"] for i in items)
    failed = [i for i in items if i["error"]]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "provider": provider,
                    "from": start.isoformat(),
                    "to": end.isoformat(),
                    "rows": rows,
                    "sent": sent,
                    "ok": not failed,
                    "integrations": items,
                },
                ensure_ascii=False,
            )
        )
    elif rows == 0:
        click.echo(f"nothing to send: no {provider} webhooks received in that range")
    else:
        for item in items:
            if item["target"] is None:
                click.echo(
                    f"integration {item['integration_id']} ({item['name']}): {item['rows']} "
                    "rows, not sent (no mirror_url; give --to-url)"
                )
            elif item["rows"]:
                click.echo(_summary(item))
        click.echo(f"sent {sent} of {rows} rows")
    if failed:
        raise SystemExit(1)
