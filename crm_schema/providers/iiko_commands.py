"""iiko commands (seed 001, "Двусторонняя интеграция"): validated bodies and the outbox rows.

The operator API and the CLI both create commands here: `validate_command` checks a
body against its kind's model, `create_command` writes one `iiko_commands` row
(status `pending`) that the orchestration sends through the rate-limited client.

Idempotency: with an `Idempotency-Key`, the same key and the same request (kind, order,
body) give back the existing row (`created` False); the same key with another request
is refused (IdempotencyConflict). Without a key every call writes a row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationError,
    model_validator,
)
from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from crm_schema.providers.iiko import COMMAND_PENDING, iiko_commands, orders
from crm_schema.tables import integrations
from crm_sync.providers.iiko import ORDER_STATUSES

PROVIDER = "iiko"

# The ten Cloud API delivery statuses (seed 001) and the ones iiko lets us set:
# deliveries/update_order_delivery_status (Waiting, OnWay, Delivered), deliveries/close
# (Closed) and deliveries/cancel (Cancelled).
SETTABLE_STATUSES = ("Waiting", "OnWay", "Delivered", "Closed", "Cancelled")
MAX_IDEMPOTENCY_KEY_LENGTH = 200

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
Comment = Annotated[str, StringConstraints(max_length=1000)]
# Exact on the way in (no float rounding when checked), a JSON number on the way out
# (what iiko takes).
_AS_NUMBER = PlainSerializer(float, return_type=float, when_used="json")
Money = Annotated[
    Decimal, Field(ge=0, max_digits=15, decimal_places=2, allow_inf_nan=False), _AS_NUMBER
]
PositiveMoney = Annotated[
    Decimal, Field(gt=0, max_digits=15, decimal_places=2, allow_inf_nan=False), _AS_NUMBER
]
Percent = Annotated[Decimal, Field(ge=0, le=100, allow_inf_nan=False), _AS_NUMBER]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=1000)


class UpdateStatus(_Body):
    """`update-status`: the new delivery status (only Waiting, OnWay, Delivered, Closed
    and Cancelled can be set through the Cloud API)."""

    status: Literal[ORDER_STATUSES] = Field(  # type: ignore[valid-type]
        description="One of the ten Cloud API statuses; iiko can set only "
        + ", ".join(SETTABLE_STATUSES)
        + ".",
        examples=["Delivered"],
    )


class AssignCourier(_Body):
    """`assign-courier`: deliveries/update_order_courier (employeeId)."""

    courier_id: Text = Field(description="The courier's iiko employee id.", examples=["uuid"])
    courier_name: Text | None = Field(None, examples=["Иван Иванов"])


class Payment(BaseModel):
    """One payment of `update-payment`, in iiko's own field names."""

    model_config = ConfigDict(extra="forbid")

    paymentTypeKind: Text = Field(examples=["Card"], description="Card, Cash, Online, ...")
    sum: Money = Field(examples=[1200.0])
    paymentTypeId: UUID | None = None


class UpdatePayment(_Body):
    """`update-payment`: deliveries/change_payments."""

    payments: list[Payment] = Field(min_length=1, max_length=50)


class ApplyDiscount(_Body):
    """`apply-discount` (validated, then refused: the Cloud API cannot change the discounts
    of an existing delivery order)."""

    discount_id: Text | None = None
    discount_sum: Money | None = None
    discount_percent: Percent | None = None

    @model_validator(mode="after")
    def _one_given(self) -> ApplyDiscount:
        if self.discount_id is None and self.discount_sum is None and self.discount_percent is None:
            raise ValueError("give discount_id, discount_sum or discount_percent")
        return self


class CancelOrder(_Body):
    """`cancel`: deliveries/cancel (cancelComment, cancelCauseId)."""

    cancel_reason: Text = Field(examples=["Клиент отказался от заказа"])
    cancel_cause_id: UUID | None = None


class LoyaltyWallet(_Body):
    """`loyalty-topup`, `loyalty-chargeoff`, `loyalty-hold`: an amount on a wallet."""

    customer_id: Text
    wallet_id: Text
    amount: PositiveMoney
    comment: Comment | None = None
    organization_id: Text | None = Field(
        None, description="Default: the integration's first organization."
    )


