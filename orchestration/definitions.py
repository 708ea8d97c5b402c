"""The crm-sync Dagster code location (loaded by workspace.yaml)."""

from __future__ import annotations

from dagster import Definitions

from orchestration.assets.allio import allio_sync_assets
from orchestration.delete_control_job import allio_delete_control
from orchestration.jobs import allio_sync_job
from orchestration.resources.allio import AllioResource
from orchestration.resources.database import CrmDatabase
from orchestration.schedules import allio_delete_control_daily, allio_reconcile_daily
from orchestration.sensors import allio_webhook_sensor


def build_definitions(database_url: str | None = None) -> Definitions:
    """Definitions bound to a CRM database (default: DATABASE_URL)."""
    return Definitions(
        assets=[allio_sync_assets],
        jobs=[allio_sync_job, allio_delete_control],
        sensors=[allio_webhook_sensor],
        schedules=[allio_reconcile_daily, allio_delete_control_daily],
        resources={
            "crm_db": CrmDatabase(database_url=database_url),
            "allio": AllioResource(database_url=database_url),
        },
    )


defs = build_definitions()
