"""`uon_inbox` rows → `uon_tasks`, one handler (``sync``) over three entities.

- a telephony event (`source` telephony) → part 0: entity ``call``, the call id (the
  event itself is the record: no U-ON call); part 1, when the other party's number is
  E.164: entity ``customer``, id ``phone:+375…`` (the number's enrichment; the run
  merges every task of one number into one lookup, and a fresh cache entry answers
  without one);
- U-ON client webhooks (type_id 3, 4) → entity ``customer``, id ``id:{client_id}``
  (read `user/{id}`); 5 → the same with command ``delete`` (tombstoned, no call);
- lead and request webhooks (1, 2, 16, 17) → entity ``request``, id
  ``lead:{lead_id}`` or ``request:{request_id}``;
- any other type_id is kept in the inbox: its task is created done ("stored");
  a row naming no id it needs is created failed with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Row

from crm_schema.providers.uon import uon_inbox, uon_tasks
from crm_schema.task_queue import NewTask, TaskQueue
from crm_sync.providers.uon import CLIENT_TYPES, LEAD_TYPES

SYNC = "sync"  # the one handler
CALL = "call"
CUSTOMER = "customer"
REQUEST = "request"
ENTITIES = (CALL, CUSTOMER, REQUEST)
DELETE = "delete"
TELEPHONY = "telephony"
# External-id prefixes (one entity, several kinds of id).
# Task ids carry a prefix: the queue stores digit-only ids as numbers, and a call id
# such as "007" must stay what the telephony sent.
CALL_KEY = "call:"
PHONE_KEY = "phone:"
ID_KEY = "id:"
LEAD_KEY = "lead:"
REQUEST_KEY = "request:"
STORED = "stored: no handler for this U-ON event type"

QUEUE = TaskQueue(uon_tasks)

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,60}$")

__all__ = [
    "CALL",
    "CALL_KEY",
    "CUSTOMER",
    "DELETE",
    "ENTITIES",
    "ID_KEY",
    "LEAD_KEY",
    "PHONE_KEY",
    "QUEUE",
    "REQUEST",
    "REQUEST_KEY",
    "SYNC",
    "field",
    "take_webhooks",
    "tasks_for_row",
]


def field(payload: Any, name: str) -> Any:
    """A normalised field of an inbox payload, else the same key as received (`raw`)."""
    if not isinstance(payload, Mapping):
        return None
    value = payload.get(name)
    if value is None and isinstance(payload.get("raw"), Mapping):
        value = payload["raw"].get(name)
    return value


def _id(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text if _ID.match(text) else None


def _type_id(row: Row[Any]) -> int | None:
    raw = field(row.payload, "type_id")
    if raw is None:
        raw = row.event
    try:
        return int(str(raw).strip())
    except (TypeError, ValueError):
        return None


def tasks_for_row(row: Row[Any]) -> list[NewTask]:
    """The tasks of one inbox row (see the module docstring)."""
    common = {"integration_id": row.integration_id, "webhook_id": row.id, "handler": SYNC}
    if row.source == TELEPHONY:
        event = (row.event or "event")[:64]
        # The receiver stores the call id as `external_id`; the payload has it too.
        call_id = str(row.external_id or field(row.payload, "call_id") or "").strip()[:128]
        if not call_id:
            return [
                NewTask(
                    entity=CALL,
                    command=event,
                    external_ids=[],
                    **common | {"handler": None},
                    error="telephony event names no call id",
                )
            ]
        tasks = [NewTask(entity=CALL, command=event, external_ids=[CALL_KEY + call_id], **common)]
        phone = (row.phone or "").strip()
        if _E164.match(phone):
            tasks.append(
                NewTask(
                    entity=CUSTOMER,
                    command="enrich",
                    external_ids=[PHONE_KEY + phone],
                    part=1,
                    **common,
                )
            )
        return tasks
    type_id = _type_id(row)
    command = str(type_id if type_id is not None else (row.event or "unknown"))[:64]
    if type_id in CLIENT_TYPES:
        client_id = _id(row.external_id) or _id(field(row.payload, "client_id"))
        if client_id is None:
            return [
                NewTask(
                    entity=CUSTOMER,
                    command=command,
                    external_ids=[],
                    **common | {"handler": None},
                    error=f"U-ON client webhook (type_id {type_id}) names no client id",
                )
            ]
        kind = DELETE if CLIENT_TYPES[type_id] == "deleted" else command
        return [NewTask(entity=CUSTOMER, command=kind, external_ids=[ID_KEY + client_id], **common)]
    if type_id in LEAD_TYPES:
        lead_id = _id(field(row.payload, "lead_id"))
        request_id = _id(field(row.payload, "request_id"))
        if type_id == 1:  # lead created: the lead's id first
            key = (
                LEAD_KEY + lead_id if lead_id else (REQUEST_KEY + request_id if request_id else "")
            )
        else:
            key = (
                REQUEST_KEY + request_id if request_id else (LEAD_KEY + lead_id if lead_id else "")
            )
        if not key:
            external = _id(row.external_id)
            key = (LEAD_KEY if type_id == 1 else REQUEST_KEY) + external if external else ""
        if not key:
            return [
                NewTask(
                    entity=REQUEST,
                    command=command,
                    external_ids=[],
                    **common | {"handler": None},
                    error=f"U-ON webhook (type_id {type_id}) names no lead or request id",
                )
            ]
        return [NewTask(entity=REQUEST, command=command, external_ids=[key], **common)]
    return [
        NewTask(
            entity="event",
            command=command,
            external_ids=[],
            **common | {"handler": None},
            outcome=STORED,
        )
    ]


def take_webhooks(conn: Connection) -> tuple[int, int]:
    """Turn every unprocessed `uon_inbox` row into its tasks (idempotent)."""
    return QUEUE.ingest(conn, uon_inbox, tasks_for_row)
