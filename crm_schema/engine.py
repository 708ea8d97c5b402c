"""Engine factory: plain `sqlite:///path` / `postgresql://...` URLs, drivers chosen here."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.engine.url import URL

from crm_sync.settings import get_settings

# JSON columns hold UTF-8 text: an analyst reading custom_fields sees "Менеджер 7",
# not escapes such as \u041c.
json_dumps = partial(json.dumps, ensure_ascii=False)


class DatabaseUrlError(ValueError):
    """The DATABASE_URL is not one crm-sync understands."""


def normalize_url(raw: str) -> URL:
    """Parse a plain database URL and pick the driver crm-sync uses for it."""
    try:
        url = make_url(raw)
    except Exception as exc:  # sqlalchemy raises ArgumentError with the URL in it
        raise DatabaseUrlError("DATABASE_URL is not a valid database URL") from exc
    backend = url.get_backend_name()
    if backend == "sqlite":
        return url.set(drivername="sqlite+pysqlite")
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg2")
    raise DatabaseUrlError(
        f"unsupported database '{backend}': use sqlite:///path or postgresql://user@host:port/db"
    )


def sqlite_path(url: URL) -> Path | None:
    """The file behind a SQLite URL (None for in-memory databases)."""
    if url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def make_engine(
    raw_url: str | None = None, *, sqlite_busy_timeout_ms: int | None = None, **kwargs: object
) -> Engine:
    """Create an engine for `raw_url` (default: settings.database_url).

    SQLite gets WAL, a busy timeout (``sqlite_busy_timeout_ms``, default the settings')
    and a created parent folder; PostgreSQL gets
    psycopg2 with pre-ping so a restarted server does not break long-lived processes.
    JSON columns are written as UTF-8, not ASCII escapes.
    """
    settings = get_settings()
    url = normalize_url(raw_url or settings.database_url)
    kwargs.setdefault("json_serializer", json_dumps)
    if url.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        busy_ms = sqlite_busy_timeout_ms or settings.sqlite_busy_timeout_ms
        engine = create_engine(url, connect_args={"timeout": max(30, busy_ms / 1000)}, **kwargs)
        _configure_sqlite(engine, busy_ms)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001 - DBAPI callback signature
        # pysqlite's implicit BEGIN breaks SAVEPOINT and BEGIN IMMEDIATE; we emit BEGIN.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        # IMMEDIATE takes the write lock up front, so two writers never deadlock
        # on a read-to-write upgrade; busy_timeout then queues them.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def dialect_insert(conn: Connection) -> Callable[[Table], Any]:
    """The dialect's `insert` (both have ON CONFLICT) for this connection."""
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


def is_sqlite(engine: Engine) -> bool:
    """True when the engine talks to SQLite."""
    return engine.dialect.name == "sqlite"
