"""The operator's U-ON client-by-phone lookup against a real receiver and the U-ON
emulator over real HTTP, on SQLite and PostgreSQL: cache hits, misses (found / not
found), expiry, fresh values overwriting, bad input, U-ON slow, failing or over quota
(stale and unavailable answers within the deadline), the shared quota, and the API key
never shown."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select, text, update

from crm_schema import operator_tokens
from crm_schema.integrations import Integration
from crm_schema.providers.uon import customers, uon_phone_cache
from crm_schema.tables import api_call_log, rate_limit_state
from crm_sync.providers.uon import SPEC
from crm_sync.ratelimit import rate_keys
from crm_sync.settings import get_settings
from provider_emulators.testing import running_server
from provider_emulators.uon import create_app as create_uon
from tests.receiver_fixtures import add_allio, assert_error, serve_receiver
from tests.uon_fixtures import API_KEY, KNOWN_PHONE, UNKNOWN_PHONE, add_uon

PATH = "/api/v1/uon/customers/by-phone"
KNOWN = "+" + KNOWN_PHONE
UNKNOWN = "+" + UNKNOWN_PHONE
# Short TTLs and a fast quota: the tests that are about the quota set their own.
FAST = {"cache_ttl_seconds": 60, "negative_cache_ttl_seconds": 60}


@pytest.fixture
def fast_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment quota (CRM_SYNC_RATE_LIMITS) far above what a test sends, so no
    lookup waits for a slot; the emulator's own 10/s still holds."""
    monkeypatch.setitem(get_settings().rate_limits, "uon", 1000.0)


@pytest.fixture
def uon() -> Iterator[str]:
    """The U-ON emulator (10 requests/s per key) on a real server."""
    with running_server(create_uon(api_keys=[API_KEY])) as base:
        yield base


@pytest.fixture
def token(engine: Engine) -> str:
    with engine.begin() as conn:
        return operator_tokens.create(conn, "operator")[1]


@contextlib.contextmanager
def receiver(database_url: str, token: str) -> Iterator[httpx.Client]:
    with (
        serve_receiver(database_url) as base,
        httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as client,
    ):
        yield client


def lookup(client: httpx.Client, integration: Integration | int, phone: str) -> httpx.Response:
    ident = integration if isinstance(integration, int) else integration.id
    return client.get(PATH, params={"phone": phone, "integration": str(ident)})


def phone_calls(uon: str) -> list[dict[str, Any]]:
    """The emulator's logged `user/phone` requests."""
    entries = httpx.get(f"{uon}/_admin/requests").json()
    return [e for e in entries if "/user/phone/" in e["path"]]


def faults(uon: str, **settings: Any) -> None:
    if settings:
        httpx.put(f"{uon}/_admin/faults", json=settings).raise_for_status()
    else:
        httpx.delete(f"{uon}/_admin/faults").raise_for_status()


def call_log(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(select(api_call_log).order_by(api_call_log.c.id)).all()


def cached(engine: Engine, integration: Integration, phone: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            select(uon_phone_cache).where(
                uon_phone_cache.c.integration_id == integration.id,
                uon_phone_cache.c.phone == phone,
            )
        ).first()


def expire(engine: Engine, integration: Integration) -> None:
    """Every cached entry of the integration expired a moment ago (kept: stale answers)."""
    past = datetime.now(UTC) - timedelta(seconds=1)
    with engine.begin() as conn:
        conn.execute(
            update(uon_phone_cache)
            .where(uon_phone_cache.c.integration_id == integration.id)
            .values(expires_at=past)
        )


def key_tat(engine: Engine, key: str) -> float:
    """The limiter's next-slot time of a key (epoch seconds)."""
    with engine.connect() as conn:
        return conn.execute(
            select(rate_limit_state.c.tat).where(rate_limit_state.c.key == key)
        ).scalar_one()


def assert_no_key(engine: Engine, *answers: Any) -> None:
    """The API key is in no call-log row and no answer."""
    for row in call_log(engine):
        assert API_KEY not in str(tuple(row))
    for body in answers:
        assert API_KEY not in str(body)


def test_miss_found_is_stored_then_hit(
    database_url: str, engine: Engine, uon: str, token: str, fast_quota: None
) -> None:
    integration = add_uon(engine, uon, settings=FAST)
    with receiver(database_url, token) as client:
        first = lookup(client, integration, KNOWN)
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["source"] == "uon" and body["found"] is True and body["stale"] is False
        assert body["phone"] == KNOWN and body["integration"] == integration.id
        customer = body["customer"]
        assert customer["uon_id"] == KNOWN_PHONE and customer["phone"] == KNOWN
        assert customer["name"] and customer["manager_id"] in ("2", "4")
        assert body["customers"] == [customer] and body["error"] is None
        # national form, and a "+" that arrived unencoded (a space): the same number
        for phone in (KNOWN, "8029" + KNOWN_PHONE[5:], " " + KNOWN_PHONE):
            again = lookup(client, integration, phone).json()
            assert again["source"] == "cache" and again["customer"] == customer
            assert again["fetched_at"] == body["fetched_at"]
    assert len(phone_calls(uon)) == 1
    with engine.connect() as conn:
        [row] = conn.execute(
            select(customers).where(customers.c.integration_id == integration.id)
        ).all()
    assert row.external_id == KNOWN_PHONE and row.phone == KNOWN and row.name == customer["name"]
    assert cached(engine, integration, KNOWN).found is True
    [logged] = call_log(engine)
    assert logged.provider == "uon" and logged.status_code == 200
    assert logged.integration_id == integration.id
    # The key and (personal data off by default) the number are masked.
    assert logged.url.endswith("/****/user/phone/***.json"), logged.url
    assert KNOWN_PHONE not in logged.url and KNOWN_PHONE[3:] not in (logged.response_body or "")
    assert_no_key(engine, body)


def test_not_found_is_cached_negative(
    database_url: str, engine: Engine, uon: str, token: str, fast_quota: None
) -> None:
    integration = add_uon(engine, uon, settings=FAST)
    with receiver(database_url, token) as client:
        # Several operators' screens ask at once: one U-ON call.
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: lookup(client, integration, UNKNOWN), range(4)))
        for resp in answers:
            body = resp.json()
            assert body["found"] is False and body["customer"] is None
            assert body["customers"] == [] and body["source"] in ("uon", "cache")
        assert sum(r.json()["source"] == "uon" for r in answers) >= 1
        again = lookup(client, integration, UNKNOWN).json()
        assert again["source"] == "cache" and again["found"] is False
        assert again["fetched_at"] is not None
    assert len(phone_calls(uon)) == 1
    entry = cached(engine, integration, UNKNOWN)
    assert entry.found is False and entry.profile is None
    [logged] = call_log(engine)
    assert logged.status_code == 404 and logged.error is None


