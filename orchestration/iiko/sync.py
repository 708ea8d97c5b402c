"""iiko's part of the generic sync: apply order events, fetch the rest, upsert `orders`.

An event that carries the whole order (a Cloud event with ``eventInfo.order``, a SOI
body) is applied from its stored payload without an API call (``known_records``);
one that does not is completed by ``deliveries/by_id`` (≤ 200 ids a call). Every
write is arbitrated by ``source_version`` (event time, or the order's ``timestamp``
for API pulls): an older event or pull never overwrites a newer one, whichever
arrives first. An event that cannot be applied — its order absent at ``by_id``, a
value that cannot be mapped — fails its task (retried with the queue's backoff) and
sets ``webhook_events.processing_error``; the error is cleared once a retry succeeds.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, select, update

from crm_schema.entities import upsert_entities
from crm_schema.providers.iiko import iiko_tasks, orders, webhook_events
from crm_schema.tables import integrations
from crm_schema.task_queue import Finished, Task, as_utc, now_utc
from orchestration.core.sync_engine import StoreResult
from orchestration.iiko.client import BY_ID_BATCH, IikoClient
from orchestration.iiko.mapping import (
    MappedOrder,
    MappingError,
    carries_order,
    map_api_order,
    map_event,
)
from orchestration.iiko.tasks import ORDER, SYNC, order_key, split_key, take_webhooks

ORDER_KEY = ("integration_id", "iiko_order_id")
# Keys of a record built from an inbox row (not an iiko field: iiko's are camelCase).
EVENT, RECEIVED_AT, WEBHOOK_ID, ASKED_AS = "_event", "_received_at", "_webhook_id", "_asked_as"
ERROR_LIMIT = 2000


def time_zone(conn: Connection, integration_id: int) -> tzinfo:
    """The zone iiko's zone-less order times (``completeBefore``) are read in: the
    integration's ``timezone`` setting when it has one, else UTC."""
    raw = conn.execute(
        select(integrations.c.settings).where(integrations.c.id == integration_id)
    ).scalar_one_or_none()
    name = (raw or {}).get("timezone")
    if not name:
        return UTC
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _json(value: Any) -> Any:
    """A payload as stored; JSON text (a store that wrote it serialised) is decoded."""
    if isinstance(value, str | bytes):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _version_key(mapped: MappedOrder) -> datetime:
    version = mapped.row.get("source_version")
    return version if version is not None else datetime.min.replace(tzinfo=UTC)


def store_orders(
    conn: Connection,
    integration_id: int,
    records: Sequence[tuple[dict[str, Any], int | None]],
    record_id: Any = None,
) -> StoreResult:
    """Map (record, lineage task id) pairs and upsert them, version-arbitrated.

    Records are API orders or inbox-event records (``known_records``). Several
    records of one order keep the newest; records that cannot be mapped are reported
    in ``failed`` by their external id. Extras: ``orders_unknown_status``,
    ``orders_from_events``, ``orders_from_api``.
    """
    zone = time_zone(conn, integration_id)
    newest: dict[str, MappedOrder] = {}
    failed: dict[str, str] = {}
    from_events = from_api = unknown = 0
    for record, task_id in records:
        ext = record_id(record) if record_id else None
        try:
            if EVENT in record:
                mapped = map_event(
                    record[EVENT], integration_id, as_utc(record.get(RECEIVED_AT)), zone
                )
                mapped.row["source_event_id"] = record.get(WEBHOOK_ID)
                from_events += 1
            else:
                clean = {k: v for k, v in record.items() if k != ASKED_AS}
                mapped = map_api_order(clean, integration_id, zone)
                mapped.row["source_event_id"] = None
                from_api += 1
        except MappingError as exc:
            failed[ext or "?"] = f"cannot map the order: {exc}"
            continue
        except Exception as exc:  # mapping is pure: whatever it raises is about this record
            failed[ext or "?"] = f"cannot map the order: {type(exc).__name__}: {exc}"
            continue
        mapped.row["source_task_id"] = task_id
        if mapped.unknown_status is not None:
            unknown += 1
        current = newest.get(mapped.iiko_order_id)
        if current is None or _version_key(mapped) >= _version_key(current):
            newest[mapped.iiko_order_id] = mapped
    # One statement per column set: an order-less error event changes only what it has.
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for mapped in newest.values():
        groups[tuple(sorted(mapped.row))].append(mapped.row)
    now = now_utc()
    for rows in groups.values():
        upsert_entities(conn, orders, rows, now, key=ORDER_KEY)
    return StoreResult(
        upserted=len(newest),
        extra={
            "orders_unknown_status": unknown,
            "orders_from_events": from_events,
            "orders_from_api": from_api,
        },
        failed=failed,
    )


