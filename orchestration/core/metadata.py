"""Dagster's standard metadata for CRM tables: column schema, row counts, kinds, owners."""

from __future__ import annotations

from typing import Any

from dagster import MetadataValue, TableColumn, TableColumnConstraints, TableSchema
from sqlalchemy import JSON, Engine, Table, UniqueConstraint, func, select

from crm_schema.tables import integrations

KINDS = {"python", "sql"}
OWNERS = ["team:crm-sync"]


def table_schema(table: Table) -> TableSchema:
    """The table's columns as the UI shows them (from the SQLAlchemy definition)."""
    unique = {
        c.name
        for constraint in table.constraints
        if isinstance(constraint, UniqueConstraint) and len(constraint.columns) == 1
        for c in constraint.columns
    }
    return TableSchema(
        columns=[
            TableColumn(
                name=column.name,
                type="json"
                if isinstance(column.type, JSON)
                else str(column.type.compile()).lower(),
                description=column.comment,
                constraints=TableColumnConstraints(
                    nullable=bool(column.nullable) and not column.primary_key,
                    unique=column.primary_key or column.name in unique,
                ),
            )
            for column in table.columns
        ]
    )


def table_metadata(table: Table) -> dict[str, Any]:
    """Definition-time metadata of an asset stored in ``table``."""
    return {
        "dagster/column_schema": table_schema(table),
        "dagster/table_name": table.name,
    }


def row_counts(engine: Engine, table: Table, provider: str) -> dict[str, Any]:
    """`dagster/row_count` (live rows of ``provider``'s integrations) and rows per integration."""
    query = (
        select(table.c.integration_id, func.count())
        .join(integrations, integrations.c.id == table.c.integration_id)
        .where(integrations.c.provider == provider)
        .group_by(table.c.integration_id)
    )
    if "deleted_at" in table.c:
        query = query.where(table.c.deleted_at.is_(None))
    with engine.connect() as conn:
        per_integration = {str(i): int(n) for i, n in conn.execute(query)}
    return {
        "dagster/row_count": sum(per_integration.values()),
        "rows_per_integration": MetadataValue.json(per_integration),
    }
