"""Reusable emulator framework: per-IP quota, request log, fault injection, admin API.

A provider module describes itself with a :class:`ProviderProfile` (how it rejects
over-quota and faulted requests, how to read ids from a request body) and hands its
routes to :func:`build_app`. Everything under ``/_admin`` bypasses quota, faults and
the request log; every other request goes through them in this order: quota gate →
latency → forced 429 → drop → 5xx → handler → malformed body.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from provider_emulators.faults import FaultInjector, corrupt

ADMIN_PREFIX = "/_admin"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A compact UTF-8 JSON response (orjson)."""
    return Response(orjson.dumps(data), status, headers, media_type="application/json")


def source_ip(scope: Scope) -> str:
    """The TCP peer address of the request (no proxy headers)."""
    client = scope.get("client")
    return client[0] if client else "unknown"


@dataclass(frozen=True)
class ProviderProfile:
    """How one provider looks on the wire when it rejects or fails a request."""

    name: str
    quota_rejection: Callable[[], Response]
    forced_429: Callable[[str | None], Response]
    server_error: Callable[[int], Response]
    ids_from_body: Callable[[bytes], list[Any] | None] = lambda _body: None
    quota_key: Callable[[Scope], str] = source_ip


class SlidingWindowQuota:
    """At most ``limit`` accepted requests per key in any ``window``-second interval.

    Times are taken under the lock, so accepted timestamps are monotonic and the
    check is exact; rejected requests are not counted.
    """

    def __init__(self, limit: int, window: float = 1.0) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> tuple[bool, float, float]:
        """Admit or reject one request now; returns (accepted, monotonic, wall time)."""
        with self._lock:
            mono, wall = time.monotonic(), time.time()
            hits = self._hits.setdefault(key, deque())
            while hits and mono - hits[0] >= self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return False, mono, wall
            hits.append(mono)
            return True, mono, wall

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()


class RequestLog:
    """Thread-safe in-memory log of provider requests (bounded)."""

    def __init__(self, maxlen: int = 100_000) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._seq = 0

    def append(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._seq += 1
            self._entries.append({"seq": self._seq, **entry})

    def entries(self, since: float | None = None, path: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self._entries)
        return [
            e
            for e in items
            if (since is None or e["time"] >= since) and (path is None or e["path"] == path)
        ]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class EmulatorState:
    """Everything mutable about one running emulator."""

    def __init__(
        self,
        profile: ProviderProfile,
        quota_per_second: int | None,
        seed: int = 0,
        quota_window: float = 1.0,
        log_maxlen: int = 100_000,
    ) -> None:
        self.profile = profile
        self.quota = (
            SlidingWindowQuota(quota_per_second, quota_window) if quota_per_second else None
        )
        self.log = RequestLog(log_maxlen)
        self.faults = FaultInjector(seed=seed)

    def admit(self, key: str) -> tuple[bool, float, float]:
        if self.quota is None:
            return True, time.monotonic(), time.time()
        return self.quota.acquire(key)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _drop(receive: Receive, send: Send) -> None:
    """Close the connection without a response (uvicorn), else abort mid-response."""
    cycle = getattr(receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is not None:
        transport.abort()
        for _ in range(10):
            if getattr(cycle, "disconnected", True):
                break
            await asyncio.sleep(0)
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]}
    )
    raise ConnectionAbortedError("emulator dropped the connection")


class EmulatorMiddleware:
    """ASGI middleware applying quota, faults and the request log to provider routes."""

    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        state = self.state
        quota_key = state.profile.quota_key(scope)
        accepted, mono, wall = state.admit(quota_key)
        body = await _read_body(receive)
        entry: dict[str, Any] = {
            "time": wall,
            "monotonic": mono,
            "method": scope["method"],
            "path": scope["path"],
            "status": None,
            "ip": source_ip(scope),
            # Whose budget the request drew from (hashed: a key may hold a token).
            "quota_key": hashlib.sha256(quota_key.encode()).hexdigest()[:12],
            "ids": _safe_ids(state.profile, body),
            "quota_rejected": not accepted,
            "fault": None,
        }
        try:
            await self._handle(scope, receive, send, body, accepted, entry)
        finally:
            entry["duration_ms"] = round((time.monotonic() - mono) * 1000.0, 3)
            state.log.append(entry)

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: bytes,
        accepted: bool,
        entry: dict[str, Any],
    ) -> None:
        profile = self.state.profile
        if not accepted:
            rejection = profile.quota_rejection()
            entry["status"] = rejection.status_code  # 429, or e.g. a provider's 403 block
            await rejection(scope, receive, send)
            return
        d = self.state.faults.decide()
        if d.latency_s:
            await asyncio.sleep(d.latency_s)
        entry["fault"] = d.outcome
        if d.outcome == "drop":
            await _drop(receive, send)
            return
        if d.outcome is not None:
            entry["status"] = d.status
            if d.outcome == "force_429":
                response = profile.forced_429(d.retry_after)
            else:
                response = profile.server_error(d.status or 500)
            await response(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), _capture(send, entry, d.malformed))


