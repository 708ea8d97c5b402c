"""U-ON jobs: the partitioned sync (live, reconcile and backfill runs)."""

from dagster import AssetSelection, define_asset_job, in_process_executor

from orchestration.defs.uon.assets import CALLS, CUSTOMERS, REQUESTS
from orchestration.defs.uon.checks import uon_queue_checks

uon_sync_job = define_asset_job(
    "uon_sync",
    # The queue checks run on their own (a sensor); the in-run checks come with the op.
    selection=AssetSelection.assets(CALLS, CUSTOMERS, REQUESTS)
    - AssetSelection.checks(uon_queue_checks),
    executor_def=in_process_executor,
    description=(
        "Drain a day's U-ON tasks: call events into calls (and call logs asked for), "
        "numbers enriched once each (the phone cache first), clients and requests re-read "
        "after U-ON's webhooks; reconcile and backfill runs also list the day's requests."
    ),
)
