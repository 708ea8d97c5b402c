"""iiko order sync on SQLite and PostgreSQL: webhook events → tasks → `orders`.

Events holding the whole order are applied from their payload without an API call;
the others are completed by deliveries/by_id (≤ 200 ids a call) against the iiko
emulator over real HTTP; an older event or pull never overwrites a newer one; an
event that cannot be applied is marked and retried; reconcile finds lost webhooks;
the access token is fetched once for every client and renewed once on 401.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from dagster import AssetKey, DagsterInstance, build_schedule_context, build_sensor_context
from sqlalchemy import select, update

from crm_schema.integrations import get_integration, update_integration
from crm_schema.providers.iiko import iiko_tasks, webhook_events
from crm_schema.tables import api_call_log, provider_tokens
from crm_schema.task_queue import now_utc
from orchestration.db import dispose_engines, shared_engine
from orchestration.definitions import build_definitions
from orchestration.defs.iiko.schedules import iiko_reconcile_daily
from orchestration.defs.iiko.sensors import iiko_webhook_sensor
from orchestration.iiko.sync import store_orders
from orchestration.iiko.tasks import take_webhooks
from orchestration.resources.auth import NewToken, TokenStore
from orchestration.resources.database import CrmDatabase
from orchestration.resources.errors import ProviderAuthError, ProviderRequestError
from orchestration.resources.transport import CallStats
from provider_emulators.testing import running_server
from tests.iiko_fixtures import (
    API_LOGIN,
    ORG,
    ORG2,
    SEED_SOI,
    UNREACHABLE,
    add_event,
    add_iiko,
    api_order,
    cloud_event,
    drain,
    event_rows,
    iiko_resource,
    iiko_server,
    order_rows,
    partial_event,
    soi,
    task_rows,
    utc,
)
from webhook_receiver.app import create_app as create_receiver

__all__ = ["iiko_server"]  # the module-scoped emulator fixture, bound here for pytest

ORDERS = AssetKey(["iiko", "orders"])


def get_integration_by_id(engine: Any, integration_id: int) -> Any:
    with engine.connect() as conn:
        return get_integration(conn, integration_id)


def oid() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def crm(database_url: str):
    """(url, engine): the shared engine the resource's token store uses too."""
    engine = shared_engine(database_url)
    yield database_url, engine
    dispose_engines()


# ---- events applied from their payload ---------------------------------------------------


def test_full_order_events_are_stored_without_an_api_call(crm):
    url, engine = crm
    integ = add_iiko(engine, UNREACHABLE)  # any call would fail the run's tasks
    cloud_id, soi_id, error_id = oid(), oid(), oid()
    cloud = add_event(engine, integ, cloud_event(cloud_id, status="ON_WAY"))
    seed = add_event(engine, integ, soi(soi_id))
    failed_creation = {
        "eventType": "DeliveryOrderError",
        "eventTime": "2026-03-01 10:00:00.000",
        "organizationId": ORG,
        "correlationId": str(uuid.uuid4()),
        "eventInfo": {
            "id": error_id,
            "organizationId": ORG,
            "timestamp": 1,
            "creationStatus": "Error",
            "errorInfo": {"code": "Timeout", "message": "Terminal did not answer"},
            "order": None,
        },
    }
    error = add_event(engine, integ, failed_creation)
    stop_list = add_event(
        engine,
        integ,
        {
            "eventType": "StopListUpdate",
            "organizationId": ORG,
            "eventInfo": {"terminalGroupsStopListsUpdates": []},
        },
    )
    shift = add_event(
        engine, integ, {"eventType": "PersonalShift", "organizationId": ORG, "eventInfo": {}}
    )
    broken = add_event(
        engine,
        integ,
        None,
        raw_body="[{not json",
        processing_error="body is not valid JSON: Expecting property name",
    )
    stats = CallStats()
    result = drain(url, engine, stats=stats)

    assert stats.calls == 0
    assert result.entities["order"].from_payload == 3
    assert result.extra["orders_from_events"] == 3 and result.extra.get("orders_from_api", 0) == 0
    stored = order_rows(engine)
    assert set(stored) == {cloud_id, soi_id, error_id}
    assert stored[cloud_id]["status"] == "OnWay" and stored[cloud_id]["amount_kopecks"] == 152050
    assert stored[cloud_id]["source_event_id"] == cloud
    assert stored[soi_id]["status"] == "CookingStarted"
    assert stored[soi_id]["amount_kopecks"] == 152050
    assert stored[soi_id]["external_order_id"] == "20200831-515"
    assert stored[soi_id]["restaurant_name"] == "Ресторан №1"
    assert stored[error_id]["creation_status"] == "Error"
    assert stored[error_id]["error_info"] == "Timeout: Terminal did not answer"
    assert stored[error_id]["status"] is None

    tasks = task_rows(engine)
    for webhook in (cloud, seed, error):
        assert tasks[webhook]["status"] == 2 and tasks[webhook]["entity"] == "order"
        assert tasks[webhook]["external_ids"].startswith(f'["{ORG}:')
    for webhook, kind in ((stop_list, "StopListUpdate"), (shift, "PersonalShift")):
        assert tasks[webhook]["status"] == 2 and tasks[webhook]["error"] is None
        assert tasks[webhook]["outcome"] == f"kept: {kind} events are stored, not synced to orders"
    assert tasks[broken]["status"] == 3
    assert tasks[broken]["error"] == (
        "webhook not applied: body is not valid JSON: Expecting property name"
    )
    events = event_rows(engine)
    assert all(e["processed_at"] is not None for e in events.values())
    assert events[cloud]["processing_error"] is None


