"""A tiny HTTP/1.1 client on raw asyncio sockets: one connection per request.

The suite needs what ordinary clients refuse or "fix": any method, raw paths (``//``,
``..``, ``%00``), any header (a lying or duplicated ``Content-Length``), bodies of any
bytes, and a half-closed connection. It also never reuses a connection, so a killed
worker costs only the requests in flight on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import orjson

# What uvicorn itself (not the app) answers to a request it cannot parse.
SERVER_PARSE_ERROR = b"Invalid HTTP request received."


@dataclass
class Response:
    """One answer, or why there was none (``status`` None and ``error`` set)."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    seconds: float = 0.0
    error: str | None = None
    started: float = 0.0  # monotonic time the request was sent
    finished: float = 0.0

    def json(self) -> object:
        return orjson.loads(self.body)

    @property
    def server_level(self) -> bool:
        """uvicorn's own rejection of an unparsable request (never reaches the app)."""
        return self.status == 400 and self.body.strip() == SERVER_PARSE_ERROR

    def json_error(self) -> str | None:
        """The `error` message of a JSON error body, else None."""
        try:
            data = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None
        if isinstance(data, dict) and isinstance(data.get("error"), str) and data["error"]:
            return data["error"]
        return None


def build_request(
    method: str,
    target: str | bytes,
    host: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    content_length: str | None | bool = True,
) -> bytes:
    """Request bytes. ``content_length`` True = the right one, False/None = none, str = that."""
    raw_target = target if isinstance(target, bytes) else target.encode("utf-8", "surrogateescape")
    lines = [method.encode() + b" " + raw_target + b" HTTP/1.1", b"Host: " + host.encode()]
    lines.append(b"Connection: close")
    for name, value in headers:
        lines.append(name.encode("latin-1") + b": " + value.encode("utf-8", "surrogateescape"))
    if content_length is True:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    elif isinstance(content_length, str):
        lines.append(b"Content-Length: " + content_length.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _parse(data: bytes) -> tuple[int, dict[str, str], bytes]:
    while data.startswith(b"HTTP/1.1 1"):  # interim answers (100 Continue)
        data = data.partition(b"\r\n\r\n")[2]
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body, chunks = rest, []
        while body:
            size_line, _, body = body.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            chunks.append(body[:size])
            body = body[size + 2 :]
        rest = b"".join(chunks)
    elif "content-length" in headers:
        rest = rest[: int(headers["content-length"])]
    return status, headers, rest


async def send_raw(
    host: str,
    port: int,
    request: bytes,
    *,
    timeout: float = 15.0,
    half_close: bool = False,
    wait_continue: float = 0.0,
) -> Response:
    """Send ``request`` on a new connection and read the answer until the server closes.

    ``wait_continue`` > 0 (with an ``Expect: 100-continue`` header in ``request``): send the
    head, wait that long for ``100 Continue`` or a final answer, and send the body only
    after a 100 (or no word at all), as a careful client does."""
    started = time.monotonic()
    writer = None
    chunks: list[bytes] = []

    async def read_all(reader: asyncio.StreamReader) -> None:
        # Reads while the request is still being written: a server that answers early
        # (413) and closes gets its answer read before the reset that follows.
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                chunks.append(data)

    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        reading = asyncio.ensure_future(read_all(reader))
        start_at = 0
        if wait_continue > 0:
            head_end = request.index(b"\r\n\r\n") + 4
            writer.write(request[:head_end])
            await writer.drain()
            waited = time.monotonic() + wait_continue
            while not chunks and not reading.done() and time.monotonic() < waited:
                await asyncio.sleep(0.01)
            start_at = head_end
            got = b"".join(chunks)
            if got and not got.startswith(b"HTTP/1.1 1"):
                start_at = len(request)  # a final answer came: the body is not sent
        early = len(chunks)
        try:
            for i in range(start_at, len(request), 65536):
                writer.write(request[i : i + 65536])
                await writer.drain()
                if len(chunks) > early or reading.done():
                    break  # answered before the whole body went out
            else:
                if half_close and writer.can_write_eof():
                    writer.write_eof()
        except (ConnectionError, OSError):
            pass  # the server may answer (413) and close before it read everything
        try:
            await asyncio.wait_for(reading, max(0.1, timeout - (time.monotonic() - started)))
        except TimeoutError:
            if not chunks:
                raise
        data = b"".join(chunks)
    except TimeoutError:
        now = time.monotonic()
        return Response(None, error="timeout", seconds=now - started, started=started, finished=now)
    except (ConnectionError, OSError) as exc:
        now = time.monotonic()
        return Response(
            None, error=type(exc).__name__, seconds=now - started, started=started, finished=now
        )
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    now = time.monotonic()
    if not data:
        return Response(None, error="closed without an answer", seconds=now - started,
                        started=started, finished=now)  # fmt: skip
    try:
        status, headers, body = _parse(data)
    except (ValueError, IndexError):
        return Response(None, error="unparsable answer", body=data[:200], seconds=now - started,
                        started=started, finished=now)  # fmt: skip
    return Response(status, headers, body, now - started, None, started, now)


async def post_json(
    host: str,
    port: int,
    path: str,
    payload: object,
    *,
    timeout: float = 15.0,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """POST ``payload`` as JSON (with extra ``headers``)."""
    body = orjson.dumps(payload)
    sent = [("Content-Type", "application/json"), *(headers or {}).items()]
    request = build_request("POST", path, f"{host}:{port}", sent, body)
    return await send_raw(host, port, request, timeout=timeout)


async def bounded(coros: Sequence, concurrency: int) -> list:
    """Await ``coros`` with at most ``concurrency`` at once, results in order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(coro):  # noqa: ANN001, ANN202
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))
