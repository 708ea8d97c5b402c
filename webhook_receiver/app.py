"""The receiver app: factory, routes and lifespan.

`webhook_receiver.app:app` is built from the environment (DATABASE_URL, RECEIVER_*);
nothing connects to the database before the lifespan starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from webhook_receiver.allio import AllioHandler
from webhook_receiver.config import ReceiverConfig
from webhook_receiver.integration_cache import IntegrationCache
from webhook_receiver.responses import (
    error_body,
    error_response,
    json_response,
    send_json,
    unavailable_response,
)
from webhook_receiver.security import install_access_log_filter
from webhook_receiver.stores import StoreUnavailable, WebhookStore, open_store

log = logging.getLogger(__name__)


class Receiver:
    """What the routes share: config, store and integration cache (set up in lifespan)."""

    def __init__(self, config: ReceiverConfig) -> None:
        self.config = config
        self.store: WebhookStore | None = None
        self.cache: IntegrationCache | None = None
        self.allio: AllioHandler | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        install_access_log_filter()
        store = open_store(self.config)
        await store.start()
        cache = IntegrationCache(
            store,
            self.config.integrations_refresh_seconds,
            self.config.missing_key_lookups_per_second,
        )
        await cache.refresh()  # a database that is down now is not fatal: 503 until it is up
        self.store, self.cache = store, cache
        self.allio = AllioHandler(self.config, cache, store)
        refresher = asyncio.create_task(cache.run(), name="integrations-refresh")
        if self.config.gc_freeze:
            # Everything alive now (modules, SQLAlchemy metadata, ...) lives as long as the
            # process: keep it out of the collector, whose full passes over it would stall
            # the event loop for tens of milliseconds.
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await store.close()
            self.store = self.cache = self.allio = None

    async def healthz(self, _request: Request) -> Response:
        """200 when the database answers (and takes writes), else 503."""
        if self.store is None:
            return unavailable_response("receiver not started", self.config.retry_after_seconds)
        try:
            await asyncio.wait_for(self.store.ping(), self.config.statement_timeout_seconds)
        except (StoreUnavailable, TimeoutError):
            return unavailable_response("database unavailable", self.config.retry_after_seconds)
        return json_response({"status": "ok"})


class AllioEndpoint:
    """ASGI endpoint of `POST /webhooks/allio/{webhook_key}` (see webhook_receiver.allio).

    A plain ASGI callable, so Starlette routes to it without building Request/Response
    objects: the hot path stays a few function calls long.
    """

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.receiver.allio
        if handler is None:
            status, body, headers = 503, error_body("receiver not started"), ()
        else:
            status, body, headers = await handler.handle(scope, receive)
        await send_json(send, status, body, headers)


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail, headers=exc.headers)


async def _server_error(_request: Request, exc: Exception) -> Response:
    log.error("unhandled error in the receiver: %s", type(exc).__name__, exc_info=exc)
    return error_response(500, "internal error")


def create_app(database_url: str | None = None, **overrides: Any) -> Starlette:
    """A receiver app for `database_url` (default: DATABASE_URL); `overrides` replace
    ReceiverConfig fields (e.g. `max_body_bytes=1024`, `sqlite_busy_timeout_ms=200`)."""
    receiver = Receiver(ReceiverConfig.load(database_url, **overrides))
    app = Starlette(
        routes=[
            Route("/healthz", receiver.healthz, methods=["GET"]),
            Route("/webhooks/allio/{webhook_key}", AllioEndpoint(receiver), methods=["POST"]),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=receiver.lifespan,
    )
    app.state.receiver = receiver
    return app


app = create_app()
