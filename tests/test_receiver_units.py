"""Receiver building blocks without a server: validation, security helpers, the cache."""

from __future__ import annotations

import asyncio
import logging

import pytest

from crm_sync.redaction import UrlRedactionFilter, mask_webhook_path
from webhook_receiver.config import ReceiverConfig
from webhook_receiver.integration_cache import IntegrationCache
from webhook_receiver.providers.allio import (
    AllioWebhookPayload,
    uuid_matches,
    validate_allio,
)
from webhook_receiver.security import constant_time_equals, is_json_content_type
from webhook_receiver.stores import IntegrationEntry, StoreUnavailable


def test_validate_normalises_indexes() -> None:
    result = validate_allio({"uuid": "u", "command": "DEALCARD_DEL", "indexes": [1, "22", 3]})
    assert result == AllioWebhookPayload(uuid="u", command="DEALCARD_DEL", indexes=[1, 22, 3])


@pytest.mark.parametrize(
    "indexes",
    [[True], [False], [0], [-1], [1.0], ["1.5"], [""], ["-1"], [" 1"], [None], [[1]], "1", 5]
    + ["", "[", "[1,]", "null", '{"a": 1}', '"[1]"', "[]", "[0]", "[true]", "[1.5]", [], {}],
)
def test_validate_refuses_bad_indexes(indexes: object) -> None:
    result = validate_allio({"uuid": "u", "command": "RESERVE_ADD", "indexes": indexes})
    assert isinstance(result, list) and [p["field"] for p in result] == ["indexes"]


def test_validate_takes_any_number_of_indexes_and_json_strings() -> None:
    many = list(range(1, 5001))
    assert validate_allio({"uuid": "u", "command": "RESERVE_ADD", "indexes": many}) == (
        AllioWebhookPayload(uuid="u", command="RESERVE_ADD", indexes=many)
    )
    as_string = validate_allio({"uuid": "u", "command": "SPACE_CHANGED", "indexes": '[1,"22"]'})
    assert as_string == AllioWebhookPayload(uuid="u", command="SPACE_CHANGED", indexes=[1, 22])


@pytest.mark.parametrize(
    "given,expected,ok",
    [
        ("0f8fad5b-d9cb-469f", "0F8FAD5B-D9CB-469F", True),
        ("ABC-def", "abc-DEF", True),
        ("abc", "abc", True),
        ("abc", "abd", False),
        ("abc", "abc ", False),
        ("\u212a", "k", False),  # KELVIN SIGN: str.lower() would make it "k"
        ("\u0130", "i", False),
        ("é", "É", False),  # only ASCII letters fold
        ("abc", None, False),
    ],
)
def test_uuid_matches_ignores_ascii_case_only(given: str, expected: str | None, ok: bool) -> None:
    assert uuid_matches(given, expected) is ok


@pytest.mark.parametrize(
    "value,ok",
    [
        ("application/json", True),
        ("Application/JSON; charset=UTF-8", True),
        (b"application/json;charset=utf-8", True),
        ("application/vnd.allio.v1+json", True),
        ("application/problem+json; charset=utf-8", True),
        ("text/json", False),
        ("application/x-www-form-urlencoded", False),
        ("application/jsonp", False),
        ("", False),
        (None, False),
    ],
)
def test_json_content_types(value: str | bytes | None, ok: bool) -> None:
    assert is_json_content_type(value) is ok


def test_constant_time_equals() -> None:
    assert constant_time_equals("abc", "abc")
    assert not constant_time_equals("abc", "abd")
    assert not constant_time_equals("abc", None)
    assert not constant_time_equals("é", "e")  # non-ASCII does not raise


def test_access_log_filter_masks_keys() -> None:
    # Everything after the provider is masked, the query too (see test_receiver_hardening).
    assert mask_webhook_path("/webhooks/allio/SeCrEt-key?x=1") == "/webhooks/allio/****"
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", "/webhooks/allio/SeCrEt-key", "1.1", 200),
        None,
    )
    UrlRedactionFilter().filter(record)
    assert "SeCrEt" not in record.getMessage()
    assert "/webhooks/allio/****" in record.getMessage()


def test_config_overrides() -> None:
    config = ReceiverConfig.load("sqlite:///x.sqlite3", max_body_bytes=10)
    assert config.max_body_bytes == 10
    with pytest.raises(TypeError, match="unknown receiver option"):
        ReceiverConfig.load("sqlite:///x.sqlite3", no_such_option=1)


class FakeStore:
    """Integrations in a dict; `down` makes every call fail like an outage."""

    def __init__(self) -> None:
        self.entries = {"k1": IntegrationEntry(1, "allio", "u1", True)}
        self.down = False
        self.lookups = 0

    async def load_integrations(self) -> dict[str, IntegrationEntry]:
        if self.down:
            raise StoreUnavailable("down")
        return dict(self.entries)

    async def find_integration(self, key: str) -> IntegrationEntry | None:
        self.lookups += 1
        if self.down:
            raise StoreUnavailable("down")
        return self.entries.get(key)


def test_cache_keeps_last_good_map_when_refresh_fails() -> None:
    async def scenario() -> None:
        store = FakeStore()
        cache = IntegrationCache(store, refresh_seconds=60)  # type: ignore[arg-type]
        assert await cache.refresh()
        store.entries["k1"] = IntegrationEntry(1, "allio", "u1", False)
        store.down = True
        assert not await cache.refresh()
        assert cache.get("k1") == IntegrationEntry(1, "allio", "u1", True)  # last good
        store.down = False
        assert await cache.refresh()
        assert cache.get("k1").is_active is False

    asyncio.run(scenario())


def test_cache_misses_are_rate_limited_and_new_keys_found() -> None:
    async def scenario() -> None:
        store = FakeStore()
        cache = IntegrationCache(store, refresh_seconds=60, lookups_per_second=5)  # type: ignore[arg-type]
        assert await cache.refresh()
        for i in range(200):
            assert await cache.lookup(f"junk-{i}") is None
        assert store.lookups <= 10  # the burst, not one query per junk key
        assert await cache.lookup("junk-0") is None  # remembered as absent

        await asyncio.sleep(0.25)  # the bucket refills
        store.entries["k2"] = IntegrationEntry(2, "allio", "u2", True)
        assert (await cache.lookup("k2")).id == 2
        assert cache.get("k2").id == 2  # kept in the map

    asyncio.run(scenario())


def test_cache_never_loaded_and_database_down_is_unavailable() -> None:
    async def scenario() -> None:
        store = FakeStore()
        store.down = True
        cache = IntegrationCache(store, refresh_seconds=60)  # type: ignore[arg-type]
        assert not await cache.refresh()
        with pytest.raises(StoreUnavailable):
            await cache.lookup("k1")

    asyncio.run(scenario())
