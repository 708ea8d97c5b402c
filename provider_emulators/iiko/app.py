"""iiko Cloud API emulator: auth, delivery orders, commands, loyalty, webhook settings.

Every provider route is ``POST /api/1/...`` with JSON. Request bodies are validated
against the official OpenAPI spec (:mod:`provider_emulators.iiko.spec`; 400 with iiko's
error body ``{"correlationId", "errorDescription", "error"}`` listing the problems), and
answers are built to validate against the spec's 200 schemas (``check_responses=True``
turns an invalid answer into a 500, for tests).

- ``access_token`` ``{"apiLogin"}`` → ``{"correlationId", "token"}``; tokens live
  ``token_ttl`` seconds; everything else needs ``Authorization: Bearer <token>`` (401).
- ``deliveries/by_id`` answers ANY order id with a deterministic order
  (:func:`records.make_order`) unless the admin API or a command stored, changed or
  removed it; at most 200 ids a call. ``deliveries/by_delivery_date_and_status`` and
  ``deliveries/by_revision`` answer the stored orders.
- Commands (``update_order_delivery_status``, ``update_order_courier``,
  ``change_payments``, ``cancel``, ``close``) → ``{"correlationId"}``;
  ``commands/status`` says ``InProgress`` for ``command_delay`` seconds, then
  ``Success`` (the order changed, its ``timestamp`` grew) or ``Error`` with an
  ``exception`` when the order is Closed/Cancelled, removed, marked failing
  (``fail_commands``) or its id ends in ``dead``.
- Loyalty: ``customer/info``, ``wallet/topup|chargeoff|hold|cancel_hold`` on in-memory
  balances (a chargeoff or hold above the available balance → 400).
- ``webhooks/settings`` / ``webhooks/update_settings`` per organization, in memory.

Admin (besides the framework's ``/_admin/health|requests|faults``):
``/_admin/orders`` (POST create/change, GET list, DELETE reset),
``/_admin/orders/{id}`` (GET, DELETE), ``/_admin/commands`` (GET, DELETE),
``POST /_admin/webhooks/send``, ``GET /_admin/webhooks`` (stored settings),
``GET /_admin/loyalty``, ``DELETE /_admin/tokens`` (expire every token) and
``/_admin/config`` (GET; PUT ``{"command_delay", "token_ttl", "push_changes"}``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import date
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope

from provider_emulators.framework import (
    ADMIN_PREFIX,
    ProviderProfile,
    admin_error,
    build_app,
    json_response,
    source_ip,
)
from provider_emulators.iiko import records, spec
from provider_emulators.iiko.records import STATUSES, parse_time
from provider_emulators.iiko.state import COMMAND_PATHS, IikoError, IikoState, Push
from provider_emulators.sender import post_json_async

DEFAULT_API_LOGIN = "demo-api-login"
DEFAULT_ORGANIZATION_ID = records.stable_id("organization", "demo")
API = "/api/1/"
WEBHOOK_EVENT_TYPES = ("DeliveryOrderUpdate", "DeliveryOrderError")

Handler = Callable[[IikoState, dict[str, Any]], dict[str, Any]]


def error_body(description: str, code: str | None = None) -> dict[str, Any]:
    """iiko's ``ErrorResponse``."""
    return {"correlationId": str(uuid.uuid4()), "errorDescription": description, "error": code}


def error_response(
    status: int, description: str, code: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    return json_response(error_body(description, code), status, headers)


def _ids_from_body(body: bytes) -> list[Any] | None:
    data = orjson.loads(body)
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("orderIds"), list):
        return data["orderIds"]
    if "orderId" in data:
        return [data["orderId"]]
    return None


