"""Drain ALLIO tasks: claim, merge and dedupe ids, fetch fairly, upsert, finish.

Pure Python over an Engine and a fetcher, so the Dagster asset stays thin and
the logic is testable on its own. Progress is committed batch by batch: a crash
loses at most one in-flight batch, whose tasks the lease hands back.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Protocol

from sqlalchemy import Engine

from crm_schema import allio_tasks as tasks_q
from crm_schema.entities import ENTITY_TABLES, upsert_entities
from crm_schema.tables import TASK_ERROR, TASK_NEW
from orchestration.allio.mapping import map_record

BATCH_SIZE = 100  # ALLIO list endpoints take up to 100 ids per call
MODES = ("live", "reconcile", "backfill")


class AllioFetcher(Protocol):
    """What the sync needs from a per-integration ALLIO client."""

    def reserve_list(self, ids: list[int]) -> list[dict]: ...

    def dealcard_list(self, ids: list[int]) -> list[dict]: ...


@dataclass
class SyncOptions:
    """How one run selects its work."""

    day: date
    run_id: str
    mode: str = "live"
    integration_ids: set[int] | None = None
    lease: timedelta = timedelta(minutes=10)
    max_attempts: int = 5
    # Live runs keep polling for new tasks this long after running dry, so a
    # steady trickle of webhooks is served by one run instead of many.
    idle_seconds: float = 0.0
    poll_seconds: float = 0.25
    max_seconds: float = 600.0


@dataclass
class EntityStats:
    """Per-entity numbers that end up as materialization metadata."""

    upserted: int = 0
    missing: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0
    calls: int = 0
    ids_requested: int = 0


@dataclass
class SyncStats:
    """What one run did, per entity and for contacts."""

    entities: dict[str, EntityStats] = field(
        default_factory=lambda: {e: EntityStats() for e in tasks_q.SYNC_ENTITIES}
    )
    contacts_upserted: int = 0
    contacts_with_phone: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _Work:
    """Ids still to fetch for one (integration, entity), and which tasks wait on them."""

    integration_id: int
    entity: str
    ids: dict[str, set[int]] = field(default_factory=dict)  # external id → task ids
    lineage: dict[str, int] = field(default_factory=dict)  # backfill: a task naming the id


def _claim(conn, opts: SyncOptions, entity: str, active: set[int]) -> list[tasks_q.Task]:  # noqa: ANN001
    ids = active if opts.integration_ids is None else active & opts.integration_ids
    if not ids:
        return []
    if opts.mode == "live":
        statuses, max_attempts = (TASK_NEW,), None
    elif opts.mode == "reconcile":
        statuses, max_attempts = (TASK_NEW, TASK_ERROR), opts.max_attempts
    else:
        statuses, max_attempts = (TASK_NEW, TASK_ERROR), None
    return tasks_q.claim_tasks(
        conn,
        entity=entity,
        day=opts.day,
        run_id=opts.run_id,
        lease=opts.lease,
        statuses=statuses,
        integration_ids=ids,
        max_attempts=max_attempts,
    )


class AllioSync:
    """One run's sync of reserves and deal cards (and the contacts they carry)."""

    def __init__(
        self,
        engine: Engine,
        client_for: Callable[[int], AllioFetcher],
        active_integrations: Callable[[], set[int]],
        opts: SyncOptions,
        log: Callable[[str], None] = lambda _msg: None,
    ) -> None:
        self.engine = engine
        self.client_for = client_for
        self.active_integrations = active_integrations
        self.opts = opts
        self.log = log
        self.stats = SyncStats()
        self._pending: dict[int, set[str]] = {}  # task id → external ids not yet fetched
        self._task_entity: dict[int, str] = {}
        self._failed: dict[int, str] = {}  # task id → first error

    def run(self) -> SyncStats:
        """Claim and process until no work is left (live runs linger `idle_seconds`)."""
        started = time.monotonic()
        idle_since: float | None = None
        first = True
        while True:
            self._take_new_webhooks()
            work = self._collect(first)
            first = False
            if work:
                idle_since = None
                self._process(work)
                if self.opts.mode != "live":
                    break  # reconcile and backfill runs take one pass over their day
            else:
                now = time.monotonic()
                idle_since = idle_since or now
                if self.opts.mode != "live" or now - idle_since >= self.opts.idle_seconds:
                    break
                time.sleep(self.opts.poll_seconds)
            if time.monotonic() - started >= self.opts.max_seconds:
                self.log("time budget reached; remaining tasks stay pending for the next run")
                break
        self.stats.seconds = round(time.monotonic() - started, 3)
        return self.stats

    def _take_new_webhooks(self) -> None:
        """A live run for today turns waiting webhooks into tasks itself.

        The sensor stays the owner of this step; a running live run only saves the
        wait for the next tick. Task creation is idempotent (unique webhook_id), so
        the two never duplicate a task.
        """
        if self.opts.mode != "live" or self.opts.day != tasks_q.now_utc().date():
            return
        with self.engine.begin() as conn:
            tasks_q.tasks_from_webhooks(conn, 0)

    def _collect(self, first: bool) -> list[_Work]:
        active = self.active_integrations()
        claimed: list[tasks_q.Task] = []
        extra: list[tasks_q.Task] = []
        with self.engine.begin() as conn:
            for entity in tasks_q.SYNC_ENTITIES:
                claimed += _claim(conn, self.opts, entity, active)
                if self.opts.mode == "backfill" and first:
                    # Re-sync everything the day's tasks name, done ones included.
                    ids = (
                        active
                        if self.opts.integration_ids is None
                        else (active & self.opts.integration_ids)
                    )
                    extra += tasks_q.tasks_of_day(
                        conn, entity=entity, day=self.opts.day, integration_ids=ids
                    )
        works: dict[tuple[int, str], _Work] = {}
        for task in claimed:
            work = works.setdefault(
                (task.integration_id, task.entity), _Work(task.integration_id, task.entity)
            )
            self._pending[task.id] = set(task.external_ids)
            self._task_entity[task.id] = task.entity
            for ext in task.external_ids:
                work.ids.setdefault(ext, set()).add(task.id)
            if not task.external_ids:
                self._failed[task.id] = "task has no valid external ids"
        for task in extra:
            work = works.setdefault(
                (task.integration_id, task.entity), _Work(task.integration_id, task.entity)
            )
            for ext in task.external_ids:
                work.ids.setdefault(ext, set())
                work.lineage.setdefault(ext, task.id)
        # Tasks with nothing to fetch (empty id lists) finish right away.
        self._finish_ready()
        return [w for w in works.values() if w.ids]

    def _batches(self, works: list[_Work]) -> Iterable[tuple[_Work, list[str]]]:
        """Round-robin over integrations, one batch each, so no client starves another."""
        queues: dict[int, deque] = defaultdict(deque)
        for work in sorted(works, key=lambda w: (w.integration_id, w.entity)):
            ids = sorted(work.ids, key=int)
            for i in range(0, len(ids), BATCH_SIZE):
                queues[work.integration_id].append((work, ids[i : i + BATCH_SIZE]))
        while queues:
            for integration_id in list(queues):
                yield queues[integration_id].popleft()
                if not queues[integration_id]:
                    del queues[integration_id]

    def _process(self, works: list[_Work]) -> None:
        for work, ids in self._batches(works):
            self._process_batch(work, ids)

    def _process_batch(self, work: _Work, ids: list[str]) -> None:
        stats = self.stats.entities[work.entity]
        stats.calls += 1
        stats.ids_requested += len(ids)
        task_ids = sorted({t for ext in ids for t in work.ids[ext]})
        try:
            client = self.client_for(work.integration_id)
            fetch = client.reserve_list if work.entity == "reserve" else client.dealcard_list
            records = fetch([int(i) for i in ids])
        except Exception as exc:  # every provider failure is recorded on its tasks
            self._fail_batch(work, task_ids, f"{type(exc).__name__}: {exc}")
        else:
            try:
                self._store(work, records, ids, task_ids)
            except Exception as exc:  # a record the database rejects fails its tasks, not the run
                first_line = str(exc).splitlines()[0] if str(exc) else ""
                self._fail_batch(
                    work, task_ids, f"store failed: {type(exc).__name__}: {first_line}"
                )
        for ext in ids:
            for task_id in work.ids[ext]:
                self._pending.get(task_id, set()).discard(ext)
        self._finish_ready()

    def _fail_batch(self, work: _Work, task_ids: list[int], message: str) -> None:
        self.log(f"integration {work.integration_id} {work.entity} batch failed: {message}")
        self.stats.errors.append(message)
        for task_id in task_ids:
            self._failed.setdefault(task_id, message)

    def _store(self, work: _Work, records: list[dict], ids: list[str], task_ids: list[int]) -> None:
        stats = self.stats.entities[work.entity]
        wanted = set(ids)
        by_id = {}
        for record in records:
            ext = str(record.get("id"))
            if ext not in wanted:
                continue  # never store what we did not ask for
            owner = min(work.ids[ext], default=work.lineage.get(ext))
            # A record listed twice is stored once (the last copy wins): one upsert
            # statement must not touch the same row twice.
            by_id[ext] = map_record(work.entity, record, work.integration_id, owner)
        mapped_records = list(by_id.values())
        people = {m.contact["external_id"]: m.contact for m in mapped_records if m.contact}
        now = tasks_q.now_utc()
        with self.engine.begin() as conn:
            contact_ids = upsert_entities(
                conn, ENTITY_TABLES["contact"], list(people.values()), now
            )
            deals = [
                m.deal
                | {"contact_id": contact_ids.get(m.contact["external_id"]) if m.contact else None}
                for m in mapped_records
            ]
            upsert_entities(conn, ENTITY_TABLES[work.entity], deals, now)
        stats.upserted += len(deals)
        stats.missing += len(wanted) - len(mapped_records)
        self.stats.contacts_upserted += len(people)
        self.stats.contacts_with_phone += sum(1 for p in people.values() if p["phone"])

    def _finish_ready(self) -> None:
        ready = [t for t, left in self._pending.items() if not left]
        if not ready:
            return
        done = [t for t in ready if t not in self._failed]
        failed = [t for t in ready if t in self._failed]
        with self.engine.begin() as conn:
            tasks_q.finish_tasks(conn, done, self.opts.run_id)
            for task_id in failed:
                tasks_q.finish_tasks(conn, [task_id], self.opts.run_id, self._failed[task_id])
        for task_id in done:
            self.stats.entities[self._task_entity[task_id]].tasks_done += 1
        for task_id in failed:
            self.stats.entities[self._task_entity[task_id]].tasks_failed += 1
        for task_id in ready:
            del self._pending[task_id]
