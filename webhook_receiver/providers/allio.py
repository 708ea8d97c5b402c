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
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope

from crm_schema.providers.allio import allio_webhook
from webhook_receiver.responses import error_body
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
_COMMAND = re.compile(r"[A-Z][A-Z_]{0,63}")
_INDEXES_RULE = (
    "must be a non-empty list of positive integers or digit strings "
    "(or a JSON string holding such a list)"
)
# ASCII letters only: a uuid compare that ignores case must not fold other characters
# (str.lower maps the Kelvin sign to "k").
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True, slots=True)
class AllioWebhook:
    """A validated ALLIO webhook."""

    uuid: str
    command: str
    indexes: list[int]


def _index_value(item: object) -> int | None:
    """A positive int from an int or a string of ASCII digits; None when invalid."""
    if type(item) is int:  # bool is a subclass of int and is refused here
        value = item
    elif isinstance(item, str) and 0 < len(item) <= 19 and item.isascii() and item.isdigit():
        value = int(item)
    else:
        return None
    return value if 0 < value <= MAX_INDEX else None


def uuid_matches(given: str, expected: str | None) -> bool:
    """`uuid` against the integration's, ignoring ASCII letter case, in constant time."""
    if expected is None:
        return False
    return constant_time_equals(given.translate(_ASCII_LOWER), expected.translate(_ASCII_LOWER))


def _index_list(raw: object) -> list[Any] | None:
    """`indexes` as a list: a list, or a JSON string holding one; None otherwise."""
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
    return raw if isinstance(raw, list) else None


def validate_allio(payload: dict[str, Any]) -> AllioWebhook | list[dict[str, str]]:
    """The validated webhook, or every problem found as `[{"field", "error"}]`."""
    problems: list[dict[str, str]] = []

    uuid = payload.get("uuid")
    if uuid is None:
        problems.append({"field": "uuid", "error": "required"})
    elif not isinstance(uuid, str):
        problems.append({"field": "uuid", "error": "must be a string"})

    command = payload.get("command")
    if command is None:
        problems.append({"field": "command", "error": "required"})
    elif not isinstance(command, str):
        problems.append({"field": "command", "error": "must be a string"})
    elif _COMMAND.fullmatch(command) is None:
        problems.append({"field": "command", "error": f"must match {COMMAND_PATTERN}"})

    raw = payload.get("indexes")
    items = None if raw is None else _index_list(raw)
    indexes: list[int] = []
    if raw is None:
        problems.append({"field": "indexes", "error": "required"})
    elif not items:
        problems.append({"field": "indexes", "error": _INDEXES_RULE})
    else:
        append = indexes.append
        for position, item in enumerate(items):
            if type(item) is int and 0 < item <= MAX_INDEX:  # the common case, inline
                append(item)
                continue
            value = _index_value(item)
            if value is None:
                problems.append(
                    {
                        "field": "indexes",
                        "error": f"item {position} ({orjson.dumps(item).decode()[:40]}) "
                        "is not a positive integer or digit string",
                    }
                )
                break
            append(value)

    if problems:
        return problems
    return AllioWebhook(uuid, command, indexes)  # type: ignore[arg-type]


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


def routes(receiver: Receiver) -> list[BaseRoute]:
    """ALLIO's webhook route."""
    endpoint = receiver.endpoint(lambda r: AllioHandler(r.config, r.cache, r.store, r.deadlines))
    return [Route("/webhooks/allio/{webhook_key}", endpoint, methods=["POST"])]
