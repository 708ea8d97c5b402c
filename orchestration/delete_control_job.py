"""Job `allio_delete_control`: the daily sweep of `*_DEL` tasks into tombstones."""

from dagster import Config, Failure, MetadataValue, OpExecutionContext, Output, job, op
from pydantic import Field

from crm_schema.integrations import list_integrations
from orchestration.allio.delete_control import DeleteControlOptions, blocked_message, sweep
from orchestration.resources.allio import AllioResource
from orchestration.resources.base import CallStats
from orchestration.resources.database import CrmDatabase


class DeleteControlConfig(Config):
    """Guard rails ops can set per run."""

    dry_run: bool = Field(False, description="Report what would be deleted; change nothing.")
    max_delete_share: float = Field(
        0.2, ge=0.0, le=1.0, description="Fail if one sweep would delete more of an integration."
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

    def client_for(integration):  # noqa: ANN001, ANN202
        client = resource.client_for(integration, run_id=context.run.run_id, stats=stats)
        clients.append(client)
        return client

    opts = DeleteControlOptions(
        run_id=context.run.run_id, dry_run=config.dry_run, max_delete_share=config.max_delete_share
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
            "to_delete": r.to_delete,
            "live_entities": r.live_entities,
            "share": round(r.share, 4),
            "tombstoned": r.tombstoned,
            "blocked": r.blocked,
            "error": r.error,
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
        "errors": sum(1 for r in results if r.error),
        "dry_run": config.dry_run,
        "api_calls": stats.calls,
        "details": MetadataValue.json(per_integration),
    }
    message = blocked_message(results, config.max_delete_share)
    if message:
        raise Failure(description=message, metadata=metadata)
    return Output(per_integration, metadata=metadata)


@job(description="Daily: apply RESERVE_DEL / DEALCARD_DEL tasks where delete control is on.")
def allio_delete_control() -> None:
    allio_delete_control_op()
