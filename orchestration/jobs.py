"""Jobs: the partitioned ALLIO sync and the delete-control sweep."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job, in_process_executor

from orchestration.assets.allio import CONTACTS, DEALCARDS, RESERVES

allio_sync_job = define_asset_job(
    "allio_sync",
    selection=AssetSelection.assets(RESERVES, DEALCARDS, CONTACTS),
    executor_def=in_process_executor,
    description="Drain the day's ALLIO tasks: fetch, map, upsert reserves, deal cards, contacts.",
)
