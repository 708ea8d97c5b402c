"""Delete control (seed 000): apply fresh `*_DEL` tasks as tombstones, with guard rails.

Guard rails: ids are confirmed absent through the list endpoint first (a provider
error deletes nothing and leaves the tasks to the next sweep, for a bounded number of
attempts); a dry run changes nothing; a sweep that would delete more than an
integration's cap — max(floor, share × live entities) — stops loudly and leaves its
tasks pending; and tasks older than the integration's max age (not fresh: e.g. queued
while delete control was off) are held and reported until ops confirm them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, select

from crm_schema.entities import live_count, tombstone
from crm_schema.integrations import Integration
from crm_schema.task_queue import Claim, Finished, Task, now_utc
from crm_sync.providers.allio import AllioSettings
from orchestration.allio.client import AllioClient
from orchestration.allio.sync import ENTITIES
from orchestration.allio.tasks import DELETE, ENTITY_TABLES, QUEUE


@dataclass
class DeleteControlOptions:
    """One sweep's settings; None limits mean each integration's own setting."""

    run_id: str
    dry_run: bool = False
    max_delete_share: float | None = None
    delete_floor: int | None = None
    confirm_old_deletes: bool = False
    lease: timedelta = timedelta(minutes=2)


KEPT = "kept: still present"


@dataclass
class IntegrationSweep:
    """What the sweep found and did for one integration."""

    integration_id: int
    max_share: float = 0.2
    floor: int = 10
    tasks: int = 0
    requested: int = 0
    still_present: int = 0
    kept_tasks: int = 0
    to_delete: int = 0
    live_entities: int = 0
    tombstoned: int = 0
    blocked: bool = False
    error: str | None = None
    old_held: int = 0
    oldest_held_days: float = 0.0
    dry_run_ids: dict[str, list[str]] = field(default_factory=dict)

    @property
    def share(self) -> float:
        if self.live_entities == 0:
            return 0.0 if self.to_delete == 0 else 1.0
        return self.to_delete / self.live_entities

    @property
    def over_cap(self) -> bool:
        """More than the floor and more than the share of live entities."""
        return self.to_delete > self.floor and self.share > self.max_share


def _live_matches(engine: Engine, entity: str, integration_id: int, ids: set[str]) -> set[str]:
    table = ENTITY_TABLES[entity]
    if not ids:
        return set()
    with engine.connect() as conn:
        rows = conn.execute(
            select(table.c.external_id).where(
                table.c.integration_id == integration_id,
                table.c.external_id.in_(sorted(ids)),
                table.c.deleted_at.is_(None),
            )
        )
        return {r.external_id for r in rows}


def _live_total(engine: Engine, integration_id: int) -> int:
    with engine.connect() as conn:
        return sum(live_count(conn, ENTITY_TABLES[e], integration_id) for e in ENTITIES)


def _claim_all(engine: Engine, integration: Integration, opts: DeleteControlOptions) -> list[Task]:
    claim = Claim(
        run_id=opts.run_id,
        handler=DELETE,
        day=None,
        integration_ids=frozenset({integration.id}),
        lease=opts.lease,
    )
    tasks: list[Task] = []
    while True:
        with engine.begin() as conn:
            chunk = QUEUE.claim(conn, claim)
        if not chunk:
            return tasks
        tasks += chunk


def _split_old(
    tasks: list[Task], max_age: timedelta, now: datetime
) -> tuple[list[Task], list[Task]]:
    """(fresh, old): old tasks were created more than ``max_age`` ago."""
    old = [t for t in tasks if t.created_at is not None and now - t.created_at > max_age]
    old_ids = {t.id for t in old}
    return [t for t in tasks if t.id not in old_ids], old


def sweep_integration(
    engine: Engine, integration: Integration, client: AllioClient, opts: DeleteControlOptions
) -> IntegrationSweep:
    """Claim, confirm, check the cap and tombstone for one integration."""
    settings = AllioSettings.model_validate(integration.settings)
    result = IntegrationSweep(
        integration.id,
        max_share=settings.delete_max_share
        if opts.max_delete_share is None
        else opts.max_delete_share,
        floor=settings.delete_floor if opts.delete_floor is None else opts.delete_floor,
    )
    claimed_tasks = _claim_all(engine, integration, opts)
    now = now_utc()
    if not opts.confirm_old_deletes:
        max_age = timedelta(days=settings.delete_max_age_days)
        claimed_tasks, old = _split_old(claimed_tasks, max_age, now)
        if old:
            result.old_held = len(old)
            result.oldest_held_days = round(
                max((now - t.created_at).total_seconds() for t in old if t.created_at) / 86400, 1
            )
            with engine.begin() as conn:
                QUEUE.release(conn, [t.id for t in old], opts.run_id)
    claimed = {e: [t for t in claimed_tasks if t.entity == e] for e in ENTITIES}
    task_ids = [t.id for t in claimed_tasks]
    result.tasks = len(task_ids)
    if not task_ids:
        return result
    absent: dict[str, set[str]] = {}
    present: dict[str, set[str]] = {}
    try:
        for entity, tasks in claimed.items():
            ids = {ext for t in tasks for ext in t.external_ids}
            result.requested += len(ids)
            if not ids:
                continue
            records = client.list_records(entity, sorted(int(i) for i in ids))  # type: ignore[arg-type]
            present[entity] = ids & {str(r.get("id")) for r in records}
            result.still_present += len(present[entity])
            absent[entity] = _live_matches(engine, entity, integration.id, ids - present[entity])
    except Exception as exc:  # the provider could not confirm: delete nothing, retry later
        result.error = f"{type(exc).__name__}: {exc}"
        with engine.begin() as conn:
            QUEUE.finish(
                conn, opts.run_id, [Finished(t, error=result.error) for t in claimed_tasks]
            )
        return result
    result.to_delete = sum(len(v) for v in absent.values())
    result.live_entities = _live_total(engine, integration.id)
    result.blocked = result.over_cap
    if result.blocked or opts.dry_run:
        result.dry_run_ids = {e: sorted(v, key=int) for e, v in absent.items() if v}
        with engine.begin() as conn:
            QUEUE.release(conn, task_ids, opts.run_id)
        return result
    outcomes = [(t, _outcome(t, present.get(t.entity, set()))) for t in claimed_tasks]
    result.kept_tasks = sum(1 for _, outcome in outcomes if outcome == KEPT)
    with engine.begin() as conn:
        for entity, ids in absent.items():
            # Lineage: each tombstone names the (first) task that asked for that id.
            by_owner: dict[int, list[str]] = {}
            for ext in ids:
                owner = min(t.id for t in claimed[entity] if ext in t.external_ids)
                by_owner.setdefault(owner, []).append(ext)
            for owner, owned in sorted(by_owner.items()):
                result.tombstoned += tombstone(
                    conn, ENTITY_TABLES[entity], integration.id, owned, now, owner
                )
        QUEUE.finish(conn, opts.run_id, [Finished(t, outcome=o) for t, o in outcomes])
    return result


def _outcome(task: Task, present: set[str]) -> str:
    """What the sweep did with one task's ids."""
    kept = sum(1 for ext in task.external_ids if ext in present)
    if kept == len(task.external_ids):
        return KEPT
    deleted = len(task.external_ids) - kept
    return f"deleted {deleted}" + (f", kept {kept}: still present" if kept else "")


