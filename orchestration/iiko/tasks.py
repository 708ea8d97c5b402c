"""iiko webhooks → tasks, and the iiko task queue.

Each `webhook_events` row becomes one `iiko_tasks` row (part 0, so ingesting twice
never duplicates one):

- order events — Cloud ``DeliveryOrderUpdate`` / ``DeliveryOrderError`` and the seed's
  ``OrderChanged`` / ``DeliveryOrderChanged``, SOI ``CREATE`` / ``UPDATE`` — → entity
  ``order``, handler ``sync``, one external id ``"<organization id>:<iiko order id>"``
  (the organization is needed to ask ``deliveries/by_id``; empty when the event named
  none and the integration has several, then every organization is asked);
- every other event type (``StopListUpdate``, ``PersonalShift``, ``Reserve*``,
  ``TableOrder*``, …) is kept in the inbox and its task created done with an outcome
  saying so: no order depends on it;
- a row the receiver could not parse (``processing_error`` set, no payload), or an
  order event naming no order, → a task created failed (3) with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Row, select

from crm_schema.providers.iiko import iiko_tasks, webhook_events
from crm_schema.tables import integrations
from crm_schema.task_queue import NewTask, TaskQueue
from orchestration.iiko.mapping import ORDER_EVENT_TYPES, SOI_TYPES

SYNC = "sync"  # handler: apply the event, or fetch the order, and upsert it
ORDER = "order"  # entity of order tasks
EVENT = "event"  # entity of events kept without sync
KEY_SEPARATOR = ":"

QUEUE = TaskQueue(iiko_tasks)


def order_key(organization_id: object, iiko_order_id: object) -> str:
    """A task's external id: ``"<organization id>:<iiko order id>"``."""
    organization = "" if organization_id is None else str(organization_id).strip()
    return f"{organization}{KEY_SEPARATOR}{str(iiko_order_id).strip()}"


def split_key(key: str) -> tuple[str | None, str]:
    """(organization id or None, iiko order id) of a task's external id."""
    organization, separator, order_id = key.rpartition(KEY_SEPARATOR)
    if not separator:
        return None, key
    return organization or None, order_id


def is_order_event(event_type: str | None) -> bool:
    """Order events are synced; everything else is only kept."""
    if not event_type:
        return False
    return event_type in ORDER_EVENT_TYPES or event_type.upper() in SOI_TYPES


def tasks_for_event(
    row: Row[Any], organizations: Callable[[int], list[str]] = lambda _id: []
) -> list[NewTask]:
    """The task of one `webhook_events` row (see the module docstring)."""
    event_type = row.event_type
    common = {
        "integration_id": row.integration_id,
        "webhook_id": row.id,
        "part": 0,
        "command": (event_type or "unparseable")[:64],
    }
    if row.payload is None or event_type is None:
        reason = row.processing_error or "the event has no payload or event type"
        return [
            NewTask(
                entity=EVENT,
                external_ids=[],
                handler=None,
                error=f"webhook not applied: {reason}",
                **common,
            )
        ]
    if not is_order_event(event_type):
        return [
            NewTask(
                entity=EVENT,
                external_ids=[],
                handler=None,
                outcome=f"kept: {event_type} events are stored, not synced to orders",
                **common,
            )
        ]
    if not row.iiko_order_id:
        return [
            NewTask(
                entity=ORDER,
                external_ids=[],
                handler=None,
                error=f"{event_type} event names no iiko order id",
                **common,
            )
        ]
    organization = row.organization_id
    if not organization:
        known = organizations(row.integration_id)
        organization = known[0] if len(known) == 1 else None
    return [
        NewTask(
            entity=ORDER,
            external_ids=[order_key(organization, row.iiko_order_id)],
            handler=SYNC,
            **common,
        )
    ]


def _organizations(conn: Connection) -> Callable[[int], list[str]]:
    rows = conn.execute(
        select(integrations.c.id, integrations.c.settings).where(integrations.c.provider == "iiko")
    )
    known = {r.id: list((r.settings or {}).get("organization_ids") or []) for r in rows}
    return lambda integration_id: known.get(integration_id, [])


def take_webhooks(conn: Connection) -> tuple[int, int]:
    """Turn every unprocessed `webhook_events` row into its task (idempotent)."""
    organizations = _organizations(conn)
    return QUEUE.ingest(conn, webhook_events, lambda row: tasks_for_event(row, organizations))
