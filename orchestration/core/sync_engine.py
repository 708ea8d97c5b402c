"""The generic sync loop every provider runs: claim → dedupe → batch → fetch → store → finish.

Pure Python over an Engine, a task queue and a provider's `SyncHandler`, so the
Dagster assets stay thin and the logic is testable on its own. Progress is committed
batch by batch; a heartbeat keeps the lease of the tasks in hand, and a run that dies
loses at most the batches in flight, whose tasks the queue hands back.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, Engine

from crm_schema.task_queue import Claim, Finished, Mode, Task, TaskQueue, now_utc
from orchestration.core.heartbeat import Heartbeat


@dataclass
class StoreResult:
    """What storing one batch wrote: entity rows, plus provider-specific counters.

    ``failed`` names records the handler could not map (external id → why): their
    tasks fail and are retried with the queue's backoff, the rest of the batch stands.
    """

    upserted: int = 0
    extra: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


class SyncHandler(Protocol):
    """What a provider gives the generic engine (see orchestration/allio/sync.py)."""

    handler: str  # the task handler this syncs ("sync")
    entities: tuple[str, ...]  # entities it fetches
    batch_size: int  # ids per provider call

    def fetch(self, client: Any, entity: str, ids: list[str]) -> list[dict[str, Any]]:
        """The provider's records for ``ids`` (absent ids are simply missing)."""

    def record_id(self, entity: str, record: dict[str, Any]) -> str | None:
        """The external id of one record."""

    def store(
        self,
        conn: Connection,
        integration_id: int,
        entity: str,
        records: list[tuple[dict[str, Any], int | None]],
    ) -> StoreResult:
        """Map and upsert (record, lineage task id) pairs in one transaction."""

    def take_webhooks(self, conn: Connection) -> int:
        """Turn waiting inbox rows into tasks (a live run for today does it itself)."""


# Optional handler hooks (looked up with getattr, so providers that need none skip them):
#
# - ``known_records(conn, tasks) -> Mapping[int, list[dict]]``: records claimed tasks
#   already carry (e.g. a webhook holding the whole entity), by task id. Their ids are
#   stored from these records without a provider call; only the rest is fetched.
#   ``store`` may then get several records for one id and must keep the newest.
# - ``missing_is_error: bool``: an id the provider did not return fails its task
#   (retried with backoff) instead of finishing it "not found".
# - ``finished(conn, results)``: called with the tasks' results in the transaction
#   that records them (e.g. to mark or clear the inbox rows behind them).


@dataclass
class SyncOptions:
    """How one run selects its work."""

    day: date
    run_id: str
    mode: Mode = "live"
    provider: str = ""
    integration_ids: set[int] | None = None
    lease: timedelta = timedelta(minutes=2)
    # Live runs for today keep polling for new tasks this long after running dry, so
    # a steady trickle of webhooks is served by one run instead of many.
    idle_seconds: float = 0.0
    poll_seconds: float = 0.25
    max_seconds: float = 900.0
    # Provider calls per second this run may count on (sizes claims to the lease).
    calls_per_second: float = 1.0
    claim_share_of_lease: float = 0.9
    # Exceptions that mean "stop" (a cancel), not "this work broke the run".
    interruptions: tuple[type[BaseException], ...] = (KeyboardInterrupt,)


@dataclass
class EntityStats:
    """Per-entity numbers that end up as materialization metadata."""

    upserted: int = 0
    missing: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0
    tasks_retrying: int = 0
    calls: int = 0
    ids_requested: int = 0
    from_payload: int = 0  # ids stored from records the tasks carried (no call)


@dataclass
class SyncStats:
    """What one run did."""

    entities: dict[str, EntityStats]
    extra: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    claims: int = 0
    seconds: float = 0.0


@dataclass
class _Work:
    """Ids still to fetch for one (integration, entity), and which tasks wait on them."""

    integration_id: int
    entity: str
    ids: dict[str, set[int]] = field(default_factory=dict)  # external id → task ids
    lineage: dict[str, int] = field(default_factory=dict)  # backfill: a task naming the id


def call_cost(batch_size: int) -> Callable[[Sequence[Task]], int]:
    """Provider calls a set of tasks needs once their ids are merged per (integration, entity)."""

    def cost(tasks: Sequence[Task]) -> int:
        groups: dict[tuple[int, str], set[str]] = defaultdict(set)
        for task in tasks:
            groups[(task.integration_id, task.entity)].update(task.external_ids)
        return sum(math.ceil(len(ids) / batch_size) for ids in groups.values() if ids)

    return cost


