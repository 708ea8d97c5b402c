"""The task queue every provider shares: one generic module over per-provider task tables.

A task names external ids a `handler` (sync, delete control, ...) must process. Its
life: 0 new → 1 claimed by a run (with a lease the run's heartbeat extends) → 2 done
or 3 failed, each with a reason. A failure goes back to 0 with `next_attempt_at`
(exponential backoff) until the attempt limit; a run that dies holding tasks has them
released at once (the sensor sees the run failed) or when the lease lapses, and each
such death counts a crash: tasks that crashed a run are claimed in ever smaller
chunks, so one task that kills every run it is in ends in 3 alone.

Claims are bounded (a run never holds more than it can finish within a lease) and
atomic: `SELECT … FOR UPDATE SKIP LOCKED LIMIT n` on PostgreSQL, `BEGIN IMMEDIATE`
on SQLite (crm_schema.engine), so two runs never hold the same task.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    Connection,
    Date,
    Row,
    Table,
    and_,
    case,
    cast,
    func,
    not_,
    or_,
    select,
    update,
)

from crm_schema.engine import dialect_insert
from crm_schema.tables import (
    TASK_DONE,
    TASK_ERROR,
    TASK_IN_PROGRESS,
    TASK_NEW,
    integrations,
)

Mode = Literal["live", "reconcile", "backfill"]
MODES: tuple[Mode, ...] = ("live", "reconcile", "backfill")
ERROR_LIMIT = 2000
# Tasks that crashed a run are claimed in chunks this small (by crash count), so an
# innocent task never shares enough crashes with a poison one to fail with it.
SUSPECT_CHUNK = {1: 10}
SUSPECT_CHUNK_MIN = 1


def now_utc() -> datetime:
    """Timezone-aware current UTC time (the one clock for task timestamps)."""
    return datetime.now(UTC)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a UTC day — the span of one daily partition."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def as_utc(value: datetime | str | None) -> datetime | None:
    """A timestamp read back from either database as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _is_number(text: str) -> bool:
    # ASCII digits only: str.isdigit() is also true for '³' or '٣', which int() refuses.
    return text.isascii() and text.isdigit()


def parse_external_ids(raw: str | None) -> tuple[str, ...]:
    """The JSON array of ids → ids as strings (numbers as digits; bad input → empty)."""
    try:
        values = json.loads(raw or "")
    except (TypeError, ValueError):
        return ()
    if not isinstance(values, list):
        return ()
    out = []
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            out.append(str(value))
        elif isinstance(value, str) and value.strip():
            out.append(str(int(value)) if _is_number(value.strip()) else value.strip())
    return tuple(out)


def dump_external_ids(ids: Sequence[int | str]) -> str:
    """Ids as the JSON array tasks store (numbers stay numbers: `[111,222]`)."""
    return json.dumps([int(i) if _is_number(str(i)) else str(i) for i in ids])


@dataclass(frozen=True)
class RetryPolicy:
    """How often a task is tried, and how long it waits between tries."""

    max_attempts: int = 8  # claims per task in live runs (reconcile adds a few)
    reconcile_extra_attempts: int = 2
    max_crashes: int = 3  # runs that may die holding a task before it ends in 3
    backoff_seconds: float = 30.0
    backoff_factor: float = 4.0
    backoff_max_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.max_crashes < 1 or self.backoff_seconds < 0:
            raise ValueError("max_attempts and max_crashes must be >= 1, backoff >= 0")

    def attempt_limit(self, mode: Mode) -> int | None:
        """Claims a task may have had before a run of ``mode`` claims it (None: no cap)."""
        if mode == "live":
            return self.max_attempts
        if mode == "reconcile":
            return self.max_attempts + self.reconcile_extra_attempts
        return None

    def delay(self, attempts: int) -> timedelta:
        """Wait before the next try after ``attempts`` failed ones (30 s, 2 min, 8 min, …)."""
        seconds = self.backoff_seconds * self.backoff_factor ** max(0, attempts - 1)
        return timedelta(seconds=min(seconds, self.backoff_max_seconds))


@dataclass(frozen=True)
class Task:
    """A claimed task: which integration, entity and external ids it names."""

    id: int
    integration_id: int
    entity: str
    command: str
    handler: str | None
    external_ids: tuple[str, ...]
    attempts: int
    crashes: int = 0
    created_at: datetime | None = None


