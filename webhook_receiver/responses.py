"""JSON responses: every answer of the receiver is a small JSON object.

`json_response` / `error_response` build Starlette responses (health check, exception
handlers); `send_json` answers straight on the ASGI channel for the webhook hot path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Send

JSON = "application/json"
_JSON_HEADERS = [(b"content-type", b"application/json")]


def error_body(message: str, fields: list[dict[str, str]] | None = None) -> bytes:
    """`{"error": message}` (plus `"fields"` for validation errors), serialised."""
    body: dict[str, Any] = {"error": message}
    if fields is not None:
        body["fields"] = fields
    return orjson.dumps(body)


def describe_json(value: object, limit: int = 32) -> str:
    """A short description of a parsed JSON value for an error message: its JSON type and,
    for a scalar, a preview of at most ``limit`` characters (`string '12a'`, `number 1.5`,
    `array of 3 items`). Never serialises the value: a value nested a thousand levels
    deep or megabytes long costs no more than a small one, and cannot fail."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean true" if value else "boolean false"
    if isinstance(value, int):
        # str() of an int is quadratic in its digits (and refused past 4,300 of them).
        return f"integer {value}" if value.bit_length() <= 128 else "integer (very large)"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        preview = repr(value[:limit])  # repr escapes control characters and lone surrogates
        return f"string {preview}{'…' if len(value) > limit else ''}"
    if isinstance(value, list):
        return f"array of {len(value)} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, dict):
        return f"object of {len(value)} key{'' if len(value) == 1 else 's'}"
    return type(value).__name__


def json_response(
    data: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """`data` serialised with orjson."""
    return Response(orjson.dumps(data), status_code, headers, JSON)


def error_response(
    status_code: int, message: str, *, headers: Mapping[str, str] | None = None
) -> Response:
    """`{"error": message}` as a Starlette response."""
    return Response(error_body(message), status_code, headers, JSON)


def unavailable_response(message: str, retry_after_seconds: int) -> Response:
    """503 with `Retry-After`: the database cannot take the webhook right now."""
    return error_response(503, message, headers={"Retry-After": str(retry_after_seconds)})


async def send_json(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Answer `body` (already JSON) with `status` on a raw ASGI channel."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *_JSON_HEADERS,
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
