"""ALLIO task queue: webhooks → tasks, claiming with a lease, finishing, reclaiming.

Every state change is one atomic statement, so concurrent runs (live sync,
reconcile, backfills) never take the same task twice and a crashed run only
leaves tasks that the lease hands back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Connection, Date, and_, cast, func, not_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from crm_schema.tables import (
    TASK_DONE,
    TASK_ERROR,
    TASK_IN_PROGRESS,
    TASK_NEW,
    allio_tasks,
    allio_webhook,
    integrations,
)

ENTITY_BY_PREFIX = {"RESERVE_": "reserve", "DEALCARD_": "dealcard", "SPACE_": "space"}
SYNC_ENTITIES = ("reserve", "dealcard")


def entity_for_command(command: str) -> str:
    """Seed 4.2: RESERVE_* → reserve, DEALCARD_* → dealcard; others recorded as-is."""
    for prefix, entity in ENTITY_BY_PREFIX.items():
        if command.startswith(prefix):
            return entity
    return "unknown"


def is_delete_command(command: str) -> bool:
    """`*_DEL` commands feed delete control and are never fetched."""
    return command.endswith("_DEL")


TASK_COLUMNS = (
    allio_tasks.c.id,
    allio_tasks.c.integration_id,
    allio_tasks.c.entity,
    allio_tasks.c.command,
    allio_tasks.c.external_ids,
    allio_tasks.c.attempts,
)


def _delete_command():  # noqa: ANN202 - SQL expression
    """SQL twin of `is_delete_command` (`_` is a LIKE wildcard, hence the escape)."""
    return allio_tasks.c.command.like("%\\_DEL", escape="\\")


def now_utc() -> datetime:
    """Timezone-aware current UTC time (the one clock for task timestamps)."""
    return datetime.now(UTC)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a UTC day — the span of one daily partition."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


@dataclass(frozen=True)
class Task:
    """A claimed task: which integration, entity and external ids it names."""

    id: int
    integration_id: int
    entity: str
    command: str
    external_ids: tuple[str, ...]
    attempts: int


def _insert(conn: Connection):  # noqa: ANN202 - dialect-specific Insert
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


def tasks_from_webhooks(conn: Connection, after_id: int, limit: int = 5000) -> tuple[int, int]:
    """Turn every unprocessed webhook into a task; mark them processed.

    Scans `processed_at IS NULL`, not `id > after_id`: ids are allocated before
    commit, so a webhook committed late can carry an id below the cursor.
    Idempotent: `allio_tasks.webhook_id` is unique and inserts skip conflicts, so
    a tick that dies after this commit, or runs twice, never duplicates a task.
    Returns (tasks created, highest webhook id seen; after_id when none).
    """
    rows = conn.execute(
        select(
            allio_webhook.c.id,
            allio_webhook.c.command,
            allio_webhook.c.external_ids_array,
            allio_webhook.c.integration_id,
        )
        .where(allio_webhook.c.processed_at.is_(None))
        .order_by(allio_webhook.c.id)
        .limit(limit)
    ).all()
    if not rows:
        return 0, after_id
    now = now_utc()
    values = [
        {
            "external_ids": r.external_ids_array,
            "status": TASK_NEW,
            "created_at": now,
            "entity": entity_for_command(r.command),
            "integration_id": r.integration_id,
            "command": r.command,
            "webhook_id": r.id,
            "attempts": 0,
        }
        for r in rows
    ]
    stmt = _insert(conn)(allio_tasks).on_conflict_do_nothing(index_elements=["webhook_id"])
    created = conn.execute(stmt, values).rowcount
    ids = [r.id for r in rows]
    conn.execute(update(allio_webhook).where(allio_webhook.c.id.in_(ids)).values(processed_at=now))
    return max(created, 0), max(after_id, ids[-1])


def _claimable(lease: timedelta, now: datetime, statuses: Sequence[int]):  # noqa: ANN202
    stale = and_(allio_tasks.c.status == TASK_IN_PROGRESS, allio_tasks.c.claimed_at < now - lease)
    return or_(allio_tasks.c.status.in_(list(statuses)), stale)


def claim_tasks(
    conn: Connection,
    *,
    entity: str,
    day: date | None,
    run_id: str,
    lease: timedelta,
    statuses: Sequence[int] = (TASK_NEW,),
    integration_ids: Iterable[int] | None = None,
    max_attempts: int | None = None,
    delete_tasks: bool = False,
) -> list[Task]:
    """Atomically move the day's claimable tasks of `entity` to in-progress (0 → 1).

    Tasks stuck in 1 past `lease` are reclaimed. `delete_tasks` picks the `*_DEL`
    tasks (delete control) instead of the fetchable ones; `day=None` means any day.
    """
    now = now_utc()
    del_filter = _delete_command()
    conditions = [
        allio_tasks.c.entity == entity,
        _claimable(lease, now, statuses),
        del_filter if delete_tasks else not_(del_filter),
    ]
    if day is not None:
        start, end = day_bounds(day)
        conditions += [allio_tasks.c.created_at >= start, allio_tasks.c.created_at < end]
    if integration_ids is not None:
        conditions.append(allio_tasks.c.integration_id.in_(list(integration_ids)))
    if max_attempts is not None:
        conditions.append(allio_tasks.c.attempts < max_attempts)
    result = conn.execute(
        update(allio_tasks)
        .where(*conditions)
        .values(
            status=TASK_IN_PROGRESS,
            claimed_at=now,
            run_id=run_id,
            attempts=allio_tasks.c.attempts + 1,
        )
        .returning(*TASK_COLUMNS)
    ).all()
    return sorted((_to_task(r) for r in result), key=lambda t: t.id)


def tasks_of_day(
    conn: Connection,
    *,
    entity: str,
    day: date,
    integration_ids: Iterable[int] | None = None,
) -> list[Task]:
    """Every fetchable task created on `day`, whatever its status (for backfills)."""
    start, end = day_bounds(day)
    query = select(*TASK_COLUMNS).where(
        allio_tasks.c.entity == entity,
        allio_tasks.c.created_at >= start,
        allio_tasks.c.created_at < end,
        not_(_delete_command()),
    )
    if integration_ids is not None:
        query = query.where(allio_tasks.c.integration_id.in_(list(integration_ids)))
    return [_to_task(r) for r in conn.execute(query.order_by(allio_tasks.c.id))]


def _to_task(row) -> Task:  # noqa: ANN001
    return Task(
        id=row.id,
        integration_id=row.integration_id,
        entity=row.entity,
        command=row.command,
        external_ids=parse_external_ids(row.external_ids),
        attempts=row.attempts,
    )


def parse_external_ids(raw: str) -> tuple[str, ...]:
    """The JSON array string of ids → normalized string ids (bad input → empty)."""
    try:
        values = json.loads(raw)
    except (TypeError, ValueError):
        return ()
    if not isinstance(values, list):
        return ()
    return tuple(str(int(v)) for v in values if str(v).isdigit())


def finish_tasks(
    conn: Connection, task_ids: Iterable[int], run_id: str, error: str | None = None
) -> int:
    """Mark tasks this run holds as done (2) or failed (3, with the error)."""
    ids = list(task_ids)
    if not ids:
        return 0
    return conn.execute(
        update(allio_tasks)
        .where(allio_tasks.c.id.in_(ids), allio_tasks.c.run_id == run_id)
        .values(
            status=TASK_DONE if error is None else TASK_ERROR,
            error=None if error is None else error[:2000],
            finished_at=now_utc(),
        )
    ).rowcount


def release_tasks(conn: Connection, task_ids: Iterable[int], run_id: str) -> int:
    """Give claimed tasks back untouched (1 → 0), e.g. when a guard rail stops a run."""
    ids = list(task_ids)
    if not ids:
        return 0
    return conn.execute(
        update(allio_tasks)
        .where(allio_tasks.c.id.in_(ids), allio_tasks.c.run_id == run_id)
        .values(status=TASK_NEW, claimed_at=None, attempts=allio_tasks.c.attempts - 1)
    ).rowcount


DEFAULT_LEASE = timedelta(minutes=10)


def _day_summary(conn: Connection, condition, extra):  # noqa: ANN001, ANN202
    col = allio_tasks.c.created_at
    # Partitions are UTC days; PostgreSQL would otherwise use the session time zone.
    day_expr = (
        cast(func.timezone("UTC", col), Date)
        if conn.dialect.name == "postgresql"
        else func.date(col)
    )
    rows = conn.execute(
        select(day_expr, func.count(), func.max(allio_tasks.c.id), extra)
        .join(integrations, integrations.c.id == allio_tasks.c.integration_id)
        .where(
            condition,
            allio_tasks.c.entity.in_(SYNC_ENTITIES),
            not_(_delete_command()),
            integrations.c.is_active.is_(True),
        )
        .group_by(day_expr)
        .order_by(day_expr)
    ).all()
    return [
        (
            day if isinstance(day, date) else date.fromisoformat(str(day)[:10]),
            int(count),
            int(max_id),
            last,
        )
        for day, count, max_id, last in rows
    ]


def pending_summary(conn: Connection) -> list[tuple[date, int, int]]:
    """(day, pending fetchable tasks, max task id) per day, active integrations only."""
    return [
        (day, count, max_id)
        for day, count, max_id, _ in _day_summary(
            conn, allio_tasks.c.status == TASK_NEW, func.count()
        )
    ]


def stale_summary(
    conn: Connection, lease: timedelta = DEFAULT_LEASE
) -> list[tuple[date, int, int, int]]:
    """(day, tasks stuck in progress past the lease, max task id, latest claim as epoch s).

    A run that crashed leaves these behind; the latest claim time tells one crash
    from the next, so each gets its own run key.
    """
    stale = and_(
        allio_tasks.c.status == TASK_IN_PROGRESS, allio_tasks.c.claimed_at < now_utc() - lease
    )
    out = []
    for day, count, max_id, last in _day_summary(conn, stale, func.max(allio_tasks.c.claimed_at)):
        if isinstance(last, str):
            last = datetime.fromisoformat(last)
        last = last if last.tzinfo else last.replace(tzinfo=UTC)
        out.append((day, count, max_id, int(last.timestamp())))
    return out


def stuck_task_count(conn: Connection, lease: timedelta, entity: str | None = None) -> int:
    """Tasks in progress for longer than the lease (a crashed or hung run)."""
    query = select(func.count()).where(
        allio_tasks.c.status == TASK_IN_PROGRESS,
        allio_tasks.c.claimed_at < now_utc() - lease,
    )
    if entity is not None:
        query = query.where(allio_tasks.c.entity == entity)
    return int(conn.execute(query).scalar_one())


def status_counts(
    conn: Connection, day: date, entity: str | None = None, delete_tasks: bool = False
) -> dict[int, int]:
    """Task count per status for the tasks created on `day`."""
    start, end = day_bounds(day)
    del_filter = _delete_command()
    query = (
        select(allio_tasks.c.status, func.count())
        .where(
            allio_tasks.c.created_at >= start,
            allio_tasks.c.created_at < end,
            del_filter if delete_tasks else not_(del_filter),
        )
        .group_by(allio_tasks.c.status)
    )
    if entity is not None:
        query = query.where(allio_tasks.c.entity == entity)
    return {int(s): int(n) for s, n in conn.execute(query)}


__all__ = [
    "SYNC_ENTITIES",
    "TASK_DONE",
    "TASK_ERROR",
    "TASK_IN_PROGRESS",
    "TASK_NEW",
    "Task",
    "claim_tasks",
    "day_bounds",
    "entity_for_command",
    "finish_tasks",
    "is_delete_command",
    "parse_external_ids",
    "pending_summary",
    "stale_summary",
    "release_tasks",
    "status_counts",
    "stuck_task_count",
    "tasks_from_webhooks",
    "tasks_of_day",
]