@dataclass(frozen=True)
class NewTask:
    """A task to create from an inbox row (``handler`` None: nothing processes it)."""

    integration_id: int
    entity: str
    command: str
    external_ids: Sequence[int | str]
    webhook_id: int | None
    handler: str | None
    part: int = 0
    error: str | None = None  # why no handler takes it (the task is created finished)
    # With no handler and no error: the row needed no work (e.g. an event type that is
    # only kept); the task is created done (2) with this outcome.
    outcome: str | None = None


@dataclass(frozen=True)
class Finished:
    """How one claimed task ended in a run."""

    task: Task
    error: str | None = None
    outcome: str | None = None
    ids_missing: int | None = None
    final: bool = False  # a failure no retry can mend (e.g. data the database refuses)


@dataclass
class FinishCounts:
    """What `finish` did."""

    done: int = 0
    failed: int = 0
    retrying: int = 0
    retrying_ids: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class Claim:
    """What one run takes from the queue."""

    run_id: str
    handler: str
    mode: Mode = "live"
    day: date | None = None
    integration_ids: frozenset[int] | None = None
    lease: timedelta = timedelta(minutes=2)
    max_tasks: int = 5000  # rows scanned per claim
    # Provider calls the claimed tasks may cost (a run finishes them within a lease).
    max_cost: int | None = None
    cost: Callable[[Sequence[Task]], int] | None = None


@dataclass(frozen=True)
class DueDay:
    """Tasks waiting for a run, per UTC day."""

    day: date
    count: int
    max_id: int


@dataclass(frozen=True)
class Health:
    """What the standalone checks look at, for one handler."""

    unprocessed: int  # never tried, older than the freshness limit
    oldest_unprocessed_minutes: float
    past_lease: int
    waiting_retry: int
    failed: int
    finished: int
    ids_requested: int
    ids_missing: int

    @property
    def failed_share(self) -> float:
        return self.failed / self.finished if self.finished else 0.0

    @property
    def missing_share(self) -> float:
        return self.ids_missing / self.ids_requested if self.ids_requested else 0.0


