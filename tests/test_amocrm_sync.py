"""amoCRM sync on SQLite and PostgreSQL against the emulator over real HTTP: RDESK
updates → leads (validation, lead not found, mock_lead_id mode, ordering), contacts
(upsert, E.164, delete tombstone, not found), an IP block that stops the run without
spending tasks, and a materialization through a real Dagster instance."""

from __future__ import annotations

import copy
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from dagster import (
    AssetCheckKey,
    AssetKey,
    DagsterInstance,
    build_schedule_context,
    build_sensor_context,
)
from sqlalchemy import insert, select, update
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from crm_schema.providers.amocrm import amocrm_inbox, amocrm_mock_leads, amocrm_tasks
from crm_schema.tables import TASK_DONE, TASK_ERROR, TASK_IN_PROGRESS, TASK_NEW, integrations
from crm_schema.task_queue import now_utc
from orchestration.amocrm.rdesk import lead_body, parse_update, settings_of
from orchestration.amocrm.sync import SKIPPED_OLDER, RunStopped
from orchestration.amocrm.tasks import take_webhooks
from orchestration.db import dispose_engines, shared_engine
from orchestration.definitions import build_definitions
from orchestration.defs.amocrm.schedules import amocrm_reconcile_daily
from orchestration.defs.amocrm.sensors import amocrm_contacts_sensor, amocrm_webhook_sensor
from orchestration.resources.database import CrmDatabase
from orchestration.resources.transport import CallStats
from provider_emulators.testing import running_server
from tests.amocrm_fixtures import (
    BOOKED,
    MC,
    Emulator,
    add_amocrm,
    add_contact_event,
    add_rdesk,
    amocrm_resource,
    amocrm_server,
    by_id,
    contact_rows,
    drain,
    fields_of,
    lead_rows,
    tasks_by_inbox,
)

__all__ = ["amocrm_server"]

LEADS = AssetKey(["amocrm", "leads"])
CONTACTS = AssetKey(["amocrm", "contacts"])


@pytest.fixture
def crm(database_url: str):
    engine = shared_engine(database_url)
    yield database_url, engine
    dispose_engines()


@pytest.fixture
def emu(amocrm_server) -> Emulator:
    return Emulator(amocrm_server[1])


def lead_no() -> int:
    """A lead id no other test uses (the emulator is shared by the module)."""
    return 30_000_000 + uuid.uuid4().int % 9_000_000


def booked(lead_id: int, **changes: Any) -> dict[str, Any]:
    return copy.deepcopy(BOOKED) | {"lead_id": str(lead_id)} | changes


def mc(lead_id: int, **changes: Any) -> dict[str, Any]:
    return copy.deepcopy(MC) | {"lead_id": lead_id} | changes


# ---- RDESK lead updates --------------------------------------------------------------------


def test_booked_and_mc_updates_patch_their_leads(crm, emu):
    url, engine = crm
    integ = add_amocrm(engine, emu.url)
    first, second = lead_no(), lead_no()
    emu.create_leads([first, second])
    row_b = add_rdesk(engine, integ, "booked", booked(first))
    row_m = add_rdesk(engine, integ, "mc", mc(second))
    stats = CallStats()
    result = drain(url, engine, stats=stats)
    assert result.leads_updated == 2 and result.tasks_done == 2
    assert stats.calls == 4  # GET + PATCH each
    for lead_id, source, element in ((first, "booked", BOOKED), (second, "mc", MC)):
        expected = lead_body(parse_update(source, element), settings_of({}))
        stored = emu.lead(lead_id)
        assert stored["price"] == expected["price"]
        assert fields_of(stored) == {k: v for k, v in by_id(expected).items() if v is not None}
    tasks = tasks_by_inbox(engine)
    assert tasks[row_b]["status"] == TASK_DONE
    assert tasks[row_b]["outcome"] == f"lead {first} updated"
    rows = lead_rows(engine)
    assert rows[str(first)]["price"] == 120000 and rows[str(first)]["rdesk_lead_id"] == str(first)
    assert rows[str(first)]["last_update_id"] == row_b
    assert rows[str(second)]["last_update_id"] == row_m and rows[str(second)]["price"] == 19601
    assert fields_of(rows[str(first)]["raw"]) == fields_of(emu.lead(first))
    assert rows[str(first)]["custom_fields"]["1305111"] == "700001"


