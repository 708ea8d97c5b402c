"""Delete control: fresh *_DEL tasks become tombstones, behind its guard rails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dagster import build_schedule_context
from sqlalchemy import update

from crm_schema.providers.allio import allio_tasks, dealcards, reserves
from orchestration.defs.allio.schedules import allio_delete_control_daily
from tests import allio_fixtures as fx
from tests.allio_fixtures import (
    Emulator,
    add_allio,
    add_webhook,
    rows,
    run_delete_control,
    run_sync,
    step_failure_message,
    tasks,
    tick,
    today,
    utcnow,
)
from tests.conftest import output_metadata

# Fixtures shared by the ALLIO tests (bound here so pytest finds them in this module).
allio_server, crm, emulator, instance = fx.allio_server, fx.crm, fx.emulator, fx.instance
NO_FLOOR = {"delete_floor": 0}  # the share cap alone decides


def _seed(url, engine, instance, integ, reserve_ids, dealcard_ids=()):  # noqa: ANN001
    """Sync live entities for the integration through the real live path."""
    add_webhook(engine, integ, "RESERVE_ADD", list(reserve_ids))
    if dealcard_ids:
        add_webhook(engine, integ, "DEALCARD_ADD", list(dealcard_ids))
    tick(url, instance)
    result = run_sync(
        url, instance, today(), {"crm/mode": "live", "crm/integration": str(integ.id)}
    )
    assert result.success


def _del_tasks(engine, integ) -> dict[int, dict]:  # noqa: ANN001
    return {
        i: t
        for i, t in tasks(engine).items()
        if t["command"].endswith("_DEL") and t["integration_id"] == integ.id
    }


def _tombstoned(engine, table, integ) -> set[str]:  # noqa: ANN001
    return {e for e, r in rows(engine, table, integration_id=integ.id).items() if r["deleted_at"]}


def test_tombstones_only_what_allio_confirms_absent(crm, instance, emulator: Emulator):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url, delete_control=True)
    _seed(url, engine, instance, integ, range(1, 11), range(1, 11))
    emulator.delete_record("reserve", 3)
    emulator.delete_record("dealcard", 7)
    first = add_webhook(engine, integ, "RESERVE_DEL", [3])
    add_webhook(engine, integ, "RESERVE_DEL", [4, 3])  # 4 still exists in ALLIO
    third = add_webhook(engine, integ, "DEALCARD_DEL", [7])
    tick(url, instance)
    emulator.app.state.emulator.log.clear()

    result = run_delete_control(url, instance)
    assert result.success

    assert _tombstoned(engine, reserves, integ) == {"3"}
    assert _tombstoned(engine, dealcards, integ) == {"7"}
    by_webhook = {t["webhook_id"]: t for t in _del_tasks(engine, integ).values()}
    assert all(t["status"] == 2 for t in by_webhook.values())
    # Lineage: the tombstone names a task that asked for the deletion.
    assert rows(engine, reserves)["3"]["source_task_id"] == by_webhook[first]["id"]
    assert rows(engine, dealcards)["7"]["source_task_id"] == by_webhook[third]["id"]
    # Confirmation went through the list endpoints.
    assert sorted(emulator.requested_ids("reserve")) == [3, 4]
    assert emulator.requested_ids("dealcard") == [7]
    out = result.output_for_node("allio_delete_control_op")[str(integ.id)]
    assert out["tombstoned"] == 2 and out["still_present"] == 1 and not out["blocked"]

    # Run again: nothing fresh left, nothing more changes.
    again = run_delete_control(url, instance)
    assert again.success
    assert _tombstoned(engine, reserves, integ) == {"3"}


def test_tombstone_lineage_names_the_task_that_asked(crm, instance, emulator: Emulator):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url, delete_control=True)
    _seed(url, engine, instance, integ, range(1, 21))
    for record_id in (5, 6):
        emulator.delete_record("reserve", record_id)
    w5 = add_webhook(engine, integ, "RESERVE_DEL", [5])
    w6 = add_webhook(engine, integ, "RESERVE_DEL", [6])
    tick(url, instance)
    assert run_delete_control(url, instance).success
    by_webhook = {t["webhook_id"]: t["id"] for t in _del_tasks(engine, integ).values()}
    stored = rows(engine, reserves)
    assert stored["5"]["source_task_id"] == by_webhook[w5]
    assert stored["6"]["source_task_id"] == by_webhook[w6]


def test_integrations_without_delete_control_are_untouched(crm, instance, emulator: Emulator):
    url, engine = crm
    on = add_allio(engine, emulator.base_url, name="on", delete_control=True)
    off = add_allio(engine, emulator.base_url, name="off", delete_control=False)
    _seed(url, engine, instance, on, range(1, 11))
    _seed(url, engine, instance, off, range(1, 11))
    emulator.delete_record("reserve", 2)
    add_webhook(engine, on, "RESERVE_DEL", [2])
    add_webhook(engine, off, "RESERVE_DEL", [2])
    tick(url, instance)

    assert run_delete_control(url, instance).success
    assert _tombstoned(engine, reserves, on) == {"2"}
    assert _tombstoned(engine, reserves, off) == set()
    (off_task,) = _del_tasks(engine, off).values()
    assert off_task["status"] == 0 and off_task["attempts"] == 0


def test_dry_run_changes_nothing(crm, instance, emulator: Emulator):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url, delete_control=True)
    _seed(url, engine, instance, integ, range(1, 11))
    emulator.delete_record("reserve", 4)
    add_webhook(engine, integ, "RESERVE_DEL", [4])
    tick(url, instance)
    before = tasks(engine)

    result = run_delete_control(url, instance, dry_run=True)
    assert result.success
    assert _tombstoned(engine, reserves, integ) == set()
    after = tasks(engine)
    for task_id, task in _del_tasks(engine, integ).items():
        assert task["status"] == 0 and task["attempts"] == before[task_id]["attempts"]
        assert task["finished_at"] is None
    assert {k: v["status"] for k, v in after.items()} == {k: v["status"] for k, v in before.items()}
    out = result.output_for_node("allio_delete_control_op")[str(integ.id)]
    assert out["would_delete"] == {"reserve": ["4"]} and out["tombstoned"] == 0

    # The real sweep afterwards still finds the task pending.
    assert run_delete_control(url, instance).success
    assert _tombstoned(engine, reserves, integ) == {"4"}


def test_over_the_share_cap_fails_loudly_and_deletes_nothing(crm, instance, emulator: Emulator):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url, delete_control=True, settings=NO_FLOOR)
    _seed(url, engine, instance, integ, range(1, 11))
    for record_id in (1, 2, 3):
        emulator.delete_record("reserve", record_id)
    add_webhook(engine, integ, "RESERVE_DEL", [1, 2, 3])  # 30% of 10 > 20%
    tick(url, instance)

    result = run_delete_control(url, instance)

    assert not result.success
    message = step_failure_message(result)
    assert "delete control stopped" in message
    assert (
        f"integration {integ.id}: 3 of 10 live entities (30%; cap: the larger of 0 and 20%)"
        in message
    )
    assert _tombstoned(engine, reserves, integ) == set()
    (task,) = _del_tasks(engine, integ).values()
    assert task["status"] == 0 and task["attempts"] == 0 and task["finished_at"] is None

    # Ops can raise the cap for one run once they have checked.
    assert run_delete_control(url, instance, max_delete_share=0.5).success
    assert _tombstoned(engine, reserves, integ) == {"1", "2", "3"}


def test_exactly_at_the_cap_is_allowed(crm, instance, emulator: Emulator):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url, delete_control=True, settings=NO_FLOOR)
    _seed(url, engine, instance, integ, range(1, 11))
    for record_id in (1, 2):
        emulator.delete_record("reserve", record_id)
    add_webhook(engine, integ, "RESERVE_DEL", [1, 2])  # 20% is not more than 20%
    tick(url, instance)
    assert run_delete_control(url, instance).success
    assert _tombstoned(engine, reserves, integ) == {"1", "2"}


def test_provider_failure_deletes_nothing(crm, instance, emulator: Emulator):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url, delete_control=True)
    _seed(url, engine, instance, integ, range(1, 11))
    emulator.delete_record("reserve", 1)
    add_webhook(engine, integ, "RESERVE_DEL", [1])
    tick(url, instance)
    emulator.set_faults(error_rate=1.0)
    result = run_delete_control(url, instance, fast_retries=True)
    # The sweep fails its run (red in the UI), deletes nothing, and keeps the task
    # for a later sweep.
    assert not result.success
    assert "could not confirm deletions" in step_failure_message(result)
    assert _tombstoned(engine, reserves, integ) == set()
    (task,) = _del_tasks(engine, integ).values()
    assert task["status"] == 0 and "server error" in task["error"]
    assert task["attempts"] == 1 and task["next_attempt_at"] is not None


def test_delete_control_schedule():
    when = datetime(2025, 6, 1, 2, 0, tzinfo=UTC)
    request = allio_delete_control_daily(build_schedule_context(scheduled_execution_time=when))
    assert request.run_key == "allio-delete-control:2025-06-01"
    assert request.run_config["ops"]["allio_delete_control_op"]["config"]["dry_run"] is False


def test_the_floor_lets_a_small_integration_delete(crm, instance, emulator: Emulator):
    """1 of 3 live entities is 33 %, over the share, but within the floor of 10."""
    url, engine = crm
    integ = add_allio(engine, emulator.base_url, delete_control=True)
    _seed(url, engine, instance, integ, range(1, 4))
    emulator.delete_record("reserve", 2)
    add_webhook(engine, integ, "RESERVE_DEL", [2])
    tick(url, instance)
    result = run_delete_control(url, instance)
    assert result.success
    assert _tombstoned(engine, reserves, integ) == {"2"}
    out = result.output_for_node("allio_delete_control_op")[str(integ.id)]
    assert out["cap"] == {"floor": 10, "max_share": 0.2}


def test_caps_are_set_per_integration(crm, instance, emulator: Emulator):
    url, engine = crm
    strict = add_allio(
        engine, emulator.base_url, name="strict", delete_control=True, settings=NO_FLOOR
    )
    loose = add_allio(
        engine,
        emulator.base_url,
        name="loose",
        delete_control=True,
        settings={"delete_floor": 0, "delete_max_share": 0.5},
    )
    for integ in (strict, loose):
        _seed(url, engine, instance, integ, range(1, 11))
        add_webhook(engine, integ, "RESERVE_DEL", [1, 2, 3])  # 30 %
    for record_id in (1, 2, 3):
        emulator.delete_record("reserve", record_id)
    tick(url, instance)
    result = run_delete_control(url, instance)
    assert not result.success  # strict stopped, loudly
    assert f"integration {strict.id}: 3 of 10" in step_failure_message(result)
    assert _tombstoned(engine, reserves, strict) == set()
    assert _tombstoned(engine, reserves, loose) == {"1", "2", "3"}


def test_ids_allio_still_has_end_kept_and_are_counted(crm, instance, emulator: Emulator):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url, delete_control=True)
    _seed(url, engine, instance, integ, range(1, 11))
    kept = add_webhook(engine, integ, "RESERVE_DEL", [5, 6])  # both still in ALLIO
    emulator.delete_record("reserve", 7)
    mixed = add_webhook(engine, integ, "RESERVE_DEL", [7, 8])
    tick(url, instance)
    result = run_delete_control(url, instance)
    assert result.success
    by_webhook = {t["webhook_id"]: t for t in _del_tasks(engine, integ).values()}
    assert by_webhook[kept]["status"] == 2
    assert by_webhook[kept]["outcome"] == "kept: still present"
    assert by_webhook[mixed]["outcome"] == "deleted 1, kept 1: still present"
    assert _tombstoned(engine, reserves, integ) == {"7"}
    md = output_metadata(result)
    assert md["kept_tasks"] == 1 and md["still_present"] == 3 and md["tombstoned"] == 1


def test_provider_errors_are_retried_a_bounded_number_of_times(crm, instance, emulator: Emulator):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url, delete_control=True)
    _seed(url, engine, instance, integ, range(1, 11))
    add_webhook(engine, integ, "RESERVE_DEL", [1])
    tick(url, instance)
    emulator.set_faults(error_rate=1.0)
    # The seventh failed sweep in a row: one attempt is left.
    with engine.begin() as conn:
        conn.execute(
            update(allio_tasks).where(allio_tasks.c.command == "RESERVE_DEL").values(attempts=6)
        )
    assert not run_delete_control(url, instance, fast_retries=True).success
    (task,) = _del_tasks(engine, integ).values()
    assert task["status"] == 0 and task["attempts"] == 7
    with engine.begin() as conn:
        conn.execute(update(allio_tasks).values(next_attempt_at=None))  # the next day
    assert not run_delete_control(url, instance, fast_retries=True).success
    (task,) = _del_tasks(engine, integ).values()
    # Out of attempts: it ends in 3 with the error, and no sweep takes it again.
    assert task["status"] == 3 and "server error" in task["error"] and task["attempts"] == 8
    emulator.set_faults()
    assert run_delete_control(url, instance).success
    assert _del_tasks(engine, integ)[task["id"]]["status"] == 3


def test_old_delete_tasks_wait_for_ops_to_confirm(crm, instance, emulator: Emulator):
    """Switching delete control on must not replay months of queued deletes."""
    url, engine = crm
    integ = add_allio(engine, emulator.base_url, delete_control=True)
    _seed(url, engine, instance, integ, range(1, 11))
    for record_id in (1, 2):
        emulator.delete_record("reserve", record_id)
    old = add_webhook(engine, integ, "RESERVE_DEL", [1])
    fresh = add_webhook(engine, integ, "RESERVE_DEL", [2])
    tick(url, instance)
    with engine.begin() as conn:
        conn.execute(
            update(allio_tasks)
            .where(allio_tasks.c.webhook_id == old)
            .values(created_at=utcnow() - timedelta(days=30))
        )

    result = run_delete_control(url, instance)
    assert result.success
    assert _tombstoned(engine, reserves, integ) == {"2"}  # the fresh one only
    by_webhook = {t["webhook_id"]: t for t in _del_tasks(engine, integ).values()}
    assert by_webhook[fresh]["status"] == 2
    held = by_webhook[old]
    assert held["status"] == 0 and held["attempts"] == 0 and held["finished_at"] is None
    md = output_metadata(result)
    assert md["old_tasks_held"] == 1 and "confirm_old_deletes: true" in md["held"]
    out = result.output_for_node("allio_delete_control_op")[str(integ.id)]
    assert out["old_tasks_held"] == 1 and out["oldest_held_days"] == 30.0

    # The next daily sweep still holds it; ops confirm once, and it is applied.
    assert run_delete_control(url, instance).success
    assert _tombstoned(engine, reserves, integ) == {"2"}
    assert run_delete_control(url, instance, confirm_old_deletes=True).success
    assert _tombstoned(engine, reserves, integ) == {"1", "2"}
