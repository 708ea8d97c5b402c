"""iiko tables (seed 001): the webhook inbox, its task queue, orders, webhook registrations
and the command outbox.

- `webhook_events`: one row per received event, exactly as received (`payload`), or
  the raw bytes (`raw_body`) with `processing_error` when the body was not JSON.
- `iiko_tasks`: the generic task queue over `webhook_events` (one task per order event).
- `orders`: delivery orders, upserted by (integration, iiko order id); `external_id`
  repeats the iiko order id (the column every entity table shares).
- `webhook_configs`: the webhook registration of each (integration, organization).
- `iiko_commands`: the outbox of two-way commands and loyalty operations
  (`pending → sent → succeeded | failed`, one send per idempotency key).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
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

webhook_events = Table(
    "webhook_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("integration_id", BigId, ForeignKey("integrations.id"), nullable=False),
    # eventType of a Cloud API event, or the SOI body's `type` (CREATE / UPDATE);
    # NULL when the body could not be parsed.
    Column("event_type", String(64)),
    Column("order_external_id", String(255)),  # orderExternalId / eventInfo.externalNumber
    Column("iiko_order_id", String(64)),  # eventInfo.id / iikoOrderDetails.iikoOrderId
    Column("organization_id", String(64)),
    Column("correlation_id", String(64)),
    Column("event_time", DateTime(timezone=True)),  # eventTime (UTC), when iiko sent one
    Column("payload", JSON),  # the event object as received
    Column("raw_body", Text),  # the body as received, kept only when it was not JSON
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("processing_error", Text),
    Column("processed_at", DateTime(timezone=True)),
    Index("ix_webhook_events_integration_received", "integration_id", "received_at"),
    Index("ix_webhook_events_order", "integration_id", "iiko_order_id"),
)
inbox_unprocessed_index(webhook_events)

iiko_tasks = task_table("iiko_tasks", webhook_events)

orders = Table(
    "orders",
    metadata,
    *entity_columns(),
    Column("iiko_order_id", String(64), nullable=False),
    Column("organization_id", String(64)),
    Column("external_order_id", String(255)),
    Column("readable_number", String(100)),
    Column("status", String(64)),
    Column("promised_time", DateTime(timezone=True)),
    Column("courier_id", String(255)),
    Column("courier_name", String(255)),
    Column("order_type", String(50)),
    Column("restaurant_name", String(255)),
    Column("problem", Text),
    Column("creation_status", String(50)),
    Column("error_info", Text),
    Column("amount_kopecks", BigInteger),
    # The webhook event that last wrote the row (None: an API pull did).
    Column("source_event_id", BigId),
    UniqueConstraint("integration_id", "iiko_order_id", name="uq_orders_integration_order"),
    Index("ix_orders_integration_external", "integration_id", "external_id"),
)

webhook_configs = Table(
    "webhook_configs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("integration_id", BigId, ForeignKey("integrations.id"), nullable=False),
    Column("organization_id", String(255), nullable=False),
    Column("webhook_url", String(500), nullable=False),
    # The authToken registered with iiko, sealed like credentials (crm_sync.encryption).
    Column("auth_token", Text),
    Column("webhooks_filter", JSON),
    Column("is_active", Boolean, nullable=False, server_default="1", default=True),
    Column("last_registration", DateTime(timezone=True)),
    Column("registration_status", String(50)),  # registered | failed | drift
    Column("registration_error", Text),
    Column("last_checked_at", DateTime(timezone=True)),
    created_at_column(),
    Column("updated_at", DateTime(timezone=True)),
    UniqueConstraint(
        "integration_id", "organization_id", name="uq_webhook_configs_integration_org"
    ),
)

# Outbox states (DESIGN.md, "Outbound work").
COMMAND_PENDING, COMMAND_SENT, COMMAND_SUCCEEDED, COMMAND_FAILED = (
    "pending",
    "sent",
    "succeeded",
    "failed",
)

iiko_commands = Table(
    "iiko_commands",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("integration_id", BigId, ForeignKey("integrations.id"), nullable=False),
    # update-status | assign-courier | update-payment | apply-discount | cancel |
    # loyalty-topup | loyalty-chargeoff | loyalty-hold | loyalty-cancel-hold |
    # loyalty-customer-info
    Column("kind", String(32), nullable=False),
    Column("order_id", BigId, ForeignKey("orders.id")),
    Column("iiko_order_id", String(64)),
    Column("organization_id", String(64), nullable=False),
    Column("request", JSON, nullable=False),  # the body as the operator sent it (validated)
    Column("status", String(16), nullable=False, server_default=COMMAND_PENDING),
    Column("provider_status", String(32)),  # iiko's commands/status: InProgress|Success|Error
    Column("correlation_id", String(64)),
    Column("result", JSON),  # what iiko answered (transactionId, customer info, ...)
    Column("error", Text),
    Column("idempotency_key", String(200)),
    Column("request_hash", String(64), nullable=False),
    Column("created_by", String(100)),
    Column("attempts", Integer, nullable=False, server_default="0", default=0),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("claimed_at", DateTime(timezone=True)),
    Column("lease_expires_at", DateTime(timezone=True)),
    Column("run_id", String(64)),
    created_at_column(),
    Column("sent_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
    UniqueConstraint(
        "integration_id", "idempotency_key", name="uq_iiko_commands_integration_idempotency"
    ),
    Index("ix_iiko_commands_status", "status", "next_attempt_at"),
)


# -- the traffic mirror (crm_schema.mirror) ---------------------------------------------

# The receiver keeps a body that was not valid UTF-8 text as `base64:<base64>`.
RAW_BASE64_PREFIX = "base64:"
SOI_EVENT_TYPES = ("CREATE", "UPDATE")


def raw_body_bytes(text: str) -> bytes:
    """A stored `raw_body` back as the bytes iiko sent."""
    if text.startswith(RAW_BASE64_PREFIX):
        return base64.b64decode(text[len(RAW_BASE64_PREFIX) :])
    return text.encode("utf-8")


def iiko_mirror_request(row: Mapping[str, Any], integration: Integration) -> MirrorRequest:
    """A `webhook_events` row as iiko posted it, with its authToken in `Authorization`.

    A Cloud API event goes as a one-event array; an SOI object (CREATE / UPDATE) as is;
    a body that was not JSON as its raw bytes.
    """
    if row["raw_body"] is not None:
        body = raw_body_bytes(row["raw_body"])
    elif row["event_type"] in SOI_EVENT_TYPES:
        body = json_body(row["payload"])
    else:
        body = json_body([row["payload"]])
    headers = dict(JSON_HEADERS)
    if integration.webhook_secret:
        headers["Authorization"] = integration.webhook_secret
    return MirrorRequest("POST", f"/webhooks/iiko/{integration.webhook_key}", body, headers)


MIRROR_SOURCES = (MirrorSource(webhook_events, "received_at", iiko_mirror_request),)