def test_webhooks_through_the_receiver_to_orders(crm, iiko_server):
    app, base = iiko_server
    _reset(app, base)
    url, engine = crm
    integ = add_iiko(engine, base)
    full, partial = oid(), oid()
    cloud = [
        cloud_event(full, status="COOKING_STARTED", amount=1520.5),
        partial_event(partial, event_type="OrderChanged"),
        {
            "eventType": "StopListUpdate",
            "eventTime": "2026-03-01 10:00:00.000",
            "organizationId": ORG,
            "correlationId": str(uuid.uuid4()),
            "eventInfo": {},
        },
    ]
    with running_server(create_receiver(url)) as receiver, httpx.Client(timeout=10) as http:
        auth = {"Authorization": f"Bearer {integ.webhook_secret}"}
        for body in (SEED_SOI, cloud):
            answer = http.post(f"{receiver}/api/v1/webhooks/iiko", json=body, headers=auth)
            assert answer.status_code == 200, answer.text
        answer = http.post(f"{receiver}/api/v1/webhooks/iiko", content=b"{oops", headers=auth)
        assert answer.json()["status"] == "ignored"
    stats = CallStats()
    result = drain(url, engine, stats=stats)
    stored = order_rows(engine)
    assert set(stored) == {"iiko-uuid", full, partial}
    assert stored["iiko-uuid"]["amount_kopecks"] == 152050
    assert stored["iiko-uuid"]["status"] == stored[full]["status"] == "CookingStarted"
    assert result.entities["order"].from_payload == 2
    assert len(_requests(base, "/api/1/deliveries/by_id")) == 1  # the partial event only
    statuses = sorted((t["command"], t["status"]) for t in task_rows(engine).values())
    assert statuses == [
        ("CREATE", 2),
        ("DeliveryOrderUpdate", 2),
        ("OrderChanged", 2),
        ("StopListUpdate", 2),
        ("unparseable", 3),
    ]


def test_the_seed_soi_example_syncs_as_given(crm):
    url, engine = crm
    integ = add_iiko(engine)
    add_event(engine, integ, SEED_SOI)
    drain(url, engine)
    row = order_rows(engine)["iiko-uuid"]
    assert (row["status"], row["amount_kopecks"], row["readable_number"]) == (
        "CookingStarted",
        152050,
        "515",
    )
    assert row["organization_id"] == "org-uuid" and row["order_type"] == "DELIVERY"


def test_ingesting_twice_never_duplicates_a_task(crm):
    url, engine = crm
    integ = add_iiko(engine)
    add_event(engine, integ, cloud_event(oid()))
    with engine.begin() as conn:
        assert take_webhooks(conn)[0] == 1
    with engine.begin() as conn:
        conn.execute(update(webhook_events).values(processed_at=None))
    with engine.begin() as conn:
        assert take_webhooks(conn)[0] == 0
    assert len(task_rows(engine)) == 1


