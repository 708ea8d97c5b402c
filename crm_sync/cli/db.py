"""`crm-sync db`: Alembic migrations."""

from __future__ import annotations

import click
from sqlalchemy.exc import SQLAlchemyError

from crm_schema import migrate
from crm_schema.engine import DatabaseUrlError
from crm_sync.cli.common import database_option, safe_url
from crm_sync.settings import get_settings


@click.group()
def db() -> None:
    """Database migrations."""


def _migrate(direction: str, database_url: str | None, revision: str) -> None:
    """Run Alembic one way, every failure turned into a clear CLI error."""
    url = database_url or get_settings().database_url
    try:
        getattr(migrate, direction)(url, revision)
    except DatabaseUrlError as exc:
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise click.ClickException(f"cannot {direction} {safe_url(url)}: {first}") from None
    click.echo(f"database at {safe_url(url)}: {direction} to {revision} done")


@db.command("upgrade")
@database_option
@click.option("--revision", default="head", show_default=True)
def db_upgrade(database_url: str | None, revision: str) -> None:
    """Apply migrations (creates the SQLite file when needed)."""
    _migrate("upgrade", database_url, revision)


@db.command("downgrade")
@database_option
@click.option("--revision", default="base", show_default=True)
def db_downgrade(database_url: str | None, revision: str) -> None:
    """Revert migrations (default: all of them)."""
    _migrate("downgrade", database_url, revision)
