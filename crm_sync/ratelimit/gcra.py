"""GCRA reservations: one atomic statement per request slot, clock from the database.

A key's state is one number, ``tat`` (theoretical arrival time, epoch seconds on the
database clock). Reserving a slot for a request costs ``interval`` seconds:

    tat' = max(tat, now) + interval           (one INSERT ... ON CONFLICT ... RETURNING)
    slot = max(tat' - burst * interval, now)  (the caller sleeps until it)

Rows are locked by the statement itself (PostgreSQL row lock, SQLite BEGIN IMMEDIATE),
and ``now`` is read after the lock is held, so concurrent callers on any process or
host get distinct, FIFO-ordered slots ``interval`` apart. Nobody polls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine, Row, TextClause, text

PG_NOW = "extract(epoch from clock_timestamp())::float8"
SQLITE_NOW = "((julianday('now') - 2440587.5) * 86400.0)"

_RESERVE = """
INSERT INTO rate_limit_state AS s (key, tat, updated_at)
VALUES (:key, {now} + :interval, CURRENT_TIMESTAMP)
ON CONFLICT (key) DO UPDATE
SET tat = {greatest}(s.tat, {now}) + :interval, updated_at = CURRENT_TIMESTAMP
RETURNING tat, {now} AS now
"""

# The same step, taken only when the slot is at most :max_wait seconds away (no row
# back otherwise): a caller with a deadline never pushes the budget for a slot it
# would not use.
_RESERVE_WITHIN = """
INSERT INTO rate_limit_state AS s (key, tat, updated_at)
VALUES (:key, {now} + :interval, CURRENT_TIMESTAMP)
ON CONFLICT (key) DO UPDATE
SET tat = {greatest}(s.tat, {now}) + :interval, updated_at = CURRENT_TIMESTAMP
WHERE {greatest}(s.tat, {now}) + :interval - :ahead <= {now} + :max_wait
RETURNING tat, {now} AS now
"""

_PENALIZE = """
INSERT INTO rate_limit_state AS s (key, tat, updated_at)
VALUES (:key, {now} + :seconds, CURRENT_TIMESTAMP)
ON CONFLICT (key) DO UPDATE
SET tat = {greatest}(s.tat, {now} + :seconds), updated_at = CURRENT_TIMESTAMP
RETURNING tat, {now} AS now
"""


def _sql(template: str, dialect: str) -> str:
    if dialect == "sqlite":
        # SQLite's 'now' is fixed for the whole statement and read under BEGIN IMMEDIATE.
        return template.format(now=SQLITE_NOW, greatest="max")
    if dialect == "postgresql":
        return template.format(now=PG_NOW, greatest="greatest")
    raise ValueError(f"rate limiter: unsupported database dialect '{dialect}'")


@dataclass(frozen=True)
class Reservation:
    """One granted slot: ``slot`` and ``now`` are on the limiter's clock (epoch s)."""

    key: str
    slot: float
    now: float
    tat: float

    @property
    def wait(self) -> float:
        """Seconds the caller must sleep before using the slot."""
        return max(0.0, self.slot - self.now)


def _reservation(key: str, tat: float, now: float, interval: float, burst: int) -> Reservation:
    # An idle key's slot is the statement's own now (= tat - interval), not the slightly
    # later now that RETURNING reads, so granted slots stay exactly `interval` apart.
    slot = max(tat - burst * interval, min(now, tat - interval))
    return Reservation(key=key, slot=slot, now=now, tat=tat)


class Limiter(Protocol):
    """Anything that hands out GCRA slots and accepts penalties."""

    def reserve(self, key: str, interval: float, burst: int = 1) -> Reservation: ...

    def penalize(self, key: str, seconds: float) -> float: ...


class DatabaseRateLimiter:
    """GCRA state in ``rate_limit_state``, shared by every process using the database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        dialect = engine.dialect.name
        self._reserve_sql = text(_sql(_RESERVE, dialect))
        self._reserve_within_sql = text(_sql(_RESERVE_WITHIN, dialect))
        self._penalize_sql = text(_sql(_PENALIZE, dialect))
        self._postgres = dialect == "postgresql"

    def reserve(self, key: str, interval: float, burst: int = 1) -> Reservation:
        """Atomically take the next slot of ``key`` (``interval`` seconds per request)."""
        if interval <= 0 or burst < 1:
            raise ValueError("interval must be > 0 and burst >= 1")
        row = self._execute(self._reserve_sql, {"key": key, "interval": interval})
        return _reservation(key, float(row.tat), float(row.now), interval, burst)

    def reserve_within(
        self, key: str, interval: float, max_wait: float, burst: int = 1
    ) -> Reservation | None:
        """Take ``key``'s next slot only if it is at most ``max_wait`` seconds away (None:
        nothing taken, the budget untouched)."""
        if interval <= 0 or burst < 1:
            raise ValueError("interval must be > 0 and burst >= 1")
        params = {"key": key, "interval": interval, "ahead": burst * interval, "max_wait": max_wait}
        with self.engine.begin() as conn:
            if self._postgres:
                conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            row = conn.execute(self._reserve_within_sql, params).first()
        if row is None:
            return None
        return _reservation(key, float(row.tat), float(row.now), interval, burst)

    def penalize(self, key: str, seconds: float) -> float:
        """Push ``key``'s next slot to at least now + ``seconds``; returns the new tat."""
        return float(
            self._execute(self._penalize_sql, {"key": key, "seconds": max(0.0, seconds)}).tat
        )

    def _execute(self, statement: TextClause, params: dict[str, object]) -> Row[Any]:
        with self.engine.begin() as conn:
            if self._postgres:
                # The state is ephemeral; a WAL flush would only add jitter between the
                # moment `now` is read and the moment the caller learns its slot.
                conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            return conn.execute(statement, params).one()


class LocalRateLimiter:
    """The same GCRA in process memory (tests, and the benchmark's no-sharing baseline)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}
        self._lock = threading.Lock()

    def reserve(self, key: str, interval: float, burst: int = 1) -> Reservation:
        """Take the next slot of ``key`` in this process only."""
        if interval <= 0 or burst < 1:
            raise ValueError("interval must be > 0 and burst >= 1")
        with self._lock:
            now = self._clock()
            tat = max(self._tat.get(key, 0.0), now) + interval
            self._tat[key] = tat
        return _reservation(key, tat, now, interval, burst)

    def reserve_within(
        self, key: str, interval: float, max_wait: float, burst: int = 1
    ) -> Reservation | None:
        """Take the next slot of ``key`` only if it is at most ``max_wait`` seconds away."""
        if interval <= 0 or burst < 1:
            raise ValueError("interval must be > 0 and burst >= 1")
        with self._lock:
            now = self._clock()
            tat = max(self._tat.get(key, 0.0), now) + interval
            if tat - burst * interval > now + max_wait:
                return None
            self._tat[key] = tat
        return _reservation(key, tat, now, interval, burst)

    def penalize(self, key: str, seconds: float) -> float:
        """Push ``key``'s next slot to at least now + ``seconds``."""
        with self._lock:
            tat = max(self._tat.get(key, 0.0), self._clock() + max(0.0, seconds))
            self._tat[key] = tat
            return tat
