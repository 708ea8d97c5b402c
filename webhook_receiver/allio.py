"""ALLIO webhooks: payload validation and the handler of `POST /webhooks/allio/{key}`.

Body: `{"uuid": "<integration uuid>", "command": "RESERVE_ADD", "indexes": [111, 222]}`.
Unknown commands are stored (the sync decides what to do with them).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.types import Receive, Scope

from webhook_receiver.config import ReceiverConfig
from webhook_receiver.integration_cache import IntegrationCache
from webhook_receiver.responses import error_body
from webhook_receiver.security import (
    BadContentLength,
    BodyTooLarge,
    ClientGone,
    constant_time_equals,
    is_json_content_type,
    parse_content_length,
    read_body_limited,
)
from webhook_receiver.stores import AllioRow, StoreError, StoreUnavailable, WebhookStore

log = logging.getLogger(__name__)

PROVIDER = "allio"
COMMAND_PATTERN = "^[A-Z][A-Z_]{0,63}$"
MAX_INDEXES = 1000
MAX_INDEX = 2**63 - 1  # BIGINT on the ALLIO side; also keeps digit strings bounded
_COMMAND = re.compile(r"[A-Z][A-Z_]{0,63}")
_INDEXES_RULE = f"must be a non-empty list of at most {MAX_INDEXES} positive integers"


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
    indexes: list[int] = []
    if raw is None:
        problems.append({"field": "indexes", "error": "required"})
    elif not isinstance(raw, list) or not raw or len(raw) > MAX_INDEXES:
        problems.append({"field": "indexes", "error": f"{_INDEXES_RULE} or digit strings"})
    else:
        for position, item in enumerate(raw):
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
            indexes.append(value)

    if problems:
        return problems
    return AllioWebhook(uuid, command, indexes)  # type: ignore[arg-type]


Answer = tuple[int, bytes, tuple[tuple[bytes, bytes], ...]]
_NO_HEADERS: tuple[tuple[bytes, bytes], ...] = ()
_CLOSE = ((b"connection", b"close"),)


def _error(status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = _NO_HEADERS):
    return status, error_body(message), headers


class AllioHandler:
    """`POST /webhooks/allio/{webhook_key}`: validate, store, answer after COMMIT.

    Works on the raw ASGI request (no Starlette Request/Response on the hot path).
    """

    def __init__(self, config: ReceiverConfig, cache: IntegrationCache, store: WebhookStore):
        self.config = config
        self.cache = cache
        self.store = store
        self._retry_after = ((b"retry-after", str(config.retry_after_seconds).encode()),)

    def _unavailable(self) -> Answer:
        return 503, error_body("database unavailable"), self._retry_after

    async def handle(self, scope: Scope, receive: Receive) -> Answer:
        """(status, JSON body, extra headers) for one webhook request."""
        received_at = datetime.now(UTC)
        key = scope["path_params"]["webhook_key"]
        entry = self.cache.get(key)
        if entry is None:
            try:
                entry = await self.cache.lookup(key)
            except StoreUnavailable:
                return self._unavailable()
        if entry is None or not entry.is_active or entry.provider != PROVIDER:
            return _error(404, "no active integration for this webhook URL")

        content_type = content_length = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                content_length = value
        if not is_json_content_type(content_type):
            return _error(415, "Content-Type must be application/json")
        try:
            declared = parse_content_length(content_length)
            body = await read_body_limited(receive, self.config.max_body_bytes, declared)
        except BodyTooLarge:
            return _error(413, f"body larger than {self.config.max_body_bytes} bytes", _CLOSE)
        except BadContentLength:
            return _error(400, "invalid Content-Length", _CLOSE)
        except ClientGone:
            return _error(400, "client disconnected before the body was complete")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _error(400, "body is not valid JSON")
        if not isinstance(payload, dict):
            return _error(400, "body must be a JSON object")

        uuid = payload.get("uuid")
        if isinstance(uuid, str) and not constant_time_equals(uuid, entry.integration_uuid):
            log.warning("allio webhook with a wrong uuid for integration %s", entry.id)
            return _error(403, "uuid does not match this integration")
        webhook = validate_allio(payload)
        if isinstance(webhook, list):
            names = ", ".join(dict.fromkeys(p["field"] for p in webhook))
            return 422, error_body(f"invalid fields: {names}", webhook), _NO_HEADERS

        row = AllioRow(
            integration_id=entry.id,
            integration_uuid=webhook.uuid,
            command=webhook.command,
            external_ids_array=orjson.dumps(webhook.indexes).decode(),
            created_at=received_at,
        )
        try:
            row_id = await self.store.insert_allio(row)
        except StoreUnavailable:
            return self._unavailable()
        except StoreError:
            return _error(500, "webhook could not be stored")
        return 200, b'{"status":"ok","id":%d}' % row_id, _NO_HEADERS
