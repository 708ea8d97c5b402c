"""ALLIO commands → tasks: the command rules, splitting big webhooks into parts, every
task ending 2 or 3, and SPACE_CHANGED synced as reserves (SQLite and PostgreSQL)."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import select, update

from crm_schema.providers.allio import allio_webhook, reserves
from crm_schema.task_queue import Claim, NewTask
from orchestration.allio.tasks import (
    DELETE,
    MAX_IDS_PER_TASK,
    QUEUE,
    SYNC,
    entity_for_command,
    handler_for,
    rule_for,
    take_webhooks,
    tasks_for_webhook,
)
from provider_emulators.allio.records import make_record
from tests import allio_fixtures as fx
from tests.allio_fixtures import (
    Emulator,
    add_allio,
    add_webhook,
    rows,
    run_sync,
    tasks,
    tick,
)
from tests.receiver_fixtures import serve_receiver

# Fixtures shared by the ALLIO tests (bound here so pytest finds them in this module).
allio_server, crm, emulator, instance = fx.allio_server, fx.crm, fx.emulator, fx.instance

BASE = "http://allio.invalid"  # tests that never call ALLIO

RULES = {
    "RESERVE_ADD": ("reserve", SYNC),
    "RESERVE_MOD": ("reserve", SYNC),
    "RESERVE_DEL": ("reserve", DELETE),
    "DEALCARD_ADD": ("dealcard", SYNC),
    "DEALCARD_MOD": ("dealcard", SYNC),
    "DEALCARD_DEL": ("dealcard", DELETE),
    "SPACE_CHANGED": ("reserve", SYNC),  # the seed's example: its indexes are reserve ids
    "RESERVE_STATUS": ("reserve", SYNC),  # any other RESERVE_* is fetched too
    "SOMETHING_NEW": ("unknown", None),
    "SPACE_CHANGED_DEL": ("unknown", None),
    "RESERVE": ("unknown", None),
    "DEAL_DEL": ("unknown", None),
}


@pytest.mark.parametrize("command,rule", RULES.items())
def test_command_rules(command: str, rule: tuple[str, str | None]) -> None:
    assert rule_for(command) == rule
    assert (entity_for_command(command), handler_for(command)) == rule


def _by_webhook(engine) -> dict[int, list[dict]]:  # noqa: ANN001
    out: dict[int, list[dict]] = {}
    for task in sorted(tasks(engine).values(), key=lambda t: (t["webhook_id"], t["part"])):
        out.setdefault(task["webhook_id"], []).append(task)
    return out


def _ingest(engine) -> int:  # noqa: ANN001
    with engine.begin() as conn:
        return take_webhooks(conn)[0]


def test_every_command_ends_2_or_3_unknown_ones_at_ingest(crm) -> None:
    _, engine = crm
    integ = add_allio(engine, BASE)
    hooks = {cmd: add_webhook(engine, integ, cmd, [n + 1]) for n, cmd in enumerate(RULES)}
    assert _ingest(engine) == len(RULES)

    by_webhook = _by_webhook(engine)
    for cmd, webhook_id in hooks.items():
        [task] = by_webhook[webhook_id]
        entity, handler = RULES[cmd]
        assert (task["command"], task["entity"], task["handler"]) == (cmd, entity, handler)
        if handler is None:  # nothing would ever take it: it ends now, saying why
            assert task["status"] == 3 and task["error"] == f"unknown command {cmd}"
            assert task["finished_at"] is not None and task["attempts"] == 0
        else:
            assert task["status"] == 0 and task["error"] is None
    # No task waits in 0 without a handler that claims it.
    assert all(t["handler"] in (SYNC, DELETE) for t in tasks(engine).values() if t["status"] == 0)


def test_queue_creates_handlerless_tasks_finished_in_3(crm) -> None:
    _, engine = crm
    integ = add_allio(engine, BASE)
    webhook_id = add_webhook(engine, integ, "FOO_BAR", [1, 2, 3])
    with engine.begin() as conn:
        reason = "unknown command FOO_BAR"
        created = QUEUE.add(
            conn,
            [
                NewTask(integ.id, "unknown", "FOO_BAR", [1, 2], webhook_id, None, 0, reason),
                NewTask(integ.id, "unknown", "FOO_BAR", [3], webhook_id, None, 1, reason),
                NewTask(integ.id, "unknown", "FOO_BAR", [4], None, None),  # no reason given
            ],
        )
    assert created == 3
    made = sorted(tasks(engine).values(), key=lambda t: t["id"])
    assert [(t["status"], t["error"]) for t in made] == [
        (3, "unknown command FOO_BAR"),
        (3, "unknown command FOO_BAR"),
        (3, "no handler for this task"),
    ]
    assert all(t["finished_at"] is not None and t["handler"] is None for t in made)
    assert [t["ids_count"] for t in made] == [2, 1, 1]
    # No claim, live or reconcile, ever takes them back.
    with engine.begin() as conn:
        for handler in (SYNC, DELETE):
            for mode in ("live", "reconcile", "backfill"):
                assert (
                    QUEUE.claim(conn, Claim(run_id=f"r-{mode}", handler=handler, mode=mode)) == []
                )


def test_big_webhook_splits_into_parts_of_1000_once(crm) -> None:
    _, engine = crm
    integ = add_allio(engine, BASE)
    sizes = {2500: [1000, 1000, 500], 1000: [1000], 1001: [1000, 1], 1: [1]}
    hooks = {
        n: add_webhook(engine, integ, "RESERVE_MOD", list(range(10_000 * n, 10_000 * n + n)))
        for n in sizes
    }
    unknown = add_webhook(engine, integ, "NEW_THING", list(range(1, 1501)))
    assert _ingest(engine) == sum(map(len, sizes.values())) + 2

    by_webhook = _by_webhook(engine)
    for n, parts in sizes.items():
        made = by_webhook[hooks[n]]
        assert [t["part"] for t in made] == list(range(len(parts)))
        assert [t["ids_count"] for t in made] == parts
        ids = [i for t in made for i in json.loads(t["external_ids"])]
        assert ids == list(range(10_000 * n, 10_000 * n + n))  # all of them, in order
        assert all(len(json.loads(t["external_ids"])) <= MAX_IDS_PER_TASK for t in made)
        assert all(t["status"] == 0 and t["handler"] == SYNC for t in made)
    # An unknown command's parts all end in 3 at once.
    assert [(t["part"], t["status"], t["error"]) for t in by_webhook[unknown]] == [
        (0, 3, "unknown command NEW_THING"),
        (1, 3, "unknown command NEW_THING"),
    ]

    # Ingest is idempotent: the same rows again (a sensor tick and a run at once, or a
    # crash before `processed_at` was saved) add no task.
    before = tasks(engine)
    with engine.begin() as conn:
        conn.execute(update(allio_webhook).values(processed_at=None))
    assert _ingest(engine) == 0
    with engine.begin() as conn:
        inbox = conn.execute(select(allio_webhook)).all()
        assert QUEUE.add(conn, [t for row in inbox for t in tasks_for_webhook(row)]) == 0
    assert tasks(engine) == before


def test_space_changed_ids_are_fetched_as_reserves(crm, instance, emulator: Emulator) -> None:
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    webhook_id = add_webhook(engine, integ, "SPACE_CHANGED", [1, 2, 22])
    result = tick(url, instance)
    assert len(result.run_requests) == 1  # a SPACE_CHANGED task is work to run
    request = result.run_requests[0]

    run = run_sync(url, instance, request.partition_key, dict(request.tags))
    assert run.success

    [task] = _by_webhook(engine)[webhook_id]
    assert (task["entity"], task["handler"], task["status"]) == ("reserve", SYNC, 2)
    assert task["error"] is None and task["outcome"] == "synced 3"
    calls = emulator.requests("reserve")
    assert calls and all(c["path"] == "/reserve/list" for c in calls)
    assert sorted(emulator.requested_ids("reserve")) == [1, 2, 22]
    assert emulator.requests("dealcard") == []
    stored = rows(engine, reserves)
    assert set(stored) == {"1", "2", "22"}
    for ext, row in stored.items():
        assert row["raw"] == make_record("reserve", int(ext))
        assert row["source_task_id"] == task["id"] and row["integration_id"] == integ.id


def test_webhook_as_allio_may_send_it_reaches_reserves(crm, instance, emulator: Emulator) -> None:
    """Receiver → sensor → sync: SPACE_CHANGED, 1,050 ids as a JSON string, no
    Content-Type, the uuid in capitals."""
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    ids = list(range(5001, 6051))
    body = {
        "uuid": integ.integration_uuid.upper(),
        "command": "SPACE_CHANGED",
        "indexes": json.dumps(ids),
    }
    with serve_receiver(url) as base, httpx.Client(base_url=base) as client:
        resp = client.post(integ.webhook_path, content=json.dumps(body).encode())
        assert "content-type" not in resp.request.headers
        assert resp.status_code == 200, resp.text
    with engine.connect() as conn:
        [row] = conn.execute(select(allio_webhook)).all()
    assert row.integration_uuid == integ.integration_uuid.upper()
    assert json.loads(row.external_ids_array) == ids

    request = tick(url, instance).run_requests[0]
    assert run_sync(url, instance, request.partition_key, dict(request.tags)).success

    made = _by_webhook(engine)[row.id]
    assert [(t["part"], t["ids_count"], t["status"]) for t in made] == [(0, 1000, 2), (1, 50, 2)]
    assert all(t["entity"] == "reserve" for t in made)
    requested = emulator.requested_ids("reserve")
    assert sorted(requested) == ids  # each once, 100 per call
    assert all(len(c["ids"]) <= 100 for c in emulator.requests("reserve"))
    assert set(rows(engine, reserves)) == {str(i) for i in ids}
