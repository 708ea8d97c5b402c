"""PostgreSQL store: asyncpg with group commit.

Requests append to a queue; a writer task owning one connection (`pg_writer_connections`,
default 1 per process) takes everything queued (up to `max_batch`) and inserts it with
one statement per inbox table (one transaction, one WAL flush). Ids are drawn from the
table's sequence into an array in row order and inserted explicitly, so each request
gets its own row's id without relying on the order of `RETURNING`; nobody gets an id
before the COMMIT. Connections set `synchronous_commit` and `statement_timeout` explicitly.
Small reads (health check, integrations) use a separate control connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from crm_schema.engine import normalize_url
from crm_schema.tables import integrations
from webhook_receiver.config import ReceiverConfig
from webhook_receiver.stores.base import (
    ALLOWLIST_SETTING,
    SETTINGS_COLUMN,
    InboxRow,
    InboxTable,
    IntegrationEntry,
    StoreError,
    StoreUnavailable,
    entries_from_rows,
    fail_all,
    resolve,
    select_integrations,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_ALLOWLIST = f"({SETTINGS_COLUMN}::json -> '{ALLOWLIST_SETTING}')"
SELECT_INTEGRATIONS = select_integrations(
    f"CASE WHEN json_typeof({_ALLOWLIST}) = 'array' THEN {_ALLOWLIST}::text END"
)
FIND_INTEGRATION = f"{SELECT_INTEGRATIONS} WHERE {integrations.c.webhook_key.name} = $1"

# SQLSTATE classes that mean "the server cannot work right now", not "this row is bad":
# 08 connection, 40 rollback (serialization / deadlock), 53 resources, 57 operator, 58 system.
_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")


def insert_sql(inbox: InboxTable, sequence: str) -> str:
    """One statement inserting N rows of ``inbox`` ($1 = N, then one array per column) and
    returning their ids as one array, element i for row i.

    The ids are drawn from ``sequence`` first and put in row order by an aggregate's
    ORDER BY, so each request gets its own row's id without relying on `RETURNING` order.
    """
    cols = inbox.columns
    arrays = ", ".join(
        f"${i + 2}::{'text' if t == 'json' else t}[]" for i, t in enumerate(inbox.pg_types)
    )
    values = ", ".join(
        f"u.{c}::json" if t == "json" else f"u.{c}"
        for c, t in zip(cols, inbox.pg_types, strict=True)
    )
    seq = sequence.replace("'", "''")
    return (
        "WITH ids AS MATERIALIZED ("
        f"SELECT array_agg(nextval('{seq}'::regclass) ORDER BY g) AS a "
        "FROM generate_series(1, $1::int) AS g), "
        f"ins AS (INSERT INTO {inbox.name} (id, {', '.join(cols)}) "
        f"SELECT (SELECT a FROM ids)[u.ord], {values} "
        f"FROM unnest({arrays}) WITH ORDINALITY AS u({', '.join(cols)}, ord)) "
        "SELECT a FROM ids"
    )


def asyncpg_dsn(database_url: str) -> str:
    """A plain `postgresql://` DSN asyncpg accepts (driver suffixes dropped)."""
    return normalize_url(database_url).set(drivername="postgresql").render_as_string(False)


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _is_outage(exc: BaseException, conn: asyncpg.Connection | None) -> bool:
    if conn is None or conn.is_closed():
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return (exc.sqlstate or "").startswith(_TRANSIENT_CLASSES)
    return True  # OSError, timeouts, protocol / interface errors


class PostgresStore:
    """Group-committing writer on asyncpg (see module docstring)."""

    def __init__(self, config: ReceiverConfig) -> None:
        self._dsn = asyncpg_dsn(config.database_url)
        self._config = config
        self.commit_wait_seconds = config.commit_timeout_seconds
        self._pending: deque[tuple[InboxRow, asyncio.Future[int]]] = deque()
        self._sql: dict[str, str] = {}
        self._wakeup = asyncio.Event()
        self._writers: list[asyncio.Task[None]] = []
        self._control: asyncpg.Connection | None = None
        self._control_lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._busy = 0
        self._available = True
        self._gathered: asyncio.Future[None] | None = None
        self._gather_target = 0

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        conns = await asyncio.gather(
            *(self._try_connect() for _ in range(self._config.pg_writer_connections))
        )
        self._writers = [
            asyncio.create_task(self._writer(conn), name=f"pg-writer-{i}")
            for i, conn in enumerate(conns)
        ]

    async def close(self) -> None:
        self._closing = True
        deadline = asyncio.get_running_loop().time() + 5.0
        while (self._pending or self._busy) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        for task in self._writers:
            task.cancel()
        await asyncio.gather(*self._writers, return_exceptions=True)
        self._writers = []
        fail_all([fut for _, fut in self._pending], StoreUnavailable("receiver is shutting down"))
        self._pending.clear()
        if self._control is not None:
            self._control.terminate()
            self._control = None

    # -- writes ----------------------------------------------------------------------

    def insert(self, row: InboxRow) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = self._loop.create_future()  # type: ignore[union-attr]
        if self._closing:
            fut.set_exception(StoreUnavailable("receiver is shutting down"))
            return fut
        pending = self._pending
        pending.append((row, fut))
        self._wakeup.set()
        gathered = self._gathered
        if gathered is not None and len(pending) >= self._gather_target and not gathered.done():
            gathered.set_result(None)
        return fut

    async def _gather(self, target: int, delay: float) -> None:
        """Wait until `target` rows are queued, at most `delay` seconds."""
        if self._gathered is not None:  # another writer is already gathering
            return
        loop = self._loop
        self._gather_target = target
        gathered = self._gathered = loop.create_future()  # type: ignore[union-attr]
        timer = loop.call_later(delay, _set_done, gathered)  # type: ignore[union-attr]
        try:
            await gathered
        finally:
            timer.cancel()
            self._gathered = None

    async def _writer(self, conn: asyncpg.Connection | None) -> None:
        """Take queued rows in batches and write them, one transaction per batch.

        Group commit: rows arriving during a commit form the next batch. While webhooks
        come in concurrently, the writer also waits (at most `group_commit_delay_ms`) for
        as many rows as were in flight around the last commit: the senders of the batch
        just answered usually come back within a fraction of a millisecond, and one
        transaction for all of them costs the database a fraction of two.
        """
        pending, limit = self._pending, self._config.max_batch
        delay = self._config.group_commit_delay_ms / 1000
        in_flight = 0  # rows committed last time + rows that queued meanwhile
        try:
            while True:
                while not pending:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                target = min(in_flight, limit)
                if delay and target > 1 and len(pending) < target:
                    await self._gather(target, delay)
                count = min(len(pending), limit)
                batch = [pending.popleft() for _ in range(count)]
                # A row is written only if its statement can end before its request gives
                # up; the others get their 503 now (a 503 never leaves a row behind). Rows
                # queue in arrival order, so when the oldest is in time, all are.
                longest = self._config.statement_timeout_seconds + 0.5
                if not batch[0][0].can_finish(time.monotonic(), longest):
                    batch = self._drop_late(batch, longest)
                    if not batch:
                        continue
                self._busy += 1
                try:
                    conn = await self._write_batch(conn, batch)
                finally:
                    self._busy -= 1
                in_flight = count + len(pending)
        finally:
            if conn is not None:
                conn.terminate()

    @staticmethod
    def _drop_late(
        batch: list[tuple[InboxRow, asyncio.Future[int]]], longest: float
    ) -> list[tuple[InboxRow, asyncio.Future[int]]]:
        now = time.monotonic()
        late = [f for r, f in batch if not f.done() and not r.can_finish(now, longest)]
        fail_all(late, StoreUnavailable("database did not commit in time"))
        return [(r, f) for r, f in batch if not f.done()]

    async def _write_batch(
        self, conn: asyncpg.Connection | None, batch: list[tuple[InboxRow, asyncio.Future[int]]]
    ) -> asyncpg.Connection | None:
        """Insert one batch; returns the connection to keep (None after an outage)."""
        rows = [row for row, _ in batch]
        futures = [fut for _, fut in batch]
        try:
            if conn is None or conn.is_closed():
                conn = await self._connect()
            ids = await self._insert(conn, rows)
        except asyncio.CancelledError:
            fail_all(futures, StoreUnavailable("receiver is shutting down"))
            raise
        except Exception as exc:
            if not _is_outage(exc, conn):
                resolve(futures, await self._insert_one_by_one(conn, rows))  # type: ignore[arg-type]
                return conn
            self._mark_unavailable(exc)
            fail_all(futures, StoreUnavailable("database unavailable"))
            if conn is not None:
                conn.terminate()
            return None
        self._mark_available()
        resolve(futures, ids)  # type: ignore[arg-type]
        return conn

    async def _insert(self, conn: asyncpg.Connection, rows: list[InboxRow]) -> list[int]:
        """Insert a batch (one transaction); ids in the order of ``rows``."""
        by_table: dict[str, list[int]] = {}
        for position, row in enumerate(rows):
            by_table.setdefault(row.table.name, []).append(position)
        ids: list[int] = [0] * len(rows)
        if len(by_table) == 1:  # one statement is its own transaction: no BEGIN / COMMIT
            await self._insert_table(conn, rows, next(iter(by_table.values())), ids)
            return ids
        async with conn.transaction():
            for positions in by_table.values():
                await self._insert_table(conn, rows, positions, ids)
        return ids

    async def _insert_table(
        self, conn: asyncpg.Connection, rows: list[InboxRow], positions: list[int], ids: list[int]
    ) -> None:
        inbox = rows[positions[0]].table
        timeout = self._config.statement_timeout_seconds
        sql = self._sql.get(inbox.name)
        if sql is None:
            sequence = await conn.fetchval(
                "SELECT pg_get_serial_sequence($1, 'id')", inbox.name, timeout=timeout
            )
            sql = self._sql[inbox.name] = insert_sql(inbox, sequence)
        columns = [[rows[p].values[i] for p in positions] for i in range(len(inbox.columns))]
        new_ids = await conn.fetchval(sql, len(positions), *columns, timeout=timeout)
        if new_ids is None or len(new_ids) != len(positions):  # never hand out a wrong id
            raise StoreError(f"got {len(new_ids or ())} ids for {len(positions)} rows")
        for position, new_id in zip(positions, new_ids, strict=True):
            ids[position] = new_id

    async def _insert_one_by_one(
        self, conn: asyncpg.Connection, rows: list[InboxRow]
    ) -> list[int | BaseException]:
        """After a data error, insert rows singly so one bad row fails alone."""
        results: list[int | BaseException] = []
        for row in rows:
            try:
                results.append((await self._insert(conn, [row]))[0])
            except Exception as exc:
                if _is_outage(exc, conn):
                    self._mark_unavailable(exc)
                    results.append(StoreUnavailable("database unavailable"))
                else:
                    log.error(
                        "%s insert refused for integration %s: %s",
                        row.table.name,
                        row.integration_id,
                        type(exc).__name__,
                    )
                    results.append(StoreError("webhook could not be stored"))
        return results

    def _mark_unavailable(self, exc: BaseException) -> None:
        if self._available:
            log.warning("PostgreSQL unavailable for writes: %s", type(exc).__name__)
        self._available = False

    def _mark_available(self) -> None:
        if not self._available:
            log.warning("PostgreSQL available for writes again")
        self._available = True

    # -- connections and small reads -----------------------------------------------------

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            self._dsn,
            timeout=self._config.connect_timeout_seconds,
            server_settings={
                "application_name": "crm-sync-receiver",
                # Explicit, whatever the server's default: a 200 means the row is durable.
                "synchronous_commit": "on",
                "statement_timeout": str(int(self._config.statement_timeout_seconds * 1000)),
            },
        )

    async def _try_connect(self) -> asyncpg.Connection | None:
        try:
            return await self._connect()
        except Exception as exc:
            self._mark_unavailable(exc)
            return None

    async def _on_control(self, call: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async with self._control_lock:
            try:
                if self._control is None or self._control.is_closed():
                    self._control = await self._connect()
                return await call(self._control)
            except Exception as exc:
                if self._control is not None:
                    self._control.terminate()
                    self._control = None
                raise StoreUnavailable("database unavailable") from exc

    async def ping(self) -> None:
        timeout = self._config.statement_timeout_seconds
        await self._on_control(lambda conn: conn.fetchval("SELECT 1", timeout=timeout))

    async def load_integrations(self) -> dict[str, IntegrationEntry]:
        timeout = self._config.statement_timeout_seconds
        rows = await self._on_control(lambda conn: conn.fetch(SELECT_INTEGRATIONS, timeout=timeout))
        return entries_from_rows(rows)

    async def find_integration(self, webhook_key: str) -> IntegrationEntry | None:
        timeout = self._config.statement_timeout_seconds
        rows = await self._on_control(
            lambda conn: conn.fetch(FIND_INTEGRATION, webhook_key, timeout=timeout)
        )
        return entries_from_rows(rows).get(webhook_key)
