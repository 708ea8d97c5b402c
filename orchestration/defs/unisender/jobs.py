"""Unisender job: export amoCRM contacts to every active account's lists."""

from dagster import AssetSelection, define_asset_job, in_process_executor

from orchestration.defs.unisender.assets import CONTACTS_ASSET

unisender_export_job = define_asset_job(
    "unisender_export",
    selection=AssetSelection.assets(CONTACTS_ASSET),
    executor_def=in_process_executor,
    description="Export new, changed and deleted amoCRM contacts to the Unisender accounts' "
    "lists (importContacts, ≤ 500 a call).",
)