def test_an_invalid_element_ends_3_at_once_without_a_call(crm, emu):
    url, engine = crm
    integ = add_amocrm(engine, emu.url)
    bad = booked(lead_no(), status="teleported")
    del bad["money"]
    row = add_rdesk(engine, integ, "booked", bad)
    junk = add_rdesk(engine, integ, "mc", {"id": "x"})
    stats = CallStats()
    result = drain(url, engine, stats=stats)
    assert result.leads_invalid == 2 and stats.calls == 0
    tasks = tasks_by_inbox(engine)
    assert tasks[row]["status"] == TASK_ERROR and tasks[row]["attempts"] == 1
    assert tasks[row]["error"].startswith("invalid RDESK booked element: ")
    assert "status" in tasks[row]["error"] and "money" in tasks[row]["error"]
    assert "lead_id" in tasks[junk]["error"] and "createdAt" in tasks[junk]["error"]


def test_a_lead_amocrm_does_not_have_ends_3(crm, emu):
    url, engine = crm
    integ = add_amocrm(engine, emu.url)
    missing = lead_no()
    row = add_rdesk(engine, integ, "booked", booked(missing))
    result = drain(url, engine)
    assert result.leads_not_found == 1
    task = tasks_by_inbox(engine)[row]
    assert task["status"] == TASK_ERROR and task["error"].startswith("lead not found")
    assert lead_rows(engine) == {}


def test_mock_mode_searches_once_and_creates_with_pipeline_and_status(crm, emu):
    url, engine = crm
    integ = add_amocrm(
        engine,
        emu.url,
        settings={
            "mock_lead_id": True,
            "mock": {"booked": {"pipeline_id": 10156066, "status_id": 80453094}},
        },
    )
    rdesk_new, rdesk_known = lead_no(), lead_no()
    # A lead named exactly ID_<known> exists, and one whose name only contains it.
    (known_id, _decoy) = emu.create_named([f"ID_{rdesk_known}", f"ID_{rdesk_known}7"])
    since = time.time()
    add_rdesk(engine, integ, "booked", booked(rdesk_new))
    add_rdesk(engine, integ, "mc", mc(rdesk_known))
    result = drain(url, engine)
    assert (result.mock_leads_created, result.mock_leads_found) == (1, 1)
    assert result.leads_updated == 2
    with engine.connect() as conn:
        mapping = {r.rdesk_lead_id: r.lead_id for r in conn.execute(select(amocrm_mock_leads))}
    assert mapping[str(rdesk_known)] == known_id
    created = emu.lead(mapping[str(rdesk_new)])
    assert created["name"] == f"ID_{rdesk_new}"
    assert (created["pipeline_id"], created["status_id"]) == (10156066, 80453094)
    assert fields_of(created)[1305111] == "700001"
    # Later updates of both leads: no search, no create.
    add_rdesk(engine, integ, "booked", booked(rdesk_new, id=700002))
    add_rdesk(engine, integ, "mc", mc(rdesk_known, id=800002))
    result = drain(url, engine)
    assert (result.mock_leads_created, result.mock_leads_found, result.leads_updated) == (0, 0, 2)
    calls = [(r["method"], r["path"]) for r in emu.requests(since)]
    assert calls.count(("GET", "/api/v4/leads")) == 2  # one search per lead, ever
    assert calls.count(("POST", "/api/v4/leads")) == 1
    assert fields_of(emu.lead(mapping[str(rdesk_new)]))[1305111] == "700002"
    assert lead_rows(engine)[str(known_id)]["rdesk_lead_id"] == str(rdesk_known)


