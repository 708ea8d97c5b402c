"""`crm-sync integrations`: connect, list, show, update, enable, disable, check and remove
provider accounts.

`add` and `update` take each provider's own fields, declared by its setup model in
the registry (crm_sync.providers.<name>): the options below are generated from them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click
from pydantic import BaseModel, SecretStr, ValidationError
from sqlalchemy import Connection, delete, func, select

from crm_schema import integrations as integ
from crm_schema.tables import integrations as integrations_table
from crm_schema.tables import metadata
from crm_sync.cli.common import connection, database_option
from crm_sync.fields import field_meta, problems, split_setup
from crm_sync.registry import (
    PROVIDERS,
    ProviderSpec,
    get_provider,
    layer_modules,
    provider_names,
)
from crm_sync.settings import get_settings


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _setup_fields() -> dict[str, dict[str, Any]]:
    """Every setup field of every provider: {name: {providers, help, bool, env}}."""
    fields: dict[str, dict[str, Any]] = {}
    for spec in PROVIDERS.values():
        for name, info in spec.setup.model_fields.items():
            entry = fields.setdefault(
                name,
                {
                    "providers": [],
                    "help": info.description or "",
                    "bool": info.annotation is bool,
                    "multiple": getattr(info.annotation, "__origin__", None) is list,
                    "env": [],
                },
            )
            entry["providers"].append(spec.name)
            env = field_meta(spec.setup, name).get("env")
            if env:
                entry["env"].append(env)
    return fields


SETUP_FIELDS = _setup_fields()


class OnOff(click.ParamType):
    """A switch given as on/off (also true/false, yes/no, 1/0)."""

    name = "on|off"
    _WORDS = {"on": True, "true": True, "yes": True, "1": True}
    _WORDS |= {"off": False, "false": False, "no": False, "0": False}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> bool:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word not in self._WORDS:
            self.fail(f"'{value}' is not on or off", param, ctx)
        return self._WORDS[word]


ON_OFF = OnOff()


def setup_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add one option per provider setup field (shared names are shared options)."""
    for name, entry in reversed(SETUP_FIELDS.items()):
        providers = ", ".join(entry["providers"])
        help_text = f"[{providers}] {entry['help']}"
        if entry["bool"]:
            # `--delete-control` alone means on; `--delete-control on|off` says which.
            option = click.option(
                _flag(name),
                name,
                type=ON_OFF,
                is_flag=False,
                flag_value="on",
                default=None,
                help=help_text,
            )
        elif entry["multiple"]:
            option = click.option(
                _flag(name), name, multiple=True, default=None, help=help_text + " (repeatable)"
            )
        else:
            option = click.option(
                _flag(name), name, default=None, help=help_text + _env_help(entry["env"])
            )
        command = option(command)
    return command


def _env_help(env: list[str]) -> str:
    return f" (env: {', '.join(env)})" if env else ""


def _from_env(spec: ProviderSpec, given: dict[str, Any]) -> None:
    """Fill the provider's fields that were not given from their environment variables
    (each provider its own: `--api-key` is CRM_SYNC_UON_API_KEY for U-ON and
    CRM_SYNC_UNISENDER_API_KEY for Unisender)."""
    for name in spec.setup.model_fields:
        env = field_meta(spec.setup, name).get("env")
        if name not in given and env and os.environ.get(env):
            given[name] = os.environ[env]


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in values.items()
        if k in SETUP_FIELDS and v is not None and v != ()
    }


def _refuse_foreign(spec: ProviderSpec, given: dict[str, Any]) -> None:
    foreign = sorted(set(given) - set(spec.setup.model_fields))
    if foreign:
        flags = ", ".join(_flag(f) for f in foreign)
        raise click.UsageError(f"{flags} do(es) not apply to {spec.name} integrations")


def _ask_missing(spec: ProviderSpec, given: dict[str, Any]) -> None:
    """On a terminal, ask for the provider's required fields that were not given."""
    if not sys.stdin.isatty():
        return
    for name, info in spec.setup.model_fields.items():
        if name in given or not info.is_required():
            continue
        secret = bool(field_meta(spec.setup, name).get("secret"))
        given[name] = click.prompt(info.description or name, hide_input=secret)


