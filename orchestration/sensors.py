"""Sensors: raw webhook rows → sync tasks → at most one run request per tick."""

from datetime import UTC, datetime

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from crm_schema import allio_tasks as tasks_q
from orchestration.jobs import allio_sync_job
from orchestration.resources.database import CrmDatabase
from orchestration.run_tags import MODE, sync_tags

ACTIVE_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]
SENSOR_INTERVAL_SECONDS = 5


def live_run_active(context: SensorEvaluationContext, job_name: str) -> bool:
    """True when a live run of the job is queued or running; it will pick up new tasks."""
    runs = context.instance.get_runs(
        filters=RunsFilter(job_name=job_name, statuses=ACTIVE_STATUSES, tags={MODE: "live"}),
        limit=1,
    )
    return bool(runs)


@sensor(
    job=allio_sync_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Turns new allio_webhook rows into allio_tasks and requests a sync run.",
)
def allio_webhook_sensor(context: SensorEvaluationContext, crm_db: CrmDatabase):
    """Cursor = last allio_webhook.id turned into a task.

    Crash-safe: tasks are created in one transaction with `webhook_id` unique, so
    a tick that dies after the commit is repaired by the next one (the pending
    tasks still ask for a run, with the same run_key, so nothing runs twice).
    """
    cursor = int(context.cursor or 0)
    with crm_db.engine.begin() as conn:
        created, last_id = tasks_q.tasks_from_webhooks(conn, cursor)
    with crm_db.engine.connect() as conn:
        pending = tasks_q.pending_summary(conn)
        stale = [] if pending else tasks_q.stale_summary(conn)
    new_cursor = str(max(cursor, last_id))
    if created:
        context.log.info(f"created {created} allio tasks up to webhook {last_id}")
    if not pending and not stale:
        return SensorResult(skip_reason=SkipReason("no pending allio tasks"), cursor=new_cursor)
    if live_run_active(context, allio_sync_job.name):
        return SensorResult(
            skip_reason=SkipReason("a live allio run is active; it drains the new tasks"),
            cursor=new_cursor,
        )
    today = datetime.now(UTC).date()
    if pending:
        by_day = {day: f"{max_id}" for day, _count, max_id in pending}
    else:
        # Only tasks a crashed run left in progress: their own key per crash (the
        # latest claim time), since the key of the run that crashed is spent.
        by_day = {day: f"{max_id}:reclaim-{claimed}" for day, _n, max_id, claimed in stale}
        context.log.warning(f"reclaiming allio tasks stuck past the lease: {stale}")
    # Today's partition first; a day left behind (downtime) comes next.
    day = today if today in by_day else min(by_day)
    key = day.isoformat()
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=f"allio:{key}:{by_day[day]}",
                partition_key=key,
                tags=sync_tags("allio", "live"),
            )
        ],
        cursor=new_cursor,
    )
