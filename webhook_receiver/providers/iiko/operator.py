"""iiko's part of the operator API (webhook_receiver.operator_api): order commands,
loyalty operations, command status and the received webhook events.

- `POST /api/v1/orders/{order_id}/<command>`, the command one of update-status,
  assign-courier, update-payment, apply-discount, cancel (`order_id`: our `orders.id`
  or the iiko order id; `?integration=ID` when the iiko id is in several integrations),
- `POST /api/v1/iiko/loyalty/{topup|chargeoff|hold|cancel-hold|customer-info}?integration=ID`,
- `GET /api/v1/commands/{id}`,
- `GET /api/v1/webhooks/events?skip&limit[&integration]`: received iiko events, newest
  first, with their order ids, processing state and payload.

A command is a durable `iiko_commands` row (crm_schema.providers.iiko_commands),
answered 202 with its id; the orchestration sends it and records iiko's answer. The
same `Idempotency-Key` with the same request gives the existing row back (200); with
another request it is a 409.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from pydantic import BaseModel, Field
from sqlalchemy import Connection, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from crm_schema.providers import iiko_commands as commands
from crm_schema.providers.iiko import webhook_events
from webhook_receiver.openapi import Operation
from webhook_receiver.operator_api.common import (
    ApiError,
    OperatorApi,
    answer,
    endpoint,
    int_param,
    invalid,
    iso,
    paging,
)
from webhook_receiver.operator_api.monitoring import PAGE_ERRORS, PAGING_PARAMS

ORDER_PATH = "/api/v1/orders/{order_id}/{action}"
LOYALTY_PATH = "/api/v1/iiko/loyalty/{action}"
COMMAND_PATH = "/api/v1/commands/{command_id}"
EVENTS_PATH = "/api/v1/webhooks/events"
LOYALTY_ACTIONS = {kind.removeprefix("loyalty-"): kind for kind in commands.LOYALTY_COMMANDS}


class CommandView(BaseModel):
    """A command's row: its state (pending → sent → succeeded | failed), iiko's status,
    error, result and timestamps."""

    id: int
    integration_id: int
    kind: str = Field(examples=["update-status"])
    order_id: int | None
    iiko_order_id: str | None
    organization_id: str
    request: dict[str, Any]
    status: str = Field(examples=["pending"])
    provider_status: str | None = Field(examples=["InProgress"])
    correlation_id: str | None
    result: Any = None
    error: str | None
    idempotency_key: str | None
    created_by: str | None
    attempts: int
    next_attempt_at: str | None
    created_at: str | None
    sent_at: str | None
    finished_at: str | None
    updated_at: str | None


class WebhookEventView(BaseModel):
    """One received iiko event (`webhook_events` row)."""

    id: int
    integration_id: int
    event_type: str | None = Field(examples=["DeliveryOrderUpdate"])
    order_external_id: str | None
    iiko_order_id: str | None
    organization_id: str | None
    correlation_id: str | None
    event_time: str | None
    received_at: str | None
    processed: bool
    processed_at: str | None
    processing_error: str | None
    payload: Any = None
    raw_body: str | None = Field(None, description="Only for a body that was not JSON.")


class EventsPage(BaseModel):
    """A page of events, newest first."""

    items: list[WebhookEventView]
    skip: int
    limit: int
    has_more: bool


def _payload(value: Any) -> Any:
    if isinstance(value, str | bytes):  # a driver that hands JSON back as text
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(value)
    return value


def _event(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "integration_id": row.integration_id,
        "event_type": row.event_type,
        "order_external_id": row.order_external_id,
        "iiko_order_id": row.iiko_order_id,
        "organization_id": row.organization_id,
        "correlation_id": row.correlation_id,
        "event_time": iso(row.event_time),
        "received_at": iso(row.received_at),
        "processed": row.processed_at is not None,
        "processed_at": iso(row.processed_at),
        "processing_error": row.processing_error,
        "payload": _payload(row.payload),
        "raw_body": row.raw_body,
    }


def list_events(
    conn: Connection, skip: int, limit: int, integration_id: int | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """A page of `webhook_events`, newest first; and whether more follow."""
    query = select(webhook_events).order_by(webhook_events.c.id.desc())
    if integration_id is not None:
        query = query.where(webhook_events.c.integration_id == integration_id)
    rows = conn.execute(query.offset(skip).limit(limit + 1)).all()
    return [_event(r) for r in rows[:limit]], len(rows) > limit


def _command_error(exc: commands.CommandError) -> ApiError:
    return ApiError(exc.status, exc.message, exc.problems)


def _validated(kind: str, body: Any, key: str | None) -> BaseModel:
    """The body checked (422) and the kind supported (501) before any database work."""
    try:
        command = commands.validate_command(kind, body)
        commands.check_idempotency_key(key)
    except commands.CommandError as exc:
        raise _command_error(exc) from None
    if kind in commands.UNSUPPORTED:
        raise ApiError(501, commands.UNSUPPORTED[kind])
    return command


def _created(result: tuple[commands.Command, bool]) -> Response:
    command, created = result
    return answer(command.public_dict(), 202 if created else 200)


class OperatorRoutes:
    """The handlers (one instance per app)."""

    def __init__(self, api: OperatorApi) -> None:
        self.api = api

    async def order_command(self, request: Request) -> Response:
        name = await self.api.authenticate(request)
        kind = request.path_params["action"]
        if kind not in commands.ORDER_COMMANDS:
            raise ApiError(404, f"no order command {kind!r}: " + ", ".join(commands.ORDER_COMMANDS))
        problems: list[dict[str, str]] = []
        integration_id = int_param(request, "integration", problems, minimum=1)
        if problems:
            raise invalid(problems)
        body = await self.api.json_body(request)
        key = request.headers.get("idempotency-key")
        command = _validated(kind, body, key)
        ref = request.path_params["order_id"]

        def work(conn: Any) -> tuple[commands.Command, bool]:
            order = commands.resolve_order(conn, ref, integration_id)
            return commands.create_command(
                conn,
                integration_id=order.integration_id,
                kind=kind,
                order=order,
                body=command,
                idempotency_key=key,
                created_by=name,
            )

        try:
            return _created(await self.api.transaction(work))
        except commands.CommandError as exc:
            raise _command_error(exc) from None

    async def loyalty_command(self, request: Request) -> Response:
        name = await self.api.authenticate(request)
        kind = LOYALTY_ACTIONS.get(request.path_params["action"])
        if kind is None:
            raise ApiError(404, "no loyalty operation: " + ", ".join(LOYALTY_ACTIONS))
        problems: list[dict[str, str]] = []
        integration_id = int_param(request, "integration", problems, minimum=1)
        if integration_id is None and not problems:
            problems.append({"field": "integration", "error": "required: the iiko integration id"})
        if problems:
            raise invalid(problems)
        body = await self.api.json_body(request)
        key = request.headers.get("idempotency-key")
        command = _validated(kind, body, key)

        def work(conn: Any) -> tuple[commands.Command, bool]:
            return commands.create_command(
                conn,
                integration_id=integration_id,  # type: ignore[arg-type]
                kind=kind,
                order=None,
                body=command,
                idempotency_key=key,
                created_by=name,
            )

        try:
            return _created(await self.api.transaction(work))
        except commands.CommandError as exc:
            raise _command_error(exc) from None

    async def get_command(self, request: Request) -> Response:
        await self.api.authenticate(request)
        raw = request.path_params["command_id"]
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
            raise ApiError(404, "no such command")
        command = await self.api.transaction(lambda conn: commands.get_command(conn, int(raw)))
        if command is None:
            raise ApiError(404, f"no command with id {raw}")
        return answer(command.public_dict())

    async def events(self, request: Request) -> Response:
        await self.api.authenticate(request)
        skip, limit, problems = paging(request)
        integration_id = int_param(request, "integration", problems, minimum=1)
        if problems:
            raise invalid(problems)
        items, more = await self.api.transaction(
            lambda conn: list_events(conn, skip, limit, integration_id)
        )
        return answer({"items": items, "skip": skip, "limit": limit, "has_more": more})


def operator_routes(api: OperatorApi) -> list[BaseRoute]:
    """iiko's operator routes: commands, then received events."""
    handlers = OperatorRoutes(api)
    return [
        Route(ORDER_PATH, endpoint(handlers.order_command), methods=["POST"]),
        Route(LOYALTY_PATH, endpoint(handlers.loyalty_command), methods=["POST"]),
        Route(COMMAND_PATH, endpoint(handlers.get_command), methods=["GET"]),
        Route(EVENTS_PATH, endpoint(handlers.events), methods=["GET"]),
    ]