class LoyaltyCancelHold(_Body):
    """`loyalty-cancel-hold`: release a hold by its transaction id."""

    transaction_id: Text
    organization_id: Text | None = None


class LoyaltyCustomerInfo(_Body):
    """`loyalty-customer-info`: a customer by id or by phone."""

    customer_id: Text | None = None
    phone: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)] | None
    ) = None
    organization_id: Text | None = None

    @model_validator(mode="after")
    def _one_given(self) -> LoyaltyCustomerInfo:
        if (self.customer_id is None) == (self.phone is None):
            raise ValueError("give exactly one of customer_id and phone")
        return self


ORDER_COMMANDS: dict[str, type[BaseModel]] = {
    "update-status": UpdateStatus,
    "assign-courier": AssignCourier,
    "update-payment": UpdatePayment,
    "apply-discount": ApplyDiscount,
    "cancel": CancelOrder,
}
LOYALTY_COMMANDS: dict[str, type[BaseModel]] = {
    "loyalty-topup": LoyaltyWallet,
    "loyalty-chargeoff": LoyaltyWallet,
    "loyalty-hold": LoyaltyWallet,
    "loyalty-cancel-hold": LoyaltyCancelHold,
    "loyalty-customer-info": LoyaltyCustomerInfo,
}
COMMANDS: dict[str, type[BaseModel]] = ORDER_COMMANDS | LOYALTY_COMMANDS
UNSUPPORTED = {
    "apply-discount": "the iiko Cloud API has no method that changes the discounts of an "
    "existing delivery order; apply the discount in iiko (or when the order is created)",
}


