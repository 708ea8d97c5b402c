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