_COMMAND_ERRORS = {
    401: "No or unknown operator token.",
    404: "Unknown order (or integration).",
    409: "Idempotency-Key reused for another request, an iiko order id in several "
    "integrations (give ?integration=ID), or a disabled integration.",
    413: "Body over the size limit.",
    415: "A Content-Type that is not JSON.",
    422: "Invalid body, parameter or Idempotency-Key: every problem named.",
    503: "The database is unavailable.",
}
_ORDER_SUMMARIES = {
    "update-status": "Set an order's delivery status "
    "(Waiting, OnWay, Delivered, Closed, Cancelled)",
    "assign-courier": "Assign a courier to an order",
    "update-payment": "Replace an order's payments",
    "apply-discount": "Apply a discount (validated, then refused: not in the Cloud API)",
    "cancel": "Cancel an order",
}
_LOYALTY_SUMMARIES = {
    "topup": "Top up a customer's wallet",
    "chargeoff": "Charge off a customer's wallet",
    "hold": "Hold an amount on a customer's wallet",
    "cancel-hold": "Release a hold",
    "customer-info": "Fetch a customer's loyalty info (answer in the command's result)",
}
_QUEUED = (
    " Answered 202 with the pending command; a retry with the same Idempotency-Key and "
    "request answers 200 with the existing command."
)

