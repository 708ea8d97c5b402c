"""Send bursts of JSON webhooks with httpx and summarise the outcome."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import orjson


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
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    items = iter(payloads)
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    sent = 0
    send_headers = {"content-type": "application/json", **(headers or {})}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    started = time.perf_counter()

    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

        async def worker() -> None:
            nonlocal sent
            for payload in items:  # shared iterator: each payload is taken once
                sent += 1
                try:
                    resp = await client.post(
                        url, content=orjson.dumps(payload), headers=send_headers
                    )
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


def post_json(url: str, payloads: Iterable[Any], **kwargs: Any) -> dict[str, Any]:
    """Blocking :func:`post_json_async` (not callable from inside a running event loop)."""
    return asyncio.run(post_json_async(url, payloads, **kwargs))
