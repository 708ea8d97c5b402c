"""ALLIO webhooks: payload validation and the handler of `POST /webhooks/allio/{key}`.

Body: `{"uuid": "<integration uuid>", "command": "RESERVE_ADD", "indexes": [111, 222]}`,
taken as ALLIO may send it: `indexes` may also be a JSON string holding the list
(`"[111,222]"`), any number of ids (only the body size limit bounds them; the sync
splits them into tasks of at most 1,000), no `Content-Type` at all (a present one must
be JSON), and `uuid` in any letter case. Unknown commands are stored (the sync ends
their tasks in 3, saying why).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope

from crm_schema.providers.allio import allio_webhook
from webhook_receiver.openapi import Accepted, Operation
from webhook_receiver.responses import describe_json, error_body
from webhook_receiver.security import constant_time_equals
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

PROVIDER = "allio"
INBOX = InboxTable(
    allio_webhook,
    ("integration_uuid", "command", "external_ids_array", "created_at", "integration_id"),
)
COMMAND_PATTERN = "^[A-Z][A-Z_]{0,63}$"
MAX_INDEX = 2**63 - 1  # BIGINT on the ALLIO side; also keeps digit strings bounded
_INDEXES_RULE = (
    "must be a non-empty list of positive integers or digit strings "
    "(or a JSON string holding such a list)"
)
# ASCII letters only: a uuid compare that ignores case must not fold other characters
# (str.lower maps the Kelvin sign to "k").
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _digits_as_int(item: object) -> object:
    """A string of ASCII digits as its int (ALLIO sends some ids so); anything else as is."""
    if isinstance(item, str) and 0 < len(item) <= 19 and item.isascii() and item.isdigit():
        return int(item)
    return item


def _list_from_json_text(raw: object) -> object:
    """`indexes` sent as a JSON string holding the list (`"[111,222]"`) → the list."""
    if isinstance(raw, str):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ValueError(_INDEXES_RULE) from None
    return raw


Index = Annotated[
    int,
    BeforeValidator(_digits_as_int),
    # strict: true, 1.0 and "1e3" are not ids.
    Field(strict=True, gt=0, le=MAX_INDEX),
]


class AllioWebhookPayload(BaseModel):
    """The body ALLIO posts for every change (seed 000, 4.1). Other keys are ignored."""

    model_config = ConfigDict(extra="ignore", title="AllioWebhook")

    uuid: str = Field(
        description="The integration uuid; must equal the integration's, in any letter case.",
        examples=["0b7d6c3e-1f2a-4b5c-9d8e-7f6a5b4c3d2e"],
    )
    command: str = Field(
        pattern=COMMAND_PATTERN,
        description="RESERVE_ADD|MOD|DEL, DEALCARD_ADD|MOD|DEL, SPACE_CHANGED; others are "
        "stored and their tasks end in 3 (`unknown command X`).",
        examples=["RESERVE_ADD"],
    )
    indexes: Annotated[
        list[Index], Field(min_length=1, fail_fast=True), BeforeValidator(_list_from_json_text)
    ] = Field(
        description="ALLIO ids (numbers or digit strings), or that list as a JSON string. "
        "Any number of them: the body size limit bounds it.",
        examples=[[111, 222], "[111,222]"],
    )


def uuid_matches(given: str, expected: str | None) -> bool:
    """`uuid` against the integration's, ignoring ASCII letter case, in constant time."""
    if expected is None:
        return False
    return constant_time_equals(given.translate(_ASCII_LOWER), expected.translate(_ASCII_LOWER))


_MESSAGES = {
    "missing": "required",
    "string_type": "must be a string",
    "string_pattern_mismatch": f"must match {COMMAND_PATTERN}",
}


def _problem(error: ErrorDetails) -> dict[str, str]:
    loc = error["loc"]
    field = str(loc[0]) if loc else "body"
    if field == "indexes" and len(loc) > 1:
        # Described, never serialised: an item may be nested 1,000 levels deep.
        item = describe_json(error["input"])
        return {
            "field": field,
            "error": f"item {loc[1]} ({item}) is not a positive integer or digit string",
        }
    if field == "indexes" and error["type"] != "missing":
        return {"field": field, "error": _INDEXES_RULE}
    return {"field": field, "error": _MESSAGES.get(error["type"], error["msg"])}


def validate_allio(payload: dict[str, Any]) -> AllioWebhookPayload | list[dict[str, str]]:
    """The validated webhook, or every problem found as `[{"field", "error"}]`."""
    try:
        return AllioWebhookPayload.model_validate(payload)
    except ValidationError as exc:
        return [_problem(e) for e in exc.errors(include_url=False, include_context=False)]


class AllioHandler(WebhookHandler):
    """`POST /webhooks/allio/{webhook_key}`: validate, store, answer after COMMIT."""

    provider = PROVIDER

    async def handle(self, scope: Scope, receive: Receive) -> Answer:
        """(status, JSON body, extra headers) for one webhook request."""
        received_at = datetime.now(UTC)
        key = scope["path_params"]["webhook_key"]
        entry = self.cached_integration(key) or await self.integration(key)
        if not isinstance(entry, IntegrationEntry):
            return entry
        body = await self.read_body(scope, receive)
        if isinstance(body, tuple):
            return body
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return answer(400, "body is not valid JSON")
        if not isinstance(payload, dict):
            return answer(400, "body must be a JSON object")

        uuid = payload.get("uuid")
        if isinstance(uuid, str) and not uuid_matches(uuid, entry.integration_uuid):
            log.warning("allio webhook with a wrong uuid for integration %s", entry.id)
            return answer(403, "uuid does not match this integration")
        webhook = validate_allio(payload)
        if isinstance(webhook, list):
            names = ", ".join(dict.fromkeys(p["field"] for p in webhook))
            return 422, error_body(f"invalid fields: {names}", webhook), NO_HEADERS

        row = InboxRow(
            INBOX,
            (
                webhook.uuid,
                webhook.command,
                orjson.dumps(webhook.indexes).decode(),
                received_at,
                entry.id,
            ),
            entry.id,
        )
        try:
            row_id = await self.store_row(row)
        except STORE_ERRORS as exc:
            return self.store_failed(exc)
        return 200, b'{"status":"ok","id":%d}' % row_id, NO_HEADERS


OPERATIONS = (
    Operation(
        path="/webhooks/allio/{webhook_key}",
        method="post",
        summary="An ALLIO change: stored, then synced",
        description="Answered 200 only after the `allio_webhook` row is committed; "
        "every refusal writes nothing. A body without Content-Type is read as JSON.",
        body=AllioWebhookPayload,
        ok=Accepted,
        errors={
            400: "Not JSON, or not a JSON object.",
            403: "The uuid is not this integration's.",
            404: "Unknown or disabled webhook key.",
            413: "Body over the size limit.",
            415: "A Content-Type that is not JSON.",
            422: "Fields that are wrong, each named.",
            503: "The database could not commit in time; retry after Retry-After.",
        },
        path_params={"webhook_key": "The integration's webhook key."},
        tags=(PROVIDER,),
    ),
)


def routes(receiver: Receiver) -> list[BaseRoute]:
    """ALLIO's webhook route."""
    endpoint = receiver.endpoint(lambda r: AllioHandler(r.config, r.cache, r.store, r.deadlines))
    return [Route("/webhooks/allio/{webhook_key}", endpoint, methods=["POST"])]
