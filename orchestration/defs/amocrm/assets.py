"""amoCRM's Dagster assets: `amocrm/leads` (RDESK updates) and `amocrm/contacts`.

One op fills both (like the generic sync assets), but runs the amoCRM loop
(`orchestration.amocrm.sync`) instead of the generic engine: RDESK tasks are applied
one update at a time, with outcomes of their own. The op reads the run's mode, day and
integrations from its tags and partition; an IP block or refused credentials fail the
run loudly (`Failure`) with its tasks handed back untouched.
"""

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    DagsterExecutionInterruptedError,
    Failure,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)
from sqlalchemy import Engine, select

from crm_schema.integrations import Integration, list_integrations
from crm_schema.providers.amocrm import leads
from crm_schema.tables import TASK_ERROR, contacts, integrations
from crm_schema.task_queue import now_utc
from crm_sync.settings import get_settings
from orchestration.amocrm.sync import PROVIDER, AmocrmSync, RunOptions, RunStats, RunStopped
from orchestration.amocrm.tasks import CONTACT, CONTACTS, LEAD, QUEUE, RDESK
from orchestration.core.assets import FAILED_SHARE, STUCK, SyncConfig
from orchestration.core.metadata import KINDS, OWNERS, row_counts, table_metadata
from orchestration.core.partitions import daily_partitions, partition_day
from orchestration.core.run_tags import integration_filter, lane_for, run_mode
from orchestration.resources.transport import CallStats

LEADS = AssetKey(["amocrm", "leads"])
CONTACTS_ASSET = AssetKey(["amocrm", "contacts"])
GROUP = "amocrm"
ATTENTION = "integrations_need_no_attention"
FAILED_SHARE_LIMIT = 0.05
# asset → (handler, entity, table)
ASSETS = {LEADS: (RDESK, LEAD, leads), CONTACTS_ASSET: (CONTACTS, CONTACT, contacts)}

_LEADS_DESCRIPTION = (
    "amoCRM leads as RDESK (sanatorium system) updates last wrote them, one row per "
    "integration and amoCRM lead id. Each booked / mc element is validated (a bad one "
    "ends its task in 3 with the validation errors), resolved to its lead (mock_lead_id "
    "mode: the lead named ID_<lead_id>, found or created once), read, and patched with "
    "price and custom_fields_values (field ids from the integration's settings); raw is "
    "the lead after the update, last_update_id the inbox row applied. Updates of one lead "
    "apply in inbox order; an older one never overwrites a newer one. Partition = the UTC "
    "day the updates arrived."
)
_CONTACTS_DESCRIPTION = (
    "amoCRM contacts from contact webhooks (role 'contact', source_entity 'amocrm'): "
    "fetched with GET /api/v4/contacts?filter[id][]=… (≤ 250 a call); e-mail and phone "
    "(E.164, phone_raw as sent) from custom_fields_values EMAIL / PHONE; a delete "
    "tombstones (deleted_at) without a fetch. Partition = the UTC day the webhooks arrived."
)


def _spec(key: AssetKey, description: str, table: Any) -> AssetSpec:
    return AssetSpec(
        key,
        description=description,
        group_name=GROUP,
        kinds=KINDS,
        owners=OWNERS,
        metadata=table_metadata(table),
    )


def _check_specs() -> list[AssetCheckSpec]:
    specs = []
    for key in ASSETS:
        specs += [
            AssetCheckSpec(STUCK, asset=key, description="No task in progress past its lease."),
            AssetCheckSpec(
                FAILED_SHARE,
                asset=key,
                description=f"Failed tasks under {FAILED_SHARE_LIMIT:.0%} of the day's tasks.",
            ),
            AssetCheckSpec(
                ATTENTION,
                asset=key,
                description="No active amoCRM integration needs a person (re-authorization, "
                "IP blocked): `integrations.attention` is empty.",
            ),
        ]
    return specs


def needing_attention(engine: Engine) -> dict[str, dict[str, Any]]:
    """Active amoCRM integrations with `attention` set: {id: {name, attention, since}}."""
    c = integrations.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(c.id, c.name, c.attention, c.attention_at).where(
                c.provider == PROVIDER, c.is_active.is_(True), c.attention.is_not(None)
            )
        ).all()
    return {
        str(r.id): {
            "name": r.name,
            "attention": r.attention,
            "since": str(r.attention_at) if r.attention_at else None,
        }
        for r in rows
    }


def attention_result(key: AssetKey, engine: Engine) -> AssetCheckResult:
    """The attention check for one asset, now."""
    waiting = needing_attention(engine)
    return AssetCheckResult(
        asset_key=key,
        check_name=ATTENTION,
        passed=not waiting,
        severity=AssetCheckSeverity.ERROR,
        description="; ".join(f"integration {k}: {v['attention']}" for k, v in waiting.items())
        or None,
        metadata={
            "integrations_needing_attention": len(waiting),
            "details": MetadataValue.json(waiting),
        },
    )


