"""Live ALLIO sync end to end: webhooks → tasks → real emulator over HTTP → CRM rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from crm_schema.entities import tombstone
from crm_schema.providers.allio import allio_tasks, dealcards, reserves
from crm_schema.tables import api_call_log, contacts, integrations
from orchestration.allio.mapping import map_record
from orchestration.allio.tasks import QUEUE
from provider_emulators.allio import create_app
from provider_emulators.allio.records import make_record
from provider_emulators.testing import running_server
from tests import allio_fixtures as fx
from tests.allio_fixtures import (
    CONTACTS,
    DEALCARDS,
    RESERVES,
    TOKEN,
    Emulator,
    add_allio,
    add_task,
    add_webhook,
    at_noon,
    call_log_integrations,
    checks,
    days_ago,
    metadata,
    rows,
    run_sync,
    tasks,
    tick,
    today,
    utc,
    utcnow,
)

# Fixtures shared by the ALLIO tests (bound here so pytest finds them in this module).
allio_server, crm, emulator, instance = fx.allio_server, fx.crm, fx.emulator, fx.instance


def _task_of(engine, webhook_id: int) -> dict:  # noqa: ANN001
    return next(t for t in tasks(engine).values() if t["webhook_id"] == webhook_id)


def _ingest(url, engine, instance):  # noqa: ANN001, ANN202
    """One sensor tick; returns its single RunRequest."""
    result = tick(url, instance)
    assert len(result.run_requests) == 1
    return result.run_requests[0]


def test_live_run_end_to_end(crm, instance, emulator: Emulator):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    w1 = add_webhook(engine, integ, "RESERVE_ADD", [1, 2, 22])
    w2 = add_webhook(engine, integ, "RESERVE_MOD", [2, 3])
    w3 = add_webhook(engine, integ, "DEALCARD_ADD", [5421])
    w_del = add_webhook(engine, integ, "RESERVE_DEL", [999])
    w_space = add_webhook(engine, integ, "SPACE_CHANGED", [4])  # reserve ids (seed 3.1)
    w_unknown = add_webhook(engine, integ, "SPACE_RENAMED", [998])
    request = _ingest(url, engine, instance)

    # The run exactly as the sensor asked for it, with the production resources.
    result = run_sync(url, instance, request.partition_key, dict(request.tags))
    assert result.success

    t1, t2, t3 = (_task_of(engine, w)["id"] for w in (w1, w2, w3))
    for w in (w1, w2, w3, w_space):
        task = _task_of(engine, w)
        assert task["status"] == 2 and task["error"] is None and task["attempts"] == 1
        assert task["run_id"] == result.run_id and task["finished_at"] is not None
    assert _task_of(engine, w1)["outcome"] == "synced 3"
    # Delete tasks wait for delete control, never fetched; a command no handler syncs
    # ends at once, with the reason.
    assert _task_of(engine, w_del)["status"] == 0
    unknown = _task_of(engine, w_unknown)
    assert unknown["status"] == 3 and unknown["error"] == "unknown command SPACE_RENAMED"
    assert unknown["finished_at"] is not None
    requested = emulator.requested_ids("reserve") + emulator.requested_ids("dealcard")
    assert 999 not in requested and 998 not in requested
    assert sorted(emulator.requested_ids("reserve")) == [1, 2, 3, 4, 22]
    assert emulator.requested_ids("dealcard") == [5421]

    stored = rows(engine, reserves)
    assert set(stored) == {"1", "2", "3", "4", "22"}
    people = {c["id"]: c for c in rows(engine, contacts).values()}
    for ext, row in stored.items():
        record = make_record("reserve", int(ext))
        expected = map_record("reserve", record, integ.id, None).deal
        for col in ("status", "type", "space_id", "manager_fullname", "manager_is_agency"):
            assert row[col] == expected[col]
        assert row["custom_fields"]["price"] == record["price"]
        assert row["raw"] == record
        assert utc(row["source_version"]) == expected["source_version"]
        assert row["deleted_at"] is None and row["synced_at"] is not None
        assert utc(row["created_at"]) == expected["created_at"]
        if "client" not in record:
            assert row["contact_id"] is None
            continue
        contact = people[row["contact_id"]]  # linked via contact_id
        assert contact["external_id"] == str(record["client"]["id"])
        assert contact["first_name"] == record["client"]["first"]
    # Lineage: the lowest task that named the id wrote it.
    assert stored["1"]["source_task_id"] == t1
    assert stored["2"]["source_task_id"] == min(t1, t2)
    assert stored["3"]["source_task_id"] == t2
    # Reserve 22's client has the garbage phone "#ERROR!": None, raw kept.
    bad = people[stored["22"]["contact_id"]]
    assert bad["phone"] is None and bad["phone_raw"] == "#ERROR!"
    assert people[stored["1"]["contact_id"]]["phone"].startswith("+79")

    deal = rows(engine, dealcards)["5421"]
    assert deal["source_task_id"] == t3
    assert deal["custom_fields"]["stage"] == make_record("dealcard", 5421)["stage"]
    buyer = people[deal["contact_id"]]
    assert buyer["external_id"] == str(make_record("dealcard", 5421)["buyer"]["id"])

    md = metadata(result, RESERVES)
    assert md["entities_upserted"] == 5 and md["tasks_done"] == 3 and md["tasks_failed"] == 0
    assert md["entities_missing"] == 0 and md["mode"] == "live"
    without_client = sum(1 for ext in stored if "client" not in make_record("reserve", int(ext)))
    assert md["reserves_without_client"] == without_client
    assert metadata(result, DEALCARDS)["entities_upserted"] == 1
    assert metadata(result, CONTACTS)["contacts_upserted"] == len(people) == 6 - without_client
    for key in (RESERVES, DEALCARDS):
        md = metadata(result, key)
        for name in ("entities_upserted", "tasks_done", "tasks_failed", "api_calls", "api_429s"):
            assert isinstance(md[name], int) and not isinstance(md[name], bool), name
        assert isinstance(md["seconds"], float) and md["seconds"] >= 0
        assert md["api_calls"] == 2 and md["api_429s"] == 0
    assert all(e.passed for e in checks(result).values())
    assert len(checks(result)) == 4

    with engine.connect() as conn:
        logged = conn.execute(select(api_call_log.c.run_id, api_call_log.c.status_code)).all()
    assert logged == [(result.run_id, 200)] * 2


def test_ids_are_merged_deduped_and_batched(crm, instance, emulator: Emulator):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    hooks = [
        add_webhook(engine, integ, "RESERVE_ADD", list(range(1, 101))),
        add_webhook(engine, integ, "RESERVE_MOD", list(range(50, 201))),
        add_webhook(engine, integ, "RESERVE_MOD", [*range(150, 251), 5, 5, 5]),
    ]
    tick(url, instance)
    result = run_sync(url, instance, today())

    calls = emulator.requests("reserve")
    assert len(calls) == 3  # 250 distinct ids, at most 100 per call
    assert all(len(c["ids"]) <= 100 for c in calls)
    sent = [i for c in calls for i in c["ids"]]
    assert sorted(sent) == list(range(1, 251))  # each id requested exactly once
    assert len(rows(engine, reserves)) == 250
    assert all(_task_of(engine, w)["status"] == 2 for w in hooks)
    md = metadata(result, RESERVES)
    assert md["ids_requested"] == 250 and md["batches"] == 3 and md["api_calls"] == 3


def test_integrations_are_served_fairly(crm, instance, emulator: Emulator):
    url, engine = crm
    a = add_allio(engine, emulator.base_url, name="a")
    b = add_allio(engine, emulator.base_url, name="b")
    for n in range(3):
        add_webhook(engine, a, "RESERVE_ADD", list(range(1 + 100 * n, 101 + 100 * n)))
        add_webhook(engine, b, "RESERVE_ADD", list(range(1001 + 100 * n, 1101 + 100 * n)))
    add_webhook(engine, a, "DEALCARD_ADD", list(range(1, 51)))
    tick(url, instance)
    result = run_sync(url, instance, today())
    assert result.success

    order = call_log_integrations(engine)
    assert sorted(order) == sorted([a.id] * 4 + [b.id] * 3)
    # Round robin: while both have work, neither gets two calls in a row.
    assert order[:6] == [a.id, b.id] * 3
    assert all(t["status"] == 2 for t in tasks(engine).values())
    assert len(rows(engine, reserves, integration_id=a.id)) == 300
    assert len(rows(engine, reserves, integration_id=b.id)) == 300


def test_integration_tag_narrows_the_run(crm, instance, emulator: Emulator):
    url, engine = crm
    a = add_allio(engine, emulator.base_url, name="a")
    b = add_allio(engine, emulator.base_url, name="b")
    wa = add_webhook(engine, a, "RESERVE_ADD", [1, 2])
    wb = add_webhook(engine, b, "RESERVE_ADD", [3, 4])
    tick(url, instance)

    result = run_sync(url, instance, today(), {"crm/mode": "live", "crm/integration": str(b.id)})
    assert result.success
    assert _task_of(engine, wb)["status"] == 2
    assert _task_of(engine, wa)["status"] == 0 and _task_of(engine, wa)["attempts"] == 0
    assert set(call_log_integrations(engine)) == {b.id}
    assert set(rows(engine, reserves)) == {"3", "4"}
    assert sorted(emulator.requested_ids("reserve")) == [3, 4]


def test_provider_failures_are_retried_with_backoff_then_fail(crm, instance, emulator: Emulator):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    hooks = [
        add_webhook(engine, integ, "RESERVE_ADD", [1, 2]),
        add_webhook(engine, integ, "RESERVE_MOD", [3]),
    ]
    tick(url, instance)
    emulator.set_faults(error_rate=1.0)

    started = utcnow()
    result = run_sync(url, instance, today(), fast_retries=True)

    assert result.success  # the run reports failures on the tasks, not by crashing
    for w in hooks:
        task = _task_of(engine, w)
        # Back in the queue with the error, to be tried again after a backoff.
        assert task["status"] == 0 and task["attempts"] == 1
        assert "server error" in task["error"] and "Provider" in task["error"]
        retry_at = task["next_attempt_at"].replace(tzinfo=UTC)
        assert started + timedelta(seconds=25) <= retry_at <= utcnow() + timedelta(seconds=35)
    assert rows(engine, reserves) == {}
    md = metadata(result, RESERVES)
    assert md["tasks_retrying"] == 2 and md["tasks_failed"] == 0 and md["tasks_done"] == 0
    assert md["api_calls"] == 2  # one batch, tried max_attempts=2 times
    assert len(emulator.requests("reserve")) == 2

    # Not due yet: a live run leaves them alone.
    run_sync(url, instance, today(), fast_retries=True)
    assert len(emulator.requests("reserve")) == 2

    # Due, on the last allowed attempt: the provider still fails, so they end in 3.
    with engine.begin() as conn:
        conn.execute(
            update(allio_tasks).values(attempts=QUEUE.retry.max_attempts - 1, next_attempt_at=None)
        )
    result = run_sync(url, instance, today(), fast_retries=True)
    for w in hooks:
        task = _task_of(engine, w)
        assert task["status"] == 3 and "server error" in task["error"]
        assert task["attempts"] == QUEUE.retry.max_attempts and task["finished_at"]
    assert metadata(result, RESERVES)["tasks_failed"] == 2
    evaluation = checks(result)[("allio/reserves", "failed_task_share")]
    assert not evaluation.passed
    assert evaluation.metadata["failed_share"].value == 1.0


def test_tasks_failed_by_an_outage_sync_once_the_provider_is_back(
    crm, instance, emulator: Emulator
):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    hook = add_webhook(engine, integ, "RESERVE_ADD", [1, 2])
    tick(url, instance)
    emulator.set_faults(error_rate=1.0)
    run_sync(url, instance, today(), fast_retries=True)
    assert _task_of(engine, hook)["status"] == 0

    emulator.set_faults(error_rate=0.0)
    with engine.begin() as conn:  # the backoff has passed
        conn.execute(update(allio_tasks).values(next_attempt_at=utcnow()))
    request = _ingest(url, engine, instance)  # the sensor asks for a run for it
    run_sync(url, instance, request.partition_key, dict(request.tags))
    task = _task_of(engine, hook)
    assert task["status"] == 2 and task["attempts"] == 2 and task["error"] is None
    assert set(rows(engine, reserves)) == {"1", "2"}


def test_missing_ids_finish_the_task_and_upsert_nothing(crm, instance, emulator: Emulator):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    emulator.delete_record("reserve", 2)
    hook = add_webhook(engine, integ, "RESERVE_ADD", [1, 2, 3])
    tick(url, instance)

    result = run_sync(url, instance, today())

    assert _task_of(engine, hook)["status"] == 2
    assert set(rows(engine, reserves)) == {"1", "3"}
    md = metadata(result, RESERVES)
    assert md["entities_missing"] == 1 and md["entities_upserted"] == 2


def test_stuck_task_is_reclaimed_after_the_lease(crm, instance, emulator: Emulator):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    stuck = add_task(
        engine,
        integ,
        "RESERVE_ADD",
        [11],
        status=1,
        attempts=1,
        claimed_at=utcnow() - timedelta(hours=1),
        run_id="crashed-run",
    )
    held = add_task(
        engine,
        integ,
        "RESERVE_ADD",
        [12],
        status=1,
        attempts=1,
        claimed_at=utcnow(),
        run_id="running-run",
    )

    result = run_sync(url, instance, today())

    after = tasks(engine)
    assert after[stuck]["status"] == 2 and after[stuck]["attempts"] == 2
    assert after[stuck]["run_id"] == result.run_id and after[stuck]["crashes"] == 1
    # A task still inside its lease belongs to the run holding it.
    assert after[held]["status"] == 1 and after[held]["run_id"] == "running-run"
    assert emulator.requested_ids("reserve") == [11]
    assert checks(result)[("allio/reserves", "no_stuck_tasks")].passed


def test_older_snapshot_never_overwrites_a_newer_one(crm, instance, emulator: Emulator):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    # Versions are times, not text: ALLIO's zone-less Moscow times and ISO times with an
    # offset compare by the instant they name.
    base = dict(make_record("reserve", 7), updated_at="2025-10-30 20:00:00")  # 17:00 UTC
    emulator.put_record("reserve", 7, base)
    add_webhook(engine, integ, "RESERVE_MOD", [7])
    tick(url, instance)
    run_sync(url, instance, today())
    original = rows(engine, reserves)["7"]
    assert utc(original["source_version"]) == datetime(2025, 10, 30, 17, tzinfo=UTC)
    # 16:00 UTC: older, though its text sorts after the stored one.
    older = dict(base, status="STALE", updated_at="2025-10-30T19:00:00+03:00")
    emulator.put_record("reserve", 7, older)
    stale_hook = add_webhook(engine, integ, "RESERVE_MOD", [7])
    tick(url, instance)
    run_sync(url, instance, today())
    kept = rows(engine, reserves)["7"]
    assert _task_of(engine, stale_hook)["status"] == 2
    assert kept["status"] == original["status"] != "STALE"
    assert kept["source_version"] == original["source_version"]
    assert kept["source_task_id"] == original["source_task_id"]

    # 20:30 UTC: newer, though its text sorts before the stored one.
    newer = dict(base, status="NEWER", updated_at="2025-10-30 20:30:00+00:00")
    emulator.put_record("reserve", 7, newer)
    add_webhook(engine, integ, "RESERVE_MOD", [7])
    tick(url, instance)
    run_sync(url, instance, today())
    updated = rows(engine, reserves)["7"]
    assert updated["status"] == "NEWER"
    assert utc(updated["source_version"]) == datetime(2025, 10, 30, 20, 30, tzinfo=UTC)


def test_reappearing_entity_loses_its_tombstone(crm, instance, emulator: Emulator):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    add_webhook(engine, integ, "RESERVE_ADD", [5, 6])
    tick(url, instance)
    run_sync(url, instance, today())
    with engine.begin() as conn:
        assert tombstone(conn, reserves, integ.id, ["5"], utcnow()) == 1
    assert rows(engine, reserves)["5"]["deleted_at"] is not None

    add_webhook(engine, integ, "RESERVE_MOD", [5])
    tick(url, instance)
    run_sync(url, instance, today())
    stored = rows(engine, reserves)
    assert stored["5"]["deleted_at"] is None
    assert stored["6"]["deleted_at"] is None


def test_a_crashed_runs_task_on_another_day_is_released_and_gets_its_own_run(
    crm, instance, emulator: Emulator
):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    day = days_ago(3)
    stuck = add_task(
        engine,
        integ,
        "DEALCARD_ADD",
        [1],
        status=1,
        attempts=1,
        created_at=at_noon(day),
        claimed_at=utcnow() - timedelta(hours=2),
        run_id="crashed-run",
    )
    result = run_sync(url, instance, today())
    # Today's run hands it back (its lease lapsed) but leaves it to its own day's run.
    task = tasks(engine)[stuck]
    assert task["status"] == 0 and task["crashes"] == 1 and "lease expired" in task["error"]
    assert all(e.passed for e in checks(result).values())
    request = _ingest(url, engine, instance)
    assert request.partition_key == day.isoformat()
    assert request.tags["crm/batch-sync"] == "allio"  # beside today's live run, not behind it
    run_sync(url, instance, request.partition_key, dict(request.tags))
    assert tasks(engine)[stuck]["status"] == 2
    assert set(rows(engine, dealcards)) == {"1"}


@pytest.mark.parametrize(("total", "passed"), [(20, False), (21, True)])
def test_failed_task_share_threshold(crm, instance, emulator: Emulator, total, passed):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    add_task(engine, integ, "RESERVE_ADD", [1], status=3, attempts=1, error="boom")
    for n in range(total - 1):
        add_task(engine, integ, "RESERVE_ADD", [n + 2], status=2, attempts=1)
    result = run_sync(url, instance, today())
    evaluation = checks(result)[("allio/reserves", "failed_task_share")]
    assert evaluation.passed is passed  # 1/20 = 5% fails, 1/21 < 5% passes
    assert evaluation.metadata["tasks"].value == total
    assert emulator.requests() == []  # live runs never retry failed tasks


def test_real_quota_is_never_exceeded(crm, instance):
    """At ALLIO's real 2 requests/s the shared limiter keeps the emulator from 429ing."""
    url, engine = crm
    app = create_app(token=TOKEN, quota_per_second=2)
    with running_server(app) as base:
        integ = add_allio(engine, base)
        add_webhook(engine, integ, "RESERVE_ADD", list(range(1, 251)))
        add_webhook(engine, integ, "DEALCARD_ADD", [1])
        tick(url, instance)
        result = run_sync(url, instance, today(), quota=None)
    log = app.state.emulator.log.entries()
    assert len(log) == 4
    assert not any(e["quota_rejected"] for e in log)
    times = sorted(e["monotonic"] for e in log)
    assert all(later - first >= 1.0 for first, later in zip(times, times[2:], strict=False))
    assert metadata(result, RESERVES)["api_429s"] == 0
    assert len(rows(engine, reserves)) == 250


