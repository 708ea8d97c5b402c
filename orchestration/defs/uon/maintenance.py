"""`uon_cache_purge`: delete phone cache entries that expired long ago.

An expired entry is still the stale answer a ringing call gets while U-ON cannot be
reached, so entries are kept a while past their TTL; after ``keep_hours`` they go.
"""

from datetime import timedelta

from dagster import Config, MetadataValue, OpExecutionContext, Output, in_process_executor, job, op
from pydantic import Field

from crm_schema.providers.uon_customers import purge_expired_cache
from crm_schema.task_queue import now_utc
from orchestration.resources.database import CrmDatabase


class CachePurgeConfig(Config):
    """How long an expired entry is kept as a stale answer."""

    keep_hours: float = Field(
        24.0, ge=0, le=24 * 365, description="Keep expired entries this long past their TTL."
    )


@op(description="Delete uon_phone_cache rows that expired more than keep_hours ago.")
def uon_cache_purge_op(
    context: OpExecutionContext, config: CachePurgeConfig, crm_db: CrmDatabase
) -> Output[int]:
    cutoff = now_utc() - timedelta(hours=config.keep_hours)
    with crm_db.engine.begin() as conn:
        deleted = purge_expired_cache(conn, cutoff)
    context.log.info(f"uon_phone_cache: deleted {deleted} entries expired before {cutoff}")
    return Output(
        deleted,
        metadata={
            "deleted": deleted,
            "keep_hours": config.keep_hours,
            "cutoff": MetadataValue.text(cutoff.isoformat()),
        },
    )


@job(
    name="uon_cache_purge",
    executor_def=in_process_executor,
    description="Daily: delete U-ON phone cache entries that expired long ago.",
)
def uon_cache_purge_job() -> None:
    uon_cache_purge_op()
