"""The receiver app: factory, routes and lifespan.

`webhook_receiver.app:app` is built from the environment (DATABASE_URL, RECEIVER_*);
nothing connects to the database before the lifespan starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.metadata
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from crm_sync.redaction import install_log_redaction
from crm_sync.registry import layer_modules
from webhook_receiver import operator_api
from webhook_receiver.config import ReceiverConfig
from webhook_receiver.integration_cache import IntegrationCache
from webhook_receiver.openapi import HEALTH, openapi_document
from webhook_receiver.responses import error_response, json_response, unavailable_response
from webhook_receiver.stores import StoreUnavailable, WebhookStore, open_store
from webhook_receiver.webhooks import Deadlines, Handler, WebhookEndpoint

log = logging.getLogger(__name__)


class Receiver:
    """What the routes share: config, store and integration cache (set up in lifespan)."""

    def __init__(self, config: ReceiverConfig) -> None:
        self.config = config
        self.store: WebhookStore = None  # type: ignore[assignment] - set in lifespan
        self.cache: IntegrationCache = None  # type: ignore[assignment]
        self.deadlines = Deadlines()
        self._endpoints: list[WebhookEndpoint] = []
        # Called at shutdown, after the store is closed (e.g. the operator API's engine).
        self.on_close: list[Callable[[], None]] = []

    def endpoint(self, factory: Callable[[Receiver], Handler]) -> WebhookEndpoint:
        """An ASGI endpoint whose handler ``factory`` builds when the receiver starts."""
        endpoint = WebhookEndpoint(factory)
        self._endpoints.append(endpoint)
        return endpoint

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        # Webhook keys never reach a log line: uvicorn's access log, and its error log.
        install_log_redaction("uvicorn.access")
        install_log_redaction("uvicorn.error")
        store = open_store(self.config)
        await store.start()
        cache = IntegrationCache(
            store,
            self.config.integrations_refresh_seconds,
            self.config.missing_key_lookups_per_second,
        )
        await cache.refresh()  # a database that is down now is not fatal: 503 until it is up
        self.store, self.cache = store, cache
        for endpoint in self._endpoints:
            endpoint.start(self)
        refresher = asyncio.create_task(cache.run(), name="integrations-refresh")
        watchdog = asyncio.create_task(self.deadlines.run(), name="commit-deadlines")
        if self.config.gc_freeze:
            # Everything alive now (modules, SQLAlchemy metadata, ...) lives as long as the
            # process: keep it out of the collector, whose full passes over it would stall
            # the event loop for tens of milliseconds.
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            for task in (refresher, watchdog):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for endpoint in self._endpoints:
                endpoint.stop()
            await store.close()
            for close in self.on_close:
                close()

    async def healthz(self, _request: Request) -> Response:
        """200 when the database answers (and takes writes), else 503."""
        if self.cache is None:
            return unavailable_response("receiver not started", self.config.retry_after_seconds)
        try:
            await asyncio.wait_for(self.store.ping(), self.config.statement_timeout_seconds)
        except (StoreUnavailable, TimeoutError):
            return unavailable_response("database unavailable", self.config.retry_after_seconds)
        return json_response({"status": "ok"})


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail, headers=exc.headers)


async def _server_error(_request: Request, exc: Exception) -> Response:
    log.error("unhandled error in the receiver: %s", type(exc).__name__, exc_info=exc)
    return error_response(500, "internal error")


def _version() -> str:
    try:
        return importlib.metadata.version("crm-sync")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def create_app(database_url: str | None = None, **overrides: Any) -> Starlette:
    """A receiver app for `database_url` (default: DATABASE_URL); `overrides` replace
    ReceiverConfig fields (e.g. `max_body_bytes=1024`, `sqlite_busy_timeout_ms=200`)."""
    receiver = Receiver(ReceiverConfig.load(database_url, **overrides))
    routes: list[BaseRoute] = [Route("/healthz", receiver.healthz, methods=["GET"])]
    modules = layer_modules("receiver")
    for module in modules.values():
        routes += module.routes(receiver)
    routes += operator_api.routes(receiver)
    document = json_response(
        operator_api.document(
            openapi_document(
                [
                    HEALTH,
                    *(op for m in modules.values() for op in getattr(m, "OPERATIONS", ())),
                    *operator_api.operations(),
                ],
                title="crm-sync receiver",
                version=_version(),
            )
        )
    )

    async def openapi(_request: Request) -> Response:
        return document

    routes.append(Route("/openapi.json", openapi, methods=["GET"]))
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=receiver.lifespan,
    )
    # No slash redirects: `/webhooks/allio/<key>/` would be answered with a 307 whose
    # Location repeats the key (and every path variant is one more URL to mask in logs).
    # A path that is not a route is a plain 404.
    app.router.redirect_slashes = False
    app.state.receiver = receiver
    return app


app = create_app()
