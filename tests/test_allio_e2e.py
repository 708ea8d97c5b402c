"""End to end: webhook → receiver (HTTP) → sensor tick → Dagster run → CRM rows.

Real parts throughout: the ALLIO emulator and the receiver served by uvicorn, a
real Dagster instance, the sensor evaluated as the daemon would, and the run
executed in process. The CLI backfill test goes through `dagster job backfill`
and the Dagster daemon launching run processes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter, build_sensor_context
from sqlalchemy import select, text

from crm_schema.engine import make_engine
from crm_schema.integrations import add_integration
from crm_schema.providers.allio import allio_tasks, dealcards, reserves
from crm_schema.tables import contacts
from orchestration.definitions import build_definitions
from orchestration.defs.allio.sensors import allio_webhook_sensor
from orchestration.resources.database import CrmDatabase
from provider_emulators.allio import create_app as create_emulator
from provider_emulators.testing import running_server
from webhook_receiver.app import create_app as create_receiver

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "e2e-token-0123456789abcdef"
NO_IDLE = {"ops": {"allio_sync_assets": {"config": {"idle_seconds": 0}}}}


def _add(engine, base_url: str) -> object:  # noqa: ANN001
    with engine.begin() as conn:
        return add_integration(
            conn,
            provider="allio",
            name="e2e",
            integration_uuid=str(uuid.uuid4()),
            api_base_url=base_url,
            credentials={"api_token": TOKEN},
        )


def test_webhook_to_crm_rows(database_url: str) -> None:
    engine = make_engine(database_url)
    defs = build_definitions(database_url)
    emulator = create_emulator(token=TOKEN, quota_per_second=2)
    with (
        running_server(emulator) as api,
        running_server(create_receiver(database_url)) as receiver,
        DagsterInstance.ephemeral() as instance,
    ):
        integ = _add(engine, api)
        time.sleep(2.5)  # the receiver re-reads integrations every 2 s
        bodies = [
            ("RESERVE_ADD", [11, 12, 13]),
            ("RESERVE_MOD", [12, 14]),
            ("DEALCARD_ADD", [21, 22]),
            ("RESERVE_DEL", [99]),
        ]
        for command, ids in bodies:
            resp = httpx.post(
                receiver + integ.webhook_path,
                json={"uuid": integ.integration_uuid, "command": command, "indexes": ids},
            )
            assert resp.status_code == 200, resp.text

        context = build_sensor_context(
            instance=instance,
            cursor=None,
            resources={"crm_db": CrmDatabase(database_url=database_url)},
        )
        result = allio_webhook_sensor(context)
        [request] = result.run_requests
        today = datetime.now(UTC).date().isoformat()
        assert request.partition_key == today
        assert request.run_key.startswith(f"allio:{today}:")

        run = defs.resolve_job_def("allio_sync").execute_in_process(
            instance=instance,
            partition_key=request.partition_key,
            tags=request.tags,
            run_config=NO_IDLE,
        )
        assert run.success

        with engine.connect() as conn:
            got = {r.external_id: r for r in conn.execute(select(reserves))}
            assert set(got) == {"11", "12", "13", "14"}
            assert {r.external_id for r in conn.execute(select(dealcards))} == {"21", "22"}
            linked = conn.execute(
                select(contacts.c.external_id).where(contacts.c.id == got["11"].contact_id)
            ).scalar_one()
            assert linked == str(100000 + 11 % 997)
            statuses = dict(conn.execute(select(allio_tasks.c.command, allio_tasks.c.status)).all())
        assert statuses == {"RESERVE_ADD": 2, "RESERVE_MOD": 2, "DEALCARD_ADD": 2, "RESERVE_DEL": 0}
        # ids 11–14 merged and deduped into one reserve call, one deal-card call
        calls = httpx.get(api + "/_admin/requests").json()
        listed = [c for c in calls if c["path"].endswith("/list")]
        assert sorted(sorted(c["ids"]) for c in listed) == [[11, 12, 13, 14], [21, 22]]
        assert not any(c["quota_rejected"] for c in calls)
    engine.dispose()


def _dagster_env(home: Path, database_url: str) -> dict[str, str]:
    env = dict(os.environ, DAGSTER_HOME=str(home), DATABASE_URL=database_url)
    env.pop("DAGSTER_PG_URL", None)
    return env


@pytest.mark.slow
def test_cli_backfill_resyncs_day_through_daemon(
    tmp_path: Path, _sqlite_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dagster job backfill --tags` queues runs the daemon launches; they re-sync day D."""
    db = tmp_path / "crm.sqlite3"
    shutil.copyfile(_sqlite_template, db)
    database_url = f"sqlite:///{db}"
    engine = make_engine(database_url)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = _dagster_env(home, database_url)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    emulator = create_emulator(token=TOKEN, quota_per_second=None)
    with running_server(emulator) as api:
        first, second = _add(engine, api), _add(engine, api)
        day = "2026-03-04"
        with engine.begin() as conn:
            for integ, ids in ((first, [1, 2]), (second, [3])):
                conn.execute(
                    allio_tasks.insert().values(
                        external_ids=json.dumps(ids),
                        status=2,  # done long ago: a backfill re-syncs it anyway
                        created_at=datetime(2026, 3, 4, 12, tzinfo=UTC),
                        entity="reserve",
                        integration_id=integ.id,
                        command="RESERVE_ADD",
                        handler="sync",
                    )
                )
        bin_dir = Path(sys.executable).parent
        out = subprocess.run(
            [
                str(bin_dir / "dagster"), "job", "backfill", "-w", str(ROOT / "workspace.yaml"),
                "-j", "allio_sync", "--from", day, "--to", day, "--noprompt",
                "--tags", json.dumps({"crm/integration": str(first.id)}),
            ],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        daemon = subprocess.Popen(
            [str(bin_dir / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            status = None
            with DagsterInstance.get() as instance:
                while time.monotonic() < deadline:
                    runs = instance.get_runs(filters=RunsFilter(job_name="allio_sync"))
                    if runs and runs[0].status in (
                        DagsterRunStatus.SUCCESS,
                        DagsterRunStatus.FAILURE,
                    ):
                        status = runs[0].status
                        tags = runs[0].tags
                        break
                    time.sleep(1)
        finally:
            os.killpg(daemon.pid, 15)
            daemon.wait(timeout=30)
    assert status == DagsterRunStatus.SUCCESS
    assert tags["dagster/partition"] == day and "dagster/backfill" in tags
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT integration_id, external_id FROM reserves")).all()
    # narrowed by the tag: only the first integration's entities were re-synced
    assert sorted(rows) == [(first.id, "1"), (first.id, "2")]
    engine.dispose()
