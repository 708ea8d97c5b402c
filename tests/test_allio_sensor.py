"""The webhook sensor: allio_webhook rows → allio_tasks → at most one RunRequest per tick."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from dagster import DagsterRunStatus, SensorResult
from sqlalchemy import insert, select, update

from crm_schema.integrations import set_active
from crm_schema.providers.allio import allio_webhook
from crm_schema.tables import run_heartbeats
from orchestration.allio.tasks import take_webhooks
from orchestration.core import sensors as sensors_module
from tests import allio_fixtures as fx
from tests.allio_fixtures import (
    add_allio,
    add_task,
    add_webhook,
    at_noon,
    days_ago,
    run_sync,
    tasks,
    tick,
    today,
    utcnow,
)

# Fixtures shared by the ALLIO tests (bound here so pytest finds them in this module).
allio_server, crm, emulator, instance = fx.allio_server, fx.crm, fx.emulator, fx.instance

BASE = "http://allio.invalid"  # the sensor never calls ALLIO


def _run_key(result: SensorResult) -> str:
    assert len(result.run_requests) == 1
    return result.run_requests[0].run_key


_add_run = add_run = fx.add_run


def _pending_max_id(engine) -> int:  # noqa: ANN001
    return max(
        t["id"]
        for t in tasks(engine).values()
        if t["status"] == 0 and t["entity"] in ("reserve", "dealcard")
        and not t["command"].endswith("_DEL")
    )  # fmt: skip


def test_commands_become_tasks_and_one_run_is_requested(crm, instance):
    url, engine = crm
    integ = add_allio(engine, BASE)
    sent = {
        "RESERVE_ADD": [1, 2],
        "RESERVE_MOD": [3],
        "DEALCARD_ADD": [4],
        "DEALCARD_MOD": [5, 6],
        "RESERVE_DEL": [7],
        "DEALCARD_DEL": [8],
        "SPACE_CHANGED": [9],
        "SOMETHING_NEW": [10],
    }
    webhook_ids = {cmd: add_webhook(engine, integ, cmd, ids) for cmd, ids in sent.items()}

    result = tick(url, instance)

    by_webhook = {t["webhook_id"]: t for t in tasks(engine).values()}
    assert len(by_webhook) == len(sent)
    expected_entity = {
        "RESERVE_ADD": "reserve",
        "RESERVE_MOD": "reserve",
        "RESERVE_DEL": "reserve",
        "DEALCARD_ADD": "dealcard",
        "DEALCARD_MOD": "dealcard",
        "DEALCARD_DEL": "dealcard",
        "SPACE_CHANGED": "reserve",  # its indexes are reserve ids (seed 000)
        "SOMETHING_NEW": "unknown",
    }
    for cmd, webhook_id in webhook_ids.items():
        task = by_webhook[webhook_id]
        assert task["command"] == cmd
        assert task["entity"] == expected_entity[cmd]
        assert json.loads(task["external_ids"]) == sent[cmd]
        if expected_entity[cmd] == "unknown":  # no handler: it ends at once, saying why
            assert task["status"] == 3 and task["error"] == f"unknown command {cmd}"
        else:
            assert task["status"] == 0 and task["error"] is None
        assert task["attempts"] == 0
        assert task["integration_id"] == integ.id
        assert task["created_at"] is not None

    with engine.connect() as conn:
        processed = conn.execute(select(allio_webhook.c.processed_at)).scalars().all()
    assert len(processed) == len(sent) and all(p is not None for p in processed)
    assert result.cursor == str(max(webhook_ids.values()))

    request = result.run_requests[0]
    assert len(result.run_requests) == 1
    assert request.partition_key == today().isoformat()
    assert request.run_key == f"allio:{today().isoformat()}:{_pending_max_id(engine)}"
    assert request.tags["crm/mode"] == "live"
    assert request.job_name in (None, "allio_sync")


def test_no_request_when_nothing_is_pending(crm, instance):
    url, engine = crm
    empty = tick(url, instance)
    assert not empty.run_requests
    assert empty.skip_reason is not None
    assert empty.cursor == "0"

    # Only tasks that are never fetched: recorded, but no run is needed.
    integ = add_allio(engine, BASE)
    add_webhook(engine, integ, "RESERVE_DEL", [1])
    last = add_webhook(engine, integ, "SOMETHING_NEW", [2])
    result = tick(url, instance, cursor=empty.cursor)
    assert not result.run_requests
    assert len(tasks(engine)) == 2
    assert result.cursor == str(last)


def test_days_left_behind_get_runs_beside_todays_not_behind_it(crm, instance):
    url, engine = crm
    integ = add_allio(engine, BASE)
    old = add_task(engine, integ, "RESERVE_ADD", [1], created_at=at_noon(days_ago(2)))
    add_webhook(engine, integ, "RESERVE_ADD", [2])
    add_webhook(engine, integ, "DEALCARD_ADD", [3])

    first = tick(url, instance)
    live, behind = first.run_requests
    assert live.partition_key == today().isoformat()
    assert live.tags["crm/live-sync"] == "allio" and live.tags["crm/mode"] == "live"
    day = days_ago(2).isoformat()
    assert behind.partition_key == day and behind.run_key == f"allio:{day}:{old}"
    # Another day's run takes a batch slot, so it never queues behind today's live run.
    assert behind.tags["crm/batch-sync"] == "allio" and "crm/live-sync" not in behind.tags


def test_run_key_changes_only_with_new_tasks(crm, instance):
    url, engine = crm
    integ = add_allio(engine, BASE)
    add_webhook(engine, integ, "RESERVE_ADD", [1])
    first = tick(url, instance)
    again = tick(url, instance, cursor=first.cursor)
    assert _run_key(again) == _run_key(first)  # Dagster dedupes: no second run
    add_webhook(engine, integ, "RESERVE_MOD", [1])
    third = tick(url, instance, cursor=again.cursor)
    assert _run_key(third) != _run_key(first)
    assert _run_key(third).endswith(f":{_pending_max_id(engine)}")


@pytest.mark.parametrize("status", [DagsterRunStatus.QUEUED, DagsterRunStatus.STARTED])
def test_skips_while_a_live_run_is_active(crm, instance, status):
    url, engine = crm
    integ = add_allio(engine, BASE)
    run = _add_run(instance, status, {"crm/mode": "live", "dagster/partition": today().isoformat()})
    hook = add_webhook(engine, integ, "RESERVE_ADD", [1])

    skipped = tick(url, instance)
    assert not skipped.run_requests
    assert "a live run is active" in str(skipped.skip_reason)
    # The tick still turned the webhook into a task the active run will drain.
    assert [t["webhook_id"] for t in tasks(engine).values()] == [hook]
    assert skipped.cursor == str(hook)

    instance.report_run_canceled(run)
    resumed = tick(url, instance, cursor=skipped.cursor)
    assert len(resumed.run_requests) == 1


def test_other_runs_do_not_block_the_live_request(crm, instance):
    url, engine = crm
    integ = add_allio(engine, BASE)
    _add_run(instance, DagsterRunStatus.QUEUED, {"crm/mode": "reconcile"})
    _add_run(instance, DagsterRunStatus.SUCCESS, {"crm/mode": "live"})
    _add_run(instance, DagsterRunStatus.FAILURE, {"crm/mode": "live"})
    add_webhook(engine, integ, "RESERVE_ADD", [1])
    assert len(tick(url, instance).run_requests) == 1


def test_crash_after_commit_neither_duplicates_nor_reruns(crm, instance):
    url, engine = crm
    integ = add_allio(engine, BASE)
    for ids in ([1], [2, 3], [4]):
        add_webhook(engine, integ, "RESERVE_ADD", ids)

    # A tick that died right after committing its tasks (cursor never saved).
    with engine.begin() as conn:
        created, last = take_webhooks(conn)
    assert created == 3
    before = tasks(engine)

    retried = tick(url, instance, cursor=None)
    assert tasks(engine) == before  # no duplicate tasks
    assert _run_key(retried) == f"allio:{today().isoformat()}:{max(before)}"
    assert int(retried.cursor) <= last
    # And evaluating again from the old cursor asks for the very same run.
    assert _run_key(tick(url, instance, cursor=None)) == _run_key(retried)


def test_webhook_id_is_unique_per_task(crm):
    _, engine = crm
    integ = add_allio(engine, BASE)
    hook = add_webhook(engine, integ, "RESERVE_ADD", [1])
    with engine.begin() as conn:
        assert take_webhooks(conn)[0] == 1
    # A concurrent tick that read the row before the first one committed.
    with engine.begin() as conn:
        conn.execute(update(allio_webhook).values(processed_at=None))
    with engine.begin() as conn:
        created, last = take_webhooks(conn)
    assert (created, last) == (0, hook)
    assert len(tasks(engine)) == 1


def test_webhook_committed_late_below_the_cursor_still_becomes_a_task(crm, instance):
    url, engine = crm
    integ = add_allio(engine, BASE)
    add_webhook(engine, integ, "RESERVE_ADD", [1], webhook_id=1)
    add_webhook(engine, integ, "RESERVE_ADD", [3], webhook_id=3)
    first = tick(url, instance)
    assert first.cursor == "3"

    # Id 2 was allocated before 3 but its transaction committed after the tick.
    add_webhook(engine, integ, "DEALCARD_ADD", [2], webhook_id=2)
    second = tick(url, instance, cursor=first.cursor)

    by_webhook = {t["webhook_id"]: t for t in tasks(engine).values()}
    assert sorted(by_webhook) == [1, 2, 3]
    assert by_webhook[2]["entity"] == "dealcard" and by_webhook[2]["status"] == 0
    assert second.cursor == "3"  # the cursor never goes back
    assert _run_key(second).endswith(f":{by_webhook[2]['id']}")
    with engine.connect() as conn:
        unprocessed = conn.execute(
            select(allio_webhook.c.id).where(allio_webhook.c.processed_at.is_(None))
        ).all()
    assert unprocessed == []


def test_tasks_of_a_disabled_integration_do_not_hold_up_other_days(crm, instance):
    url, engine = crm
    active = add_allio(engine, BASE, name="active")
    disabled = add_allio(engine, BASE, name="disabled")
    with engine.begin() as conn:
        set_active(conn, disabled.id, False)
    old = add_task(engine, active, "RESERVE_ADD", [1], created_at=at_noon(days_ago(2)))
    add_webhook(engine, disabled, "RESERVE_ADD", [2])  # today, but no run can drain it

    result = tick(url, instance)

    day = days_ago(2).isoformat()
    assert [r.partition_key for r in result.run_requests] == [day]
    assert _run_key(result) == f"allio:{day}:{old}"
    # The disabled integration's webhook is still recorded, for when it is enabled again.
    assert sum(t["integration_id"] == disabled.id for t in tasks(engine).values()) == 1


def test_only_a_disabled_integration_pending_requests_nothing(crm, instance):
    url, engine = crm
    disabled = add_allio(engine, BASE)
    with engine.begin() as conn:
        set_active(conn, disabled.id, False)
    add_webhook(engine, disabled, "RESERVE_ADD", [1])
    assert not tick(url, instance).run_requests
    with engine.begin() as conn:
        set_active(conn, disabled.id, True)
    assert len(tick(url, instance).run_requests) == 1


def test_tasks_left_past_their_lease_are_handed_back_and_synced(crm, emulator, instance):
    """No new task, but a run that died (unseen by Dagster) left tasks past the lease:
    the sensor hands them back, counting a crash, and requests a run that syncs them."""
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    claimed = utcnow() - timedelta(minutes=30)
    task_id = add_task(
        engine,
        integ,
        "RESERVE_ADD",
        [41, 42],
        status=1,
        attempts=1,
        claimed_at=claimed,
        run_id="vanished",
    )
    [request] = tick(url, instance).run_requests
    task = tasks(engine)[task_id]
    assert task["status"] == 0 and task["crashes"] == 1
    assert request.run_key == f"allio:{today().isoformat()}:{task_id}"
    assert run_sync(url, instance, request.partition_key, request.tags).success
    assert tasks(engine)[task_id]["status"] == 2
    assert not tick(url, instance).run_requests


def test_tasks_in_progress_within_the_lease_request_nothing(crm, emulator, instance):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    add_task(engine, integ, "RESERVE_ADD", [43], status=1, claimed_at=utcnow(), run_id="busy")
    result = tick(url, instance)
    assert not result.run_requests


# -- runs that never strand work ---------------------------------------------------------


def test_tasks_of_a_failed_run_are_released_at_once(crm, instance):
    url, engine = crm
    integ = add_allio(engine, BASE)
    failed = _add_run(instance, DagsterRunStatus.FAILURE, {"crm/mode": "live"})
    cancelled = _add_run(instance, DagsterRunStatus.CANCELED, {"crm/mode": "live"})
    now = utcnow()
    held = [
        add_task(engine, integ, "RESERVE_ADD", [n], status=1, attempts=1, claimed_at=now,
                 run_id=run.run_id)
        for n, run in ((1, failed), (2, cancelled))
    ]  # fmt: skip
    result = tick(url, instance)
    after = tasks(engine)
    # Both back in the queue within the lease; only the failure counts against the task.
    assert after[held[0]]["status"] == 0 and after[held[0]]["crashes"] == 1
    assert "failed while holding this task" in after[held[0]]["error"]
    assert after[held[1]]["status"] == 0 and after[held[1]]["crashes"] == 0
    assert after[held[1]]["attempts"] == 0
    assert len(result.run_requests) == 1


def test_a_run_that_failed_before_claiming_gets_a_new_key_after_a_backoff(
    crm, instance, monkeypatch
):
    url, engine = crm
    integ = add_allio(engine, BASE)
    add_webhook(engine, integ, "RESERVE_ADD", [1])
    first = tick(url, instance)
    key = _run_key(first)
    # Dagster created the run for that key, and it failed before claiming anything.
    run = _add_run(instance, DagsterRunStatus.FAILURE, dict(first.run_requests[0].tags))
    waiting = tick(url, instance, cursor=first.cursor)
    assert not waiting.run_requests and "next try" in str(waiting.skip_reason)
    monkeypatch.setattr(sensors_module, "RETRY_BACKOFF_SECONDS", (0,))
    retried = tick(url, instance, cursor=first.cursor)
    assert _run_key(retried) == f"{key}:retry-1"  # a key Dagster has not spent
    assert retried.run_requests[0].tags["crm/sync-key"] == key
    instance.delete_run(run.run_id)


def _started_live_run(engine, instance, beat_age: timedelta):  # noqa: ANN001, ANN202
    """A started live run for today whose last heartbeat is ``beat_age`` old."""
    run = add_run(
        instance,
        DagsterRunStatus.STARTED,
        {"crm/mode": "live", "dagster/partition": today().isoformat()},
    )
    with engine.begin() as conn:
        conn.execute(
            insert(run_heartbeats).values(
                run_id=run.run_id, provider="allio", beat_at=utcnow() - beat_age
            )
        )
    return run


def test_a_started_run_that_stopped_beating_is_failed_and_replaced(crm, instance):
    url, engine = crm
    integ = add_allio(engine, BASE)
    zombie = _started_live_run(engine, instance, timedelta(minutes=10))
    add_webhook(engine, integ, "RESERVE_ADD", [1])
    result = tick(url, instance)
    assert instance.get_run_by_id(zombie.run_id).status == DagsterRunStatus.FAILURE
    assert len(result.run_requests) == 1  # its slot is free and the work gets a run


def test_a_started_run_that_beats_blocks_a_second_live_run(crm, instance):
    url, engine = crm
    integ = add_allio(engine, BASE)
    alive = _started_live_run(engine, instance, timedelta(0))
    add_webhook(engine, integ, "RESERVE_ADD", [1])
    assert not tick(url, instance).run_requests
    assert instance.get_run_by_id(alive.run_id).status == DagsterRunStatus.STARTED


def test_retry_keys_keep_counting_past_many_runs(crm, instance, monkeypatch):
    url, engine = crm
    integ = add_allio(engine, BASE)
    add_webhook(engine, integ, "RESERVE_ADD", [1])
    first = tick(url, instance)
    tags = dict(first.run_requests[0].tags)
    monkeypatch.setattr(sensors_module, "RETRY_BACKOFF_SECONDS", (0,))
    for _ in range(25):  # e.g. a day of runs that each ended with work still due
        add_run(instance, DagsterRunStatus.SUCCESS, tags)
    assert _run_key(tick(url, instance, cursor=first.cursor)).endswith(":retry-25")
