"""Backfills re-sync what a day's tasks named; reconcile retries the day's unfinished tasks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from dagster import build_schedule_context

from crm_schema.providers.allio import reserves
from orchestration.allio.tasks import QUEUE
from orchestration.core.partitions import daily_partitions
from orchestration.defs.allio.schedules import allio_reconcile_daily
from provider_emulators.allio.records import make_record
from tests import allio_fixtures as fx
from tests.allio_fixtures import (
    RESERVES,
    Emulator,
    add_allio,
    add_task,
    at_noon,
    days_ago,
    metadata,
    rows,
    run_sync,
    tasks,
    today,
    utc,
)

# Fixtures shared by the ALLIO tests (bound here so pytest finds them in this module).
allio_server, crm, emulator, instance = fx.allio_server, fx.crm, fx.emulator, fx.instance


@pytest.mark.parametrize(
    "tags",
    [{"dagster/backfill": "bf-1"}, {"crm/mode": "backfill"}],
    ids=["dagster-backfill", "crm-mode"],
)
def test_backfill_resyncs_everything_the_day_named(crm, instance, emulator: Emulator, tags):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    day = days_ago(1)
    done = add_task(engine, integ, "RESERVE_ADD", [1, 2], created_at=at_noon(day))
    deleted = add_task(engine, integ, "RESERVE_DEL", [4], created_at=at_noon(day))
    other_day = add_task(engine, integ, "RESERVE_ADD", [5], created_at=at_noon(days_ago(2)))
    todays = add_task(engine, integ, "RESERVE_ADD", [6])
    # The day was synced live: `done` finished, reserves 1 and 2 stored.
    assert run_sync(url, instance, day).success
    assert tasks(engine)[done]["status"] == 2
    failed = add_task(
        engine,
        integ,
        "RESERVE_MOD",
        [3, 2],
        status=3,
        attempts=5,
        error="ProviderUnavailableError: server error (503)",
        created_at=at_noon(day) + timedelta(hours=1),
    )
    emulator.app.state.emulator.log.clear()
    before = tasks(engine)

    # ALLIO changed reserve 1 after its task was done; only a backfill picks that up.
    changed = dict(make_record("reserve", 1), status="CHANGED", updated_at="2030-01-01 00:00:00")
    emulator.put_record("reserve", 1, changed)
    result = run_sync(url, instance, day, tags)
    assert result.success

    stored = rows(engine, reserves)
    assert set(stored) == {"1", "2", "3"}
    assert stored["1"]["status"] == "CHANGED"
    # 2030-01-01 00:00 Moscow time is 2029-12-31 21:00 UTC.
    assert utc(stored["1"]["source_version"]) == datetime(2029, 12, 31, 21, tzinfo=UTC)
    assert stored["1"]["source_task_id"] == done
    assert stored["3"]["source_task_id"] == failed
    calls = emulator.requests("reserve")
    assert sorted(i for c in calls for i in c["ids"]) == [1, 2, 3]  # each once, nothing else

    after = tasks(engine)
    assert after[done] == before[done]  # re-read, not re-claimed
    # Backfills retry failed tasks of the day whatever their attempts.
    assert after[failed]["status"] == 2 and after[failed]["error"] is None
    assert after[failed]["attempts"] == 6
    for untouched in (deleted, other_day, todays):
        assert after[untouched] == before[untouched]
    assert "5" not in stored and "6" not in stored
    md = metadata(result, RESERVES)
    assert md["mode"] == "backfill" and md["entities_upserted"] == 3 and md["tasks_done"] == 1


def test_backfill_narrowed_to_one_integration(crm, instance, emulator: Emulator):
    url, engine = crm
    a = add_allio(engine, emulator.base_url, name="a")
    b = add_allio(engine, emulator.base_url, name="b")
    day = days_ago(4)
    ta = add_task(engine, a, "RESERVE_ADD", [1], status=2, created_at=at_noon(day))
    tb = add_task(engine, b, "RESERVE_ADD", [2], status=0, created_at=at_noon(day))
    result = run_sync(url, instance, day, {"dagster/backfill": "bf", "crm/integration": str(a.id)})
    assert result.success
    assert set(rows(engine, reserves)) == {"1"}
    assert tasks(engine)[tb]["status"] == 0 and tasks(engine)[ta]["status"] == 2
    assert emulator.requested_ids("reserve") == [1]


def test_reconcile_retries_new_and_failed_tasks_below_the_cap(crm, instance, emulator: Emulator):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    day = days_ago(1)
    at = at_noon(day)
    cap = QUEUE.retry.attempt_limit("reconcile")
    assert cap is not None and cap > QUEUE.retry.max_attempts  # reconcile gets extra tries
    fresh = add_task(engine, integ, "RESERVE_ADD", [1], created_at=at)
    retry = add_task(
        engine, integ, "RESERVE_MOD", [2], status=3, attempts=cap - 1, error="x", created_at=at
    )
    capped = add_task(
        engine, integ, "RESERVE_MOD", [3], status=3, attempts=cap, error="x", created_at=at
    )
    card = add_task(
        engine, integ, "DEALCARD_ADD", [4], status=3, attempts=1, error="x", created_at=at
    )
    done = add_task(engine, integ, "RESERVE_ADD", [5], status=2, attempts=1, created_at=at)
    gone = add_task(engine, integ, "RESERVE_DEL", [6], created_at=at)
    todays = add_task(engine, integ, "RESERVE_ADD", [7])
    before = tasks(engine)

    # The schedule's own request, evaluated just after midnight today.
    midnight = datetime.combine(today(), datetime.min.time(), tzinfo=UTC)
    request = allio_reconcile_daily(
        build_schedule_context(scheduled_execution_time=midnight + timedelta(minutes=30))
    )
    assert request.partition_key == day.isoformat()
    result = run_sync(url, instance, request.partition_key, dict(request.tags))
    assert result.success

    after = tasks(engine)
    for task_id, attempts in ((fresh, 1), (retry, cap), (card, 2)):
        assert after[task_id]["status"] == 2 and after[task_id]["error"] is None
        assert after[task_id]["attempts"] == attempts
    for untouched in (capped, done, gone, todays):
        assert after[untouched] == before[untouched]  # at the cap, done, delete, other day
    assert sorted(rows(engine, reserves)) == ["1", "2"]
    assert sorted(emulator.requested_ids("reserve")) == [1, 2]
    assert emulator.requested_ids("dealcard") == [4]
    assert metadata(result, RESERVES)["mode"] == "reconcile"


def test_reconcile_failure_counts_an_attempt(crm, instance, emulator: Emulator):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    day = days_ago(1)
    cap = QUEUE.retry.attempt_limit("reconcile")
    assert cap is not None
    task = add_task(
        engine, integ, "RESERVE_MOD", [2], status=3, attempts=cap - 2, created_at=at_noon(day)
    )
    emulator.set_faults(error_rate=1.0)
    tags = {"crm/mode": "reconcile"}
    run_sync(url, instance, day, tags, fast_retries=True)
    # One attempt per reconcile run (not a retry loop); below the cap it waits for the next.
    after = tasks(engine)[task]
    assert after["status"] == 0 and after["attempts"] == cap - 1
    assert len(emulator.requests("reserve")) == 2  # one batch, its two HTTP tries
    run_sync(url, instance, day, tags, fast_retries=True)
    assert tasks(engine)[task]["status"] == 3 and tasks(engine)[task]["attempts"] == cap
    # Now at the cap: the next reconcile leaves it alone even though ALLIO is back.
    emulator.set_faults(error_rate=0.0)
    emulator.app.state.emulator.log.clear()
    run_sync(url, instance, day, tags)
    assert tasks(engine)[task]["status"] == 3 and tasks(engine)[task]["attempts"] == cap
    assert emulator.requests() == []


@pytest.mark.parametrize(
    ("scheduled", "partition"),
    [
        (datetime(2025, 3, 10, 0, 30, tzinfo=UTC), "2025-03-09"),
        (datetime(2025, 3, 1, 0, 30, tzinfo=UTC), "2025-02-28"),
        (datetime(2025, 1, 2, 0, 30, tzinfo=UTC), "2025-01-01"),
    ],
)
def test_reconcile_schedule_requests_yesterday(scheduled, partition):
    request = allio_reconcile_daily(build_schedule_context(scheduled_execution_time=scheduled))
    assert request.partition_key == partition
    assert partition in daily_partitions.get_partition_keys(scheduled + timedelta(days=1))
    assert request.tags["crm/mode"] == "reconcile"
    assert request.tags.get("crm/live-sync") is None  # not in the live lane's concurrency key
    assert request.run_key == f"allio-reconcile:{partition}"
