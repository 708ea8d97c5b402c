"""Request hygiene: constant-time compare, content-type check, size-limited body reader.

Webhook keys are kept out of access logs by crm_sync.redaction (installed at startup).
"""

from __future__ import annotations

import hmac

from starlette.types import Receive


class BodyTooLarge(Exception):
    """The request body is over the configured limit."""


class BadContentLength(Exception):
    """The Content-Length header is not a non-negative integer."""


class ClientGone(Exception):
    """The client disconnected before sending the whole body."""


def constant_time_equals(given: str, expected: str | None) -> bool:
    """Compare two secrets without leaking where they differ (None never matches)."""
    if expected is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def is_json_content_type(value: str | bytes | None) -> bool:
    """True for `application/json` (any parameters, e.g. charset) and `application/*+json`."""
    if not value:
        return False
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    media_type = value.split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        return True
    return media_type.startswith("application/") and media_type.endswith("+json")


def parse_content_length(value: bytes | None) -> int | None:
    """The declared body length (None when absent); BadContentLength when malformed."""
    if value is None:
        return None
    if not value.isdigit():
        raise BadContentLength
    return int(value)


async def read_body_limited(receive: Receive, limit: int, declared: int | None) -> bytes:
    """The whole body from an ASGI `receive`, never reading past `limit` bytes.

    A declared Content-Length over the limit is refused before any byte is read;
    a chunked body is read chunk by chunk and abandoned as soon as it passes the limit.
    """
    if declared is not None and declared > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)