def test_two_updates_of_one_lead_in_one_run_the_newer_wins(crm, emu):
    url, engine = crm
    integ = add_amocrm(engine, emu.url)
    lead_id = lead_no()
    emu.create_leads([lead_id])
    older = add_rdesk(engine, integ, "booked", booked(lead_id, id=1, status="booked"))
    newer = add_rdesk(engine, integ, "booked", booked(lead_id, id=2, status="checkout"))
    stats = CallStats()
    result = drain(url, engine, stats=stats)
    assert (result.leads_updated, result.leads_skipped_older) == (1, 1)
    assert stats.calls == 2  # only the newest is sent
    assert fields_of(emu.lead(lead_id))[1304923] == "checkout"
    tasks = tasks_by_inbox(engine)
    assert tasks[older]["status"] == TASK_DONE and tasks[older]["outcome"] == SKIPPED_OLDER
    assert tasks[newer]["outcome"] == f"lead {lead_id} updated"
    assert lead_rows(engine)[str(lead_id)]["last_update_id"] == newer


def test_an_older_update_in_a_later_run_never_overwrites(crm, emu):
    url, engine = crm
    integ = add_amocrm(engine, emu.url)
    lead_id = lead_no()
    emu.create_leads([lead_id])
    older = add_rdesk(engine, integ, "booked", booked(lead_id, id=1, status="booked"))
    newer = add_rdesk(engine, integ, "booked", booked(lead_id, id=2, status="checkout"))
    with engine.begin() as conn:
        take_webhooks(conn)
        # The older update failed once and waits for its retry.
        conn.execute(
            update(amocrm_tasks)
            .where(amocrm_tasks.c.webhook_id == older)
            .values(next_attempt_at=now_utc() + timedelta(hours=1))
        )
    result = drain(url, engine)  # the newer one alone (the older waits for a retry)
    assert (result.leads_updated, result.leads_skipped_older) == (1, 0)
    with engine.begin() as conn:
        conn.execute(
            update(amocrm_tasks)
            .where(amocrm_tasks.c.webhook_id == older)
            .values(next_attempt_at=None)
        )
    stats = CallStats()
    result = drain(url, engine, stats=stats)
    assert (result.leads_updated, result.leads_skipped_older, stats.calls) == (0, 1, 0)
    assert tasks_by_inbox(engine)[older]["outcome"] == SKIPPED_OLDER
    assert fields_of(emu.lead(lead_id))[1304923] == "checkout"
    assert lead_rows(engine)[str(lead_id)]["last_update_id"] == newer


def test_a_lead_another_run_works_on_waits(crm, emu):
    url, engine = crm
    integ = add_amocrm(engine, emu.url)
    lead_id = lead_no()
    emu.create_leads([lead_id])
    first = add_rdesk(engine, integ, "booked", booked(lead_id, id=1))
    drain(url, engine)
    second = add_rdesk(engine, integ, "booked", booked(lead_id, id=2))
    with engine.begin() as conn:  # another live run holds an update of the same lead
        conn.execute(
            update(amocrm_tasks)
            .where(amocrm_tasks.c.webhook_id == first)
            .values(
                status=TASK_IN_PROGRESS,
                run_id="other-run",
                lease_expires_at=now_utc() + timedelta(minutes=5),
            )
        )
    stats = CallStats()
    result = drain(url, engine, stats=stats)
    assert result.tasks_deferred == 1 and stats.calls == 0
    task = tasks_by_inbox(engine)[second]
    assert task["status"] == TASK_NEW and task["attempts"] == 0


# ---- provider errors -------------------------------------------------------------------------


def _blocked_app() -> Starlette:
    async def blocked(_request):
        return JSONResponse(
            {"title": "Forbidden", "detail": "IP blocked", "status": 403}, status_code=403
        )

    paths = ["/api/v4/leads/{lead_id:int}", "/api/v4/leads", "/api/v4/contacts"]
    return Starlette(routes=[Route(p, blocked, methods=["GET", "PATCH", "POST"]) for p in paths])


