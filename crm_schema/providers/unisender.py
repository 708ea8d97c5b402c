"""Unisender tables (seed 003): the export state of each amoCRM contact per account.

`unisender_contacts` has one row per (Unisender account, CRM contact): where it stands
(`pending` → `synced` | `invalid` | `failed`; `removed` once deleted in amoCRM and taken
out of the lists), why (Unisender's reason for an invalid e-mail, or the error), and a
hash of what was sent, so a changed contact is sent again and an unchanged one never.
The views of synced and unsynced contacts read this table.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from crm_schema.tables import BigId, created_at_column, metadata

SYNC_PENDING, SYNC_SYNCED, SYNC_INVALID, SYNC_FAILED, SYNC_REMOVED = (
    "pending",
    "synced",
    "invalid",
    "failed",
    "removed",
)

unisender_contacts = Table(
    "unisender_contacts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("integration_id", BigId, ForeignKey("integrations.id"), nullable=False),
    Column("contact_id", BigId, ForeignKey("contacts.id"), nullable=False),
    Column("email", String(320)),
    Column("list_ids", JSON),
    Column("status", String(16), nullable=False, server_default=SYNC_PENDING),
    Column("reason", Text),  # why it is not synced (Unisender's log message, the error)
    Column("content_hash", String(64)),  # of what was last sent
    Column("attempts", Integer, nullable=False, server_default="0", default=0),
    Column("run_id", String(64)),
    created_at_column(),
    Column("synced_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
    UniqueConstraint(
        "integration_id", "contact_id", name="uq_unisender_contacts_integration_contact"
    ),
    Index("ix_unisender_contacts_status", "integration_id", "status"),
)
