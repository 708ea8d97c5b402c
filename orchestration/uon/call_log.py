"""The U-ON call log: an outbox over `uon_calls.log_status`.

A hung-up call of an integration with ``log_calls`` on is `pending`. The sender takes
one row at a time: `pending` → `sending` (committed before the call, by a conditional
update only one sender can win) → `lead/create` → `succeeded` with the U-ON lead id,
or `failed` with the reason. A lead is therefore never created twice for one call id:

- `lead/create` is retried only after a 429 (U-ON refused it, nothing was created);
  a 429 that outlasts the retries puts the row back to `pending` for a later run,
  until ``max_attempts``;
- a timeout, a 5xx or a broken connection may or may not have created the lead: the
  row ends `failed` with the error, and is not sent again;
- a row found `sending` (its sender died between the two commits) ends `failed`
  "outcome unknown", never re-sent.

The lead: `source` = settings.call_log_source, `u_id` when the caller is a known
client, `u_phone`, `manager_id` from the extension (settings.user_extensions read
backwards) and a note with direction, number, extension, duration, status and call id.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from crm_schema.integrations import Integration, list_integrations
from crm_schema.providers.uon import customers, uon_calls
from crm_schema.tables import integrations
from crm_schema.task_queue import now_utc
from crm_sync.providers.uon import UonSettings
from orchestration.resources.errors import ProviderError, ProviderRateLimitedError
from orchestration.uon.client import PROVIDER
from orchestration.uon.sync import (
    LOG_FAILED,
    LOG_PENDING,
    LOG_SENDING,
    LOG_SUCCEEDED,
)

UNKNOWN = "outcome unknown: the run sending it stopped before U-ON answered; not sent again"
ERROR_LIMIT = 2000

__all__ = [
    "UNKNOWN",
    "CallLogOptions",
    "CallLogReport",
    "due_logs",
    "lead_form",
    "send_call_logs",
]


@dataclass(frozen=True)
class CallLogOptions:
    """How one sender run works."""

    run_id: str
    time_budget_seconds: float = 120.0
    # A row `sending` this long belongs to a sender that died (one call takes seconds).
    stale_after_seconds: float = 300.0
    max_attempts: int = 5  # claims of one row that U-ON refused with 429
    batch_size: int = 50


@dataclass
class CallLogReport:
    """What one sender run did (op metadata)."""

    sent: int = 0
    failed: int = 0
    deferred: int = 0  # back to pending after a 429
    unknown: int = 0  # found `sending`: failed, outcome unknown
    errors: list[str] = field(default_factory=list)

    def as_metadata(self) -> dict[str, Any]:
        """Plain numbers for the op's metadata."""
        return {
            "leads_created": self.sent,
            "logs_failed": self.failed,
            "logs_deferred": self.deferred,
            "logs_outcome_unknown": self.unknown,
        }


def _active_ids(conn: Connection) -> list[int]:
    return list(
        conn.execute(
            select(integrations.c.id).where(
                integrations.c.provider == PROVIDER, integrations.c.is_active.is_(True)
            )
        ).scalars()
    )


def due_logs(conn: Connection, stale_after_seconds: float = 300.0) -> tuple[int, int]:
    """(rows waiting for the sender: pending or stale `sending`, the highest row id)."""
    c = uon_calls.c
    stale = now_utc() - timedelta(seconds=stale_after_seconds)
    count, top = conn.execute(
        select(func.count(), func.max(c.id)).where(
            c.integration_id.in_(_active_ids(conn)),
            (c.log_status == LOG_PENDING)
            | ((c.log_status == LOG_SENDING) & (c.updated_at < stale)),
        )
    ).one()
    return int(count or 0), int(top or 0)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "duration unknown"
    total = int(round(seconds))
    return f"{total // 60} min {total % 60} s" if total >= 60 else f"{total} s"


def lead_form(
    row: Mapping[str, Any], settings: UonSettings, customer_id: str | None
) -> dict[str, Any]:
    """The `lead/create` form of one call."""
    by_extension = {ext: manager for manager, ext in settings.user_extensions.items()}
    extension = row.get("extension")
    direction = row.get("direction")
    phone = row.get("phone") or "unknown number"
    if direction == "out":
        head = f"Outgoing call to {phone}"
        head += f" from extension {extension}" if extension else ""
    else:
        head = f"Incoming call from {phone}" if direction == "in" else f"Call with {phone}"
        head += f" to extension {extension}" if extension else ""
    status = row.get("call_status") or "status unknown"
    note = f"{head}: {status}, {_duration(row.get('duration_seconds'))} (call id {row['call_id']})"
    return {
        "source": settings.call_log_source,
        "u_id": customer_id,
        "u_phone": row.get("phone"),
        "manager_id": by_extension.get(str(extension)) if extension else None,
        "note": note,
    }


def _customer(conn: Connection, row: Mapping[str, Any]) -> str | None:
    """The U-ON client of the call: named on the row, else a live client with its number."""
    if row.get("customer_external_id"):
        return str(row["customer_external_id"])
    if not row.get("phone"):
        return None
    c = customers.c
    return conn.execute(
        select(c.external_id)
        .where(
            c.integration_id == row["integration_id"],
            c.deleted_at.is_(None),
            (c.phone == row["phone"]) | (c.phone_mobile == row["phone"]),
        )
        .order_by(c.synced_at.desc(), c.id.desc())
        .limit(1)
    ).scalar()


