"""The amoCRM run: RDESK lead updates (handler ``rdesk``) and contacts (``contacts``).

RDESK work is per task, not the generic engine's batched fetch: each task is one
update that is validated, resolved to a lead, read, patched and recorded, with an
outcome of its own (invalid → 3 at once, lead not found → 3, older → skipped). So
this is a small loop over the generic `TaskQueue` with the generic `Heartbeat`:

- claims are bounded by the lease (about two calls an update, a call per 250
  contacts), the heartbeat extends the lease of everything the run holds, and a run
  that dies has its tasks handed back (here, by the sensor, or when the lease lapses)
  with the queue's crash counting;
- **ordering**: an RDESK claim takes a transaction-wide lock (PostgreSQL advisory
  lock; SQLite's BEGIN IMMEDIATE is one already) and hands back, for a few seconds,
  any task whose lead another run is working on, so one lead is only ever worked on
  by one run. Within a run a lead's updates are taken in inbox order and only the
  newest is sent (each update carries every field); the older ones end "skipped: a
  newer RDESK update was applied", and so does an update older than the lead's
  `last_update_id` (the inbox row of the newest update applied), so an older update
  never overwrites a newer one;
- amoCRM's IP block (403) or refused credentials stop that integration's work in the
  run, its held tasks handed back untouched (no attempt spent); the other integrations
  go on, and the run then fails loudly (:class:`RunStopped`). 429 / 5xx / other 4xx
  fail the tasks concerned, which the queue retries with its backoff.
"""

from __future__ import annotations

import math
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, or_, select, update

from crm_schema.engine import dialect_insert
from crm_schema.integrations import Integration, list_integrations
from crm_schema.providers.amocrm import amocrm_inbox, amocrm_mock_leads, amocrm_tasks, leads
from crm_schema.tables import TASK_IN_PROGRESS, TASK_NEW, contacts
from crm_schema.task_queue import Claim, Finished, Task, dump_external_ids, now_utc
from orchestration.amocrm.client import AmocrmBlockedError
from orchestration.amocrm.contacts import ROLE, SOURCE_ENTITY, map_contact
from orchestration.amocrm.rdesk import (
    InvalidUpdate,
    Update,
    lead_body,
    parse_update,
    settings_of,
)
from orchestration.amocrm.tasks import CONTACTS, DELETE, QUEUE, RDESK, take_webhooks
from orchestration.core.heartbeat import Heartbeat
from orchestration.core.sync_engine import SyncOptions
from orchestration.resources.errors import ProviderAuthError, ProviderError

PROVIDER = "amocrm"
SKIPPED_OLDER = "skipped: a newer RDESK update was applied"
CONTACTS_PER_CALL = 250
CALLS_PER_UPDATE = 2  # GET + PATCH (mock mode adds a search or a create once per lead)
# One key for every RDESK claim: claims are short, and this makes the "is another run
# on this lead?" look race-free on PostgreSQL.
CLAIM_LOCK_KEY = zlib.crc32(b"amocrm_tasks:rdesk-claim")


class RunStopped(Exception):
    """amoCRM refuses this account (IP blocked, credentials refused): the run stops and
    hands its tasks back untouched, so none is spent on a block."""


@dataclass
class RunOptions(SyncOptions):
    """How one run selects its work: the generic engine's options, at amoCRM's rate."""

    calls_per_second: float = 7.0
    # A task whose lead another run works on comes back after this long.
    defer_seconds: float = 5.0


@dataclass
class RunStats:
    """What one run did (materialization metadata)."""

    leads_updated: int = 0
    leads_skipped_older: int = 0
    leads_repeated: int = 0
    leads_invalid: int = 0
    leads_not_found: int = 0
    leads_failed: int = 0
    mock_leads_created: int = 0
    mock_leads_found: int = 0
    contacts_upserted: int = 0
    contacts_tombstoned: int = 0
    contacts_not_found: int = 0
    contacts_failed: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0
    tasks_retrying: int = 0
    tasks_deferred: int = 0
    integrations_stopped: int = 0
    claims: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def leads_metadata(self) -> dict[str, Any]:
        return {
            "leads_updated": self.leads_updated,
            "leads_skipped_older": self.leads_skipped_older,
            "leads_delivered_again": self.leads_repeated,
            "leads_invalid": self.leads_invalid,
            "leads_not_found": self.leads_not_found,
            "leads_failed": self.leads_failed,
            "mock_leads_created": self.mock_leads_created,
            "mock_leads_found": self.mock_leads_found,
            "tasks_deferred": self.tasks_deferred,
            "integrations_stopped": self.integrations_stopped,
        }

    def contacts_metadata(self) -> dict[str, Any]:
        return {
            "contacts_upserted": self.contacts_upserted,
            "contacts_tombstoned": self.contacts_tombstoned,
            "contacts_not_found": self.contacts_not_found,
            "contacts_failed": self.contacts_failed,
        }


