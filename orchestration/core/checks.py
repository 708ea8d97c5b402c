"""Checks that watch a provider's task queue without a sync run.

Asset checks inside sync runs only run when syncing does; if syncing stops, nothing
turns red. These are evaluated every few minutes by a sensor against the task table
and recorded as check results without a run (no run every five minutes crowding the
Runs page); they fail when work waits too long, a run holds tasks past its lease, too
many tasks fail, or the provider stops returning what we ask for (a wrong token or
base URL can make every call "succeed" with nothing in it).
"""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    DefaultSensorStatus,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    multi_asset_check,
    sensor,
)
from sqlalchemy import Engine

from crm_schema.task_queue import TaskQueue
from orchestration.resources.database import CrmDatabase

FRESH = "tasks_processed_in_time"
LEASE = "no_task_past_lease"
FAILED = "failed_task_share_24h"
MISSING = "ids_found_share_24h"


@dataclass(frozen=True)
class QueueChecksSpec:
    """Which queue to watch, for which assets, with which limits."""

    provider: str
    queue: TaskQueue
    handler: str
    asset_keys: Mapping[str, AssetKey]  # entity → asset
    fresh_minutes: float = 15.0
    failed_share_limit: float = 0.05
    missing_share_limit: float = 0.5
    interval_seconds: int = 300


def _check_specs(spec: QueueChecksSpec) -> list[AssetCheckSpec]:
    specs = []
    for key in spec.asset_keys.values():
        specs += [
            AssetCheckSpec(
                FRESH,
                asset=key,
                description=f"No task waits more than {spec.fresh_minutes:g} minutes untried.",
            ),
            AssetCheckSpec(
                LEASE, asset=key, description="No task is held past its lease (a dead run)."
            ),
            AssetCheckSpec(
                FAILED,
                asset=key,
                description=f"Under {spec.failed_share_limit:.0%} of the tasks finished in "
                "the last 24 h failed.",
            ),
            AssetCheckSpec(
                MISSING,
                asset=key,
                description=f"The provider returned at least {1 - spec.missing_share_limit:.0%}"
                " of the ids synced in the last 24 h (a wrong token or URL returns none).",
            ),
        ]
    return specs


def evaluate(spec: QueueChecksSpec, engine: Engine) -> list[AssetCheckResult]:
    """The checks' results now."""
    results = []
    for entity, key in spec.asset_keys.items():
        with engine.connect() as conn:
            health = spec.queue.health(
                conn, spec.handler, fresh_minutes=spec.fresh_minutes, entity=entity
            )
        results += [
            AssetCheckResult(
                asset_key=key,
                check_name=FRESH,
                passed=health.unprocessed == 0,
                severity=AssetCheckSeverity.ERROR,
                metadata={
                    "tasks_waiting_too_long": health.unprocessed,
                    "oldest_untried_minutes": health.oldest_unprocessed_minutes,
                    "tasks_waiting_retry": health.waiting_retry,
                },
            ),
            AssetCheckResult(
                asset_key=key,
                check_name=LEASE,
                passed=health.past_lease == 0,
                severity=AssetCheckSeverity.ERROR,
                metadata={"tasks_past_lease": health.past_lease},
            ),
            AssetCheckResult(
                asset_key=key,
                check_name=FAILED,
                passed=health.failed_share < spec.failed_share_limit,
                severity=AssetCheckSeverity.WARN,
                metadata={
                    "failed_tasks": health.failed,
                    "finished_tasks": health.finished,
                    "failed_share": round(health.failed_share, 4),
                },
            ),
            AssetCheckResult(
                asset_key=key,
                check_name=MISSING,
                passed=health.missing_share <= spec.missing_share_limit,
                severity=AssetCheckSeverity.ERROR,
                metadata={
                    "ids_requested": health.ids_requested,
                    "ids_not_returned": health.ids_missing,
                    "missing_share": round(health.missing_share, 4),
                },
            ),
        ]
    return results


def _evaluation(result: AssetCheckResult) -> AssetCheckEvaluation:
    assert result.asset_key is not None and result.check_name is not None
    return AssetCheckEvaluation(
        asset_key=result.asset_key,
        check_name=result.check_name,
        passed=result.passed,
        metadata=result.metadata,
        severity=result.severity,
        description=result.description,
    )


def build_queue_checks(spec: QueueChecksSpec) -> tuple[AssetChecksDefinition, SensorDefinition]:
    """The checks (ops may also execute them from the UI) and the sensor that evaluates
    them every few minutes and records the results without a run."""

    @multi_asset_check(
        name=f"{spec.provider}_queue_checks",
        specs=_check_specs(spec),
        description=f"{spec.provider} task queue health (also evaluated every "
        f"{spec.interval_seconds // 60} minutes by {spec.provider}_queue_health_sensor).",
    )
    def _checks(crm_db: CrmDatabase) -> Iterator[AssetCheckResult]:
        yield from evaluate(spec, crm_db.engine)

    @sensor(
        name=f"{spec.provider}_queue_health_sensor",
        minimum_interval_seconds=spec.interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Evaluates the {spec.provider} task-queue checks every "
        f"{spec.interval_seconds // 60} minutes, whether or not sync runs happen.",
    )
    def _sensor(context: SensorEvaluationContext, crm_db: CrmDatabase) -> SkipReason:
        results = evaluate(spec, crm_db.engine)
        for result in results:
            context.instance.report_runless_asset_event(_evaluation(result))
        failed = [f"{r.asset_key.to_user_string()}:{r.check_name}" for r in results if not r.passed]  # type: ignore[union-attr]
        return SkipReason(f"checks evaluated; failing: {', '.join(failed) or 'none'}")

    return _checks, _sensor