def _quota_key(scope: Scope) -> str:
    """iiko's budget is per API login: keyed by the access token (its login's), else by IP."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return "token:" + value.decode("latin-1").removeprefix("Bearer ").strip()
    return source_ip(scope)


PROFILE = ProviderProfile(
    name="iiko",
    quota_rejection=lambda: error_response(
        429, "Too many requests", "TooManyRequests", {"Retry-After": "1"}
    ),
    forced_429=lambda retry_after: error_response(
        429,
        "Too many requests",
        "TooManyRequests",
        {"Retry-After": retry_after} if retry_after is not None else None,
    ),
    server_error=lambda status: error_response(
        status,
        "Internal server error" if status == 500 else "Service unavailable",
        "InternalServerError" if status == 500 else "ServiceUnavailable",
    ),
    ids_from_body=_ids_from_body,
    quota_key=_quota_key,
)


# ---- handlers: (state, validated body) -> answer ---------------------------------------


def _by_id(state: IikoState, body: dict[str, Any]) -> dict[str, Any]:
    state.check_organization(body["organizationId"])
    order_ids = body.get("orderIds") or []
    if not order_ids and not body.get("posOrderIds"):
        raise IikoError(400, "orderIds must not be empty", "Incorrect")
    orders = state.orders_by_id(body["organizationId"], order_ids)
    return {"correlationId": str(uuid.uuid4()), "orders": orders}


def _by_date(state: IikoState, body: dict[str, Any]) -> dict[str, Any]:
    for org in body["organizationIds"]:
        state.check_organization(org)
    date_from = parse_time(body["deliveryDateFrom"])
    date_to = parse_time(body["deliveryDateTo"]) if body.get("deliveryDateTo") else None
    if date_to is not None and date_to < date_from:
        raise IikoError(400, "deliveryDateTo is earlier than deliveryDateFrom", "Incorrect")
    revision, by_org = state.orders_by_date(
        list(dict.fromkeys(body["organizationIds"])),
        date_from,
        date_to,
        body.get("statuses"),
        body.get("courierIds"),
        body.get("sourceKeys"),
    )
    return {
        "correlationId": str(uuid.uuid4()),
        "maxRevision": revision,
        "ordersByOrganizations": by_org,
    }


def _by_revision(state: IikoState, body: dict[str, Any]) -> dict[str, Any]:
    for org in body["organizationIds"]:
        state.check_organization(org)
    revision, by_org = state.orders_by_revision(
        list(dict.fromkeys(body["organizationIds"])), body["startRevision"]
    )
    return {
        "correlationId": str(uuid.uuid4()),
        "maxRevision": revision,
        "ordersByOrganizations": by_org,
    }


def _command(path: str) -> Handler:
    def handler(state: IikoState, body: dict[str, Any]) -> dict[str, Any]:
        state.check_organization(body["organizationId"])
        return {"correlationId": state.add_command(path, body)}

    return handler


def _command_status(state: IikoState, body: dict[str, Any]) -> dict[str, Any]:
    return state.command_status(body["organizationId"], body["correlationId"])


def _customer_info(state: IikoState, body: dict[str, Any]) -> dict[str, Any]:
    kind = body["type"]
    value = body.get(kind)
    if not isinstance(value, str) or not value:
        raise IikoError(400, f"{kind} is required for type {kind!r}", "Incorrect")
    if body.get("organizationId"):
        state.check_organization(body["organizationId"])
    return state.customer_info(kind, value)


def _wallet(operation: str) -> Handler:
    def handler(state: IikoState, body: dict[str, Any]) -> dict[str, Any]:
        state.check_organization(body["organizationId"])
        if operation == "hold":
            return {"transactionId": state.hold(body)}
        getattr(state, operation)(body)
        return {}

    return handler


def _webhook_settings(state: IikoState, body: dict[str, Any]) -> dict[str, Any]:
    state.check_organization(body["organizationId"])
    return {"correlationId": str(uuid.uuid4()), **state.webhook_settings(body["organizationId"])}


def _update_webhook_settings(state: IikoState, body: dict[str, Any]) -> dict[str, Any]:
    state.check_organization(body["organizationId"])
    uri = body["webHooksUri"]
    if not uri.startswith(("http://", "https://")):
        raise IikoError(400, "webHooksUri must be an http(s) URL", "Incorrect")
    state.update_webhook_settings(body)
    return {"correlationId": str(uuid.uuid4())}


HANDLERS: dict[str, Handler] = {
    "deliveries/by_id": _by_id,
    "deliveries/by_delivery_date_and_status": _by_date,
    "deliveries/by_revision": _by_revision,
    **{path: _command(path) for path in COMMAND_PATHS},
    "commands/status": _command_status,
    "loyalty/iiko/customer/info": _customer_info,
    "loyalty/iiko/customer/wallet/topup": _wallet("topup"),
    "loyalty/iiko/customer/wallet/chargeoff": _wallet("chargeoff"),
    "loyalty/iiko/customer/wallet/hold": _wallet("hold"),
    "loyalty/iiko/customer/wallet/cancel_hold": _wallet("cancel_hold"),
    "webhooks/settings": _webhook_settings,
    "webhooks/update_settings": _update_webhook_settings,
}
#: Every Cloud API method the emulator serves (``access_token`` included).
PATHS = ("access_token", *HANDLERS)


# ---- ASGI plumbing ----------------------------------------------------------------------


def _iiko(request: Request) -> IikoState:
    return request.app.state.iiko


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise IikoError(400, "Request body is not valid JSON", "Incorrect") from None


def _validate(request: Request, path: str, body: Any) -> None:
    if not request.app.state.validate:
        if not isinstance(body, dict):
            raise IikoError(400, "Request body must be a JSON object", "Incorrect")
        return
    problems = spec.validate_request(path, body)
    if problems:
        raise IikoError(400, "Invalid request body: " + "; ".join(problems), "Incorrect")


def _answer(request: Request, path: str, result: dict[str, Any]) -> Response:
    if request.app.state.check_responses:
        problems = spec.validate_response(path, result)
        if problems:
            return error_response(
                500,
                "Emulator answer does not match the spec: " + "; ".join(problems),
                "InternalServerError",
            )
    return json_response(result)


def _dispatch_pushes(request: Request, pushes: list[Push]) -> None:
    tasks: set[asyncio.Task] = request.app.state.push_tasks
    for push in pushes:
        task = asyncio.get_running_loop().create_task(
            send_webhooks_async(push.url, push.token, push.events)
        )
        tasks.add(task)
        task.add_done_callback(tasks.discard)


def _endpoint(path: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        state = _iiko(request)
        try:
            state.check_token(request.headers.get("authorization"))
            body = await _json_body(request)
            _validate(request, path, body)
            _dispatch_pushes(request, state.settle_due())
            result = handler(state, body)
        except IikoError as exc:
            return error_response(exc.status, exc.description, exc.code)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # Only reachable with validation off: a body the spec would have refused.
            return error_response(
                400, f"Invalid request body ({type(exc).__name__}: {exc})", "Incorrect"
            )
        return _answer(request, path, result)

    return endpoint


async def _access_token(request: Request) -> Response:
    state = _iiko(request)
    try:
        body = await _json_body(request)
        _validate(request, "access_token", body)
        token = state.issue_token(body["apiLogin"])
    except IikoError as exc:
        return error_response(exc.status, exc.description, exc.code)
    return _answer(request, "access_token", {"correlationId": str(uuid.uuid4()), "token": token})


# ---- webhooks: building and sending ---------------------------------------------------


def webhook_bodies(
    events: Iterable[Any], batch_size: int | None = None
) -> Iterator[list[dict[str, Any]] | dict[str, Any]]:
    """Request bodies for ``events``.

    Cloud events (dicts with ``eventType``) are grouped into JSON arrays of
    ``batch_size`` (None: one array for all of them); SOI bodies (other dicts) are
    posted alone; a list is posted as it is.
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    batch: list[dict[str, Any]] = []
    for event in events:
        if isinstance(event, dict) and "eventType" in event:
            batch.append(event)
            if batch_size is not None and len(batch) >= batch_size:
                yield batch
                batch = []
        else:
            yield event
    if batch:
        yield batch