def test_an_ip_block_stops_the_run_without_spending_tasks(crm, emu):
    url, engine = crm
    healthy = add_amocrm(engine, emu.url, name="healthy")
    lead_id = lead_no()
    emu.create_leads([lead_id])
    with running_server(_blocked_app()) as blocked_url:
        integ = add_amocrm(engine, blocked_url)
        row = add_rdesk(engine, integ, "booked", booked(lead_no()))
        contact = add_contact_event(engine, integ, 8_000_001, "update")
        fine = add_rdesk(engine, healthy, "booked", booked(lead_id))
        with pytest.raises(RunStopped, match="blocked"):
            drain(url, engine)
    tasks = tasks_by_inbox(engine)
    for blocked in (row, contact):
        assert tasks[blocked]["status"] == TASK_NEW
        assert tasks[blocked]["attempts"] == 0 and tasks[blocked]["crashes"] == 0
    # The other integration's work went on.
    assert tasks[fine]["status"] == TASK_DONE
    assert fields_of(emu.lead(lead_id))[1305111] == "700001"
    with engine.connect() as conn:
        attention = conn.execute(
            select(integrations.c.attention).where(integrations.c.id == integ.id)
        ).scalar()
    assert attention and "blocked" in attention


def test_server_errors_are_retried_with_backoff(crm):
    url, engine = crm

    async def broken(_request):
        return JSONResponse({"title": "oops"}, status_code=503)

    app = Starlette(routes=[Route("/api/v4/leads/{lead_id:int}", broken, methods=["GET"])])
    with running_server(app) as broken_url:
        integ = add_amocrm(engine, broken_url)
        row = add_rdesk(engine, integ, "booked", booked(lead_no()))
        result = drain(url, engine)
    assert result.tasks_retrying == 1 and result.leads_failed == 1
    task = tasks_by_inbox(engine)[row]
    assert task["status"] == TASK_NEW and task["next_attempt_at"] is not None
    assert "503" in task["error"] or "Unavailable" in task["error"]


# ---- contacts ------------------------------------------------------------------------------


def test_contacts_upsert_tombstone_and_not_found(crm, emu):
    from provider_emulators.amocrm import contact_email, contact_phone_e164, contact_phone_raw

    url, engine = crm
    integ = add_amocrm(engine, emu.url)
    base = 5_000_000 + uuid.uuid4().int % 1_000_000
    added, updated, deleted, gone = base, base + 1, base + 2, base + 3
    emu.delete_contact(gone)
    rows = {
        added: add_contact_event(engine, integ, added, "add"),
        updated: add_contact_event(engine, integ, updated, "update"),
        deleted: add_contact_event(engine, integ, deleted, "delete"),
        gone: add_contact_event(engine, integ, gone, "update"),
    }
    stats = CallStats()
    result = drain(url, engine, stats=stats)
    assert (result.contacts_upserted, result.contacts_tombstoned) == (2, 1)
    assert result.contacts_not_found == 1 and stats.calls == 1  # one filter[id][] call
    stored = contact_rows(engine)
    for cid in (added, updated):
        row = stored[str(cid)]
        assert row["role"] == "contact" and row["source_entity"] == "amocrm"
        assert row["email"] == contact_email(cid)
        assert row["phone"] == contact_phone_e164(cid) and row["phone"].startswith("+7")
        assert row["phone_raw"] == contact_phone_raw(cid)
        assert row["deleted_at"] is None and row["first_name"]
    assert stored[str(deleted)]["deleted_at"] is not None
    assert str(gone) not in stored
    tasks = tasks_by_inbox(engine)
    assert tasks[rows[added]]["outcome"] == "upserted"
    assert tasks[rows[deleted]]["outcome"] == "tombstoned"
    assert tasks[rows[gone]]["outcome"] == "not found"
    assert tasks[rows[gone]]["status"] == TASK_DONE
    # Deleting a stored contact tombstones it; a restore brings it back.
    add_contact_event(engine, integ, added, "delete")
    drain(url, engine)
    assert contact_rows(engine)[str(added)]["deleted_at"] is not None
    add_contact_event(engine, integ, added, "restore")
    drain(url, engine)
    row = contact_rows(engine)[str(added)]
    assert row["deleted_at"] is None and row["email"] == contact_email(added)


# ---- Dagster ------------------------------------------------------------------------------


