"""The task sensor every provider gets: inbox → tasks → runs that never strand work.

Each tick, for one provider:
1. turns new inbox rows into tasks (idempotent, so a tick that dies is repaired by
   the next one);
2. releases tasks held by runs Dagster marked failed or cancelled, or that vanished,
   at once — not after the lease — and tasks whose lease lapsed;
3. requests a run for every day with due tasks and no live run of its own: today's
   as the provider's live run, older days beside it (never behind it). A request's
   key names the day and the highest due task; when a run with that key ended and
   work is still due, the next request gets a new key (`…:retry-N`) after a backoff,
   so a run that failed before claiming, or was cancelled in the queue, never spends
   its tasks' only key.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from sqlalchemy import Connection

from crm_schema.task_queue import TaskQueue
from crm_sync.settings import get_settings
from orchestration.core.heartbeat import forget_beats, last_beats
from orchestration.core.run_tags import MODE, PARTITION, SYNC_KEY, sync_tags
from orchestration.resources.database import CrmDatabase

ACTIVE_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]
SENSOR_INTERVAL_SECONDS = 5
# A run that vanished from Dagster is only presumed dead after this long (seconds),
# so a run being created never loses its tasks.
VANISHED_GRACE_SECONDS = 60
RETRY_BACKOFF_SECONDS = (0, 5, 15, 60, 300)
DEAD_AFTER_LEASES = 1.5


@dataclass(frozen=True)
class TaskSensorSpec:
    """What the generic sensor needs to know about one provider."""

    provider: str
    queue: TaskQueue
    handler: str  # the handler whose tasks this sensor requests runs for
    take_webhooks: Callable[[Connection], tuple[int, int]]


def live_run_active(
    context: SensorEvaluationContext, conn: Connection, job_name: str, day: str, lease: float
) -> bool:
    """True when a live run of the job for ``day`` is queued or running; it drains it.

    A started run that stopped beating for longer than a lease is dead (its host went
    away without Dagster noticing): it is reported failed, which frees its slot.
    """
    runs = context.instance.get_runs(
        filters=RunsFilter(
            job_name=job_name, statuses=ACTIVE_STATUSES, tags={MODE: "live", PARTITION: day}
        ),
    )
    beats = last_beats(conn, [run.run_id for run in runs])
    silent_since = datetime.now(UTC) - timedelta(seconds=lease * DEAD_AFTER_LEASES)
    alive = False
    for run in runs:
        beat = beats.get(run.run_id)
        if run.status == DagsterRunStatus.STARTED and beat is not None and beat < silent_since:
            context.instance.report_run_failed(
                run, f"no heartbeat since {beat.isoformat()}: the run's process is gone"
            )
            context.log.warning(f"run {run.run_id} stopped beating; reported it failed")
            continue
        alive = True
    return alive


def release_dead_runs(
    context: SensorEvaluationContext, conn: Connection, queue: TaskQueue
) -> dict[str, int]:
    """Hand back tasks held by runs that ended without finishing them."""
    released: dict[str, int] = {}
    now = datetime.now(UTC)
    for run_id in queue.held_by_run(conn):
        record = context.instance.get_run_record_by_id(run_id)
        if record is None:
            oldest = queue.oldest_claim(conn, run_id)
            if oldest is None or (now - oldest).total_seconds() < VANISHED_GRACE_SECONDS:
                continue
            released[run_id] = queue.release_run(conn, run_id, "vanished from Dagster")
            continue
        status = record.dagster_run.status
        if status == DagsterRunStatus.FAILURE:
            released[run_id] = queue.release_run(conn, run_id, "failed")
        elif status == DagsterRunStatus.CANCELED:
            released[run_id] = queue.release_run(conn, run_id, "was cancelled", crash=False)
        elif status == DagsterRunStatus.SUCCESS:
            # The run ended cleanly but left tasks in hand (a bug): count it a crash so
            # they cannot loop.
            released[run_id] = queue.release_run(conn, run_id, "ended")
    return {k: v for k, v in released.items() if v}


def _retry_key(
    context: SensorEvaluationContext, job_name: str, base: str
) -> tuple[str | None, str | None]:
    """(run key for ``base``, or None with the reason to wait)."""
    runs = RunsFilter(job_name=job_name, tags={SYNC_KEY: base})
    records = context.instance.get_run_records(filters=runs, limit=len(RETRY_BACKOFF_SECONDS))
    if not records:
        return base, None
    failures = 0
    for record in records:  # newest first
        if record.dagster_run.status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
            failures += 1
        else:
            break
    last = records[0]
    wait = RETRY_BACKOFF_SECONDS[min(failures, len(RETRY_BACKOFF_SECONDS) - 1)]
    ended = last.end_time or last.update_timestamp.timestamp()
    if ended and datetime.now(UTC).timestamp() - ended < wait:
        return None, f"{base}: {failures} failed runs in a row; next try in ≤ {wait} s"
    return f"{base}:retry-{context.instance.get_runs_count(filters=runs)}", None


def build_task_sensor(
    spec: TaskSensorSpec,
    job: Any,  # a JobDefinition or define_asset_job's unresolved job
    *,
    name: str,
    description: str,
) -> SensorDefinition:
    """The provider's sensor (see module docstring); resource `crm_db` is the database."""

    @sensor(
        name=name,
        job=job,
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description=description,
    )
    def _sensor(context: SensorEvaluationContext, crm_db: CrmDatabase) -> SensorResult:
        cursor = int(context.cursor or 0)
        with crm_db.engine.begin() as conn:
            created, last_id = spec.take_webhooks(conn)
        with crm_db.engine.begin() as conn:
            released = release_dead_runs(context, conn, spec.queue)
            expired = spec.queue.expire_leases(conn)
            forget_beats(conn, timedelta(days=2))
        with crm_db.engine.connect() as conn:
            due = spec.queue.due_days(conn, spec.handler)
        lease = get_settings().task_lease_seconds
        new_cursor = str(max(cursor, last_id))
        if created:
            context.log.info(f"created {created} {spec.provider} tasks up to inbox row {last_id}")
        if released:
            context.log.warning(f"released tasks of runs that ended holding them: {released}")
        if expired:
            context.log.warning(f"released {expired} tasks whose lease lapsed")
        today = datetime.now(UTC).date()
        # Today's partition first; days left behind (downtime, retries) beside it.
        due.sort(key=lambda d: (d.day != today, d.day))
        requests, waiting = [], []
        for item in due:
            day = item.day.isoformat()
            with crm_db.engine.begin() as conn:
                active = live_run_active(context, conn, job.name, day, lease)
            if active:
                waiting.append(f"{day}: a live run is active and drains it")
                continue
            base = f"{spec.provider}:{day}:{item.max_id}"
            run_key, reason = _retry_key(context, job.name, base)
            if run_key is None:
                waiting.append(reason or base)
                continue
            tags = sync_tags(spec.provider, "live", today=item.day == today) | {SYNC_KEY: base}
            requests.append(RunRequest(run_key=run_key, partition_key=day, tags=tags))
        if requests:
            return SensorResult(run_requests=requests, cursor=new_cursor)
        reason = "; ".join(waiting) if waiting else f"no pending {spec.provider} tasks"
        return SensorResult(skip_reason=SkipReason(reason), cursor=new_cursor)

    return _sensor
