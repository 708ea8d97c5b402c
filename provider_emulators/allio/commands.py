"""``crm-sync emulate allio`` (the API) and ``crm-sync emulate allio-webhooks`` (a sender)."""

from __future__ import annotations

import sys

import click
import orjson

from provider_emulators.allio import app as allio


class _IdList(click.ParamType):
    name = "ID[,ID...]"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> list[int]:
        if isinstance(value, list):
            return value
        try:
            return [int(part) for part in str(value).split(",") if part.strip()]
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)


@click.command("allio")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--token",
    default=allio.DEFAULT_TOKEN,
    envvar="ALLIO_EMULATOR_TOKEN",
    show_default=False,
    help="Bearer token the API accepts (default: demo-token; env ALLIO_EMULATOR_TOKEN).",
)
@click.option(
    "--quota",
    default=2,
    show_default=True,
    type=click.IntRange(min=0),
    help="Accepted requests per source IP per second (0 = no quota).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Fault-injection seed.")
@click.option("--log-level", default="info", show_default=True)
def allio_serve(host: str, port: int, token: str, quota: int, seed: int, log_level: str) -> None:
    """Serve the ALLIO API emulator with uvicorn (single process)."""
    import uvicorn

    if not token:
        raise click.BadParameter("must not be empty", param_hint="--token")
    app = allio.create_app(token=token, quota_per_second=quota or None, seed=seed)
    click.echo(
        f"ALLIO emulator on http://{host}:{port} (quota {quota or 'off'}/s per IP)", err=True
    )
    uvicorn.run(app, host=host, port=port, proxy_headers=False, log_level=log_level, workers=1)


@click.command("allio-webhooks")
@click.option("--url", required=True, help="Receiver URL to POST the webhooks to.")
@click.option("--uuid", "uuid_", required=True, help="Integration uuid put in each body.")
@click.option(
    "--command", default="RESERVE_ADD", show_default=True, type=click.Choice(allio.COMMANDS)
)
@click.option("--indexes", type=_IdList(), help="Comma-separated ids, e.g. 1,2,3.")
@click.option("--count", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(1, 256))
@click.option("--random-ids", is_flag=True, help="Random 1-5 ids per webhook instead of --indexes.")
@click.option("--seed", type=int, default=None, help="Seed for --random-ids.")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1))
def allio_webhooks(
    url: str,
    uuid_: str,
    command: str,
    indexes: list[int] | None,
    count: int,
    concurrency: int,
    random_ids: bool,
    seed: int | None,
    timeout: float,
) -> None:
    """Send ALLIO webhooks; prints a JSON summary, exits 1 unless every answer was 2xx."""
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter("must be an http(s) URL", param_hint="--url")
    if random_ids == (indexes is not None):
        raise click.UsageError("give exactly one of --indexes or --random-ids")
    source = allio.random_indexes(seed) if random_ids else indexes
    summary = allio.send_webhooks(url, uuid_, command, source, count, concurrency, timeout)
    click.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    if summary["ok"] != summary["sent"]:
        sys.exit(1)


COMMANDS = (allio_serve, allio_webhooks)
