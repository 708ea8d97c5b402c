"""``crm-sync emulate uon`` (the API), ``pbx`` (the PBX stand-in), ``uon-webhooks`` and
``telephony-events`` (senders)."""

from __future__ import annotations

import sys
import uuid
from typing import Any

import click
import orjson
from pydantic import ValidationError

from provider_emulators.uon import senders
from provider_emulators.uon.app import create_app
from provider_emulators.uon.clients import digits_of
from provider_emulators.uon.payloads import TelephonyEvent, UonWebhook
from provider_emulators.uon.pbx import DEFAULT_PORT as PBX_PORT
from provider_emulators.uon.pbx import create_pbx_app
from provider_emulators.uon.state import DEFAULT_API_KEY, DEFAULT_QUOTA

DEFAULT_PORT = 8094


def _http_url(value: str, name: str) -> None:
    if not value.startswith(("http://", "https://")):
        raise click.BadParameter("must be an http(s) URL", param_hint=name)


def _serve(app: Any, host: str, port: int, log_level: str) -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, proxy_headers=False, log_level=log_level, workers=1)


@click.command("uon")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    envvar="UON_EMULATOR_API_KEYS",
    help=f"An accepted API key (repeatable; default {DEFAULT_API_KEY}; env "
    "UON_EMULATOR_API_KEYS, space-separated). Never printed.",
)
@click.option(
    "--quota",
    default=DEFAULT_QUOTA,
    show_default=True,
    type=click.IntRange(min=0),
    help="Requests per second per API key (0 = no quota); over it 429 without Retry-After.",
)
@click.option("--with-pbx", is_flag=True, help="Also serve the PBX stand-in under /pbx.")
@click.option(
    "--pbx-client-id",
    default=None,
    envvar="UON_EMULATOR_PBX_CLIENT_ID",
    help="With --with-pbx: the only clientId the PBX accepts (default: any). Never printed.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Fault-injection seed.")
@click.option("--log-level", default="info", show_default=True)
def uon_serve(
    host: str,
    port: int,
    api_keys: tuple[str, ...],
    quota: int,
    with_pbx: bool,
    pbx_client_id: str | None,
    seed: int,
    log_level: str,
) -> None:
    """Serve the U-ON.Travel API emulator (and the PBX under /pbx) with uvicorn."""
    try:
        pbx = create_pbx_app(pbx_client_id, seed=seed) if with_pbx else None
        app = create_app(api_keys or (DEFAULT_API_KEY,), quota=quota or None, seed=seed, pbx=pbx)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    extra = f", PBX at http://{host}:{port}/pbx" if with_pbx else ""
    click.echo(
        f"U-ON emulator on http://{host}:{port} ({len(api_keys) or 1} key(s), quota "
        f"{quota or 'off'}/s per key{extra})",
        err=True,
    )
    _serve(app, host, port, log_level)


@click.command("pbx")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=PBX_PORT, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--client-id",
    default=None,
    envvar="PBX_EMULATOR_CLIENT_ID",
    help="The only clientId accepted (default: any; env PBX_EMULATOR_CLIENT_ID). Never printed.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Fault-injection seed.")
@click.option("--log-level", default="info", show_default=True)
def pbx_serve(host: str, port: int, client_id: str | None, seed: int, log_level: str) -> None:
    """Serve the PBX stand-in (click-to-call originate, calls at /_admin/calls)."""
    try:
        app = create_pbx_app(client_id, seed=seed)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    checked = "checked" if client_id else "not checked"
    click.echo(f"PBX stand-in on http://{host}:{port} (clientId {checked})", err=True)
    _serve(app, host, port, log_level)


def _finish(summary: dict[str, Any]) -> None:
    click.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    if summary["ok"] != summary["sent"]:
        sys.exit(1)


