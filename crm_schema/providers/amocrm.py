"""amoCRM tables (seeds 002, 003): one inbox for RDESK updates and amoCRM contact
webhooks, its task queue, leads, and the mock_lead_id mapping.

- `amocrm_inbox`: one row per RDESK array element (`source` booked | mc; `external_id`
  the lead id RDESK sent) or per contact in an amoCRM webhook (`source` contacts,
  `action` add | update | delete | …, `external_id` the contact id).
- `amocrm_tasks`: the generic task queue over it (handlers: RDESK lead updates, contact
  syncs).
- `leads`: the amoCRM leads RDESK updates, as last written; `last_update_id` is the
  inbox row of the newest update applied, so an older one never overwrites it.
- `amocrm_mock_leads`: mock_lead_id mode's lead `ID_<lead_id>` per RDESK lead id, found
  or created once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    String,
    Table,
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

amocrm_inbox = Table(
    "amocrm_inbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("integration_id", BigId, ForeignKey("integrations.id"), nullable=False),
    Column("source", String(16), nullable=False),  # booked | mc | contacts
    Column("action", String(32)),  # contacts: add | update | delete | restore | …
    Column("external_id", String(64)),  # RDESK: lead_id as sent; contacts: contact id
    Column("rdesk_id", String(64)),  # RDESK: the element's `id`
    Column("payload", JSON, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("processed_at", DateTime(timezone=True)),
    Index("ix_amocrm_inbox_lead", "integration_id", "source", "external_id"),
)
inbox_unprocessed_index(amocrm_inbox)

amocrm_tasks = task_table("amocrm_tasks", amocrm_inbox)

leads = Table(
    "leads",
    metadata,
    *entity_columns(),
    Column("name", String(500)),
    Column("price", BigInteger),
    Column("pipeline_id", BigInteger),
    Column("status_id", BigInteger),
    Column("rdesk_lead_id", String(64)),  # the lead id RDESK sent (mock mode: not ours)
    Column("last_update_id", BigId),  # amocrm_inbox row of the newest update applied
    UniqueConstraint("integration_id", "external_id", name="uq_leads_integration_external"),
)

amocrm_mock_leads = Table(
    "amocrm_mock_leads",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("integration_id", BigId, ForeignKey("integrations.id"), nullable=False),
    Column("rdesk_lead_id", String(64), nullable=False),
    Column("lead_id", BigInteger, nullable=False),
    created_at_column(),
    UniqueConstraint(
        "integration_id", "rdesk_lead_id", name="uq_amocrm_mock_leads_integration_rdesk"
    ),
)


# -- the traffic mirror (crm_schema.mirror) ---------------------------------------------

FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}


def bracket_pairs(prefix: str, value: Any) -> list[tuple[str, str]]:
    """Nested dicts and lists as amoCRM's form keys: `contacts[add][0][name]=…`."""
    if isinstance(value, Mapping):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        if value is None:
            text = ""
        elif isinstance(value, bool):
            text = "1" if value else "0"
        else:
            text = str(value)
        return [(prefix, text)]
    pairs: list[tuple[str, str]] = []
    for key, item in items:
        pairs.extend(bracket_pairs(f"{prefix}[{key}]", item))
    return pairs


def amocrm_mirror_request(row: Mapping[str, Any], integration: Integration) -> MirrorRequest:
    """An `amocrm_inbox` row as it was posted: an RDESK element as a one-element array to
    its endpoint, a contact as amoCRM's form-encoded contact webhook."""
    key = integration.webhook_key
    payload = row["payload"]
    if row["source"] != "contacts":
        path = f"/webhooks/rdesk/{key}/{row['source']}"
        return MirrorRequest("POST", path, json_body([payload]), JSON_HEADERS)
    action = row["action"] or "update"
    pairs = bracket_pairs(f"contacts[{action}][0]", payload.get("contact") or {})
    account = payload.get("account")
    if account:
        for name, value in account.items():
            pairs.extend(bracket_pairs(f"account[{name}]", value))
    body = urlencode(pairs).encode("ascii")
    return MirrorRequest("POST", f"/webhooks/amocrm/{key}", body, FORM_HEADERS)


MIRROR_SOURCES = (MirrorSource(amocrm_inbox, "received_at", amocrm_mirror_request),)
