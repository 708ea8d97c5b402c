"""``crm-sync emulate iiko`` (the Cloud API) and ``crm-sync emulate iiko-webhooks`` (a sender)."""

from __future__ import annotations

import sys

import click
import httpx
import orjson

from provider_emulators.iiko import app as iiko


@click.command("iiko")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8091, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--api-login",
    default=iiko.DEFAULT_API_LOGIN,
    envvar="IIKO_EMULATOR_API_LOGIN",
    show_default=False,
    help="apiLogin that access_token accepts (default: demo-api-login; env "
    "IIKO_EMULATOR_API_LOGIN).",
)
@click.option(
    "--token-ttl",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds an access token stays valid.",
)
@click.option(
    "--command-delay",
    default=0.5,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds a command stays InProgress.",
)
@click.option(
    "--quota",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Accepted requests per source IP per second (0 = no quota).",
)
@click.option(
    "--push-changes",
    is_flag=True,
    help="Post a DeliveryOrderUpdate webhook when a command changes an order.",
)
@click.option("--no-validate", is_flag=True, help="Do not check request bodies against the spec.")
@click.option("--seed", default=0, show_default=True, type=int, help="Fault-injection seed.")
@click.option("--log-level", default="info", show_default=True)
def iiko_serve(
    host: str,
    port: int,
    api_login: str,
    token_ttl: float,
    command_delay: float,
    quota: int,
    push_changes: bool,
    no_validate: bool,
    seed: int,
    log_level: str,
) -> None:
    """Serve the iiko Cloud API emulator with uvicorn (single process)."""
    import uvicorn

    if not api_login:
        raise click.BadParameter("must not be empty", param_hint="--api-login")
    try:
        app = iiko.create_app(
            api_login=api_login,
            token_ttl=token_ttl,
            command_delay=command_delay,
            quota=quota or None,
            validate=not no_validate,
            push_changes=push_changes,
            seed=seed,
        )
    except iiko.spec.SpecError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"iiko emulator on http://{host}:{port} (token ttl {token_ttl:g} s, command delay "
        f"{command_delay:g} s, quota {quota or 'off'}/s per IP)",
        err=True,
    )
    uvicorn.run(app, host=host, port=port, proxy_headers=False, log_level=log_level, workers=1)


@click.command("iiko-webhooks")
@click.option("--url", required=True, help="Receiver URL to POST the webhooks to.")
@click.option(
    "--token",
    required=True,
    envvar="IIKO_WEBHOOK_TOKEN",
    help="authToken sent in Authorization (or IIKO_WEBHOOK_TOKEN); never printed.",
)
@click.option("--organization-id", required=True, help="organizationId of the events.")
@click.option(
    "--count",
    default=1,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="How many orders (one event each).",
)
@click.option(
    "--without-order",
    is_flag=True,
    help="Events without eventInfo.order (the receiver must call deliveries/by_id).",
)
@click.option("--soi", is_flag=True, help="Send the seed's SOI bodies (type CREATE/UPDATE).")
@click.option(
    "--event-type",
    default="DeliveryOrderUpdate",
    show_default=True,
    type=click.Choice(iiko.WEBHOOK_EVENT_TYPES),
)
@click.option(
    "--batch-size",
    default=1,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Events per JSON array.",
)
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(1, 256))
@click.option("--seed", default=None, help="Stable order ids for this seed (default: random).")
@click.option("--bearer", is_flag=True, help="Send 'Bearer <token>' instead of the bare token.")
@click.option(
    "--emulator",
    default=None,
    help="iiko emulator base URL: create the orders there (by_id and "
    "by_delivery_date_and_status then find them) and let it send the webhooks.",
)
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1))
def iiko_webhooks(
    url: str,
    token: str,
    organization_id: str,
    count: int,
    without_order: bool,
    soi: bool,
    event_type: str,
    batch_size: int,
    concurrency: int,
    seed: str | None,
    bearer: bool,
    emulator: str | None,
    timeout: float,
) -> None:
    """Send iiko webhooks; prints a JSON summary, exits 1 unless every answer was 2xx."""
    for name, value in (("--url", url), ("--emulator", emulator)):
        if value is not None and not value.startswith(("http://", "https://")):
            raise click.BadParameter("must be an http(s) URL", param_hint=name)
    if not token:
        raise click.BadParameter("must not be empty", param_hint="--token")
    if emulator:
        summary = _via_emulator(
            emulator,
            url,
            token,
            organization_id,
            count,
            without_order,
            soi,
            event_type,
            batch_size,
            concurrency,
            bearer,
            timeout,
        )
    else:
        events = iiko.demo_events(
            organization_id,
            count,
            seed=seed,
            with_order=not without_order,
            soi=soi,
            event_type=event_type,
        )
        summary = iiko.send_webhooks(
            url,
            token,
            events,
            batch_size=batch_size,
            concurrency=concurrency,
            timeout=timeout,
            bearer=bearer,
        )
    click.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    if summary["ok"] != summary["sent"]:
        sys.exit(1)


def _via_emulator(
    emulator: str,
    url: str,
    token: str,
    organization_id: str,
    count: int,
    without_order: bool,
    soi: bool,
    event_type: str,
    batch_size: int,
    concurrency: int,
    bearer: bool,
    timeout: float,
) -> dict:
    body = {
        "organization_id": organization_id,
        "count": count,
        "send_webhooks": True,
        "full": not without_order,
        "soi": soi,
        "event_type": event_type,
        "url": url,
        "token": token,
        "bearer": bearer,
        "batch_size": batch_size,
        "concurrency": concurrency,
    }
    try:
        resp = httpx.post(f"{emulator.rstrip('/')}/_admin/orders", json=body, timeout=timeout * 10)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"emulator unreachable: {type(exc).__name__}") from None
    if resp.status_code != 200:
        raise click.ClickException(f"emulator answered {resp.status_code}: {resp.text[:300]}")
    answer = resp.json()
    return {**answer["webhooks"], "ids": answer["ids"]}


COMMANDS = (iiko_serve, iiko_webhooks)
