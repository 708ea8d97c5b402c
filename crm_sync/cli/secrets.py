"""`crm-sync secrets`: the key that encrypts credentials and provider tokens at rest."""

from __future__ import annotations

import click

from crm_schema import integrations as integ
from crm_sync import encryption
from crm_sync.cli.common import connection, database_option
from crm_sync.settings import get_settings


@click.group()
def secrets() -> None:
    """Encryption keys for credentials and provider tokens (CRM_SYNC_SECRET_KEY)."""


@secrets.command("generate-key")
def secrets_generate_key() -> None:
    """Print a new random key (for CRM_SYNC_SECRET_KEY or `rotate --new-key`)."""
    click.echo(encryption.generate_key())


def _current_keys() -> list[str]:
    """The configured keys; none at all is allowed (values written before encryption)."""
    settings = get_settings()
    if settings.secret_key is None and settings.secret_key_file is None:
        return []
    try:
        return encryption.configured_keys(settings)
    except encryption.SecretKeyError as exc:
        raise click.ClickException(str(exc)) from None


@secrets.command("rotate")
@click.option(
    "--new-key",
    envvar="CRM_SYNC_NEW_SECRET_KEY",
    required=True,
    help="The key to encrypt with from now on (or CRM_SYNC_NEW_SECRET_KEY, which keeps it "
    "out of the process list and shell history).",
)
@database_option
def secrets_rotate(new_key: str, database_url: str | None) -> None:
    """Re-encrypt every credential and provider token with a new key, in one transaction.

    Stored values are read with the current key(s) (CRM_SYNC_SECRET_KEY, or the key
    file) and with the new one; plaintext written before encryption is encrypted too.
    Prints counts, never values. Afterwards set CRM_SYNC_SECRET_KEY to the new key.
    """
    try:
        [new] = encryption.parse_keys(new_key, "--new-key (CRM_SYNC_NEW_SECRET_KEY)")
    except encryption.SecretKeyError as exc:
        raise click.UsageError(str(exc)) from None
    except ValueError:
        raise click.UsageError("--new-key takes one key, not a list") from None
    current = _current_keys()
    read = encryption.Cipher([new, *[k for k in current if k != new]])
    write = encryption.Cipher([new])
    try:
        with connection(database_url) as conn:
            counts = integ.rotate_secrets(conn, read, write)
    except click.ClickException as exc:
        raise click.ClickException(f"{exc.message}; nothing was re-encrypted") from None
    click.echo(
        f"re-encrypted with the new key: {counts.credentials} credential values of "
        f"{counts.integrations} integrations ({counts.plaintext_credentials} were plaintext), "
        f"{counts.tokens} provider tokens ({counts.plaintext_tokens} were plaintext)"
    )
    if not current:
        click.echo("no current key was configured: only plaintext values could be read")
    click.echo(
        "now set CRM_SYNC_SECRET_KEY to the new key wherever credentials are read "
        "(Dagster, the CLI) and restart them; an old key may stay after it "
        '("new,old") until every process runs with the new one'
    )
