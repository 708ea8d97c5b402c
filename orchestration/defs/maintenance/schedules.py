"""Daily maintenance schedules."""

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, schedule

from orchestration.defs.maintenance.jobs import api_call_log_retention


@schedule(
    job=api_call_log_retention,
    cron_schedule="15 3 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Delete api_call_log rows older than CRM_SYNC_CALL_LOG_RETENTION_DAYS (14).",
)
def api_call_log_retention_daily(context: ScheduleEvaluationContext) -> RunRequest:
    day = context.scheduled_execution_time.date().isoformat()
    return RunRequest(run_key=f"api-call-log-retention:{day}")