def _auth_headers(token: str | None, bearer: bool) -> dict[str, str]:
    if not token:
        return {}
    return {"Authorization": f"Bearer {token}" if bearer else token}


async def send_webhooks_async(
    url: str,
    token: str | None,
    events: Iterable[Any],
    *,
    batch_size: int | None = None,
    concurrency: int = 1,
    timeout: float = 10.0,
    bearer: bool = False,
) -> dict[str, Any]:
    """POST ``events`` to ``url`` as iiko does, the authToken in ``Authorization``.

    ``events`` and ``batch_size`` as in :func:`webhook_bodies`; ``bearer`` sends
    ``Bearer <token>`` instead of the bare token. Returns the summary of
    :func:`provider_emulators.sender.post_json_async` (``sent``, ``ok``, ``statuses``…).
    """
    return await post_json_async(
        url,
        webhook_bodies(events, batch_size),
        concurrency=concurrency,
        timeout=timeout,
        headers=_auth_headers(token, bearer),
    )


def send_webhooks(
    url: str,
    token: str | None,
    events: Iterable[Any],
    *,
    batch_size: int | None = None,
    concurrency: int = 1,
    timeout: float = 10.0,
    bearer: bool = False,
) -> dict[str, Any]:
    """Blocking :func:`send_webhooks_async` (not callable inside a running event loop)."""
    return asyncio.run(
        send_webhooks_async(
            url,
            token,
            events,
            batch_size=batch_size,
            concurrency=concurrency,
            timeout=timeout,
            bearer=bearer,
        )
    )