class SyncEngine:
    """One run's drain of a provider's tasks (see module docstring)."""

    def __init__(
        self,
        engine: Engine,
        queue: TaskQueue,
        handler: SyncHandler,
        client_for: Callable[[int], Any],
        active_integrations: Callable[[], set[int]],
        opts: SyncOptions,
        log: Callable[[str], None] = lambda _msg: None,
    ) -> None:
        self.engine = engine
        self.queue = queue
        self.handler = handler
        self.client_for = client_for
        self.active_integrations = active_integrations
        self.opts = opts
        self.log = log
        self.stats = SyncStats(entities={e: EntityStats() for e in handler.entities})
        self._tasks: dict[int, Task] = {}
        self._pending: dict[int, set[str]] = {}  # task id → external ids not yet fetched
        self._missing: dict[int, int] = {}  # task id → its ids the provider did not return
        self._failed: dict[int, str] = {}  # task id → first error
        self._final: set[int] = set()  # failed tasks no retry can mend
        self._cost = call_cost(handler.batch_size)

    @property
    def max_cost(self) -> int:
        """Provider calls one claim may cost: a share of what the lease allows."""
        seconds = self.opts.lease.total_seconds() * self.opts.claim_share_of_lease
        return max(1, int(seconds * self.opts.calls_per_second))

    def run(self) -> SyncStats:
        """Claim and process until no work is left (live runs for today linger)."""
        started = time.monotonic()
        heartbeat = Heartbeat(
            self.engine, self.queue, self.opts.run_id, self.opts.lease, self.opts.provider
        )
        heartbeat.start()
        try:
            self._loop(started)
        except BaseException as exc:
            self._hand_back(exc)
            raise
        finally:
            heartbeat.stop()
        self.stats.seconds = round(time.monotonic() - started, 3)
        return self.stats

    def _loop(self, started: float) -> None:
        idle_since: float | None = None
        first = True
        linger = self.opts.mode == "live" and self.opts.day == now_utc().date()
        while True:
            if linger:
                with self.engine.begin() as conn:
                    self.handler.take_webhooks(conn)
            work = self._collect(first)
            first = False
            if work:
                idle_since = None
                self._process(work)
            else:
                now = time.monotonic()
                idle_since = idle_since or now
                if not linger or now - idle_since >= self.opts.idle_seconds:
                    break
                time.sleep(self.opts.poll_seconds)
            if time.monotonic() - started >= self.opts.max_seconds:
                self.log("time budget reached; remaining tasks stay pending for the next run")
                break

    def _hand_back(self, exc: BaseException) -> None:
        """The run is stopping abnormally: hand held tasks back (best effort).

        An interruption (cancel) gives them back untouched; anything else counts a
        crash, so a task that breaks every run ends in 3 (the sensor does the same when
        the process dies without getting here).
        """
        held = list(self._pending)
        if not held:
            return
        try:
            with self.engine.begin() as conn:
                if not isinstance(exc, self.opts.interruptions):
                    reason = f"run {self.opts.run_id} failed: {type(exc).__name__}"
                    condition = self.queue.table.c.id.in_(held)
                    condition = condition & (self.queue.table.c.run_id == self.opts.run_id)
                    self.queue.release_crashed(conn, condition, reason)
                else:
                    self.queue.release(conn, held, self.opts.run_id)
        except Exception as release_error:  # the database may be what failed
            self.log(f"could not hand back {len(held)} tasks: {type(release_error).__name__}")

    def _integrations(self) -> set[int]:
        active = self.active_integrations()
        only = self.opts.integration_ids
        return active if only is None else active & only

    def _collect(self, first: bool) -> list[_Work]:
        allowed = frozenset(self._integrations())
        claim = Claim(
            run_id=self.opts.run_id,
            handler=self.handler.handler,
            mode=self.opts.mode,
            day=self.opts.day,
            integration_ids=allowed,
            lease=self.opts.lease,
            max_cost=self.max_cost,
            cost=self._cost,
        )
        extra: list[Task] = []
        with self.engine.begin() as conn:
            # Tasks whose run stopped heartbeating come back before we claim (the sensor
            # does the same; a run launched by hand must not wait for it).
            self.queue.expire_leases(conn)
            claimed = self.queue.claim(conn, claim)
            if self.opts.mode == "backfill" and first and allowed:
                # Re-sync everything the day's tasks name, done ones included.
                extra = self.queue.tasks_of_day(
                    conn, handler=self.handler.handler, day=self.opts.day, integration_ids=allowed
                )
        if claimed:
            self.stats.claims += 1
        works: dict[tuple[int, str], _Work] = {}
        for task in claimed:
            self._tasks[task.id] = task
            self._pending[task.id] = set(task.external_ids)
            if task.entity not in self.handler.entities:
                self._failed[task.id] = f"no fetcher for entity '{task.entity}'"
                self._pending[task.id] = set()
                continue
            if not task.external_ids:
                self._failed[task.id] = "task has no valid external ids"
            work = works.setdefault(
                (task.integration_id, task.entity), _Work(task.integration_id, task.entity)
            )
            for ext in task.external_ids:
                work.ids.setdefault(ext, set()).add(task.id)
        for task in extra:
            if task.entity not in self.handler.entities:
                continue
            work = works.setdefault(
                (task.integration_id, task.entity), _Work(task.integration_id, task.entity)
            )
            for ext in task.external_ids:
                work.ids.setdefault(ext, set())
                work.lineage.setdefault(ext, task.id)
        self._apply_known(claimed, works)
        self._finish_ready()  # tasks with nothing to fetch finish right away
        return [w for w in works.values() if w.ids]

    def _apply_known(self, claimed: list[Task], works: dict[tuple[int, str], _Work]) -> None:
        """Store what claimed tasks already carry (``known_records``); fetch the rest."""
        hook = getattr(self.handler, "known_records", None)
        tasks = [t for t in claimed if t.entity in self.handler.entities and t.external_ids]
        if hook is None or not tasks:
            return
        with self.engine.connect() as conn:
            known = hook(conn, tasks)
        groups: dict[tuple[int, str], list[tuple[dict[str, Any], int]]] = defaultdict(list)
        covered: dict[int, set[str]] = {}
        for task in tasks:
            for record in known.get(task.id, ()):
                ext = self.handler.record_id(task.entity, record)
                if ext is None or ext not in task.external_ids:
                    continue
                groups[(task.integration_id, task.entity)].append((record, task.id))
                covered.setdefault(task.id, set()).add(ext)
        for (integration_id, entity), records in sorted(groups.items()):
            work = works[(integration_id, entity)]
            owners = sorted({task_id for _, task_id in records})
            try:
                with self.engine.begin() as conn:
                    result = self.handler.store(conn, integration_id, entity, records)
            except Exception as exc:  # like a fetched batch the database rejects
                first_line = str(exc).splitlines()[0] if str(exc) else ""
                message = f"store failed: {type(exc).__name__}: {first_line}"
                self._fail_batch(work, owners, message, final=True)
                result = StoreResult()
            else:
                self._count(entity, result)
                stored = {self.handler.record_id(entity, r) for r, _ in records}
                self.stats.entities[entity].from_payload += len(stored - set(result.failed))
                by_ext: dict[str, set[int]] = defaultdict(set)
                for task_id in owners:
                    for ext in covered[task_id]:
                        by_ext[ext].add(task_id)
                self._fail_unmapped(work, result, by_ext)
            for task_id in owners:
                for ext in covered[task_id]:
                    self._pending[task_id].discard(ext)
                    waiting = work.ids.get(ext)
                    if waiting is not None:
                        waiting.discard(task_id)
                        if not waiting:
                            del work.ids[ext]  # nobody else needs it fetched

    def _batches(self, works: list[_Work]) -> Iterable[tuple[_Work, list[str]]]:
        """Round-robin over integrations, one batch each, so no client starves another."""
        size = self.handler.batch_size
        queues: dict[int, deque[tuple[_Work, list[str]]]] = defaultdict(deque)
        for work in sorted(works, key=lambda w: (w.integration_id, w.entity)):
            ids = sorted(work.ids, key=lambda i: (len(i), i))
            for i in range(0, len(ids), size):
                queues[work.integration_id].append((work, ids[i : i + size]))
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
            records = self.handler.fetch(client, work.entity, ids)
        except Exception as exc:  # every provider failure is recorded on its tasks
            self._fail_batch(work, task_ids, f"{type(exc).__name__}: {exc}")
        else:
            try:
                missing = self._store(work, records, ids)
            except Exception as exc:  # a record the database rejects fails its tasks, not the run
                first_line = str(exc).splitlines()[0] if str(exc) else ""
                message = f"store failed: {type(exc).__name__}: {first_line}"
                self._fail_batch(work, task_ids, message, final=True)
            else:
                for ext in missing:
                    for task_id in work.ids[ext]:
                        self._missing[task_id] = self._missing.get(task_id, 0) + 1
        for ext in ids:
            for task_id in work.ids[ext]:
                self._pending.get(task_id, set()).discard(ext)
        self._finish_ready()

    def _fail_batch(
        self, work: _Work, task_ids: list[int], message: str, *, final: bool = False
    ) -> None:
        self.log(f"integration {work.integration_id} {work.entity} batch failed: {message}")
        self.stats.errors.append(message)
        for task_id in task_ids:
            self._failed.setdefault(task_id, message)
            if final:
                self._final.add(task_id)

    def _store(self, work: _Work, records: list[dict[str, Any]], ids: list[str]) -> set[str]:
        """Store what was asked for; returns the requested ids the provider did not return."""
        wanted = set(ids)
        by_id: dict[str, tuple[dict[str, Any], int | None]] = {}
        for record in records:
            ext = self.handler.record_id(work.entity, record)
            if ext not in wanted:
                continue  # never store what we did not ask for
            owner = min(work.ids[ext], default=work.lineage.get(ext))
            # A record listed twice is stored once (the last copy wins): one upsert
            # statement must not touch the same row twice.
            by_id[ext] = (record, owner)
        with self.engine.begin() as conn:
            result = self.handler.store(
                conn, work.integration_id, work.entity, list(by_id.values())
            )
        self._count(work.entity, result)
        self._fail_unmapped(work, result, work.ids)
        missing = wanted - set(by_id)
        self.stats.entities[work.entity].missing += len(missing)
        if missing and getattr(self.handler, "missing_is_error", False):
            for ext in sorted(missing):
                for task_id in work.ids[ext]:
                    self._failed.setdefault(task_id, f"{ext}: not found at the provider")
        return missing

    def _count(self, entity: str, result: StoreResult) -> None:
        self.stats.entities[entity].upserted += result.upserted
        for name, value in result.extra.items():
            self.stats.extra[name] = self.stats.extra.get(name, 0) + value

    def _fail_unmapped(
        self, work: _Work, result: StoreResult, owners: Mapping[str, set[int]]
    ) -> None:
        """Tasks naming a record the handler could not map fail (retried with backoff)."""
        for ext, error in sorted(result.failed.items()):
            message = f"{ext}: {error}"
            self.log(f"integration {work.integration_id} {work.entity}: {message}")
            self.stats.errors.append(message)
            for task_id in owners.get(ext, ()):
                self._failed.setdefault(task_id, message)

    def _finish_ready(self) -> None:
        ready = [t for t, left in self._pending.items() if not left]
        if not ready:
            return
        results = []
        for task_id in ready:
            task = self._tasks[task_id]
            error = self._failed.get(task_id)
            missing = self._missing.get(task_id, 0)
            outcome = None
            if error is None:
                fetched = len(task.external_ids) - missing
                outcome = f"synced {fetched}" + (f", {missing} not found" if missing else "")
            results.append(
                Finished(
                    task=task,
                    error=error,
                    outcome=outcome,
                    ids_missing=missing,
                    final=task_id in self._final,
                )
            )
        finished = getattr(self.handler, "finished", None)
        with self.engine.begin() as conn:
            counts = self.queue.finish(conn, self.opts.run_id, results, self.opts.mode)
            if finished is not None:
                finished(conn, results)
        for result in results:
            stats = self.stats.entities.get(result.task.entity)
            if stats is None:
                continue
            if result.error is None:
                stats.tasks_done += 1
            elif result.task.id in counts.retrying_ids:
                stats.tasks_retrying += 1
            else:
                stats.tasks_failed += 1
        for task_id in ready:
            del self._pending[task_id]
            self._failed.pop(task_id, None)
            self._final.discard(task_id)
            self._missing.pop(task_id, None)


def run_sync(
    engine: Engine,
    queue: TaskQueue,
    handler: SyncHandler,
    resource: Any,
    opts: SyncOptions,
    *,
    stats: Any = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> SyncStats:
    """One engine run over ``opts.provider``'s active integrations, outside Dagster (CLI,
    tests, benchmarks): clients from ``resource.client_for``, closed at the end."""
    from crm_schema.integrations import Integration, list_integrations

    known: dict[int, Integration] = {}
    clients: dict[int, Any] = {}

    def active() -> set[int]:
        with engine.connect() as conn:
            found = list_integrations(conn, provider=opts.provider, active_only=True)
        known.update((item.id, item) for item in found)
        return {item.id for item in found}

    def client_for(integration_id: int) -> Any:
        if integration_id not in clients:
            clients[integration_id] = resource.client_for(
                known[integration_id], run_id=opts.run_id, stats=stats
            )
        return clients[integration_id]

    try:
        return SyncEngine(engine, queue, handler, client_for, active, opts, log=log).run()
    finally:
        for client in clients.values():
            client.close()
