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


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_0002_moves_existing_tasks_onto_the_generic_queue(empty_database_url: str) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import text

    upgrade(empty_database_url, "0001")
    engine = make_engine(empty_database_url)
    now = datetime(2026, 11, 1, 12, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO integrations (id, provider, name, webhook_key, credentials, "
                "settings, is_active) VALUES (1, 'allio', 'x', 'k', '{}', '{}', true)"
            )
        )
        for task_id, command, entity, status, claimed in (
            (1, "RESERVE_ADD", "reserve", 2, None),
            (2, "RESERVE_DEL", "reserve", 0, None),
            (3, "SPACE_CHANGED", "space", 0, None),
            (4, "DEALCARD_MOD", "dealcard", 1, now),
        ):
            conn.execute(
                text(
                    "INSERT INTO allio_tasks (id, external_ids, status, created_at, entity, "
                    "integration_id, command, attempts, claimed_at) "
                    "VALUES (:id, '[1,2]', :status, :now, :entity, 1, :command, 0, :claimed)"
                ),
                {"id": task_id, "status": status, "now": now, "entity": entity,
                 "command": command, "claimed": claimed},
            )  # fmt: skip
    upgrade(empty_database_url, "0002")
    with engine.connect() as conn:
        rows = {
            r.id: r
            for r in conn.execute(
                text(
                    "SELECT id, status, handler, error, ids_count, lease_expires_at "
                    "FROM allio_tasks"
                )
            )
        }
    assert [rows[i].handler for i in (1, 2, 3, 4)] == ["sync", "delete", None, "sync"]
    assert rows[3].status == 3 and rows[3].error == "unknown command SPACE_CHANGED"
    assert rows[2].status == 0 and rows[2].ids_count == 2
    assert rows[4].status == 1 and rows[4].lease_expires_at is not None
    engine.dispose()


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgres"], indirect=True)
def test_0003_retimes_allio_rows_keys_contacts_by_role_and_revives_space_changed(
    empty_database_url: str,
) -> None:
    """Existing rows: `till` re-read as Moscow time, `source_version` a UTC timestamp,
    one person id as client and buyer kept apart, SPACE_CHANGED tasks queued again."""
    import json
    from datetime import UTC, datetime

    from sqlalchemy import text

    upgrade(empty_database_url, "0002")
    engine = make_engine(empty_database_url)
    raw = json.dumps({"id": 7, "till": "2025-10-30 20:08:10", "updated_at": "2025-10-30 21:00:00"})
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO integrations (id, provider, name, webhook_key, credentials, "
                "settings, is_active) VALUES (1, 'allio', 'x', 'k', '{}', '{}', true)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO contacts (id, integration_id, external_id, custom_fields, raw, "
                "source_entity, synced_at) VALUES (1, 1, '5', '{}', '{}', 'dealcard', :now)"
            ),
            {"now": datetime(2026, 1, 1, tzinfo=UTC)},
        )
        conn.execute(
            text(
                "INSERT INTO reserves (id, integration_id, external_id, custom_fields, raw, "
                "source_version, created_at, synced_at) "
                "VALUES (1, 1, '7', '{}', :raw, '2025-10-30 21:00:00', :till, :now)"
            ),
            {
                "raw": raw,
                "till": datetime(2025, 10, 30, 20, 8, 10, tzinfo=UTC),
                "now": datetime(2026, 1, 1, tzinfo=UTC),
            },
        )
        conn.execute(
            text(
                "INSERT INTO allio_tasks (id, external_ids, status, created_at, entity, "
                "integration_id, command, handler, error, finished_at) VALUES (1, '[7]', 3, "
                ":now, 'space', 1, 'SPACE_CHANGED', NULL, 'unknown command SPACE_CHANGED', :now)"
            ),
            {"now": datetime(2026, 1, 1, tzinfo=UTC)},
        )
    upgrade(empty_database_url)
    from crm_schema.tables import contacts, load_provider_tables

    tables = load_provider_tables().tables
    reserves, tasks = tables["reserves"], tables["allio_tasks"]
    with engine.begin() as conn:
        row = conn.execute(reserves.select()).one()
        assert row.created_at.astimezone(UTC) == datetime(2025, 10, 30, 17, 8, 10, tzinfo=UTC)
        assert row.source_version.astimezone(UTC) == datetime(2025, 10, 30, 18, tzinfo=UTC)
        assert conn.execute(contacts.select()).one().role == "buyer"
        conn.execute(
            contacts.insert().values(
                id=2, integration_id=1, external_id="5", role="client", custom_fields={}, raw={}
            )
        )
        task = conn.execute(tasks.select()).one()
        assert (task.status, task.entity, task.handler, task.error) == (0, "reserve", "sync", None)
    downgrade(empty_database_url, "0002")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM contacts")).scalar_one() == 1
    engine.dispose()
