"""ALLIO assets: one op fills allio/reserves, allio/dealcards and allio/contacts.

A single op drains both entities so a run is fair across integrations and
entities and never waits on one asset while the quota idles.
"""

from datetime import timedelta

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    Config,
    MaterializeResult,
    multi_asset,
)
from pydantic import Field

from crm_schema.integrations import Integration, list_integrations
from orchestration.allio.quality import FAILED_SHARE_LIMIT, task_health
from orchestration.allio.sync import AllioSync, SyncOptions
from orchestration.partitions import allio_daily, partition_day
from orchestration.resources.allio import AllioResource
from orchestration.resources.base import CallStats
from orchestration.resources.database import CrmDatabase
from orchestration.run_tags import integration_filter, run_mode

RESERVES = AssetKey(["allio", "reserves"])
DEALCARDS = AssetKey(["allio", "dealcards"])
CONTACTS = AssetKey(["allio", "contacts"])
ENTITY_ASSETS = {"reserve": RESERVES, "dealcard": DEALCARDS}


class AllioSyncConfig(Config):
    """Knobs ops may set in the launchpad; defaults suit production."""

    lease_minutes: float = Field(10.0, description="A task in progress longer is reclaimed.")
    max_attempts: int = Field(5, description="Reconcile stops retrying a task after this.")
    idle_seconds: float = Field(
        20.0, description="A live run keeps polling this long for new tasks before it ends."
    )
    max_seconds: float = Field(900.0, description="A run's time budget; the rest waits.")


def _checks() -> list[AssetCheckSpec]:
    specs = []
    for key in ENTITY_ASSETS.values():
        specs.append(
            AssetCheckSpec(
                "no_stuck_tasks", asset=key, description="No task in progress past the lease."
            )
        )
        specs.append(
            AssetCheckSpec(
                "failed_task_share",
                asset=key,
                description=f"Failed tasks under {FAILED_SHARE_LIMIT:.0%} of the day's tasks.",
            )
        )
    return specs


@multi_asset(
    name="allio_sync_assets",
    specs=[
        AssetSpec(RESERVES, description="ALLIO reserves (seed 000 mapping)", group_name="allio"),
        AssetSpec(DEALCARDS, description="ALLIO deal cards", group_name="allio"),
        AssetSpec(
            CONTACTS,
            description="Contacts from reserve clients and deal-card buyers",
            deps=[RESERVES, DEALCARDS],
            group_name="allio",
        ),
    ],
    check_specs=_checks(),
    partitions_def=allio_daily,
)
def allio_sync_assets(
    context: AssetExecutionContext,
    config: AllioSyncConfig,
    crm_db: CrmDatabase,
    allio: AllioResource,
):
    """Claim the partition's tasks, fetch through the rate-limited client, upsert."""
    tags = context.run.tags
    mode = run_mode(tags)
    only = integration_filter(tags)
    day = partition_day(context.partition_key)
    engine = crm_db.engine
    lane = "live" if mode == "live" else mode
    resource = allio if allio.lane == lane else allio.model_copy(update={"lane": lane})
    stats = CallStats()
    clients: dict[int, object] = {}
    integrations: dict[int, Integration] = {}

    def active_ids() -> set[int]:
        with engine.connect() as conn:
            active = list_integrations(conn, provider="allio", active_only=True)
        integrations.update((item.id, item) for item in active)
        return {item.id for item in active}

    def client_for(integration_id: int):  # noqa: ANN202
        if integration_id not in clients:
            clients[integration_id] = resource.client_for(
                integrations[integration_id], run_id=context.run.run_id, stats=stats
            )
        return clients[integration_id]

    lease = timedelta(minutes=config.lease_minutes)
    opts = SyncOptions(
        day=day,
        run_id=context.run.run_id,
        mode=mode,
        integration_ids=only,
        lease=lease,
        max_attempts=config.max_attempts,
        idle_seconds=config.idle_seconds if mode == "live" else 0.0,
        max_seconds=config.max_seconds,
    )
    context.log.info(
        f"allio sync: partition {context.partition_key}, mode {mode}, "
        f"integrations {'all' if only is None else sorted(only)}"
    )
    try:
        result = AllioSync(engine, client_for, active_ids, opts, log=context.log.warning).run()
    finally:
        for client in clients.values():
            client.close()

    api = stats.as_metadata()
    calls = max(api["api_calls"], 1)
    for entity, key in ENTITY_ASSETS.items():
        s = result.entities[entity]
        yield MaterializeResult(
            asset_key=key,
            metadata={
                "entities_upserted": s.upserted,
                "entities_missing": s.missing,
                "tasks_done": s.tasks_done,
                "tasks_failed": s.tasks_failed,
                "batches": s.calls,
                "ids_requested": s.ids_requested,
                "api_calls": api["api_calls"],
                "api_429s": api["api_429s"],
                "api_retries": api["api_retries"],
                "ids_per_call": round(api["ids_requested"] / calls, 2),
                "seconds": result.seconds,
                "mode": mode,
            },
        )
        health = task_health(engine, entity, day, lease)
        yield AssetCheckResult(
            asset_key=key,
            check_name="no_stuck_tasks",
            passed=health.stuck == 0,
            severity=AssetCheckSeverity.ERROR,
            metadata={"stuck_tasks": health.stuck, "lease_minutes": config.lease_minutes},
        )
        yield AssetCheckResult(
            asset_key=key,
            check_name="failed_task_share",
            passed=health.failed_share < FAILED_SHARE_LIMIT,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "failed_tasks": health.failed,
                "tasks": health.total,
                "failed_share": round(health.failed_share, 4),
            },
        )
    contacts = result.contacts_upserted
    yield MaterializeResult(
        asset_key=CONTACTS,
        metadata={
            "contacts_upserted": contacts,
            "contacts_with_valid_phone": result.contacts_with_phone,
            "valid_phone_share": round(result.contacts_with_phone / contacts, 4)
            if contacts
            else 0.0,
            "seconds": result.seconds,
        },
    )
