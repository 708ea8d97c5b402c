"""Maintenance jobs: `api_call_log` retention."""

from datetime import timedelta

from dagster import Config, MetadataValue, OpExecutionContext, Output, in_process_executor, job, op
from pydantic import Field

from crm_schema.task_queue import now_utc
from crm_sync.settings import get_settings
from orchestration.resources.calllog import prune_call_log
from orchestration.resources.database import CrmDatabase


class CallLogRetentionConfig(Config):
    """Per-run overrides (unset: CRM_SYNC_CALL_LOG_RETENTION_DAYS, default 14)."""

    retention_days: int | None = Field(
        None, ge=1, description="Delete rows older than this many days (default: the setting)."
    )
    batch_size: int = Field(5000, ge=1, le=100_000, description="Rows deleted per transaction.")


@op(description="Delete api_call_log rows older than the retention, oldest first, in batches.")
def prune_api_call_log_op(
    context: OpExecutionContext, config: CallLogRetentionConfig, crm_db: CrmDatabase
) -> Output[int]:
    days = config.retention_days or get_settings().call_log_retention_days
    cutoff = now_utc() - timedelta(days=days)
    result = prune_call_log(crm_db.engine, cutoff, batch_size=config.batch_size)
    context.log.info(
        f"api_call_log: deleted {result.deleted} rows older than {days} days "
        f"(before {cutoff.isoformat()}) in {result.batches} batches"
    )
    return Output(
        result.deleted,
        metadata={
            "deleted": result.deleted,
            "batches": result.batches,
            "retention_days": days,
            "cutoff": MetadataValue.text(cutoff.isoformat()),
        },
    )


@job(
    executor_def=in_process_executor,
    description="Daily: delete provider call-log rows past their retention "
    "(CRM_SYNC_CALL_LOG_RETENTION_DAYS, default 14).",
)
def api_call_log_retention() -> None:
    prune_api_call_log_op()
