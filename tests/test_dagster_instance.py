"""The code location loads, and dagster.yaml gives the instance crm-sync expects."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
from dagster import DagsterInstance, DefaultScheduleStatus, DefaultSensorStatus
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from orchestration.definitions import defs

ROOT = Path(__file__).resolve().parent.parent


def test_definitions_load_with_expected_parts() -> None:
    repo = defs.get_repository_def()
    assert {j.name for j in repo.get_all_jobs()} >= {"allio_sync", "allio_delete_control"}
    sensor = repo.get_sensor_def("allio_webhook_sensor")
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    assert 5 <= sensor.minimum_interval_seconds <= 15
    for name in ("allio_reconcile_daily", "allio_delete_control_daily"):
        assert repo.get_schedule_def(name).default_status == DefaultScheduleStatus.RUNNING
    job = defs.resolve_job_def("allio_sync")
    assert job.executor_def.name == "in_process"
    assert job.partitions_def is not None
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert keys >= {"allio/reserves", "allio/dealcards", "allio/contacts"}


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    return home


def test_default_instance_is_sqlite_with_run_queue(dagster_home: Path) -> None:
    with DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        coordinator = instance.run_coordinator
        assert type(coordinator).__name__ == "QueuedRunCoordinator"
        assert coordinator.dequeue_interval_seconds == 1
        limits = {
            limit["key"]: limit
            for limit in instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        }
        assert limits["crm/live-sync"]["limit"] == 1
    assert (dagster_home / "storage").is_dir()


def test_dagster_pg_url_switches_storage_to_postgres(
    dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = os.environ.get("TEST_DATABASE_URL")
    if not admin:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but TEST_DATABASE_URL is not set")
        pytest.skip("TEST_DATABASE_URL not set")
    name = f"dagster_{uuid.uuid4().hex[:10]}"
    server = create_engine(
        make_url(admin).set(drivername="postgresql+psycopg2"), isolation_level="AUTOCOMMIT"
    )
    with server.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        # The plain form, as ops would write it: crm-sync adds the psycopg2 driver.
        url = make_url(admin).set(database=name).render_as_string(hide_password=False)
        monkeypatch.setenv("DAGSTER_PG_URL", url)
        with DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert instance.get_runs() == []
        assert not (dagster_home / "storage").exists()
    finally:
        with server.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        server.dispose()