def test_expiry_refetches_and_fresh_values_overwrite(
    database_url: str, engine: Engine, uon: str, token: str, fast_quota: None
) -> None:
    integration = add_uon(
        engine, uon, settings={"cache_ttl_seconds": 1, "negative_cache_ttl_seconds": 1}
    )
    with receiver(database_url, token) as client:
        before = lookup(client, integration, KNOWN).json()["customer"]
        assert before["email"]
        # U-ON's client changes: a new surname, the e-mail emptied.
        httpx.patch(
            f"{uon}/_admin/users/{KNOWN_PHONE}", json={"u_surname": "Новая", "u_email": ""}
        ).raise_for_status()
        assert lookup(client, integration, KNOWN).json()["customer"] == before  # cached
        negative = lookup(client, integration, UNKNOWN).json()
        assert negative["source"] == "uon"
        time.sleep(1.1)
        after = lookup(client, integration, KNOWN).json()
        assert after["source"] == "uon"
        assert after["customer"]["last_name"] == "Новая"
        assert after["customer"]["name"].startswith("Новая ")
        # An empty value never erases a stored one.
        assert after["customer"]["email"] == before["email"]
        assert lookup(client, integration, UNKNOWN).json()["source"] == "uon"
    assert len(phone_calls(uon)) == 4
    with engine.connect() as conn:
        [row] = conn.execute(
            select(customers).where(customers.c.integration_id == integration.id)
        ).all()
    assert row.last_name == "Новая" and row.email == before["email"]


def test_bad_input_and_auth(
    database_url: str, engine: Engine, uon: str, token: str, fast_quota: None
) -> None:
    integration = add_uon(engine, uon, settings=FAST)
    other = add_allio(engine)
    with receiver(database_url, token) as client:
        for params in (
            {"integration": str(integration.id)},
            {"integration": str(integration.id), "phone": "not a phone"},
            {"integration": str(integration.id), "phone": "+375 12"},
            {"integration": str(integration.id), "phone": "1" * 65},
            {"phone": KNOWN},
            {"phone": KNOWN, "integration": "abc"},
            {"phone": KNOWN, "integration": "0"},
        ):
            body = assert_error(client.get(PATH, params=params), 422)
            assert body["problems"], params
        for ident in (999_999, other.id):
            assert_error(lookup(client, ident, KNOWN), 404)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
            resp = httpx.get(
                str(client.base_url) + PATH,
                params={"phone": "bad", "integration": "x"},
                headers=headers,
            )
            assert_error(resp, 401)
            assert resp.headers["www-authenticate"] == "Bearer"
    assert phone_calls(uon) == [] and call_log(engine) == []
    with engine.connect() as conn:
        assert conn.execute(select(uon_phone_cache)).all() == []