OPERATOR_OPERATIONS = (
    *(
        Operation(
            path=f"/api/v1/orders/{{order_id}}/{kind}",
            method="post",
            summary=summary,
            description=(
                "The order is our orders.id or the iiko order id (`?integration=ID` narrows "
                "an iiko id found in several integrations)." + _QUEUED
                if kind not in commands.UNSUPPORTED
                else "The body is validated (422), then the request is answered 501: "
                + commands.UNSUPPORTED[kind]
                + ". Nothing is written."
            ),
            body=commands.ORDER_COMMANDS[kind],
            ok=CommandView,
            errors=_COMMAND_ERRORS
            | (
                {501: "Not possible with the iiko Cloud API."}
                if kind in commands.UNSUPPORTED
                else {}
            ),
            path_params={"order_id": "Our order id, or the iiko order id."},
            tags=("operator",),
        )
        for kind, summary in _ORDER_SUMMARIES.items()
    ),
    *(
        Operation(
            path=f"/api/v1/iiko/loyalty/{action}",
            method="post",
            summary=summary,
            description="`?integration=ID` (required) names the iiko integration." + _QUEUED,
            body=commands.LOYALTY_COMMANDS[LOYALTY_ACTIONS[action]],
            ok=CommandView,
            errors=_COMMAND_ERRORS,
            tags=("operator",),
        )
        for action, summary in _LOYALTY_SUMMARIES.items()
    ),
    Operation(
        path=COMMAND_PATH,
        method="get",
        summary="A command's state",
        ok=CommandView,
        errors={401: _COMMAND_ERRORS[401], 404: "No such command.", 503: _COMMAND_ERRORS[503]},
        path_params={"command_id": "The command id (from the 202 answer)."},
        tags=("operator",),
    ),
    Operation(
        path=EVENTS_PATH,
        method="get",
        summary="Received iiko webhook events, newest first",
        ok=EventsPage,
        errors=PAGE_ERRORS,
        tags=("operator",),
    ),
)
# For the document: the command routes answer 202 (200: an idempotent retry), and
# which take `?integration` (required for loyalty).
OPERATOR_ACCEPTED_PATHS = frozenset(
    op.path for op in OPERATOR_OPERATIONS if op.method == "post" and "apply-discount" not in op.path
)
OPERATOR_QUERY_PARAMS = {
    **{
        op.path: {"integration": "The integration id, when the iiko order id is ambiguous."}
        for op in OPERATOR_OPERATIONS
        if op.path.startswith("/api/v1/orders/")
    },
    **{
        op.path: {"integration": "The iiko integration id (required)."}
        for op in OPERATOR_OPERATIONS
        if op.path.startswith("/api/v1/iiko/loyalty/")
    },
    EVENTS_PATH: PAGING_PARAMS | {"integration": "Only this integration's events."},
}
OPERATOR_REQUIRED_QUERY_PARAMS = {
    op.path: frozenset({"integration"})
    for op in OPERATOR_OPERATIONS
    if op.path.startswith("/api/v1/iiko/loyalty/")
}