def test_a_record_the_database_rejects_fails_its_task_not_the_run(
    crm, instance, emulator: Emulator
):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    # PostgreSQL refuses a 500-character status in VARCHAR(64); SQLite stores it.
    emulator.put_record("reserve", 1, dict(make_record("reserve", 1), status="X" * 500))
    bad = add_webhook(engine, integ, "RESERVE_ADD", [1])
    good = add_webhook(engine, integ, "DEALCARD_ADD", [2])
    tick(url, instance)

    result = run_sync(url, instance, today())

    assert result.success
    assert _task_of(engine, good)["status"] == 2
    assert "2" in rows(engine, dealcards)
    bad_task = _task_of(engine, bad)
    if engine.dialect.name == "postgresql":
        assert bad_task["status"] == 3
        assert bad_task["error"].startswith("store failed: DataError")
        assert "too long" in bad_task["error"] and "XXXX" not in bad_task["error"]
        assert rows(engine, reserves) == {} and rows(engine, contacts) != {}
        assert metadata(result, RESERVES)["tasks_failed"] == 1
    else:
        assert bad_task["status"] == 2
    # Either way no task is left in progress for the lease to hand back.
    assert all(t["status"] != 1 for t in tasks(engine).values())


def test_bad_integration_tag_fails_the_run_clearly(crm, instance, emulator: Emulator):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    hook = add_webhook(engine, integ, "RESERVE_ADD", [1])
    tick(url, instance)
    with pytest.raises(Exception, match="crm/integration must be integration ids"):
        run_sync(url, instance, today(), {"crm/mode": "live", "crm/integration": "x"})
    assert _task_of(engine, hook)["status"] == 0
    assert emulator.requests() == []


