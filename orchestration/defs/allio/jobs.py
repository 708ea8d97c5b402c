"""ALLIO jobs: the partitioned sync, and the delete-control sweep."""

from datetime import timedelta
from typing import Any

from dagster import (
    AssetSelection,
    Config,
    Failure,
    MetadataValue,
    OpExecutionContext,
    Output,
    define_asset_job,
    in_process_executor,
    job,
    op,
)
from pydantic import Field

from crm_schema.integrations import Integration, list_integrations
from crm_sync.settings import get_settings
from orchestration.allio.delete_control import (
    DeleteControlOptions,
    blocked_message,
    errors_message,
    held_message,
    sweep,
)
from orchestration.defs.allio.assets import CONTACTS, DEALCARDS, RESERVES
from orchestration.defs.allio.checks import allio_queue_checks
from orchestration.defs.allio.resources import AllioResource
from orchestration.resources.database import CrmDatabase
from orchestration.resources.transport import CallStats

allio_sync_job = define_asset_job(
    "allio_sync",
    # The queue checks run on their own (a sensor); the in-run checks come with the op.
    selection=AssetSelection.assets(RESERVES, DEALCARDS, CONTACTS)
    - AssetSelection.checks(allio_queue_checks),
    executor_def=in_process_executor,
    description="Drain a day's ALLIO tasks: fetch, map, upsert reserves, deal cards, contacts.",
)


class DeleteControlConfig(Config):
    """Guard rails ops can set per run (unset limits: each integration's settings)."""

    dry_run: bool = Field(False, description="Report what would be deleted; change nothing.")
    max_delete_share: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Override the integrations' delete_max_share (default 0.2) for this run.",
    )
    delete_floor: int | None = Field(
        None,
        ge=0,
        description="Override the integrations' delete_floor (default 10) for this run.",
    )
    confirm_old_deletes: bool = Field(
        False,
        description="Apply DEL tasks older than delete_max_age_days (default 7), which are "
        "otherwise held and reported.",
    )


@op(description="Confirm absent ids through the list endpoint, then tombstone them.")
def allio_delete_control_op(
    context: OpExecutionContext,
    config: DeleteControlConfig,
    crm_db: CrmDatabase,
    allio: AllioResource,
) -> Output[dict]:
    engine = crm_db.engine
    with engine.connect() as conn:
        integrations = list_integrations(conn, provider="allio", active_only=True)
    stats = CallStats()
    resource = allio.model_copy(update={"lane": "reconcile"})
    clients = []

    def client_for(integration: Integration) -> Any:
        client = resource.client_for(integration, run_id=context.run.run_id, stats=stats)
        clients.append(client)
        return client

    opts = DeleteControlOptions(
        run_id=context.run.run_id,
        dry_run=config.dry_run,
        max_delete_share=config.max_delete_share,
        delete_floor=config.delete_floor,
        confirm_old_deletes=config.confirm_old_deletes,
        lease=timedelta(seconds=get_settings().task_lease_seconds),
    )
    try:
        results = sweep(engine, integrations, client_for, opts)
    finally:
        for client in clients:
            client.close()
    per_integration = {
        str(r.integration_id): {
            "tasks": r.tasks,
            "requested": r.requested,
            "still_present": r.still_present,
            "kept_tasks": r.kept_tasks,
            "to_delete": r.to_delete,
            "live_entities": r.live_entities,
            "share": round(r.share, 4),
            "cap": {"floor": r.floor, "max_share": r.max_share},
            "tombstoned": r.tombstoned,
            "blocked": r.blocked,
            "error": r.error,
            "old_tasks_held": r.old_held,
            "oldest_held_days": r.oldest_held_days,
            "would_delete": r.dry_run_ids if (config.dry_run or r.blocked) else {},
        }
        for r in results
    }
    for key, value in per_integration.items():
        context.log.info(f"integration {key}: {value}")
    metadata = {
        "integrations_swept": len(results),
        "tombstoned": sum(r.tombstoned for r in results),
        "to_delete": sum(r.to_delete for r in results),
        "still_present": sum(r.still_present for r in results),
        "kept_tasks": sum(r.kept_tasks for r in results),
        "old_tasks_held": sum(r.old_held for r in results),
        "errors": sum(1 for r in results if r.error),
        "dry_run": config.dry_run,
        "api_calls": stats.calls,
        "details": MetadataValue.json(per_integration),
    }
    held = held_message(results)
    if held:
        context.log.warning(held)
        metadata["held"] = held
    message = blocked_message(results) or errors_message(results)
    if message:
        raise Failure(description=message, metadata=metadata)
    return Output(per_integration, metadata=metadata)


@job(description="Daily: apply RESERVE_DEL / DEALCARD_DEL tasks where delete control is on.")
def allio_delete_control() -> None:
    allio_delete_control_op()
