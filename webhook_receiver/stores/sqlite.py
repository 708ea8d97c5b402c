"""SQLite store: the stdlib sqlite3 in one dedicated writer thread, with group commit.

Requests put rows on a thread-safe queue; the writer thread takes everything queued
(up to `max_batch`), writes it in one `BEGIN IMMEDIATE ... COMMIT` (WAL), and hands the
ids back to the event loop in one callback.

One timeout bounds a request: its row may wait for SQLite's write lock for the busy
timeout, counted from when the row was queued — not from when its batch started, so a
request never waits behind another batch's failed wait as well (`commit_wait_seconds`;
the handler's deadline fails the request in time, and a batch waits for the lock only
while its newest row could still be written). A lock held elsewhere longer than that
makes the rows fail with StoreUnavailable (503), and a row whose request gave up is never
written.

Receiver processes (uvicorn --workers N) take turns through a `flock` on a side file
(`<db>.receiver-lock`) before BEGIN IMMEDIATE: the kernel queues them, where SQLite's
busy handler would make them poll with sleeps of up to 100 ms and starve each other.
A writer collects its batch once its turn has come, so rows that queued meanwhile go
in the same transaction instead of waiting for another turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from crm_schema.engine import normalize_url, sqlite_path
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

# Settings are JSON text here: a value that is not JSON must not fail the whole refresh.
_ALLOWLIST_PATH = f"'$.{ALLOWLIST_SETTING}'"
SELECT_INTEGRATIONS = select_integrations(
    f"CASE WHEN json_valid({SETTINGS_COLUMN}) THEN "
    f"CASE WHEN json_type({SETTINGS_COLUMN}, {_ALLOWLIST_PATH}) = 'array' "
    f"THEN json_extract({SETTINGS_COLUMN}, {_ALLOWLIST_PATH}) END END"
)
FIND_INTEGRATION = f"{SELECT_INTEGRATIONS} WHERE {integrations.c.webhook_key.name} = ?"
# Once the lock is held, a batch's inserts and COMMIT take well under this.
WRITE_SECONDS = 0.5
# The format SQLAlchemy uses for DateTime on SQLite (naive, here always UTC).
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
# Errors that concern one row (constraint, bad value), not the database as a whole.
_ROW_ERRORS = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError)

_Item = tuple[InboxRow, asyncio.Future[int]]
# Lower a connection's busy timeout for a batch only when it saves more than this.
_BUSY_SLACK_MS = 20


def insert_sql(inbox: InboxTable) -> str:
    """`INSERT` of one ``inbox`` row (parameters in `inbox.columns` order)."""
    marks = ", ".join("?" for _ in inbox.columns)
    return f"INSERT INTO {inbox.name} ({', '.join(inbox.columns)}) VALUES ({marks})"


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a shared probe's outcome as seen (its waiters may all have given up)."""
    if not future.cancelled():
        future.exception()


def _params(row: InboxRow) -> tuple[object, ...]:
    if not row.table.timestamp_positions:
        return row.values
    values = list(row.values)
    for i in row.table.timestamp_positions:
        if values[i] is not None:
            values[i] = values[i].strftime(TIMESTAMP_FORMAT)
    return tuple(values)