class CommandError(ValueError):
    """A command that cannot be created; `status` is the HTTP status that says why."""

    status = 400

    def __init__(self, message: str, problems: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems


class InvalidCommand(CommandError):
    """The body (or kind) is wrong: every problem is named."""

    status = 422


class CommandNotSupported(CommandError):
    """A valid command iiko cannot carry out (apply-discount)."""

    status = 501


class OrderNotFound(CommandError):
    """No such order (or integration)."""

    status = 404


class CommandConflict(CommandError):
    """An ambiguous order reference, a reused idempotency key, a disabled integration."""

    status = 409


def problems_of(exc: ValidationError) -> list[dict[str, str]]:
    """`[{"field", "error"}]` for a pydantic error (never the input values)."""
    out = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        field = ".".join(str(p) for p in error["loc"]) or "body"
        out.append({"field": field, "error": error["msg"]})
    return out


def validate_command(kind: str, body: Any) -> BaseModel:
    """The validated body of a ``kind`` command, or InvalidCommand naming every problem.

    `update-status` with a status iiko cannot set is invalid too (the settable ones are
    named); `apply-discount` passes here — `create_command` refuses it (501).
    """
    model = COMMANDS.get(kind)
    if model is None:
        raise InvalidCommand(
            f"unknown command {kind!r}",
            [{"field": "kind", "error": "one of " + ", ".join(COMMANDS)}],
        )
    if not isinstance(body, dict):
        raise InvalidCommand(
            "the body must be a JSON object", [{"field": "body", "error": "must be an object"}]
        )
    try:
        command = model.model_validate(body)
    except ValidationError as exc:
        problems = problems_of(exc)
        names = ", ".join(dict.fromkeys(p["field"] for p in problems))
        raise InvalidCommand(f"invalid fields: {names}", problems) from None
    if isinstance(command, UpdateStatus) and command.status not in SETTABLE_STATUSES:
        settable = ", ".join(SETTABLE_STATUSES)
        raise InvalidCommand(
            f"iiko cannot set the status {command.status}: settable are {settable}",
            [{"field": "status", "error": f"iiko can set only {settable}"}],
        )
    return command


# -- orders ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderRef:
    """What a command needs of an order."""

    id: int
    integration_id: int
    iiko_order_id: str
    organization_id: str | None
    status: str | None


def _order(row: Any) -> OrderRef:
    return OrderRef(row.id, row.integration_id, row.iiko_order_id, row.organization_id, row.status)


_ORDER_COLUMNS = (
    orders.c.id,
    orders.c.integration_id,
    orders.c.iiko_order_id,
    orders.c.organization_id,
    orders.c.status,
)


def find_order_by_id(conn: Connection, order_id: int) -> OrderRef | None:
    """The order with our id ``order_id``."""
    row = conn.execute(select(*_ORDER_COLUMNS).where(orders.c.id == order_id)).first()
    return None if row is None else _order(row)


def find_orders_by_iiko_id(
    conn: Connection, iiko_order_id: str, integration_id: int | None = None
) -> list[OrderRef]:
    """The orders with this iiko order id (one per integration at most), by id."""
    query = select(*_ORDER_COLUMNS).where(orders.c.iiko_order_id == iiko_order_id)
    if integration_id is not None:
        query = query.where(orders.c.integration_id == integration_id)
    return [_order(r) for r in conn.execute(query.order_by(orders.c.id))]


def resolve_order(conn: Connection, ref: str, integration_id: int | None = None) -> OrderRef:
    """The order ``ref`` names: our `orders.id` (digits) or the iiko order id.

    ``integration_id`` narrows an iiko id found in several integrations (else
    CommandConflict) and must match an order given by our id. OrderNotFound otherwise.
    """
    ref = ref.strip()
    if ref.isascii() and ref.isdigit() and len(ref) <= 18:
        order = find_order_by_id(conn, int(ref))
        if order is None or (integration_id is not None and order.integration_id != integration_id):
            raise OrderNotFound(f"no order with id {ref}")
        return order
    if not ref or len(ref) > 64:
        raise OrderNotFound("no such order")
    found = find_orders_by_iiko_id(conn, ref, integration_id)
    if not found:
        raise OrderNotFound(f"no order with iiko id {ref}")
    if len(found) > 1:
        ids = ", ".join(str(o.integration_id) for o in found)
        raise CommandConflict(
            f"iiko order {ref} exists in integrations {ids}: give ?integration=ID (or our order id)"
        )
    return found[0]


# -- commands ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One `iiko_commands` row."""

    id: int
    integration_id: int
    kind: str
    order_id: int | None
    iiko_order_id: str | None
    organization_id: str
    request: dict[str, Any]
    status: str
    provider_status: str | None
    correlation_id: str | None
    result: Any
    error: str | None
    idempotency_key: str | None
    request_hash: str
    created_by: str | None
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime | None
    sent_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime | None

    def public_dict(self) -> dict[str, Any]:
        """JSON-safe view: the state, iiko's status, error, result and timestamps."""
        return {
            "id": self.id,
            "integration_id": self.integration_id,
            "kind": self.kind,
            "order_id": self.order_id,
            "iiko_order_id": self.iiko_order_id,
            "organization_id": self.organization_id,
            "request": self.request,
            "status": self.status,
            "provider_status": self.provider_status,
            "correlation_id": self.correlation_id,
            "result": self.result,
            "error": self.error,
            "idempotency_key": self.idempotency_key,
            "created_by": self.created_by,
            "attempts": self.attempts,
            "next_attempt_at": iso(self.next_attempt_at),
            "created_at": iso(self.created_at),
            "sent_at": iso(self.sent_at),
            "finished_at": iso(self.finished_at),
            "updated_at": iso(self.updated_at),
        }


def iso(value: datetime | None) -> str | None:
    """A stored timestamp as ISO 8601 UTC (SQLite gives naive UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def get_command(conn: Connection, command_id: int) -> Command | None:
    """The command with this id."""
    row = conn.execute(select(iiko_commands).where(iiko_commands.c.id == command_id)).first()
    if row is None:
        return None
    fields = Command.__dataclass_fields__
    return Command(**{name: getattr(row, name) for name in fields})


def request_hash(kind: str, order_id: int | None, request: dict[str, Any]) -> str:
    """SHA-256 of the canonical request: what an idempotency key is checked against."""
    canonical = json.dumps(
        {"kind": kind, "order_id": order_id, "request": request},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def check_idempotency_key(key: str | None) -> str | None:
    """The key as given (None: none), or InvalidCommand for one that cannot be stored."""
    if key is None:
        return None
    if (
        not key
        or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH
        or not key.isascii()
        or not key.isprintable()
    ):
        raise InvalidCommand(
            "invalid Idempotency-Key",
            [
                {
                    "field": "Idempotency-Key",
                    "error": f"1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters",
                }
            ],
        )
    return key


def _integration(conn: Connection, integration_id: int) -> Any:
    row = conn.execute(
        select(
            integrations.c.id,
            integrations.c.provider,
            integrations.c.is_active,
            integrations.c.settings,
        ).where(integrations.c.id == integration_id)
    ).first()
    if row is None or row.provider != PROVIDER:
        raise OrderNotFound(f"no iiko integration with id {integration_id}")
    if not row.is_active:
        raise CommandConflict(f"integration {integration_id} is disabled")
    return row


def _existing(conn: Connection, integration_id: int, key: str) -> Command | None:
    row_id = conn.execute(
        select(iiko_commands.c.id).where(
            iiko_commands.c.integration_id == integration_id,
            iiko_commands.c.idempotency_key == key,
        )
    ).scalar()
    return None if row_id is None else get_command(conn, row_id)


def _same_or_conflict(existing: Command, digest: str) -> Command:
    if existing.request_hash != digest:
        raise CommandConflict(
            "this Idempotency-Key was already used for another request "
            f"(command {existing.id}); use a new key"
        )
    return existing


def create_command(
    conn: Connection,
    *,
    integration_id: int,
    kind: str,
    order: OrderRef | None,
    body: Any,
    idempotency_key: str | None,
    created_by: str | None,
) -> tuple[Command, bool]:
    """Write a pending command; (the row, True) — or (the existing row, False) for a
    retried idempotency key with the same request.

    ``body``: the request as sent (a dict) or an already validated model. Order commands
    need ``order`` (`resolve_order`); loyalty commands take none and use the body's
    organization_id or the integration's first organization. Raises InvalidCommand (422),
    CommandNotSupported (501), OrderNotFound (404) or CommandConflict (409); nothing is
    written then.
    """
    command = body if isinstance(body, BaseModel) else validate_command(kind, body)
    if not isinstance(command, COMMANDS.get(kind, ())):  # type: ignore[arg-type]
        command = validate_command(kind, command.model_dump(mode="json"))
    if kind in UNSUPPORTED:
        raise CommandNotSupported(UNSUPPORTED[kind])
    key = check_idempotency_key(idempotency_key)
    integration = _integration(conn, integration_id)
    if kind in ORDER_COMMANDS:
        if order is None:
            raise InvalidCommand(
                f"{kind} needs an order", [{"field": "order", "error": "required"}]
            )
        if order.integration_id != integration_id:
            raise OrderNotFound(f"order {order.id} is not in integration {integration_id}")
    elif order is not None:
        raise InvalidCommand(f"{kind} takes no order", [{"field": "order", "error": "not allowed"}])
    request = command.model_dump(mode="json")
    organization_id = (
        order.organization_id if order is not None else request.get("organization_id")
    ) or next(iter((integration.settings or {}).get("organization_ids") or []), None)
    if not organization_id:
        raise InvalidCommand(
            "no organization: give organization_id (the integration has none configured)",
            [{"field": "organization_id", "error": "required"}],
        )
    order_id = order.id if order is not None else None
    digest = request_hash(kind, order_id, request)
    if key is not None:
        existing = _existing(conn, integration_id, key)
        if existing is not None:
            return _same_or_conflict(existing, digest), False
    now = datetime.now(UTC)
    values = {
        "integration_id": integration_id,
        "kind": kind,
        "order_id": order_id,
        "iiko_order_id": order.iiko_order_id if order is not None else None,
        "organization_id": organization_id,
        "request": request,
        "status": COMMAND_PENDING,
        "idempotency_key": key,
        "request_hash": digest,
        "created_by": created_by,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }
    try:
        with conn.begin_nested():
            new_id = conn.execute(
                insert(iiko_commands).values(**values).returning(iiko_commands.c.id)
            ).scalar_one()
    except IntegrityError:
        # A concurrent request with the same key committed first.
        existing = _existing(conn, integration_id, key) if key is not None else None
        if existing is None:
            raise
        return _same_or_conflict(existing, digest), False
    created = get_command(conn, new_id)
    assert created is not None
    return created, True
