"""amoCRM client over real HTTP against the emulator: leads, HAL pages, 204, problem+json,
contacts in calls of ≤ 250 ids, a long-lived token, the quota's 429 without Retry-After
backing every process off through the shared limiter, and a 403 (IP blocked) that
marks the integration and stops its calls."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from crm_schema.integrations import Integration, add_integration, get_integration
from crm_schema.provider_tokens import NewToken
from crm_sync.ratelimit import DatabaseRateLimiter, Throttle, rate_keys
from orchestration.amocrm.client import BLOCKED_PREFIX, AmocrmBlockedError
from orchestration.db import dispose_engines
from orchestration.defs.amocrm.resources import AmocrmResource, integration_attention
from orchestration.resources import CallStats, ProviderAuthError, ProviderRequestError
from provider_emulators.amocrm import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REDIRECT_URI,
    create_app,
)
from provider_emulators.testing import running_server
from webhook_receiver.providers.amocrm.oauth import exchange_and_store

LONG_LIVED = "llt-SECRET-0123456789abcdef0123"


@pytest.fixture(autouse=True)
def _dispose() -> Iterator[None]:
    yield
    dispose_engines()


@pytest.fixture
def emulator() -> Iterator[str]:
    with running_server(create_app(long_lived_token=LONG_LIVED)) as base:
        yield base


def add_amocrm(
    engine: Engine, base: str, *, long_lived: bool = False, subdomain: str = "clinic"
) -> Integration:
    """An amoCRM integration at ``base``: authorized with a code, or a long-lived token."""
    credentials: dict[str, Any] = {"client_secret": DEFAULT_CLIENT_SECRET}
    if long_lived:
        credentials["long_lived_token"] = LONG_LIVED
    with engine.begin() as conn:
        item = add_integration(
            conn,
            provider="amocrm",
            name=f"amo {subdomain}",
            integration_uuid=None,
            api_base_url=base,
            credentials=credentials,
            settings={
                "subdomain": subdomain,
                "client_id": DEFAULT_CLIENT_ID,
                "redirect_uri": DEFAULT_REDIRECT_URI,
            },
        )
        if not long_lived:
            exchange_and_store(conn, item, "code-test")
    return item


def resource(database_url: str, **kw: Any) -> AmocrmResource:
    return AmocrmResource(
        database_url=database_url, backoff_initial_seconds=0.05, max_attempts=6, **kw
    )


def admin(base: str, method: str, path: str, **kw: Any) -> Any:
    response = httpx.request(method, f"{base}/_admin{path}", timeout=10, **kw)
    response.raise_for_status()
    return response.json()


def api_requests(base: str, path: str) -> list[dict[str, Any]]:
    return [r for r in admin(base, "GET", "/requests") if r["path"] == path]


def test_leads_hal_pages_204_and_problem_json(emulator, engine, database_url) -> None:
    item = add_amocrm(engine, emulator)
    names = [f"Paging lead {i}" for i in range(260)]
    admin(emulator, "POST", "/leads", json={"names": names})
    with resource(database_url).client_for(item) as client:
        found = client.search_leads("Paging lead")  # 260 leads over two HAL pages
        assert sorted(lead["name"] for lead in found) == sorted(names)
        assert len(api_requests(emulator, "/api/v4/leads")) == 2
        assert client.search_leads("nothing-matches-this") == []  # 204 No Content
        lead_id = client.create_lead("ID_42", pipeline_id=11, status_id=22)
        lead = client.get_lead(lead_id)
        assert lead is not None and lead["name"] == "ID_42" and lead["pipeline_id"] == 11
        assert client.get_lead(987_654_321) is None  # absent: 204
        client.patch_lead(
            lead_id,
            {"price": 1500, "custom_fields_values": [{"field_id": 7, "values": [{"value": "x"}]}]},
        )
        stored = admin(emulator, "GET", f"/leads/{lead_id}")
        assert stored["price"] == 1500
        assert stored["custom_fields_values"][0]["values"][0]["value"] == "x"
        with pytest.raises(ProviderRequestError) as bad:
            client.patch_lead(lead_id, {"price": "not a number"})
        assert bad.value.status_code == 400 and "validation errors" in str(bad.value)
        assert "price" in str(bad.value)


def test_contacts_by_ids_at_most_250_a_call(emulator, engine, database_url) -> None:
    item = add_amocrm(engine, emulator)
    ids = list(range(1, 601))
    stats = CallStats()
    with resource(database_url).client_for(item, stats=stats) as client:
        contacts = client.contacts_by_ids([*ids, 5, 7])  # duplicates asked once
    assert sorted(c["id"] for c in contacts) == ids
    calls = api_requests(emulator, "/api/v4/contacts")
    assert len(calls) == 3 and stats.ids_requested == 600
    assert contacts[0]["custom_fields_values"]  # e-mail and phone as custom fields


def test_long_lived_token_is_a_bearer_and_never_logged(emulator, engine, database_url) -> None:
    item = add_amocrm(engine, emulator, long_lived=True)
    with resource(database_url).client_for(item) as client:
        assert client.search_leads("none at all") == []
    assert admin(emulator, "GET", "/oauth")["refreshes"] == 0
    with engine.connect() as conn:
        logged = conn.exec_driver_sql(
            "SELECT url, request_body, response_body FROM api_call_log"
        ).all()
    assert logged and all(LONG_LIVED not in str(row) for row in logged)


def _account_wait(database_url: str, integration: Integration) -> float:
    """How long a fresh process would wait for this account's next slot."""
    from crm_sync.registry import get_provider
    from orchestration.db import shared_engine

    keys = rate_keys(get_provider("amocrm"), integration)
    throttle = Throttle(DatabaseRateLimiter(shared_engine(database_url)), keys)
    return throttle.limiter.reserve(throttle.key, 1e-6).wait


