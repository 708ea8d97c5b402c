"""iiko's Dagster asset: `iiko/orders`, filled from webhooks and the Cloud API."""

from collections.abc import Mapping
from typing import Any

from dagster import AssetKey, AssetSpec, MetadataValue

from crm_schema.providers.iiko import orders
from orchestration.core.assets import DaySweep, SyncAssetsSpec, build_sync_assets
from orchestration.core.metadata import KINDS, OWNERS, table_metadata
from orchestration.core.sync_engine import SyncStats
from orchestration.iiko.reconcile import reconcile_day
from orchestration.iiko.sync import IikoSyncHandler
from orchestration.iiko.tasks import ORDER, QUEUE

ORDERS = AssetKey(["iiko", "orders"])
GROUP = "iiko"

_DESCRIPTION = (
    "iiko delivery orders, one row per integration and iiko order id. Webhook events "
    "that carry the whole order are applied as they are; the others are completed by "
    "deliveries/by_id. An older event or pull never overwrites a newer one (event time "
    "or the order's timestamp). Columns: the seed's (external_order_id, readable_number, "
    "promised_time, courier, order_type, restaurant_name, problem, creation_status, "
    "error_info), status normalised to the ten Cloud API statuses (an unknown spelling "
    "is kept), the sum in kopecks; the event or order as received in raw. Reconcile and "
    "backfill runs also list the day's orders (deliveries/by_delivery_date_and_status) "
    "to find orders whose webhooks were lost. Partition = the UTC day the webhooks "
    "arrived (reconcile: the delivery date)."
)


def _orders_spec() -> AssetSpec:
    # Built in a function: a module-level AssetSpec would be loaded as an asset of its own.
    return AssetSpec(
        ORDERS,
        description=_DESCRIPTION,
        group_name=GROUP,
        kinds=KINDS,
        owners=OWNERS,
        metadata=table_metadata(orders),
    )


def _run_metadata(stats: SyncStats) -> Mapping[AssetKey, dict[str, Any]]:
    entity = stats.entities[ORDER]
    return {
        ORDERS: {
            "orders_upserted": entity.upserted,
            "orders_unknown_status": stats.extra.get("orders_unknown_status", 0),
            "events_applied_from_payload": entity.from_payload,
            "orders_fetched_by_id": stats.extra.get("orders_from_api", 0),
        }
    }


def _reconcile(sweep: DaySweep) -> Mapping[AssetKey, dict[str, Any]]:
    results = reconcile_day(
        sweep.engine, sweep.integrations, lambda i: sweep.client_for(i.id), sweep.day
    )
    for result in results:
        sweep.log(
            f"iiko reconcile {sweep.day}: integration {result.integration_id}: "
            f"{result.orders_seen} orders, {result.orders_new} new"
            + (f", error: {result.error}" if result.error else "")
        )
    return {
        ORDERS: {
            "orders_found_by_reconcile": sum(r.orders_new for r in results),
            "orders_listed_by_reconcile": sum(r.orders_seen for r in results),
            "reconcile_unknown_status": sum(r.unknown_status for r in results),
            "reconcile_errors": sum(1 for r in results if r.error),
            "reconcile_details": MetadataValue.json(
                {
                    str(r.integration_id): {
                        "organizations": r.organizations,
                        "orders": r.orders_seen,
                        "new": r.orders_new,
                        "not_mapped": r.not_mapped,
                        "error": r.error,
                    }
                    for r in results
                }
            ),
        }
    }


iiko_sync_assets = build_sync_assets(
    SyncAssetsSpec(
        name="iiko_sync_assets",
        provider="iiko",
        resource_key="iiko",
        queue=QUEUE,
        handler=IikoSyncHandler(),
        entity_assets={ORDER: _orders_spec()},
        tables={ORDERS: orders},
        extra_metadata=_run_metadata,
        day_sweep=_reconcile,
    )
)
