"""Daily Unisender export: whatever the sensor did not trigger (and invalid retries)."""

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, schedule

from orchestration.core.run_tags import PROVIDER
from orchestration.defs.unisender.jobs import unisender_export_job


@schedule(
    job=unisender_export_job,
    cron_schedule="30 2 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Export every Unisender account once a day (failed contacts, invalid ones "
    "past retry_invalid_days, anything a sensor tick missed).",
)
def unisender_export_daily(context: ScheduleEvaluationContext) -> RunRequest:
    day = context.scheduled_execution_time.date().isoformat()
    return RunRequest(run_key=f"unisender-daily:{day}", tags={PROVIDER: "unisender"})
