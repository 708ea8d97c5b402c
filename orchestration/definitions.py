"""The crm-sync Dagster code location (workspace.yaml, `dg dev`, `dg check defs`).

Assets, jobs, sensors, schedules and checks come from the `defs` folder, one folder
per provider, found by `load_from_defs_folder`. Resources are bound here: they need
the CRM database URL, which tests and tools pass in; each provider's
`resources.build_resources(database_url)` supplies its own.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from dagster import Definitions, load_from_defs_folder

from crm_sync.registry import PROVIDERS
from orchestration.resources.database import CrmDatabase


def build_resources(database_url: str | None = None) -> dict[str, object]:
    """Every resource of the code location, bound to ``database_url`` (default: DATABASE_URL)."""
    resources: dict[str, object] = {"crm_db": CrmDatabase(database_url=database_url)}
    for spec in PROVIDERS.values():
        package = spec.modules.get("orchestration")
        if package:
            module = importlib.import_module(f"{package}.resources")
            resources.update(module.build_resources(database_url))
    return resources


def build_definitions(database_url: str | None = None) -> Definitions:
    """Definitions bound to a CRM database (default: DATABASE_URL)."""
    return Definitions.merge(
        load_from_defs_folder(path_within_project=Path(__file__).parent),
        Definitions(resources=build_resources(database_url)),
    )


defs = build_definitions()
