"""ALLIO webhooks → tasks (seed 4.2), and the ALLIO task queue."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row

from crm_schema.providers.allio import allio_tasks, allio_webhook, dealcards, reserves
from crm_schema.tables import contacts
from crm_schema.task_queue import NewTask, TaskQueue, parse_external_ids

ENTITY_BY_PREFIX = {"RESERVE_": "reserve", "DEALCARD_": "dealcard"}
ENTITY_TABLES = {"reserve": reserves, "dealcard": dealcards, "contact": contacts}
SYNC = "sync"  # handler: fetch and upsert
DELETE = "delete"  # handler: the daily delete-control sweep

QUEUE = TaskQueue(allio_tasks)


def entity_for_command(command: str) -> str:
    """Seed 4.2: RESERVE_* → reserve, DEALCARD_* → dealcard; anything else → unknown."""
    for prefix, entity in ENTITY_BY_PREFIX.items():
        if command.startswith(prefix):
            return entity
    return "unknown"


def is_delete_command(command: str) -> bool:
    """`*_DEL` commands feed delete control and are never fetched."""
    return command.endswith("_DEL")


def handler_for(command: str) -> str | None:
    """Which handler processes a command (None: no handler, the task ends in 3)."""
    if entity_for_command(command) == "unknown":
        return None
    return DELETE if is_delete_command(command) else SYNC


def tasks_for_webhook(row: Row[Any]) -> list[NewTask]:
    """One task per `allio_webhook` row."""
    handler = handler_for(row.command)
    return [
        NewTask(
            integration_id=row.integration_id,
            entity=entity_for_command(row.command),
            command=row.command,
            external_ids=parse_external_ids(row.external_ids_array),
            webhook_id=row.id,
            handler=handler,
            error=None if handler else f"unknown command {row.command}",
        )
    ]


def take_webhooks(conn: Connection) -> tuple[int, int]:
    """Turn every unprocessed `allio_webhook` row into a task (idempotent)."""
    return QUEUE.ingest(conn, allio_webhook, tasks_for_webhook)