def _validate(model: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        lines = [
            f"Missing option '{_flag(p.field)}'"
            if p.kind == "missing"
            else f"Invalid value for '{_flag(p.field)}': {p.message}"
            for p in problems(exc)
        ]
        raise click.UsageError("; ".join(lines)) from None


def _webhook_url(item: integ.Integration) -> str:
    return get_settings().receiver_public_base_url.rstrip("/") + item.webhook_path


def _public(item: integ.Integration, reveal_webhook: bool = False) -> dict[str, Any]:
    """Masked like every other secret; the webhook key (path, URL) only when revealed."""
    url = _webhook_url(item) if item.webhook_path else None
    if url is not None and not reveal_webhook:
        url = item.masked_webhook(url)
    return item.public_dict(reveal_webhook=reveal_webhook) | {"webhook_url": url}


def _print_one(item: integ.Integration, as_json: bool, reveal_webhook: bool = False) -> None:
    data = _public(item, reveal_webhook)
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    for key in ("id", "provider", "name", "integration_uuid", "api_base_url", "is_active"):
        click.echo(f"{key}: {data[key]}")
    attention = data.get("attention")
    since = f" (since {data['attention_at']})" if attention else ""
    click.echo(f"attention: {attention or '-'}{since}")
    click.echo(f"credentials: {data['credentials']}")
    click.echo(f"settings: {json.dumps(data['settings'], ensure_ascii=False)}")
    click.echo(f"webhook_url: {data['webhook_url']}")


def _nonblank(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise click.BadParameter(f"{param.name} must not be empty")
    return value.strip() if value is not None else None


@click.group()
def integrations() -> None:
    """Connected provider accounts."""


@integrations.command("add")
@click.option("--provider", required=True, type=click.Choice(provider_names()))
@click.option("--name", required=True, callback=_nonblank)
@setup_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@database_option
def integrations_add(
    provider: str, name: str, as_json: bool, database_url: str | None, **fields: Any
) -> None:
    """Connect a provider account (its own fields, see --help) and print its webhook URL."""
    spec = get_provider(provider)
    given = _given(fields)
    _refuse_foreign(spec, given)
    _from_env(spec, given)
    _ask_missing(spec, given)
    setup = _validate(spec.setup, given)
    parts = split_setup(setup)
    try:
        parts["settings"] = spec.validate_settings(parts["settings"])
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    with connection(database_url) as conn:
        # The provider's own checks of what was given (e.g. a linked integration exists).
        check_given = getattr(spec.module("cli"), "before_add", None)
        if check_given is not None:
            check_given(conn, setup)
        item = integ.add_integration(
            conn,
            provider=provider,
            name=name,
            integration_uuid=parts.get("integration_uuid"),
            api_base_url=parts.get("api_base_url"),
            webhook_secret=parts.get("webhook_secret"),
            credentials=parts["credentials"],
            settings=parts["settings"],
        )
        # The provider's own step (e.g. exchanging an OAuth code), in this transaction:
        # if it fails, the new row is rolled back and nothing is left behind.
        hook = getattr(spec.module("cli"), "after_add", None)
        if hook is not None:
            hook(conn, item, setup)
            item = integ.get_integration(conn, item.id)
    if as_json:  # the provider needs the whole URL: `add` is where it is shown
        _print_one(item, as_json=True, reveal_webhook=True)
        return
    click.echo(f"integration {item.id} ({item.provider}, {item.name}) added")
    for path in item.webhook_paths:
        click.echo(f"webhook URL: {get_settings().receiver_public_base_url.rstrip('/')}{path}")


def _parse_setting(raw: str) -> tuple[list[str], Any]:
    key, sep, value = raw.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter(f"'{raw}' is not KEY=VALUE", param_hint="--setting")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return key.strip().split("."), parsed


def _apply_setting(settings: dict[str, Any], path: list[str], value: Any) -> None:
    node = settings
    for part in path[:-1]:
        child = node.get(part)
        node[part] = child = dict(child) if isinstance(child, dict) else {}
        node = child
    if value is None:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value


def _current_setup(item: integ.Integration, spec: ProviderSpec) -> dict[str, Any]:
    """The stored values of the provider's setup fields."""
    values: dict[str, Any] = {}
    for name in spec.setup.model_fields:
        meta = field_meta(spec.setup, name)
        store, key = meta.get("store"), meta.get("key") or name
        if store in ("integration_uuid", "api_base_url", "webhook_secret"):
            value = getattr(item, store, None)
        elif store == "credentials":
            value = item.credentials.get(key)
        else:
            value = item.settings.get(key)
        if value is not None:
            values[name] = value
    return values


def _used_once(spec: ProviderSpec) -> list[str]:
    """Setup fields used while adding and never stored (e.g. an OAuth code)."""
    return [n for n in spec.setup.model_fields if field_meta(spec.setup, n).get("store") == "none"]


def _validate_stored(
    spec: ProviderSpec, current: dict[str, Any], given: dict[str, Any]
) -> BaseModel:
    """The setup model over the stored values and the changes.

    A field used only while adding (stored nowhere) cannot be changed here; where the
    model needs one of them (e.g. "an OAuth code or a long-lived token"), it counts as
    given back then.
    """
    once = _used_once(spec)
    refused = [n for n in once if n in given]
    if refused:
        flags = ", ".join(_flag(n) for n in refused)
        raise click.UsageError(
            f"{flags} is used only by `integrations add`; see `crm-sync {spec.name} --help`"
        )
    values = current | given
    if once:
        for candidate in (values, values | dict.fromkeys(once, "(used when added)")):
            try:
                return spec.setup.model_validate(candidate)
            except ValidationError:
                continue
    return _validate(spec.setup, values)  # the first attempt's errors, as a usage error


@integrations.command("update")
@click.argument("integration_id", type=click.IntRange(min=1))
@click.option("--name", default=None, callback=_nonblank)
@setup_options
@click.option(
    "--setting",
    "settings",
    multiple=True,
    help="KEY=VALUE (VALUE as JSON when it parses, dotted keys for nested; =null removes).",
)
@click.option(
    "--clear-attention",
    is_flag=True,
    help="Forget why it needed a person (kept otherwise, until the cause is fixed).",
)
@click.option("--json", "as_json", is_flag=True)
@database_option
def integrations_update(
    integration_id: int,
    name: str | None,
    settings: tuple[str, ...],
    clear_attention: bool,
    as_json: bool,
    database_url: str | None,
    **fields: Any,
) -> None:
    """Change an integration's name, fields or settings (validated like `add`)."""
    given = _given(fields)
    changes = [_parse_setting(raw) for raw in settings]
    with connection(database_url) as conn:
        item = integ.get_integration(conn, integration_id)
        spec = get_provider(item.provider)
        _refuse_foreign(spec, given)
        parts = split_setup(_validate_stored(spec, _current_setup(item, spec), given))
        given_keys = {field_meta(spec.setup, n).get("key") or n for n in given}
        new_settings = dict(item.settings) | {
            k: v for k, v in parts["settings"].items() if k in given_keys
        }
        for path, value in changes:
            _apply_setting(new_settings, path, value)
        try:
            new_settings = spec.validate_settings(new_settings)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        credentials = {
            k: v.get_secret_value() if isinstance(v, SecretStr) else v
            for k, v in parts["credentials"].items()
            if k in given_keys
        }
        item = integ.update_integration(
            conn,
            integration_id,
            name=name,
            api_base_url=parts.get("api_base_url") if "api_base_url" in given else None,
            credentials=credentials or None,
            settings=new_settings,
        )
        if clear_attention:
            integ.clear_attention(conn, integration_id)
            item = integ.get_integration(conn, integration_id)
    if as_json:
        _print_one(item, as_json=True)
    else:
        click.echo(f"integration {item.id} updated")
        _print_one(item, as_json=False)


@integrations.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@database_option
def integrations_list(as_json: bool, database_url: str | None) -> None:
    """List integrations (secrets masked, webhook keys too)."""
    with connection(database_url) as conn:
        items = integ.list_integrations(conn)
    if as_json:
        click.echo(json.dumps([_public(i) for i in items], ensure_ascii=False))
        return
    if not items:
        click.echo("no integrations")
        return
    click.echo(
        f"{'id':>4}  {'provider':<10} {'active':<6} {'name':<30} {'webhook_path':<40} attention"
    )
    for i in items:
        active = "yes" if i.is_active else "no"
        path = i.masked_webhook(i.webhook_path)
        attention = i.attention or "-"
        click.echo(
            f"{i.id:>4}  {i.provider:<10} {active:<6} {i.name[:30]:<30} {path:<40} {attention}"
        )


@integrations.command("show")
@click.argument("integration_id", type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--reveal-webhook-url",
    is_flag=True,
    help="Show the webhook key, path and URL in full (to give them to the provider again).",
)
@database_option
def integrations_show(
    integration_id: int, as_json: bool, reveal_webhook_url: bool, database_url: str | None
) -> None:
    """Show one integration (secrets masked, the webhook key too unless revealed)."""
    with connection(database_url) as conn:
        item = integ.get_integration(conn, integration_id)
    _print_one(item, as_json, reveal_webhook=reveal_webhook_url)


def _toggle(active: bool) -> Callable[..., None]:
    def command(integration_id: int, database_url: str | None) -> None:
        with connection(database_url) as conn:
            item = integ.set_active(conn, integration_id, active)
        state = "enabled" if active else "disabled"
        click.echo(f"integration {item.id} {state}; running receivers apply it within 5 s")
        if item.attention:  # kept: enabling does not fix what needs a person
            click.echo(f"attention: {item.attention}")

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


@integrations.command("check")
@click.argument("integration_id", type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@database_option
def integrations_check(integration_id: int, as_json: bool, database_url: str | None) -> None:
    """Ask the provider whether the account is connected (exit 1 when it is not)."""
    with connection(database_url) as conn:
        item = integ.get_integration(conn, integration_id)
    hook = getattr(get_provider(item.provider).module("cli"), "check", None)
    if hook is None:
        # Nothing to check is no failure: exit 0, "checked": false.
        ok, message, details = True, f"{item.provider} integrations have no check", {}
        checked = False
    else:
        ok, message, details = hook(item, database_url)
        checked = True
    if as_json:
        data = {"id": item.id, "provider": item.provider, "checked": checked, "ok": ok}
        click.echo(json.dumps(data | {"message": message, "details": details}, ensure_ascii=False))
    else:
        click.echo(f"integration {item.id} ({item.provider}, {item.name}): {message}")
    if not ok:
        sys.exit(1)


def _referencing_tables() -> list[Any]:
    """Every table with a foreign key to integrations (providers' tables loaded)."""
    layer_modules("schema")
    return [
        table
        for table in metadata.sorted_tables
        if any(
            fk.column.table is integrations_table
            for fk in table.foreign_keys
            if fk.column is not None
        )
    ]


def _removal_plan(conn: Connection, item: integ.Integration) -> list[tuple[Any, Any, int]]:
    """(table, where clause, row count) for each table removal deletes from, the
    integration's own row last; a clear error when removal is not possible."""
    hook = getattr(get_provider(item.provider).module("cli"), "owned_rows", None)
    if hook is None:
        raise click.ClickException(
            f"{item.provider} integrations cannot be removed here (the provider does not say "
            "which rows are its own): disable it instead (crm-sync integrations disable ID)"
        )
    plan = [
        (
            table,
            clause,
            conn.execute(select(func.count()).select_from(table).where(clause)).scalar_one(),
        )
        for table, clause in hook(conn, item)
    ]
    covered = {table.name for table, _, _ in plan}
    left = []
    for table in _referencing_tables():
        if table.name in covered:
            continue
        refs = [
            fk.parent == item.id
            for fk in table.foreign_keys
            if fk.column.table is integrations_table
        ]
        for clause in refs:
            n = conn.execute(select(func.count()).select_from(table).where(clause)).scalar_one()
            if n:
                left.append(f"{table.name} ({n})")
    if left:
        raise click.ClickException(
            f"integration {item.id} cannot be removed: rows in {', '.join(left)} refer to it"
        )
    own = integrations_table.c.id == item.id
    return [*plan, (integrations_table, own, 1)]


@integrations.command("remove")
@click.argument("integration_id", type=click.IntRange(min=1))
@click.option("--yes", is_flag=True, help="Really delete (without it: only say what would go).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@database_option
def integrations_remove(
    integration_id: int, yes: bool, as_json: bool, database_url: str | None
) -> None:
    """Delete an integration and its rows (refused without --yes: says what would go)."""
    with connection(database_url) as conn:
        item = integ.get_integration(conn, integration_id)
        plan = _removal_plan(conn, item)
        counts = {str(table.name): n for table, _, n in plan}
        if yes:
            counts = {
                str(table.name): conn.execute(delete(table).where(clause)).rowcount
                for table, clause, _ in plan
            }
    what = ", ".join(f"{name}: {n}" for name, n in counts.items())
    if as_json:
        data = {"id": item.id, "provider": item.provider, "removed": yes, "rows": counts}
        click.echo(json.dumps(data, ensure_ascii=False))
    elif yes:
        click.echo(f"integration {item.id} ({item.provider}, {item.name}) removed; deleted {what}")
    else:
        click.echo(
            f"integration {item.id} ({item.provider}, {item.name}) would be removed with "
            f"its rows: {what}"
        )
    if not yes:
        raise click.ClickException("nothing deleted: add --yes to remove it")
