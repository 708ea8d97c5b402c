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
from collections import deque
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
    is_webhook_key,
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
STORE_ERRORS = (StoreUnavailable, StoreError)
CLOSE: Headers = ((b"connection", b"close"),)


def answer(status: int, message: str, headers: Headers = NO_HEADERS) -> Answer:
    """An error answer: `{"error": message}`."""
    return status, error_body(message), headers


NOT_FOUND = answer(404, "no active integration for this webhook URL")


class Deadlines:
    """Fails the commits that outlive their request's deadline, all with one timer.

    Every request waits the same time, so deadlines arrive in order and a deque is
    enough: each tick drops the finished head and fails what has expired (the store
    then never writes those rows). Much cheaper on the hot path than a timer each.
    """

    def __init__(self, tick_seconds: float = 0.1) -> None:
        self.tick_seconds = tick_seconds
        self._waiting: deque[tuple[float, asyncio.Future[int]]] = deque()

    def watch(self, future: asyncio.Future[int], deadline: float) -> None:
        """Fail ``future`` with StoreUnavailable unless it is done by ``deadline``."""
        waiting = self._waiting
        # Commits finish in order: drop the finished head now, so nothing is kept alive.
        while waiting and waiting[0][1].done():
            waiting.popleft()
        waiting.append((deadline, future))

    def expire(self, now: float) -> int:
        """One tick's work; returns how many commits it failed."""
        waiting, failed = self._waiting, 0
        while waiting and (waiting[0][1].done() or waiting[0][0] <= now):
            _, future = waiting.popleft()
            if not future.done():
                future.set_exception(StoreUnavailable("database did not commit in time"))
                failed += 1
        return failed

    async def run(self) -> None:
        """Tick forever (cancel to stop)."""
        while True:
            await asyncio.sleep(self.tick_seconds)
            self.expire(time.monotonic())


class Handler(Protocol):
    """One webhook route's logic."""

    async def handle(self, scope: Scope, receive: Receive) -> Answer: ...


class WebhookHandler:
    """Base of provider handlers: integration lookup, body reading, storing with a deadline."""

    provider = ""

    def __init__(
        self,
        config: ReceiverConfig,
        cache: IntegrationCache,
        store: WebhookStore,
        deadlines: Deadlines | None = None,
    ):
        self.config = config
        self.cache = cache
        self.store = store
        self.deadlines = deadlines
        self._retry_after = ((b"retry-after", str(config.retry_after_seconds).encode()),)
        # The longest a request waits for its COMMIT: one timeout, counted from when its
        # row is queued (a store may promise less than the commit timeout: SQLite gives up
        # on its lock after the busy timeout).
        self._commit_seconds = min(
            config.commit_timeout_seconds,
            getattr(store, "commit_wait_seconds", config.commit_timeout_seconds),
        )

    def unavailable(self, message: str = "database unavailable") -> Answer:
        """503 with `Retry-After`: the sender should try again."""
        return 503, error_body(message), self._retry_after

    def cached_integration(self, key: str) -> IntegrationEntry | Answer | None:
        """Like `integration`, from memory only (None: not cached); no await on the hot path.

        A string that cannot be a webhook key is a 404 here already (never None).
        """
        if not is_webhook_key(key):
            return NOT_FOUND
        entry = self.cache.get(key)
        return None if entry is None else self._usable(entry)

    async def integration(self, key: str) -> IntegrationEntry | Answer:
        """The active integration of this provider behind a webhook key, or the answer.

        A key that is not `[A-Za-z0-9_-]{1,128}` (what `secrets.token_urlsafe` makes) is a
        404 before any cache or database lookup: e.g. PostgreSQL refuses a NUL in text,
        which must not read as an outage.
        """
        if not is_webhook_key(key):
            return NOT_FOUND
        entry = self.cache.get(key)
        if entry is None:
            try:
                entry = await self.cache.lookup(key)
            except StoreUnavailable:
                return self.unavailable()
        return self._usable(entry)

    def _usable(self, entry: IntegrationEntry | None) -> IntegrationEntry | Answer:
        if entry is None or not entry.is_active or entry.provider != self.provider:
            return NOT_FOUND
        return entry

    async def read_body(
        self, scope: Scope, receive: Receive, *, json_required: bool = True
    ) -> bytes | Answer:
        """The body, within the size limit and (when required) sent as JSON.

        ``json_required``: a `Content-Type` that is sent must be JSON (415 otherwise);
        a request without one is read all the same — the handler's JSON parse decides.
        """
        content_type = content_length = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                content_length = value
        if json_required and content_type is not None and not is_json_content_type(content_type):
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

    def store_row(self, row: InboxRow) -> asyncio.Future[int]:
        """Queue one inbox row; the future gives its id once committed (await it inside
        ``try: … except STORE_ERRORS as exc: return self.store_failed(exc)``).

        The wait is bounded: a database that does not commit in time fails the future
        (a 503), and a row whose request gave up is never written. Not a coroutine: the
        hot path awaits the store's future directly.
        """
        row.deadline = time.monotonic() + self._commit_seconds
        future = self.store.insert(row)
        if self.deadlines is not None:
            self.deadlines.watch(future, row.deadline)
        return future

    async def store_rows(self, rows: list[InboxRow]) -> list[int] | Answer:
        """Queue every row of a request at once (they share a group commit) and wait for
        all: their ids in order, or the answer for a row that could not be committed."""
        if not rows:
            return []
        results = await asyncio.gather(*(self.store_row(r) for r in rows), return_exceptions=True)
        ids: list[int] = []
        for result in results:
            if isinstance(result, STORE_ERRORS):
                return self.store_failed(result)
            if isinstance(result, BaseException):
                raise result
            ids.append(result)
        return ids

    def store_failed(self, exc: BaseException) -> Answer:
        """The answer for a row the store could not commit."""
        if isinstance(exc, StoreError):
            return answer(500, "webhook could not be stored")
        return self.unavailable(str(exc) or "database unavailable")


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