def _safe_ids(profile: ProviderProfile, body: bytes) -> list[Any] | None:
    try:
        return profile.ids_from_body(body)
    except Exception:
        return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _capture(send: Send, entry: dict[str, Any], malformed: bool) -> Send:
    """Record the status; when ``malformed`` and the status is 200, corrupt the body."""
    held: list[Message] = []
    chunks: list[bytes] = []

    async def capture(message: Message) -> None:
        if message["type"] == "http.response.start":
            entry["status"] = message["status"]
            if malformed and message["status"] == 200:
                entry["fault"] = "malformed"
                held.append(message)
                return
        elif message["type"] == "http.response.body" and held:
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            new_body = corrupt(b"".join(chunks))
            headers = [(k, v) for k, v in held[0].get("headers", []) if k != b"content-length"]
            headers.append((b"content-length", str(len(new_body)).encode()))
            await send({**held[0], "headers": headers})
            await send({"type": "http.response.body", "body": new_body, "more_body": False})
            return
        await send(message)

    return capture


# ---- admin API shared by every emulator -------------------------------------------------


def _state(request: Request) -> EmulatorState:
    return request.app.state.emulator


def admin_error(message: str, status: int = 400) -> Response:
    return json_response({"error": message}, status)


async def _health(request: Request) -> Response:
    st = _state(request)
    return json_response(
        {
            "status": "ok",
            "provider": st.profile.name,
            "quota_per_second": st.quota.limit if st.quota else None,
            "logged_requests": len(st.log.entries()),
        }
    )


async def _requests(request: Request) -> Response:
    st = _state(request)
    if request.method == "DELETE":
        st.log.clear()
        return json_response({"cleared": True})
    since_raw = request.query_params.get("since")
    try:
        since = float(since_raw) if since_raw is not None else None
    except ValueError:
        return admin_error("since must be a unix time in seconds")
    return json_response(st.log.entries(since, request.query_params.get("path")))


async def _faults(request: Request) -> Response:
    faults = _state(request).faults
    if request.method == "GET":
        return json_response(faults.snapshot())
    if request.method == "DELETE":
        return json_response(faults.clear())
    try:
        return json_response(faults.configure(orjson.loads(await request.body())))
    except (orjson.JSONDecodeError, ValueError) as exc:
        return admin_error(str(exc))


def admin_routes() -> list[BaseRoute]:
    """The admin endpoints every emulator has."""
    return [
        Route(f"{ADMIN_PREFIX}/health", _health, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/requests", _requests, methods=["GET", "DELETE"]),
        Route(f"{ADMIN_PREFIX}/faults", _faults, methods=["GET", "PUT", "POST", "DELETE"]),
    ]


def build_app(
    profile: ProviderProfile,
    routes: Sequence[BaseRoute],
    *,
    extra_admin_routes: Sequence[BaseRoute] = (),
    quota_per_second: int | None = None,
    quota_window: float = 1.0,
    seed: int = 0,
    log_maxlen: int = 100_000,
) -> Starlette:
    """Build an emulator app; its :class:`EmulatorState` is at ``app.state.emulator``."""
    state = EmulatorState(profile, quota_per_second, seed, quota_window, log_maxlen)
    app = Starlette(
        routes=[*admin_routes(), *extra_admin_routes, *routes],
        middleware=[Middleware(EmulatorMiddleware, state=state)],
    )
    app.state.emulator = state
    return app
