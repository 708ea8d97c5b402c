"""ALLIO webhooks → tasks (seed 4.2), and the ALLIO task queue.

Command rules, in order (`rule_for`):

- `SPACE_CHANGED` → `reserve`, handler `sync` (the seed's own example: its `indexes`
  are reserve ids, fetched with `/reserve/list`);
- `RESERVE_*` → `reserve`, `DEALCARD_*` → `dealcard`; of those, `*_DEL` → handler
  `delete` (the daily delete-control sweep, never fetched), every other → `sync`;
- anything else → entity `unknown`, no handler: its task is created finished in 3
  with the error `unknown command X`, so every task ends 2 or 3.

One webhook may name any number of ids (the receiver is bounded by body size only);
its row becomes tasks of at most MAX_IDS_PER_TASK ids each, `part` 0, 1, 2, … —
unique per (webhook_id, part), so ingesting a row twice never duplicates a task.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row

from crm_schema.providers.allio import allio_tasks, allio_webhook, dealcards, reserves
from crm_schema.tables import contacts
from crm_schema.task_queue import NewTask, TaskQueue, parse_external_ids

SYNC = "sync"  # handler: fetch and upsert
DELETE = "delete"  # handler: the daily delete-control sweep
UNKNOWN = "unknown"  # entity of a command no rule knows
DELETE_SUFFIX = "_DEL"
ENTITY_BY_COMMAND = {"SPACE_CHANGED": "reserve"}  # whole commands, checked first
ENTITY_BY_PREFIX = {"RESERVE_": "reserve", "DEALCARD_": "dealcard"}
ENTITY_TABLES = {"reserve": reserves, "dealcard": dealcards, "contact": contacts}
MAX_IDS_PER_TASK = 1000

QUEUE = TaskQueue(allio_tasks)


def entity_for_command(command: str) -> str:
    """The entity a command's ids name (see the module docstring); else `unknown`."""
    exact = ENTITY_BY_COMMAND.get(command)
    if exact is not None:
        return exact
    for prefix, entity in ENTITY_BY_PREFIX.items():
        if command.startswith(prefix):
            return entity
    return UNKNOWN


def is_delete_command(command: str) -> bool:
    """`*_DEL` commands feed delete control and are never fetched."""
    return command.endswith(DELETE_SUFFIX)


def rule_for(command: str) -> tuple[str, str | None]:
    """(entity, handler) of a command; handler None: nothing processes it (ends in 3)."""
    entity = entity_for_command(command)
    if entity == UNKNOWN:
        return entity, None
    if command in ENTITY_BY_COMMAND:
        return entity, SYNC
    return entity, DELETE if is_delete_command(command) else SYNC


def handler_for(command: str) -> str | None:
    """Which handler processes a command (None: no handler, the task ends in 3)."""
    return rule_for(command)[1]


def tasks_for_webhook(row: Row[Any]) -> list[NewTask]:
    """An `allio_webhook` row's tasks: its ids in parts of at most MAX_IDS_PER_TASK."""
    entity, handler = rule_for(row.command)
    ids = parse_external_ids(row.external_ids_array)
    parts = [ids[i : i + MAX_IDS_PER_TASK] for i in range(0, len(ids), MAX_IDS_PER_TASK)]
    return [
        NewTask(
            integration_id=row.integration_id,
            entity=entity,
            command=row.command,
            external_ids=part_ids,
            webhook_id=row.id,
            handler=handler,
            part=part,
            error=None if handler else f"unknown command {row.command}",
        )
        for part, part_ids in enumerate(parts or [ids])
    ]


def take_webhooks(conn: Connection) -> tuple[int, int]:
    """Turn every unprocessed `allio_webhook` row into tasks (idempotent)."""
    return QUEUE.ingest(conn, allio_webhook, tasks_for_webhook)