def test_slow_or_failing_uon_answers_stale_or_unavailable_in_time(
    database_url: str, engine: Engine, uon: str, token: str, fast_quota: None
) -> None:
    deadline = 0.5
    integration = add_uon(engine, uon, settings=FAST | {"lookup_deadline_seconds": deadline})
    with receiver(database_url, token) as client:
        fresh = lookup(client, integration, KNOWN).json()
        assert fresh["source"] == "uon"
        expire(engine, integration)
        faults(uon, latency_ms=1200)
        for phone, source in ((KNOWN, "stale"), ("+375296254090", "unavailable")):
            started = time.monotonic()
            body = lookup(client, integration, phone).json()
            elapsed = time.monotonic() - started
            assert elapsed < deadline + 0.5, elapsed
            assert body["source"] == source and body["stale"] is (source == "stale")
            assert "deadline" in body["error"]
            if source == "stale":
                assert body["found"] is True and body["customer"] == fresh["customer"]
                assert body["fetched_at"] == fresh["fetched_at"]
            else:
                assert body["found"] is False and body["customer"] is None
                assert body["fetched_at"] is None
        faults(uon)
        faults(uon, error_rate=1.0)
        body = lookup(client, integration, KNOWN).json()
        assert body["source"] == "stale" and "U-ON answered 5" in body["error"]
        faults(uon)
        body = lookup(client, integration, KNOWN).json()
        assert body["source"] == "uon" and body["stale"] is False and body["error"] is None
    # Nothing cached from the failures: the unknown number was never stored.
    assert cached(engine, integration, "+375296254090") is None
    errors = [row.error for row in call_log(engine)]
    assert errors[:3] == [None, "timeout", "timeout"]
    assert errors[3].startswith("U-ON answered 5") and errors[4] is None
    assert_no_key(engine, fresh, body)


def test_429_penalises_the_shared_key_and_answers_stale(
    database_url: str, engine: Engine, uon: str, token: str
) -> None:
    integration = add_uon(engine, uon, settings=FAST | {"lookup_deadline_seconds": 0.5})
    [key] = rate_keys(SPEC, integration)
    with receiver(database_url, token) as client:
        assert lookup(client, integration, KNOWN).json()["source"] == "uon"
        expire(engine, integration)
        faults(uon, force_429=1, retry_after=None)  # U-ON sends no Retry-After
        body = lookup(client, integration, KNOWN).json()
        assert body["source"] == "stale" and body["found"] is True and "429" in body["error"]
        tat = key_tat(engine, key.key)
        # pushed by the policy's penalty (1 s): every process now waits for it
        assert tat - time.time() > key.policy.penalty_seconds - 0.3
        # Within the penalty, a new number gets no slot before its deadline: no call,
        # and no slot taken (the shared budget is not pushed further out).
        calls = len(phone_calls(uon))
        body = lookup(client, integration, "+375296254092").json()
        assert body["source"] == "unavailable" and "quota" in body["error"]
        assert len(phone_calls(uon)) == calls
        assert key_tat(engine, key.key) == tat
    assert [r.status_code for r in call_log(engine)] == [200, 429]
    assert "quota" in call_log(engine)[1].error


def test_distinct_numbers_never_pass_the_quota(
    database_url: str, engine: Engine, uon: str, token: str
) -> None:
    """20 ringing calls from distinct numbers at once: U-ON's 10/s is never passed (the
    limiter spaces them at 8/s); those whose slot is past the deadline get no call."""
    integration = add_uon(engine, uon, settings=FAST | {"lookup_deadline_seconds": 1.5})
    numbers = [f"+37529{6254100 + 2 * i}" for i in range(20)]
    with receiver(database_url, token) as client, ThreadPoolExecutor(20) as pool:
        answers = [r.json() for r in pool.map(lambda p: lookup(client, integration, p), numbers)]
    sources = [a["source"] for a in answers]
    assert set(sources) <= {"uon", "unavailable"}
    assert 5 <= sources.count("uon") <= 14, sources
    # No slot before the deadline (or, on a loaded machine, a slot so close to it that
    # U-ON's answer came too late): answered in time, without the client.
    refused = [a["error"] for a in answers if a["source"] == "unavailable"]
    assert all("quota" in e or "deadline" in e for e in refused), refused
    calls = phone_calls(uon)
    assert len(calls) == sources.count("uon")
    assert not any(c["quota_rejected"] or c["status"] == 429 for c in calls)
    times = sorted(c["monotonic"] for c in calls)
    for i, start in enumerate(times):
        assert sum(1 for t in times[i:] if t - start < 1.0) <= 10


def test_log_personal_data_keeps_the_number_not_the_key(
    database_url: str, engine: Engine, uon: str, token: str, fast_quota: None
) -> None:
    integration = add_uon(engine, uon, settings=FAST | {"log_personal_data": True})
    with receiver(database_url, token) as client:
        body = lookup(client, integration, KNOWN).json()
    [logged] = call_log(engine)
    assert logged.url.endswith(f"/****/user/phone/{KNOWN_PHONE}.json")
    assert KNOWN in logged.response_body
    assert_no_key(engine, body)


def test_disabled_integration_is_404(
    database_url: str, engine: Engine, uon: str, token: str, fast_quota: None
) -> None:
    integration = add_uon(engine, uon, settings=FAST)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE integrations SET is_active = :off WHERE id = :id"),
            {"off": False, "id": integration.id},
        )
    with receiver(database_url, token) as client:
        assert "disabled" in assert_error(lookup(client, integration, KNOWN), 404)["error"]
