"""ALLIO assets: reserves, deal cards and the contacts they carry, per day."""

from collections.abc import Mapping
from typing import Any

from dagster import AssetKey, AssetSpec
from sqlalchemy import Table

from crm_schema.providers.allio import dealcards, reserves
from crm_schema.tables import contacts
from orchestration.allio.mapping import CONTACT_KEY
from orchestration.allio.sync import AllioSyncHandler
from orchestration.allio.tasks import QUEUE
from orchestration.core.assets import SyncAssetsSpec, build_sync_assets
from orchestration.core.metadata import KINDS, OWNERS, table_metadata
from orchestration.core.sync_engine import SyncStats

RESERVES = AssetKey(["allio", "reserves"])
DEALCARDS = AssetKey(["allio", "dealcards"])
CONTACTS = AssetKey(["allio", "contacts"])
GROUP = "allio"

_DEAL = (
    "One row per {what} per ALLIO integration, kept in step with ALLIO: every webhook "
    "that names it makes it re-read from ALLIO's API. Columns: status, type, space, "
    "manager, comment, the date ALLIO calls `till` (as created_at, read in the "
    "integration's time zone, stored in UTC) and the linked contact; every other ALLIO "
    "field is kept in custom_fields, the whole record in raw. "
    "Deleted in ALLIO → deleted_at set by the daily delete control (if enabled). "
    "Partition = the UTC day the webhooks arrived."
)


def _spec(key: AssetKey, description: str, table: Table, **kwargs: Any) -> AssetSpec:
    # Built in a function: a module-level AssetSpec would be loaded as an asset of its own.
    return AssetSpec(
        key,
        description=description,
        group_name=GROUP,
        kinds=KINDS,
        owners=OWNERS,
        metadata=table_metadata(table),
        **kwargs,
    )


def _contacts_spec() -> AssetSpec:
    return _spec(
        CONTACTS,
        (
            "People behind ALLIO reserves (role client) and deal cards (role buyer), one row "
            "per integration, role and ALLIO id: first, middle and last name, e-mail, and "
            "the phone in E.164 when it is a valid number (the value as ALLIO sent it is "
            "always kept in phone_raw)."
        ),
        contacts,
        deps=[RESERVES, DEALCARDS],
    )


def _run_metadata(stats: SyncStats) -> Mapping[AssetKey, dict[str, Any]]:
    upserted = stats.extra.get("contacts_upserted", 0)
    with_phone = stats.extra.get("contacts_with_phone", 0)
    # A deal without its person shows at once: many of them mean a changed ALLIO payload.
    without = {e: stats.extra.get(f"{e}_without_contact", 0) for e in CONTACT_KEY}
    return {
        RESERVES: {"reserves_without_client": without["reserve"]},
        DEALCARDS: {"dealcards_without_buyer": without["dealcard"]},
        CONTACTS: {
            "contacts_upserted": upserted,
            "contacts_with_valid_phone": with_phone,
            "valid_phone_share": round(with_phone / upserted, 4) if upserted else 0.0,
            "deals_without_contact": sum(without.values()),
        },
    }


allio_sync_assets = build_sync_assets(
    SyncAssetsSpec(
        name="allio_sync_assets",
        provider="allio",
        resource_key="allio",
        queue=QUEUE,
        handler=AllioSyncHandler(),
        entity_assets={
            "reserve": _spec(
                RESERVES, _DEAL.format(what="reserve (booking of a property)"), reserves
            ),
            "dealcard": _spec(
                DEALCARDS, _DEAL.format(what="deal card (a sale in progress)"), dealcards
            ),
        },
        extra_assets=[_contacts_spec()],
        tables={RESERVES: reserves, DEALCARDS: dealcards, CONTACTS: contacts},
        extra_metadata=_run_metadata,
    )
)