def test_an_unknown_status_is_kept_and_counted(crm):
    url, engine = crm
    integ = add_iiko(engine)
    order = oid()
    add_event(engine, integ, cloud_event(order, status="TELEPORTED"))
    add_event(engine, integ, cloud_event(oid(), status="COOKING_COMPLETED"))
    result = drain(url, engine)
    assert result.extra["orders_unknown_status"] == 1
    assert order_rows(engine)[order]["status"] == "TELEPORTED"


# ---- arbitration --------------------------------------------------------------------------


@pytest.mark.parametrize("newer_first", [True, False], ids=["newer-first", "older-first"])
def test_an_older_event_never_overwrites_a_newer_one(crm, newer_first):
    url, engine = crm
    integ = add_iiko(engine)
    order = oid()
    newer = cloud_event(order, status="Delivered", event_time="2026-03-01 10:05:00.001")
    older = cloud_event(order, status="OnWay", amount=99.9, event_time="2026-03-01 10:05:00.000")
    for event in (newer, older) if newer_first else (older, newer):
        add_event(engine, integ, event)
        drain(url, engine)
    row = order_rows(engine)[order]
    assert row["status"] == "Delivered" and row["amount_kopecks"] == 152050
    assert row["raw"]["eventTime"] == "2026-03-01 10:05:00.001"
    assert all(t["status"] == 2 for t in task_rows(engine).values())


def test_events_of_one_order_in_one_run_keep_the_newest(crm):
    url, engine = crm
    integ = add_iiko(engine)
    order = oid()
    add_event(
        engine, integ, cloud_event(order, status="Closed", event_time="2026-03-01 12:00:00.000")
    )
    add_event(
        engine, integ, cloud_event(order, status="OnWay", event_time="2026-03-01 11:00:00.000")
    )
    drain(url, engine)
    assert order_rows(engine)[order]["status"] == "Closed"


@pytest.mark.parametrize("pull_first", [True, False], ids=["pull-first", "event-first"])
@pytest.mark.parametrize("event_newer", [True, False], ids=["event-newer", "pull-newer"])
def test_webhook_push_and_api_pull_are_arbitrated(crm, pull_first, event_newer):
    url, engine = crm
    integ = add_iiko(engine)
    order = oid()
    # The pull's timestamp is 2026-03-01 10:00:00 UTC; the event is a second after or before.
    event_time = "2026-03-01 10:00:01.000" if event_newer else "2026-03-01 09:59:59.000"
    pull = api_order(order, status="Closed", amount=10, timestamp=1772359200000)

    def pulled() -> None:
        with engine.begin() as conn:
            store_orders(conn, integ.id, [(pull, None)])

    def pushed() -> None:
        add_event(engine, integ, cloud_event(order, status="Cancelled", event_time=event_time))
        drain(url, engine)

    for step in (pulled, pushed) if pull_first else (pushed, pulled):
        step()
    row = order_rows(engine)[order]
    if event_newer:
        assert (row["status"], row["amount_kopecks"]) == ("Cancelled", 152050)
        assert row["source_event_id"] is not None
    else:
        assert (row["status"], row["amount_kopecks"]) == ("Closed", 1000)
        assert row["source_event_id"] is None


# ---- events that cannot be applied --------------------------------------------------------


def test_an_event_that_cannot_be_applied_is_marked_retried_and_cleared(crm):
    url, engine = crm
    integ = add_iiko(engine)
    order = oid()
    bad = cloud_event(order, amount="a lot")
    webhook = add_event(engine, integ, bad)
    good = add_event(engine, integ, cloud_event(oid()))
    result = drain(url, engine)

    event = event_rows(engine)[webhook]
    assert "cannot map the order" in event["processing_error"]
    assert "amount is not a number" in event["processing_error"]
    task = task_rows(engine)[webhook]
    assert task["status"] == 0 and task["attempts"] == 1  # waiting for its retry
    assert utc(task["next_attempt_at"]) > now_utc()
    assert result.entities["order"].tasks_retrying == 1
    assert task_rows(engine)[good]["status"] == 2  # the rest of the batch stands
    assert order not in order_rows(engine)

    # The payload is mended (e.g. a fixed receiver re-stored it); the retry applies it.
    fixed = cloud_event(order, amount="12.30")
    with engine.begin() as conn:
        conn.execute(
            update(webhook_events).where(webhook_events.c.id == webhook).values(payload=fixed)
        )
        conn.execute(update(iiko_tasks).values(next_attempt_at=now_utc() - timedelta(seconds=1)))
    drain(url, engine)
    assert event_rows(engine)[webhook]["processing_error"] is None
    assert task_rows(engine)[webhook]["status"] == 2
    assert order_rows(engine)[order]["amount_kopecks"] == 1230


