"""The U-ON run's handler for the generic `SyncEngine` (handler ``sync``).

Three entities (orchestration.uon.tasks):

- ``call``: telephony events carry the whole record (``known_records``), so no U-ON
  call is made: one `uon_calls` row per call id, the events applied in inbox order
  (the newest event's direction, number and extension win; each event type fills its
  own time). A hangup asks for the U-ON call log (`log_status` pending) when the
  integration's ``log_calls`` is on, else marks it skipped; a log already asked for
  is never asked again.
- ``customer``: ``phone:+375…`` ids are the calls' enrichment. The engine merges the
  ids of every claimed task, so a number is looked up once however many events name
  it, and a number fresh in `uon_phone_cache` is answered from it without a call.
  A lookup stores the clients (`customers`), caches the profile (or "no such
  client" for the shorter negative TTL) and names the client on the number's calls.
  ``id:{u_id}`` ids are U-ON's client webhooks: `user/{id}` is read and stored, and
  the cache entries of the client's old and new numbers are dropped, then refreshed;
  a delete (type 5, or a 404) tombstones the client and drops its entries.
- ``request``: ``lead:{id}`` / ``request:{id}`` → `lead/{id}` / `request/{id}` →
  `uon_requests` (a 404 tombstones it).

The daily reconcile also lists the day's requests (`requests/{day}/{day}/{page}`,
100 a page) into `uon_requests` (``sweep_requests``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, select, update

from crm_schema.engine import dialect_insert
from crm_schema.providers.uon import customers, uon_calls, uon_inbox, uon_requests, uon_tasks
from crm_schema.providers.uon_customers import (
    CLOSED_STATUSES,
    cache_profile,
    cache_users,
    customer_phones,
    customers_by_phone,
    drop_cached,
    profiles_for,
    read_cache,
    upsert_customers,
    write_cache,
)
from crm_schema.tables import integrations
from crm_schema.task_queue import Task, now_utc
from crm_sync.providers.uon import UonSettings
from orchestration.core.sync_engine import StoreResult
from orchestration.uon.tasks import (
    CALL,
    CALL_KEY,
    CUSTOMER,
    DELETE,
    ENTITIES,
    ID_KEY,
    LEAD_KEY,
    PHONE_KEY,
    REQUEST,
    REQUEST_KEY,
    SYNC,
    field,
    take_webhooks,
)

LOG_PENDING = "pending"
LOG_SENDING = "sending"
LOG_SUCCEEDED = "succeeded"
LOG_FAILED = "failed"
LOG_SKIPPED = "skipped"
DIRECTIONS = {"in": "in", "incoming": "in", "inbound": "in", "out": "out", "outgoing": "out"}
DIRECTIONS |= {"outbound": "out"}
START_EVENTS = {"start", "dial"}

__all__ = [
    "LOG_FAILED",
    "LOG_PENDING",
    "LOG_SENDING",
    "LOG_SKIPPED",
    "LOG_SUCCEEDED",
    "UonSyncHandler",
    "settings_of",
    "sweep_requests",
]


def settings_of(conn: Connection, integration_id: int) -> UonSettings:
    """The integration's U-ON settings (defaults for what is not set)."""
    raw = conn.execute(
        select(integrations.c.settings).where(integrations.c.id == integration_id)
    ).scalar()
    return UonSettings.model_validate(raw or {})


def _text(value: Any, limit: int | None = None) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    if not text:
        return None
    return text[:limit] if limit else text


def _when(value: Any) -> datetime | None:
    """An event time: ISO-8601 or epoch seconds (naive = UTC)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float) or str(value).strip().replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(value), UTC)
        parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def _call_key(value: Any) -> str | None:
    """A call's task id: the call id exactly as sent, prefixed (see tasks.CALL_KEY)."""
    text = _text(value, 128)
    return None if text is None else CALL_KEY + text


def _once_each(
    records: list[tuple[dict[str, Any], int | None]],
) -> list[tuple[dict[str, Any], int | None]]:
    """One record per id (the last one: several tasks may carry the same one)."""
    by_key: dict[str, tuple[dict[str, Any], int | None]] = {}
    for record, task_id in records:
        by_key[str(record["key"])] = (record, task_id)
    return list(by_key.values())


