"""The iiko command outbox sender: `iiko_commands` rows → iiko → back into the CRM.

A row's life: ``pending`` → (claimed with a lease) → sent to iiko → ``sent`` with
iiko's correlation id (order commands) → ``commands/status`` followed until
``Success`` (→ ``succeeded``, the order row updated) or ``Error`` (→ ``failed`` with
iiko's reason), or until the integration's ``command_timeout_seconds`` passes with no
final state (→ ``failed``). Loyalty operations answer at once: ``succeeded`` with the
answer in ``result`` right after the 200.

Claims: ``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on
SQLite (crm_schema.engine), so two runs never hold one row; a claim carries a lease,
and a row whose holder died is claimable again once its lease lapses.

Nothing is sent twice for one row. Just before the request goes out, ``sent_at`` is
committed on the still-``pending`` row; right after iiko answers, the row becomes
``sent`` (or finished) in the next transaction. A ``pending`` row with ``sent_at`` set
is therefore one whose send started and whose outcome was never recorded (the
process died in between); a timeout or 5xx after the request went out leaves the
same doubt. Such a row is never resent blindly:

- commands that set an absolute state (update-status, assign-courier, update-payment,
  cancel, loyalty-cancel-hold) and reads (loyalty-customer-info) are sent again:
  applying them twice leaves iiko as applying them once; a re-sent order command that
  iiko then refuses is checked against the order (`deliveries/by_id`): when the order
  already shows what it asked for, the first send landed and the row succeeds;
- money movements (loyalty-topup, loyalty-chargeoff, loyalty-hold) are failed with
  "outcome unknown" and left to an operator, since a second send could move money
  twice (a hold carries a predefined transactionId, named in the error, to look up).

Retryable provider errors (429, 5xx, timeouts, a refused token) put the row back to
``pending`` with ``next_attempt_at`` (exponential backoff) until ``MAX_ATTEMPTS``.
Commands for one order are sent in id order: a row waits while an older command of
its order is unfinished.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, Engine, and_, exists, func, or_, select, update

from crm_schema.integrations import Integration, get_integration
from crm_schema.providers.iiko import (
    COMMAND_FAILED,
    COMMAND_PENDING,
    COMMAND_SENT,
    COMMAND_SUCCEEDED,
    iiko_commands,
    orders,
)
from crm_schema.providers.iiko_commands import ORDER_COMMANDS, SETTABLE_STATUSES
from crm_schema.tables import integrations
from crm_schema.task_queue import as_utc, now_utc
from orchestration.resources.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderUnavailableError,
)

logger = logging.getLogger(__name__)

UPDATE_STATUS = "update-status"
ASSIGN_COURIER = "assign-courier"
UPDATE_PAYMENT = "update-payment"
APPLY_DISCOUNT = "apply-discount"
CANCEL = "cancel"
LOYALTY_TOPUP = "loyalty-topup"
LOYALTY_CHARGEOFF = "loyalty-chargeoff"
LOYALTY_HOLD = "loyalty-hold"
LOYALTY_CANCEL_HOLD = "loyalty-cancel-hold"
LOYALTY_CUSTOMER_INFO = "loyalty-customer-info"

ORDER_KINDS = frozenset(ORDER_COMMANDS)
LOYALTY_PATHS = {
    LOYALTY_TOPUP: "loyalty/iiko/customer/wallet/topup",
    LOYALTY_CHARGEOFF: "loyalty/iiko/customer/wallet/chargeoff",
    LOYALTY_HOLD: "loyalty/iiko/customer/wallet/hold",
    LOYALTY_CANCEL_HOLD: "loyalty/iiko/customer/wallet/cancel_hold",
    LOYALTY_CUSTOMER_INFO: "loyalty/iiko/customer/info",
}
# Sending these twice moves money twice: an interrupted send is never repeated.
NOT_RESENDABLE = frozenset({LOYALTY_TOPUP, LOYALTY_CHARGEOFF, LOYALTY_HOLD})
DELIVERY_STATUSES = ("Waiting", "OnWay", "Delivered")  # deliveries/update_order_delivery_status
PAYMENT_FIELDS = (
    "paymentTypeKind",
    "sum",
    "paymentTypeId",
    "isProcessedExternally",
    "paymentAdditionalData",
    "isFiscalizedExternally",
)

IN_PROGRESS, SUCCESS, ERROR = "InProgress", "Success", "Error"
MAX_ATTEMPTS = 8
BACKOFF_SECONDS, BACKOFF_FACTOR, BACKOFF_MAX_SECONDS = 5.0, 4.0, 600.0
DEFAULT_COMMAND_TIMEOUT_SECONDS = 600.0
ERROR_LIMIT = 2000
RESENT = "resent_after_unknown_outcome"  # `result` marker of a re-sent row (see docstring)
HOLD_NAMESPACE = uuid.UUID("5b0e7a52-2f55-4c5f-9a8e-2f1c8f0e6d10")

ClientFor = Callable[[Integration], Any]  # → an IikoClient (``call(path, body)``)


class CommandRefused(Exception):
    """A command that cannot be sent as stored (no retry can mend it)."""


@dataclass(frozen=True)
class SenderOptions:
    """How one sender pass runs."""

    run_id: str
    lease: timedelta = timedelta(seconds=120)
    time_budget_seconds: float = 120.0
    poll_interval_seconds: float = 1.0
    batch_size: int = 50
    integration_ids: frozenset[int] | None = None
    command_ids: frozenset[int] | None = None
    sleep: Callable[[float], None] = time.sleep


@dataclass
class SenderReport:
    """What one pass did (run metadata)."""

    sent: int = 0  # requests that reached iiko and were accepted
    succeeded: int = 0
    failed: int = 0
    retrying: int = 0  # back to pending after a retryable error
    polls: int = 0
    in_progress: int = 0  # rows still `sent` when the pass ended (in its scope)
    pending: int = 0  # rows still `pending` when the pass ended (in its scope)
    errors: list[str] = field(default_factory=list)

    def as_metadata(self) -> dict[str, Any]:
        """Plain numbers for Dagster output metadata."""
        return {
            "sent": self.sent,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "retrying": self.retrying,
            "still_in_progress": self.in_progress,
            "still_pending": self.pending,
            "status_polls": self.polls,
        }


def backoff(attempts: int) -> timedelta:
    """Wait before the next try after ``attempts`` tries (5 s, 20 s, 80 s, … ≤ 10 min)."""
    seconds = BACKOFF_SECONDS * BACKOFF_FACTOR ** max(0, attempts - 1)
    return timedelta(seconds=min(seconds, BACKOFF_MAX_SECONDS))


def hold_transaction_id(row: Any) -> str:
    """The transactionId a hold is sent with: fixed per row, so it can be looked up.

    Row ids repeat across databases (a restored backup, a second deployment on one iiko
    account): the creation time and request hash keep the id unique to this row.
    """
    created = as_utc(row.created_at)
    seed = (
        f"{row.integration_id}:{row.id}:{row.request_hash}:{created.isoformat() if created else ''}"
    )
    return str(uuid.uuid5(HOLD_NAMESPACE, seed))


def _seconds(value: float) -> str:
    return f"{value:g}"


# -- which rows ---------------------------------------------------------------------------


def _scope(opts: SenderOptions) -> list[Any]:
    c = iiko_commands.c
    conditions: list[Any] = [c.status.in_([COMMAND_PENDING, COMMAND_SENT])]
    if opts.integration_ids is not None:
        conditions.append(c.integration_id.in_(sorted(opts.integration_ids)))
    if opts.command_ids is not None:
        conditions.append(c.id.in_(sorted(opts.command_ids)))
    return conditions


def _active_iiko() -> Any:
    i = integrations.c
    return exists().where(
        i.id == iiko_commands.c.integration_id, i.provider == "iiko", i.is_active.is_(True)
    )


def due_condition(now: datetime) -> Any:
    """Rows a sender may take now: pending or sent, due, and not leased by a live claim."""
    c = iiko_commands.c
    return and_(
        c.status.in_([COMMAND_PENDING, COMMAND_SENT]),
        or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now),
        or_(c.lease_expires_at.is_(None), c.lease_expires_at <= now),
        _active_iiko(),
    )


def due_commands(conn: Connection) -> tuple[int, int]:
    """(how many rows are due now, the highest due id) — what the sensor asks."""
    c = iiko_commands.c
    row = conn.execute(select(func.count(), func.max(c.id)).where(due_condition(now_utc()))).one()
    return int(row[0] or 0), int(row[1] or 0)


def claim(conn: Connection, opts: SenderOptions) -> list[Any]:
    """Lease a batch of due rows to ``opts.run_id`` (atomic on both databases)."""
    now = now_utc()
    c = iiko_commands.c
    query = (
        select(c.id).where(due_condition(now), *_scope(opts)).order_by(c.id).limit(opts.batch_size)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=iiko_commands)
    ids = [r.id for r in conn.execute(query)]
    if not ids:
        return []
    rows = conn.execute(
        update(iiko_commands)
        .where(c.id.in_(ids), due_condition(now))
        .values(
            claimed_at=now,
            lease_expires_at=now + opts.lease,
            run_id=opts.run_id,
            updated_at=now,
        )
        .returning(*iiko_commands.c)
    ).all()
    # Plain objects: the sender updates its copy as the row moves on.
    return sorted((SimpleNamespace(**r._mapping) for r in rows), key=lambda r: r.id)


def _finish(
    conn: Connection, row: Any, values: dict[str, Any], *, status_in: Iterable[str] | None = None
) -> bool:
    c = iiko_commands.c
    now = now_utc()
    statuses = list(status_in or [row.status])
    result = conn.execute(
        update(iiko_commands)
        .where(c.id == row.id, c.status.in_(statuses))
        .values(lease_expires_at=None, updated_at=now, **values)
    )
    return result.rowcount == 1


# -- what to send -------------------------------------------------------------------------


def _order_of(conn: Connection, row: Any) -> Any:
    if row.order_id is None:
        raise CommandRefused(
            f"command {row.id} ({row.kind}) names no order: nothing was sent to iiko"
        )
    order = conn.execute(select(orders).where(orders.c.id == row.order_id)).first()
    if order is None:
        raise CommandRefused(
            f"order {row.order_id} of command {row.id} is missing from the CRM: "
            "nothing was sent to iiko"
        )
    if not (row.iiko_order_id or order.iiko_order_id):
        raise CommandRefused(f"order {row.order_id} has no iiko order id: nothing was sent")
    return order


def _payments(client: Any, organization_id: str, payments: list[dict[str, Any]]) -> list[dict]:
    """The payments as iiko wants them; a missing paymentTypeId is looked up by kind."""
    out, types = [], None
    for payment in payments:
        item = {k: payment[k] for k in PAYMENT_FIELDS if payment.get(k) is not None}
        if not item.get("paymentTypeId"):
            if types is None:
                answer = client.call("payment_types", {"organizationIds": [organization_id]})
                types = answer.get("paymentTypes") or []
            kind = item.get("paymentTypeKind")
            match = next(
                (
                    t
                    for t in types
                    if t.get("paymentTypeKind") == kind and not t.get("isDeleted") and t.get("id")
                ),
                None,
            )
            if match is None:
                raise CommandRefused(
                    f"payment of kind {kind!r} has no paymentTypeId and iiko's payment_types "
                    f"lists no active type of that kind for organization {organization_id}"
                )
            item["paymentTypeId"] = match["id"]
        out.append(item)
    return out


def build_request(row: Any, client: Any, iiko_order_id: str | None) -> tuple[str, dict[str, Any]]:
    """(iiko path, body) for one row; CommandRefused when iiko has no way to do it."""
    req = dict(row.request or {})
    org = row.organization_id
    base = {"organizationId": org, "orderId": iiko_order_id}
    if row.kind == UPDATE_STATUS:
        status = req.get("status")
        if status in DELIVERY_STATUSES:
            return "deliveries/update_order_delivery_status", base | {"deliveryStatus": status}
        if status == "Closed":
            return "deliveries/close", base
        if status == "Cancelled":
            return "deliveries/cancel", base
        raise CommandRefused(
            f"iiko cannot set status {status!r}; settable: {', '.join(SETTABLE_STATUSES)}"
        )
    if row.kind == ASSIGN_COURIER:
        return "deliveries/update_order_courier", base | {"employeeId": req.get("courier_id")}
    if row.kind == UPDATE_PAYMENT:
        return "deliveries/change_payments", base | {
            "payments": _payments(client, org, list(req.get("payments") or []))
        }
    if row.kind == CANCEL:
        body = dict(base)
        if req.get("cancel_reason"):
            body["cancelComment"] = req["cancel_reason"]
        if req.get("cancel_cause_id"):
            body["cancelCauseId"] = req["cancel_cause_id"]
        return "deliveries/cancel", body
    if row.kind == APPLY_DISCOUNT:
        raise CommandRefused(
            "iiko Cloud API has no method that changes the discounts of an existing delivery order"
        )
    org = req.get("organization_id") or org
    if row.kind in (LOYALTY_TOPUP, LOYALTY_CHARGEOFF, LOYALTY_HOLD):
        body = {
            "organizationId": org,
            "customerId": req.get("customer_id"),
            "walletId": req.get("wallet_id"),
            "sum": float(req.get("amount") or 0),
        }
        if req.get("comment"):
            body["comment"] = req["comment"]
        if row.kind == LOYALTY_HOLD:
            body["transactionId"] = hold_transaction_id(row)
        return LOYALTY_PATHS[row.kind], body
    if row.kind == LOYALTY_CANCEL_HOLD:
        return LOYALTY_PATHS[row.kind], {
            "organizationId": org,
            "transactionId": req.get("transaction_id"),
        }
    if row.kind == LOYALTY_CUSTOMER_INFO:
        if req.get("customer_id"):
            who = {"type": "id", "id": req["customer_id"]}
        elif req.get("phone"):
            who = {"type": "phone", "phone": req["phone"]}
        else:
            raise CommandRefused("customer-info needs customer_id or phone")
        return LOYALTY_PATHS[row.kind], {"organizationId": org} | who
    raise CommandRefused(f"unknown command kind {row.kind!r}")


def error_reason(answer: dict[str, Any]) -> str:
    """iiko's reason from an ``Error`` command status (``errorReason``, ``exception``)."""
    parts = []
    if answer.get("errorReason"):
        parts.append(str(answer["errorReason"]))
    exc = answer.get("exception")
    if isinstance(exc, dict):
        for key in ("message", "Message", "description", "errorDescription"):
            if exc.get(key):
                parts.append(str(exc[key]))
                break
        else:
            parts.append(str(exc))
    elif exc:
        parts.append(str(exc))
    text = "; ".join(dict.fromkeys(parts)) or "iiko reported Error without a reason"
    return text[:ERROR_LIMIT]