class SqliteStore:
    """Group-committing writer thread on sqlite3 (see module docstring)."""

    def __init__(self, config: ReceiverConfig) -> None:
        path = sqlite_path(normalize_url(config.database_url))
        if path is None:
            raise ValueError("the receiver needs a SQLite file, not an in-memory database")
        self._path: Path = path
        self._config = config
        self._busy_ms = int(config.sqlite_busy_timeout_ms)
        # The longest a request waits for its row's COMMIT: the busy timeout (the lock
        # wait) plus the time the write itself may take, within the commit timeout.
        self.commit_wait_seconds = min(
            config.commit_timeout_seconds, self._busy_ms / 1000 + WRITE_SECONDS
        )
        self._writer_busy_ms = self._busy_ms  # the writer connection's busy timeout now
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._control: sqlite3.Connection | None = None
        self._control_lock = threading.Lock()
        # The write probe (health check) has its own connection: its wait for the lock
        # must never hold up the integration reads. Concurrent pings share one probe.
        self._probe_conn: sqlite3.Connection | None = None
        self._probe_lock = threading.Lock()
        self._probe: asyncio.Future[None] | None = None
        self._closing = False
        self._available = True
        self._turn_fd: int | None = None
        self._sql: dict[str, str] = {}

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            lock_path = self._path.with_name(self._path.name + ".receiver-lock")
            self._turn_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:  # read-only folder: fall back to SQLite's busy handler alone
            self._turn_fd = None
        self._thread = threading.Thread(target=self._writer_main, name="sqlite-writer", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        self._closing = True
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join, 10.0)
            self._thread = None
        leftovers: list[asyncio.Future[int]] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                leftovers.append(item[1])
        fail_all(leftovers, StoreUnavailable("receiver is shutting down"))
        with self._control_lock:
            if self._control is not None:
                self._control.close()
                self._control = None
        with self._probe_lock:
            if self._probe_conn is not None:
                self._probe_conn.close()
                self._probe_conn = None
        if self._turn_fd is not None:
            os.close(self._turn_fd)
            self._turn_fd = None

    # -- writes ------------------------------------------------------------------------

    def insert(self, row: InboxRow) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = self._loop.create_future()  # type: ignore[union-attr]
        if self._closing:
            fut.set_exception(StoreUnavailable("receiver is shutting down"))
        else:
            self._queue.put((row, fut))
        return fut

    def _connect(self) -> sqlite3.Connection:
        # mode=rw: a missing file is an outage, not a new empty database.
        conn = sqlite3.connect(
            f"file:{quote(str(self._path.resolve()))}?mode=rw",
            uri=True,
            timeout=self._config.sqlite_busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._config.sqlite_synchronous.upper()}")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _writer_main(self) -> None:
        get = self._queue.get
        conn: sqlite3.Connection | None = None
        stop = False
        while not stop:
            item = get()
            if item is None:
                break
            batch = [item]
            try:
                with self._writers_turn():
                    # Rows that queued while this process waited for its turn come along.
                    stop = self._take_more(batch)
                    conn, results = self._write_batch(conn, [r for r, _ in batch])
            except OSError as exc:  # the turn could not be taken (flock failed)
                self._mark_unavailable(exc)
                results = [StoreUnavailable("database unavailable")] * len(batch)
            futures = [fut for _, fut in batch]
            try:
                self._loop.call_soon_threadsafe(resolve, futures, results)  # type: ignore[union-attr]
            except RuntimeError:  # the event loop is gone (process shutting down)
                break
        if conn is not None:
            conn.close()

    def _take_more(self, batch: list[_Item]) -> bool:
        """Add what is queued to ``batch`` (up to `max_batch`); True: stop after it."""
        get_nowait, limit = self._queue.get_nowait, self._config.max_batch
        while len(batch) < limit:
            try:
                item = get_nowait()
            except queue.Empty:
                return False
            if item is None:
                return True
            batch.append(item)
        return False

    def _write_batch(
        self, conn: sqlite3.Connection | None, rows: list[InboxRow]
    ) -> tuple[sqlite3.Connection | None, list[int | BaseException]]:
        """Write one batch (this process's turn held); returns the connection to keep
        (None after a failure) and each row's id or error."""
        lock_wait = self._lock_wait(rows, time.monotonic())
        if lock_wait <= 0:  # no row could be written in time: do not even wait for the lock
            return conn, [StoreUnavailable("database did not commit in time")] * len(rows)
        try:
            if conn is None:
                conn = self._connect()
                self._writer_busy_ms = self._busy_ms
            self._limit_busy_wait(conn, lock_wait)
            results = self._write_locked(conn, rows)
        except Exception as exc:  # locked, I/O error, missing file or table, ...
            if not isinstance(exc, sqlite3.Error):
                log.exception("SQLite writer failed unexpectedly")
            self._mark_unavailable(exc)
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            return None, [StoreUnavailable("database unavailable")] * len(rows)
        self._mark_available()
        return conn, results

    def _lock_wait(self, rows: list[InboxRow], now: float) -> float:
        """How long this batch may wait for SQLite's lock: the busy timeout, cut short to
        when its newest row could no longer be written before its request gives up."""
        busy = self._busy_ms / 1000
        latest = 0.0
        for row in rows:
            if not row.deadline:  # a row without a deadline waits the whole busy timeout
                return busy
            if row.deadline > latest:
                latest = row.deadline
        return min(busy, latest - now - WRITE_SECONDS)

    def _limit_busy_wait(self, conn: sqlite3.Connection, seconds: float) -> None:
        """Set ``conn``'s busy timeout to ``seconds`` (at most the configured one), only
        when that changes it by more than a few milliseconds (no statement per batch)."""
        full, current = self._busy_ms, self._writer_busy_ms
        wanted = full if seconds * 1000 >= full else max(1, int(seconds * 1000))
        if wanted == current or (wanted != full and abs(wanted - current) <= _BUSY_SLACK_MS):
            return
        conn.execute(f"PRAGMA busy_timeout={wanted}")
        self._writer_busy_ms = wanted

    @contextlib.contextmanager
    def _writers_turn(self) -> Iterator[None]:
        """Wait (in the kernel, FIFO-ish) for this process's turn among receiver writers."""
        fd = self._turn_fd
        if fd is None:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _write_locked(
        self, conn: sqlite3.Connection, rows: list[InboxRow]
    ) -> list[int | BaseException]:
        """One transaction for the whole batch (this process's turn held); a bad row fails
        alone (statement rollback). Rows whose request gave up while the lock was awaited
        are skipped (the request answered 503, so the row must not appear)."""
        results: list[int | BaseException] = []
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        now = time.monotonic()
        try:
            for row in rows:
                if not row.can_finish(now, WRITE_SECONDS):
                    results.append(StoreUnavailable("database did not commit in time"))
                    continue
                sql = self._sql.get(row.table.name)
                if sql is None:
                    sql = self._sql[row.table.name] = insert_sql(row.table)
                try:
                    cur.execute(sql, _params(row))
                except _ROW_ERRORS as exc:
                    log.error(
                        "%s insert refused for integration %s: %s",
                        row.table.name,
                        row.integration_id,
                        type(exc).__name__,
                    )
                    results.append(StoreError("webhook could not be stored"))
                else:
                    results.append(cur.lastrowid)  # type: ignore[arg-type]
            cur.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

    def _mark_unavailable(self, exc: BaseException) -> None:
        if self._available:
            log.warning("SQLite unavailable for writes: %s", exc)
        self._available = False

    def _mark_available(self) -> None:
        if not self._available:
            log.warning("SQLite available for writes again")
        self._available = True

    # -- small reads (worker threads, one control connection) ----------------------------

    def _on_control_sync(self, call: Callable[[sqlite3.Connection], T]) -> T:
        with self._control_lock:
            try:
                if self._control is None:
                    self._control = self._connect()
                return call(self._control)
            except sqlite3.Error as exc:
                if self._control is not None:
                    self._control.close()
                    self._control = None
                raise StoreUnavailable("database unavailable") from exc

    async def _on_control(self, call: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._on_control_sync, call)

    def _probe_write(self) -> None:
        """Take the write lock and give it back (on the probe connection)."""
        with self._probe_lock:
            try:
                if self._probe_conn is None:
                    self._probe_conn = self._connect()
                conn = self._probe_conn
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(f"SELECT 1 FROM {integrations.name} LIMIT 1").fetchall()
                finally:
                    conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                if self._probe_conn is not None:
                    self._probe_conn.close()
                    self._probe_conn = None
                raise StoreUnavailable("database unavailable") from exc

    async def ping(self) -> None:
        """Raise StoreUnavailable unless a write could start now (within the busy timeout).

        Pings while one is running share its answer: a health checker polling during a
        lock never piles up threads, and never holds up the integration reads.
        """
        probe = self._probe
        if probe is None or probe.done():
            probe = self._probe = asyncio.ensure_future(asyncio.to_thread(self._probe_write))
            probe.add_done_callback(_retrieve)
        await asyncio.shield(probe)

    async def load_integrations(self) -> dict[str, IntegrationEntry]:
        rows = await self._on_control(lambda conn: conn.execute(SELECT_INTEGRATIONS).fetchall())
        return entries_from_rows(rows)

    async def find_integration(self, webhook_key: str) -> IntegrationEntry | None:
        rows = await self._on_control(
            lambda conn: conn.execute(FIND_INTEGRATION, (webhook_key,)).fetchall()
        )
        return entries_from_rows(rows).get(webhook_key)