class UonSyncHandler:
    """The generic engine's handler for U-ON (see the module docstring)."""

    handler = SYNC
    entities = ENTITIES
    batch_size = 1  # U-ON reads one client, number or request a call

    # -- engine hooks ---------------------------------------------------------------------

    def take_webhooks(self, conn: Connection) -> int:
        """Turn waiting inbox rows into tasks."""
        created, _ = take_webhooks(conn)
        return created

    def record_id(self, entity: str, record: dict[str, Any]) -> str | None:
        """The task id a record answers."""
        if entity == CALL:
            return _call_key(record.get("call_id"))
        return _text(record.get("key"))

    def known_records(self, conn: Connection, tasks: Sequence[Task]) -> dict[int, list[dict]]:
        """Telephony events (the record itself), fresh cache entries and client deletes."""
        known: dict[int, list[dict[str, Any]]] = {}
        calls = [t for t in tasks if t.entity == CALL]
        if calls:
            t, i = uon_tasks.c, uon_inbox.c
            rows = conn.execute(
                select(
                    t.id.label("task_id"),
                    i.id,
                    i.external_id,
                    i.phone,
                    i.event,
                    i.payload,
                    i.received_at,
                )
                .select_from(uon_tasks.join(uon_inbox, i.id == t.webhook_id))
                .where(t.id.in_([task.id for task in calls]))
            )
            for row in rows:
                payload = row.payload if isinstance(row.payload, Mapping) else {}
                known[row.task_id] = [
                    {
                        "call_id": field(payload, "call_id") or row.external_id,
                        "event": (row.event or _text(field(payload, "event")) or "").lower(),
                        "direction": field(payload, "direction"),
                        "phone": row.phone or _text(field(payload, "phone")),
                        "extension": field(payload, "extension"),
                        "timestamp": field(payload, "timestamp"),
                        "duration": field(payload, "duration"),
                        "status": field(payload, "status"),
                        "inbox_id": row.id,
                        "received_at": row.received_at,
                    }
                ]
        now = now_utc()
        newest: dict[tuple[int, str], Task] = {}
        for task in tasks:
            if task.entity != CUSTOMER or not task.external_ids:
                continue
            key = task.external_ids[0]
            if key.startswith(PHONE_KEY):
                entry = read_cache(conn, task.integration_id, key[len(PHONE_KEY) :])
                if entry is not None and entry.fresh(now):
                    known[task.id] = [
                        {
                            "key": key,
                            "phone": entry.phone,
                            "cached": True,
                            "profile": entry.profile,
                        }
                    ]
            elif key.startswith(ID_KEY):
                current = newest.get((task.integration_id, key))
                if current is None or task.id > current.id:
                    newest[(task.integration_id, key)] = task
        # A client read from U-ON after a change webhook arrived already holds that change
        # (U-ON sends it once the change is made): copies of one webhook, or a burst of
        # them, cost one call however the inbox sensor and the claims split them.
        refreshed = _refreshed_at(conn, list(newest))
        received = _received_at(conn, [t.id for t in tasks if t.entity == CUSTOMER])
        for task in tasks:
            if task.entity != CUSTOMER or not task.external_ids or task.id not in received:
                continue
            key = task.external_ids[0]
            synced = refreshed.get((task.integration_id, key))
            if synced is not None and synced >= received[task.id]:
                known[task.id] = [{"key": key, "fresh": True}]
        # A client's newest webhook decides: a delete tombstones it (no call), whatever
        # older change webhooks the claim holds; otherwise U-ON is read.
        deleted = {k for k, task in newest.items() if task.command == DELETE}
        for task in tasks:
            key = task.external_ids[0] if task.external_ids else ""
            if task.entity == CUSTOMER and (task.integration_id, key) in deleted:
                known[task.id] = [{"key": key, "deleted": True}]
        return known

    def fetch(self, client: Any, entity: str, ids: list[str]) -> list[dict[str, Any]]:
        """Read U-ON: a number's clients, a client, a lead or request (404: empty)."""
        client.stats.add(ids_requested=len(ids))
        records: list[dict[str, Any]] = []
        for key in ids:
            if entity == CUSTOMER and key.startswith(PHONE_KEY):
                phone = key[len(PHONE_KEY) :]
                records.append({"key": key, "phone": phone, "users": client.users_by_phone(phone)})
            elif entity == CUSTOMER and key.startswith(ID_KEY):
                user = client.user(key[len(ID_KEY) :])
                records.append({"key": key, "user": user, "deleted": user is None})
            elif entity == REQUEST and key.startswith(LEAD_KEY):
                records.append({"key": key, "item": client.lead(key[len(LEAD_KEY) :])})
            elif entity == REQUEST and key.startswith(REQUEST_KEY):
                item = client.request_by_id(key[len(REQUEST_KEY) :])
                records.append({"key": key, "item": item})
        return records

    def store(
        self,
        conn: Connection,
        integration_id: int,
        entity: str,
        records: list[tuple[dict[str, Any], int | None]],
    ) -> StoreResult:
        """Write one batch (see the module docstring)."""
        settings = settings_of(conn, integration_id)
        if entity == CALL:
            return self._store_calls(conn, integration_id, settings, records)
        if entity == CUSTOMER:
            return self._store_customers(conn, integration_id, settings, records)
        return self._store_requests(conn, integration_id, records)

    # -- calls ----------------------------------------------------------------------------

    def _store_calls(
        self,
        conn: Connection,
        integration_id: int,
        settings: UonSettings,
        records: list[tuple[dict[str, Any], int | None]],
    ) -> StoreResult:
        by_call: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record, _task in records:
            call_id = _text(record.get("call_id"), 128)
            if call_id is not None:
                by_call[call_id].append(record)
        result = StoreResult()
        for call_id, events in sorted(by_call.items()):
            pending = apply_call_events(conn, integration_id, settings, call_id, events)
            result.upserted += 1
            result.extra["calls_log_pending"] = result.extra.get("calls_log_pending", 0) + pending
        result.extra["call_events"] = len(records)
        return result

    # -- customers ------------------------------------------------------------------------

    def _store_customers(
        self,
        conn: Connection,
        integration_id: int,
        settings: UonSettings,
        records: list[tuple[dict[str, Any], int | None]],
    ) -> StoreResult:
        result = StoreResult()
        extra: dict[str, int] = defaultdict(int)
        now = now_utc()
        region = settings.default_region
        for record, task_id in _once_each(records):
            key = str(record["key"])
            if key.startswith(PHONE_KEY):
                phone = key[len(PHONE_KEY) :]
                if record.get("cached"):
                    extra["cache_hits"] += 1
                    found = record.get("profile") or {}
                    link_calls(conn, integration_id, phone, _text(found.get("uon_id")))
                    continue
                _, profiles = cache_users(
                    conn,
                    integration_id,
                    phone,
                    record.get("users") or [],
                    region=region,
                    now=now,
                    ttl_seconds=settings.cache_ttl_seconds,
                    negative_ttl_seconds=settings.negative_cache_ttl_seconds,
                    task_id=task_id,
                )
                extra["phones_looked_up"] += 1
                extra["phones_found" if profiles else "phones_not_found"] += 1
                result.upserted += len(profiles)
                if profiles:
                    link_calls(conn, integration_id, phone, profiles[0]["uon_id"])
                continue
            if record.get("fresh"):
                extra["customers_already_fresh"] += 1
                continue
            external_id = key[len(ID_KEY) :]
            old = customer_phones(conn, integration_id, [external_id])
            if record.get("deleted"):
                tombstone_customer(conn, integration_id, external_id, task_id, now)
                extra["cache_dropped"] += drop_cached(conn, integration_id, old)
                extra["customers_tombstoned"] += 1
                continue
            stored = upsert_customers(
                conn, integration_id, [record["user"]], region, now, task_id=task_id
            )
            new = customer_phones(conn, integration_id, [external_id])
            extra["cache_dropped"] += drop_cached(conn, integration_id, old | new)
            extra["cache_refreshed"] += refresh_cache(conn, integration_id, settings, new, now)
            extra["customers_refreshed"] += 1
            result.upserted += len(stored)
        result.extra = dict(extra)
        return result

    # -- leads and requests ---------------------------------------------------------------

    def _store_requests(
        self,
        conn: Connection,
        integration_id: int,
        records: list[tuple[dict[str, Any], int | None]],
    ) -> StoreResult:
        result = StoreResult()
        extra: dict[str, int] = defaultdict(int)
        now = now_utc()
        for record, task_id in _once_each(records):
            key = str(record["key"])
            kind, _, external_id = key.partition(":")
            item = record.get("item")
            if item is None:
                tombstone_request(conn, integration_id, kind, external_id, task_id, now)
                extra["requests_tombstoned"] += 1
                continue
            upsert_requests(conn, integration_id, kind, [item], now, task_id=task_id)
            result.upserted += 1
        result.extra = dict(extra)
        return result


