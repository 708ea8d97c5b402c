"""The code location loads, and dagster.yaml gives the instance crm-sync expects."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, DefaultScheduleStatus, DefaultSensorStatus
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from orchestration.definitions import defs

ROOT = Path(__file__).resolve().parent.parent


def test_definitions_load_with_expected_parts() -> None:
    repo = defs.get_repository_def()
    assert {j.name for j in repo.get_all_jobs()} >= {
        "allio_sync",
        "allio_delete_control",
        "api_call_log_retention",  # orchestration/defs/maintenance
    }
    sensor = repo.get_sensor_def("allio_webhook_sensor")
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    assert 5 <= sensor.minimum_interval_seconds <= 15
    for name in (
        "allio_reconcile_daily",
        "allio_delete_control_daily",
        "api_call_log_retention_daily",
    ):
        assert repo.get_schedule_def(name).default_status == DefaultScheduleStatus.RUNNING
    job = defs.resolve_job_def("allio_sync")
    assert job.executor_def.name == "in_process"
    assert job.partitions_def is not None
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert keys >= {"allio/reserves", "allio/dealcards", "allio/contacts"}


def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: str) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / config, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def test_embedded_instance_is_sqlite_with_run_queue_and_monitoring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _home(tmp_path, monkeypatch, "dagster.yaml")
    with DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        coordinator = instance.run_coordinator
        assert type(coordinator).__name__ == "QueuedRunCoordinator"
        assert coordinator.dequeue_interval_seconds == 1
        runs = instance.get_concurrency_config().run_queue_config
        limits = {limit["key"]: limit for limit in runs.tag_concurrency_limits}
        assert limits["crm/live-sync"]["limit"] == 1
        # One live run per provider (five) plus other days and backfills, at once.
        assert runs.max_concurrent_runs >= 5 + limits["crm/batch-sync"]["limit"] * 5
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_runtime_seconds > 0
    assert any(home.iterdir())  # the storage lives under DAGSTER_HOME


def test_production_instance_differs_only_in_storage() -> None:
    embedded = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    production = yaml.safe_load((ROOT / "dagster.production.yaml").read_text())
    assert embedded.pop("storage") == {"sqlite": {"base_dir": {"env": "DAGSTER_HOME"}}}
    assert production.pop("storage") == {"postgres": {"postgres_url": {"env": "DAGSTER_PG_URL"}}}
    assert embedded == production


def test_production_instance_stores_runs_in_postgres(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = os.environ.get("TEST_DATABASE_URL")
    if not admin:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but TEST_DATABASE_URL is not set")
        pytest.skip("TEST_DATABASE_URL not set")
    home = _home(tmp_path, monkeypatch, "dagster.production.yaml")
    name = f"dagster_{uuid.uuid4().hex[:10]}"
    server = create_engine(
        make_url(admin).set(drivername="postgresql+psycopg2"), isolation_level="AUTOCOMMIT"
    )
    with server.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(admin).set(drivername="postgresql+psycopg2", database=name)
        monkeypatch.setenv("DAGSTER_PG_URL", url.render_as_string(hide_password=False))
        with DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert instance.get_runs() == []
            assert instance.run_monitoring_enabled
        assert not any(home.glob("history*"))
    finally:
        with server.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        server.dispose()


def test_dg_check_defs_loads_the_code_location(tmp_path: Path) -> None:
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path))
    shutil.copyfile(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    out = subprocess.run(
        [str(Path(sys.executable).parent / "dg"), "check", "defs"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "All definitions loaded successfully" in out.stdout + out.stderr
