"""iiko jobs: the partitioned order sync (live, reconcile and backfill runs)."""

from dagster import AssetSelection, define_asset_job, in_process_executor

from orchestration.defs.iiko.assets import ORDERS
from orchestration.defs.iiko.checks import iiko_queue_checks

iiko_sync_job = define_asset_job(
    "iiko_sync",
    # The queue checks run on their own (a sensor); the in-run checks come with the op.
    selection=AssetSelection.assets(ORDERS) - AssetSelection.checks(iiko_queue_checks),
    executor_def=in_process_executor,
    description=(
        "Drain a day's iiko tasks into orders (events applied as received, the rest "
        "fetched by id); reconcile and backfill runs also list the day's orders at iiko."
    ),
)
