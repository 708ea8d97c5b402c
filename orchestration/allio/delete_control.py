"""Delete control (seed 000): apply fresh `*_DEL` tasks as tombstones, with guard rails.

Guard rails: ids are confirmed absent through the list endpoint first, a dry
run changes nothing, and a sweep that would delete more than a share of an
integration's live entities stops loudly and leaves its tasks pending.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Engine, select

from crm_schema.entities import live_count, tombstone
from crm_schema.integrations import Integration
from crm_schema.task_queue import Claim, Finished, Task, now_utc
from orchestration.allio.client import AllioClient
from orchestration.allio.sync import ENTITIES
from orchestration.allio.tasks import DELETE, ENTITY_TABLES, QUEUE


@dataclass
class DeleteControlOptions:
    """One sweep's settings."""

    run_id: str
    dry_run: bool = False
    max_delete_share: float = 0.2
    lease: timedelta = timedelta(minutes=2)


@dataclass
class IntegrationSweep:
    """What the sweep found and did for one integration."""

    integration_id: int
    tasks: int = 0
    requested: int = 0
    still_present: int = 0
    to_delete: int = 0
    live_entities: int = 0
    tombstoned: int = 0
    blocked: bool = False
    error: str | None = None
    dry_run_ids: dict[str, list[str]] = field(default_factory=dict)

    @property
    def share(self) -> float:
        if self.live_entities == 0:
            return 0.0 if self.to_delete == 0 else 1.0
        return self.to_delete / self.live_entities


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


def sweep_integration(
    engine: Engine, integration: Integration, client: AllioClient, opts: DeleteControlOptions
) -> IntegrationSweep:
    """Claim, confirm, check the cap and tombstone for one integration."""
    result = IntegrationSweep(integration.id)
    claimed_tasks = _claim_all(engine, integration, opts)
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
    except Exception as exc:  # the provider could not confirm: delete nothing
        result.error = f"{type(exc).__name__}: {exc}"
        with engine.begin() as conn:
            QUEUE.finish(
                conn, opts.run_id, [Finished(t, error=result.error) for t in claimed_tasks]
            )
        return result
    result.to_delete = sum(len(v) for v in absent.values())
    result.live_entities = _live_total(engine, integration.id)
    if result.share > opts.max_delete_share:
        result.blocked = True
    if result.blocked or opts.dry_run:
        result.dry_run_ids = {e: sorted(v, key=int) for e, v in absent.items() if v}
        with engine.begin() as conn:
            QUEUE.release(conn, task_ids, opts.run_id)
        return result
    now = now_utc()
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
        QUEUE.finish(
            conn,
            opts.run_id,
            [Finished(t, outcome=_outcome(t, present.get(t.entity, set()))) for t in claimed_tasks],
        )
    return result


def _outcome(task: Task, present: set[str]) -> str:
    """What the sweep did with one task's ids."""
    kept = sum(1 for ext in task.external_ids if ext in present)
    if kept == len(task.external_ids):
        return "kept: still present"
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


def blocked_message(results: list[IntegrationSweep], cap: float) -> str | None:
    """Why the sweep must fail loudly, or None when no integration hit the cap."""
    blocked = [r for r in results if r.blocked]
    if not blocked:
        return None
    detail = "; ".join(
        f"integration {r.integration_id}: {r.to_delete} of {r.live_entities} live entities "
        f"({r.share:.0%})"
        for r in blocked
    )
    return (
        f"delete control stopped: more than {cap:.0%} would be deleted ({detail}); "
        "nothing was deleted for these integrations and their tasks stay pending"
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
