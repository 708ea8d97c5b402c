"""`crm-sync iiko`: register webhooks with iiko, send order commands and loyalty operations.

Commands go through the same outbox the operator API writes (`iiko_commands`, via
crm_schema.providers.iiko_commands.create_command): the Dagster sensor sends them, or
`--wait` sends this one here and follows it to iiko's final state. Secrets (apiLogin,
the webhook authToken) are never printed; webhook URLs show the key masked.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

import click

from crm_schema import integrations as integ
from crm_schema.engine import make_engine
from crm_schema.providers import iiko_commands as cmds
from crm_sync.cli.common import connection, database_option
from crm_sync.settings import get_settings

LOYALTY_ALIASES = {
    name.removeprefix("loyalty-"): name for name in cmds.LOYALTY_COMMANDS
}  # `topup` → `loyalty-topup`
KINDS = [*cmds.COMMANDS, *LOYALTY_ALIASES]


def _iiko_integration(database_url: str | None, integration_id: int) -> integ.Integration:
    with connection(database_url) as conn:
        item = integ.get_integration(conn, integration_id)
    if item.provider != "iiko":
        raise click.ClickException(f"integration {integration_id} is {item.provider}, not iiko")
    return item


def _engine(database_url: str | None) -> Any:
    return make_engine(database_url or get_settings().database_url)


def _client_for(database_url: str | None, *, single_attempt: bool = False) -> Any:
    # Imported here: the Dagster stack loads only for commands that talk to iiko.
    from orchestration.defs.iiko.resources import IikoResource

    resource = IikoResource(database_url=database_url or get_settings().database_url)
    if single_attempt:
        resource = resource.model_copy(update={"max_attempts": 1})
    run_id = f"cli-{uuid.uuid4().hex[:12]}"

    def client_for(item: integ.Integration) -> Any:
        try:
            return resource.client_for(item, run_id=run_id)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None

    return client_for


@click.group("iiko")
def iiko() -> None:
    """iiko: register webhooks, send order and loyalty commands."""


# -- webhooks ---------------------------------------------------------------------------


def _print_results(item: integ.Integration, results: list[Any], as_json: bool, verb: str) -> None:
    rows = []
    for r in results:
        data = r.as_dict()
        data["webhook_url"] = item.masked_webhook(data["webhook_url"])
        rows.append(data)
    failed = [r for r in rows if r["status"] == "failed"]
    if as_json:
        click.echo(
            json.dumps(
                {"integration_id": item.id, "ok": not failed, "organizations": rows},
                ensure_ascii=False,
            )
        )
    else:
        for r in rows:
            line = f"organization {r['organization_id']}: {r['status']} ({r['action']})"
            if r["differences"]:
                line += f"; drift in {', '.join(r['differences'])}"
            if r["error"] and r["status"] == "failed":
                line += f"; {r['error']}"
            click.echo(line)
        if rows:
            click.echo(f"webhook URL: {rows[0]['webhook_url']}")
    if failed:
        raise click.ClickException(f"{verb} failed for {len(failed)} of {len(rows)} organizations")


def _webhook_run(
    integration_id: int, url: str | None, database_url: str | None, action: str, fix: bool
) -> tuple[integ.Integration, list[Any]]:
    from orchestration.iiko import webhook_registration as reg
    from orchestration.resources.errors import ProviderError

    item = _iiko_integration(database_url, integration_id)
    engine = _engine(database_url)
    try:
        with _client_for(database_url)(item) as client:
            if action == "register":
                results = reg.register(engine, item, client, url=url)
            else:
                results = reg.check(engine, item, client, url=url, fix=fix)
    except (reg.RegistrationError, ProviderError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    return item, results


@iiko.command("register-webhook")
@click.argument("integration_id", type=click.IntRange(min=1))
@click.option(
    "--url",
    default=None,
    help="Where iiko posts webhooks (default: the integration's webhook_url setting, else "
    "CRM_SYNC_RECEIVER_PUBLIC_BASE_URL + its webhook path).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@database_option
def register_webhook(
    integration_id: int, url: str | None, as_json: bool, database_url: str | None
) -> None:
    """Call webhooks/update_settings for every organization (the seed's event filters)."""
    item, results = _webhook_run(integration_id, url, database_url, "register", True)
    _print_results(item, results, as_json, "registration")


@iiko.command("check-webhook")
@click.argument("integration_id", type=click.IntRange(min=1))
@click.option("--url", default=None, help="The URL to expect (default as register-webhook).")
@click.option(
    "--fix/--no-fix", default=True, help="Register again on drift (default) or only report."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@database_option
def check_webhook(
    integration_id: int, url: str | None, fix: bool, as_json: bool, database_url: str | None
) -> None:
    """Compare iiko's webhooks/settings with ours; register again on drift."""
    item, results = _webhook_run(integration_id, url, database_url, "check", fix)
    _print_results(item, results, as_json, "check")


# -- commands ---------------------------------------------------------------------------


def _money(value: str, what: str) -> float:
    try:
        return float(Decimal(value))
    except (InvalidOperation, ValueError):
        raise click.BadParameter(f"{value!r} is not a number", param_hint=what) from None


def _payment(raw: str) -> dict[str, Any]:
    """``KIND:SUM[:PAYMENT_TYPE_ID]`` → an iiko payment."""
    parts = raw.split(":")
    if len(parts) not in (2, 3) or not parts[0].strip():
        raise click.BadParameter(f"'{raw}' is not KIND:SUM[:TYPE_ID]", param_hint="--payment")
    payment: dict[str, Any] = {
        "paymentTypeKind": parts[0].strip(),
        "sum": _money(parts[1], "--payment"),
    }
    if len(parts) == 3 and parts[2].strip():
        payment["paymentTypeId"] = parts[2].strip()
    return payment


def _body(given: dict[str, Any], raw_body: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if raw_body is not None:
        try:
            body = json.loads(raw_body)
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON ({exc.msg})", param_hint="--body") from None
        if not isinstance(body, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--body")
    for key, value in given.items():
        if value is None or value == ():
            continue
        if key == "payments":
            body["payments"] = [_payment(p) for p in value]
        elif key == "amount":
            body["amount"] = _money(value, "--amount")
        else:
            body[key] = value
    return body


def _command_error(exc: cmds.CommandError) -> click.ClickException:
    message = exc.message
    if exc.problems:
        message += ": " + "; ".join(f"{p['field']}: {p['error']}" for p in exc.problems)
    return click.ClickException(f"{message} (nothing was written)")


def _print_command(data: dict[str, Any], as_json: bool, created: bool | None = None) -> None:
    if as_json:
        if created is not None:
            data = data | {"created": created}
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    if created is False:
        click.echo("(an existing command with this idempotency key)")
    click.echo(f"command {data['id']} ({data['kind']}): {data['status']}")
    for key in ("order_id", "iiko_order_id", "provider_status", "correlation_id", "error"):
        if data.get(key) is not None:
            click.echo(f"{key}: {data[key]}")
    if data.get("result") is not None:
        click.echo(f"result: {json.dumps(data['result'], ensure_ascii=False)}")


def _send_inline(database_url: str | None, command_id: int, timeout: float) -> None:
    from orchestration.iiko.commands import SenderOptions, send_commands

    engine = _engine(database_url)
    try:
        send_commands(
            engine,
            _client_for(database_url, single_attempt=True),
            SenderOptions(
                run_id=f"cli-{uuid.uuid4().hex[:12]}",
                time_budget_seconds=timeout,
                poll_interval_seconds=0.5,
                command_ids=frozenset({command_id}),
            ),
        )
    finally:
        engine.dispose()


def _status_of(database_url: str | None, command_id: int) -> dict[str, Any]:
    with connection(database_url) as conn:
        found = cmds.get_command(conn, command_id)
    if found is None:
        raise click.ClickException(f"no command with id {command_id}")
    return found.public_dict()


@iiko.command("command")
@click.argument("integration_id", type=click.IntRange(min=1))
@click.argument("kind", type=click.Choice(KINDS))
@click.option("--order", "order_ref", default=None, help="Our order id or the iiko order id.")
@click.option("--body", "raw_body", default=None, help="The request body as a JSON object.")
@click.option("--status", default=None, help="[update-status] The new delivery status.")
@click.option("--courier-id", default=None, help="[assign-courier] The courier's employee id.")
@click.option("--courier-name", default=None, help="[assign-courier] The courier's name.")
@click.option(
    "--payment",
    "payments",
    multiple=True,
    help="[update-payment] KIND:SUM[:PAYMENT_TYPE_ID] (repeatable).",
)
@click.option("--cancel-reason", default=None, help="[cancel] Why the order is cancelled.")
@click.option("--cancel-cause-id", default=None, help="[cancel] iiko's cancel cause id.")
@click.option("--customer-id", default=None, help="[loyalty] The customer id.")
@click.option("--wallet-id", default=None, help="[loyalty] The wallet id.")
@click.option("--amount", default=None, help="[loyalty] The amount (> 0).")
@click.option("--comment", default=None, help="[loyalty] A comment.")
@click.option("--transaction-id", default=None, help="[cancel-hold] The hold's transaction id.")
@click.option("--phone", default=None, help="[customer-info] The customer's phone.")
@click.option("--organization-id", default=None, help="[loyalty] Default: the first one.")
@click.option("--idempotency-key", default=None, help="Send once per key (a retry is safe).")
@click.option("--wait", is_flag=True, help="Send it now and follow it to iiko's final state.")
@click.option("--timeout", type=click.FloatRange(min=1), default=60.0, help="For --wait (s).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@database_option
def command(
    integration_id: int,
    kind: str,
    order_ref: str | None,
    raw_body: str | None,
    idempotency_key: str | None,
    wait: bool,
    timeout: float,
    as_json: bool,
    database_url: str | None,
    **fields: Any,
) -> None:
    """Queue an order command or loyalty operation (the operator API's outbox row)."""
    kind = LOYALTY_ALIASES.get(kind, kind)
    body = _body(fields, raw_body)
    _iiko_integration(database_url, integration_id)
    try:
        with connection(database_url) as conn:
            order = None
            if kind in cmds.ORDER_COMMANDS:
                if not order_ref:
                    raise click.UsageError(f"{kind} needs --order ID")
                order = cmds.resolve_order(conn, order_ref, integration_id)
            elif order_ref:
                raise click.UsageError(f"{kind} takes no --order")
            row, created = cmds.create_command(
                conn,
                integration_id=integration_id,
                kind=kind,
                order=order,
                body=body,
                idempotency_key=idempotency_key,
                created_by="cli",
            )
    except cmds.CommandError as exc:
        raise _command_error(exc) from None
    data = row.public_dict()
    if wait and data["status"] in ("pending", "sent"):
        _send_inline(database_url, row.id, timeout)
        data = _status_of(database_url, row.id)
    _print_command(data, as_json, created)
    if wait and data["status"] == "failed":
        raise click.ClickException(f"command {row.id} failed: {data['error']}")


@iiko.command("command-status")
@click.argument("command_id", type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@database_option
def command_status(command_id: int, as_json: bool, database_url: str | None) -> None:
    """Show a command's state, iiko's status, error and result."""
    _print_command(_status_of(database_url, command_id), as_json)


CLI_COMMANDS = (iiko,)
