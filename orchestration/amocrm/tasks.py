"""amoCRM inbox rows → `amocrm_tasks`, and the task queue over them.

One task per `amocrm_inbox` row (part 0, so ingesting twice never duplicates one):

- RDESK rows (`source` booked | mc) → entity ``lead``, handler ``rdesk``, the lead id
  RDESK sent as the external id (validated by the sync, not here: a bad element's task
  ends 3 with the validation errors);
- contact rows (`source` contacts) → entity ``contact``, handler ``contacts``, the
  contact id; the command is the webhook action (a ``delete`` tombstones, no fetch);
- anything else → a task created failed (3) with the reason.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row

from crm_schema.providers.amocrm import amocrm_inbox, amocrm_tasks
from crm_schema.task_queue import NewTask, TaskQueue
from crm_sync.providers.amocrm import RDESK_ENDPOINTS

RDESK = "rdesk"  # handler: apply one RDESK update to its lead
CONTACTS = "contacts"  # handler: fetch (or tombstone) one amoCRM contact
LEAD = "lead"
CONTACT = "contact"
CONTACT_SOURCE = "contacts"
DELETE = "delete"

QUEUE = TaskQueue(amocrm_tasks)


def tasks_for_row(row: Row[Any]) -> list[NewTask]:
    """The task of one inbox row (see the module docstring)."""
    source = (row.source or "").strip()
    external = (row.external_id or "").strip()
    common = {"integration_id": row.integration_id, "webhook_id": row.id, "part": 0}
    if source in RDESK_ENDPOINTS:
        return [
            NewTask(
                entity=LEAD,
                command=source,
                external_ids=[external] if external else [],
                handler=RDESK,
                **common,
            )
        ]
    if source == CONTACT_SOURCE:
        action = (row.action or "update").strip().lower()[:64]
        if not external:
            return [
                NewTask(
                    entity=CONTACT,
                    command=action,
                    external_ids=[],
                    handler=None,
                    error="contact webhook names no contact id",
                    **common,
                )
            ]
        return [
            NewTask(
                entity=CONTACT,
                command=action,
                external_ids=[external],
                handler=CONTACTS,
                **common,
            )
        ]
    return [
        NewTask(
            entity="unknown",
            command=source[:64] or "unknown",
            external_ids=[],
            handler=None,
            error=f"unknown amoCRM inbox source '{source[:32]}'",
            **common,
        )
    ]


def take_webhooks(conn: Connection) -> tuple[int, int]:
    """Turn every unprocessed `amocrm_inbox` row into its task (idempotent)."""
    return QUEUE.ingest(conn, amocrm_inbox, tasks_for_row)
