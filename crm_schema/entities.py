"""Upserts and tombstones for synced CRM entities, keyed by their table's unique key:
(integration, external_id), or (integration, role, external_id) for contacts.

An older provider snapshot never overwrites a newer one: the update only
applies when the incoming `source_version` is not older than the stored one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, UniqueConstraint, func, or_, select, update

from crm_schema.engine import dialect_insert


def entity_key(table: Table) -> tuple[str, ...]:
    """The columns of the table's unique key that holds `external_id`."""
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint) and "external_id" in constraint.columns:
            return tuple(c.name for c in constraint.columns)
    raise ValueError(f"{table.name} has no unique key on external_id")


def upsert_entities(
    conn: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    synced_at: datetime,
    key: Sequence[str] | None = None,
) -> dict[str, int]:
    """Insert or update rows (each with every column of the table's key).

    ``key`` names the unique key to upsert on when it is not the one holding
    `external_id` (e.g. orders: integration and iiko order id). Returns
    {external_id: row id} for every row now stored (for linking); rows of one call
    share the key's other values (one integration, one contact role) and their columns.
    Rows that reappear lose their tombstone: the provider has them again.
    """
    if not rows:
        return {}
    key = tuple(key) if key else entity_key(table)
    values = [dict(r, synced_at=synced_at, deleted_at=None) for r in rows]
    stmt = dialect_insert(conn)(table)
    updatable = {
        c.name: stmt.excluded[c.name]
        for c in table.columns
        if c.name not in ("id", *key) and c.name in values[0]
    }
    newer = or_(
        table.c.source_version.is_(None),
        stmt.excluded.source_version.is_(None),
        stmt.excluded.source_version >= table.c.source_version,
    )
    conn.execute(
        stmt.on_conflict_do_update(index_elements=list(key), set_=updatable, where=newer), values
    )
    found = conn.execute(
        select(table.c.id, table.c.external_id).where(
            *(table.c[name].in_({r[name] for r in rows}) for name in key)
        )
    )
    return {r.external_id: r.id for r in found}


def tombstone(
    conn: Connection,
    table: Table,
    integration_id: int,
    external_ids: Iterable[str],
    when: datetime,
    task_id: int | None = None,
) -> int:
    """Mark entities deleted (never removes the row); returns how many changed."""
    ids = list(external_ids)
    if not ids:
        return 0
    return conn.execute(
        update(table)
        .where(
            table.c.integration_id == integration_id,
            table.c.external_id.in_(ids),
            table.c.deleted_at.is_(None),
        )
        .values(deleted_at=when, source_task_id=task_id)
    ).rowcount


def live_count(conn: Connection, table: Table, integration_id: int) -> int:
    """How many entities of an integration are not tombstoned."""
    return int(
        conn.execute(
            select(func.count()).where(
                table.c.integration_id == integration_id, table.c.deleted_at.is_(None)
            )
        ).scalar_one()
    )
