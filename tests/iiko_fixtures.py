"""Shared helpers for the iiko sync tests: integrations, webhook events written straight
into the inbox, order bodies in the spec's shapes, a drain through the generic engine,
and the iiko emulator over real HTTP (skipped until `provider_emulators.iiko` has one).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from crm_schema.integrations import Integration, add_integration
from crm_schema.providers.iiko import iiko_tasks, orders, webhook_events
from crm_schema.tables import integrations
from crm_schema.task_queue import now_utc
from crm_sync.registry import PROVIDERS
from orchestration.core.sync_engine import SyncOptions, SyncStats, run_sync
from orchestration.defs.iiko.resources import IikoResource
from orchestration.iiko.mapping import ORDER_EVENT_TYPES, SOI_TYPES
from orchestration.iiko.sync import IikoSyncHandler
from orchestration.iiko.tasks import QUEUE, take_webhooks
from orchestration.resources.transport import CallStats

ORG = "7c7b5d2e-0000-4000-8000-00000000a001"
ORG2 = "7c7b5d2e-0000-4000-8000-00000000a002"
API_LOGIN = "iiko-test-api-login-0123456789"
WEBHOOK_TOKEN = "iiko-test-webhook-token-0123456789"
FAST_QUOTA = 500.0  # iiko's 10/s per integration would slow tests that are not about it
UNREACHABLE = "http://127.0.0.1:9"  # for runs that must not call iiko at all

# The seed's SOI example, exactly as given.
SEED_SOI: dict[str, Any] = {
    "type": "CREATE",
    "orderExternalId": "20200831-515",
    "readableNumber": "515",
    "creationStatus": "OK",
    "errorInfo": None,
    "transactionDetails": {"correlationId": "uuid", "organizationId": "org-uuid"},
    "iikoOrderDetails": {
        "iikoOrderId": "iiko-uuid",
        "iikoOrderNumber": "51",
        "restaurantName": "Ресторан №1",
        "orderType": "DELIVERY",
        "orderStatus": "COOKING_STARTED",
        "receivedAt": "2020-08-31T16:23:31+01:00",
        "promisedTime": "2020-08-31T18:08:31+01:00",
        "problem": None,
        "orderAmount": 1520.50,
    },
}


def utc(value: datetime | None) -> datetime | None:
    """A stored timestamp as aware UTC (SQLite hands back naive UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# ---- bodies in the spec's shapes ---------------------------------------------------------


def order_object(status: str = "CookingStarted", amount: Any = 1520.5) -> dict[str, Any]:
    """The spec's `Deliveries.Response.Order.Order` (the fields the mapping reads, and more)."""
    return {
        "phone": "+79990000000",
        "status": status,
        "completeBefore": "2026-03-01 11:30:00.000",
        "whenCreated": "2026-03-01 10:00:00.000",
        "cookingStartTime": "2026-03-01 10:05:00.000",
        "sum": amount,
        "number": 515,
        "guestsInfo": {"count": 1, "splitBetweenPersons": False},
        "items": [],
        "orderType": {
            "id": "5b1508f9-fe5b-d6af-cb8d-043af587d5c2",
            "name": "Доставка курьером",
            "orderServiceType": "DeliveryByCourier",
        },
        "terminalGroupId": "0d3b6e5c-0000-4000-8000-0000000000f1",
        "processedPaymentsSum": 0,
        "courierInfo": {
            "courier": {"id": "c0ffee00-0000-4000-8000-000000000001", "name": "Пётр Петров"},
            "isCourierSelectedManually": True,
        },
        "problem": {"hasProblem": True},
    }


def api_order(
    order_id: str,
    *,
    status: str = "CookingStarted",
    amount: Any = 1520.5,
    timestamp: int = 1772359200000,
    organization_id: str = ORG,
) -> dict[str, Any]:
    """The spec's `OrderInfo`, as deliveries/by_id returns it."""
    return {
        "id": order_id,
        "posId": None,
        "externalNumber": "site-515",
        "organizationId": organization_id,
        "timestamp": timestamp,
        "creationStatus": "Success",
        "errorInfo": None,
        "order": order_object(status, amount),
    }


def cloud_event(
    order_id: str,
    *,
    status: str = "CookingStarted",
    amount: Any = 1520.5,
    event_time: str = "2026-03-01 10:00:00.000",
    event_type: str = "DeliveryOrderUpdate",
    organization_id: str = ORG,
) -> dict[str, Any]:
    """A Cloud API webhook event that carries the whole order."""
    return {
        "eventType": event_type,
        "eventTime": event_time,
        "organizationId": organization_id,
        "correlationId": str(uuid.uuid4()),
        "eventInfo": api_order(
            order_id, status=status, amount=amount, organization_id=organization_id
        ),
    }


def partial_event(
    order_id: str,
    *,
    event_type: str = "OrderChanged",
    event_time: str = "2026-03-01 10:00:00.000",
    organization_id: str | None = ORG,
) -> dict[str, Any]:
    """An order event without the order: it must be completed by deliveries/by_id."""
    event: dict[str, Any] = {
        "eventType": event_type,
        "eventTime": event_time,
        "correlationId": str(uuid.uuid4()),
        "eventInfo": {"id": order_id},
    }
    if organization_id:
        event["organizationId"] = organization_id
    return event


def soi(order_id: str, *, status: str = "COOKING_STARTED", amount: Any = 1520.5) -> dict:
    body = copy.deepcopy(SEED_SOI)
    body["transactionDetails"]["organizationId"] = ORG
    body["iikoOrderDetails"] |= {"iikoOrderId": order_id, "orderStatus": status}
    body["iikoOrderDetails"]["orderAmount"] = amount
    return body


# ---- database ----------------------------------------------------------------------------


def add_iiko(
    engine: Engine,
    base_url: str = UNREACHABLE,
    *,
    name: str = "iiko",
    organizations: tuple[str, ...] = (ORG,),
    settings: dict[str, Any] | None = None,
) -> Integration:
    assert "iiko" in PROVIDERS
    with engine.begin() as conn:
        return add_integration(
            conn,
            provider="iiko",
            name=name,
            integration_uuid=None,
            api_base_url=base_url,
            credentials={"api_login": API_LOGIN},
            settings={"organization_ids": list(organizations), **(settings or {})},
            webhook_secret=f"{WEBHOOK_TOKEN}-{uuid.uuid4().hex[:8]}",
        )


def set_base_url(engine: Engine, integration: Integration, base_url: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            integrations.update()
            .where(integrations.c.id == integration.id)
            .values(api_base_url=base_url)
        )


def add_event(
    engine: Engine,
    integration: Integration,
    payload: dict[str, Any] | None,
    *,
    received_at: datetime | None = None,
    raw_body: str | None = None,
    processing_error: str | None = None,
) -> int:
    """One `webhook_events` row as the receiver writes it (row contract of the plan)."""
    values: dict[str, Any] = {
        "integration_id": integration.id,
        "payload": payload,
        "raw_body": raw_body,
        "processing_error": processing_error,
        "received_at": received_at or now_utc(),
    }
    if payload is not None:
        if payload.get("type") in SOI_TYPES:
            details = payload.get("iikoOrderDetails") or {}
            values |= {
                "event_type": payload["type"],
                "order_external_id": payload.get("orderExternalId"),
                "iiko_order_id": details.get("iikoOrderId"),
                "organization_id": (payload.get("transactionDetails") or {}).get("organizationId"),
            }
        else:
            info = payload.get("eventInfo") or {}
            values |= {
                "event_type": payload.get("eventType"),
                "order_external_id": info.get("externalNumber"),
                "iiko_order_id": info.get("id")
                if payload.get("eventType") in ORDER_EVENT_TYPES
                else None,
                "organization_id": payload.get("organizationId"),
                "correlation_id": payload.get("correlationId"),
            }
    with engine.begin() as conn:
        return conn.execute(
            insert(webhook_events).values(**values).returning(webhook_events.c.id)
        ).scalar_one()


def order_rows(engine: Engine) -> dict[str, dict]:
    """`orders` rows by iiko order id."""
    with engine.connect() as conn:
        return {r.iiko_order_id: r._asdict() for r in conn.execute(select(orders))}


def task_rows(engine: Engine) -> dict[int, dict]:
    """`iiko_tasks` rows by webhook id."""
    with engine.connect() as conn:
        return {r.webhook_id: r._asdict() for r in conn.execute(select(iiko_tasks))}


def event_rows(engine: Engine) -> dict[int, dict]:
    with engine.connect() as conn:
        return {r.id: r._asdict() for r in conn.execute(select(webhook_events))}


def iiko_resource(url: str, **kwargs: Any) -> IikoResource:
    options = {"quota_per_second": FAST_QUOTA, "max_attempts": 2, "backoff_initial_seconds": 0.01}
    return IikoResource(database_url=url, **(options | kwargs))


def drain(
    url: str,
    engine: Engine,
    *,
    mode: str = "live",
    day: date | None = None,
    stats: CallStats | None = None,
    resource: IikoResource | None = None,
) -> SyncStats:
    """Ingest the inbox, then run the generic engine over iiko's tasks once."""
    with engine.begin() as conn:
        take_webhooks(conn)
    resource = resource or iiko_resource(url)
    opts = SyncOptions(
        day=day or now_utc().date(),
        run_id=f"test-{uuid.uuid4().hex[:12]}",
        mode=mode,  # type: ignore[arg-type]
        provider="iiko",
        idle_seconds=0,
        calls_per_second=100,
    )
    stats = stats if stats is not None else CallStats()
    return run_sync(engine, QUEUE, IikoSyncHandler(), resource, opts, stats=stats)


# ---- the emulator ------------------------------------------------------------------------


def emulator_factory() -> Any:
    """`provider_emulators.iiko.create_app`, or skip while the emulator is not there."""
    try:
        from provider_emulators.iiko import create_app  # type: ignore[attr-defined]
    except ImportError:
        pytest.skip("the iiko emulator (provider_emulators.iiko.create_app) is not there yet")
    return create_app


@pytest.fixture(scope="module")
def iiko_server() -> Iterator[tuple[Any, str]]:
    from provider_emulators.testing import running_server

    create_app = emulator_factory()
    app = create_app(api_login=API_LOGIN, command_delay=0.05)
    with running_server(app) as url:
        yield app, url