def order_ids(count: int, seed: int | str | None = None) -> list[str]:
    """``count`` order ids: stable for a ``seed``, fresh uuid4s without one."""
    if seed is None:
        return [str(uuid.uuid4()) for _ in range(count)]
    return [records.stable_id("order-id", seed, n) for n in range(count)]


def demo_events(
    organization_id: str,
    count: int,
    *,
    seed: int | str | None = None,
    with_order: bool = True,
    soi: bool = False,
    event_type: str = "DeliveryOrderUpdate",
) -> list[dict[str, Any]]:
    """Webhook events for ``count`` generated orders (the ones ``deliveries/by_id`` serves
    for the same ids and organization), without any emulator running."""
    orders = [records.make_order(i, organization_id) for i in order_ids(count, seed)]
    return records.webhook_events(orders, event_type=event_type, with_order=with_order, soi=soi)


# ---- admin ------------------------------------------------------------------------------


class OrderChange(BaseModel):
    """One order to create or change through ``POST /_admin/orders``."""

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID | None = None
    status: Literal[STATUSES] | None = None  # type: ignore[valid-type]
    sum: float | None = Field(None, ge=0)
    number: int | None = Field(None, ge=0, le=2_147_483_647)
    external_number: str | None = None
    phone: str | None = None
    courier_id: uuid.UUID | None = None
    courier_name: str | None = None
    complete_before: str | None = None
    problem: str | None = None
    creation_status: Literal["Success", "InProgress", "Error"] | None = None
    error_message: str | None = None
    fail_commands: bool | None = None
    remove: bool = False

    @field_validator("complete_before")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None and not spec.is_date_time(value):
            raise ValueError("must be yyyy-MM-dd HH:mm:ss.fff")
        return value


