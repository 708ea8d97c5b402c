"""Daily ALLIO schedules: reconcile yesterday, sweep deletions."""

from datetime import timedelta

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, schedule

from orchestration.core.run_tags import MODE, sync_tags
from orchestration.defs.allio.jobs import allio_delete_control, allio_sync_job


@schedule(
    job=allio_sync_job,
    cron_schedule="30 0 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Retry yesterday's unfinished and failed ALLIO tasks (bounded attempts).",
)
def allio_reconcile_daily(context: ScheduleEvaluationContext) -> RunRequest:
    day = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
    return RunRequest(
        run_key=f"allio-reconcile:{day}",
        partition_key=day,
        tags=sync_tags("allio", "reconcile"),
    )


@schedule(
    job=allio_delete_control,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Tombstone entities named by fresh *_DEL tasks (delete control).",
)
def allio_delete_control_daily(context: ScheduleEvaluationContext) -> RunRequest:
    day = context.scheduled_execution_time.date().isoformat()
    return RunRequest(
        run_key=f"allio-delete-control:{day}",
        run_config={"ops": {"allio_delete_control_op": {"config": {"dry_run": False}}}},
        tags={MODE: "delete-control"},
    )
