"""Daily U-ON schedules: reconcile yesterday (tasks and the day's requests), purge the
phone cache of entries that expired long ago."""

from datetime import timedelta

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, schedule

from orchestration.core.run_tags import sync_tags
from orchestration.defs.uon.jobs import uon_sync_job
from orchestration.defs.uon.maintenance import uon_cache_purge_job


@schedule(
    job=uon_sync_job,
    cron_schedule="55 0 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Retry yesterday's unfinished U-ON tasks and list yesterday's requests "
    "(requests/{day}/{day}/{page}, 100 a page) to find what webhooks missed.",
)
def uon_reconcile_daily(context: ScheduleEvaluationContext) -> RunRequest:
    day = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
    return RunRequest(
        run_key=f"uon-reconcile:{day}",
        partition_key=day,
        tags=sync_tags("uon", "reconcile"),
    )


@schedule(
    job=uon_cache_purge_job,
    cron_schedule="20 3 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Delete U-ON phone cache entries that expired more than a day ago (kept "
    "that long as stale answers while U-ON cannot be reached).",
)
def uon_cache_purge_daily(context: ScheduleEvaluationContext) -> RunRequest:
    day = context.scheduled_execution_time.date().isoformat()
    return RunRequest(run_key=f"uon-cache-purge:{day}")
