"""Runs never strand work, with the real Dagster daemon launching real run processes:
a run cancelled in the queue, a run worker killed with -9 mid-batch, and a task that
kills every run it is in.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from sqlalchemy import func, select, text

from crm_schema.engine import make_engine
from crm_schema.integrations import add_integration
from crm_schema.providers.allio import allio_tasks, reserves
from crm_schema.tables import run_heartbeats
from orchestration.core import sensors as sensors_module
from provider_emulators.allio import create_app
from provider_emulators.testing import running_server
from tests.allio_fixtures import TOKEN, add_run, add_webhook, tick

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LEASE = 20  # seconds (CRM_SYNC_TASK_LEASE_SECONDS for the daemon's runs)
pytestmark = pytest.mark.slow


def _wait(what: str, check: Callable[[], Any], seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")


def _database_and_home(
    tmp_path: Path, template: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, Path]:
    """A fresh CRM database (SQLite) and a Dagster home that this process uses too."""
    db = tmp_path / "crm.sqlite3"
    shutil.copyfile(template, db)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return f"sqlite:///{db}", home


@pytest.fixture
def stack(
    tmp_path: Path, _sqlite_template: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """A CRM database, an ALLIO emulator, a Dagster home and a running daemon."""
    url, home = _database_and_home(tmp_path, _sqlite_template, monkeypatch)
    env = dict(
        os.environ,
        DAGSTER_HOME=str(home),
        DATABASE_URL=url,
        CRM_SYNC_TASK_LEASE_SECONDS=str(LEASE),
        CRM_SYNC_RATE_LIMITS="allio=20",
    )
    env.pop("DAGSTER_PG_URL", None)
    engine = make_engine(url)
    app = create_app(token=TOKEN, quota_per_second=None)
    with running_server(app) as api, DagsterInstance.get() as instance:
        with engine.begin() as conn:
            integ = add_integration(
                conn,
                provider="allio",
                name="strand",
                integration_uuid=str(uuid.uuid4()),
                api_base_url=api,
                credentials={"api_token": TOKEN},
            )
        state: dict[str, Any] = {
            "url": url, "engine": engine, "app": app, "integ": integ, "instance": instance,
            "env": env, "daemon": None,
        }  # fmt: skip
        try:
            yield state
        finally:
            daemon = state["daemon"]
            if daemon is not None:
                os.killpg(daemon.pid, signal.SIGTERM)
                daemon.wait(timeout=60)
            engine.dispose()


def _start_daemon(stack: dict[str, Any]) -> None:
    stack["daemon"] = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
        env=stack["env"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip


def _statuses(engine: Any) -> dict[int, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(allio_tasks.c.id, allio_tasks.c.status)).all())


def _sync_runs(instance: DagsterInstance) -> list[Any]:
    return instance.get_runs(filters=RunsFilter(job_name="allio_sync"))


def test_a_run_cancelled_in_the_queue_still_gets_its_tasks_synced(stack) -> None:
    engine, instance, integ = stack["engine"], stack["instance"], stack["integ"]
    # Another live run holds ALLIO's live slot, so the sensor's run waits in the queue.
    blocker = add_run(instance, DagsterRunStatus.STARTED, {"crm/live-sync": "allio"})
    for n in range(5):
        add_webhook(engine, integ, "RESERVE_ADD", [n * 10 + 1, n * 10 + 2])
    _start_daemon(stack)
    queued = _wait(
        "the sensor's run in the queue",
        lambda: [r for r in _sync_runs(instance) if r.status == DagsterRunStatus.QUEUED],
        60,
    )[0]
    instance.run_coordinator.cancel_run(queued.run_id)
    instance.report_run_canceled(blocker)
    cancelled_at = time.monotonic()
    _wait("every task synced", lambda: set(_statuses(engine).values()) == {2}, 30)
    assert time.monotonic() - cancelled_at <= 30
    runs = _sync_runs(instance)
    assert any(r.tags.get("dagster/run_key", "").endswith(":retry-1") for r in runs)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(reserves)).scalar_one() == 10


def test_a_run_worker_killed_mid_batch_loses_nothing(stack) -> None:
    engine, instance, integ, app = stack["engine"], stack["instance"], stack["integ"], stack["app"]
    app.state.emulator.faults.configure({"latency_ms": 300})
    for n in range(30):  # 30 calls of 100 ids, ~0.3 s each
        add_webhook(engine, integ, "RESERVE_ADD", list(range(n * 100 + 1, n * 100 + 101)))
    _start_daemon(stack)

    def working() -> tuple[str, int] | None:
        statuses = list(_statuses(engine).values())
        if statuses.count(2) < 3 or statuses.count(1) < 3:
            return None
        with engine.connect() as conn:
            row = conn.execute(select(run_heartbeats.c.run_id, run_heartbeats.c.pid)).first()
        return (row.run_id, row.pid) if row else None

    run_id, pid = _wait("a run in the middle of its batches", working, 90)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    _wait("every task synced", lambda: set(_statuses(engine).values()) == {2}, LEASE + 60)
    assert time.monotonic() - killed_at <= LEASE + 60
    assert instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE
    with engine.connect() as conn:
        total, distinct = conn.execute(
            select(func.count(), func.count(reserves.c.external_id.distinct()))
        ).one()
        crashed = conn.execute(select(func.count()).where(allio_tasks.c.crashes > 0)).scalar_one()
    assert total == distinct == 3000  # each entity stored once
    assert crashed > 0  # the kill hit tasks in hand; they were handed back, not lost


# -- a task that kills every run it is in ------------------------------------------------


def _poisoned_run(url: str, home: str, day: str, tags: dict[str, str]) -> None:
    """Child process: run the sync with a fetch that kills the process on id 666."""
    os.environ["DAGSTER_HOME"] = home
    os.environ["CRM_SYNC_RATE_LIMITS"] = "allio=500"
    from orchestration.allio.sync import AllioSyncHandler
    from tests.allio_fixtures import run_sync

    original = AllioSyncHandler.fetch

    def fetch(self: Any, client: Any, entity: str, ids: list[str]) -> list[dict]:
        if "666" in ids:
            os._exit(17)  # what an out-of-memory kill or a segfault looks like
        return original(self, client, entity, ids)

    AllioSyncHandler.fetch = fetch  # type: ignore[method-assign]
    with DagsterInstance.get() as instance:
        run_sync(url, instance, day, tags)


def test_a_task_that_kills_every_run_ends_in_3_and_the_rest_sync(
    tmp_path: Path, _sqlite_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, home = _database_and_home(tmp_path, _sqlite_template, monkeypatch)
    monkeypatch.setattr(sensors_module, "RETRY_BACKOFF_SECONDS", (0,))
    engine = make_engine(url)
    app = create_app(token=TOKEN, quota_per_second=None)
    ctx = mp.get_context("spawn")
    with running_server(app) as api, DagsterInstance.get() as instance:
        with engine.begin() as conn:
            integ = add_integration(
                conn, provider="allio", name="poison", integration_uuid=str(uuid.uuid4()),
                api_base_url=api, credentials={"api_token": TOKEN},
            )  # fmt: skip
        poison = add_webhook(engine, integ, "RESERVE_ADD", [666])
        for n in range(1, 25):
            add_webhook(engine, integ, "RESERVE_ADD", [n])
        runs = 0
        for _ in range(12):
            result = tick(url, instance)
            if not result.run_requests:
                if set(_statuses(engine).values()) <= {2, 3}:
                    break
                continue
            request = result.run_requests[0]
            child = ctx.Process(
                target=_poisoned_run,
                args=(url, str(home), request.partition_key, dict(request.tags)),
            )
            child.start()
            child.join(120)
            runs += 1
            # The run died with the process; its code server would mark it failed.
            for run in instance.get_runs(
                filters=RunsFilter(job_name="allio_sync", statuses=[DagsterRunStatus.STARTED])
            ):
                instance.report_run_failed(run, "the run worker died")
        with engine.connect() as conn:
            rows = {
                r.webhook_id: r
                for r in conn.execute(select(allio_tasks)).all()  # noqa: S608
            }
            stored = conn.execute(text("SELECT count(*) FROM reserves")).scalar_one()
    engine.dispose()
    bad = rows[poison]
    assert bad.status == 3 and bad.crashes == 3
    assert "runs died holding this task" in bad.error
    assert all(r.status == 2 for wid, r in rows.items() if wid != poison)
    assert stored == 24
    assert runs <= 8  # it stopped looping
