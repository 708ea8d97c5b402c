"""The receiver under database outages and integration changes, on SQLite and PostgreSQL.

PostgreSQL goes down through a TCP proxy that is shut down (the real server keeps
running); SQLite is "down" while another connection holds its write lock past the
receiver's busy timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from sqlalchemy.engine import make_url

from provider_emulators.reliability.stack import TcpProxy
from tests.conftest import count_rows
from tests.receiver_fixtures import (
    add_allio,
    serve_receiver,
    sqlite_write_lock,
    toggle,
    webhook,
)

ROWS = "allio_webhook"
BUSY_MS = 300  # the receiver's SQLite busy timeout in these tests


@pytest.fixture
def outage(
    database_url: str,
) -> Iterator[tuple[str, Callable[[], contextlib.AbstractContextManager]]]:
    """(URL the receiver should use, context manager during which the database is down)."""
    if database_url.startswith("sqlite"):
        yield database_url, lambda: sqlite_write_lock(database_url)
        return
    url = make_url(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).restore()

    @contextlib.contextmanager
    def down() -> Iterator[None]:
        proxy.cut()
        try:
            yield
        finally:
            proxy.restore()

    try:
        yield proxy.url_for(database_url), down
    finally:
        proxy.close()


def test_database_down_503_then_recovers(outage, engine) -> None:  # noqa: ANN001
    receiver_url, database_down = outage
    integ = add_allio(engine)
    with (
        serve_receiver(
            receiver_url, sqlite_busy_timeout_ms=BUSY_MS, integrations_refresh_seconds=0.5
        ) as base,
        httpx.Client(base_url=base, timeout=15) as client,
    ):
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.post(integ.webhook_path, json=webhook(integ)).status_code == 200
        assert count_rows(engine, ROWS) == 1

        with database_down():
            started = time.monotonic()
            for _ in range(3):
                resp = client.post(integ.webhook_path, json=webhook(integ))
                assert resp.status_code == 503, resp.text
                assert int(resp.headers["retry-after"]) > 0
                assert resp.json()["error"]
            assert time.monotonic() - started < 3 * (BUSY_MS / 1000 + 2)  # answers quickly

            async def burst() -> list[int]:
                async with httpx.AsyncClient(base_url=base, timeout=15) as aclient:
                    answers = await asyncio.gather(
                        *(aclient.post(integ.webhook_path, json=webhook(integ)) for _ in range(20))
                    )
                return [a.status_code for a in answers]

            assert set(asyncio.run(burst())) == {503}
            health = client.get("/healthz")
            assert health.status_code == 503 and health.json()["error"]
            assert "retry-after" in health.headers
            # Still down after an integrations refresh: 503 from the last good map, not 404.
            time.sleep(1.2)
            assert client.post(integ.webhook_path, json=webhook(integ)).status_code == 503

        # Nothing was acknowledged and nothing was written during the outage.
        assert count_rows(engine, ROWS) == 1
        assert client.get("/healthz").status_code == 200
        resp = client.post(integ.webhook_path, json=webhook(integ))
        assert resp.status_code == 200, resp.text
    assert count_rows(engine, ROWS) == 2


def test_receiver_starts_while_database_down(outage, engine) -> None:  # noqa: ANN001
    receiver_url, database_down = outage
    integ = add_allio(engine)
    with (
        database_down(),
        serve_receiver(receiver_url, sqlite_busy_timeout_ms=BUSY_MS) as base,
        httpx.Client(base_url=base, timeout=15) as client,
    ):
        # Starting is not fatal; health and webhooks answer 503 until the database is back.
        assert client.get("/healthz").status_code == 503
        assert client.post(integ.webhook_path, json=webhook(integ)).status_code == 503
    assert count_rows(engine, ROWS) == 0


def _wait_for_status(
    client: httpx.Client, integ, expected: int, within: float = 5.0
) -> tuple[float, int]:  # noqa: ANN001
    """Post until the answer is `expected`; returns (seconds taken, number of 200s seen)."""
    started = time.monotonic()
    accepted = 0
    while True:
        status = client.post(integ.webhook_path, json=webhook(integ)).status_code
        if status == 200:
            accepted += 1
        if status == expected:
            return time.monotonic() - started, accepted
        assert status in (200, 404), status
        assert time.monotonic() - started < within, f"still {status} after {within} s"
        time.sleep(0.1)


def test_disable_enable_add_take_effect_within_5s(database_url: str, engine) -> None:
    integ = add_allio(engine)
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        assert client.post(integ.webhook_path, json=webhook(integ)).status_code == 200
        accepted = 1

        toggle(engine, integ, False)  # as `crm-sync integrations disable` does
        _, seen = _wait_for_status(client, integ, 404)
        accepted += seen
        assert count_rows(engine, ROWS) == accepted

        toggle(engine, integ, True)
        _, seen = _wait_for_status(client, integ, 200)
        accepted += seen
        assert count_rows(engine, ROWS) == accepted

        # Added while the receiver runs: usable right away (one direct lookup) or within 5 s.
        newer = add_allio(engine, "newer", "uuid-newer")
        _wait_for_status(client, newer, 200)
        assert count_rows(engine, ROWS) == accepted + 1

        # Junk keys do not hit the database one by one: they stay 404, cheaply.
        for i in range(50):
            assert client.post(f"/webhooks/allio/junk-{i}", json=webhook(integ)).status_code == 404
    assert count_rows(engine, ROWS) == accepted + 1


@contextlib.contextmanager
def _held(database_url: str, seconds: float) -> Iterator[None]:
    """Another writer holds the webhook table for ``seconds`` (in a thread)."""
    import threading

    from sqlalchemy import create_engine

    ready, done = threading.Event(), threading.Event()

    def hold() -> None:
        if database_url.startswith("sqlite"):
            with sqlite_write_lock(database_url):
                ready.set()
                time.sleep(seconds)
        else:
            eng = create_engine(make_url(database_url).set(drivername="postgresql+psycopg2"))
            with eng.begin() as conn:
                conn.exec_driver_sql(f"LOCK TABLE {ROWS} IN ACCESS EXCLUSIVE MODE")
                ready.set()
                time.sleep(seconds)
            eng.dispose()
        done.set()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    ready.wait(5)
    try:
        yield
    finally:
        thread.join(seconds + 10)


def test_a_commit_that_does_not_come_in_time_is_a_503_and_leaves_no_row(
    database_url: str, engine
) -> None:
    integ = add_allio(engine)
    with (
        serve_receiver(
            database_url,
            sqlite_busy_timeout_ms=10_000,
            statement_timeout_seconds=1.0,
            commit_timeout_seconds=2.0,
        ) as base,
        httpx.Client(base_url=base, timeout=15) as client,
    ):
        assert client.post(integ.webhook_path, json=webhook(integ)).status_code == 200
        with _held(database_url, 4.0):
            started = time.monotonic()
            resp = client.post(integ.webhook_path, json=webhook(integ, [7]))
            waited = time.monotonic() - started
            assert resp.status_code == 503, resp.text
            assert int(resp.headers["retry-after"]) > 0 and resp.json()["error"]
            assert waited < 3.0  # bounded by the commit timeout, not by the lock
        time.sleep(1.0)  # the lock is gone: nothing the 503 refused may appear now
        assert count_rows(engine, ROWS) == 1
        assert client.post(integ.webhook_path, json=webhook(integ)).status_code == 200
        assert count_rows(engine, ROWS) == 2


@pytest.mark.parametrize("empty_database_url", ["postgres"], indirect=True)
def test_postgres_connections_commit_synchronously_with_a_statement_timeout(
    empty_database_url: str,
) -> None:
    database_url = empty_database_url
    from webhook_receiver.config import ReceiverConfig
    from webhook_receiver.stores.postgres import PostgresStore

    async def settings() -> tuple[str, str]:
        store = PostgresStore(ReceiverConfig.load(database_url, statement_timeout_seconds=4))
        conn = await store._connect()
        try:
            return (
                await conn.fetchval("SHOW synchronous_commit"),
                await conn.fetchval("SHOW statement_timeout"),
            )
        finally:
            await conn.close()

    assert asyncio.run(settings()) == ("on", "4s")
