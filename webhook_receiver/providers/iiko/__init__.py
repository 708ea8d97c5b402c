"""iiko webhooks (seed 001): the Cloud API's event arrays and the SOI CREATE / UPDATE object.

Two routes take the same bodies:

- `POST /api/v1/webhooks/iiko` (the seed's path): the integration is the active iiko
  integration whose `webhook_secret` equals the token, compared in constant time with
  every candidate (no early exit that tells which one matched);
- `POST /webhooks/iiko/{webhook_key}`: the key finds the integration, the token must be
  its secret.

The token (iiko's `authToken`) comes in `Authorization` (bare or `Bearer <token>`) or
an `authToken` header; a wrong or missing one is a 401 and writes nothing.

Each event becomes one `webhook_events` row; the answer `{"status": "OK"}` comes only
after every row of the request is committed (iiko retries anything else, so a failed
commit is a 503 and the events arrive again: at least once). A body that is not JSON
is answered `{"status": "ignored"}` as the seed asks — but kept, never dropped: one row
holds the raw bytes and the parse error. JSON of the wrong shape is a 422 naming every
problem, with nothing written.

iiko's operator API routes (commands, received events) are in `.operator`, offered to
webhook_receiver.operator_api from here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope

from crm_schema.providers.iiko import webhook_events
from crm_sync.providers.iiko import EVENT_TYPES
from webhook_receiver.openapi import Operation
from webhook_receiver.providers.iiko import operator
from webhook_receiver.responses import describe_json, error_body
from webhook_receiver.stores import InboxRow, InboxTable, IntegrationEntry
from webhook_receiver.webhooks import (
    NO_HEADERS,
    STORE_ERRORS,
    Answer,
    WebhookHandler,
    answer,
)

if TYPE_CHECKING:
    from webhook_receiver.app import Receiver

log = logging.getLogger(__name__)

# iiko's part of the operator API (webhook_receiver.operator_api).
operator_routes = operator.operator_routes
OPERATOR_OPERATIONS = operator.OPERATOR_OPERATIONS
OPERATOR_QUERY_PARAMS = operator.OPERATOR_QUERY_PARAMS
OPERATOR_REQUIRED_QUERY_PARAMS = operator.OPERATOR_REQUIRED_QUERY_PARAMS
OPERATOR_ACCEPTED_PATHS = operator.OPERATOR_ACCEPTED_PATHS

PROVIDER = "iiko"
SEED_PATH = "/api/v1/webhooks/iiko"
KEY_PATH = "/webhooks/iiko/{webhook_key}"
INBOX = InboxTable(
    webhook_events,
    (
        "integration_id",
        "event_type",
        "order_external_id",
        "iiko_order_id",
        "organization_id",
        "correlation_id",
        "event_time",
        "payload",
        "raw_body",
        "received_at",
        "processing_error",
    ),
)
# The Cloud API's event types (x-webhooks) and the seed's; others are stored all the same.
CLOUD_EVENT_TYPES = EVENT_TYPES
# Events whose `eventInfo` is an order (OrderInfo): its `id` / `externalNumber` are kept
# in columns. A reserve's or a shift's id is not an order id, so those stay in `payload`.
ORDER_EVENT_TYPES = frozenset(
    {
        "DeliveryOrderUpdate",
        "DeliveryOrderError",
        "TableOrderUpdate",
        "TableOrderError",
        "OrderChanged",
        "DeliveryOrderChanged",
    }
)
SOI_TYPES = ("CREATE", "UPDATE")
OK_STATUS = b"OK"
IGNORED_STATUS = b"ignored"
MAX_PROBLEMS = 50
RAW_PREFIX = "base64:"
UNAUTHORIZED = answer(401, "missing or wrong iiko authToken")
SHAPE_RULE = (
    "must be a JSON array of iiko events (objects with eventType) "
    "or an SOI object with type CREATE or UPDATE"
)


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL: refused here (422), not by the database (500).
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _event_time(value: object) -> object:
    """`yyyy-MM-dd HH:mm:ss.fff` (UTC, as iiko sends it) or ISO 8601 → aware UTC datetime."""
    if value is None or isinstance(value, datetime):
        return value
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError("must be a string 'yyyy-MM-dd HH:mm:ss.fff' (UTC)")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError("must be a date and time 'yyyy-MM-dd HH:mm:ss.fff' (UTC)") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


ColumnId = Annotated[str, StringConstraints(max_length=64), AfterValidator(_no_nul)]
ExternalId = Annotated[str, StringConstraints(max_length=255), AfterValidator(_no_nul)]
EventType = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_no_nul)]
EventTime = Annotated[
    datetime,
    BeforeValidator(_event_time),
    WithJsonSchema(
        {
            "type": "string",
            "format": "yyyy-MM-dd HH:mm:ss.fff",
            "description": "Event date and time (UTC).",
            "examples": ["2019-08-24 14:15:22.123"],
        }
    ),
]


class IikoOrderInfo(BaseModel):
    """`eventInfo` of an order event (the spec's OrderInfo); other keys are kept as sent."""

    model_config = ConfigDict(extra="allow", title="IikoOrderInfo")

    id: ColumnId | None = Field(None, description="iiko order id (uuid).")
    externalNumber: ExternalId | None = Field(None, description="The order's external number.")
    organizationId: str | None = None
    timestamp: int | None = Field(None, description="Revision of the order.")
    creationStatus: str | None = None
    errorInfo: Any = None
    order: dict[str, Any] | None = Field(None, description="The order (status, sum, ...).")


class IikoCloudEvent(BaseModel):
    """One event of the array the iiko Cloud API posts (x-webhooks); other keys are kept."""

    model_config = ConfigDict(extra="allow", title="IikoCloudEvent")

    eventType: EventType = Field(
        description="One of " + ", ".join(CLOUD_EVENT_TYPES) + "; other types are stored too.",
        examples=["DeliveryOrderUpdate"],
    )
    eventTime: EventTime | None = None
    organizationId: ColumnId | None = None
    correlationId: ColumnId | None = None
    eventInfo: IikoOrderInfo | dict[str, Any] | None = Field(
        None,
        union_mode="left_to_right",
        description="Event details: an IikoOrderInfo for order events "
        "(DeliveryOrder*, TableOrder*, OrderChanged, DeliveryOrderChanged).",
    )


class IikoSoiTransactionDetails(BaseModel):
    """`transactionDetails` of an SOI body."""

    model_config = ConfigDict(extra="allow")

    correlationId: ColumnId | None = None
    organizationId: ColumnId | None = None


class IikoSoiOrderDetails(BaseModel):
    """`iikoOrderDetails` of an SOI body."""

    model_config = ConfigDict(extra="allow")

    iikoOrderId: ColumnId | None = None
    iikoOrderNumber: str | int | None = None
    restaurantName: str | None = None
    orderType: str | None = Field(None, examples=["DELIVERY"])
    orderStatus: str | None = Field(None, examples=["COOKING_STARTED"])
    receivedAt: str | None = None
    promisedTime: str | None = None
    problem: Any = None
    orderAmount: Annotated[Decimal, Field(allow_inf_nan=False)] | None = Field(
        None, examples=[1520.50]
    )


class IikoSoiEvent(BaseModel):
    """The seed's SOI-style body: one object, `type` CREATE or UPDATE."""

    model_config = ConfigDict(extra="allow", title="IikoSoiEvent")

    type: Literal["CREATE", "UPDATE"]
    orderExternalId: ExternalId | None = Field(None, examples=["20200831-515"])
    readableNumber: str | int | None = Field(None, examples=["515"])
    creationStatus: str | None = Field(None, examples=["OK"])
    errorInfo: Any = None
    transactionDetails: IikoSoiTransactionDetails | None = None
    iikoOrderDetails: IikoSoiOrderDetails | None = None


class IikoWebhookBody(RootModel[list[IikoCloudEvent] | IikoSoiEvent]):
    """A Cloud API event array, or one SOI object."""

    model_config = ConfigDict(title="IikoWebhook")


class IikoAccepted(BaseModel):
    """Every event is stored (committed); or, for a body that is not JSON, `ignored`
    (the raw body is kept in a row marked with the parse error)."""

    status: Literal["OK", "ignored"] = Field(examples=["OK"])
    ids: list[int] = Field(
        description="The `webhook_events` rows written, in the order of the events.",
        examples=[[101, 102]],
    )


# -- parsing --------------------------------------------------------------------------------

Problems = list[dict[str, str]]
# (event_type, order_external_id, iiko_order_id, organization_id, correlation_id,
#  event_time, payload)
Fields = tuple[str | None, str | None, str | None, str | None, str | None, datetime | None, Any]


def _loc(prefix: str, loc: tuple[int | str, ...]) -> str:
    text = prefix
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "body"


# Union branch names pydantic puts in error locations (`eventInfo.IikoOrderInfo.id`).
_UNION_TAGS = frozenset({"IikoOrderInfo"})


def _problems(exc: ValidationError, prefix: str = "") -> Problems:
    out: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        # A union's branch names in the location say nothing to the sender; each field
        # is named once (with its first branch's message).
        loc = tuple(p for p in error["loc"] if p not in _UNION_TAGS and "[" not in str(p))
        out.setdefault(_loc(prefix, loc), error["msg"])
    return [{"field": field, "error": message} for field, message in out.items()]


def _cloud_event(item: dict[str, Any], prefix: str) -> Fields | Problems:
    try:
        event = IikoCloudEvent.model_validate(item)
    except ValidationError as exc:
        return _problems(exc, prefix)
    order_id = external = None
    info = item.get("eventInfo")
    if event.eventType in ORDER_EVENT_TYPES and info is not None:
        try:
            order_info = IikoOrderInfo.model_validate(info)
        except ValidationError as exc:
            return _problems(exc, f"{prefix}.eventInfo" if prefix else "eventInfo")
        order_id, external = order_info.id, order_info.externalNumber
    return (
        event.eventType,
        external,
        order_id,
        event.organizationId,
        event.correlationId,
        event.eventTime,
        item,
    )


def _soi_event(item: dict[str, Any]) -> Fields | Problems:
    try:
        event = IikoSoiEvent.model_validate(item)
    except ValidationError as exc:
        return _problems(exc)
    tx, details = event.transactionDetails, event.iikoOrderDetails
    return (
        event.type,
        event.orderExternalId,
        details.iikoOrderId if details else None,
        tx.organizationId if tx else None,
        tx.correlationId if tx else None,
        None,
        item,
    )


def parse_events(payload: Any) -> list[Fields] | Problems:
    """The events of a parsed body, each as its row's fields, or every problem found.

    An empty list of events is fine (nothing to store); a problems list is never empty.
    """
    if isinstance(payload, dict):
        if "type" in payload:
            result = _soi_event(payload)
        elif "eventType" in payload:  # one Cloud event sent without its array
            result = _cloud_event(payload, "")
        else:
            return [{"field": "body", "error": SHAPE_RULE}]
        return [result] if isinstance(result, tuple) else result
    if not isinstance(payload, list):
        return [{"field": "body", "error": f"{SHAPE_RULE}, not {describe_json(payload)}"}]
    events: list[Fields] = []
    problems: Problems = []
    for i, item in enumerate(payload):
        if not isinstance(item, dict):
            problems.append(
                {"field": f"[{i}]", "error": f"must be an event object, not {describe_json(item)}"}
            )
            continue
        result = _cloud_event(item, f"[{i}]")
        if isinstance(result, tuple):
            events.append(result)
        else:
            problems.extend(result)
        if len(problems) >= MAX_PROBLEMS:
            break
    return problems[:MAX_PROBLEMS] if problems else events


def raw_text(body: bytes) -> str:
    """The body as text, losslessly: UTF-8 as is, anything else (bytes that are not
    UTF-8, NUL, text that starts with the prefix) as `base64:<base64>`."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text or text.startswith(RAW_PREFIX):
        return RAW_PREFIX + base64.b64encode(body).decode("ascii")
    return text


def _short(reason: str, limit: int = 200) -> str:
    return reason if len(reason) <= limit else reason[:limit] + "…"


# -- tokens ---------------------------------------------------------------------------------


def _strip_bearer(value: bytes) -> bytes:
    value = value.strip(b" \t")
    if value[:7].lower() == b"bearer ":
        return value[7:].strip(b" \t")
    return value


def request_tokens(scope: Scope) -> list[bytes]:
    """The tokens a request offers: `Authorization` (bare or Bearer), then `authToken`."""
    tokens = []
    for name, value in scope["headers"]:
        if name == b"authorization" or name == b"authtoken":
            token = _strip_bearer(value) if name == b"authorization" else value.strip(b" \t")
            if token:
                tokens.append(token)
    return tokens


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def token_matches(tokens: list[bytes], secret: str | None) -> bool:
    """Whether any offered token equals ``secret``, in constant time (digests compared,
    so not even the secret's length shows)."""
    if secret is None or not secret:
        return False
    expected = _digest(secret.encode("utf-8"))
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(_digest(token), expected)
    return matched


# -- the handler ----------------------------------------------------------------------------


class IikoHandler(WebhookHandler):
    """Both iiko routes: authenticate, parse, store every event, answer after COMMIT."""

    provider = PROVIDER

    def by_token(self, tokens: list[bytes]) -> IntegrationEntry | Answer:
        """The one active iiko integration whose secret a token equals.

        Every candidate is compared (no early exit), so the time taken does not tell
        which integration, if any, matched.
        """
        if not self.cache.loaded:
            return self.unavailable("integrations not loaded yet")
        if not tokens:
            return UNAUTHORIZED
        digests = [_digest(t) for t in tokens]
        found: list[IntegrationEntry] = []
        for entry in self.cache.active_entries(PROVIDER):
            secret = entry.webhook_secret
            expected = _digest(secret.encode("utf-8")) if secret else b""
            matched = False
            for digest in digests:
                matched |= hmac.compare_digest(digest, expected)
            if matched:
                found.append(entry)
        if not found:
            return UNAUTHORIZED
        if len(found) > 1:
            ids = ", ".join(str(e.id) for e in found)
            log.warning("iiko authToken shared by integrations %s: refused", ids)
            return answer(
                409,
                "this authToken belongs to several iiko integrations: "
                "post to each integration's /webhooks/iiko/{key} URL instead",
            )
        return found[0]

    async def handle(self, scope: Scope, receive: Receive) -> Answer:
        """(status, JSON body, extra headers) for one webhook request."""
        received_at = datetime.now(UTC)
        tokens = request_tokens(scope)
        key = scope.get("path_params", {}).get("webhook_key")
        if key is None:
            entry = self.by_token(tokens)
        else:
            entry = self.cached_integration(key) or await self.integration(key)
            if isinstance(entry, IntegrationEntry) and not token_matches(
                tokens, entry.webhook_secret
            ):
                log.warning(
                    "iiko webhook with a missing or wrong token for integration %s", entry.id
                )
                return UNAUTHORIZED
        if not isinstance(entry, IntegrationEntry):
            return entry
        body = await self.read_body(scope, receive)
        if isinstance(body, tuple):
            return body
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return await self._keep_unparsed(entry, body, str(exc), received_at)
        events = parse_events(payload)
        if events and isinstance(events[0], dict):
            problems: Problems = events  # type: ignore[assignment]
            names = ", ".join(dict.fromkeys(p["field"] for p in problems[:10]))
            return 422, error_body(f"invalid webhook body: {names}", problems), NO_HEADERS
        rows = []
        for fields in events:
            event_type, external, order_id, org, correlation, event_time, item = fields  # type: ignore[misc]
            try:
                payload_text = orjson.dumps(item).decode()
            except orjson.JSONEncodeError:  # nested deeper than orjson writes (254 levels)
                return 422, error_body("an event is nested too deeply to store"), NO_HEADERS
            values = (
                entry.id,
                event_type,
                external,
                order_id,
                org,
                correlation,
                event_time,
                payload_text,
                None,
                received_at,
                None,
            )
            rows.append(InboxRow(INBOX, values, entry.id))
        return await self._store(rows, OK_STATUS)

    async def _keep_unparsed(
        self, entry: IntegrationEntry, body: bytes, reason: str, received_at: datetime
    ) -> Answer:
        log.warning("iiko webhook body for integration %s is not JSON: kept raw", entry.id)
        values = (
            entry.id,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            raw_text(body),
            received_at,
            f"body is not valid JSON: {_short(reason)}",
        )
        return await self._store([InboxRow(INBOX, values, entry.id)], IGNORED_STATUS)

    async def _store(self, rows: list[InboxRow], status: bytes) -> Answer:
        """Queue every row at once (one group commit), answer once all are committed,
        naming the rows written."""
        ids: list[int] = []
        if rows:
            futures = [self.store_row(row) for row in rows]
            results = await asyncio.gather(*futures, return_exceptions=True)
            for result in results:
                if isinstance(result, STORE_ERRORS):
                    return self.store_failed(result)
                if isinstance(result, BaseException):
                    raise result
                ids.append(result)
        return 200, b'{"status":"%s","ids":%s}' % (status, orjson.dumps(ids)), NO_HEADERS


_ERRORS = {
    400: "Invalid Content-Length, or the client went away mid-body.",
    401: "Missing or wrong authToken (Authorization: bare or Bearer, or authToken).",
    413: "Body over the size limit.",
    415: "A Content-Type that is not JSON.",
    422: "JSON of the wrong shape: every problem named; nothing stored.",
    503: "The database could not commit in time; retry after Retry-After.",
}
_DESCRIPTION = (
    "A JSON array of Cloud API events or one SOI object (type CREATE / UPDATE). One "
    '`webhook_events` row per event, all committed before the 200 `{"status": "OK"}`; '
    "an empty array stores nothing. A body that is not JSON is answered 200 "
    '`{"status": "ignored"}` and kept raw in a row marked with the parse error.'
)

OPERATIONS = (
    Operation(
        path=SEED_PATH,
        method="post",
        summary="iiko events, integration found by its authToken",
        description=_DESCRIPTION + " The integration is the active iiko integration whose "
        "webhook token equals the authToken.",
        body=IikoWebhookBody,
        ok=IikoAccepted,
        errors=_ERRORS | {409: "The authToken belongs to several integrations."},
        tags=(PROVIDER,),
    ),
    Operation(
        path=KEY_PATH,
        method="post",
        summary="iiko events for one integration",
        description=_DESCRIPTION + " The authToken must be this integration's webhook token.",
        body=IikoWebhookBody,
        ok=IikoAccepted,
        errors=_ERRORS | {404: "Unknown or disabled webhook key."},
        path_params={"webhook_key": "The integration's webhook key."},
        tags=(PROVIDER,),
    ),
)


def routes(receiver: Receiver) -> list[BaseRoute]:
    """iiko's webhook routes."""
    endpoint = receiver.endpoint(lambda r: IikoHandler(r.config, r.cache, r.store, r.deadlines))
    return [
        Route(SEED_PATH, endpoint, methods=["POST"]),
        Route(KEY_PATH, endpoint, methods=["POST"]),
    ]
