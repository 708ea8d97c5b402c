"""What the operator API's routes share: token check, JSON bodies, query parameters,
errors, and database work on a SQLAlchemy engine in a worker thread.

The operator API is not the webhook hot path: plain Starlette requests, one short
transaction per call (crm_schema.engine), every answer JSON — errors as
`{"error": ..., "problems"?: [{"field", "error"}]}`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from crm_schema import operator_tokens
from crm_schema.engine import make_engine
from webhook_receiver.lazy_engine import LazyEngine
from webhook_receiver.responses import JSON
from webhook_receiver.security import (
    BadContentLength,
    BodyTooLarge,
    ClientGone,
    is_json_content_type,
    parse_content_length,
    read_body_limited,
)

if TYPE_CHECKING:
    from webhook_receiver.app import Receiver

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
MAX_SKIP = 10**9


class ApiError(Exception):
    """An answer other than success: status, message, and for bad input each problem."""

    def __init__(
        self,
        status: int,
        message: str,
        problems: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.problems, self.headers = status, message, problems, headers


def _default(value: Any) -> Any:
    raise TypeError(type(value).__name__)


def iso(value: datetime | None) -> str | None:
    """A stored timestamp as ISO 8601 UTC (SQLite gives naive UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def answer(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``data`` as JSON."""
    return Response(orjson.dumps(data, default=_default), status, headers, JSON)


def error(exc: ApiError) -> Response:
    """The JSON error answer for ``exc``."""
    body: dict[str, Any] = {"error": exc.message}
    if exc.problems is not None:
        body["problems"] = exc.problems
    return answer(body, exc.status, exc.headers)


def problem(field: str, message: str) -> dict[str, str]:
    return {"field": field, "error": message}


def invalid(problems: list[dict[str, str]]) -> ApiError:
    """A 422 naming every problem."""
    names = ", ".join(dict.fromkeys(p["field"] for p in problems))
    return ApiError(422, f"invalid {names}", problems)


def int_param(
    request: Request,
    name: str,
    problems: list[dict[str, str]],
    *,
    default: int | None = None,
    minimum: int = 0,
    maximum: int = MAX_SKIP,
) -> int | None:
    """Query parameter ``name`` as an int in [minimum, maximum]; a bad one is added to
    ``problems`` (and None returned)."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12 or not minimum <= int(raw) <= maximum:
        problems.append(problem(name, f"must be an integer from {minimum} to {maximum}"))
        return None
    return int(raw)


def paging(request: Request) -> tuple[int, int, list[dict[str, str]]]:
    """`skip` (>= 0, default 0) and `limit` (1..500, default 50), and the problems found."""
    problems: list[dict[str, str]] = []
    skip = int_param(request, "skip", problems, default=0)
    limit = int_param(
        request, "limit", problems, default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT
    )
    return skip or 0, limit or DEFAULT_LIMIT, problems


def bearer_token(request: Request) -> str | None:
    """The token of `Authorization: Bearer <token>`."""
    value = request.headers.get("authorization", "")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class OperatorApi:
    """The operator API's state: a lazily made engine, closed with the receiver."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self._lazy = LazyEngine(lambda: make_engine(receiver.config.database_url))

    @property
    def engine(self) -> Engine:
        """The operator API's engine (made on first use)."""
        return self._lazy.engine

    def close(self) -> None:
        """Release the engine's connections (at shutdown)."""
        self._lazy.close()

    async def transaction(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one transaction in a worker thread; an unreachable or locked
        database is a 503."""

        def run() -> T:
            with self.engine.begin() as conn:
                return work(conn)

        try:
            return await run_in_threadpool(run)
        except (OperationalError, DBAPIError) as exc:
            if isinstance(exc, OperationalError) or exc.connection_invalidated:
                log.warning("operator API: database unavailable (%s)", type(exc).__name__)
                raise ApiError(
                    503,
                    "database unavailable",
                    headers={"Retry-After": str(self.receiver.config.retry_after_seconds)},
                ) from None
            raise

    async def authenticate(self, request: Request) -> str:
        """The operator token's name, or a 401."""
        token = bearer_token(request)
        name = None
        if token is not None:
            name = await self.transaction(lambda conn: operator_tokens.verify(conn, token))
        if name is None:
            raise ApiError(
                401,
                "an operator token is required: Authorization: Bearer <token> "
                "(crm-sync operator-tokens create NAME)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return name

    async def json_body(self, request: Request) -> Any:
        """The parsed JSON body (size-limited; a Content-Type, when sent, must be JSON)."""
        content_type = request.headers.get("content-type")
        if content_type is not None and not is_json_content_type(content_type):
            raise ApiError(415, "Content-Type must be application/json")
        limit = self.receiver.config.max_body_bytes
        try:
            declared = parse_content_length(
                request.headers.get("content-length", "").encode() or None
            )
            body = await read_body_limited(request.receive, limit, declared)
        except BodyTooLarge:
            raise ApiError(413, f"body larger than {limit} bytes") from None
        except BadContentLength:
            raise ApiError(400, "invalid Content-Length") from None
        except ClientGone:
            raise ApiError(400, "client disconnected before the body was complete") from None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ApiError(400, "body is not valid JSON") from None


Endpoint = Callable[[Request], Awaitable[Response]]


def endpoint(handler: Endpoint) -> Endpoint:
    """A route handler whose ApiError becomes its JSON error answer."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return error(exc)

    return wrapped