# -- writes shared with the sweep and the call log ----------------------------------------


def apply_call_events(
    conn: Connection,
    integration_id: int,
    settings: UonSettings,
    call_id: str,
    events: Iterable[Mapping[str, Any]],
) -> int:
    """Apply one call's events to its `uon_calls` row; 1 when its log became pending."""
    c = uon_calls.c
    now = now_utc()
    conn.execute(
        dialect_insert(conn)(uon_calls)
        .values(integration_id=integration_id, call_id=call_id, created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["integration_id", "call_id"])
    )
    query = select(uon_calls).where(c.integration_id == integration_id, c.call_id == call_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = dict(conn.execute(query).mappings().one())
    before = dict(row)
    for event in sorted(events, key=lambda e: int(e.get("inbox_id") or 0)):
        _apply_event(row, event, settings)
    if row["customer_external_id"] is None and row["phone"]:
        row["customer_external_id"] = _known_customer(conn, integration_id, row["phone"])
    changed = {k: v for k, v in row.items() if v != before[k]}
    if changed:
        conn.execute(update(uon_calls).where(c.id == row["id"]).values(**changed, updated_at=now))
    return int(before["log_status"] is None and row["log_status"] == LOG_PENDING)


def _apply_event(row: dict[str, Any], event: Mapping[str, Any], settings: UonSettings) -> None:
    inbox_id = int(event.get("inbox_id") or 0)
    newer = row["last_event_id"] is None or inbox_id > int(row["last_event_id"])
    kind = str(event.get("event") or "").strip().lower()
    when = _when(event.get("timestamp")) or _aware(event.get("received_at")) or now_utc()
    direction = DIRECTIONS.get(str(event.get("direction") or "").strip().lower())
    values = {
        "direction": direction,
        "phone": _text(event.get("phone"), 64),
        "extension": _text(event.get("extension"), 32),
    }
    for name, value in values.items():
        if value is not None and (newer or row[name] is None):
            row[name] = value
    if kind in START_EVENTS and (row["started_at"] is None or when < _aware(row["started_at"])):
        row["started_at"] = when
    if kind == "bridge" and row["answered_at"] is None:
        row["answered_at"] = when
    if kind == "hangup":
        if newer or row["ended_at"] is None:
            row["ended_at"] = when
            duration = _number(event.get("duration"))
            if duration is not None:
                row["duration_seconds"] = duration
            status = _text(event.get("status"), 32)
            if status is not None:
                row["call_status"] = status.lower()
        if row["log_status"] is None:
            # Asked for once: a later hangup of the same call never asks again.
            row["log_status"] = LOG_PENDING if settings.log_calls else LOG_SKIPPED
    if newer:
        row["last_event_id"] = inbox_id


def _known_customer(conn: Connection, integration_id: int, phone: str) -> str | None:
    found = customers_by_phone(conn, integration_id, phone)
    return found[0]["external_id"] if found else None


def _refreshed_at(
    conn: Connection, keys: Sequence[tuple[int, str]]
) -> dict[tuple[int, str], datetime]:
    """When each (integration, `id:` task key) client was last read from U-ON (live ones)."""
    out: dict[tuple[int, str], datetime] = {}
    by_integration: dict[int, list[str]] = defaultdict(list)
    for integration_id, key in keys:
        by_integration[integration_id].append(key[len(ID_KEY) :])
    c = customers.c
    for integration_id, ids in by_integration.items():
        rows = conn.execute(
            select(c.external_id, c.synced_at).where(
                c.integration_id == integration_id,
                c.external_id.in_(ids),
                c.deleted_at.is_(None),
            )
        )
        for row in rows:
            synced = _aware(row.synced_at)
            if synced is not None:
                out[(integration_id, ID_KEY + row.external_id)] = synced
    return out


def _received_at(conn: Connection, task_ids: Sequence[int]) -> dict[int, datetime]:
    """When the webhook behind each task reached the receiver."""
    if not task_ids:
        return {}
    t, i = uon_tasks.c, uon_inbox.c
    rows = conn.execute(
        select(t.id, i.received_at)
        .select_from(uon_tasks.join(uon_inbox, i.id == t.webhook_id))
        .where(t.id.in_(list(task_ids)))
    )
    return {row.id: at for row in rows if (at := _aware(row.received_at)) is not None}


def link_calls(conn: Connection, integration_id: int, phone: str, external_id: str | None) -> int:
    """Name the client on the number's calls that name none yet."""
    if not external_id:
        return 0
    c = uon_calls.c
    return conn.execute(
        update(uon_calls)
        .where(
            c.integration_id == integration_id,
            c.phone == phone,
            c.customer_external_id.is_(None),
        )
        .values(customer_external_id=external_id)
    ).rowcount


def refresh_cache(
    conn: Connection,
    integration_id: int,
    settings: UonSettings,
    phones: Iterable[str],
    now: datetime,
) -> int:
    """Cache fresh profiles of these numbers from what is stored now."""
    written = 0
    for phone in sorted(set(phones)):
        stored = customers_by_phone(conn, integration_id, phone)
        profiles = profiles_for(conn, integration_id, stored)
        if profiles:
            write_cache(
                conn,
                integration_id,
                phone,
                cache_profile(profiles),
                now,
                settings.cache_ttl_seconds,
            )
            written += 1
    return written


def tombstone_customer(
    conn: Connection, integration_id: int, external_id: str, task_id: int | None, now: datetime
) -> None:
    """Mark a U-ON client deleted (a row is kept, or made, with `deleted_at`)."""
    stmt = dialect_insert(conn)(customers).values(
        integration_id=integration_id,
        external_id=external_id,
        custom_fields={},
        raw={},
        deleted_at=now,
        synced_at=now,
        source_task_id=task_id,
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["integration_id", "external_id"],
            set_={"deleted_at": now, "synced_at": now, "source_task_id": task_id},
        )
    )


