"""Dagster instance storage chosen by environment: PostgreSQL when DAGSTER_PG_URL is set.

dagster.yaml cannot branch on a variable, so it names this class as `custom`
storage; it builds Dagster's own SQLite or PostgreSQL storage.
"""

from __future__ import annotations

import os
from typing import Any

from dagster import Field, StringSource
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._serdes import ConfigurableClass, ConfigurableClassData
from sqlalchemy.engine import make_url


def dagster_pg_url(raw: str) -> str:
    """dagster-postgres needs the explicit psycopg2 driver (NOTIFY fails otherwise)."""
    url = make_url(raw)
    if url.get_backend_name() not in ("postgresql", "postgres"):
        raise ValueError("DAGSTER_PG_URL must be a postgresql:// URL")
    return url.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)


class EnvSelectedStorage(DagsterStorage, ConfigurableClass):
    """Factory for the instance's storage (never instantiated itself)."""

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: dict[str, Any]
    ) -> Any:
        pg_url = os.environ.get("DAGSTER_PG_URL")
        if pg_url:
            from dagster_postgres import DagsterPostgresStorage

            return DagsterPostgresStorage(postgres_url=dagster_pg_url(pg_url), inst_data=inst_data)
        base_dir = config_value.get("base_dir") or os.path.join(
            os.environ.get("DAGSTER_HOME", ".dagster_home"), "storage"
        )
        return DagsterSqliteStorage.from_local(base_dir=base_dir, inst_data=inst_data)
