"""U-ON assets: clients (`uon/customers`), calls (`uon/calls`) and leads and requests
(`uon/requests`), filled per day by one op draining the day's `uon_tasks`."""

from collections.abc import Mapping
from typing import Any

from dagster import AssetKey, AssetSpec
from sqlalchemy import Table

from crm_schema.providers.uon import customers, uon_calls, uon_requests
from orchestration.core.assets import DaySweep, SyncAssetsSpec, build_sync_assets
from orchestration.core.metadata import KINDS, OWNERS, table_metadata
from orchestration.core.sync_engine import SyncStats
from orchestration.resources.errors import ProviderError
from orchestration.uon.sync import UonSyncHandler, sweep_requests
from orchestration.uon.tasks import CALL, CUSTOMER, QUEUE, REQUEST

CUSTOMERS = AssetKey(["uon", "customers"])
CALLS = AssetKey(["uon", "calls"])
REQUESTS = AssetKey(["uon", "requests"])
GROUP = "uon"


def _spec(key: AssetKey, description: str, table: Table) -> AssetSpec:
    # Built in a function: a module-level AssetSpec would be loaded as an asset of its own.
    return AssetSpec(
        key,
        description=description,
        group_name=GROUP,
        kinds=KINDS,
        owners=OWNERS,
        metadata=table_metadata(table),
    )


_CUSTOMERS = (
    "U-ON.Travel clients, one row per integration and U-ON client id (u_id): full name "
    "(surname, name, patronymic), phone and mobile in E.164 (the value as U-ON sent it "
    "in phone_raw), e-mail, company, status and manager. Filled by the enrichment of "
    "call events (one user/phone lookup per number not fresh in the shared phone cache) "
    "and by U-ON's client webhooks (created or changed: user/{id} re-read; deleted: "
    "deleted_at set). A fresh non-empty value overwrites, an empty one never erases. "
    "Partition = the UTC day the events arrived."
)
_CALLS = (
    "Telephony calls, one row per integration and call id: direction, the other "
    "party's number, extension, start / answer / end times, duration and the "
    "telephony's status at hangup, the U-ON client when the number is known, and the "
    "U-ON call log (log_status pending → sending → succeeded with uon_lead_id | failed "
    "| skipped). Events are applied in arrival order; the newest wins. "
    "Partition = the UTC day the events arrived."
)
_REQUESTS = (
    "U-ON.Travel leads and requests (kind lead | request), one row per integration, "
    "kind and U-ON id: status, whether it is still active, client and manager; re-read "
    "from U-ON whenever a webhook names one (gone at U-ON: deleted_at set), and listed "
    "for the whole day by the daily reconcile (requests/{day}/{day}/{page})."
)


def _run_metadata(stats: SyncStats) -> Mapping[AssetKey, dict[str, Any]]:
    extra = stats.extra
    looked_up = extra.get("phones_looked_up", 0)
    found = extra.get("phones_found", 0)
    numbers = looked_up + extra.get("cache_hits", 0)
    return {
        CUSTOMERS: {
            "numbers_enriched": numbers,
            "phone_lookups": looked_up,
            "phone_cache_hits": extra.get("cache_hits", 0),
            "phones_found": found,
            "phones_not_found": extra.get("phones_not_found", 0),
            "found_share": round(found / looked_up, 4) if looked_up else 0.0,
            "customers_refreshed": extra.get("customers_refreshed", 0),
            "customers_tombstoned": extra.get("customers_tombstoned", 0),
            "cache_entries_dropped": extra.get("cache_dropped", 0),
            "cache_entries_refreshed": extra.get("cache_refreshed", 0),
        },
        CALLS: {
            "call_events": extra.get("call_events", 0),
            "call_logs_requested": extra.get("calls_log_pending", 0),
        },
        REQUESTS: {"requests_tombstoned": extra.get("requests_tombstoned", 0)},
    }


def _sweep(sweep: DaySweep) -> Mapping[AssetKey, dict[str, Any]]:
    """Reconciles and backfills list the day's requests at U-ON (pages of 100)."""
    pages = listed = failed = 0
    for integration in sweep.integrations:
        try:
            found = sweep_requests(
                sweep.engine, integration.id, sweep.client_for(integration.id), sweep.day
            )
        except (ProviderError, ValueError) as exc:
            failed += 1
            sweep.log(f"U-ON integration {integration.id}: requests listing failed: {exc}")
            continue
        pages += found["pages"]
        listed += found["requests"]
    return {
        REQUESTS: {
            "requests_listed": listed,
            "request_pages": pages,
            "request_listings_failed": failed,
        }
    }


uon_sync_assets = build_sync_assets(
    SyncAssetsSpec(
        name="uon_sync_assets",
        provider="uon",
        resource_key="uon",
        queue=QUEUE,
        handler=UonSyncHandler(),
        entity_assets={
            CALL: _spec(CALLS, _CALLS, uon_calls),
            CUSTOMER: _spec(CUSTOMERS, _CUSTOMERS, customers),
            REQUEST: _spec(REQUESTS, _REQUESTS, uon_requests),
        },
        tables={CUSTOMERS: customers, CALLS: uon_calls, REQUESTS: uon_requests},
        extra_metadata=_run_metadata,
        day_sweep=_sweep,
    )
)
