"""amoCRM jobs: the partitioned sync (RDESK lead updates and contacts; live, reconcile
and backfill runs)."""

from dagster import AssetSelection, define_asset_job, in_process_executor

from orchestration.defs.amocrm.assets import CONTACTS_ASSET, LEADS
from orchestration.defs.amocrm.checks import amocrm_contacts_queue_checks, amocrm_queue_checks

amocrm_sync_job = define_asset_job(
    "amocrm_sync",
    # The queue checks run on their own (a sensor); the in-run checks come with the op.
    selection=AssetSelection.assets(LEADS, CONTACTS_ASSET)
    - AssetSelection.checks(amocrm_queue_checks)
    - AssetSelection.checks(amocrm_contacts_queue_checks),
    executor_def=in_process_executor,
    description=(
        "Drain a day's amoCRM tasks: RDESK booked / mc updates patched into their leads "
        "(in inbox order, never older over newer) and contacts fetched or tombstoned."
    ),
)
