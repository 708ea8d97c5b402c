"""Provider base client + ALLIO client against the emulator: limiter, retries, call log."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import Engine, select

from crm_schema.integrations import Integration, add_integration
from crm_schema.tables import api_call_log, rate_limit_state
from crm_sync.redaction import mask_url, redact_body
from orchestration.allio.client import AllioClient
from orchestration.db import dispose_engines
from orchestration.defs.allio.resources import AllioResource
from orchestration.resources import (
    CallStats,
    ProviderAuthError,
    ProviderRateLimitedError,
    ProviderResponseError,
    ProviderUnavailableError,
)
from provider_emulators.allio import create_app
from provider_emulators.testing import running_server
from tests.mp_workers import client_worker, max_in_window, warm_pool

TOKEN = "s3cr3t-allio-token-9f8e7d6c"
WRONG_TOKEN = "wr0ng-allio-token-1a2b3c4d"


@dataclass
class Emulator:
    base_url: str

    def faults(self, **faults: Any) -> None:
        httpx.put(f"{self.base_url}/_admin/faults", json=faults).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        log = httpx.get(f"{self.base_url}/_admin/requests").json()
        return sorted(log, key=lambda e: e["monotonic"])


def _emulator(quota: int) -> Iterator[Emulator]:
    with running_server(create_app(token=TOKEN, quota_per_second=quota)) as base:
        yield Emulator(base)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    yield from _emulator(20)


@pytest.fixture
def emulator10() -> Iterator[Emulator]:
    yield from _emulator(10)


@pytest.fixture(autouse=True)
def _dispose_shared_engines() -> Iterator[None]:
    yield
    dispose_engines()


def _add(engine: Engine, base_url: str, token: str = TOKEN) -> Integration:
    with engine.begin() as conn:
        return add_integration(
            conn,
            provider="allio",
            name="acme",
            integration_uuid=None,
            api_base_url=base_url,
            credentials={"api_token": token},
            settings={},
        )


def _resource(database_url: str, **kw: Any) -> AllioResource:
    opts: dict[str, Any] = {"backoff_initial_seconds": 0.01, "backoff_max_seconds": 0.05}
    opts |= {"max_attempts": 3, "timeout_seconds": 2.0, "quota_per_second": 20}
    return AllioResource(database_url=database_url, **{**opts, **kw})


def _log_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(select(api_call_log).order_by(api_call_log.c.id)).all()


# -- happy path --------------------------------------------------------------------------


def test_reserve_list_batches_100_ids_and_merges(
    engine: Engine, database_url: str, emulator: Emulator
) -> None:
    integration = _add(engine, emulator.base_url)
    stats = CallStats()
    ids = [*range(1, 251), 5, 7]
    with _resource(database_url).client_for(integration, run_id="run-1", stats=stats) as client:
        records = client.reserve_list(ids)
        deals = client.dealcard_list(["11", 12])
    # ALLIO sends some ids as digit strings.
    assert sorted(int(r["id"]) for r in records) == list(range(1, 251))
    assert sorted(int(d["id"]) for d in deals) == [11, 12]
    sent = emulator.requests()
    assert [len(e["ids"]) for e in sent] == [100, 100, 50, 2]
    assert (stats.calls, stats.retries, stats.http_429, stats.ids_requested) == (4, 0, 0, 252)
    rows = _log_rows(engine)
    assert [(r.status_code, r.attempt, r.run_id) for r in rows] == [(200, 1, "run-1")] * 4
    assert rows[0].url == f"{emulator.base_url}/reserve/list"
    assert rows[0].provider == "allio" and rows[0].integration_id == integration.id
    assert rows[0].method == "POST" and rows[0].duration_ms > 0
    assert len(rows[0].response_body) < 4200  # truncated to a few KB
    with engine.connect() as conn:
        assert conn.execute(select(rate_limit_state.c.key)).scalars().all() == ["allio:ip:default"]


def test_paging_follows_total_and_offset() -> None:
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        seen.append(body["offset"])
        data = [{"id": i} for i in body["indexes"][body["offset"] : body["offset"] + 40]]
        return httpx.Response(200, json={"success": True, "data": data, "total": 100})

    client = AllioClient("http://allio.test", transport=httpx.MockTransport(handler))
    assert [r["id"] for r in client.reserve_list(range(100))] == list(range(100))
    assert seen == [0, 40, 80]


@pytest.mark.parametrize("total", [None, "3", -1, True])
def test_list_without_a_valid_total_is_an_error(total: object) -> None:
    """A page without `total` cannot say whether ids are missing: never guess."""

    def handler(request: httpx.Request) -> httpx.Response:
        body: dict[str, Any] = {"success": True, "data": [{"id": 1}]}
        if total is not None:
            body["total"] = total
        return httpx.Response(200, json=body)

    client = AllioClient("http://allio.test", transport=httpx.MockTransport(handler))
    with pytest.raises(ProviderResponseError, match="`total` missing"):
        client.reserve_list([1, 2])


def test_resource_inside_dagster_records_the_run_id(
    engine: Engine, database_url: str, emulator: Emulator
) -> None:
    from dagster import asset, materialize

    integration = _add(engine, emulator.base_url)

    @asset
    def reserves(allio: AllioResource) -> int:
        with allio.client_for(integration) as client:
            return len(client.reserve_list([1, 2, 3]))

    result = materialize([reserves], resources={"allio": _resource(database_url)})
    assert result.success and result.output_for_node("reserves") == 3
    assert [r.run_id for r in _log_rows(engine)] == [result.run_id]


# -- errors and retries ------------------------------------------------------------------


def test_401_is_not_retried(engine: Engine, database_url: str, emulator: Emulator) -> None:
    integration = _add(engine, emulator.base_url, token=WRONG_TOKEN)
    with (
        _resource(database_url).client_for(integration) as client,
        pytest.raises(ProviderAuthError) as err,
    ):
        client.reserve_list([1])
    assert err.value.status_code == 401 and err.value.attempts == 1
    assert len(emulator.requests()) == 1
    assert [(r.status_code, r.attempt) for r in _log_rows(engine)] == [(401, 1)]


def test_retry_after_is_honoured_and_pushes_the_shared_key(
    engine: Engine, database_url: str, emulator: Emulator
) -> None:
    integration = _add(engine, emulator.base_url)
    emulator.faults(force_429=1, retry_after="1")
    stats = CallStats()
    with _resource(database_url).client_for(integration, stats=stats) as client:
        assert len(client.reserve_list([1, 2])) == 2
    first, second = emulator.requests()
    assert (first["status"], second["status"]) == (429, 200)
    assert second["monotonic"] - first["monotonic"] >= 1.0
    assert (stats.http_429, stats.retries) == (1, 1)
    assert [(r.status_code, r.attempt) for r in _log_rows(engine)] == [(429, 1), (200, 2)]
    with engine.connect() as conn:
        tat = conn.execute(select(rate_limit_state.c.tat)).scalar_one()
    assert tat >= first["time"] + 1.0 - 0.05  # the penalty reached the shared state


def test_429_without_retry_after_waits_the_policy_penalty(
    engine: Engine, database_url: str, emulator: Emulator
) -> None:
    integration = _add(engine, emulator.base_url)
    emulator.faults(force_429=1, retry_after=None)
    with _resource(database_url, penalty_seconds=0.4).client_for(integration) as client:
        client.reserve_list([1])
    first, second = emulator.requests()
    assert first["status"] == 429 and second["status"] == 200
    assert second["monotonic"] - first["monotonic"] >= 0.4


@pytest.mark.parametrize(
    ("faults", "error", "status"),
    [
        ({"error_rate": 1.0}, ProviderUnavailableError, 503),
        ({"force_429": 10, "retry_after": "0"}, ProviderRateLimitedError, 429),
        ({"malformed_rate": 1.0}, ProviderResponseError, 200),
        ({"drop_rate": 1.0}, ProviderUnavailableError, None),
    ],
    ids=["5xx", "429", "malformed", "dropped"],
)
def test_exhausted_retries_raise_typed_errors(
    engine: Engine,
    database_url: str,
    emulator: Emulator,
    faults: dict[str, Any],
    error: type[Exception],
    status: int | None,
) -> None:
    integration = _add(engine, emulator.base_url)
    emulator.faults(**faults)
    stats = CallStats()
    with (
        _resource(database_url, penalty_seconds=0.0).client_for(integration, stats=stats) as client,
        pytest.raises(error) as err,
    ):
        client.reserve_list([1, 2, 3])
    assert err.value.attempts == 3 and "after 3 attempts" in str(err.value)
    assert (stats.calls, stats.retries, stats.failures) == (3, 2, 1)
    rows = _log_rows(engine)
    assert [r.attempt for r in rows] == [1, 2, 3]
    assert all(r.error for r in rows)
    if status is not None:
        assert all(r.status_code in (status, 500) for r in rows)
    assert len(emulator.requests()) == 3


def test_timeout_is_retried_then_raised(
    engine: Engine, database_url: str, emulator: Emulator
) -> None:
    integration = _add(engine, emulator.base_url)
    emulator.faults(latency_ms=400)
    resource = _resource(database_url, timeout_seconds=0.1, max_attempts=2)
    with resource.client_for(integration) as client, pytest.raises(ProviderUnavailableError) as err:
        client.reserve_list([1])
    assert "timeout" in str(err.value) and err.value.attempts == 2


def test_malformed_body_is_retried_and_error_envelope_is_not() -> None:
    bodies = [b'{"success": true, "da', b'{"success": true, "data": [{"id": 1}], "total": 1}']

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=bodies.pop(0) if bodies else b'{"success": false}')

    stats = CallStats()
    client = AllioClient(
        "http://allio.test",
        transport=httpx.MockTransport(handler),
        stats=stats,
        backoff_initial_seconds=0.01,
    )
    assert client.reserve_list([1]) == [{"id": 1}]
    assert stats.retries == 1
    with pytest.raises(ProviderResponseError, match="error envelope") as err:
        client.reserve_list([1])
    assert err.value.attempts == 1


# -- secrets -----------------------------------------------------------------------------


def test_secrets_never_reach_the_call_log_or_logs(
    engine: Engine,
    database_url: str,
    emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    good = _add(engine, emulator.base_url)
    bad = _add(engine, emulator.base_url, token=WRONG_TOKEN)
    resource = _resource(database_url)
    with resource.client_for(good) as client:
        client.reserve_list([1, 2])
        emulator.faults(force_429=1, retry_after="0")
        client.dealcard_list([3])
        emulator.faults(malformed_rate=1.0)
        with pytest.raises(ProviderResponseError):
            client.reserve_list([4])
        emulator.faults(malformed_rate=0.0)
    with resource.client_for(bad) as client, pytest.raises(ProviderAuthError) as err:
        client.reserve_list([1])
    rows = _log_rows(engine)
    assert len(rows) >= 6
    dump = "\n".join(repr(tuple(r)) for r in rows)
    out = capsys.readouterr()
    for secret in (TOKEN, WRONG_TOKEN):
        assert secret not in dump
        assert secret not in caplog.text
        assert secret not in out.out + out.err
        assert secret not in str(err.value) + repr(client)
    assert "Bearer" not in dump and "authorization" not in dump.lower()


def test_masking_helpers() -> None:
    url = "https://api.unisender.com/ru/api/getLists?format=json&api_key=K3Y&token=T0K"
    assert mask_url(url) == (
        "https://api.unisender.com/ru/api/getLists?format=json&api_key=****&token=****"
    )
    uon = "https://api.u-on.ru/UONKEY123456/user/phone/79001234567.json"
    assert mask_url(uon, ["UONKEY123456"]) == "https://api.u-on.ru/****/user/phone/79001234567.json"
    body = redact_body('{"apiLogin": "abc", "x": 1, "access_token": "zzz"}')
    assert body == '{"apiLogin": "****", "x": 1, "access_token": "****"}'
    assert redact_body("x" * 5000, limit=100).startswith("x" * 100 + "…[4900 more")


# -- many OS processes -------------------------------------------------------------------


@pytest.mark.slow
def test_three_processes_share_the_quota(
    engine: Engine, database_url: str, emulator10: Emulator
) -> None:
    integration = _add(engine, emulator10.base_url)
    with warm_pool(3) as pool:
        start_at = time.time() + 0.3
        jobs = [
            {
                "database_url": database_url,
                "integration_id": integration.id,
                "ids": [i * 1000 + 1],
                "start_at": start_at,
                "stop_at": start_at + 2.0,
                "quota": 10,
            }  # fmt: skip
            for i in range(3)
        ]
        results = pool.map(client_worker, jobs)
    log = emulator10.requests()
    assert all(r["done"] >= 4 for r in results)  # every process got its share
    assert [e for e in log if e["status"] != 200] == []
    times = [e["monotonic"] for e in log]
    assert max_in_window(times) <= 10
    assert (len(times) - 1) / (times[-1] - times[0]) >= 0.9 * 10


@pytest.mark.slow
def test_429_storm_makes_every_process_back_off(
    engine: Engine, database_url: str, emulator10: Emulator
) -> None:
    integration = _add(engine, emulator10.base_url)
    with warm_pool(3) as pool:
        emulator10.faults(force_429_seconds=1.8, retry_after="1")  # covers every first call
        start_at = time.time() + 0.3
        jobs = [
            {
                "database_url": database_url,
                "integration_id": integration.id,
                "ids": [i * 1000 + 1],
                "start_at": start_at,
                "calls": 3,
                "quota": 10,
            }  # fmt: skip
            for i in range(3)
        ]
        results = pool.map(client_worker, jobs)
    log = emulator10.requests()
    assert all(r["done"] == 3 and r["http_429"] >= 1 for r in results)  # every process hit it
    rejected = [e["monotonic"] for e in log if e["status"] == 429]
    assert max_in_window(rejected) <= 3  # at most one try per process per Retry-After
    for i in range(3):  # after each 429 the same process waited at least Retry-After
        mine = [e for e in log if e["ids"] == [i * 1000 + 1]]
        for before, after in zip(mine, mine[1:], strict=False):
            if before["status"] == 429:
                assert after["monotonic"] - before["monotonic"] >= 1.0