@dataclass
class TaskQueue:
    """Queue operations over one provider's task table (see module docstring)."""

    table: Table
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    # -- columns ------------------------------------------------------------------------

    @property
    def _columns(self) -> tuple[Any, ...]:
        c = self.table.c
        return (
            c.id,
            c.integration_id,
            c.entity,
            c.command,
            c.handler,
            c.external_ids,
            c.attempts,
            c.crashes,
            c.created_at,
        )

    @staticmethod
    def _task(row: Row[Any]) -> Task:
        return Task(
            id=row.id,
            integration_id=row.integration_id,
            entity=row.entity,
            command=row.command,
            handler=row.handler,
            external_ids=parse_external_ids(row.external_ids),
            attempts=row.attempts,
            crashes=row.crashes,
            created_at=as_utc(row.created_at),
        )

    # -- creating -----------------------------------------------------------------------

    def add(self, conn: Connection, tasks: Sequence[NewTask]) -> int:
        """Insert tasks, skipping (webhook_id, part) pairs that exist (idempotent).

        A task no handler takes is created finished — 2 with its ``outcome`` when it
        needed no work, else 3 with its reason — so every task ends 2 or 3.
        """
        if not tasks:
            return 0
        now = now_utc()
        values = []
        for t in tasks:
            ended = t.handler is None
            done = ended and t.outcome is not None and t.error is None
            values.append(
                {
                    "external_ids": dump_external_ids(t.external_ids),
                    "status": (TASK_DONE if done else TASK_ERROR) if ended else TASK_NEW,
                    "created_at": now,
                    "entity": t.entity,
                    "integration_id": t.integration_id,
                    "command": t.command,
                    "webhook_id": t.webhook_id,
                    "part": t.part,
                    "handler": t.handler,
                    "attempts": 0,
                    "crashes": 0,
                    "error": (t.error or "no handler for this task")[:ERROR_LIMIT]
                    if ended and not done
                    else None,
                    "outcome": t.outcome[:ERROR_LIMIT] if done and t.outcome else None,
                    "finished_at": now if ended else None,
                    "ids_count": len(t.external_ids),
                }
            )
        stmt = dialect_insert(conn)(self.table).on_conflict_do_nothing(
            index_elements=["webhook_id", "part"]
        )
        return max(conn.execute(stmt, values).rowcount, 0)

    def ingest(
        self,
        conn: Connection,
        inbox: Table,
        to_tasks: Callable[[Row[Any]], list[NewTask]],
        limit: int = 5000,
    ) -> tuple[int, int]:
        """Turn unprocessed inbox rows into tasks and mark them processed.

        Scans `processed_at IS NULL`, not `id > cursor`: ids are allocated before
        commit, so a row committed late can carry a lower id. Idempotent (see `add`),
        so a sensor tick and a run doing it at once never duplicate a task.
        Returns (tasks created, highest inbox id seen; 0 when none).
        """
        rows = conn.execute(
            select(inbox).where(inbox.c.processed_at.is_(None)).order_by(inbox.c.id).limit(limit)
        ).all()
        if not rows:
            return 0, 0
        created = self.add(conn, [t for row in rows for t in to_tasks(row)])
        ids = [r.id for r in rows]
        conn.execute(update(inbox).where(inbox.c.id.in_(ids)).values(processed_at=now_utc()))
        return created, ids[-1]

    # -- claiming -----------------------------------------------------------------------

    def _claimable(self, claim: Claim, now: datetime) -> list[Any]:
        c = self.table.c
        if claim.mode == "live":
            due = or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now)
            status = and_(c.status == TASK_NEW, due)
        else:
            # Reconciles and backfills make one attempt per task: never what they already tried.
            tried = and_(c.run_id.is_not(None), c.run_id == claim.run_id)
            status = and_(c.status.in_([TASK_NEW, TASK_ERROR]), not_(tried))
        conditions = [c.handler == claim.handler, status]
        limit = self.retry.attempt_limit(claim.mode)
        if limit is not None:
            conditions.append(c.attempts < limit)
        if claim.day is not None:
            start, end = day_bounds(claim.day)
            conditions += [c.created_at >= start, c.created_at < end]
        if claim.integration_ids is not None:
            conditions.append(c.integration_id.in_(sorted(claim.integration_ids)))
        return conditions

    def claim(self, conn: Connection, claim: Claim) -> list[Task]:
        """Move a bounded chunk of claimable tasks to in progress (0/3 → 1).

        Tasks that crashed a run come first, in small chunks (SUSPECT_CHUNK); other
        tasks come in id order up to ``claim.max_cost`` provider calls.
        """
        if claim.integration_ids is not None and not claim.integration_ids:
            return []
        now = now_utc()
        conditions = self._claimable(claim, now)
        c = self.table.c
        crashes = conn.execute(select(func.max(c.crashes)).where(*conditions)).scalar()
        if crashes is None:
            return []
        conditions.append(c.crashes == crashes)
        limit = (
            claim.max_tasks if crashes == 0 else SUSPECT_CHUNK.get(int(crashes), SUSPECT_CHUNK_MIN)
        )
        query = select(*self._columns).where(*conditions).order_by(c.id).limit(limit)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        candidates = [self._task(r) for r in conn.execute(query)]
        chosen = self._within_budget(candidates, claim) if crashes == 0 else candidates
        if not chosen:
            return []
        rows = conn.execute(
            update(self.table)
            .where(c.id.in_([t.id for t in chosen]), *self._claimable(claim, now))
            .values(
                status=TASK_IN_PROGRESS,
                claimed_at=now,
                lease_expires_at=now + claim.lease,
                run_id=claim.run_id,
                attempts=c.attempts + 1,
            )
            .returning(*self._columns)
        ).all()
        return sorted((self._task(r) for r in rows), key=lambda t: t.id)

    @staticmethod
    def _within_budget(candidates: list[Task], claim: Claim) -> list[Task]:
        """The longest id-ordered prefix whose provider calls fit ``claim.max_cost``."""
        if claim.cost is None or claim.max_cost is None:
            return candidates
        lo, hi = 1, len(candidates)
        # Cost grows with the prefix: binary search for the longest one that fits.
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if claim.cost(candidates[:mid]) <= claim.max_cost:
                lo = mid
            else:
                hi = mid - 1
        return candidates[:lo]  # at least one task, whatever it costs

    def heartbeat(self, conn: Connection, run_id: str, lease: timedelta) -> int:
        """Extend the lease of every task ``run_id`` holds; returns how many."""
        c = self.table.c
        return conn.execute(
            update(self.table)
            .where(c.run_id == run_id, c.status == TASK_IN_PROGRESS)
            .values(lease_expires_at=now_utc() + lease)
        ).rowcount

    # -- finishing ----------------------------------------------------------------------

    def finish(
        self, conn: Connection, run_id: str, results: Iterable[Finished], mode: Mode = "live"
    ) -> FinishCounts:
        """Record how tasks ended: done → 2; failed → back to 0 after a backoff while
        attempts remain (live and reconcile), else 3 with the error."""
        counts = FinishCounts()
        now = now_utc()
        c = self.table.c
        mine = and_(c.run_id == run_id, c.status == TASK_IN_PROGRESS)
        done: dict[tuple[str | None, int | None], list[int]] = {}
        for result in results:
            task = result.task
            if result.error is None:
                done.setdefault((result.outcome, result.ids_missing), []).append(task.id)
                continue
            limit = self.retry.attempt_limit(mode)
            error = result.error[:ERROR_LIMIT]
            retry = not result.final and mode != "backfill"
            if retry and limit is not None and task.attempts < limit:
                values: dict[str, Any] = {
                    "status": TASK_NEW,
                    "error": error,
                    "next_attempt_at": now + self.retry.delay(task.attempts),
                    "claimed_at": None,
                    "lease_expires_at": None,
                }
                counts.retrying += 1
                counts.retrying_ids.add(task.id)
            else:
                values = {"status": TASK_ERROR, "error": error, "finished_at": now}
                counts.failed += 1
            conn.execute(update(self.table).where(c.id == task.id, mine).values(**values))
        for (outcome, missing), ids in done.items():
            counts.done += conn.execute(
                update(self.table)
                .where(c.id.in_(ids), mine)
                .values(
                    status=TASK_DONE,
                    error=None,
                    outcome=outcome,
                    ids_missing=missing,
                    finished_at=now,
                    next_attempt_at=None,
                )
            ).rowcount
        return counts

    def release(self, conn: Connection, task_ids: Iterable[int], run_id: str) -> int:
        """Give claimed tasks back untouched (1 → 0), e.g. when a guard rail stops a run."""
        ids = list(task_ids)
        if not ids:
            return 0
        c = self.table.c
        return conn.execute(
            update(self.table)
            .where(c.id.in_(ids), c.run_id == run_id, c.status == TASK_IN_PROGRESS)
            .values(
                status=TASK_NEW,
                claimed_at=None,
                lease_expires_at=None,
                attempts=c.attempts - 1,
            )
        ).rowcount

    def release_crashed(self, conn: Connection, condition: Any, reason: str) -> int:
        """Tasks in progress matching ``condition`` lost their run: count a crash and
        hand them back at once, or end them in 3 once they crashed too many runs."""
        c = self.table.c
        last_try = self.retry.attempt_limit("reconcile") or self.retry.max_attempts
        final = or_(c.crashes + 1 >= self.retry.max_crashes, c.attempts >= last_try)
        suffix = f" (runs died holding this task: {self.retry.max_crashes} at most)"
        return conn.execute(
            update(self.table)
            .where(c.status == TASK_IN_PROGRESS, condition)
            .values(
                status=case((final, TASK_ERROR), else_=TASK_NEW),
                crashes=c.crashes + 1,
                error=case((final, reason + suffix), else_=reason),
                finished_at=case((final, now_utc()), else_=None),
                claimed_at=None,
                lease_expires_at=None,
                next_attempt_at=None,
            )
        ).rowcount

    def release_run(self, conn: Connection, run_id: str, why: str, *, crash: bool = True) -> int:
        """Release every task a run that ended holds: as a crash (see `release_crashed`),
        or untouched (``crash=False``: a cancelled run is not the tasks' fault)."""
        c = self.table.c
        reason = f"run {run_id} {why} while holding this task"
        if crash:
            return self.release_crashed(conn, c.run_id == run_id, reason)
        return conn.execute(
            update(self.table)
            .where(c.run_id == run_id, c.status == TASK_IN_PROGRESS)
            .values(
                status=TASK_NEW,
                claimed_at=None,
                lease_expires_at=None,
                attempts=c.attempts - 1,
                error=reason,
            )
        ).rowcount

    def expire_leases(self, conn: Connection) -> int:
        """Release tasks whose lease lapsed: their run stopped heartbeating."""
        c = self.table.c
        return self.release_crashed(
            conn,
            c.lease_expires_at < now_utc(),
            "lease expired: the run holding this task stopped heartbeating",
        )

    def held_by_run(self, conn: Connection) -> dict[str, int]:
        """{run id: tasks it holds in progress}."""
        c = self.table.c
        rows = conn.execute(
            select(c.run_id, func.count())
            .where(c.status == TASK_IN_PROGRESS, c.run_id.is_not(None))
            .group_by(c.run_id)
        )
        return {run_id: int(n) for run_id, n in rows}

    def oldest_claim(self, conn: Connection, run_id: str) -> datetime | None:
        """When ``run_id`` claimed the oldest task it still holds."""
        c = self.table.c
        value = conn.execute(
            select(func.min(c.claimed_at)).where(c.run_id == run_id, c.status == TASK_IN_PROGRESS)
        ).scalar()
        return as_utc(value)

    # -- reading ------------------------------------------------------------------------

    def tasks_of_day(
        self,
        conn: Connection,
        *,
        handler: str,
        day: date,
        integration_ids: Iterable[int] | None = None,
    ) -> list[Task]:
        """Every task of ``handler`` created on ``day``, whatever its status (backfills)."""
        c = self.table.c
        start, end = day_bounds(day)
        query = select(*self._columns).where(
            c.handler == handler, c.created_at >= start, c.created_at < end
        )
        if integration_ids is not None:
            query = query.where(c.integration_id.in_(sorted(integration_ids)))
        return [self._task(r) for r in conn.execute(query.order_by(c.id))]

    def _day(self, conn: Connection) -> Any:
        col = self.table.c.created_at
        # Partitions are UTC days; PostgreSQL would otherwise use the session time zone.
        if conn.dialect.name == "postgresql":
            return cast(func.timezone("UTC", col), Date)
        return func.date(col)

    def due_days(self, conn: Connection, handler: str) -> list[DueDay]:
        """Days with tasks a run could take now (active integrations only), oldest first."""
        c = self.table.c
        now = now_utc()
        day = self._day(conn)
        rows = conn.execute(
            select(day, func.count(), func.max(c.id))
            .join(integrations, integrations.c.id == c.integration_id)
            .where(
                c.handler == handler,
                c.status == TASK_NEW,
                c.attempts < self.retry.max_attempts,
                or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now),
                integrations.c.is_active.is_(True),
            )
            .group_by(day)
            .order_by(day)
        ).all()
        return [
            DueDay(
                day=d if isinstance(d, date) else date.fromisoformat(str(d)[:10]),
                count=int(n),
                max_id=int(m),
            )
            for d, n, m in rows
        ]

    def status_counts(
        self,
        conn: Connection,
        day: date,
        *,
        handler: str | None = None,
        entity: str | None = None,
    ) -> dict[int, int]:
        """Task count per status for the tasks created on ``day``."""
        c = self.table.c
        start, end = day_bounds(day)
        query = (
            select(c.status, func.count())
            .where(c.created_at >= start, c.created_at < end)
            .group_by(c.status)
        )
        if handler is not None:
            query = query.where(c.handler == handler)
        if entity is not None:
            query = query.where(c.entity == entity)
        return {int(s): int(n) for s, n in conn.execute(query)}

    def health(
        self,
        conn: Connection,
        handler: str,
        *,
        fresh_minutes: float,
        window: timedelta = timedelta(hours=24),
        entity: str | None = None,
    ) -> Health:
        """Numbers behind the standalone checks (active integrations only)."""
        c = self.table.c
        now = now_utc()
        scope = [c.handler == handler, integrations.c.is_active.is_(True)]
        if entity is not None:
            scope.append(c.entity == entity)
        joined = self.table.join(integrations, integrations.c.id == c.integration_id)
        stale_before = now - timedelta(minutes=fresh_minutes)
        never_tried = and_(c.status == TASK_NEW, c.attempts == 0)
        row = conn.execute(
            select(
                func.count().filter(never_tried, c.created_at < stale_before),
                func.min(c.created_at).filter(never_tried),
                func.count().filter(c.status == TASK_IN_PROGRESS, c.lease_expires_at < now),
                func.count().filter(c.status == TASK_NEW, c.attempts > 0),
            )
            .select_from(joined)
            .where(*scope, c.status.in_([TASK_NEW, TASK_IN_PROGRESS]))
        ).one()
        oldest = as_utc(row[1])
        window_row = conn.execute(
            select(
                func.count().filter(c.status == TASK_ERROR),
                func.count(),
                func.coalesce(func.sum(c.ids_count).filter(c.status == TASK_DONE), 0),
                func.coalesce(func.sum(c.ids_missing).filter(c.status == TASK_DONE), 0),
            )
            .select_from(joined)
            .where(
                *scope,
                c.status.in_([TASK_DONE, TASK_ERROR]),
                c.finished_at >= now - window,
            )
        ).one()
        return Health(
            unprocessed=int(row[0]),
            oldest_unprocessed_minutes=round((now - oldest).total_seconds() / 60, 1)
            if oldest
            else 0.0,
            past_lease=int(row[2]),
            waiting_retry=int(row[3]),
            failed=int(window_row[0]),
            finished=int(window_row[1]),
            ids_requested=int(window_row[2]),
            ids_missing=int(window_row[3]),
        )
