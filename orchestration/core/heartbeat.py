"""The run heartbeat: a run keeps its tasks, and says it is alive, for as long as it lives."""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, delete, select

from crm_schema.engine import dialect_insert
from crm_schema.tables import run_heartbeats
from crm_schema.task_queue import TaskQueue, as_utc, now_utc

logger = logging.getLogger(__name__)


def record_beat(conn: Connection, run_id: str, provider: str) -> None:
    """Note that ``run_id`` is alive now."""
    now = now_utc()
    stmt = dialect_insert(conn)(run_heartbeats).values(
        run_id=run_id, provider=provider, beat_at=now, host=socket.gethostname(), pid=os.getpid()
    )
    conn.execute(stmt.on_conflict_do_update(index_elements=["run_id"], set_={"beat_at": now}))


def last_beats(conn: Connection, run_ids: list[str]) -> dict[str, datetime]:
    """{run id: its last beat} for the runs that have beaten."""
    if not run_ids:
        return {}
    rows = conn.execute(
        select(run_heartbeats.c.run_id, run_heartbeats.c.beat_at).where(
            run_heartbeats.c.run_id.in_(run_ids)
        )
    )
    return {r.run_id: as_utc(r.beat_at) for r in rows}  # type: ignore[misc]


def forget_beats(conn: Connection, older_than: timedelta) -> int:
    """Drop beats of runs long gone."""
    return conn.execute(
        delete(run_heartbeats).where(run_heartbeats.c.beat_at < now_utc() - older_than)
    ).rowcount


class Heartbeat:
    """A daemon thread that, every third of a lease, extends the lease of ``run_id``'s
    tasks and records that the run is alive.

    The lease can then be short (minutes): a long run under a backlog is never
    reclaimed under its feet, and a run that dies frees its tasks within one lease.
    """

    def __init__(
        self, engine: Engine, queue: TaskQueue, run_id: str, lease: timedelta, provider: str
    ) -> None:
        self.engine = engine
        self.queue = queue
        self.run_id = run_id
        self.lease = lease
        self.provider = provider
        self.interval = max(0.05, lease.total_seconds() / 3)
        self.beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{run_id}", daemon=True)

    def start(self) -> None:
        """Beat now, then every interval."""
        self._safe_beat()
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def beat(self) -> int:
        """Extend the lease once and record the beat; returns how many tasks it covered."""
        with self.engine.begin() as conn:
            count = self.queue.heartbeat(conn, self.run_id, self.lease)
            record_beat(conn, self.run_id, self.provider)
        self.beats += 1
        return count

    def _safe_beat(self) -> None:
        try:
            self.beat()
        except Exception as exc:  # a missed beat is retried next interval
            logger.warning("run heartbeat failed: %s", type(exc).__name__)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._safe_beat()
