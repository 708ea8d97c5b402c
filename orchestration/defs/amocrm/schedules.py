"""Daily amoCRM schedule: reconcile yesterday (retry its unfinished tasks)."""

from datetime import timedelta

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, schedule

from orchestration.core.run_tags import sync_tags
from orchestration.defs.amocrm.jobs import amocrm_sync_job


@schedule(
    job=amocrm_sync_job,
    cron_schedule="50 0 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Retry yesterday's unfinished RDESK updates and contact tasks (a few extra "
    "attempts past the live limit).",
)
def amocrm_reconcile_daily(context: ScheduleEvaluationContext) -> RunRequest:
    day = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
    return RunRequest(
        run_key=f"amocrm-reconcile:{day}",
        partition_key=day,
        tags=sync_tags("amocrm", "reconcile"),
    )
