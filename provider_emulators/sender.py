"""Send bursts of JSON (or form-encoded) webhooks with httpx and summarise the outcome."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson


async def post_bodies_async(
    url: str,
    bodies: Iterable[bytes],
    *,
    concurrency: int = 1,
    timeout: float = 10.0,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """POST every ready-encoded body to ``url`` with ``concurrency`` workers.

    ``headers`` should name the content type. Returns ``{"sent", "ok", "statuses":
    {"200": n}, "errors": {"ConnectError": n}, "elapsed_s"}``; ``sent`` counts attempts,
    ``ok`` the 2xx answers.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    items = iter(bodies)
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    sent = 0
    send_headers = dict(headers or {})
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    started = time.perf_counter()

    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

        async def worker() -> None:
            nonlocal sent
            for body in items:  # shared iterator: each body is taken once
                sent += 1
                try:
                    resp = await client.post(url, content=body, headers=send_headers)
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                else:
                    statuses[str(resp.status_code)] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    return {
        "sent": sent,
        "ok": sum(n for code, n in statuses.items() if code.startswith("2")),
        "statuses": dict(sorted(statuses.items())),
        "errors": dict(sorted(errors.items())),
        "elapsed_s": round(time.perf_counter() - started, 3),
    }


async def post_json_async(
    url: str,
    payloads: Iterable[Any],
    *,
    concurrency: int = 1,
    timeout: float = 10.0,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """POST every payload (serialised with orjson) to ``url`` with ``concurrency`` workers.

    Returns ``{"sent", "ok", "statuses": {"200": n}, "errors": {"ConnectError": n},
    "elapsed_s"}``; ``sent`` counts attempts, ``ok`` the 2xx answers.
    """
    return await post_bodies_async(
        url,
        (orjson.dumps(payload) for payload in payloads),
        concurrency=concurrency,
        timeout=timeout,
        headers={"content-type": "application/json", **(headers or {})},
    )


async def post_form_async(
    url: str,
    forms: Iterable[Mapping[str, str] | Sequence[tuple[str, str]]],
    *,
    concurrency: int = 1,
    timeout: float = 10.0,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """POST every form ``application/x-www-form-urlencoded``; the summary as
    :func:`post_json_async`."""
    return await post_bodies_async(
        url,
        (urlencode(form).encode() for form in forms),
        concurrency=concurrency,
        timeout=timeout,
        headers={"content-type": "application/x-www-form-urlencoded", **(headers or {})},
    )


def post_json(url: str, payloads: Iterable[Any], **kwargs: Any) -> dict[str, Any]:
    """Blocking :func:`post_json_async` (not callable from inside a running event loop)."""
    return asyncio.run(post_json_async(url, payloads, **kwargs))
