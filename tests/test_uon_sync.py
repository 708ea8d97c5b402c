"""U-ON in Dagster on SQLite and PostgreSQL, against the U-ON emulator over real HTTP:
call events → `uon_calls` (newest event wins) and enrichment by unique numbers (one
`user/phone` per number, the shared cache first), U-ON's client and request webhooks,
the call log outbox (never a lead twice), 404 as empty, 429 backoff, the daily
requests reconcile in pages of 100, and runs through a real Dagster instance."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from dagster import DagsterInstance, build_schedule_context, build_sensor_context
from sqlalchemy import Engine, insert, select, update

from crm_schema.providers.uon import (
    customers,
    uon_calls,
    uon_inbox,
    uon_phone_cache,
    uon_requests,
    uon_tasks,
)
from crm_schema.providers.uon_customers import read_cache, write_cache
from crm_schema.tables import TASK_DONE, api_call_log, rate_limit_state
from crm_schema.task_queue import now_utc
from crm_sync.phones import normalize_phone
from crm_sync.providers.uon import UonSettings
from orchestration.core.sync_engine import SyncOptions, SyncStats, run_sync
from orchestration.db import dispose_engines, shared_engine
from orchestration.definitions import build_definitions
from orchestration.defs.uon.call_log import uon_call_log_sensor
from orchestration.defs.uon.resources import UonResource
from orchestration.defs.uon.schedules import uon_cache_purge_daily, uon_reconcile_daily
from orchestration.defs.uon.sensors import uon_inbox_sensor
from orchestration.resources.database import CrmDatabase
from orchestration.resources.errors import ProviderAuthError
from orchestration.resources.transport import CallStats
from orchestration.uon.call_log import UNKNOWN, CallLogOptions, send_call_logs
from orchestration.uon.sync import UonSyncHandler, apply_call_events, sweep_requests
from orchestration.uon.tasks import QUEUE, STORED, take_webhooks
from provider_emulators.testing import running_server
from provider_emulators.uon import create_app
from tests.uon_fixtures import API_KEY, add_uon

FAST_QUOTA = 500.0  # U-ON's 8/s would slow tests that are not about it


@pytest.fixture(scope="module")
def uon_server():
    with running_server(create_app(api_keys=(API_KEY,), quota=None)) as url:
        yield url


class Emulator:
    """The emulator's admin API."""

    def __init__(self, url: str) -> None:
        self.url = url

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(method, f"{self.url}/_admin/{path}", json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def calls(self, prefix: str, since: float) -> list[dict[str, Any]]:
        return [
            e for e in self.admin("GET", f"requests?since={since}") if e["path"].startswith(prefix)
        ]

    def leads(self) -> list[dict[str, Any]]:
        return self.admin("GET", "leads")


@pytest.fixture
def emu(uon_server) -> Emulator:
    emulator = Emulator(uon_server)
    emulator.admin("DELETE", "state")
    emulator.admin("DELETE", "faults")
    return emulator


@pytest.fixture
def crm(database_url: str):
    engine = shared_engine(database_url)
    yield database_url, engine
    dispose_engines()


def number() -> str:
    """A valid BY mobile number no other test uses; its last digit decides known (even)."""
    while True:
        candidate = f"+37529{uuid.uuid4().int % 10_000_000:07d}"
        if normalize_phone(candidate[:-1] + "0", "BY") and normalize_phone(candidate, "BY"):
            return candidate


def known_number() -> str:
    n = number()
    return n[:-1] + str(int(n[-1]) // 2 * 2)


def unknown_number() -> str:
    n = number()
    return n[:-1] + str(int(n[-1]) // 2 * 2 + 1)


def resource(url: str, **kwargs: Any) -> UonResource:
    options = {
        "quota_per_second": FAST_QUOTA,
        "max_attempts": 3,
        "backoff_initial_seconds": 0.01,
        "penalty_seconds": 0.3,
    }
    return UonResource(database_url=url, **(options | kwargs))


def event(
    engine: Engine,
    integration: Any,
    kind: str,
    call_id: str,
    phone: str,
    **fields: Any,
) -> int:
    """One telephony `uon_inbox` row as the receiver writes it."""
    raw = {"event": kind, "call_id": call_id, "phone": phone, **fields}
    with engine.begin() as conn:
        return conn.execute(
            insert(uon_inbox)
            .values(
                integration_id=integration.id,
                source="telephony",
                event=kind,
                # Older rows may lack the call id as external_id: it is in the payload.
                external_id=call_id if len(call_id) <= 64 else None,
                phone=phone,
                payload={"raw": raw, **raw},
                received_at=now_utc(),
            )
            .returning(uon_inbox.c.id)
        ).scalar_one()


def webhook(engine: Engine, integration: Any, type_id: int, **fields: Any) -> int:
    """One U-ON webhook `uon_inbox` row (values as strings, as U-ON sends them)."""
    raw = {"type_id": str(type_id), **{k: str(v) for k, v in fields.items()}}
    external = fields.get("client_id") or fields.get("request_id") or fields.get("lead_id")
    with engine.begin() as conn:
        return conn.execute(
            insert(uon_inbox)
            .values(
                integration_id=integration.id,
                source="uon",
                event=str(type_id),
                external_id=None if external is None else str(external),
                phone=fields.get("phone"),
                payload={"raw": raw, **{k: v for k, v in raw.items()}, "type_id": type_id},
                received_at=now_utc(),
            )
            .returning(uon_inbox.c.id)
        ).scalar_one()


def drain(
    url: str,
    engine: Engine,
    *,
    mode: str = "live",
    day: date | None = None,
    stats: CallStats | None = None,
    res: UonResource | None = None,
) -> SyncStats:
    with engine.begin() as conn:
        take_webhooks(conn)
    opts = SyncOptions(
        day=day or now_utc().date(),
        run_id=f"test-{uuid.uuid4().hex[:12]}",
        mode=mode,  # type: ignore[arg-type]
        provider="uon",
        idle_seconds=0,
        calls_per_second=100,
    )
    return run_sync(engine, QUEUE, UonSyncHandler(), res or resource(url), opts, stats=stats)


def calls_of(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        return {r.call_id: r._asdict() for r in conn.execute(select(uon_calls))}


def customer_rows(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        return {r.external_id: r._asdict() for r in conn.execute(select(customers))}


def request_rows(engine: Engine) -> dict[tuple[str, str], dict[str, Any]]:
    with engine.connect() as conn:
        return {(r.kind, r.external_id): r._asdict() for r in conn.execute(select(uon_requests))}


def cached(engine: Engine, integration: Any, phone: str):
    with engine.connect() as conn:
        return read_cache(conn, integration.id, phone)


def tasks_by_inbox(engine: Engine) -> dict[tuple[int, int], dict[str, Any]]:
    with engine.connect() as conn:
        return {(r.webhook_id, r.part): r._asdict() for r in conn.execute(select(uon_tasks))}


# ---- calls and enrichment ----------------------------------------------------------------


def test_call_events_become_calls_and_numbers_are_looked_up_once_each(crm, emu):
    url, engine = crm
    integ = add_uon(engine, emu.url, settings={"log_calls": True})
    known, unknown = known_number(), unknown_number()
    since = time.time()
    for call in ("a", "b", "c"):  # three calls from one known number
        event(engine, integ, "start", f"{call}-1", known, direction="in", extension="151")
        event(engine, integ, "bridge", f"{call}-1", known, direction="in", extension="151")
        event(
            engine,
            integ,
            "hangup",
            f"{call}-1",
            known,
            direction="in",
            extension="151",
            duration=65,
            status="answered",
        )
    event(engine, integ, "start", "d-1", unknown, direction="incoming", extension="152")
    event(engine, integ, "start", "e-1", unknown, direction="in")
    stats = CallStats()
    result = drain(url, engine, stats=stats)
    lookups = emu.calls("/user/phone/", since)
    # One U-ON call per unique number, not per event (11 events, 2 numbers).
    assert sorted(e["path"] for e in lookups) == sorted(
        f"/user/phone/{n[1:]}.json" for n in (known, unknown)
    )
    assert stats.calls == 2
    assert result.extra["phones_looked_up"] == 2 and result.extra["phones_found"] == 1
    assert result.entities["call"].tasks_done == 11 and result.entities["call"].from_payload
    calls = calls_of(engine)
    a = calls["a-1"]
    assert a["direction"] == "in" and a["phone"] == known and a["extension"] == "151"
    assert a["started_at"] is not None and a["answered_at"] is not None
    assert a["ended_at"] is not None and a["duration_seconds"] == 65
    assert a["call_status"] == "answered" and a["log_status"] == "pending"
    assert a["customer_external_id"] == known[1:]  # the emulator's u_id: the digits
    assert calls["d-1"]["direction"] == "in" and calls["d-1"]["log_status"] is None
    assert calls["d-1"]["customer_external_id"] is None
    stored = customer_rows(engine)[known[1:]]
    assert stored["phone"] == known and stored["name"] and stored["deleted_at"] is None
    hit, miss = cached(engine, integ, known), cached(engine, integ, unknown)
    assert hit.found and hit.profile["uon_id"] == known[1:]
    assert not miss.found and miss.profile is None
    settings = UonSettings.model_validate(integ.settings)
    assert miss.expires_at - miss.fetched_at == timedelta(
        seconds=settings.negative_cache_ttl_seconds
    )
    assert hit.expires_at - hit.fetched_at == timedelta(seconds=settings.cache_ttl_seconds)

    # A new call from the same numbers: both are fresh in the cache, so no U-ON call.
    since = time.time()
    event(engine, integ, "start", "f-1", known, direction="in")
    event(engine, integ, "start", "g-1", unknown, direction="in")
    result = drain(url, engine)
    assert emu.calls("/user/", since) == []
    assert result.extra["cache_hits"] == 2
    assert calls_of(engine)["f-1"]["customer_external_id"] == known[1:]


def test_a_call_id_too_long_for_the_inbox_column_is_read_from_the_payload(crm, emu):
    url, engine = crm
    integ = add_uon(engine, emu.url)
    long_id = "sip-" + "x" * 100
    event(engine, integ, "start", long_id, unknown_number(), direction="out")
    drain(url, engine)
    assert calls_of(engine)[long_id]["direction"] == "out"


def test_call_ids_are_kept_exactly_as_sent_whatever_their_characters(crm, emu):
    # "007" and "7" are two calls; "³0" is digits to str.isdigit() but not to int().
    url, engine = crm
    integ = add_uon(engine, emu.url)
    ids = ["007", "7", "³0", "٣"]
    for call_id in ids:
        event(engine, integ, "start", call_id, unknown_number(), direction="in")
    stats = drain(url, engine)
    assert sorted(calls_of(engine)) == sorted(ids)
    with engine.connect() as conn:
        statuses = conn.execute(select(uon_tasks.c.status)).scalars().all()
    assert statuses and set(statuses) == {2}, stats


def test_a_number_of_two_clients_caches_both_as_the_lookup_does(crm, emu):
    url, engine = crm
    integ = add_uon(engine, emu.url)
    shared = known_number()
    emu.admin("POST", "users", {"u_id": "5550", "u_name": "Анна", "u_phone": shared})
    event(engine, integ, "start", "two-1", shared, direction="in")
    drain(url, engine)
    entry = cached(engine, integ, shared)
    assert entry.profile["uon_id"] == shared[1:]  # the first client U-ON named
    assert [p["uon_id"] for p in entry.profile["customers"]] == [shared[1:], "5550"]
    assert calls_of(engine)["two-1"]["customer_external_id"] == shared[1:]


def test_the_newest_event_wins_and_an_older_one_only_fills_gaps(crm):
    _, engine = crm
    integ = add_uon(engine, settings={"log_calls": False})
    settings = UonSettings.model_validate(integ.settings)
    t0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    newer = {
        "event": "hangup",
        "inbox_id": 20,
        "phone": "+375291111112",
        "extension": "152",
        "direction": "out",
        "timestamp": (t0 + timedelta(seconds=90)).isoformat(),
        "duration": 80,
        "status": "ANSWERED",
    }
    older = {
        "event": "start",
        "inbox_id": 10,
        "phone": "+375291111112",
        "extension": "151",
        "direction": "in",
        "timestamp": t0.timestamp(),
    }
    with engine.begin() as conn:
        apply_call_events(conn, integ.id, settings, "x-1", [newer])
        apply_call_events(conn, integ.id, settings, "x-1", [older])  # arrives late
        apply_call_events(conn, integ.id, settings, "x-1", [newer | {"inbox_id": 30}])
    row = calls_of(engine)["x-1"]
    assert row["extension"] == "152" and row["direction"] == "out"  # the newest event's
    assert row["started_at"].replace(tzinfo=UTC) == t0  # filled by the older event
    assert row["call_status"] == "answered" and row["duration_seconds"] == 80
    assert row["last_event_id"] == 30
    assert row["log_status"] == "skipped"  # logging off: never asked


# ---- U-ON's client and request webhooks --------------------------------------------------


def test_client_webhooks_refresh_customers_and_the_cache(crm, emu):
    url, engine = crm
    integ = add_uon(engine, emu.url)
    phone = known_number()
    client_id = phone[1:]
    with engine.begin() as conn:  # a stale profile of the number in the cache
        write_cache(conn, integ.id, phone, {"uon_id": client_id, "name": "Old"}, now_utc(), 600)
    webhook(engine, integ, 3, client_id=client_id)
    result = drain(url, engine)
    assert result.extra["customers_refreshed"] == 1
    stored = customer_rows(engine)[client_id]
    assert stored["phone"] == phone and stored["name"] != "Old"
    assert cached(engine, integ, phone).profile["name"] == stored["name"]

    # The client's number changes in U-ON: the old number's entry goes, the new one's
    # is the fresh profile.
    new_phone = known_number()
    emu.admin(
        "PATCH",
        f"users/{client_id}",
        {"u_phone": new_phone, "u_phone_mobile": new_phone, "u_name": "Ольга"},
    )
    webhook(engine, integ, 4, client_id=client_id, phone=new_phone)
    drain(url, engine)
    stored = customer_rows(engine)[client_id]
    assert stored["phone"] == new_phone and stored["first_name"] == "Ольга"
    assert cached(engine, integ, phone) is None
    assert cached(engine, integ, new_phone).profile["first_name"] == "Ольга"

    # Deleted: a tombstone, the cache entry dropped, and no U-ON call for it.
    since = time.time()
    webhook(engine, integ, 4, client_id=client_id)
    webhook(engine, integ, 5, client_id=client_id)
    result = drain(url, engine)
    assert emu.calls("/user/", since) == []  # the newest webhook is the delete
    assert customer_rows(engine)[client_id]["deleted_at"] is not None
    assert cached(engine, integ, new_phone) is None
    assert result.extra["customers_tombstoned"] == 1

    # A client U-ON does not have (404) is tombstoned too.
    webhook(engine, integ, 4, client_id="1001")
    drain(url, engine)
    assert customer_rows(engine)["1001"]["deleted_at"] is not None


def test_a_client_webhook_received_before_the_last_read_costs_no_call(crm, emu):
    # A copy delivered before U-ON was read but taken from the inbox after it (copies of
    # one webhook split by the sensor's ticks) is answered by that read.
    url, engine = crm
    integ = add_uon(engine, emu.url)
    client_id = known_number().lstrip("+")
    before = now_utc()
    webhook(engine, integ, 4, client_id=client_id)
    since = time.time()
    drain(url, engine)
    assert len(emu.calls(f"/user/{client_id}", since)) == 1
    copy = webhook(engine, integ, 4, client_id=client_id)
    with engine.begin() as conn:
        conn.execute(update(uon_inbox).where(uon_inbox.c.id == copy).values(received_at=before))
    drain(url, engine)
    assert len(emu.calls(f"/user/{client_id}", since)) == 1
    # A change webhook that arrived after that read is read again.
    webhook(engine, integ, 4, client_id=client_id)
    drain(url, engine)
    assert len(emu.calls(f"/user/{client_id}", since)) == 2
    with engine.connect() as conn:
        assert conn.execute(select(uon_tasks.c.status)).scalars().all() == [TASK_DONE] * 3


def test_request_and_lead_webhooks_and_other_types(crm, emu):
    url, engine = crm
    integ = add_uon(engine, emu.url)
    emu.admin("POST", "uon-requests", [{"id": "501", "status": "closed", "client_id": "42"}])
    since = time.time()
    webhook(engine, integ, 2, request_id=700, client_id=42)
    webhook(engine, integ, 1, lead_id=802)
    webhook(engine, integ, 16, request_id=501)
    webhook(engine, integ, 17, request_id=703)  # odd: U-ON has none (404)
    stored_only = webhook(engine, integ, 44, phone="+375291234567")
    missing_id = webhook(engine, integ, 2)
    drain(url, engine)
    rows = request_rows(engine)
    assert rows[("request", "700")]["active"] is True
    assert rows[("request", "700")]["customer_external_id"]
    assert rows[("lead", "802")]["status"] == "new"
    assert rows[("request", "501")]["active"] is False  # closed
    assert rows[("request", "501")]["customer_external_id"] == "42"
    assert rows[("request", "703")]["deleted_at"] is not None
    paths = sorted(e["path"] for e in emu.calls("/", since) if "_admin" not in e["path"])
    assert paths == [
        "/lead/802.json",
        "/request/501.json",
        "/request/700.json",
        "/request/703.json",
    ]
    tasks = tasks_by_inbox(engine)
    assert tasks[(stored_only, 0)]["status"] == TASK_DONE
    assert tasks[(stored_only, 0)]["outcome"] == STORED
    assert "names no lead or request id" in tasks[(missing_id, 0)]["error"]


# ---- the client: 404, 429, keys ----------------------------------------------------------


def test_404_is_empty_and_the_key_never_reaches_the_log(crm, emu):
    url, engine = crm
    integ = add_uon(engine, emu.url)
    with resource(url).client_for(integ) as client:
        assert client.users_by_phone(unknown_number()) == []
        assert client.user("1003") is None
        assert client.request_by_id("1005") is None
        assert client.lead("1007") is None
        assert len(client.ping()) > 0
    wrong = add_uon(engine, emu.url, api_key="wrong-key-0123456789abcdef")
    client = resource(url).client_for(wrong)
    with pytest.raises(ProviderAuthError) as refused, client:
        client.ping()
    assert "wrong-key" not in str(refused.value)
    with engine.connect() as conn:
        logged = conn.execute(select(api_call_log)).all()
    assert len(logged) == 6
    text = " ".join(f"{r.url} {r.response_body} {r.error}" for r in logged)
    assert API_KEY not in text and "wrong-key-0123456789abcdef" not in text
    assert any(r.status_code == 404 for r in logged)


def test_429_without_retry_after_backs_off_and_pushes_the_shared_key(crm, emu):
    url, engine = crm
    integ = add_uon(engine, emu.url)
    emu.admin("POST", "faults", {"force_429": 2, "retry_after": None})
    stats = CallStats()
    before = time.time()
    with resource(url).client_for(integ, stats=stats) as client:
        users = client.users_by_phone(known_number())
    assert len(users) == 1
    assert stats.http_429 == 2 and stats.retries == 2 and stats.calls == 3
    with engine.connect() as conn:
        tat = max(conn.execute(select(rate_limit_state.c.tat)).scalars())
    assert tat >= before + 0.3  # every process waits the penalty, not only this one


def test_a_429_storm_fails_the_tasks_for_a_later_retry(crm, emu):
    url, engine = crm
    integ = add_uon(engine, emu.url)
    row = event(engine, integ, "start", "s-1", known_number(), direction="in")
    emu.admin("POST", "faults", {"force_429": 3, "retry_after": None})
    result = drain(url, engine)
    assert result.entities["customer"].tasks_retrying == 1
    task = tasks_by_inbox(engine)[(row, 1)]
    assert "rate limited" in task["error"] and task["next_attempt_at"] is not None
    assert calls_of(engine)["s-1"]["direction"] == "in"  # the call itself is stored


# ---- the requests reconcile --------------------------------------------------------------


@pytest.mark.parametrize(("seeded", "pages"), [(250, 3), (200, 3), (0, 1)])
def test_the_reconcile_lists_a_day_in_pages_of_100(crm, emu, seeded: int, pages: int):
    url, engine = crm
    integ = add_uon(engine, emu.url)
    day = date(2026, 11, 29)
    items = [
        {"id": str(10_000 + i), "status": "open", "client_id": str(i), "dat": f"{day} 10:00:00"}
        for i in range(seeded)
    ]
    items.append({"id": "99999", "status": "open", "dat": "2026-11-28 10:00:00"})  # not that day
    emu.admin("POST", "uon-requests", items)
    since = time.time()
    with resource(url).client_for(integ) as client:
        found = sweep_requests(engine, integ.id, client, day)
    listed = emu.calls("/requests/", since)
    assert [e["path"] for e in listed] == [
        f"/requests/{day}/{day}/{p}.json" for p in range(1, pages + 1)
    ]
    assert found["requests"] == seeded
    assert len([k for k in request_rows(engine) if k[0] == "request"]) == seeded


# ---- the call log ------------------------------------------------------------------------


def _hangup(engine: Engine, integ: Any, call_id: str, phone: str, ext: str = "151") -> None:
    event(engine, integ, "start", call_id, phone, direction="in", extension=ext)
    event(engine, integ, "hangup", call_id, phone, direction="in", extension=ext, duration=42)


def _send(url: str, engine: Engine, **kwargs: Any):
    res = resource(url)
    opts = CallLogOptions(run_id=f"test-{uuid.uuid4().hex[:8]}", **kwargs)
    return send_call_logs(engine, lambda i: res.client_for(i), opts)


def test_the_call_log_sends_one_lead_per_call(crm, emu):
    url, engine = crm
    integ = add_uon(engine, emu.url, settings={"log_calls": True})
    known = known_number()
    _hangup(engine, integ, "L-1", known)
    _hangup(engine, integ, "L-2", unknown_number(), ext="999")
    drain(url, engine)
    report = _send(url, engine)
    assert report.sent == 2 and report.failed == 0
    leads = {lead["note"].rsplit("call id ", 1)[1].rstrip(")"): lead for lead in emu.leads()}
    first = leads["L-1"]
    assert first["source"] == "Телефония" and first["u_id"] == known[1:]
    assert first["manager_id"] == "2" and first["u_phone"] == known  # extension 151 → 2
    assert "Incoming call from" in first["note"] and "42 s" in first["note"]
    assert "u_id" not in leads["L-2"] or not leads["L-2"]["u_id"]
    assert leads["L-2"]["manager_id"] == ""  # extension 999 is nobody's
    rows = calls_of(engine)
    assert rows["L-1"]["log_status"] == "succeeded"
    assert rows["L-1"]["uon_lead_id"] == str(first["id"])

    # Another hangup of the same call, and a second run: nothing is sent again.
    event(engine, integ, "hangup", "L-1", known, direction="in", duration=43)
    drain(url, engine)
    again = _send(url, engine)
    assert again.sent == 0 and len(emu.leads()) == 2
    assert calls_of(engine)["L-1"]["log_status"] == "succeeded"


def test_a_call_log_left_sending_by_a_crash_is_never_sent(crm, emu):
    url, engine = crm
    integ = add_uon(engine, emu.url, settings={"log_calls": True})
    _hangup(engine, integ, "C-1", known_number())
    drain(url, engine)
    with engine.begin() as conn:  # the sender died after `sending` was committed
        conn.execute(
            update(uon_calls)
            .where(uon_calls.c.call_id == "C-1")
            .values(log_status="sending", updated_at=now_utc() - timedelta(minutes=10))
        )
    report = _send(url, engine)
    assert report.unknown == 1 and report.sent == 0 and emu.leads() == []
    row = calls_of(engine)["C-1"]
    assert row["log_status"] == "failed" and row["log_error"] == UNKNOWN
    assert _send(url, engine).sent == 0 and emu.leads() == []


def test_a_429_on_lead_create_is_retried_and_a_5xx_is_not(crm, emu):
    url, engine = crm
    integ = add_uon(engine, emu.url, settings={"log_calls": True})
    _hangup(engine, integ, "R-1", known_number())
    drain(url, engine)
    emu.admin("POST", "faults", {"force_429": 1, "retry_after": None})
    assert _send(url, engine).sent == 1 and len(emu.leads()) == 1

    _hangup(engine, integ, "R-2", known_number())
    drain(url, engine)
    emu.admin("POST", "faults", {"error_rate": 1.0})
    since = time.time()
    report = _send(url, engine)
    emu.admin("DELETE", "faults")
    assert report.failed == 1 and len(emu.calls("/lead/create", since)) == 1  # sent once
    row = calls_of(engine)["R-2"]
    assert row["log_status"] == "failed" and "server error" in row["log_error"]
    assert _send(url, engine).sent == 0 and len(emu.leads()) == 1


# ---- through Dagster -----------------------------------------------------------------------


def _metadata(result: Any, key: str) -> dict[str, Any]:
    (mat,) = [
        m
        for m in result.asset_materializations_for_node("uon_sync_assets")
        if m.asset_key.to_user_string() == key
    ]
    return {k: v.value for k, v in mat.metadata.items()}


def test_sensor_to_materialization_and_the_call_log_job(crm, emu):
    url, engine = crm
    integ = add_uon(engine, emu.url, settings={"log_calls": True})
    known = known_number()
    _hangup(engine, integ, "D-1", known)
    _hangup(engine, integ, "D-2", known)
    webhook(engine, integ, 2, request_id=900)
    resources = {"crm_db": CrmDatabase(database_url=url)}
    defs = build_definitions(url)
    with DagsterInstance.ephemeral() as instance:
        tick = uon_inbox_sensor(build_sensor_context(instance=instance, resources=resources))
        (request,) = tick.run_requests
        assert request.partition_key == now_utc().date().isoformat()
        result = defs.resolve_job_def("uon_sync").execute_in_process(
            instance=instance,
            partition_key=request.partition_key,
            tags=request.tags,
            run_config={"ops": {"uon_sync_assets": {"config": {"idle_seconds": 0}}}},
            resources={"uon": resource(url)},
        )
        assert result.success
        assert not uon_inbox_sensor(
            build_sensor_context(instance=instance, resources=resources)
        ).run_requests
        customers_meta = _metadata(result, "uon/customers")
        assert customers_meta["phone_lookups"] == 1 and customers_meta["phones_found"] == 1
        assert customers_meta["found_share"] == 1.0
        assert customers_meta["dagster/row_count"] == 1
        calls_meta = _metadata(result, "uon/calls")
        assert calls_meta["call_events"] == 4 and calls_meta["call_logs_requested"] == 2
        assert _metadata(result, "uon/requests")["dagster/row_count"] == 1
        checks = {
            (e.asset_key.to_user_string(), e.check_name): e.passed
            for e in result.get_asset_check_evaluations()
        }
        assert checks[("uon/customers", "no_stuck_tasks")]
        assert checks[("uon/calls", "failed_task_share")]

        tick = uon_call_log_sensor(build_sensor_context(instance=instance, resources=resources))
        assert tick.run_key and tick.tags["crm/mode"] == "uon-call-log"
        sent = defs.resolve_job_def("uon_call_log").execute_in_process(
            instance=instance, tags=tick.tags, resources={"uon": resource(url)}
        )
        assert sent.success and len(emu.leads()) == 2
        skip = uon_call_log_sensor(build_sensor_context(instance=instance, resources=resources))
        assert "no U-ON call logs pending" in str(skip)


def test_the_reconcile_run_lists_yesterdays_requests(crm, emu):
    url, engine = crm
    integ = add_uon(engine, emu.url)
    day = date(2026, 11, 28)
    emu.admin(
        "POST",
        "uon-requests",
        [{"id": str(20_000 + i), "status": "open", "dat": f"{day} 08:00:00"} for i in range(120)],
    )
    request = uon_reconcile_daily(
        build_schedule_context(scheduled_execution_time=datetime(2026, 11, 29, 0, 55, tzinfo=UTC))
    )
    assert request.partition_key == day.isoformat() and request.tags["crm/mode"] == "reconcile"
    with DagsterInstance.ephemeral() as instance:
        result = (
            build_definitions(url)
            .resolve_job_def("uon_sync")
            .execute_in_process(
                instance=instance,
                partition_key=request.partition_key,
                tags=request.tags,
                resources={"uon": resource(url)},
            )
        )
    assert result.success
    meta = _metadata(result, "uon/requests")
    assert meta["requests_listed"] == 120 and meta["request_pages"] == 2
    assert len(request_rows(engine)) == 120
    assert integ.id  # the integration the run listed


def test_the_cache_purge_drops_only_long_expired_entries(crm):
    url, engine = crm
    integ = add_uon(engine)
    old, recent = known_number(), known_number()
    with engine.begin() as conn:
        write_cache(conn, integ.id, old, None, now_utc() - timedelta(days=3), 90)
        write_cache(conn, integ.id, recent, None, now_utc() - timedelta(hours=1), 90)
    request = uon_cache_purge_daily(
        build_schedule_context(scheduled_execution_time=datetime(2026, 11, 29, 3, 20, tzinfo=UTC))
    )
    assert request.run_key == "uon-cache-purge:2026-11-29"
    with DagsterInstance.ephemeral() as instance:
        result = (
            build_definitions(url)
            .resolve_job_def("uon_cache_purge")
            .execute_in_process(instance=instance)
        )
    assert result.success and result.output_for_node("uon_cache_purge_op") == 1
    with engine.connect() as conn:
        left = set(conn.execute(select(uon_phone_cache.c.phone)).scalars())
    assert left == {recent}
