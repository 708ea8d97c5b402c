"""``crm-sync emulate amocrm`` (the API), ``amocrm-webhooks`` and ``rdesk`` (senders)."""

from __future__ import annotations

import sys

import click
import orjson

from provider_emulators.amocrm import app as amocrm
from provider_emulators.amocrm import records, senders
from provider_emulators.amocrm.state import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REDIRECT_URI,
)


def _http_url(value: str, name: str) -> None:
    if not value.startswith(("http://", "https://")):
        raise click.BadParameter("must be an http(s) URL", param_hint=name)


@click.command("amocrm")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8092, show_default=True, type=click.IntRange(1, 65535))
@click.option("--client-id", default=DEFAULT_CLIENT_ID, show_default=True)
@click.option(
    "--client-secret",
    default=DEFAULT_CLIENT_SECRET,
    envvar="AMOCRM_EMULATOR_CLIENT_SECRET",
    show_default=False,
    help="Client secret the OAuth endpoint accepts (default: demo-client-secret; env "
    "AMOCRM_EMULATOR_CLIENT_SECRET).",
)
@click.option("--redirect-uri", default=DEFAULT_REDIRECT_URI, show_default=True)
@click.option(
    "--long-lived-token",
    default=None,
    envvar="AMOCRM_EMULATOR_LONG_LIVED_TOKEN",
    help="A bearer token accepted forever (env AMOCRM_EMULATOR_LONG_LIVED_TOKEN).",
)
@click.option(
    "--token-ttl",
    default=86_400.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds an access token stays valid.",
)
@click.option(
    "--quota",
    default=amocrm.DEFAULT_QUOTA,
    show_default=True,
    type=click.IntRange(min=0),
    help="Accepted requests per access token per second (0 = no quota, no IP block).",
)
@click.option(
    "--block-after",
    default=amocrm.BLOCK_AFTER,
    show_default=True,
    type=click.IntRange(min=0),
    help="Refusals (429) within --block-window that block the source IP (0 = never).",
)
@click.option(
    "--block-window", default=amocrm.BLOCK_WINDOW, show_default=True, type=click.FloatRange(min=0.1)
)
@click.option(
    "--block-seconds",
    default=amocrm.BLOCK_SECONDS,
    show_default=True,
    type=click.FloatRange(min=0),
    help="How long a blocked IP gets 403.",
)
@click.option(
    "--leads-exist/--created-leads-only",
    default=False,
    show_default=True,
    help="Any positive lead id exists (created on first use), or only created leads.",
)
@click.option("--single-use-codes", is_flag=True, help="Refuse an authorization code reused.")
@click.option("--seed", default=0, show_default=True, type=int, help="Fault-injection seed.")
@click.option("--log-level", default="info", show_default=True)
def amocrm_serve(
    host: str,
    port: int,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    long_lived_token: str | None,
    token_ttl: float,
    quota: int,
    block_after: int,
    block_window: float,
    block_seconds: float,
    leads_exist: bool,
    single_use_codes: bool,
    seed: int,
    log_level: str,
) -> None:
    """Serve the amoCRM API v4 emulator with uvicorn (single process)."""
    import uvicorn

    for name, value in (("--client-id", client_id), ("--client-secret", client_secret)):
        if not value:
            raise click.BadParameter("must not be empty", param_hint=name)
    app = amocrm.create_app(
        client_id,
        client_secret,
        redirect_uri,
        token_ttl=token_ttl,
        long_lived_token=long_lived_token or None,
        single_use_codes=single_use_codes,
        leads_exist=leads_exist,
        quota=quota or None,
        block_after=block_after,
        block_window=block_window,
        block_seconds=block_seconds,
        seed=seed,
    )
    click.echo(
        f"amoCRM emulator on http://{host}:{port} (quota {quota or 'off'}/s per token, "
        f"token ttl {token_ttl:g} s, leads {'any id' if leads_exist else 'created only'})",
        err=True,
    )
    uvicorn.run(app, host=host, port=port, proxy_headers=False, log_level=log_level, workers=1)


def _finish(summary: dict) -> None:
    click.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    if summary["ok"] != summary["sent"]:
        sys.exit(1)


@click.command("amocrm-webhooks")
@click.option("--url", required=True, help="Receiver URL (with its secret) to POST to.")
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 100_000))
@click.option(
    "--action", default="add", show_default=True, type=click.Choice(records.CONTACT_ACTIONS)
)
@click.option("--start-id", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--per-webhook", default=1, show_default=True, type=click.IntRange(1, 250))
@click.option("--subdomain", default=records.DEFAULT_SUBDOMAIN, show_default=True)
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(1, 256))
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1))
def amocrm_webhooks(
    url: str,
    count: int,
    action: str,
    start_id: int,
    per_webhook: int,
    subdomain: str,
    concurrency: int,
    timeout: float,
) -> None:
    """Send amoCRM contact webhooks (form-encoded); prints a JSON summary, exits 1
    unless every answer was 2xx."""
    _http_url(url, "--url")
    summary = senders.send_contact_webhooks(
        url,
        count,
        action,
        start_id=start_id,
        per_webhook=per_webhook,
        subdomain=subdomain,
        concurrency=concurrency,
        timeout=timeout,
    )
    _finish(summary)


@click.command("rdesk")
@click.option("--url", required=True, help="Receiver URL, e.g. …/webhooks/rdesk/KEY/booked.")
@click.option("--endpoint", required=True, type=click.Choice(records.RDESK_ENDPOINTS))
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--lead-id", default=None, help="Send every update for this lead id.")
@click.option("--start-id", default=1, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--batch-size",
    default=1,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Updates per JSON array.",
)
@click.option(
    "--key",
    default=None,
    envvar="RDESK_WEBHOOK_KEY",
    help="Sent as X-Webhook-Key (for /zdrav/…; env RDESK_WEBHOOK_KEY); never printed.",
)
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(1, 256))
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1))
def rdesk_send(
    url: str,
    endpoint: str,
    count: int,
    lead_id: str | None,
    start_id: int,
    batch_size: int,
    key: str | None,
    concurrency: int,
    timeout: float,
) -> None:
    """Send RDESK booked / mc updates; prints a JSON summary, exits 1 unless every
    answer was 2xx."""
    _http_url(url, "--url")
    if lead_id is not None and not lead_id.strip().isdigit():
        raise click.BadParameter("must be a positive integer", param_hint="--lead-id")
    summary = senders.send_rdesk(
        url,
        endpoint,  # type: ignore[arg-type]
        count,
        lead_id=int(lead_id) if lead_id is not None else None,
        start_id=start_id,
        batch_size=batch_size,
        key=key,
        concurrency=concurrency,
        timeout=timeout,
    )
    _finish(summary)


COMMANDS = (amocrm_serve, amocrm_webhooks, rdesk_send)