def run_metadata(stats: RunStats, api: dict[str, Any]) -> dict[AssetKey, dict[str, Any]]:
    """Per-asset metadata of one run."""
    common = {
        "api_calls": api["api_calls"],
        "api_429s": api["api_429s"],
        "api_retries": api["api_retries"],
        "tasks_done": stats.tasks_done,
        "tasks_failed": stats.tasks_failed,
        "tasks_retrying": stats.tasks_retrying,
        "seconds": stats.seconds,
    }
    return {
        LEADS: {**stats.leads_metadata(), **common},
        CONTACTS_ASSET: {**stats.contacts_metadata(), **common},
    }


@multi_asset(
    name="amocrm_sync_assets",
    specs=[
        _spec(LEADS, _LEADS_DESCRIPTION, leads),
        _spec(CONTACTS_ASSET, _CONTACTS_DESCRIPTION, contacts),
    ],
    check_specs=_check_specs(),
    partitions_def=daily_partitions,
    required_resource_keys={"crm_db", "amocrm"},
)
def amocrm_sync_assets(context: AssetExecutionContext, config: SyncConfig) -> Iterator[Any]:
    """Drain a day's amoCRM tasks: RDESK lead updates and contacts."""
    tags = context.run.tags
    mode = run_mode(tags)
    only = integration_filter(tags)
    day = partition_day(context.partition_key)
    engine: Engine = context.resources.crm_db.engine
    base = context.resources.amocrm
    lane = lane_for(mode, today=day == now_utc().date())
    resource = base if base.lane == lane else base.model_copy(update={"lane": lane})
    lease = timedelta(seconds=config.lease_seconds or get_settings().task_lease_seconds)
    calls = CallStats()
    clients: dict[int, Any] = {}
    known: dict[int, Integration] = {}

    def active() -> dict[int, Integration]:
        with engine.connect() as conn:
            found = list_integrations(conn, provider=PROVIDER, active_only=True)
        known.update((item.id, item) for item in found)
        return {item.id: item for item in found}

    def client_for(integration_id: int) -> Any:
        if integration_id not in clients:
            clients[integration_id] = resource.client_for(
                known[integration_id], run_id=context.run.run_id, stats=calls
            )
        return clients[integration_id]

    opts = RunOptions(
        day=day,
        run_id=context.run.run_id,
        mode=mode,  # type: ignore[arg-type]
        integration_ids=only,
        lease=lease,
        idle_seconds=config.idle_seconds,
        max_seconds=config.max_seconds,
        calls_per_second=resource.calls_per_second(PROVIDER),
        interruptions=(KeyboardInterrupt, DagsterExecutionInterruptedError),
    )
    context.log.info(
        f"amoCRM sync: partition {context.partition_key}, mode {mode}, lane {lane}, "
        f"integrations {'all' if only is None else sorted(only)}, lease {lease.total_seconds():g} s"
    )
    sync = AmocrmSync(engine, client_for, active, opts, log=context.log.warning)
    try:
        stats = sync.run()
    except RunStopped as exc:
        metadata = run_metadata(sync.stats, calls.as_metadata())[LEADS]
        raise Failure(
            description=f"{exc}; the run's tasks were handed back untouched",
            metadata={**metadata, "attention": MetadataValue.json(needing_attention(engine))},
        ) from exc
    finally:
        for client in clients.values():
            client.close()

    extra = run_metadata(stats, calls.as_metadata())
    for key, (handler, entity, table) in ASSETS.items():
        yield MaterializeResult(
            asset_key=key,
            metadata={"mode": mode, **extra[key], **row_counts(engine, table, PROVIDER)},
        )
        with engine.connect() as conn:
            health = QUEUE.health(conn, handler, fresh_minutes=60, entity=entity)
            counts = QUEUE.status_counts(conn, day, handler=handler, entity=entity)
        total = sum(counts.values())
        failed = counts.get(TASK_ERROR, 0)
        share = failed / total if total else 0.0
        yield AssetCheckResult(
            asset_key=key,
            check_name=STUCK,
            passed=health.past_lease == 0,
            severity=AssetCheckSeverity.ERROR,
            metadata={"stuck_tasks": health.past_lease, "lease_seconds": lease.total_seconds()},
        )
        yield AssetCheckResult(
            asset_key=key,
            check_name=FAILED_SHARE,
            passed=share < FAILED_SHARE_LIMIT,
            severity=AssetCheckSeverity.WARN,
            metadata={"failed_tasks": failed, "tasks": total, "failed_share": round(share, 4)},
        )
        yield attention_result(key, engine)
