"""What every command shares: the database option and clear database (and key) errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError

from crm_schema import integrations as integ
from crm_schema.engine import DatabaseUrlError, make_engine
from crm_sync.encryption import EncryptionError
from crm_sync.settings import get_settings

database_option = click.option(
    "--database-url",
    envvar="DATABASE_URL",
    default=None,
    help="sqlite:///path or postgresql://user@host:port/db (default: DATABASE_URL or .data/).",
)


def safe_url(raw: str) -> str:
    """A database URL for display: the password hidden."""
    try:
        return make_url(raw).render_as_string(hide_password=True)
    except Exception:
        return "<invalid DATABASE_URL>"


def first_line(exc: SQLAlchemyError) -> str:
    """The driver's first line of an error (no bound parameters)."""
    orig = getattr(exc, "orig", None)
    return str(orig).strip().splitlines()[0] if orig else type(exc).__name__


@contextmanager
def connection(database_url: str | None) -> Iterator[Connection]:
    """A transaction on the database with every failure turned into a clear CLI error."""
    url = database_url or get_settings().database_url
    try:
        engine = make_engine(url)
    except DatabaseUrlError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        with engine.begin() as conn:
            yield conn
    except (integ.IntegrationError, EncryptionError) as exc:
        raise click.ClickException(str(exc)) from None
    except (OperationalError, ProgrammingError) as exc:
        first = first_line(exc)
        if "no such table" in first or ("does not exist" in first and "relation" in first):
            raise click.ClickException(
                "the database is not migrated: run `crm-sync db upgrade` first"
            ) from None
        raise click.ClickException(f"cannot use the database at {safe_url(url)}: {first}") from None
    except SQLAlchemyError as exc:
        # Driver messages can echo bound parameters (secrets): name the error only.
        raise click.ClickException(f"database error ({type(exc).__name__})") from None
    finally:
        engine.dispose()