def request_values(item: Mapping[str, Any]) -> dict[str, Any] | None:
    """A U-ON lead or request as `uon_requests` columns (None without an id)."""
    external_id = _text(item.get("id"), 64)
    if external_id is None:
        return None
    status = _text(item.get("status"), 100)
    return {
        "external_id": external_id,
        "status": status,
        "customer_external_id": _text(item.get("client_id") or item.get("u_id"), 64),
        "manager_id": _text(item.get("manager_id"), 32),
        "active": status is None or status.lower() not in CLOSED_STATUSES,
        "raw": dict(item),
    }


def upsert_requests(
    conn: Connection,
    integration_id: int,
    kind: str,
    items: Iterable[Mapping[str, Any]],
    now: datetime,
    *,
    task_id: int | None = None,
) -> int:
    """Store leads or requests as last read; returns how many."""
    by_id: dict[str, dict[str, Any]] = {}
    for item in items:
        values = request_values(item)
        if values is not None:
            by_id[values["external_id"]] = values  # one statement touches a row once
    if not by_id:
        return 0
    rows = [
        dict(
            v,
            integration_id=integration_id,
            kind=kind,
            custom_fields={},
            synced_at=now,
            deleted_at=None,
            source_task_id=task_id,
        )
        for v in by_id.values()
    ]
    stmt = dialect_insert(conn)(uon_requests)
    keep = ("integration_id", "kind", "external_id", "custom_fields")
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["integration_id", "kind", "external_id"],
            set_={k: stmt.excluded[k] for k in rows[0] if k not in keep},
        ),
        rows,
    )
    return len(rows)


def tombstone_request(
    conn: Connection,
    integration_id: int,
    kind: str,
    external_id: str,
    task_id: int | None,
    now: datetime,
) -> None:
    """Mark a lead or request U-ON no longer has as deleted."""
    stmt = dialect_insert(conn)(uon_requests).values(
        integration_id=integration_id,
        kind=kind,
        external_id=external_id,
        custom_fields={},
        raw={},
        active=False,
        deleted_at=now,
        synced_at=now,
        source_task_id=task_id,
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["integration_id", "kind", "external_id"],
            set_={"deleted_at": now, "synced_at": now, "active": False, "source_task_id": task_id},
        )
    )


def sweep_requests(engine: Any, integration_id: int, client: Any, day: date) -> dict[str, int]:
    """List one day's requests at U-ON (pages of 100) into `uon_requests`."""
    pages = listed = 0
    stamp = day.isoformat()
    for items in client.requests_pages(stamp, stamp):
        pages += 1
        with engine.begin() as conn:
            listed += upsert_requests(conn, integration_id, REQUEST, items, now_utc())
    return {"pages": pages, "requests": listed}