def test_wrong_token_fails_tasks_without_leaking_it(crm, instance, emulator: Emulator):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    secret = "wrong-token-abcdef-0123456789"
    with engine.begin() as conn:
        conn.execute(
            update(integrations)
            .where(integrations.c.id == integ.id)
            .values(credentials={"api_token": secret})
        )
    hook = add_webhook(engine, integ, "RESERVE_ADD", [1])
    tick(url, instance)

    result = run_sync(url, instance, today())

    task = _task_of(engine, hook)
    # Retried later (ops may fix the token meanwhile), with the reason on the task.
    assert task["status"] == 0 and "authentication failed (401)" in task["error"]
    assert task["next_attempt_at"] is not None and secret not in task["error"]
    assert len(emulator.requests("reserve")) == 1  # 401 is not retried
    with engine.connect() as conn:
        logged = conn.execute(select(api_call_log)).all()
    assert [r.status_code for r in logged] == [401]
    assert all(secret not in str(tuple(r)) for r in logged)
    assert metadata(result, RESERVES)["tasks_retrying"] == 1


def test_live_run_for_today_takes_waiting_webhooks_itself(crm, emulator, instance):
    """A lingering live run does not wait for the sensor's next tick to see new webhooks."""
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    add_webhook(engine, integ, "RESERVE_ADD", [31, 32])
    result = run_sync(url, instance, today())  # no sensor tick before the run
    assert result.success
    assert set(rows(engine, reserves)) == {"31", "32"}
    assert [t["status"] for t in tasks(engine).values()] == [2]


def test_live_run_for_another_day_leaves_webhooks_to_the_sensor(crm, emulator, instance):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    add_webhook(engine, integ, "RESERVE_ADD", [33])
    assert run_sync(url, instance, days_ago(1)).success
    assert tasks(engine) == {}
    assert rows(engine, reserves) == {}