def _fail_stale(engine: Engine, opts: CallLogOptions) -> int:
    c = uon_calls.c
    stale = now_utc() - timedelta(seconds=opts.stale_after_seconds)
    with engine.begin() as conn:
        return conn.execute(
            update(uon_calls)
            .where(c.log_status == LOG_SENDING, c.updated_at < stale)
            .values(log_status=LOG_FAILED, log_error=UNKNOWN, updated_at=now_utc())
        ).rowcount


def _take(engine: Engine, row_id: int) -> bool:
    """`pending` → `sending`, committed; False when another sender took it first."""
    c = uon_calls.c
    now = now_utc()
    with engine.begin() as conn:
        return (
            conn.execute(
                update(uon_calls)
                .where(c.id == row_id, c.log_status == LOG_PENDING)
                .values(
                    log_status=LOG_SENDING,
                    log_attempts=c.log_attempts + 1,
                    log_sent_at=now,
                    updated_at=now,
                )
            ).rowcount
            == 1
        )


def _end(engine: Engine, row_id: int, **values: Any) -> None:
    c = uon_calls.c
    with engine.begin() as conn:
        conn.execute(
            update(uon_calls)
            .where(c.id == row_id, c.log_status == LOG_SENDING)
            .values(**values, updated_at=now_utc())
        )


def send_call_logs(
    engine: Engine,
    client_for: Callable[[Integration], Any],
    opts: CallLogOptions,
    *,
    log: Callable[[str], None] = lambda _msg: None,
) -> CallLogReport:
    """Send the pending call logs of the active U-ON integrations (see module docstring)."""
    report = CallLogReport()
    report.unknown = _fail_stale(engine, opts)
    if report.unknown:
        log(f"{report.unknown} call logs were found `sending`: failed, outcome unknown")
    started = time.monotonic()
    with engine.connect() as conn:
        active = {i.id: i for i in list_integrations(conn, provider=PROVIDER, active_only=True)}
    clients: dict[int, Any] = {}
    tried: set[int] = set()
    try:
        while time.monotonic() - started < opts.time_budget_seconds:
            c = uon_calls.c
            with engine.connect() as conn:
                rows = [
                    dict(r)
                    for r in conn.execute(
                        select(uon_calls)
                        .where(
                            c.log_status == LOG_PENDING,
                            c.integration_id.in_(list(active)),
                            c.id.not_in(list(tried)) if tried else c.id.is_not(None),
                        )
                        .order_by(c.id)
                        .limit(opts.batch_size)
                    ).mappings()
                ]
            if not rows:
                break
            for row in rows:
                tried.add(row["id"])
                if time.monotonic() - started >= opts.time_budget_seconds:
                    break
                _send_one(
                    engine,
                    row,
                    active[row["integration_id"]],
                    clients,
                    client_for,
                    opts,
                    report,
                    log,
                )
    finally:
        for client in clients.values():
            client.close()
    return report


def _send_one(
    engine: Engine,
    row: dict[str, Any],
    integration: Integration,
    clients: dict[int, Any],
    client_for: Callable[[Integration], Any],
    opts: CallLogOptions,
    report: CallLogReport,
    log: Callable[[str], None],
) -> None:
    settings = UonSettings.model_validate(integration.settings or {})
    with engine.connect() as conn:
        form = lead_form(row, settings, _customer(conn, row))
    if not _take(engine, row["id"]):
        return
    attempts = int(row["log_attempts"] or 0) + 1
    try:
        if integration.id not in clients:
            clients[integration.id] = client_for(integration)
        lead_id = clients[integration.id].create_lead(form)
    except ProviderRateLimitedError as exc:
        # Refused by U-ON: nothing was created, so it may go again (a bounded number).
        again = attempts < opts.max_attempts
        _end(
            engine,
            row["id"],
            log_status=LOG_PENDING if again else LOG_FAILED,
            log_error=str(exc)[:ERROR_LIMIT],
        )
        report.deferred += int(again)
        report.failed += int(not again)
        log(f"call {row['call_id']}: {exc}")
    except (ProviderError, ValueError) as exc:
        _end(engine, row["id"], log_status=LOG_FAILED, log_error=str(exc)[:ERROR_LIMIT])
        report.failed += 1
        log(f"call {row['call_id']}: lead/create failed: {exc}")
    except Exception as exc:  # unexpected: recorded, and the row is never re-sent
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        _end(engine, row["id"], log_status=LOG_FAILED, log_error=message[:ERROR_LIMIT])
        report.failed += 1
        report.errors.append(f"call {row['call_id']}: {message}")
    else:
        _end(
            engine,
            row["id"],
            log_status=LOG_SUCCEEDED,
            uon_lead_id=lead_id[:64],
            log_error=None,
            customer_external_id=row.get("customer_external_id") or form.get("u_id"),
        )
        report.sent += 1