def _metadata(result: Any, key: AssetKey) -> dict[str, Any]:
    (event,) = [
        e for e in result.get_asset_materialization_events() if e.materialization.asset_key == key
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_sensor_to_materialization_through_a_real_instance(crm, emu):
    url, engine = crm
    integ = add_amocrm(engine, emu.url)
    lead_id = lead_no()
    emu.create_leads([lead_id])
    add_rdesk(engine, integ, "booked", booked(lead_id, id=1))
    add_rdesk(engine, integ, "booked", booked(lead_id, id=2))
    add_rdesk(engine, integ, "mc", {"id": 3})
    add_contact_event(engine, integ, 7_000_001, "add")
    add_contact_event(engine, integ, 7_000_002, "delete")
    today = now_utc().date().isoformat()
    resources = {"crm_db": CrmDatabase(database_url=url)}
    with DagsterInstance.ephemeral() as instance:
        tick = amocrm_webhook_sensor(build_sensor_context(instance=instance, resources=resources))
        (request,) = tick.run_requests
        assert request.partition_key == today and request.tags["crm/mode"] == "live"
        assert len(tasks_by_inbox(engine)) == 5
        result = (
            build_definitions(url)
            .resolve_job_def("amocrm_sync")
            .execute_in_process(
                instance=instance,
                partition_key=request.partition_key,
                tags=request.tags,
                run_config={"ops": {"amocrm_sync_assets": {"config": {"idle_seconds": 0}}}},
                resources={"amocrm": amocrm_resource(url)},
            )
        )
        assert result.success
        for sensor in (amocrm_webhook_sensor, amocrm_contacts_sensor):
            assert not sensor(
                build_sensor_context(instance=instance, resources=resources)
            ).run_requests
    leads_meta, contacts_meta = _metadata(result, LEADS), _metadata(result, CONTACTS)
    assert leads_meta["leads_updated"] == 1 and leads_meta["leads_skipped_older"] == 1
    assert leads_meta["leads_invalid"] == 1 and leads_meta["leads_not_found"] == 0
    assert leads_meta["mock_leads_created"] == 0 and leads_meta["api_calls"] == 3
    assert leads_meta["dagster/row_count"] == 1
    assert contacts_meta["contacts_upserted"] == 1 and contacts_meta["contacts_tombstoned"] == 1
    assert contacts_meta["dagster/row_count"] == 1  # the tombstone is not a live row
    checks = {(e.asset_key, e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert checks[(LEADS, "no_stuck_tasks")] and checks[(CONTACTS, "no_stuck_tasks")]
    assert checks[(LEADS, "integrations_need_no_attention")]
    assert not checks[(LEADS, "failed_task_share")]  # the invalid element: 1 of 3


def test_an_ip_block_fails_the_run_and_the_attention_check(crm):
    url, engine = crm
    with running_server(_blocked_app()) as blocked_url:
        integ = add_amocrm(engine, blocked_url)
        row = add_rdesk(engine, integ, "booked", booked(lead_no()))
        with DagsterInstance.ephemeral() as instance:
            result = (
                build_definitions(url)
                .resolve_job_def("amocrm_sync")
                .execute_in_process(
                    instance=instance,
                    partition_key=now_utc().date().isoformat(),
                    tags={"crm/mode": "live"},
                    run_config={"ops": {"amocrm_sync_assets": {"config": {"idle_seconds": 0}}}},
                    resources={"amocrm": amocrm_resource(url)},
                    raise_on_error=False,
                )
            )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "blocked" in str(failure.event_specific_data.error)
    assert tasks_by_inbox(engine)[row]["attempts"] == 0
    from orchestration.defs.amocrm.assets import attention_result

    check = attention_result(LEADS, engine)
    assert not check.passed and "blocked" in (check.description or "")


def test_the_daily_schedule_reconciles_yesterday():
    when = datetime(2026, 3, 2, 0, 50, tzinfo=UTC)
    request = amocrm_reconcile_daily(build_schedule_context(scheduled_execution_time=when))
    assert request.partition_key == "2026-03-01"
    assert request.tags["crm/mode"] == "reconcile"
    assert request.run_key == "amocrm-reconcile:2026-03-01"


def test_the_attention_sensor_fails_the_check_while_an_integration_needs_a_person(crm):
    from crm_schema.integrations import set_attention
    from orchestration.defs.amocrm.checks import amocrm_attention_sensor

    url, engine = crm
    integ = add_amocrm(engine)
    resources = {"crm_db": CrmDatabase(database_url=url)}
    with DagsterInstance.ephemeral() as instance:
        tick = amocrm_attention_sensor(build_sensor_context(instance=instance, resources=resources))
        assert "no attention needed" in str(tick)
        with engine.begin() as conn:
            set_attention(conn, integ.id, "needs re-authorization: refresh token refused")
        tick = amocrm_attention_sensor(build_sensor_context(instance=instance, resources=resources))
        assert "needs re-authorization" in str(tick)
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [AssetCheckKey(LEADS, "integrations_need_no_attention")]
        )
        evaluation = record[AssetCheckKey(LEADS, "integrations_need_no_attention")]
        assert evaluation.event.dagster_event.event_specific_data.passed is False


def test_contacts_are_fetched_at_most_250_a_call(crm, emu):
    url, engine = crm
    integ = add_amocrm(engine, emu.url)
    base = 6_000_000 + uuid.uuid4().int % 1_000_000
    with engine.begin() as conn:
        conn.execute(
            insert(amocrm_inbox),
            [
                {
                    "integration_id": integ.id,
                    "source": "contacts",
                    "action": "add",
                    "external_id": str(base + n),
                    "payload": {"contact": {"id": str(base + n)}},
                    "received_at": now_utc(),
                }
                for n in range(260)
            ],
        )
    since = time.time()
    stats = CallStats()
    result = drain(url, engine, stats=stats)
    assert result.contacts_upserted == 260 and stats.calls == 2
    contact_calls = [r for r in emu.requests(since) if r["path"] == "/api/v4/contacts"]
    assert len(contact_calls) == 2  # 250 + 10 ids


def test_a_deleted_mock_lead_ends_3_and_its_mapping_is_dropped(crm, emu):
    url, engine = crm
    integ = add_amocrm(engine, emu.url, settings={"mock_lead_id": True})
    rdesk = lead_no()
    add_rdesk(engine, integ, "booked", booked(rdesk))
    assert drain(url, engine).mock_leads_created == 1
    with engine.connect() as conn:
        mapped = conn.execute(select(amocrm_mock_leads.c.lead_id)).scalar_one()
    httpx.delete(f"{emu.url}/_admin/leads/{mapped}").raise_for_status()
    row = add_rdesk(engine, integ, "booked", booked(rdesk, id=700002))
    result = drain(url, engine)
    assert result.leads_not_found == 1
    task = tasks_by_inbox(engine)[row]
    assert task["status"] == TASK_ERROR and task["error"].startswith("lead not found")
    with engine.connect() as conn:
        assert conn.execute(select(amocrm_mock_leads)).all() == []


def test_concurrent_runs_leave_every_lead_at_its_newest_update(crm, emu):
    import threading

    url, engine = crm
    integ = add_amocrm(engine, emu.url)
    lead_ids = [lead_no() for _ in range(3)]
    emu.create_leads(lead_ids)
    newest: dict[int, tuple[int, int]] = {}  # lead → (inbox row, RDESK id)
    stop = threading.Event()
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            while not stop.is_set():
                drain(url, engine)
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for n in range(1, 31):
            lead_id = lead_ids[n % 3]
            row = add_rdesk(engine, integ, "booked", booked(lead_id, id=n))
            newest[lead_id] = (row, n)
            time.sleep(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not failures
    with engine.begin() as conn:  # deferred tasks may wait a few seconds: make them due
        conn.execute(update(amocrm_tasks).values(next_attempt_at=None))
    drain(url, engine)
    rows = lead_rows(engine)
    for lead_id, (row, rdesk_id) in newest.items():
        assert fields_of(emu.lead(lead_id))[1305111] == str(rdesk_id)
        assert rows[str(lead_id)]["last_update_id"] == row
    assert {t["status"] for t in tasks_by_inbox(engine).values()} == {TASK_DONE}