def test_an_order_event_without_an_order_id_ends_failed(crm):
    url, engine = crm
    integ = add_iiko(engine)
    webhook = add_event(engine, integ, {"eventType": "DeliveryOrderUpdate", "eventInfo": {}})
    drain(url, engine)
    task = task_rows(engine)[webhook]
    assert (
        task["status"] == 3 and task["error"] == "DeliveryOrderUpdate event names no iiko order id"
    )


# ---- over HTTP, against the iiko emulator ---------------------------------------------------


def _admin(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=10)


def _requests(base_url: str, path: str) -> list[dict[str, Any]]:
    with _admin(base_url) as admin:
        answer = admin.get("/_admin/requests", params={"path": path})
        answer.raise_for_status()
        return sorted(answer.json(), key=lambda e: e.get("seq", 0))


def _reset(app: Any, base_url: str) -> None:
    """The module's emulator with no stored orders and an empty request log."""
    app.state.emulator.log.clear()
    with _admin(base_url) as admin:
        admin.delete("/_admin/orders").raise_for_status()


def test_partial_events_are_fetched_by_id_in_batches_of_200(crm, iiko_server):
    app, base = iiko_server
    _reset(app, base)
    url, engine = crm
    integ = add_iiko(engine, base)
    ids = [oid() for _ in range(250)]
    for order in ids:
        add_event(engine, integ, partial_event(order))
    stats = CallStats()
    result = drain(url, engine, stats=stats)

    stored = order_rows(engine)
    assert set(stored) == set(ids)
    assert all(row["source_event_id"] is None and row["source_version"] for row in stored.values())
    calls = _requests(base, "/api/1/deliveries/by_id")
    sizes = sorted(len(c["ids"]) for c in calls)
    assert sizes == [50, 200]
    assert result.entities["order"].from_payload == 0
    assert result.extra["orders_from_api"] == 250
    assert all(t["status"] == 2 for t in task_rows(engine).values())


def test_an_event_without_its_organization_asks_the_integrations_organizations(crm, iiko_server):
    app, base = iiko_server
    _reset(app, base)
    url, engine = crm
    single = add_iiko(engine, base, name="single")
    several = add_iiko(engine, base, name="several", organizations=(ORG2, ORG))
    first, second = oid(), oid()
    one = add_event(engine, single, partial_event(first, organization_id=None))
    two = add_event(engine, several, partial_event(second, organization_id=None))
    drain(url, engine)
    tasks = task_rows(engine)
    assert tasks[one]["external_ids"] == f'["{ORG}:{first}"]'  # its only organization
    assert tasks[two]["external_ids"] == f'[":{second}"]'  # unknown among several
    assert tasks[one]["status"] == tasks[two]["status"] == 2
    stored = order_rows(engine)
    assert stored[first]["organization_id"] == ORG
    assert stored[second]["organization_id"] == ORG2  # the first one that has it


def test_the_token_is_fetched_once_shared_and_renewed_once_on_401(crm, iiko_server):
    app, base = iiko_server
    _reset(app, base)
    url, engine = crm
    integ = add_iiko(engine, base)
    resource = iiko_resource(url)
    with resource.client_for(integ) as first, resource.client_for(integ) as second:
        first.by_id(ORG, [oid()])
        second.by_id(ORG, [oid()])
    assert len(_requests(base, "/api/1/access_token")) == 1
    # iiko forgot the token (it expired early): one 401, one new token, the call succeeds.
    TokenStore(engine, integ.id, "access").seed(NewToken("revoked-token-0123456789", 3600))
    with resource.client_for(integ) as third:
        assert len(third.by_id(ORG, [oid()])) == 1
    assert len(_requests(base, "/api/1/access_token")) == 2
    with engine.connect() as conn:
        assert conn.execute(provider_tokens.select()).first().version >= 2


