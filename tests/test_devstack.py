"""`make dev`'s launcher brings the whole demo up and a real run fills the CRM tables."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from crm_schema.engine import make_engine
from crm_schema.migrate import upgrade
from provider_emulators.testing import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_stack_shows_finished_runs(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'crm.sqlite3'}"
    upgrade(database_url)  # what `make dev` does before starting the launcher
    ports = {name: free_port() for name in ("RECEIVER", "EMULATOR", "IIKO", "DAGSTER")}
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
        **{f"CRM_DEV_{name}_PORT": str(port) for name, port in ports.items()},
    )
    env.pop("DAGSTER_PG_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "provider_emulators.devstack"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    engine = make_engine(database_url)
    try:
        deadline = time.monotonic() + 150
        done = orders = logged = 0
        while time.monotonic() < deadline and proc.poll() is None:
            with engine.connect() as conn:
                done = conn.execute(
                    text("SELECT count(*) FROM allio_tasks WHERE status = 2")
                ).scalar()
                orders = conn.execute(text("SELECT count(*) FROM orders")).scalar()
                logged = conn.execute(
                    text("SELECT count(*) FROM uon_calls WHERE log_status = 'succeeded'")
                ).scalar()
            if done >= 80 and orders >= 31 and logged >= 3:
                break
            time.sleep(1)
        assert proc.poll() is None, "the launcher exited early"
        assert done == 80, f"{done} of 80 demo tasks synced"
        # iiko: 15 whole orders, 15 read with deliveries/by_id, the seed's SOI CREATE.
        assert orders == 31, f"{orders} of 31 demo iiko orders synced"
        with engine.connect() as conn:
            registered = conn.execute(
                text("SELECT registration_status FROM webhook_configs")
            ).scalars()
            assert list(registered) == ["registered"]
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM reserves")).scalar() > 0
            assert conn.execute(text("SELECT count(*) FROM contacts")).scalar() > 0
        # U-ON: three demo calls logged as U-ON leads, the click-to-call reached the PBX,
        # the known caller is a customer and the lookups filled the shared cache.
        assert logged == 3, f"{logged} of 3 demo calls logged to U-ON"
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM uon_originations WHERE ok")).scalar()
            assert conn.execute(text("SELECT count(*) FROM customers")).scalar() > 0
            assert conn.execute(text("SELECT count(*) FROM uon_phone_cache")).scalar() >= 2
        health = httpx.get(f"http://127.0.0.1:{ports['RECEIVER']}/healthz", timeout=5)
        assert health.status_code == 200
        ui = httpx.get(f"http://127.0.0.1:{ports['DAGSTER']}/server_info", timeout=5)
        assert ui.status_code == 200
    except AssertionError as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        raise AssertionError(f"{exc}\n--- launcher output ---\n{output[-6000:]}") from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        if proc.returncode is None:
            output, _ = proc.communicate(timeout=60)
        engine.dispose()
    assert "crm-sync demo is up" in output
    assert "(from uon," in output and "(from cache," in output  # U-ON, then the cache
    noisy = [line for line in output.splitlines() if "warn" in line.lower()]
    assert noisy == [], "make dev should print no warnings"


def test_a_second_start_finds_the_demo_integrations_with_their_real_urls(
    tmp_path: Path,
) -> None:
    """`integrations list` masks webhook keys; the demo must still post to the real URL."""
    from provider_emulators.allio import DEMO
    from provider_emulators.devstack import _crm_sync

    url = f"sqlite:///{tmp_path / 'crm.sqlite3'}"
    upgrade(url)
    crm_sync = _crm_sync(dict(os.environ, DATABASE_URL=url))
    first = DEMO.ensure_integrations(crm_sync, "http://127.0.0.1:9")
    second = DEMO.ensure_integrations(crm_sync, "http://127.0.0.1:9")
    assert [i["webhook_path"] for i in second] == [i["webhook_path"] for i in first]
    assert all("*" not in i["webhook_path"] for i in second)
