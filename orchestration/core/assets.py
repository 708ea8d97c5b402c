"""The sync assets every provider gets: one op drains a day's tasks into its CRM tables.

A single op fills all of a provider's assets, so a run is fair across integrations and
entities and never waits on one asset while the quota idles. The op is thin: it reads
the run's mode, day and integrations from its tags and partition, runs the generic
`SyncEngine`, and reports what happened as materialization metadata and checks.
"""

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    Config,
    DagsterExecutionInterruptedError,
    MaterializeResult,
    multi_asset,
)
from pydantic import Field
from sqlalchemy import Engine, Table

from crm_schema.integrations import Integration, list_integrations
from crm_schema.task_queue import TASK_ERROR, TaskQueue, now_utc
from crm_sync.settings import get_settings
from orchestration.core.metadata import row_counts
from orchestration.core.partitions import daily_partitions, partition_day
from orchestration.core.run_tags import integration_filter, lane_for, run_mode
from orchestration.core.sync_engine import SyncEngine, SyncHandler, SyncOptions, SyncStats
from orchestration.resources.base import ProviderResource
from orchestration.resources.transport import CallStats

STUCK = "no_stuck_tasks"
FAILED_SHARE = "failed_task_share"


class SyncConfig(Config):
    """Knobs ops may set in the launchpad; defaults suit production."""

    lease_seconds: float | None = Field(
        None,
        gt=0,
        description="A claimed task not heartbeaten this long goes to another run "
        "(default: CRM_SYNC_TASK_LEASE_SECONDS, 120).",
    )
    idle_seconds: float = Field(
        20.0, ge=0, description="Today's live run keeps polling this long for new tasks."
    )
    max_seconds: float = Field(900.0, gt=0, description="A run's time budget; the rest waits.")


@dataclass(frozen=True)
class DaySweep:
    """What a provider's day sweep gets: the run's day, mode, integrations and clients."""

    engine: Engine
    day: date
    mode: str
    run_id: str
    integrations: Sequence[Integration]  # active, narrowed by the run's integration tag
    client_for: Callable[[int], Any]  # the run's client of an integration (shared stats)
    log: Callable[[str], None]


@dataclass(frozen=True)
class SyncAssetsSpec:
    """What differs between providers' sync assets."""

    name: str  # the op (e.g. "allio_sync_assets")
    provider: str
    resource_key: str  # the provider resource (a ProviderResource with `client_for`)
    queue: TaskQueue
    handler: SyncHandler
    entity_assets: Mapping[str, AssetSpec]  # entity → the asset its rows land in
    tables: Mapping[AssetKey, Table]  # asset → its CRM table (row counts)
    extra_assets: Sequence[AssetSpec] = ()
    # Provider metadata per asset from the run's stats (e.g. contacts found in deals).
    extra_metadata: Callable[[SyncStats], Mapping[AssetKey, dict[str, Any]]] = field(
        default=lambda _stats: {}
    )
    failed_share_limit: float = 0.05
    # Reconciles and backfills may also sweep the day at the provider (e.g. list the
    # day's orders to find lost webhooks): called after the queue is drained, it
    # returns metadata per asset.
    day_sweep: Callable[[DaySweep], Mapping[AssetKey, dict[str, Any]]] | None = None
    sweep_modes: tuple[str, ...] = ("reconcile", "backfill")


def _in_run_checks(spec: SyncAssetsSpec) -> list[AssetCheckSpec]:
    specs = []
    for asset in spec.entity_assets.values():
        specs.append(
            AssetCheckSpec(
                STUCK, asset=asset.key, description="No task in progress past its lease."
            )
        )
        specs.append(
            AssetCheckSpec(
                FAILED_SHARE,
                asset=asset.key,
                description=f"Failed tasks under {spec.failed_share_limit:.0%} of the day's tasks.",
            )
        )
    return specs


def build_sync_assets(spec: SyncAssetsSpec) -> AssetsDefinition:
    """The provider's partitioned sync assets (see module docstring)."""

    @multi_asset(
        name=spec.name,
        specs=[*spec.entity_assets.values(), *spec.extra_assets],
        check_specs=_in_run_checks(spec),
        partitions_def=daily_partitions,
        required_resource_keys={"crm_db", spec.resource_key},
    )
    def _assets(context: AssetExecutionContext, config: SyncConfig) -> Iterator[Any]:
        yield from _materialize(spec, context, config)

    return _assets