def _order_changes(row: Any) -> dict[str, Any]:
    req = row.request or {}
    if row.kind == UPDATE_STATUS:
        return {"status": req.get("status")}
    if row.kind == CANCEL:
        return {"status": "Cancelled"}
    if row.kind == ASSIGN_COURIER:
        changes = {"courier_id": req.get("courier_id")}
        if req.get("courier_name"):
            changes["courier_name"] = req["courier_name"]
        return changes
    return {}


def _already_applied(client: Any, row: Any) -> bool:
    """True when iiko's order already shows what ``row`` asked for (a re-sent row)."""
    wanted = _order_changes(row)
    if not wanted or not row.iiko_order_id:
        return False
    try:
        found = client.by_id(row.organization_id, [row.iiko_order_id])
    except ProviderError:
        return False
    for item in found:
        order = item.get("order") or {}
        if "status" in wanted and order.get("status") != wanted["status"]:
            return False
        if "courier_id" in wanted:
            courier = ((order.get("courierInfo") or {}).get("courier") or {}).get("id")
            if courier != wanted["courier_id"]:
                return False
        return True
    return False


# -- the sender ---------------------------------------------------------------------------


class _Pass:
    def __init__(self, engine: Engine, client_for: ClientFor, opts: SenderOptions) -> None:
        self.engine = engine
        self.client_for = client_for
        self.opts = opts
        self.report = SenderReport()
        self._clients: dict[int, Any] = {}
        self._integrations: dict[int, Integration] = {}

    def integration(self, integration_id: int) -> Integration:
        if integration_id not in self._integrations:
            with self.engine.connect() as conn:
                self._integrations[integration_id] = get_integration(conn, integration_id)
        return self._integrations[integration_id]

    def client(self, integration_id: int) -> Any:
        if integration_id not in self._clients:
            self._clients[integration_id] = self.client_for(self.integration(integration_id))
        return self._clients[integration_id]

    def timeout(self, integration_id: int) -> float:
        settings = self.integration(integration_id).settings
        value = settings.get("command_timeout_seconds") or DEFAULT_COMMAND_TIMEOUT_SECONDS
        return float(value)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    # -- outcomes ---------------------------------------------------------------------

    def fail(self, row: Any, error: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            done = _finish(
                conn,
                row,
                {
                    "status": COMMAND_FAILED,
                    "error": error[:ERROR_LIMIT],
                    "finished_at": now_utc(),
                    "next_attempt_at": None,
                    **values,
                },
            )
        if done:
            self.report.failed += 1
            logger.warning("iiko command %s (%s) failed: %s", row.id, row.kind, error)

    def retry_later(self, row: Any, exc: ProviderError, *, uncertain: bool = False) -> None:
        """Back to pending after a backoff; ``uncertain``: iiko may have applied it."""
        attempts = row.attempts + 1
        if attempts >= MAX_ATTEMPTS:
            self.fail(row, f"gave up after {attempts} attempts: {exc}", attempts=attempts)
            return
        wait = backoff(attempts)
        if isinstance(exc, ProviderRateLimitedError) and exc.retry_after:
            wait = max(wait, timedelta(seconds=exc.retry_after))
        with self.engine.begin() as conn:
            done = _finish(
                conn,
                row,
                {
                    "attempts": attempts,
                    "next_attempt_at": now_utc() + wait,
                    "error": f"will retry: {exc}"[:ERROR_LIMIT],
                    "sent_at": None,
                    "result": {RESENT: True} if uncertain else row.result,
                },
            )
        if done:
            self.report.retrying += 1

    def succeed(self, row: Any, result: Any, **values: Any) -> None:
        now = now_utc()
        with self.engine.begin() as conn:
            done = _finish(
                conn,
                row,
                {
                    "status": COMMAND_SUCCEEDED,
                    "result": result,
                    "error": None,
                    "finished_at": now,
                    "next_attempt_at": None,
                    **values,
                },
                status_in=[COMMAND_PENDING, COMMAND_SENT],
            )
            changes = {k: v for k, v in _order_changes(row).items() if v is not None}
            if done and changes and row.order_id is not None:
                conn.execute(
                    update(orders)
                    .where(orders.c.id == row.order_id)
                    .values(synced_at=now, **changes)
                )
        if done:
            self.report.succeeded += 1

    # -- steps ------------------------------------------------------------------------

    def waits_for_older(self, conn: Connection, row: Any) -> float | None:
        """Seconds to wait while an older command of the same order is unfinished
        (commands of one order reach iiko in the order they were given), else None."""
        if row.order_id is None:
            return None
        c = iiko_commands.c
        older = conn.execute(
            select(c.next_attempt_at)
            .where(
                c.order_id == row.order_id,
                c.id < row.id,
                c.status.in_([COMMAND_PENDING, COMMAND_SENT]),
            )
            .order_by(c.id)
            .limit(1)
        ).first()
        if older is None:
            return None
        due = as_utc(older.next_attempt_at)
        wait = (due - now_utc()).total_seconds() if due is not None else 0.0
        return max(wait, self.opts.poll_interval_seconds)

    def send(self, row: Any) -> None:
        client = self.client(row.integration_id)
        interrupted = row.sent_at is not None  # a send started, its answer never recorded
        # Sent again after an unknown outcome: iiko may refuse it because the first landed.
        resend = interrupted or row.result == {RESENT: True}
        if interrupted and row.kind in NOT_RESENDABLE:
            extra = ""
            if row.kind == LOYALTY_HOLD:
                extra = f" (its transactionId would be {hold_transaction_id(row)})"
            self.fail(
                row,
                "outcome unknown: the send of this money operation started but its answer "
                "was never recorded; it is not sent again — check the wallet in iiko" + extra,
            )
            return
        refused: str | None = None
        iiko_order_id = None
        # On SQLite every transaction holds the write lock (BEGIN IMMEDIATE): no other
        # transaction may open until this read one is closed.
        with self.engine.connect() as conn:
            wait = self.waits_for_older(conn, row)
            if wait is None and row.kind in ORDER_KINDS:
                try:
                    order = _order_of(conn, row)
                    iiko_order_id = row.iiko_order_id or order.iiko_order_id
                except CommandRefused as exc:
                    refused = str(exc)
        if wait is not None:
            self.release(row, delay=wait)
            return
        if refused:
            self.fail(row, refused)
            return
        try:
            path, body = build_request(row, client, iiko_order_id)
        except CommandRefused as exc:
            self.fail(row, str(exc))
            return
        except ProviderError as exc:  # the payment_types look-up
            self._provider_error(row, exc, sent_at=None)
            return
        started = now_utc()
        with self.engine.begin() as conn:
            marked = conn.execute(
                update(iiko_commands)
                .where(
                    iiko_commands.c.id == row.id,
                    iiko_commands.c.status == COMMAND_PENDING,
                    iiko_commands.c.run_id == self.opts.run_id,
                )
                .values(
                    sent_at=started,
                    updated_at=started,
                    result={RESENT: True} if resend else row.result,
                )
            ).rowcount
        if not marked:
            return  # lost the lease meanwhile: the new holder sends it
        row.sent_at = started
        row.result = {RESENT: True} if resend else row.result
        try:
            answer = client.call(path, body)
        except ProviderError as exc:
            self._provider_error(row, exc, sent_at=started)
            return
        self.report.sent += 1
        if row.kind in LOYALTY_PATHS:
            self.succeed(row, answer, attempts=row.attempts + 1)
            return
        correlation = answer.get("correlationId") if isinstance(answer, dict) else None
        if not correlation:
            self.fail(row, "iiko accepted the command but returned no correlationId")
            return
        with self.engine.begin() as conn:
            _finish(
                conn,
                row,
                {
                    "status": COMMAND_SENT,
                    "correlation_id": str(correlation),
                    "provider_status": IN_PROGRESS,
                    "attempts": row.attempts + 1,
                    "error": None,
                    "next_attempt_at": now_utc()
                    + timedelta(seconds=self.opts.poll_interval_seconds),
                },
            )

    def _provider_error(self, row: Any, exc: ProviderError, *, sent_at: Any) -> None:
        certain_not_sent = sent_at is None or isinstance(
            exc, ProviderRateLimitedError | ProviderAuthError
        )
        if isinstance(exc, ProviderUnavailableError) and "Connect" in str(exc):
            certain_not_sent = True  # the connection never opened
        if exc.retryable or isinstance(exc, ProviderAuthError):
            if row.kind in NOT_RESENDABLE and not certain_not_sent:
                self.fail(
                    row,
                    f"outcome unknown: {exc}; a money operation is not sent again — "
                    "check the wallet in iiko",
                )
                return
            # An order command may go again (it sets an absolute state).
            self.retry_later(row, exc, uncertain=not certain_not_sent)
            return
        if row.result == {RESENT: True} and _already_applied(self.client(row.integration_id), row):
            self.succeed(row, {"already_applied": True, "iiko": str(exc)})
            return
        self.fail(row, f"iiko refused the command: {exc}", attempts=row.attempts + 1)

    def poll(self, row: Any) -> None:
        client = self.client(row.integration_id)
        limit = self.timeout(row.integration_id)
        started = as_utc(row.sent_at) or as_utc(row.claimed_at) or now_utc()
        timed_out = (now_utc() - started).total_seconds() > limit
        self.report.polls += 1
        try:
            answer = client.call(
                "commands/status",
                {"organizationId": row.organization_id, "correlationId": row.correlation_id},
            )
        except ProviderError as exc:
            if timed_out:
                self.fail(row, f"no final state from iiko within {_seconds(limit)} s: {exc}")
            elif exc.retryable or isinstance(exc, ProviderAuthError):
                self.release(row, delay=min(60.0, self.opts.poll_interval_seconds * 4))
            else:
                self.fail(row, f"iiko refused commands/status: {exc}")
            return
        state = answer.get("state") if isinstance(answer, dict) else None
        if state == SUCCESS:
            self.succeed(row, answer, provider_status=SUCCESS)
        elif state == ERROR:
            if row.result == {RESENT: True} and _already_applied(client, row):
                # iiko refused the repeat because the first send had landed.
                self.succeed(row, {"already_applied": True, "iiko": answer}, provider_status=ERROR)
                return
            self.fail(row, error_reason(answer), provider_status=ERROR, result=answer)
        elif timed_out:
            self.fail(
                row, f"no final state from iiko within {_seconds(limit)} s", provider_status=state
            )
        else:
            self.release(row, delay=self.opts.poll_interval_seconds, provider_status=state)

    def release(self, row: Any, *, delay: float, **values: Any) -> None:
        with self.engine.begin() as conn:
            _finish(
                conn,
                row,
                {"next_attempt_at": now_utc() + timedelta(seconds=delay), **values},
            )

    def back_off(self, row: Any, error: str) -> None:
        attempts = row.attempts + 1
        with self.engine.begin() as conn:
            _finish(
                conn,
                row,
                {
                    "attempts": attempts,
                    "next_attempt_at": now_utc() + backoff(attempts),
                    "error": error[:ERROR_LIMIT],
                },
            )

    def heartbeat(self) -> None:
        c = iiko_commands.c
        with self.engine.begin() as conn:
            conn.execute(
                update(iiko_commands)
                .where(c.run_id == self.opts.run_id, c.lease_expires_at.is_not(None))
                .values(lease_expires_at=now_utc() + self.opts.lease)
            )

    def remaining(self, deadline: datetime) -> tuple[int, int, datetime | None]:
        """(pending, sent, earliest next_attempt_at before ``deadline``) in scope."""
        c = iiko_commands.c
        with self.engine.connect() as conn:
            counts = dict(
                conn.execute(
                    select(c.status, func.count())
                    .where(*_scope(self.opts), _active_iiko())
                    .group_by(c.status)
                ).all()
            )
            soonest = conn.execute(
                select(func.min(func.coalesce(c.next_attempt_at, c.created_at))).where(
                    *_scope(self.opts),
                    _active_iiko(),
                    or_(c.next_attempt_at.is_(None), c.next_attempt_at <= deadline),
                )
            ).scalar()
        return counts.get(COMMAND_PENDING, 0), counts.get(COMMAND_SENT, 0), as_utc(soonest)

    def run(self) -> SenderReport:
        deadline = now_utc() + timedelta(seconds=self.opts.time_budget_seconds)
        try:
            while True:
                with self.engine.begin() as conn:
                    rows = claim(conn, self.opts)
                for row in rows:
                    if now_utc() > deadline:
                        self.release(row, delay=0)
                        continue
                    self.heartbeat()
                    try:
                        if row.status == COMMAND_SENT:
                            self.poll(row)
                        else:
                            self.send(row)
                    except Exception as exc:
                        # One broken row (bad data, a bug) must not strand the others; it
                        # backs off like a retryable error (sent_at kept: if the send
                        # started, the next try knows its outcome is unknown).
                        logger.exception("iiko command %s: unexpected error", row.id)
                        self.report.errors.append(f"command {row.id}: {type(exc).__name__}")
                        self.back_off(row, f"unexpected error ({type(exc).__name__}): {exc}")
                if now_utc() >= deadline:
                    break
                _pending, _sent, soonest = self.remaining(deadline)
                if soonest is None:
                    break
                if not rows:
                    wait = (soonest - now_utc()).total_seconds()
                    self.opts.sleep(min(max(wait, 0.05), self.opts.poll_interval_seconds))
        finally:
            self.close()
        pending, sent, _ = self.remaining(deadline)
        self.report.pending, self.report.in_progress = pending, sent
        return self.report


def send_commands(engine: Engine, client_for: ClientFor, opts: SenderOptions) -> SenderReport:
    """Send due commands and follow them until done or ``opts.time_budget_seconds``.

    ``client_for(integration)`` gives an iiko client (``call(path, body)``); build it
    with one attempt per call (the outbox retries with its own backoff, and a money
    operation must never be re-sent by the HTTP layer).
    """
    return _Pass(engine, client_for, opts).run()
