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

from crm_schema import allio_tasks as tasks_q
from crm_schema.entities import ENTITY_TABLES, live_count, tombstone
from crm_schema.integrations import Integration
from orchestration.allio.sync import AllioFetcher


@dataclass
class DeleteControlOptions:
    """One sweep's settings."""

    run_id: str
    dry_run: bool = False
    max_delete_share: float = 0.2
    lease: timedelta = timedelta(minutes=10)


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
        return sum(
            live_count(conn, ENTITY_TABLES[e], integration_id) for e in tasks_q.SYNC_ENTITIES
        )


def sweep_integration(
    engine: Engine, integration: Integration, client: AllioFetcher, opts: DeleteControlOptions
) -> IntegrationSweep:
    """Claim, confirm, check the cap and tombstone for one integration."""
    result = IntegrationSweep(integration.id)
    with engine.begin() as conn:
        claimed = {
            entity: tasks_q.claim_tasks(
                conn,
                entity=entity,
                day=None,
                run_id=opts.run_id,
                lease=opts.lease,
                integration_ids=[integration.id],
                delete_tasks=True,
            )
            for entity in tasks_q.SYNC_ENTITIES
        }
    task_ids = [t.id for tasks in claimed.values() for t in tasks]
    result.tasks = len(task_ids)
    if not task_ids:
        return result
    absent: dict[str, set[str]] = {}
    try:
        for entity, tasks in claimed.items():
            ids = {ext for t in tasks for ext in t.external_ids}
            result.requested += len(ids)
            if not ids:
                continue
            fetch = client.reserve_list if entity == "reserve" else client.dealcard_list
            present = {str(r.get("id")) for r in fetch(sorted(int(i) for i in ids))}
            result.still_present += len(ids & present)
            absent[entity] = _live_matches(engine, entity, integration.id, ids - present)
    except Exception as exc:  # the provider could not confirm: delete nothing
        result.error = f"{type(exc).__name__}: {exc}"
        with engine.begin() as conn:
            tasks_q.finish_tasks(conn, task_ids, opts.run_id, result.error)
        return result
    result.to_delete = sum(len(v) for v in absent.values())
    result.live_entities = _live_total(engine, integration.id)
    if result.share > opts.max_delete_share:
        result.blocked = True
    if result.blocked or opts.dry_run:
        result.dry_run_ids = {e: sorted(v, key=int) for e, v in absent.items() if v}
        with engine.begin() as conn:
            tasks_q.release_tasks(conn, task_ids, opts.run_id)
        return result
    now = tasks_q.now_utc()
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
        tasks_q.finish_tasks(conn, task_ids, opts.run_id)
    return result


def sweep(
    engine: Engine,
    integrations: list[Integration],
    client_for: Callable[[Integration], AllioFetcher],
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
