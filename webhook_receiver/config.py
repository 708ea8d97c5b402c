"""Receiver configuration: crm_schema settings plus per-app overrides (tests, benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from crm_sync.settings import get_settings


@dataclass(frozen=True)
class ReceiverConfig:
    """Everything the receiver can be tuned with; `create_app(**overrides)` replaces fields."""

    database_url: str
    max_body_bytes: int = 1024 * 1024
    integrations_refresh_seconds: float = 2.0
    # Direct lookups of webhook keys missing from the map, per second (burst = 2x).
    missing_key_lookups_per_second: float = 5.0
    # Group commit: at most this many webhooks per transaction.
    max_batch: int = 512
    # PostgreSQL: writer connections per process (batches in flight at once). One is best
    # measured here: a transaction costs the server ~130 us of CPU besides its rows, so
    # more connections mean more, smaller transactions for the same webhooks.
    pg_writer_connections: int = 1
    # PostgreSQL group commit: while webhooks arrive concurrently, wait up to this long
    # for as many rows as were in flight around the last commit before starting the next
    # batch (fewer, bigger transactions: less database CPU per webhook). 0 turns it off.
    group_commit_delay_ms: float = 1.0
    connect_timeout_seconds: float = 2.0
    statement_timeout_seconds: float = 5.0
    # The longest a request waits for its row's COMMIT before answering 503. A store
    # starts a row's write only if it can finish before then (PostgreSQL: within the
    # statement timeout), so a request that got its 503 never has a row.
    commit_timeout_seconds: float = 8.0
    # SQLite: how long a write waits for the lock before answering 503, counted from when
    # the request's row is queued (never once per batch ahead of it): with the write's own
    # allowance (0.5 s) this bounds the request's wait, within `commit_timeout_seconds`.
    sqlite_busy_timeout_ms: int = 3000
    sqlite_synchronous: str = "FULL"
    retry_after_seconds: int = 2
    # gc.freeze() after startup (see Receiver.lifespan).
    gc_freeze: bool = True

    @classmethod
    def load(cls, database_url: str | None = None, **overrides: Any) -> ReceiverConfig:
        """Defaults from the environment (crm_schema.settings), then `overrides`."""
        settings = get_settings()
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown receiver option(s): {', '.join(sorted(unknown))}")
        base = cls(
            database_url=database_url or settings.database_url,
            max_body_bytes=settings.receiver_max_body_bytes,
            integrations_refresh_seconds=settings.receiver_integrations_refresh_seconds,
        )
        config = replace(base, **overrides)
        if config.sqlite_synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError("sqlite_synchronous must be OFF, NORMAL, FULL or EXTRA")
        if config.max_batch < 1 or config.pg_writer_connections < 1:
            raise ValueError("max_batch and pg_writer_connections must be >= 1")
        if config.commit_timeout_seconds <= 0 or config.statement_timeout_seconds <= 0:
            raise ValueError("commit_timeout_seconds and statement_timeout_seconds must be > 0")
        return config