def _client(_ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise click.BadParameter("must be a JSON object", param=param) from None
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object", param=param)
    return data


def _nth(client_id: str | None, n: int) -> str | None:
    """The n-th webhook's client id: two apart, so an even id stays a known client."""
    if client_id is None or n == 0 or digits_of(client_id) != client_id:
        return client_id
    return str(int(client_id) + 2 * n)


@click.command("uon-webhooks")
@click.option("--url", required=True, help="Receiver URL: …/webhooks/uon/KEY or …/uon/webhook.")
@click.option(
    "--as",
    "encoding",
    default="json",
    show_default=True,
    type=click.Choice(senders.ENCODINGS),
    help="GET query string, POST form or POST JSON.",
)
@click.option("--russian", is_flag=True, help="Russian keys (метод, телефон, ID клиента, …).")
@click.option("--type-id", type=int, default=None, help="3/4/5 client, 1/2/16/17 request, 47 call.")
@click.option("--client-id", default=None)
@click.option("--request-id", default=None)
@click.option("--lead-id", default=None)
@click.option("--method", "call_method", default=None, help="call: click-to-call.")
@click.option("--user-id", default=None, help="The U-ON manager id (click-to-call).")
@click.option("--phone", default=None)
@click.option("--uon-id", default=None, help="The U-ON account id.")
@click.option("--subdomain", default=None, help="uon_subdomain.")
@click.option("--client", default=None, callback=_client, help="The client as a JSON object.")
@click.option(
    "--count",
    default=1,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Webhooks to send (client ids two apart).",
)
@click.option(
    "--secret",
    default=None,
    envvar="UON_WEBHOOK_SECRET",
    help="Sent as X-Webhook-Secret (for /uon/webhook; env UON_WEBHOOK_SECRET). Never printed.",
)
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1))
def uon_webhooks(
    url: str,
    encoding: senders.Encoding,
    russian: bool,
    type_id: int | None,
    client_id: str | None,
    request_id: str | None,
    lead_id: str | None,
    call_method: str | None,
    user_id: str | None,
    phone: str | None,
    uon_id: str | None,
    subdomain: str | None,
    client: dict[str, Any] | None,
    count: int,
    secret: str | None,
    timeout: float,
) -> None:
    """Send U-ON webhooks; prints a JSON summary with the answers, exits 1 unless every
    answer was 2xx."""
    _http_url(url, "--url")
    webhooks = [
        UonWebhook(
            type_id=type_id,
            client_id=_nth(client_id, n),
            request_id=request_id,
            lead_id=lead_id,
            method=call_method,
            user_id=user_id,
            phone=phone,
            uon_id=uon_id,
            uon_subdomain=subdomain,
            client=client,
        )  # fmt: skip
        for n in range(count)
    ]
    summary = senders.send_uon_webhooks(
        url, webhooks, encoding=encoding, russian=russian, secret=secret, timeout=timeout
    )
    _finish(summary)


@click.command("telephony-events")
@click.option("--url", required=True, help="Receiver URL: …/webhooks/telephony/KEY.")
@click.option(
    "--event",
    default="call",
    show_default=True,
    type=click.Choice(["call", "start", "dial", "bridge", "hangup"]),
    help="One event, or a whole call (start → dial → bridge → hangup).",
)
@click.option("--call-id", default=None, help="Default: a new one.")
@click.option("--phone", required=True, help="The other party's number.")
@click.option("--direction", default="in", show_default=True, type=click.Choice(["in", "out"]))
@click.option("--extension", default="151", show_default=True)
@click.option(
    "--status",
    default="answered",
    show_default=True,
    type=click.Choice(["answered", "missed", "busy", "failed"]),
    help="How the call ends (a missed one has no bridge).",
)
@click.option("--duration", default=42.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--batch", is_flag=True, help="All events in one JSON array.")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1))
def telephony_events(
    url: str,
    event: str,
    call_id: str | None,
    phone: str,
    direction: str,
    extension: str,
    status: str,
    duration: float,
    batch: bool,
    timeout: float,
) -> None:
    """Send telephony call events; prints a JSON summary, exits 1 unless every answer
    was 2xx."""
    _http_url(url, "--url")
    call_id = call_id or f"call-{uuid.uuid4().hex[:12]}"
    try:
        if event == "call":
            events = senders.call_events(
                call_id, phone, direction=direction, extension=extension or None,  # type: ignore[arg-type]
                outcome=status, talk_seconds=duration,  # type: ignore[arg-type]
            )  # fmt: skip
        else:
            hangup = event == "hangup"
            events = [
                TelephonyEvent(
                    event=event,
                    call_id=call_id,
                    direction=direction,
                    phone=phone,  # type: ignore[arg-type]
                    extension=extension or None,
                    duration=duration if hangup else None,
                    status=status if hangup else None,  # type: ignore[arg-type]
                )  # fmt: skip
            ]
    except ValidationError as exc:
        raise click.BadParameter(str(exc.errors(include_url=False)[0]["msg"])) from None
    summary = senders.send_telephony(url, events, batch=batch, timeout=timeout)
    _finish({**summary, "call_id": call_id})


COMMANDS = (uon_serve, pbx_serve, uon_webhooks, telephony_events)
