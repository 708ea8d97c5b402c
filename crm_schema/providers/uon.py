"""U-ON.Travel tables (seed 004): one inbox for U-ON webhooks and telephony call events,
its task queue, the `customers` U-ON knows, the shared phone cache, calls, U-ON leads and
requests, and click-to-call originations.

- `uon_inbox`: one row per U-ON webhook (`source` uon, `event` its type_id, `external_id`
  the client or request id) or per telephony event (`source` telephony, `event` start |
  dial | bridge | hangup, `external_id` the call id); `phone` is E.164 where it parses.
  `payload` keeps the request as received (keys as sent, Russian ones too) under `raw`
  next to the normalised fields.
- `uon_tasks`: the generic task queue over it.
- `customers`: U-ON clients (`external_id` = U-ON `u_id`); a fresh non-empty value
  overwrites an old one, an empty one never erases.
- `uon_phone_cache`: the lookup cache every receiver worker and every run shares: one
  row per (integration, E.164 phone), a profile or "no such client", until `expires_at`.
- `uon_calls`: one row per call id, its times, and the U-ON lead it was logged as
  (`log_status` pending → sending → succeeded | failed | skipped: the outbox).
- `uon_requests`: U-ON leads and requests named by its webhooks, as last read.
- `uon_originations`: every click-to-call, its extension, number and the PBX's answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
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

uon_inbox = Table(
    "uon_inbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("integration_id", BigId, ForeignKey("integrations.id"), nullable=False),
    Column("source", String(16), nullable=False),  # uon | telephony
    Column("event", String(32), nullable=False),  # type_id | start | dial | bridge | hangup
    Column("external_id", String(128)),  # client / request id | call id
    Column("phone", String(64)),  # E.164 where it parses, else as sent
    Column("payload", JSON, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("processed_at", DateTime(timezone=True)),
    Index("ix_uon_inbox_external", "integration_id", "source", "external_id"),
)
inbox_unprocessed_index(uon_inbox)

uon_tasks = task_table("uon_tasks", uon_inbox)

customers = Table(
    "customers",
    metadata,
    *entity_columns(),
    Column("name", String(600)),  # the full name as shown: surname, name, patronymic
    Column("first_name", String(200)),
    Column("middle_name", String(200)),
    Column("last_name", String(200)),
    Column("phone", String(32)),  # E.164
    Column("phone_raw", String(200)),
    Column("phone_mobile", String(32)),  # E.164
    Column("email", String(320)),
    Column("company", String(300)),
    Column("status", String(100)),
    Column("manager_id", String(32)),
    UniqueConstraint("integration_id", "external_id", name="uq_customers_integration_external"),
    Index("ix_customers_integration_phone", "integration_id", "phone"),
    Index("ix_customers_integration_phone_mobile", "integration_id", "phone_mobile"),
)

uon_phone_cache = Table(
    "uon_phone_cache",
    metadata,
    Column("integration_id", BigId, ForeignKey("integrations.id"), primary_key=True),
    Column("phone", String(32), primary_key=True),  # E.164
    Column("found", Boolean, nullable=False),
    Column("profile", JSON),  # the lookup's answer; NULL when not found
    Column("fetched_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_uon_phone_cache_expires", "expires_at"),
)

uon_calls = Table(
    "uon_calls",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("integration_id", BigId, ForeignKey("integrations.id"), nullable=False),
    Column("call_id", String(128), nullable=False),
    Column("direction", String(16)),  # in | out
    Column("phone", String(64)),
    Column("extension", String(32)),
    Column("started_at", DateTime(timezone=True)),
    Column("answered_at", DateTime(timezone=True)),
    Column("ended_at", DateTime(timezone=True)),
    Column("duration_seconds", Float),
    Column("call_status", String(32)),  # the telephony's word at hangup: answered, missed…
    Column("customer_external_id", String(64)),  # U-ON u_id when the caller is known
    # The U-ON log (an outbox): NULL (not asked), pending, sending, succeeded, failed,
    # skipped (logging off when the call ended).
    Column("log_status", String(16)),
    Column("log_attempts", Integer, nullable=False, server_default="0", default=0),
    Column("log_error", Text),
    Column("uon_lead_id", String(64)),
    Column("log_sent_at", DateTime(timezone=True)),
    Column("last_event_id", BigId),  # uon_inbox row of the newest event applied
    created_at_column(),
    Column(
        "updated_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=func.now(),
        onupdate=func.now(),
    ),
    UniqueConstraint("integration_id", "call_id", name="uq_uon_calls_integration_call"),
    Index("ix_uon_calls_log_status", "log_status"),
)

uon_requests = Table(
    "uon_requests",
    metadata,
    *entity_columns(),
    Column("kind", String(16), nullable=False),  # lead | request
    Column("status", String(100)),
    Column("customer_external_id", String(64)),
    Column("manager_id", String(32)),
    Column("active", Boolean),
    UniqueConstraint(
        "integration_id", "kind", "external_id", name="uq_uon_requests_integration_kind_external"
    ),
    Index("ix_uon_requests_customer", "integration_id", "customer_external_id"),
)

uon_originations = Table(
    "uon_originations",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("integration_id", BigId, ForeignKey("integrations.id"), nullable=False),
    Column("inbox_id", BigId, ForeignKey("uon_inbox.id")),
    Column("manager_id", String(32)),
    Column("extension", String(32)),
    Column("phone", String(32)),  # E.164
    Column("ok", Boolean, nullable=False),
    Column("error", Text),
    Column("pbx_status", Integer),
    Column("duration_ms", Float),
    created_at_column(),
)


# -- the traffic mirror (crm_schema.mirror) ---------------------------------------------

FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}


def uon_mirror_request(row: Mapping[str, Any], integration: Integration) -> MirrorRequest:
    """A `uon_inbox` row as it was posted: a telephony event as JSON, a U-ON webhook as a
    form with the keys it was sent with."""
    key = integration.webhook_key
    payload = row["payload"]
    raw = payload.get("raw") if isinstance(payload, Mapping) else None
    if row["source"] == "telephony":
        body = raw if isinstance(raw, Mapping) else payload
        return MirrorRequest("POST", f"/webhooks/telephony/{key}", json_body(body), JSON_HEADERS)
    fields = raw if isinstance(raw, Mapping) else payload
    pairs = [
        (str(k), v if isinstance(v, str) else json_body(v).decode()) for k, v in fields.items()
    ]
    body = urlencode(pairs).encode("utf-8")
    return MirrorRequest("POST", f"/webhooks/uon/{key}", body, FORM_HEADERS)


MIRROR_SOURCES = (MirrorSource(uon_inbox, "received_at", uon_mirror_request),)