def _materialize(
    spec: SyncAssetsSpec, context: AssetExecutionContext, config: SyncConfig
) -> Iterator[Any]:
    tags = context.run.tags
    mode = run_mode(tags)
    only = integration_filter(tags)
    day = partition_day(context.partition_key)
    today = day == now_utc().date()
    engine: Engine = context.resources.crm_db.engine
    base: ProviderResource = getattr(context.resources, spec.resource_key)
    lane = lane_for(mode, today=today)
    resource = base if base.lane == lane else base.model_copy(update={"lane": lane})
    lease = timedelta(seconds=config.lease_seconds or get_settings().task_lease_seconds)
    stats = CallStats()
    clients: dict[int, Any] = {}
    integrations: dict[int, Integration] = {}

    def active_ids() -> set[int]:
        with engine.connect() as conn:
            active = list_integrations(conn, provider=spec.provider, active_only=True)
        integrations.update((item.id, item) for item in active)
        return {item.id for item in active}

    def client_for(integration_id: int) -> Any:
        if integration_id not in clients:
            clients[integration_id] = resource.client_for(  # type: ignore[attr-defined]
                integrations[integration_id], run_id=context.run.run_id, stats=stats
            )
        return clients[integration_id]

    opts = SyncOptions(
        day=day,
        run_id=context.run.run_id,
        mode=mode,  # type: ignore[arg-type]
        provider=spec.provider,
        integration_ids=only,
        lease=lease,
        idle_seconds=config.idle_seconds,
        max_seconds=config.max_seconds,
        calls_per_second=resource.calls_per_second(spec.provider),
        interruptions=(KeyboardInterrupt, DagsterExecutionInterruptedError),
    )
    context.log.info(
        f"{spec.provider} sync: partition {context.partition_key}, mode {mode}, lane {lane}, "
        f"integrations {'all' if only is None else sorted(only)}, lease {lease.total_seconds():g} s"
    )
    sync = SyncEngine(
        engine, spec.queue, spec.handler, client_for, active_ids, opts, log=context.log.warning
    )
    swept: Mapping[AssetKey, dict[str, Any]] = {}
    try:
        result = sync.run()
        if spec.day_sweep is not None and mode in spec.sweep_modes:
            ids = active_ids() if only is None else active_ids() & only
            swept = spec.day_sweep(
                DaySweep(
                    engine=engine,
                    day=day,
                    mode=mode,
                    run_id=context.run.run_id,
                    integrations=[integrations[i] for i in sorted(ids)],
                    client_for=client_for,
                    log=context.log.info,
                )
            )
    finally:
        for client in clients.values():
            client.close()

    api = stats.as_metadata()
    calls = max(api["api_calls"], 1)
    extra = {k: dict(v) for k, v in spec.extra_metadata(result).items()}
    for key, values in swept.items():
        extra.setdefault(key, {}).update(values)
    for entity, asset in spec.entity_assets.items():
        s = result.entities[entity]
        yield MaterializeResult(
            asset_key=asset.key,
            metadata={
                "entities_upserted": s.upserted,
                "entities_missing": s.missing,
                "tasks_done": s.tasks_done,
                "tasks_failed": s.tasks_failed,
                "tasks_retrying": s.tasks_retrying,
                "batches": s.calls,
                "ids_requested": s.ids_requested,
                "api_calls": api["api_calls"],
                "api_429s": api["api_429s"],
                "api_retries": api["api_retries"],
                "ids_per_call": round(api["ids_requested"] / calls, 2),
                "seconds": result.seconds,
                "mode": mode,
                **extra.get(asset.key, {}),
                **row_counts(engine, spec.tables[asset.key], spec.provider),
            },
        )
        with engine.connect() as conn:
            health = spec.queue.health(conn, spec.handler.handler, fresh_minutes=60, entity=entity)
            counts = spec.queue.status_counts(
                conn, day, handler=spec.handler.handler, entity=entity
            )
        total = sum(counts.values())
        failed = counts.get(TASK_ERROR, 0)
        share = failed / total if total else 0.0
        yield AssetCheckResult(
            asset_key=asset.key,
            check_name=STUCK,
            passed=health.past_lease == 0,
            severity=AssetCheckSeverity.ERROR,
            metadata={"stuck_tasks": health.past_lease, "lease_seconds": lease.total_seconds()},
        )
        yield AssetCheckResult(
            asset_key=asset.key,
            check_name=FAILED_SHARE,
            passed=share < spec.failed_share_limit,
            severity=AssetCheckSeverity.WARN,
            metadata={"failed_tasks": failed, "tasks": total, "failed_share": round(share, 4)},
        )
    for asset in spec.extra_assets:
        metadata = {
            **extra.get(asset.key, {}),
            "seconds": result.seconds,
            **row_counts(engine, spec.tables[asset.key], spec.provider),
        }
        yield MaterializeResult(asset_key=asset.key, metadata=metadata)
