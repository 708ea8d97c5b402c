"""Task-health numbers behind the ALLIO asset checks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import Engine

from crm_schema import allio_tasks as tasks_q
from crm_schema.tables import TASK_ERROR

FAILED_SHARE_LIMIT = 0.05


@dataclass(frozen=True)
class TaskHealth:
    """Stuck and failed task counts for one entity and day."""

    stuck: int
    failed: int
    total: int

    @property
    def failed_share(self) -> float:
        return self.failed / self.total if self.total else 0.0


def task_health(engine: Engine, entity: str, day: date, lease: timedelta) -> TaskHealth:
    """Tasks stuck in progress past the lease (any day) and the day's failed share."""
    with engine.connect() as conn:
        stuck = tasks_q.stuck_task_count(conn, lease, entity)
        counts = tasks_q.status_counts(conn, day, entity)
    return TaskHealth(stuck=stuck, failed=counts.get(TASK_ERROR, 0), total=sum(counts.values()))