@dataclass(frozen=True)
class _Item:
    """One claimed RDESK task with its inbox row and validated update."""

    task: Task
    inbox_id: int
    source: str
    update: Update
    payload: Any = None


def _rdesk_cost(tasks: Sequence[Task]) -> int:
    return CALLS_PER_UPDATE * len(tasks)


def _contacts_cost(tasks: Sequence[Task]) -> int:
    ids: dict[int, set[str]] = defaultdict(set)
    for task in tasks:
        ids[task.integration_id].update(task.external_ids)
    return sum(math.ceil(len(v) / CONTACTS_PER_CALL) for v in ids.values() if v)


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def merged_lead(
    lead: Mapping[str, Any], body: Mapping[str, Any], answer: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The lead as it is after the PATCH (amoCRM answers only id and updated_at)."""
    raw = dict(lead)
    raw["price"] = body["price"]
    by_id: dict[Any, dict[str, Any]] = {}
    for item in lead.get("custom_fields_values") or ():
        if isinstance(item, dict):
            by_id[item.get("field_id")] = dict(item)
    for item in body["custom_fields_values"]:
        if item["values"] is None:
            by_id.pop(item["field_id"], None)
        else:
            by_id[item["field_id"]] = by_id.get(item["field_id"], {}) | item
    raw["custom_fields_values"] = list(by_id.values()) or None
    if answer and answer.get("updated_at"):
        raw["updated_at"] = answer["updated_at"]
    return raw


def _custom_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the update wrote, by field id (None: cleared)."""
    return {
        str(item["field_id"]): (item["values"][0]["value"] if item["values"] else None)
        for item in body["custom_fields_values"]
    }


class AmocrmSync:
    """One run's drain of amoCRM tasks (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        client_for: Callable[[int], Any],
        active_integrations: Callable[[], Mapping[int, Integration]],
        opts: RunOptions,
        log: Callable[[str], None] = lambda _msg: None,
    ) -> None:
        self.engine = engine
        self.client_for = client_for
        self.active_integrations = active_integrations
        self.opts = opts
        self.log = log
        self.stats = RunStats()
        self._held: dict[int, Task] = {}
        self.stopped: dict[int, str] = {}  # integration → why amoCRM refuses it

    # -- the loop -----------------------------------------------------------------------

    @property
    def max_cost(self) -> int:
        seconds = self.opts.lease.total_seconds() * self.opts.claim_share_of_lease
        return max(1, int(seconds * self.opts.calls_per_second))

    def run(self) -> RunStats:
        """Claim and process until no work is left (today's live run lingers)."""
        started = time.monotonic()
        heartbeat = Heartbeat(self.engine, QUEUE, self.opts.run_id, self.opts.lease, PROVIDER)
        heartbeat.start()
        try:
            self._loop(started)
            if self.stopped:
                raise RunStopped(
                    "; ".join(f"amoCRM integration {k}: {v}" for k, v in self.stopped.items())
                )
        except BaseException as exc:
            self._hand_back(exc)
            raise
        finally:
            heartbeat.stop()
            self.stats.seconds = round(time.monotonic() - started, 3)
        return self.stats

    def _loop(self, started: float) -> None:
        linger = self.opts.mode == "live" and self.opts.day == now_utc().date()
        idle_since: float | None = None
        while True:
            if linger:
                with self.engine.begin() as conn:
                    take_webhooks(conn)
            if self._round():
                idle_since = None
            else:
                now = time.monotonic()
                idle_since = idle_since or now
                if not linger or now - idle_since >= self.opts.idle_seconds:
                    break
                time.sleep(self.opts.poll_seconds)
            if time.monotonic() - started >= self.opts.max_seconds:
                self.log("time budget reached; remaining tasks stay pending for the next run")
                break

    def _round(self) -> bool:
        active = {k: v for k, v in self.active_integrations().items() if k not in self.stopped}
        if self.opts.integration_ids is not None:
            active = {k: v for k, v in active.items() if k in self.opts.integration_ids}
        if not active:
            return False
        claimed = self._claim(RDESK, active, _rdesk_cost)
        if claimed:
            self._process_rdesk(claimed, active)
        contact_tasks = self._claim(CONTACTS, active, _contacts_cost)
        if contact_tasks:
            self._process_contacts(contact_tasks)
        return bool(claimed or contact_tasks)

    def _hand_back(self, exc: BaseException) -> None:
        """Stopping abnormally: a block or a cancel hands tasks back untouched; anything
        else counts a crash (a task that breaks every run ends in 3)."""
        held = list(self._held)
        if not held:
            return
        try:
            with self.engine.begin() as conn:
                if isinstance(exc, (RunStopped, *self.opts.interruptions)):
                    QUEUE.release(conn, held, self.opts.run_id)
                else:
                    c = amocrm_tasks.c
                    QUEUE.release_crashed(
                        conn,
                        c.id.in_(held) & (c.run_id == self.opts.run_id),
                        f"run {self.opts.run_id} failed: {type(exc).__name__}",
                    )
            self._held.clear()
        except Exception as release_error:  # the database may be what failed
            self.log(f"could not hand back {len(held)} tasks: {type(release_error).__name__}")

    # -- claiming -----------------------------------------------------------------------

    def _claim(
        self,
        handler: str,
        active: Mapping[int, Integration],
        cost: Callable[[Sequence[Task]], int],
    ) -> list[Task]:
        claim = Claim(
            run_id=self.opts.run_id,
            handler=handler,
            mode=self.opts.mode,
            day=self.opts.day,
            integration_ids=frozenset(active),
            lease=self.opts.lease,
            max_cost=self.max_cost,
            cost=cost,
        )
        with self.engine.begin() as conn:
            QUEUE.expire_leases(conn)
            if handler == RDESK and conn.dialect.name == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK_KEY)))
            tasks = QUEUE.claim(conn, claim)
            if handler == RDESK and tasks:
                tasks = self._defer_busy(conn, tasks)
        if tasks:
            self.stats.claims += 1
        self._held.update((t.id, t) for t in tasks)
        return tasks

    def _defer_busy(self, conn: Connection, tasks: list[Task]) -> list[Task]:
        """Hand back (for ``defer_seconds``) tasks whose lead another run works on."""
        c = amocrm_tasks.c
        keys = {dump_external_ids(t.external_ids) for t in tasks if t.external_ids}
        if not keys:
            return tasks
        rows = conn.execute(
            select(c.integration_id, c.external_ids).where(
                c.handler == RDESK,
                c.status == TASK_IN_PROGRESS,
                c.run_id != self.opts.run_id,
                c.external_ids.in_(sorted(keys)),
            )
        )
        busy = {(r.integration_id, r.external_ids) for r in rows}
        deferred = [
            t for t in tasks if (t.integration_id, dump_external_ids(t.external_ids)) in busy
        ]
        if not deferred:
            return tasks
        conn.execute(
            update(amocrm_tasks)
            .where(c.id.in_([t.id for t in deferred]), c.run_id == self.opts.run_id)
            .values(
                status=TASK_NEW,
                claimed_at=None,
                lease_expires_at=None,
                attempts=c.attempts - 1,
                next_attempt_at=now_utc() + timedelta(seconds=self.opts.defer_seconds),
            )
        )
        self.stats.tasks_deferred += len(deferred)
        skip = {t.id for t in deferred}
        return [t for t in tasks if t.id not in skip]

    # -- finishing ----------------------------------------------------------------------

    def _finish(self, conn: Connection, results: list[Finished]) -> None:
        if not results:
            return
        counts = QUEUE.finish(conn, self.opts.run_id, results, self.opts.mode)
        for result in results:
            self._held.pop(result.task.id, None)
            if result.error is None:
                self.stats.tasks_done += 1
            elif result.task.id in counts.retrying_ids:
                self.stats.tasks_retrying += 1
            else:
                self.stats.tasks_failed += 1

    def _finish_now(self, results: list[Finished]) -> None:
        with self.engine.begin() as conn:
            self._finish(conn, results)

    def _stop(self, integration_id: int, exc: Exception) -> None:
        """amoCRM refuses this integration: hand its tasks back untouched, skip it."""
        self._error(f"integration {integration_id}: {exc}")
        self.stopped[integration_id] = str(exc)
        self.stats.integrations_stopped = len(self.stopped)
        mine = [t.id for t in self._held.values() if t.integration_id == integration_id]
        with self.engine.begin() as conn:
            QUEUE.release(conn, mine, self.opts.run_id)
        for task_id in mine:
            self._held.pop(task_id, None)

    def _error(self, message: str) -> None:
        self.log(message)
        self.stats.errors.append(message)

    # -- RDESK --------------------------------------------------------------------------

    def _process_rdesk(self, tasks: list[Task], active: Mapping[int, Integration]) -> None:
        t, i = amocrm_tasks.c, amocrm_inbox.c
        with self.engine.connect() as conn:
            rows = {
                r.task_id: r
                for r in conn.execute(
                    select(t.id.label("task_id"), i.id, i.source, i.payload)
                    .select_from(amocrm_tasks.join(amocrm_inbox, i.id == t.webhook_id))
                    .where(t.id.in_([task.id for task in tasks]))
                )
            }
        ended: list[Finished] = []
        groups: dict[tuple[int, int], list[_Item]] = defaultdict(list)
        for task in sorted(tasks, key=lambda x: rows[x.id].id if x.id in rows else x.id):
            row = rows.get(task.id)
            if row is None:
                ended.append(Finished(task, error="the task's inbox row is gone", final=True))
                continue
            try:
                parsed = parse_update(row.source, row.payload)
            except InvalidUpdate as exc:
                self.stats.leads_invalid += 1
                ended.append(
                    Finished(task, error=f"invalid RDESK {row.source} element: {exc}", final=True)
                )
                continue
            groups[(task.integration_id, parsed.lead_id)].append(
                _Item(task, row.id, row.source, parsed, row.payload)
            )
        self._finish_now(ended)
        for (integration_id, lead_id), items in groups.items():
            if integration_id not in self.stopped:  # its tasks went back untouched
                self._apply_lead(active[integration_id], lead_id, items)

    def _apply_lead(self, integration: Integration, lead_id: int, items: list[_Item]) -> None:
        """Send the newest of one lead's updates; the older ones end skipped."""
        newest, older = items[-1], items[:-1]
        try:
            client = self.client_for(integration.id)
            settings = settings_of(integration.settings)
            amo_id = self._resolve(client, integration, settings, lead_id, newest.source)
            last = self._last_update(integration.id, amo_id)
            if last is not None and newest.inbox_id <= last:
                # Applied already (a run that died before finishing), or older.
                done = f"lead {amo_id} already has this update"
                ends = [
                    Finished(x.task, outcome=done if x.inbox_id == last else SKIPPED_OLDER)
                    for x in items
                ]
                self.stats.leads_skipped_older += sum(1 for e in ends if e.outcome != done)
                self._finish_now(ends)
                return
            if last is not None and self._delivered_again(last, newest):
                # RDESK (or a retrying proxy) sent the applied update again: no calls.
                again = f"lead {amo_id} already has this update (delivered again)"
                self.stats.leads_repeated += len(items)
                self._finish_now([Finished(x.task, outcome=again) for x in items])
                return
            lead = client.get_lead(amo_id)
            if lead is None:
                self._lead_not_found(integration, settings.mock_lead_id, lead_id, amo_id, items)
                return
            body = lead_body(newest.update, settings)
            answer = client.patch_lead(amo_id, body)
            with self.engine.begin() as conn:
                self._store_lead(conn, integration.id, amo_id, lead_id, newest, lead, body, answer)
                self._finish(
                    conn,
                    [Finished(newest.task, outcome=f"lead {amo_id} updated")]
                    + [Finished(x.task, outcome=SKIPPED_OLDER) for x in older],
                )
            self.stats.leads_updated += 1
            self.stats.leads_skipped_older += len(older)
        except (AmocrmBlockedError, ProviderAuthError) as exc:
            self._stop(integration.id, exc)
        except Exception as exc:  # provider errors (429, 5xx, 4xx) and store failures retry
            message = f"lead {lead_id}: {_first_line(exc)}"
            self._error(f"integration {integration.id}: {message}")
            self.stats.leads_failed += len(items)
            retryable = isinstance(exc, ProviderError) or not isinstance(exc, ValueError)
            self._finish_now([Finished(x.task, error=message, final=not retryable) for x in items])

    def _lead_not_found(
        self,
        integration: Integration,
        mock: bool,
        lead_id: int,
        amo_id: int,
        items: list[_Item],
    ) -> None:
        message = f"lead not found: amoCRM has no lead {amo_id}"
        with self.engine.begin() as conn:
            if mock:
                # A mapped lead that was deleted: the next update finds or creates anew.
                conn.execute(
                    delete(amocrm_mock_leads).where(
                        amocrm_mock_leads.c.integration_id == integration.id,
                        amocrm_mock_leads.c.rdesk_lead_id == str(lead_id),
                    )
                )
                message += f" (mock lead for RDESK lead {lead_id}; the mapping is dropped)"
            self._finish(conn, [Finished(x.task, error=message, final=True) for x in items])
        self.stats.leads_not_found += len(items)

    def _resolve(
        self, client: Any, integration: Integration, settings: Any, lead_id: int, source: str
    ) -> int:
        """The amoCRM lead an RDESK lead id names (mock_lead_id mode: `ID_<lead_id>`)."""
        if not settings.mock_lead_id:
            return lead_id
        m = amocrm_mock_leads.c
        where = (m.integration_id == integration.id, m.rdesk_lead_id == str(lead_id))
        with self.engine.connect() as conn:
            known = conn.execute(select(m.lead_id).where(*where)).scalar()
        if known is not None:
            return int(known)
        name = f"ID_{lead_id}"
        found = sorted(
            int(lead["id"])
            for lead in client.search_leads(name)
            if str(lead.get("name") or "").strip() == name and lead.get("id") is not None
        )
        if found:
            amo_id = found[0]
            self.stats.mock_leads_found += 1
        else:
            pipeline = getattr(settings.mock, source)
            amo_id = client.create_lead(name, pipeline.pipeline_id, pipeline.status_id)
            self.stats.mock_leads_created += 1
        with self.engine.begin() as conn:
            conn.execute(
                dialect_insert(conn)(amocrm_mock_leads)
                .values(
                    integration_id=integration.id,
                    rdesk_lead_id=str(lead_id),
                    lead_id=amo_id,
                    created_at=now_utc(),
                )
                .on_conflict_do_nothing(index_elements=["integration_id", "rdesk_lead_id"])
            )
            stored = conn.execute(select(m.lead_id).where(*where)).scalar()
        return int(stored if stored is not None else amo_id)

    def _delivered_again(self, last: int, newest: _Item) -> bool:
        """Whether ``newest`` repeats the update applied last (same endpoint, same body)."""
        i = amocrm_inbox.c
        with self.engine.connect() as conn:
            applied = conn.execute(select(i.source, i.payload).where(i.id == last)).first()
        return applied is not None and (applied.source, applied.payload) == (
            newest.source,
            newest.payload,
        )

    def _last_update(self, integration_id: int, amo_id: int) -> int | None:
        c = leads.c
        with self.engine.connect() as conn:
            return conn.execute(
                select(c.last_update_id).where(
                    c.integration_id == integration_id, c.external_id == str(amo_id)
                )
            ).scalar()

    def _store_lead(
        self,
        conn: Connection,
        integration_id: int,
        amo_id: int,
        lead_id: int,
        item: _Item,
        lead: Mapping[str, Any],
        body: Mapping[str, Any],
        answer: Mapping[str, Any] | None,
    ) -> None:
        raw = merged_lead(lead, body, answer)
        values = {
            "integration_id": integration_id,
            "external_id": str(amo_id),
            "name": (str(raw.get("name")) if raw.get("name") is not None else None),
            "price": body["price"],
            "pipeline_id": raw.get("pipeline_id"),
            "status_id": raw.get("status_id"),
            "rdesk_lead_id": str(lead_id),
            "last_update_id": item.inbox_id,
            "custom_fields": _custom_fields(body),
            "raw": raw,
            "synced_at": now_utc(),
            "source_task_id": item.task.id,
            "deleted_at": None,
        }
        stmt = dialect_insert(conn)(leads).values(**values)
        keep = ("integration_id", "external_id")
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=list(keep),
                set_={k: stmt.excluded[k] for k in values if k not in keep},
                # Never let an older update's row replace a newer one's.
                where=or_(
                    leads.c.last_update_id.is_(None),
                    leads.c.last_update_id < stmt.excluded.last_update_id,
                ),
            )
        )

    # -- contacts -----------------------------------------------------------------------

    def _process_contacts(self, tasks: list[Task]) -> None:
        by_integration: dict[int, list[Task]] = defaultdict(list)
        ended: list[Finished] = []
        for task in sorted(tasks, key=lambda x: x.id):
            if (
                not task.external_ids
                or not task.external_ids[0].isascii()
                or not task.external_ids[0].isdigit()
            ):
                ended.append(Finished(task, error="no valid contact id", final=True))
                continue
            by_integration[task.integration_id].append(task)
        self._finish_now(ended)
        for integration_id, items in by_integration.items():
            if integration_id not in self.stopped:
                self._sync_contacts(integration_id, items)

    def _sync_contacts(self, integration_id: int, tasks: list[Task]) -> None:
        """The newest task of a contact decides: a delete tombstones, the rest fetch."""
        by_id: dict[str, list[Task]] = defaultdict(list)
        for task in tasks:
            by_id[task.external_ids[0]].append(task)
        deleted = sorted(i for i, ts in by_id.items() if ts[-1].command == DELETE)
        wanted = sorted((i for i in by_id if i not in set(deleted)), key=int)
        try:
            records = self.client_for(integration_id).contacts_by_ids(wanted) if wanted else []
        except (AmocrmBlockedError, ProviderAuthError) as exc:
            self._stop(integration_id, exc)
            return
        except Exception as exc:  # retried with the queue's backoff; deletes still go on
            message = f"contacts: {_first_line(exc)}"
            self._error(f"integration {integration_id}: {message}")
            self.stats.contacts_failed += len(wanted)
            self._finish_now([Finished(t, error=message) for i in wanted for t in by_id[i]])
            wanted, records = [], []
        found = {}
        for record in records:
            ext = str(record.get("id"))
            if ext in by_id and ext not in deleted:
                found[ext] = record  # only what was asked for; the last copy wins
        results: list[Finished] = []
        with self.engine.begin() as conn:
            for ext in deleted:
                self._tombstone(conn, integration_id, ext, by_id[ext][-1].id)
                results += [Finished(t, outcome="tombstoned") for t in by_id[ext]]
            for ext in wanted:
                record = found.get(ext)
                if record is None:
                    results += [Finished(t, outcome="not found", ids_missing=1) for t in by_id[ext]]
                    continue
                self._upsert_contact(conn, integration_id, record, by_id[ext][-1].id)
                results += [Finished(t, outcome="upserted") for t in by_id[ext]]
            self._finish(conn, results)
        self.stats.contacts_tombstoned += len(deleted)
        self.stats.contacts_upserted += len(found)
        self.stats.contacts_not_found += len(wanted) - len(found)

    @staticmethod
    def _upsert_contact(
        conn: Connection, integration_id: int, record: dict[str, Any], task_id: int
    ) -> None:
        values = map_contact(record) | {
            "integration_id": integration_id,
            "synced_at": now_utc(),
            "source_task_id": task_id,
        }
        stmt = dialect_insert(conn)(contacts).values(**values)
        keep = ("integration_id", "role", "external_id")
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=list(keep),
                set_={k: stmt.excluded[k] for k in values if k not in keep},
            )
        )

    @staticmethod
    def _tombstone(conn: Connection, integration_id: int, external_id: str, task_id: int) -> None:
        now = now_utc()
        stmt = dialect_insert(conn)(contacts).values(
            integration_id=integration_id,
            external_id=external_id,
            role=ROLE,
            source_entity=SOURCE_ENTITY,
            custom_fields={},
            raw={},
            deleted_at=now,
            synced_at=now,
            source_task_id=task_id,
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["integration_id", "role", "external_id"],
                set_={"deleted_at": now, "synced_at": now, "source_task_id": task_id},
            )
        )


def run_amocrm_sync(
    engine: Engine,
    resource: Any,
    opts: RunOptions,
    *,
    stats: Any = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> RunStats:
    """One run over the active amoCRM integrations outside Dagster (CLI, tests,
    benchmarks): clients from ``resource.client_for``, closed at the end."""
    known: dict[int, Integration] = {}
    clients: dict[int, Any] = {}

    def active() -> dict[int, Integration]:
        with engine.connect() as conn:
            found = list_integrations(conn, provider=PROVIDER, active_only=True)
        known.update((item.id, item) for item in found)
        return {item.id: item for item in found}

    def client_for(integration_id: int) -> Any:
        if integration_id not in clients:
            clients[integration_id] = resource.client_for(
                known[integration_id], run_id=opts.run_id, stats=stats
            )
        return clients[integration_id]

    try:
        return AmocrmSync(engine, client_for, active, opts, log=log).run()
    finally:
        for client in clients.values():
            client.close()