def sweep(
    engine: Engine,
    integrations: list[Integration],
    client_for: Callable[[Integration], AllioClient],
    opts: DeleteControlOptions,
) -> list[IntegrationSweep]:
    """Sweep every integration that enabled delete control."""
    return [
        sweep_integration(engine, integration, client_for(integration), opts)
        for integration in integrations
        if integration.settings.get("delete_control")
    ]


def blocked_message(results: list[IntegrationSweep]) -> str | None:
    """Why the sweep must fail loudly, or None when no integration hit its cap."""
    blocked = [r for r in results if r.blocked]
    if not blocked:
        return None
    detail = "; ".join(
        f"integration {r.integration_id}: {r.to_delete} of {r.live_entities} live entities "
        f"({r.share:.0%}; cap: the larger of {r.floor} and {r.max_share:.0%})"
        for r in blocked
    )
    return (
        f"delete control stopped: more would be deleted than allowed ({detail}); "
        "nothing was deleted for these integrations and their tasks stay pending"
    )


def held_message(results: list[IntegrationSweep]) -> str | None:
    """Which integrations have old DEL tasks waiting for ops to confirm them."""
    held = [r for r in results if r.old_held]
    if not held:
        return None
    detail = "; ".join(
        f"integration {r.integration_id}: {r.old_held} task(s), oldest {r.oldest_held_days} days"
        for r in held
    )
    return (
        f"delete control held DEL tasks older than the integration's max age ({detail}); "
        "they stay pending: run with confirm_old_deletes: true to apply them"
    )


def errors_message(results: list[IntegrationSweep]) -> str | None:
    """Why the sweep must fail: an integration ALLIO could not confirm deletions for."""
    failed = [r for r in results if r.error]
    if not failed:
        return None
    detail = "; ".join(f"integration {r.integration_id}: {r.error}" for r in failed)
    return (
        f"delete control could not confirm deletions ({detail}); nothing was deleted for "
        "these integrations and their tasks will be retried"
    )
