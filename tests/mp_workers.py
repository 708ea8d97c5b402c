"""Functions run in spawned OS processes by the rate-limit and client tests."""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.pool import Pool
from typing import Any


def _warm_up(ready: Any) -> None:
    import orchestration.resources  # noqa: F401 - pay the dagster import before the clock starts

    ready.wait()


@contextmanager
def warm_pool(processes: int = 3) -> Iterator[Pool]:
    """A spawn pool whose workers have imported everything and are waiting for work."""
    ctx = mp.get_context("spawn")
    ready = ctx.Barrier(processes + 1)
    with ctx.Pool(processes, initializer=_warm_up, initargs=(ready,)) as pool:
        ready.wait(timeout=60)
        yield pool


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The largest number of ``times`` inside any half-open ``window``-second interval."""
    times = sorted(times)
    best, left = 0, 0
    for right, t in enumerate(times):
        while t - times[left] >= window:
            left += 1
        best = max(best, right - left + 1)
    return best


def acquire_worker(args: dict[str, Any]) -> list[tuple[float, float]]:
    """Acquire slots through the database limiter until ``stop_at``; (slot, woke) pairs."""
    from crm_schema.engine import make_engine
    from crm_sync.ratelimit import DatabaseRateLimiter, RatePolicy, Throttle

    engine = make_engine(args["database_url"])
    throttle = Throttle.single(
        DatabaseRateLimiter(engine), args["key"], RatePolicy(rate=args["rate"])
    )
    grants = []
    time.sleep(max(0.0, args["start_at"] - time.time()))
    while time.time() < args["stop_at"]:
        granted = throttle.acquire()
        grants.append((granted.slot, time.time()))
    engine.dispose()
    return grants


def client_worker(args: dict[str, Any]) -> dict[str, Any]:
    """Call ``reserve_list`` ``calls`` times (or until ``stop_at``) through AllioResource."""
    import logging

    from crm_schema.engine import make_engine
    from crm_schema.integrations import get_integration
    from orchestration.defs.allio.resources import AllioResource
    from orchestration.resources import CallStats

    logging.getLogger("orchestration").setLevel(logging.ERROR)
    engine = make_engine(args["database_url"])
    with engine.connect() as conn:
        integration = get_integration(conn, args["integration_id"])
    engine.dispose()
    resource = AllioResource(
        database_url=args["database_url"],
        backoff_initial_seconds=0.05,
        max_attempts=10,
        quota_per_second=args.get("quota"),
    )
    stats = CallStats()
    done = 0
    time.sleep(max(0.0, args["start_at"] - time.time()))
    with resource.client_for(integration, stats=stats) as client:
        while done < args.get("calls", 10**9) and time.time() < args.get("stop_at", 1e18):
            client.reserve_list(args["ids"])
            done += 1
    return {"done": done, "http_429": stats.http_429, "calls": stats.calls}


def oauth_worker(args: dict[str, Any]) -> dict[str, Any]:
    """Call the token server's API once through OAuth2RefreshAuth (token in the database)."""
    import httpx

    from crm_schema.engine import make_engine
    from orchestration.resources.auth import NewToken, OAuth2RefreshAuth, TokenStore
    from orchestration.resources.base import ProviderClient

    base = args["base_url"]
    engine = make_engine(args["database_url"])

    def read(response: httpx.Response) -> NewToken:
        body = response.json()
        return NewToken(body["access_token"], body["expires_in"], body["refresh_token"])

    auth = OAuth2RefreshAuth(
        TokenStore(engine, args["integration_id"], "oauth"),
        refresh=lambda token: httpx.Request(
            "POST", f"{base}/oauth/token", json={"refresh_token": token}
        ),
        read=read,
    )
    time.sleep(max(0.0, args["start_at"] - time.time()))
    with ProviderClient(base, auth=auth, max_attempts=1) as client:
        body = client.request("GET", "/api")
    engine.dispose()
    return body
