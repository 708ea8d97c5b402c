"""source_version as a timestamp; ALLIO times re-read in Moscow time; contacts keyed by role

`source_version` was text compared as text. It becomes a timestamp (UTC), recomputed
for reserves and deal cards from the `updated_at` kept in `raw`, and `created_at` is
recomputed from `raw.till`: both are zone-less Moscow time in ALLIO (until now they
were read as UTC). Contacts get a `role` (`client` for reserves, `buyer` for deal
cards) and are unique per (integration, role, external id). SPACE_CHANGED tasks, which
carry reserve ids but were ended as an unknown command, go back to the queue as
reserve syncs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 02:00:00
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ENTITY_TABLES = ("reserves", "dealcards", "contacts")
DEAL_TABLES = ("reserves", "dealcards")
ALLIO_ZONE = ZoneInfo("Europe/Moscow")  # every integration's zone before zones existed
CHUNK = 1000


def _as_utc(value: object) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ALLIO_ZONE)
    return parsed.astimezone(UTC)


def _retime_deals(name: str) -> None:
    """created_at ← raw.till, source_version ← raw.updated_at, both in UTC."""
    table = sa.table(
        name,
        sa.column("id", sa.Integer),
        sa.column("raw", sa.JSON),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("source_version", sa.DateTime(timezone=True)),
    )
    conn = op.get_bind()
    last = 0
    while True:
        rows = conn.execute(
            sa.select(table.c.id, table.c.raw)
            .where(table.c.id > last)
            .order_by(table.c.id)
            .limit(CHUNK)
        ).all()
        if not rows:
            return
        values = []
        for row in rows:
            raw = row.raw if isinstance(row.raw, dict) else {}
            values.append(
                {
                    "row_id": row.id,
                    "created": _as_utc(raw.get("till")),
                    "version": _as_utc(raw.get("updated_at")),
                }
            )
        conn.execute(
            table.update()
            .where(table.c.id == sa.bindparam("row_id"))
            .values(created_at=sa.bindparam("created"), source_version=sa.bindparam("version")),
            values,
        )
        last = rows[-1].id


def upgrade() -> None:
    for name in ENTITY_TABLES:
        with op.batch_alter_table(name) as batch:
            batch.alter_column(
                "source_version",
                existing_type=sa.String(length=64),
                type_=sa.DateTime(timezone=True),
                existing_nullable=True,
                postgresql_using="NULL::timestamptz",
            )
        # SQLite copied the old text over: clear it, it is recomputed below.
        op.execute(sa.text(f"UPDATE {name} SET source_version = NULL"))
    for name in DEAL_TABLES:
        _retime_deals(name)

    op.execute(
        sa.text(
            "UPDATE allio_tasks SET entity = 'reserve', handler = 'sync', status = 0, "
            "error = NULL, finished_at = NULL, next_attempt_at = NULL "
            "WHERE command = 'SPACE_CHANGED' AND handler IS NULL"
        )
    )

    with op.batch_alter_table("contacts") as batch:
        batch.add_column(
            sa.Column("role", sa.String(length=32), server_default="contact", nullable=False)
        )
    op.execute(
        sa.text(
            "UPDATE contacts SET role = CASE source_entity "
            "WHEN 'reserve' THEN 'client' WHEN 'dealcard' THEN 'buyer' ELSE role END"
        )
    )
    with op.batch_alter_table("contacts") as batch:
        batch.drop_constraint("uq_contacts_integration_external", type_="unique")
        batch.create_unique_constraint(
            "uq_contacts_integration_role_external", ["integration_id", "role", "external_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("contacts") as batch:
        batch.drop_constraint("uq_contacts_integration_role_external", type_="unique")
    # A person kept under two roles becomes one row again: deals move to the newest row.
    keep = (
        "(SELECT MAX(k.id) FROM contacts k JOIN contacts c ON c.id = {t}.contact_id "
        "WHERE k.integration_id = c.integration_id AND k.external_id = c.external_id)"
    )
    for name in DEAL_TABLES:
        op.execute(
            sa.text(
                f"UPDATE {name} SET contact_id = {keep.format(t=name)} WHERE contact_id IS NOT NULL"
            )
        )
    op.execute(
        sa.text(
            "DELETE FROM contacts WHERE id NOT IN "
            "(SELECT MAX(id) FROM contacts GROUP BY integration_id, external_id)"
        )
    )
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("role")
        batch.create_unique_constraint(
            "uq_contacts_integration_external", ["integration_id", "external_id"]
        )
    op.execute(
        sa.text(
            "UPDATE allio_tasks SET entity = 'space', handler = NULL, status = 3, "
            "error = 'unknown command SPACE_CHANGED' "
            "WHERE command = 'SPACE_CHANGED' AND status IN (0, 3)"
        )
    )
    for name in ENTITY_TABLES:
        with op.batch_alter_table(name) as batch:
            batch.alter_column(
                "source_version",
                existing_type=sa.DateTime(timezone=True),
                type_=sa.String(length=64),
                existing_nullable=True,
                postgresql_using="source_version::text",
            )