def test_an_order_iiko_does_not_return_marks_its_event_until_a_retry_finds_it(crm, iiko_server):
    app, base = iiko_server
    _reset(app, base)
    url, engine = crm
    integ = add_iiko(engine, base)
    lost, found = oid(), oid()
    with _admin(base) as admin:
        admin.delete(f"/_admin/orders/{lost}").raise_for_status()
    lost_event = add_event(engine, integ, partial_event(lost, event_type="DeliveryOrderChanged"))
    found_event = add_event(engine, integ, partial_event(found))
    drain(url, engine)

    assert set(order_rows(engine)) == {found}
    error = event_rows(engine)[lost_event]["processing_error"]
    assert error == f"{ORG}:{lost}: not found at the provider"
    task = task_rows(engine)[lost_event]
    assert task["status"] == 0 and task["error"] == error and task["next_attempt_at"]
    assert task_rows(engine)[found_event]["status"] == 2

    # iiko has the order again: the retry stores it and clears the mark.
    _create_orders(base, ORG, now_utc().date(), ids=[lost])
    with engine.begin() as conn:
        conn.execute(update(iiko_tasks).values(next_attempt_at=now_utc() - timedelta(seconds=1)))
    drain(url, engine)
    assert lost in order_rows(engine)
    assert event_rows(engine)[lost_event]["processing_error"] is None
    assert task_rows(engine)[lost_event]["status"] == 2


def test_iiko_errors_are_typed_clear_and_never_show_secrets(crm, iiko_server):
    app, base = iiko_server
    _reset(app, base)
    url, engine = crm
    integ = add_iiko(engine, base)
    resource = iiko_resource(url)
    with resource.client_for(integ) as client:
        with pytest.raises(ProviderRequestError) as refused:
            client.call("deliveries/by_id", {"organizationId": "not-a-uuid", "orderIds": []})
        token = TokenStore(engine, integ.id, "access").get().access_token
        # 429 with Retry-After: waited, then retried (the base client honours it).
        with _admin(base) as admin:
            admin.put(
                "/_admin/faults", json={"force_429": 1, "retry_after": "0.3"}
            ).raise_for_status()
        started = time.monotonic()
        try:
            assert len(client.by_id(ORG, [oid()])) == 1
        finally:
            with _admin(base) as admin:
                admin.put("/_admin/faults", json={"force_429": 0}).raise_for_status()
        assert time.monotonic() - started >= 0.3 and client.stats.http_429 == 1
    assert refused.value.status_code == 400 and "request rejected (400)" in str(refused.value)
    assert "organizationId" in str(refused.value)  # iiko's errorDescription, not a bare code
    wrong = add_iiko(engine, base, name="wrong")
    with engine.begin() as conn:
        update_integration(conn, wrong.id, credentials={"api_login": "wrong-login-0123456789"})
    with (
        resource.client_for(get_integration_by_id(engine, wrong.id)) as client,
        pytest.raises(ProviderAuthError) as denied,
    ):
        client.by_id(ORG, [oid()])
    assert "wrong-login" not in str(denied.value)
    with engine.connect() as conn:
        logged = repr([tuple(r) for r in conn.execute(select(api_call_log))])
    assert API_LOGIN not in logged and "wrong-login-0123456789" not in logged
    assert token and token not in logged


