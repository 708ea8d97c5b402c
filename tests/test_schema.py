"""Migrations upgrade and downgrade cleanly on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from crm_schema.engine import DatabaseUrlError, make_engine, normalize_url
from crm_schema.migrate import current_revision, downgrade, upgrade

TABLES = {
    "integrations",
    "allio_webhook",
    "allio_tasks",
    "reserves",
    "dealcards",
    "contacts",
    "api_call_log",
    "rate_limit_state",
}


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_upgrade_downgrade_upgrade(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    assert TABLES <= set(inspect(engine).get_table_names())
    assert current_revision(empty_database_url) is not None
    downgrade(empty_database_url)
    assert not (TABLES & set(inspect(engine).get_table_names()))
    assert current_revision(empty_database_url) is None
    upgrade(empty_database_url)
    assert TABLES <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_seed_column_names_kept(engine) -> None:
    insp = inspect(engine)
    webhook_cols = {c["name"] for c in insp.get_columns("allio_webhook")}
    assert {"id", "integration_uuid", "command", "external_ids_array", "created_at"} <= webhook_cols
    task_cols = {c["name"] for c in insp.get_columns("allio_tasks")}
    assert {"id", "external_ids", "status", "created_at", "entity"} <= task_cols
    for table in ("reserves", "dealcards", "contacts"):
        cols = {c["name"] for c in insp.get_columns(table)}
        assert {
            "integration_id",
            "external_id",
            "custom_fields",
            "raw",
            "source_version",
            "deleted_at",
            "synced_at",
        } <= cols


def test_sqlite_uses_wal(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x' / 'db.sqlite3'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0
    engine.dispose()


@pytest.mark.parametrize(
    "raw,driver",
    [
        ("sqlite:///a/b.sqlite3", "sqlite+pysqlite"),
        ("postgresql://root@127.0.0.1:5432/crm", "postgresql+psycopg2"),
    ],
)
def test_plain_urls_pick_driver(raw: str, driver: str) -> None:
    assert normalize_url(raw).drivername == driver


@pytest.mark.parametrize("raw", ["mysql://x@y/z", "not a url"])
def test_bad_urls_rejected(raw: str) -> None:
    with pytest.raises(DatabaseUrlError):
        normalize_url(raw)


def test_migrations_match_table_definitions(engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from crm_schema.tables import metadata

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
