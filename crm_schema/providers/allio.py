"""ALLIO tables (seed 000): the webhook inbox, the task queue, reserves and deal cards."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from crm_schema.integrations import Integration
from crm_schema.mirror import JSON_HEADERS, MirrorRequest, MirrorSource, json_body
from crm_schema.tables import (
    BigId,
    created_at_column,
    entity_columns,
    inbox_unprocessed_index,
    metadata,
    task_table,
)

allio_webhook = Table(
    "allio_webhook",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("integration_uuid", String(64), nullable=False),
    Column("command", String(64), nullable=False),
    Column("external_ids_array", Text, nullable=False),
    created_at_column(),
    Column("integration_id", BigId, ForeignKey("integrations.id"), nullable=False),
    Column("processed_at", DateTime(timezone=True)),
)
inbox_unprocessed_index(allio_webhook)

allio_tasks = task_table("allio_tasks", allio_webhook)


def _deal_columns() -> list:
    """Typed columns of the seed's reserve / deal-card mapping."""
    return [
        # Seed mapping: CRM created_at <- ALLIO `till`.
        Column("created_at", DateTime(timezone=True)),
        Column("status", String(64)),
        Column("type", String(64)),
        Column("space_id", String(64)),
        Column("manager_id", String(64)),
        Column("manager_fullname", String(300)),
        Column("manager_city", String(200)),
        Column("manager_is_agency", Boolean),
        Column("comment", Text),
        Column("contact_id", BigId, ForeignKey("contacts.id")),
    ]


reserves = Table(
    "reserves",
    metadata,
    *entity_columns(),
    *_deal_columns(),
    UniqueConstraint("integration_id", "external_id", name="uq_reserves_integration_external"),
)

dealcards = Table(
    "dealcards",
    metadata,
    *entity_columns(),
    *_deal_columns(),
    UniqueConstraint("integration_id", "external_id", name="uq_dealcards_integration_external"),
)


# -- the traffic mirror (crm_schema.mirror) ---------------------------------------------


def allio_mirror_request(row: Mapping[str, Any], integration: Integration) -> MirrorRequest:
    """An `allio_webhook` row as ALLIO posted it: `{"uuid", "command", "indexes"}`."""
    body = {
        "uuid": row["integration_uuid"],
        "command": row["command"],
        "indexes": json.loads(row["external_ids_array"]),
    }
    path = f"/webhooks/allio/{integration.webhook_key}"
    return MirrorRequest("POST", path, json_body(body), JSON_HEADERS)


MIRROR_SOURCES = (MirrorSource(allio_webhook, "created_at", allio_mirror_request),)