@pytest.mark.parametrize(
    "tags",
    [{"crm/mode": "reconcile"}, {"dagster/backfill": "bf-1"}],
    ids=["reconcile", "backfill"],
)
def test_reconcile_finds_orders_whose_webhooks_were_lost(crm, iiko_server, tags):
    app, base = iiko_server
    _reset(app, base)
    url, engine = crm
    integ = add_iiko(engine, base, organizations=(ORG, ORG2))
    other = add_iiko(engine, base, name="other", organizations=(ORG2,))
    day = now_utc().date() - timedelta(days=1)
    delivered, lost = _create_orders(base, ORG, day, count=2)
    (lost_too,) = _create_orders(base, ORG2, day, count=1)
    # One order's webhook did arrive (the event as iiko sent it, newer than the pull).
    with _admin(base) as admin:
        info = admin.get(f"/_admin/orders/{delivered}").json()
    event = {
        "eventType": "DeliveryOrderUpdate",
        "eventTime": "2100-01-01 00:00:00.000",
        "organizationId": ORG,
        "correlationId": str(uuid.uuid4()),
        "eventInfo": info | {"order": info["order"] | {"status": "Closed"}},
    }
    add_event(engine, integ, event)
    drain(url, engine)
    with DagsterInstance.ephemeral() as instance:
        result = (
            build_definitions(url)
            .resolve_job_def("iiko_sync")
            .execute_in_process(
                instance=instance,
                partition_key=day.isoformat(),
                tags=tags | {"crm/integration": str(integ.id)},
                run_config={"ops": {"iiko_sync_assets": {"config": {"idle_seconds": 0}}}},
                resources={"iiko": iiko_resource(url)},
            )
        )
    assert result.success
    stored = order_rows(engine)
    assert {delivered, lost, lost_too} <= set(stored)
    assert {r["integration_id"] for r in stored.values()} == {integ.id}  # narrowed
    assert stored[delivered]["status"] == "Closed"  # the newer event stands
    assert stored[lost]["source_event_id"] is None and stored[lost]["source_version"]
    metadata = _metadata(result)
    assert metadata["orders_found_by_reconcile"] == 2
    assert metadata["orders_listed_by_reconcile"] == 3
    assert metadata["reconcile_errors"] == 0
    assert str(other.id) not in metadata["reconcile_details"]
    (listing,) = _requests(base, "/api/1/deliveries/by_delivery_date_and_status")
    assert listing["status"] == 200


def _create_orders(
    base_url: str, organization_id: str, day: Any, *, count: int | None = None, ids: Any = None
) -> list[str]:
    """Orders made at the emulator without any webhook (its admin API)."""
    body: dict[str, Any] = {"organization_id": organization_id, "delivery_date": day.isoformat()}
    if ids is not None:
        body["orders"] = [{"id": i} for i in ids]
    else:
        body["count"] = count
    with _admin(base_url) as admin:
        answer = admin.post("/_admin/orders", json=body)
        answer.raise_for_status()
    return answer.json()["ids"]


def _metadata(result: Any) -> dict[str, Any]:
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == ORDERS
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


# ---- Dagster ------------------------------------------------------------------------------


def test_sensor_to_materialization_through_a_real_instance(crm):
    url, engine = crm
    integ = add_iiko(engine, UNREACHABLE)
    add_event(engine, integ, cloud_event(oid(), status="TELEPORTED"))
    add_event(engine, integ, soi(oid()))
    today = now_utc().date().isoformat()
    with DagsterInstance.ephemeral() as instance:
        context = build_sensor_context(
            instance=instance, resources={"crm_db": CrmDatabase(database_url=url)}
        )
        tick = iiko_webhook_sensor(context)
        (request,) = tick.run_requests
        assert request.partition_key == today and request.tags["crm/mode"] == "live"
        assert len(task_rows(engine)) == 2
        result = (
            build_definitions(url)
            .resolve_job_def("iiko_sync")
            .execute_in_process(
                instance=instance,
                partition_key=request.partition_key,
                tags=request.tags,
                run_config={"ops": {"iiko_sync_assets": {"config": {"idle_seconds": 0}}}},
                resources={"iiko": iiko_resource(url)},
            )
        )
        assert result.success
        # Nothing is due any more: the next tick requests no run.
        assert not iiko_webhook_sensor(
            build_sensor_context(
                instance=instance, resources={"crm_db": CrmDatabase(database_url=url)}
            )
        ).run_requests
    metadata = _metadata(result)
    assert metadata["orders_upserted"] == 2
    assert metadata["events_applied_from_payload"] == 2
    assert metadata["orders_fetched_by_id"] == 0
    assert metadata["orders_unknown_status"] == 1
    assert metadata["api_calls"] == 0
    assert metadata["tasks_done"] == 2
    assert metadata["dagster/row_count"] == 2
    assert "orders_found_by_reconcile" not in metadata  # live runs do not sweep
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"no_stuck_tasks": True, "failed_task_share": True}


def test_the_daily_schedule_reconciles_yesterday():
    when = datetime(2026, 3, 2, 0, 45, tzinfo=UTC)
    request = iiko_reconcile_daily(build_schedule_context(scheduled_execution_time=when))
    assert request.partition_key == "2026-03-01"
    assert (
        request.tags["crm/mode"] == "reconcile" and request.run_key == "iiko-reconcile:2026-03-01"
    )