class WebhookTarget(BaseModel):
    """Where admin-triggered webhooks go (default: the organization's webhook settings)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    token: str | None = None
    bearer: bool = False
    batch_size: int | None = Field(None, ge=1, le=10_000)
    concurrency: int = Field(1, ge=1, le=256)
    soi: bool = False
    soi_type: Literal["CREATE", "UPDATE"] | None = None
    event_type: str = "DeliveryOrderUpdate"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value


class AdminOrders(WebhookTarget):
    """``POST /_admin/orders``: ``count`` new orders, or the listed ones, in an organization."""

    organization_id: uuid.UUID
    count: int | None = Field(None, ge=1, le=10_000)
    orders: list[OrderChange] | None = None
    delivery_date: date | None = None
    send_webhooks: bool = False
    full: bool = True


class AdminSend(WebhookTarget):
    """``POST /_admin/webhooks/send``: events for orders (by id, or ``count`` new ones)."""

    organization_id: uuid.UUID
    ids: list[uuid.UUID] | None = None
    count: int | None = Field(None, ge=1, le=10_000)
    events: list[Any] | None = None
    without_order: bool = False
    delivery_date: date | None = None


async def _parse(request: Request, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise IikoError(400, problems) from None


def _target(state: IikoState, args: WebhookTarget, org: str) -> tuple[str, str | None]:
    if args.url:
        return args.url, args.token
    target = state.webhook_target(org)
    if target is None:
        raise IikoError(400, f"no url given and organization {org} has no webhook settings")
    return target[0], args.token if args.token is not None else target[1]


async def _send(
    target: tuple[str, str | None], args: WebhookTarget, events: list[Any]
) -> dict[str, Any]:
    return await send_webhooks_async(
        target[0],
        target[1],
        events,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        bearer=args.bearer,
    )


def _admin_call(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except IikoError as exc:
            return admin_error(exc.description, exc.status)

    return endpoint


def _events_for(
    changed: list[tuple[dict[str, Any], bool]], args: WebhookTarget, with_order: bool
) -> list[dict[str, Any]]:
    events = []
    for info, created in changed:
        if args.soi:
            soi_type = args.soi_type or ("CREATE" if created else "UPDATE")
            events.append(records.soi_body(info, soi_type))
        else:
            events.append(records.cloud_event(info, args.event_type, with_order=with_order))
    return events


async def _admin_orders(request: Request) -> Response:
    state = _iiko(request)
    if request.method == "GET":
        return json_response(state.list_orders())
    if request.method == "DELETE":
        return json_response({"reset": state.reset_orders()})
    args: AdminOrders = await _parse(request, AdminOrders)
    if (args.count is None) == (args.orders is None):
        raise IikoError(400, "give exactly one of count or orders")
    org = str(args.organization_id)
    target = _target(state, args, org) if args.send_webhooks else None
    specs = (
        [{} for _ in range(args.count or 0)]
        if args.orders is None
        else [o.model_dump(exclude_none=True) for o in args.orders]
    )
    changed = state.put_orders(org, specs, args.delivery_date)
    answer: dict[str, Any] = {
        "ids": [info["id"] for info, _ in changed],
        "created": [info["id"] for info, created in changed if created],
        "revision": state.revision,
        "webhooks": None,
    }
    if target is not None and changed:
        answer["webhooks"] = await _send(target, args, _events_for(changed, args, args.full))
    return json_response(answer)


async def _admin_order(request: Request) -> Response:
    state = _iiko(request)
    order_id = request.path_params["order_id"]
    if request.method == "DELETE":
        state.remove_order(order_id)
        return json_response({"removed": order_id})
    org = request.query_params.get("organization_id")
    stored = state.stored_order(order_id)
    if stored is None:
        stored = state.get_order(order_id, org or DEFAULT_ORGANIZATION_ID)
    if stored is None:
        return admin_error("not found", 404)
    return json_response(stored)


async def _admin_commands(request: Request) -> Response:
    state = _iiko(request)
    if request.method == "DELETE":
        return json_response({"cleared": state.clear_commands()})
    _dispatch_pushes(request, state.settle_due())
    return json_response(state.list_commands())


async def _admin_send(request: Request) -> Response:
    state = _iiko(request)
    args: AdminSend = await _parse(request, AdminSend)
    if sum(x is not None for x in (args.ids, args.count, args.events)) != 1:
        raise IikoError(400, "give exactly one of ids, count or events")
    org = str(args.organization_id)
    target = _target(state, args, org)
    if args.events is not None:
        events = args.events
    else:
        if args.ids is not None:
            found = [state.get_order(str(i), org) for i in args.ids]
            changed = [(info, False) for info in found if info is not None]
        else:
            changed = state.put_orders(
                org, [{} for _ in range(args.count or 0)], args.delivery_date
            )
        events = _events_for(changed, args, not args.without_order)
    summary = await _send(target, args, events)
    return json_response({**summary, "events": len(events)})


async def _admin_webhooks(request: Request) -> Response:
    return json_response(_iiko(request).all_webhook_settings())


async def _admin_loyalty(request: Request) -> Response:
    return json_response(_iiko(request).loyalty_snapshot())


async def _admin_tokens(request: Request) -> Response:
    return json_response({"expired": _iiko(request).expire_tokens()})


class ConfigChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command_delay: float | None = Field(None, ge=0)
    token_ttl: float | None = Field(None, gt=0)
    push_changes: bool | None = None


async def _admin_config(request: Request) -> Response:
    state = _iiko(request)
    if request.method == "PUT":
        change: ConfigChange = await _parse(request, ConfigChange)
        for key, value in change.model_dump(exclude_none=True).items():
            setattr(state, key, value)
    return json_response(
        {
            "command_delay": state.command_delay,
            "token_ttl": state.token_ttl,
            "push_changes": state.push_changes,
            "validate": request.app.state.validate,
        }
    )


def create_app(
    api_login: str = DEFAULT_API_LOGIN,
    token_ttl: float = 3600,
    command_delay: float = 0.5,
    quota: int | None = None,
    webhook_url: str | None = None,
    auth_token: str | None = None,
    validate: bool = True,
    *,
    check_responses: bool = False,
    organizations: Iterable[str] | None = None,
    push_changes: bool = False,
    seed: int = 0,
) -> Starlette:
    """The iiko Cloud API emulator app.

    ``quota``: accepted requests per access token (per source IP for `access_token`)
    per second (None: none). ``webhook_url``
    / ``auth_token``: webhook settings every organization starts with. ``validate``:
    check request bodies against the spec (400). ``check_responses``: answer 500 when an
    answer would not match the spec. ``organizations``: the only organization ids
    accepted (default: any). ``push_changes``: post a ``DeliveryOrderUpdate`` to the
    organization's webhook URL whenever a command changes an order. ``seed``: fault RNG.

    ``app.state.iiko`` is the :class:`IikoState`, ``app.state.emulator`` the framework's.
    """
    if not api_login:
        raise ValueError("api_login must not be empty")
    if token_ttl <= 0 or command_delay < 0:
        raise ValueError("token_ttl must be > 0 and command_delay >= 0")
    if validate or check_responses:
        spec.load_spec()  # fail at start, not on the first request, when the spec is missing
    state = IikoState(
        api_login,
        token_ttl,
        command_delay,
        webhook_url=webhook_url,
        auth_token=auth_token,
        organizations=organizations,
        push_changes=push_changes,
    )
    routes = [Route(f"{API}access_token", _access_token, methods=["POST"])]
    routes += [
        Route(f"{API}{path}", _endpoint(path, handler), methods=["POST"])
        for path, handler in HANDLERS.items()
    ]
    admin = [
        Route(
            f"{ADMIN_PREFIX}/orders", _admin_call(_admin_orders), methods=["GET", "POST", "DELETE"]
        ),
        Route(
            f"{ADMIN_PREFIX}/orders/{{order_id}}",
            _admin_call(_admin_order),
            methods=["GET", "DELETE"],
        ),
        Route(f"{ADMIN_PREFIX}/commands", _admin_commands, methods=["GET", "DELETE"]),
        Route(f"{ADMIN_PREFIX}/webhooks/send", _admin_call(_admin_send), methods=["POST"]),
        Route(f"{ADMIN_PREFIX}/webhooks", _admin_webhooks, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/loyalty", _admin_loyalty, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/tokens", _admin_tokens, methods=["DELETE"]),
        Route(f"{ADMIN_PREFIX}/config", _admin_call(_admin_config), methods=["GET", "PUT"]),
    ]
    app = build_app(
        PROFILE, routes, extra_admin_routes=admin, quota_per_second=quota or None, seed=seed
    )
    app.state.iiko = state
    app.state.validate = validate
    app.state.check_responses = check_responses
    app.state.push_tasks = set()
    return app
