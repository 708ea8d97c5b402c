"""`crm-sync operator-tokens`: tokens for the operator API, stored hashed.

`create` prints the new token once (it cannot be shown again: only its SHA-256 is
kept); `list` and `revoke` never show a token.
"""

from __future__ import annotations

import json

import click

from crm_schema import operator_tokens as tokens
from crm_sync.cli.common import connection, database_option


@click.group("operator-tokens")
def operator_tokens() -> None:
    """Tokens for the operator API (`Authorization: Bearer …`), stored hashed."""


@operator_tokens.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@database_option
def create_token(name: str, as_json: bool, database_url: str | None) -> None:
    """Create a token for NAME (a person or a system) and print it, once."""
    try:
        with connection(database_url) as conn:
            record, token = tokens.create(conn, name)
    except tokens.OperatorTokenError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(record.public_dict() | {"token": token}, ensure_ascii=False))
        return
    click.echo(f"operator token {record.name!r} created; it is shown only this once:")
    click.echo(token)


@operator_tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@database_option
def list_tokens(as_json: bool, database_url: str | None) -> None:
    """List token names and when they were created, last used and revoked."""
    with connection(database_url) as conn:
        records = tokens.list_tokens(conn)
    if as_json:
        click.echo(json.dumps([r.public_dict() for r in records], ensure_ascii=False))
        return
    if not records:
        click.echo("no operator tokens")
        return
    click.echo(f"{'name':<30} {'state':<8} {'created_at':<33} last_used_at")
    for r in records:
        data = r.public_dict()
        state = "active" if r.active else "revoked"
        click.echo(
            f"{r.name[:30]:<30} {state:<8} {data['created_at'] or '-':<33} "
            f"{data['last_used_at'] or '-'}"
        )


@operator_tokens.command("revoke")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@database_option
def revoke_token(name: str, as_json: bool, database_url: str | None) -> None:
    """Revoke NAME's token: the operator API refuses it from now on."""
    try:
        with connection(database_url) as conn:
            record = tokens.revoke(conn, name)
    except tokens.OperatorTokenError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(record.public_dict(), ensure_ascii=False))
        return
    click.echo(f"operator token {record.name!r} revoked")
