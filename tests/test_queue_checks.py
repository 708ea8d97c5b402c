"""Checks that watch the ALLIO task queue without a sync run, and what analysts see."""

from __future__ import annotations

from datetime import timedelta

from dagster import AssetCheckKey, AssetKey, DagsterInstance, build_sensor_context
from sqlalchemy import update

from crm_schema.providers.allio import allio_tasks
from orchestration.core.checks import FAILED, FRESH, LEASE, MISSING, evaluate
from orchestration.definitions import build_definitions
from orchestration.defs.allio.checks import allio_queue_health_sensor
from orchestration.resources.database import CrmDatabase
from tests import allio_fixtures as fx
from tests.allio_fixtures import (
    RESERVES,
    Emulator,
    add_allio,
    add_task,
    add_webhook,
    metadata,
    run_sync,
    tick,
    today,
    utcnow,
)

allio_server, crm, emulator, instance = fx.allio_server, fx.crm, fx.emulator, fx.instance
SPEC = allio_queue_health_sensor  # noqa: F841 - imported to prove the sensor is defined


def _results(url: str) -> dict[tuple[str, str], object]:
    from orchestration.defs.allio.checks import QUEUE_CHECKS

    return {
        (r.asset_key.to_user_string(), r.check_name): r  # type: ignore[union-attr]
        for r in evaluate(QUEUE_CHECKS, CrmDatabase(database_url=url).engine)
    }


def test_a_healthy_queue_passes_every_check(crm, instance, emulator: Emulator):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    add_webhook(engine, integ, "RESERVE_ADD", [1, 2])
    tick(url, instance)
    run_sync(url, instance, today())
    results = _results(url)
    assert len(results) == 8
    assert all(r.passed for r in results.values())


def test_work_waiting_too_long_and_tasks_past_their_lease_fail_the_checks(crm):
    url, engine = crm
    integ = add_allio(engine, "http://allio.invalid")
    old = utcnow() - timedelta(minutes=40)
    add_task(engine, integ, "RESERVE_ADD", [1], created_at=old)  # nobody picked it up
    add_task(engine, integ, "DEALCARD_ADD", [2], status=1, attempts=1, created_at=old,
             claimed_at=old, lease_expires_at=old, run_id="gone")  # fmt: skip
    results = _results(url)
    fresh = results[("allio/reserves", FRESH)]
    assert not fresh.passed and fresh.metadata["tasks_waiting_too_long"].value == 1
    assert fresh.metadata["oldest_untried_minutes"].value >= 39
    assert not results[("allio/dealcards", LEASE)].passed
    assert results[("allio/dealcards", FRESH)].passed and results[("allio/reserves", LEASE)].passed


def test_a_wrong_base_url_that_answers_empty_fails_the_ids_found_check(
    crm, instance, emulator: Emulator
):
    """A URL that answers `{"success": true, "data": []}` to everything: every task is done
    and nothing is stored — the run is green, but the standalone check turns red."""
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    for n in range(1, 6):
        emulator.delete_record("reserve", n)
    add_webhook(engine, integ, "RESERVE_ADD", [1, 2, 3, 4, 5])
    tick(url, instance)
    result = run_sync(url, instance, today())
    assert result.success and metadata(result, RESERVES)["entities_missing"] == 5
    missing = _results(url)[("allio/reserves", MISSING)]
    assert not missing.passed
    assert missing.metadata["ids_not_returned"].value == 5


def test_failed_share_over_the_last_day(crm):
    url, engine = crm
    integ = add_allio(engine, "http://allio.invalid")
    add_task(engine, integ, "RESERVE_ADD", [1], status=3, attempts=8, error="boom")
    for n in range(2, 12):
        add_task(engine, integ, "RESERVE_ADD", [n], status=2, attempts=1)
    check = _results(url)[("allio/reserves", FAILED)]
    assert not check.passed and check.metadata["failed_share"].value == round(1 / 11, 4)
    with engine.begin() as conn:  # older than a day: no longer counted
        conn.execute(update(allio_tasks).values(finished_at=utcnow() - timedelta(days=2)))
    assert _results(url)[("allio/reserves", FAILED)].passed


def test_the_sensor_records_check_results_without_a_run(crm):
    url, engine = crm
    integ = add_allio(engine, "http://allio.invalid")
    add_task(engine, integ, "RESERVE_ADD", [1], created_at=utcnow() - timedelta(hours=1))
    with DagsterInstance.ephemeral() as inst:
        context = build_sensor_context(
            instance=inst, resources={"crm_db": CrmDatabase(database_url=url)}
        )
        skip = allio_queue_health_sensor(context)
        assert "allio/reserves:tasks_processed_in_time" in str(skip)
        record = inst.event_log_storage.get_latest_asset_check_execution_by_key(
            [AssetCheckKey(RESERVES, FRESH)]
        )[AssetCheckKey(RESERVES, FRESH)]
        evaluation = record.event.dagster_event.event_specific_data
        assert evaluation.passed is False and evaluation.check_name == FRESH
        assert inst.get_runs() == []  # no run was launched for it


def test_assets_tell_analysts_what_they_hold(crm):
    url, _ = crm
    defs = build_definitions(url)
    graph = defs.resolve_asset_graph()
    for name in ("reserves", "dealcards", "contacts"):
        node = graph.get(AssetKey(["allio", name]))
        assert "seed" not in (node.description or "").lower()
        assert len(node.description or "") > 80
        assert node.kinds >= {"python", "sql"} and node.owners == ["team:crm-sync"]
        schema = node.metadata["dagster/column_schema"]
        columns = {c.name for c in schema.columns}
        assert {"integration_id", "external_id", "raw", "deleted_at"} <= columns
    checks = {key.name for key in graph.asset_check_keys}
    assert {FRESH, LEASE, FAILED, MISSING, "no_stuck_tasks", "failed_task_share"} <= checks


def test_materializations_carry_row_counts_per_integration(crm, instance, emulator: Emulator):
    url, engine = crm
    a = add_allio(engine, emulator.base_url, name="a")
    b = add_allio(engine, emulator.base_url, name="b")
    add_webhook(engine, a, "RESERVE_ADD", [1, 2])
    add_webhook(engine, b, "RESERVE_ADD", [3])
    tick(url, instance)
    md = metadata(run_sync(url, instance, today()), RESERVES)
    assert md["dagster/row_count"] == 3
    assert md["rows_per_integration"] == {str(a.id): 2, str(b.id): 1}
