"""Shared helpers for the amoCRM sync tests: integrations, inbox rows as the receiver
writes them (RDESK elements, contact webhooks), a drain through the amoCRM loop, and
the amoCRM emulator over real HTTP (skipped while `provider_emulators.amocrm` has none).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, insert, select

from crm_schema.integrations import Integration, add_integration
from crm_schema.providers.amocrm import amocrm_inbox, amocrm_tasks, leads
from crm_schema.tables import contacts
from crm_schema.task_queue import now_utc
from orchestration.amocrm.sync import RunOptions, RunStats, run_amocrm_sync
from orchestration.amocrm.tasks import take_webhooks
from orchestration.defs.amocrm.resources import AmocrmResource
from orchestration.resources.transport import CallStats

TOKEN = "amocrm-test-long-lived-token-0123456789"  # noqa: S105 - a test value
FAST_QUOTA = 500.0  # amoCRM's 7/s would slow tests that are not about it
UNREACHABLE = "http://127.0.0.1:9"


def add_amocrm(
    engine: Engine,
    base_url: str = UNREACHABLE,
    *,
    name: str = "amocrm",
    settings: dict[str, Any] | None = None,
) -> Integration:
    with engine.begin() as conn:
        return add_integration(
            conn,
            provider="amocrm",
            name=name,
            integration_uuid=None,
            api_base_url=base_url,
            credentials={"long_lived_token": TOKEN, "client_secret": "test-client-secret"},
            settings={
                "subdomain": f"t{uuid.uuid4().hex[:10]}",
                "client_id": "demo-client-id",
                "redirect_uri": "http://127.0.0.1:8000/oauth/amocrm/callback",
                **(settings or {}),
            },
            webhook_secret=f"amocrm-test-key-{uuid.uuid4().hex[:12]}",
        )


def add_rdesk(engine: Engine, integration: Integration, source: str, element: Any) -> int:
    """One `amocrm_inbox` row for an RDESK element (the receiver's row contract)."""
    lead_id = element.get("lead_id") if isinstance(element, dict) else None
    rdesk_id = element.get("id") if isinstance(element, dict) else None
    with engine.begin() as conn:
        return conn.execute(
            insert(amocrm_inbox)
            .values(
                integration_id=integration.id,
                source=source,
                external_id=None if lead_id is None else str(lead_id)[:64],
                rdesk_id=None if rdesk_id is None else str(rdesk_id)[:64],
                payload=element,
                received_at=now_utc(),
            )
            .returning(amocrm_inbox.c.id)
        ).scalar_one()


def add_contact_event(
    engine: Engine, integration: Integration, contact_id: int, action: str = "update"
) -> int:
    """One `amocrm_inbox` row for a contact of an amoCRM contact webhook."""
    with engine.begin() as conn:
        return conn.execute(
            insert(amocrm_inbox)
            .values(
                integration_id=integration.id,
                source="contacts",
                action=action,
                external_id=str(contact_id),
                payload={"contact": {"id": str(contact_id)}, "account": {"subdomain": "demo"}},
                received_at=now_utc(),
            )
            .returning(amocrm_inbox.c.id)
        ).scalar_one()


def amocrm_resource(url: str, **kwargs: Any) -> AmocrmResource:
    options = {"quota_per_second": FAST_QUOTA, "max_attempts": 2, "backoff_initial_seconds": 0.01}
    return AmocrmResource(database_url=url, **(options | kwargs))


def drain(
    url: str,
    engine: Engine,
    *,
    mode: str = "live",
    day: date | None = None,
    stats: CallStats | None = None,
    resource: AmocrmResource | None = None,
    run_id: str | None = None,
) -> RunStats:
    """Ingest the inbox, then run the amoCRM loop once."""
    with engine.begin() as conn:
        take_webhooks(conn)
    opts = RunOptions(
        day=day or now_utc().date(),
        run_id=run_id or f"test-{uuid.uuid4().hex[:12]}",
        mode=mode,  # type: ignore[arg-type]
        idle_seconds=0,
        calls_per_second=100,
    )
    return run_amocrm_sync(
        engine, resource or amocrm_resource(url), opts, stats=stats if stats else CallStats()
    )


def tasks_by_inbox(engine: Engine) -> dict[int, dict]:
    with engine.connect() as conn:
        return {r.webhook_id: r._asdict() for r in conn.execute(select(amocrm_tasks))}


def lead_rows(engine: Engine) -> dict[str, dict]:
    with engine.connect() as conn:
        return {r.external_id: r._asdict() for r in conn.execute(select(leads))}


def contact_rows(engine: Engine) -> dict[str, dict]:
    with engine.connect() as conn:
        return {r.external_id: r._asdict() for r in conn.execute(select(contacts))}


def fields_of(lead: dict[str, Any]) -> dict[int, Any]:
    """{field id: first value} of an amoCRM lead."""
    return {
        f["field_id"]: f["values"][0]["value"]
        for f in lead.get("custom_fields_values") or ()
        if f.get("values")
    }


# ---- RDESK elements with every field (PROVIDERS.md shapes) --------------------------------


BOOKED: dict[str, Any] = {
    "id": 700001,
    "lead_id": "23392663",
    "status": "checkin",
    "bookedAt": "2022-09-05T11:22:33.000Z",
    "name": "Иванов Иван Иванович",
    "checkin": "2022-10-01",
    "checkout": "2022-10-15T12:00:00",
    "money": {"total": 120000, "paid": 60000},
    "docNum": 4512,
    "phone": "+79161234567",
    "email": "guest@example.test",
    "extData": {
        "guests": [
            {
                "fio": "Иванов Иван Иванович",
                "birthday": "1980-05-01",
                "roomCategory": "Стандарт 2-местный",
                "ageGroup": "Взрослый",
                "cure": "Кардиология",
                "uid": "g-1",
                "stayCount": 3,
                "billNum": 4512,
            },
            {
                "fio": "Иванова Анна",
                "birthday": "2015-02-03",
                "roomCategory": "Стандарт 2-местный",
                "ageGroup": "Ребёнок 4-13 лет",
                "cure": "Общетерапевтическое",
                "uid": "g-2",
                "stayCount": 1,
                "billNum": "",
            },
        ]
    },
    "billData": [
        {"billNum": "45120", "billSum": "80000", "billPaidSum": "60000"},
        {"billNum": "45121", "billSum": "40000", "billPaidSum": "0"},
    ],
}


def _treatment(
    item_id: int, action: str, status: str, visit: str, pay: bool, price: Any, paid: bool
):
    return {
        "item_id": item_id,
        "action": action,
        "status": status,
        "visit_date": visit,
        "pay": pay,
        "price": price,
        "paid": paid,
    }


MC: dict[str, Any] = {
    "id": 800001,
    "lead_id": 23490001,
    "name": "Петров Пётр",
    "createdAt": "2026-11-30T09:00:00",
    "birthday": "1975-02-03",
    "status": "active",
    "treatments": [
        _treatment(1, "Массаж спины", "set", "2026-12-01 10:30:00", True, 2500, True),
        _treatment(2, "ЛФК", "done", "2026-12-02T08:15:00+00:00", True, 1200.5, False),
        _treatment(3, "Жемчужная ванна", "cancel", "2026-12-03 09:00", False, 0, False),
    ],
    "labs": [
        {
            "lab_item_id": 10,
            "lab": "ЭКГ",
            "status": "done",
            "visit_date": "2026-12-01 08:00:00",
            "pay": True,
            "price": 900,
            "paid": True,
            "treatment_item_id": 1,
        }
    ],
    "packets": [
        {
            "packet_id": 20,
            "packet": "Пакет «Здоровая спина»",
            "pay": True,
            "price": 10000,
            "paid": False,
            "treatments": [
                _treatment(21, "Грязелечение", "set", "2026-12-04 11:00:00", False, 0, False)
            ],
        }
    ],
    "complex": [
        {
            "complex_id": 30,
            "complex": "Комплекс «Кардио»",
            "pay": True,
            "price": 5000,
            "paid": True,
            "treatments": [
                _treatment(31, "Магнитотерапия", "done", "2026-12-05 12:00:00", True, 700, True)
            ],
            "labs": [
                {
                    "lab_item_id": 32,
                    "lab": "Биохимия крови",
                    "status": "set",
                    "visit_date": "2026-12-05 08:30:00",
                    "pay": False,
                    "price": 0,
                    "paid": False,
                    "treatment_item_id": None,
                }
            ],
        }
    ],
}


def by_id(body: dict[str, Any]) -> dict[int, Any]:
    return {
        f["field_id"]: (f["values"][0]["value"] if f["values"] is not None else None)
        for f in body["custom_fields_values"]
    }


# ---- the emulator ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def amocrm_server() -> Iterator[tuple[Any, str]]:
    try:
        from provider_emulators.amocrm import create_app
    except ImportError:  # pragma: no cover - only until the emulator exists
        pytest.skip("the amoCRM emulator is not there yet")
    from provider_emulators.testing import running_server

    app = create_app(long_lived_token=TOKEN, quota=None)
    with running_server(app) as url:
        yield app, url


class Emulator:
    """The admin side of the emulator (a fresh view per test)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def create_leads(self, ids: list[int]) -> None:
        httpx.post(f"{self.url}/_admin/leads", json={"ids": ids}).raise_for_status()

    def create_named(self, names: list[str]) -> list[int]:
        answer = httpx.post(f"{self.url}/_admin/leads", json={"names": names})
        answer.raise_for_status()
        return answer.json()["ids"]

    def lead(self, lead_id: int) -> dict[str, Any] | None:
        answer = httpx.get(f"{self.url}/_admin/leads/{lead_id}")
        return answer.json() if answer.status_code == 200 else None

    def all_leads(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.url}/_admin/leads").json()

    def delete_contact(self, contact_id: int) -> None:
        httpx.delete(f"{self.url}/_admin/contacts/{contact_id}").raise_for_status()

    def requests(self, since: float) -> list[dict[str, Any]]:
        return httpx.get(f"{self.url}/_admin/requests", params={"since": since}).json()