class IikoSyncHandler:
    """Delivery orders: from the event when it holds the order, else ``deliveries/by_id``."""

    handler = SYNC
    entities = (ORDER,)
    batch_size = BY_ID_BATCH
    # An order iiko does not return cannot be applied: retry, and mark the event.
    missing_is_error = True

    def fetch(self, client: IikoClient, entity: str, ids: list[str]) -> list[dict[str, Any]]:
        """``deliveries/by_id`` per organization; ids without one ask every organization."""
        by_org: dict[str | None, list[str]] = defaultdict(list)
        for key in ids:
            organization, order_id = split_key(key)
            by_org[organization].append(order_id)
        records: list[dict[str, Any]] = []
        for organization, order_ids in by_org.items():
            if organization is not None:
                records += client.by_id(organization, order_ids)
                continue
            left = set(order_ids)
            for candidate in getattr(client, "organization_ids", ()):
                if not left:
                    break
                for record in client.by_id(candidate, sorted(left)):
                    if str(record.get("id")) in left:
                        left.discard(str(record.get("id")))
                        records.append({**record, ASKED_AS: order_key(None, record.get("id"))})
        return records

    def record_id(self, entity: str, record: dict[str, Any]) -> str | None:
        """The task key of a record: ``"<organization id>:<iiko order id>"``."""
        if ASKED_AS in record:
            return str(record[ASKED_AS])
        if EVENT in record:
            return None  # known records are matched by the key they were built for
        if record.get("id") is None:
            return None
        return order_key(record.get("organizationId"), record.get("id"))

    def known_records(
        self, conn: Connection, tasks: Sequence[Task]
    ) -> Mapping[int, list[dict[str, Any]]]:
        """The stored events of ``tasks`` that carry the whole order."""
        t, w = iiko_tasks.c, webhook_events.c
        rows = conn.execute(
            select(t.id, w.id.label("webhook_id"), w.payload, w.received_at)
            .join(webhook_events, w.id == t.webhook_id)
            .where(t.id.in_([task.id for task in tasks]))
        )
        by_task = {task.id: task for task in tasks}
        known: dict[int, list[dict[str, Any]]] = {}
        for row in rows:
            task = by_task[row.id]
            payload = _json(row.payload)
            if not carries_order(payload) or not task.external_ids:
                continue
            known[row.id] = [
                {
                    EVENT: payload,
                    RECEIVED_AT: row.received_at,
                    WEBHOOK_ID: row.webhook_id,
                    ASKED_AS: task.external_ids[0],
                }
            ]
        return known

    def store(
        self,
        conn: Connection,
        integration_id: int,
        entity: str,
        records: list[tuple[dict[str, Any], int | None]],
    ) -> StoreResult:
        """Map and upsert, newest version wins (see ``store_orders``)."""
        return store_orders(
            conn, integration_id, records, lambda record: self.record_id(entity, record)
        )

    def finished(self, conn: Connection, results: Sequence[Finished]) -> None:
        """Mark the events of failed tasks with the error; clear it once they succeed."""
        errors: dict[int, str | None] = {r.task.id: r.error for r in results}
        if not errors:
            return
        t = iiko_tasks.c
        webhooks = dict(
            conn.execute(select(t.id, t.webhook_id).where(t.id.in_(sorted(errors)))).all()
        )
        cleared = [webhooks[i] for i, e in errors.items() if e is None and webhooks.get(i)]
        if cleared:
            conn.execute(
                update(webhook_events)
                .where(
                    webhook_events.c.id.in_(cleared),
                    webhook_events.c.processing_error.is_not(None),
                )
                .values(processing_error=None)
            )
        for task_id, error in errors.items():
            if error is not None and webhooks.get(task_id):
                conn.execute(
                    update(webhook_events)
                    .where(webhook_events.c.id == webhooks[task_id])
                    .values(processing_error=error[:ERROR_LIMIT])
                )

    def take_webhooks(self, conn: Connection) -> int:
        """Waiting `webhook_events` rows → tasks."""
        return take_webhooks(conn)[0]
