"""Shared fixtures: a freshly migrated database per test, on SQLite and PostgreSQL.

PostgreSQL comes from TEST_DATABASE_URL (a server URL; each test gets its own
database cloned from a migrated template). Without it the PostgreSQL half is
skipped locally, but under CI=true a missing PostgreSQL fails the run.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from crm_schema.engine import make_engine
from crm_schema.migrate import upgrade
from crm_sync.encryption import generate_key

# Credentials are stored encrypted: every test process (and the CLI, Dagster and devstack
# subprocesses the tests start, which inherit os.environ) gets one fresh key, so
# `make test` needs none in the environment. Set before anything reads the settings.
os.environ["CRM_SYNC_SECRET_KEY"] = generate_key()
os.environ.pop("CRM_SYNC_SECRET_KEY_FILE", None)

BACKENDS = ["sqlite", "postgres"]


def pg_admin_url() -> str | None:
    """TEST_DATABASE_URL; under CI=true its absence fails the test, else None."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("CI=true but TEST_DATABASE_URL is not set: PostgreSQL tests must run in CI")
    return None


def _pg_engine(url: str) -> Engine:
    return create_engine(
        make_url(url).set(drivername="postgresql+psycopg2"), isolation_level="AUTOCOMMIT"
    )


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "crm.sqlite3"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def _pg_template() -> Iterator[str]:
    admin = pg_admin_url()
    if admin is None:
        pytest.skip("TEST_DATABASE_URL not set: PostgreSQL half skipped (CI always runs it)")
    name = f"crm_tpl_{uuid.uuid4().hex[:10]}"
    engine = _pg_engine(admin)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL at TEST_DATABASE_URL is not reachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield name
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


def _fresh_pg_database(template: str) -> tuple[str, str]:
    admin = os.environ["TEST_DATABASE_URL"]
    name = f"crm_t_{uuid.uuid4().hex[:12]}"
    engine = _pg_engine(admin)
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    engine.dispose()
    return name, make_url(admin).set(database=name).render_as_string(hide_password=False)


def _drop_pg_database(name: str) -> None:
    engine = _pg_engine(os.environ["TEST_DATABASE_URL"])
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A plain URL (sqlite:///... or postgresql://...) of a fresh, migrated database."""
    if request.param == "sqlite":
        template = request.getfixturevalue("_sqlite_template")
        path = tmp_path / "crm.sqlite3"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("_pg_template")
    name, url = _fresh_pg_database(template)
    try:
        yield url
    finally:
        _drop_pg_database(name)


@pytest.fixture
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Like `database_url` but never migrated; parametrize with `backend`."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite3'}"
        return
    admin = pg_admin_url()
    if admin is None:
        pytest.skip("TEST_DATABASE_URL not set")
    name = f"crm_e_{uuid.uuid4().hex[:12]}"
    engine = _pg_engine(admin)
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        _drop_pg_database(name)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A SQLAlchemy engine on the fresh database."""
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


def output_metadata(result: Any) -> dict[str, Any]:
    """The plain metadata values of the single op output of an in-process run."""
    (output,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    return {k: v.value for k, v in output.event_specific_data.metadata.items()}


def count_rows(engine: Engine, table: str) -> int:
    """Row count of a table (helper for assertions)."""
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
