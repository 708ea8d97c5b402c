"""``api_call_log`` writer: one short INSERT per attempt; a failing log never fails a call.

Rows are kept for ``CRM_SYNC_CALL_LOG_RETENTION_DAYS`` (the maintenance job calls
:func:`prune_call_log` daily).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import Engine, delete, insert, select, update

from crm_schema.tables import api_call_log

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallRecord:
    """One attempt, already redacted (masked URL, truncated bodies, no headers)."""

    provider: str
    method: str
    url: str
    attempt: int
    integration_id: int | None = None
    status_code: int | None = None
    duration_ms: float | None = None
    request_body: str | None = None
    response_body: str | None = None
    error: str | None = None
    run_id: str | None = None


class CallLog:
    """Writes :class:`CallRecord` rows on short-lived connections from a shared engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._postgres = engine.dialect.name == "postgresql"

    def write(self, record: CallRecord) -> int | None:
        """Insert one row (its id); database errors are logged (without the row) and swallowed."""
        try:
            with self.engine.begin() as conn:
                if self._postgres:
                    # Diagnostic rows: never make a worker wait for a WAL flush.
                    conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                return conn.execute(
                    insert(api_call_log).values(**asdict(record)).returning(api_call_log.c.id)
                ).scalar_one()
        except Exception as exc:  # the provider call matters more than its log row
            logger.warning("api_call_log write failed: %s", type(exc).__name__)
            return None

    def annotate(self, row_id: int, error: str) -> None:
        """Record why an answer that came back fine on the wire was still a failure."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    update(api_call_log).where(api_call_log.c.id == row_id).values(error=error)
                )
        except Exception as exc:
            logger.warning("api_call_log update failed: %s", type(exc).__name__)


@dataclass(frozen=True)
class PruneResult:
    """What one prune deleted."""

    deleted: int
    batches: int


def prune_call_log(
    engine: Engine, before: datetime, *, batch_size: int = 5000, max_batches: int | None = None
) -> PruneResult:
    """Delete ``api_call_log`` rows created before ``before``, oldest first, in batches.

    Each batch is its own short transaction, so writers of new rows never wait long.
    ``max_batches`` bounds one call (the rest waits for the next).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    t = api_call_log.c
    oldest = select(t.id).where(t.created_at < before).order_by(t.id).limit(batch_size)
    deleted = batches = 0
    while max_batches is None or batches < max_batches:
        with engine.begin() as conn:
            ids = conn.execute(oldest).scalars().all()
            if ids:
                conn.execute(delete(api_call_log).where(t.id.in_(ids)))
        if not ids:
            break
        deleted += len(ids)
        batches += 1
        if len(ids) < batch_size:
            break
    return PruneResult(deleted, batches)
