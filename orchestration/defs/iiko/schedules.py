"""Daily iiko schedule: reconcile yesterday against the Cloud API."""

from datetime import timedelta

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, schedule

from orchestration.core.run_tags import sync_tags
from orchestration.defs.iiko.jobs import iiko_sync_job


@schedule(
    job=iiko_sync_job,
    cron_schedule="45 0 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description=(
        "Retry yesterday's unfinished iiko tasks and list yesterday's orders "
        "(deliveries/by_delivery_date_and_status) to find orders whose webhooks were lost."
    ),
)
def iiko_reconcile_daily(context: ScheduleEvaluationContext) -> RunRequest:
    day = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
    return RunRequest(
        run_key=f"iiko-reconcile:{day}",
        partition_key=day,
        tags=sync_tags("iiko", "reconcile"),
    )
