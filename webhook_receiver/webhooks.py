"""What every provider's webhook handler shares: the raw-ASGI hot path, written once.

A handler works on the raw ASGI request (no Starlette Request/Response objects), so
the hot path stays a few function calls long: find the integration by the key in the
URL, check the content type and read the body within the limit, validate, then store
one inbox row and answer only after its COMMIT — or 503 with `Retry-After` when the
database cannot take it in time, never a hung request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from starlette.types import Receive, Scope, Send

from webhook_receiver.config import ReceiverConfig
from webhook_receiver.integration_cache import IntegrationCache
from webhook_receiver.responses import error_body, send_json
from webhook_receiver.security import (
    BadContentLength,
    BodyTooLarge,
    ClientGone,
    is_json_content_type,
    parse_content_length,
    read_body_limited,
)
from webhook_receiver.stores import (
    InboxRow,
    IntegrationEntry,
    StoreError,
    StoreUnavailable,
    WebhookStore,
)

if TYPE_CHECKING:
    from webhook_receiver.app import Receiver

Headers = tuple[tuple[bytes, bytes], ...]
Answer = tuple[int, bytes, Headers]
NO_HEADERS: Headers = ()
CLOSE: Headers = ((b"connection", b"close"),)


def answer(status: int, message: str, headers: Headers = NO_HEADERS) -> Answer:
    """An error answer: `{"error": message}`."""
    return status, error_body(message), headers


class Handler(Protocol):
    """One webhook route's logic."""

    async def handle(self, scope: Scope, receive: Receive) -> Answer: ...


class WebhookHandler:
    """Base of provider handlers: integration lookup, body reading, storing with a deadline."""

    provider = ""

    def __init__(self, config: ReceiverConfig, cache: IntegrationCache, store: WebhookStore):
        self.config = config
        self.cache = cache
        self.store = store
        self._retry_after = ((b"retry-after", str(config.retry_after_seconds).encode()),)

    def unavailable(self, message: str = "database unavailable") -> Answer:
        """503 with `Retry-After`: the sender should try again."""
        return 503, error_body(message), self._retry_after

    async def integration(self, key: str) -> IntegrationEntry | Answer:
        """The active integration of this provider behind a webhook key, or the answer."""
        entry = self.cache.get(key)
        if entry is None:
            try:
                entry = await self.cache.lookup(key)
            except StoreUnavailable:
                return self.unavailable()
        if entry is None or not entry.is_active or entry.provider != self.provider:
            return answer(404, "no active integration for this webhook URL")
        return entry

    async def read_body(
        self, scope: Scope, receive: Receive, *, json_required: bool = True
    ) -> bytes | Answer:
        """The body, within the size limit and (when required) sent as JSON."""
        content_type = content_length = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                content_length = value
        if json_required and not is_json_content_type(content_type):
            return answer(415, "Content-Type must be application/json")
        try:
            declared = parse_content_length(content_length)
            return await read_body_limited(receive, self.config.max_body_bytes, declared)
        except BodyTooLarge:
            return answer(413, f"body larger than {self.config.max_body_bytes} bytes", CLOSE)
        except BadContentLength:
            return answer(400, "invalid Content-Length", CLOSE)
        except ClientGone:
            return answer(400, "client disconnected before the body was complete")

    async def store_row(self, row: InboxRow) -> int | Answer:
        """Store one inbox row; its id once committed, else the answer (503 / 500).

        The wait is bounded: a database that does not commit in time gets the request
        a 503, and a row whose request gave up before its batch started is never written.
        """
        wait = self.config.commit_timeout_seconds
        row.deadline = time.monotonic() + max(0.0, wait - self.config.commit_margin_seconds)
        future = self.store.insert(row)
        try:
            return await asyncio.wait_for(future, wait)
        except TimeoutError:
            return self.unavailable("database did not commit in time")
        except StoreUnavailable:
            return self.unavailable()
        except StoreError:
            return answer(500, "webhook could not be stored")


class WebhookEndpoint:
    """The ASGI endpoint of one route: its handler exists while the receiver runs."""

    def __init__(self, factory: Callable[[Receiver], Handler]) -> None:
        self.factory = factory
        self.handler: Handler | None = None

    def start(self, receiver: Receiver) -> None:
        self.handler = self.factory(receiver)

    def stop(self) -> None:
        self.handler = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.handler
        if handler is None:
            status, body, headers = 503, error_body("receiver not started"), NO_HEADERS
        else:
            status, body, headers = await handler.handle(scope, receive)
        await send_json(send, status, body, headers)
