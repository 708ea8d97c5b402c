"""``crm-sync emulate unisender``: serve the Unisender API emulator."""

from __future__ import annotations

import click

from provider_emulators.unisender import app as unisender
from provider_emulators.unisender.state import (
    DEFAULT_API_KEY,
    DEFAULT_LISTS,
    DEFAULT_QUOTA_PER_MINUTE,
)

DEFAULT_PORT = 8093


def _list_ids(_ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        ids = [int(p) for p in value.split(",") if p.strip()]
    except ValueError:
        raise click.BadParameter("must be comma-separated list ids", param=param) from None
    if any(i < 1 for i in ids):
        raise click.BadParameter("list ids must be positive", param=param)
    return ids


@click.command("unisender")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    envvar="UNISENDER_EMULATOR_API_KEYS",
    help="An accepted API key (repeatable; default demo-unisender-key; env "
    "UNISENDER_EMULATOR_API_KEYS, space-separated). Never printed.",
)
@click.option(
    "--denied-key",
    "denied_keys",
    multiple=True,
    help="A key answered with access_denied (repeatable).",
)
@click.option(
    "--lists",
    default=",".join(map(str, DEFAULT_LISTS)),
    show_default=True,
    callback=_list_ids,
    help="Comma-separated ids of the account's mailing lists.",
)
@click.option(
    "--quota-per-minute",
    default=DEFAULT_QUOTA_PER_MINUTE,
    show_default=True,
    type=click.IntRange(min=0),
    help="Calls per API key per minute (0 = no quota).",
)
@click.option(
    "--ip-quota-per-minute",
    default=None,
    type=click.IntRange(min=1),
    help="Calls per source IP per minute (default: --quota-per-minute).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Fault-injection seed.")
@click.option("--log-level", default="info", show_default=True)
def unisender_serve(
    host: str,
    port: int,
    api_keys: tuple[str, ...],
    denied_keys: tuple[str, ...],
    lists: list[int],
    quota_per_minute: int,
    ip_quota_per_minute: int | None,
    seed: int,
    log_level: str,
) -> None:
    """Serve the Unisender API emulator with uvicorn (single process)."""
    import uvicorn

    try:
        app = unisender.create_app(
            api_keys or (DEFAULT_API_KEY,),
            lists,
            denied_keys=denied_keys,
            quota_per_minute=quota_per_minute or None,
            ip_quota_per_minute=ip_quota_per_minute,
            seed=seed,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    quota = (
        f"{quota_per_minute}/min per key, {ip_quota_per_minute or quota_per_minute}/min per IP"
        if quota_per_minute
        else "off"
    )
    click.echo(
        f"unisender emulator on http://{host}:{port} ({len(api_keys) or 1} key(s), lists "
        f"{','.join(map(str, lists)) or 'none'}, quota {quota})",
        err=True,
    )
    uvicorn.run(app, host=host, port=port, proxy_headers=False, log_level=log_level, workers=1)


COMMANDS = (unisender_serve,)
