"""Helpers for the receiver tests: serve a receiver, add integrations, cut the database.

Test modules import what they use (`from tests.receiver_fixtures import ...`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from crm_schema.integrations import Integration, add_integration, set_active
from provider_emulators.testing import running_server
from webhook_receiver.app import create_app


@contextlib.contextmanager
def serve_receiver(
    database_url: str, *, server_options: dict[str, Any] | None = None, **overrides: Any
) -> Iterator[str]:
    """A receiver on a real uvicorn server; yields its base URL.

    ``overrides`` go to the receiver's config, ``server_options`` to uvicorn's (e.g.
    ``{"access_log": True, "log_level": "info"}``).
    """
    app = create_app(database_url, **overrides)
    with running_server(app, **(server_options or {})) as base_url:
        yield base_url


def add_allio(engine: Engine, name: str = "acme", uuid: str | None = None) -> Integration:
    """A fresh active ALLIO integration (as the CLI would add it)."""
    with engine.begin() as conn:
        return add_integration(
            conn,
            provider="allio",
            name=name,
            integration_uuid=uuid or f"uuid-{name}-0001",
            api_base_url="http://allio.invalid",
            credentials={"token": "secret-token"},
        )


def toggle(engine: Engine, integration: Integration, active: bool) -> None:
    """Enable / disable directly in the database (what `crm-sync` does)."""
    with engine.begin() as conn:
        set_active(conn, integration.id, active)


def webhook(integration: Integration, indexes: list[Any] | None = None, **extra: Any) -> dict:
    """A valid ALLIO webhook body for `integration`."""
    return {
        "uuid": integration.integration_uuid,
        "command": "RESERVE_ADD",
        "indexes": [111, 222] if indexes is None else indexes,
        **extra,
    }


class TcpProxy:
    """A TCP relay (asyncio, own thread) between the receiver and PostgreSQL.

    `stop()` closes the listener and every relayed connection, as a crashed or
    unreachable database would; `start()` listens again on the same port.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def url_for(self, database_url: str) -> str:
        """`database_url` rewritten to go through the proxy."""
        url = make_url(database_url).set(host="127.0.0.1", port=self.port)
        return url.render_as_string(hide_password=False)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))

    async def _start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def start(self) -> TcpProxy:
        self._run(self._start())
        return self

    def stop(self) -> None:
        self._run(self._stop())

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@contextlib.contextmanager
def sqlite_write_lock(database_url: str) -> Iterator[None]:
    """Hold SQLite's write lock from another connection (BEGIN EXCLUSIVE)."""
    path = make_url(database_url).database
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()
