"""The CRM database as a Dagster resource."""

from __future__ import annotations

from dagster import ConfigurableResource
from sqlalchemy import Engine

from orchestration.db import shared_engine


class CrmDatabase(ConfigurableResource):
    """Where the CRM lives; `database_url` defaults to DATABASE_URL."""

    database_url: str | None = None

    @property
    def engine(self) -> Engine:
        """The process-wide engine for this database."""
        return shared_engine(self.database_url)
