"""The generic task queue on SQLite and PostgreSQL: bounded atomic claims, leases that a
heartbeat extends, retries with backoff, crash isolation, every task ending 2 or 3."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select, update

from crm_schema.providers.allio import allio_tasks
from crm_schema.task_queue import (
    Claim,
    Finished,
    NewTask,
    RetryPolicy,
    TaskQueue,
    dump_external_ids,
    now_utc,
    parse_external_ids,
)
from orchestration.core.heartbeat import Heartbeat, last_beats
from orchestration.core.sync_engine import call_cost
from tests.allio_fixtures import add_allio

QUEUE = TaskQueue(allio_tasks, RetryPolicy(max_attempts=3, backoff_seconds=30))
LEASE = timedelta(minutes=2)


def _claim(run_id: str = "run-1", **kw: object) -> Claim:
    return Claim(run_id=run_id, handler="sync", lease=LEASE, **kw)  # type: ignore[arg-type]


def _add(engine: Engine, integration_id: int, ids_per_task: list[list[int]], **kw: object) -> None:
    with engine.begin() as conn:
        QUEUE.add(
            conn,
            [
                NewTask(
                    integration_id=integration_id,
                    entity="reserve",
                    command="RESERVE_ADD",
                    external_ids=ids,
                    webhook_id=None,
                    handler="sync",
                    **kw,  # type: ignore[arg-type]
                )
                for ids in ids_per_task
            ],
        )


def _rows(engine: Engine) -> dict[int, dict]:
    with engine.connect() as conn:
        return {r.id: r._asdict() for r in conn.execute(select(allio_tasks))}


@pytest.fixture
def integ(engine: Engine):  # noqa: ANN201
    return add_allio(engine, "http://allio.invalid")


def test_a_task_no_handler_takes_is_created_finished_with_its_reason(engine, integ) -> None:
    with engine.begin() as conn:
        QUEUE.add(
            conn,
            [NewTask(integ.id, "unknown", "NEW_THING", [1], None, None, error="unknown command")],
        )
    [row] = _rows(engine).values()
    assert row["status"] == 3 and row["error"] == "unknown command" and row["finished_at"]


def test_claims_are_bounded_by_the_calls_a_lease_allows(engine, integ) -> None:
    # 30 tasks of 100 distinct ids each: 30 calls of 100 ids if all were claimed.
    _add(engine, integ.id, [list(range(n * 100, n * 100 + 100)) for n in range(30)])
    with engine.begin() as conn:
        chunk = QUEUE.claim(conn, _claim(max_cost=12, cost=call_cost(100)))
    assert len(chunk) == 12  # no more than 12 calls' worth
    with engine.begin() as conn:
        rest = QUEUE.claim(conn, _claim("run-2", max_cost=1000, cost=call_cost(100)))
    assert len(rest) == 18 and not {t.id for t in chunk} & {t.id for t in rest}
    # Tasks sharing ids merge into one call, so many fit into a small budget.
    _add(engine, integ.id, [[7]] * 50)
    with engine.begin() as conn:
        merged = QUEUE.claim(conn, _claim("run-3", max_cost=1, cost=call_cost(100)))
    assert len(merged) == 50


def test_concurrent_claims_never_share_a_task(engine, integ) -> None:
    _add(engine, integ.id, [[n] for n in range(400)])
    got: dict[str, list[int]] = {}
    barrier = threading.Barrier(4)

    def worker(name: str) -> None:
        barrier.wait()
        mine: list[int] = []
        while True:
            with engine.begin() as conn:
                chunk = QUEUE.claim(conn, _claim(name, max_tasks=25))
            if not chunk:
                break
            mine += [t.id for t in chunk]
        got[name] = mine

    threads = [threading.Thread(target=worker, args=(f"run-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [task_id for ids in got.values() for task_id in ids]
    assert len(claimed) == len(set(claimed)) == 400
    owners = {row["id"]: row["run_id"] for row in _rows(engine).values()}
    assert all(owners[task_id] == name for name, ids in got.items() for task_id in ids)


def test_heartbeat_keeps_the_lease_and_records_the_run(engine, integ) -> None:
    _add(engine, integ.id, [[1]])
    short = timedelta(seconds=0.6)
    with engine.begin() as conn:
        [task] = QUEUE.claim(conn, Claim(run_id="alive", handler="sync", lease=short))
    beat = Heartbeat(engine, QUEUE, "alive", short, "allio")
    beat.start()
    try:
        threading.Event().wait(1.5)  # over two leases
        with engine.begin() as conn:
            assert QUEUE.expire_leases(conn) == 0  # kept alive
    finally:
        beat.stop()
    assert beat.beats >= 3
    with engine.connect() as conn:
        assert "alive" in last_beats(conn, ["alive"])
    threading.Event().wait(0.8)
    with engine.begin() as conn:
        assert QUEUE.expire_leases(conn) == 1  # no beats: the lease lapses
    row = _rows(engine)[task.id]
    assert row["status"] == 0 and row["crashes"] == 1 and "lease expired" in row["error"]


def test_failures_retry_with_backoff_until_the_attempt_limit(engine, integ) -> None:
    _add(engine, integ.id, [[1]])
    for attempt in range(1, 4):
        with engine.begin() as conn:
            [task] = QUEUE.claim(conn, _claim(f"run-{attempt}"))
            counts = QUEUE.finish(conn, f"run-{attempt}", [Finished(task, error="503")])
        row = _rows(engine)[task.id]
        assert row["attempts"] == attempt
        if attempt < 3:
            assert counts.retrying == 1 and row["status"] == 0
            wait = row["next_attempt_at"].replace(tzinfo=None) - now_utc().replace(tzinfo=None)
            expected = QUEUE.retry.delay(attempt).total_seconds()
            assert expected - 5 < wait.total_seconds() <= expected
            with engine.begin() as conn:  # not due yet: nothing to claim
                assert QUEUE.claim(conn, _claim("early")) == []
                conn.execute(update(allio_tasks).values(next_attempt_at=now_utc()))
        else:
            assert counts.failed == 1 and row["status"] == 3 and row["finished_at"]
    assert [QUEUE.retry.delay(n).total_seconds() for n in (1, 2, 3)] == [30, 120, 480]


def test_a_final_failure_and_a_backfill_failure_do_not_retry(engine, integ) -> None:
    _add(engine, integ.id, [[1], [2]])
    with engine.begin() as conn:
        one, two = QUEUE.claim(conn, _claim())
        QUEUE.finish(conn, "run-1", [Finished(one, error="bad data", final=True)])
    with engine.begin() as conn:
        QUEUE.finish(conn, "run-1", [Finished(two, error="503")], mode="backfill")
    rows = _rows(engine)
    assert rows[one.id]["status"] == 3 and rows[two.id]["status"] == 3


def test_a_task_that_crashes_every_run_ends_alone_in_3(engine, integ) -> None:
    _add(engine, integ.id, [[n] for n in range(1, 41)])
    poison = min(_rows(engine))
    crashed_runs = 0
    for attempt in range(20):
        run = f"run-{attempt}"
        with engine.begin() as conn:
            chunk = QUEUE.claim(conn, _claim(run))
        if not chunk:
            break
        if any(t.id == poison for t in chunk):
            # The run dies holding its chunk; Dagster marks it failed.
            with engine.begin() as conn:
                QUEUE.release_run(conn, run, "failed")
            crashed_runs += 1
        else:
            with engine.begin() as conn:
                QUEUE.finish(conn, run, [Finished(t) for t in chunk])
    rows = _rows(engine)
    assert rows[poison]["status"] == 3
    assert rows[poison]["crashes"] == QUEUE.retry.max_crashes == crashed_runs
    assert "runs died holding this task" in rows[poison]["error"]
    innocent = [r for task_id, r in rows.items() if task_id != poison]
    assert all(r["status"] == 2 for r in innocent)  # chunks shrink around the poison
    assert max(r["crashes"] for r in innocent) < QUEUE.retry.max_crashes


def test_a_cancelled_run_gives_its_tasks_back_untouched(engine, integ) -> None:
    _add(engine, integ.id, [[1], [2]])
    with engine.begin() as conn:
        QUEUE.claim(conn, _claim("cancelled"))
        assert QUEUE.held_by_run(conn) == {"cancelled": 2}
        assert QUEUE.release_run(conn, "cancelled", "was cancelled", crash=False) == 2
    rows = list(_rows(engine).values())
    assert all(r["status"] == 0 and r["attempts"] == 0 and r["crashes"] == 0 for r in rows)


def test_health_counts_untried_past_lease_failed_and_missing(engine, integ) -> None:
    _add(engine, integ.id, [[1], [2], [3, 4, 5, 6]])
    long_ago = now_utc() - timedelta(hours=1)
    with engine.begin() as conn:
        conn.execute(update(allio_tasks).values(created_at=long_ago))
        first, second, third = QUEUE.claim(conn, _claim())
        QUEUE.finish(conn, "run-1", [Finished(first, error="boom", final=True)])
        QUEUE.finish(conn, "run-1", [Finished(third, ids_missing=3)])
        conn.execute(
            update(allio_tasks)
            .where(allio_tasks.c.id == second.id)
            .values(lease_expires_at=long_ago)
        )
    _add(engine, integ.id, [[9]])
    with engine.begin() as conn:
        conn.execute(
            update(allio_tasks).where(allio_tasks.c.status == 0).values(created_at=long_ago)
        )
    with engine.connect() as conn:
        health = QUEUE.health(conn, "sync", fresh_minutes=15)
    assert health.unprocessed == 1 and health.oldest_unprocessed_minutes >= 59
    assert health.past_lease == 1
    assert (health.failed, health.finished, health.failed_share) == (1, 2, 0.5)
    assert (health.ids_requested, health.ids_missing) == (4, 3)


def test_a_run_dying_on_a_tasks_last_allowed_attempt_ends_it(engine, integ) -> None:
    _add(engine, integ.id, [[1]])
    last_try = QUEUE.retry.attempt_limit("reconcile")
    assert last_try is not None
    with engine.begin() as conn:
        conn.execute(update(allio_tasks).values(attempts=last_try - 1))
        [task] = QUEUE.claim(conn, _claim("last", mode="reconcile"))
        QUEUE.release_run(conn, "last", "failed")
    row = _rows(engine)[task.id]
    assert row["status"] == 3 and row["attempts"] == last_try  # never left at 0 unclaimable


def test_external_ids_round_trip_numbers_and_uuids() -> None:
    from crm_schema.task_queue import dump_external_ids, parse_external_ids

    raw = dump_external_ids([111, "222", "0b7d6c3e-1f2a-4b5c-9d8e-7f6a5b4c3d2e"])
    assert raw == '[111, 222, "0b7d6c3e-1f2a-4b5c-9d8e-7f6a5b4c3d2e"]'
    assert parse_external_ids(raw) == ("111", "222", "0b7d6c3e-1f2a-4b5c-9d8e-7f6a5b4c3d2e")
    assert parse_external_ids('[true, null, "", 5]') == ("5",)
    assert parse_external_ids("not json") == parse_external_ids('{"a": 1}') == ()


def test_only_ascii_digit_ids_are_stored_as_numbers() -> None:
    # str.isdigit() is true for '³' and '٣', which int() refuses: such ids stay strings
    # (a sensor tick that raised on one would stop the whole inbox behind it).
    stored = dump_external_ids([111, "222", "³0", "٣", "abc"])
    assert stored == '[111, 222, "\\u00b30", "\\u0663", "abc"]'
    assert parse_external_ids(stored) == ("111", "222", "³0", "٣", "abc")