def test_429_without_retry_after_backs_every_process_off(emulator, engine, database_url) -> None:
    item = add_amocrm(engine, emulator)
    admin(emulator, "PUT", "/faults", json={"force_429": 2})  # no Retry-After, as amoCRM
    stats = CallStats()
    started = time.monotonic()
    with resource(database_url).client_for(item, stats=stats) as client:
        assert client.search_leads("anything") == []
    elapsed = time.monotonic() - started
    assert stats.http_429 == 2 and stats.retries == 2
    # Each 429 pushed the account's shared key by the policy's penalty (1 s): the
    # retries — and every other process on this account — waited for it.
    assert elapsed >= 1.5, elapsed


def test_403_ip_block_marks_the_integration_and_stops_calls(engine, database_url) -> None:
    # One request a second per token, and the second refusal within 10 s blocks the IP.
    app = create_app(quota=1, block_after=1, block_window=10, block_seconds=60)
    with running_server(app) as base:
        item = add_amocrm(engine, base)
        amo = resource(
            database_url, quota_per_second=50, penalty_seconds=0.01, block_seconds=600
        ).model_copy(update={"backoff_initial_seconds": 0.01, "max_attempts": 10})
        with amo.client_for(item) as client:
            with pytest.raises(AmocrmBlockedError) as blocked:
                for _ in range(10):
                    client.search_leads("x")
            assert blocked.value.status_code == 403 and not blocked.value.retryable
            sent = len(admin(base, "GET", "/requests"))
            with pytest.raises(AmocrmBlockedError):  # stopped: no more requests
                client.get_lead(1)
            assert len(admin(base, "GET", "/requests")) == sent
    attention = integration_attention(engine, item.id)
    assert attention is not None and attention.startswith(BLOCKED_PREFIX)
    # Every process on this account is held off for block_seconds...
    assert _account_wait(database_url, item) > 500
    # ...and a new run refuses at once, loudly.
    with engine.connect() as conn:
        fresh = get_integration(conn, item.id)
    with pytest.raises(AmocrmBlockedError):
        resource(database_url).client_for(fresh)


def test_a_refused_long_lived_token_asks_for_attention(emulator, engine, database_url) -> None:
    item = add_amocrm(engine, emulator, long_lived=True)
    with engine.begin() as conn:
        from crm_schema.integrations import update_integration

        item = update_integration(conn, item.id, credentials={"long_lived_token": "llt-revoked"})
    with resource(database_url).client_for(item) as client, pytest.raises(ProviderAuthError):
        client.get_lead(1)
    assert (integration_attention(engine, item.id) or "").startswith("needs re-authorization")


def test_token_store_is_importable_from_both_places() -> None:
    from crm_schema.provider_tokens import TokenStore
    from orchestration.resources.auth import NewToken as Old
    from orchestration.resources.auth import TokenStore as OldStore

    assert Old is NewToken and OldStore is TokenStore


def test_after_the_block_the_first_call_that_works_clears_attention(engine, database_url) -> None:
    app = create_app(quota=1, block_after=1, block_window=10, block_seconds=60)
    with running_server(app) as base:
        item = add_amocrm(engine, base)
        amo = resource(
            database_url, quota_per_second=50, penalty_seconds=0.01, block_seconds=1.0
        ).model_copy(update={"backoff_initial_seconds": 0.01, "max_attempts": 10})
        with amo.client_for(item) as client, pytest.raises(AmocrmBlockedError):
            for _ in range(10):
                client.search_leads("x")
        with engine.connect() as conn:
            blocked = get_integration(conn, item.id)
        assert (blocked.attention or "").startswith(BLOCKED_PREFIX)
        admin(base, "DELETE", "/blocks")  # amoCRM lifts the block
        time.sleep(1.0)
        with amo.client_for(blocked) as client:  # the same 1 s block: it is over
            assert client.get_lead(424242) is None
    assert integration_attention(engine, item.id) is None
