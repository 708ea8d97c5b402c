"""U-ON benchmark: the operator's client-by-phone lookup for ringing calls.

    python bench/uon.py [--rate 8] [--miss-seconds 20] [--hits 3000] [--workers 2]
                        [--database postgres|sqlite]

A real receiver (uvicorn, `--workers` processes sharing the cache and the limiter) and
the U-ON emulator (its own process, 10 requests/s per API key, as U-ON) over HTTP:

- **misses**: distinct numbers (half known to U-ON, half not) looked up at `--rate` per
  second, open loop (each at its own moment, however slow the one before): each asks
  U-ON `user/phone/{digits}` through the shared limiter within the 1 s deadline, stores
  the client and caches the answer. Goal: p95 ≤ 1.5 s, every one answered by U-ON, and
  U-ON never over its quota.
- **hits**: the same numbers again (now cached) from 4 client threads. Goal: p95 ≤ 20 ms.

Baselines in the same run: U-ON's own `user/phone` latency (the emulator called
directly, at the same rate), and the operator API's cheapest route (`GET /api/v1/logs?
limit=1`: the token check and a one-row read) for the floor of any operator request.

PostgreSQL: a fresh database on BENCH_DATABASE_URL / TEST_DATABASE_URL (a server URL).
Prints a Markdown table; writes bench/results/uon.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH_DIR))

import httpx  # noqa: E402
import receiver as wrk_bench  # noqa: E402  (bench/receiver.py: servers)
from result_file import write_result  # noqa: E402  (bench/result_file.py)

from crm_schema import operator_tokens  # noqa: E402
from crm_schema.engine import make_engine  # noqa: E402
from crm_schema.integrations import add_integration  # noqa: E402
from crm_schema.migrate import upgrade  # noqa: E402
from crm_sync.encryption import generate_key  # noqa: E402
from provider_emulators.testing import fresh_postgres_database  # noqa: E402

RESULTS = BENCH_DIR / "results" / "uon.json"
API_KEY = "bench-uon-api-key-0123456789"  # a benchmark value
PATH = "/api/v1/uon/customers/by-phone"
HIT_P95_GOAL_MS = 20.0
MISS_P95_GOAL_MS = 1500.0
HIT_THREADS = 4
# At 8/s the misses use the whole safe rate (10/s less the 20 % margin): a bunch of
# arrivals queues until a late one lets the queue drain, and a lookup whose slot is past
# its 1 s deadline is answered "unavailable" in time rather than late.
MISS_ANSWERED_GOAL = 0.95
EMULATOR = """
import sys, uvicorn
from provider_emulators.uon import create_app
uvicorn.run(create_app(api_keys=[sys.argv[1]]), host="127.0.0.1", port=int(sys.argv[2]),
            log_level="warning", access_log=False)
"""


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (nearest rank) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _stats(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 0.50), 2),
        "p95_ms": round(percentile(ms, 0.95), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "max_ms": round(max(ms), 2) if ms else float("nan"),
    }


def _numbers(count: int) -> list[str]:
    """Distinct valid Belarusian mobile numbers; even last digit = U-ON knows the client."""
    return [f"+37529{6000000 + n:07d}" for n in range(count)]


def _wait(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer")


def open_loop(rate: float, items: list[Any], call: Any) -> list[tuple[float, Any]]:
    """``call(item)`` for each item at ``rate`` per second on schedule (threads, so a slow
    call never delays the next); (milliseconds, result) each."""
    out: list[tuple[float, Any]] = [(0.0, None)] * len(items)
    start = time.monotonic()

    def one(i: int) -> None:
        due = start + i / rate
        time.sleep(max(0.0, due - time.monotonic()))
        began = time.perf_counter()
        result = call(items[i])
        out[i] = ((time.perf_counter() - began) * 1000.0, result)

    with ThreadPoolExecutor(max(8, int(rate * 3))) as pool:
        list(pool.map(one, range(len(items))))
    return out


def closed_loop(
    threads: int, count: int, call: Any, items: list[Any]
) -> tuple[list[float], float, list[Any]]:
    """``count`` calls from ``threads`` threads back to back: latencies (ms), seconds,
    results."""
    ms: list[float] = []
    results: list[Any] = []
    lock = threading.Lock()
    counter = iter(range(count))

    def worker() -> None:
        local_ms, local_results = [], []
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            began = time.perf_counter()
            local_results.append(call(items[i % len(items)]))
            local_ms.append((time.perf_counter() - began) * 1000.0)
        with lock:
            ms.extend(local_ms)
            results.extend(local_results)

    started = time.monotonic()
    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return ms, time.monotonic() - started, results


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    load_before = round(os.getloadavg()[0], 2)
    port = wrk_bench.free_port()
    emulator = subprocess.Popen(
        [sys.executable, "-c", EMULATOR, API_KEY, str(port)], cwd=ROOT, env=dict(os.environ)
    )
    uon = f"http://127.0.0.1:{port}"
    drop = None
    if args.database == "postgres":
        admin = os.environ.get("BENCH_DATABASE_URL") or os.environ.get(
            "TEST_DATABASE_URL", wrk_bench.DEFAULT_PG
        )
        url, drop = fresh_postgres_database(admin, "crm_bench_uon")
    else:
        url = f"sqlite:///{tmp / f'uon-{uuid.uuid4().hex[:8]}.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    server = None
    try:
        _wait(uon + "/_admin/health")
        with engine.begin() as conn:
            integration = add_integration(
                conn, provider="uon", name="bench U-ON", integration_uuid=None,
                api_base_url=uon, credentials={"api_key": API_KEY},
                settings={"default_region": "BY"},
            )  # fmt: skip
            token = operator_tokens.create(conn, "bench")[1]
        server = wrk_bench.Server("webhook_receiver.app:app", args.workers, {"DATABASE_URL": url})
        headers = {"Authorization": f"Bearer {token}"}
        numbers = _numbers(int(args.rate * args.miss_seconds))
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        with (
            httpx.Client(base_url=server.base, headers=headers, limits=limits, timeout=30) as api,
            httpx.Client(base_url=uon, limits=limits, timeout=30) as direct,
        ):

            def look(phone: str) -> dict[str, Any]:
                resp = api.get(PATH, params={"phone": phone, "integration": integration.id})
                resp.raise_for_status()
                return resp.json()

            # Warm up: connections, the receiver workers' first requests, the token.
            for _ in range(20):
                api.get("/api/v1/logs", params={"limit": 1}).raise_for_status()

            # Baseline 1: U-ON's own answer time, at the same rate, distinct numbers.
            base_numbers = [f"+37533{6000000 + n:07d}" for n in range(len(numbers))]
            direct_results = open_loop(
                args.rate,
                base_numbers,
                lambda p: direct.get(f"/{API_KEY}/user/phone/{p[1:]}.json").status_code,
            )
            # Let U-ON's 1-second window empty before the receiver's turn.
            time.sleep(1.5)
            httpx.delete(uon + "/_admin/requests", timeout=10)

            # Misses: distinct numbers at --rate per second.
            misses = open_loop(args.rate, numbers, look)
            calls = httpx.get(uon + "/_admin/requests", timeout=30).json()
            phone_calls = [c for c in calls if "/user/phone/" in c["path"]]

            # Hits: the numbers U-ON answered for, now cached.
            cached = [
                p for p, (_, body) in zip(numbers, misses, strict=True) if body["source"] == "uon"
            ]
            hit_ms, hit_seconds, hit_results = closed_loop(HIT_THREADS, args.hits, look, cached)

            # Baseline 2: the operator API's cheapest route.
            floor_ms, _, _ = closed_loop(
                HIT_THREADS,
                args.hits,
                lambda _: api.get("/api/v1/logs", params={"limit": 1}).raise_for_status(),
                [None],
            )
    finally:
        if server is not None:
            server.stop()
        engine.dispose()
        if drop is not None:
            drop()
        emulator.terminate()
        emulator.wait(10)

    miss_ms = [ms for ms, _ in misses]
    sources = Counter(body["source"] for _, body in misses)
    hit_sources = Counter(body["source"] for body in hit_results)
    over_quota = sum(1 for c in phone_calls if c.get("quota_rejected") or c["status"] == 429)
    worst_second = _busiest_second([c["monotonic"] for c in phone_calls])
    miss = _stats(miss_ms)
    hit = _stats(hit_ms)
    ok = (
        hit["p95_ms"] <= HIT_P95_GOAL_MS
        and miss["p95_ms"] <= MISS_P95_GOAL_MS
        and over_quota == 0
        and sources["uon"] >= MISS_ANSWERED_GOAL * len(numbers)
        and hit_sources["cache"] == len(hit_results)
    )
    return {
        "ok": ok,
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "database": args.database,
        "workers": args.workers,
        "rate_per_s": args.rate,
        "miss": miss | {"sources": dict(sources)},
        "hit": hit | {"sources": dict(hit_sources), "per_s": round(len(hit_ms) / hit_seconds, 1)},
        "uon_calls": len(phone_calls),
        "uon_over_quota": over_quota,
        "uon_busiest_second": worst_second,
        "baseline_uon_direct": _stats([ms for ms, _ in direct_results]),
        "baseline_operator_floor": _stats(floor_ms),
    }


def _busiest_second(times: list[float]) -> int:
    """The most requests in any 1-second window."""
    times = sorted(times)
    best = lo = 0
    for hi, t in enumerate(times):
        while t - times[lo] >= 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _verdict(value: float, goal: float) -> str:
    return "pass" if value <= goal else "FAIL"


def table(found: dict[str, Any]) -> str:
    miss, hit = found["miss"], found["hit"]
    direct, floor = found["baseline_uon_direct"], found["baseline_operator_floor"]
    rows = [
        ("cache hit p50 / p95, ms", f"{hit['p50_ms']} / {hit['p95_ms']}", "p95 ≤ 20",
         _verdict(hit["p95_ms"], HIT_P95_GOAL_MS)),
        ("operator API floor (GET /api/v1/logs?limit=1) p50 / p95, ms",
         f"{floor['p50_ms']} / {floor['p95_ms']}", "baseline", ""),
        (f"miss p50 / p95 / max, ms ({found['rate_per_s']}/s distinct numbers)",
         f"{miss['p50_ms']} / {miss['p95_ms']} / {miss['max_ms']}", "p95 ≤ 1500",
         _verdict(miss["p95_ms"], MISS_P95_GOAL_MS)),
        ("U-ON user/phone called directly p50 / p95, ms",
         f"{direct['p50_ms']} / {direct['p95_ms']}", "baseline", ""),
        ("misses answered by U-ON (the rest: unavailable, in time)",
         f"{miss['sources'].get('uon', 0)} / {miss['n']}", "≥ 95 %",
         "pass" if miss["sources"].get("uon", 0) >= MISS_ANSWERED_GOAL * miss["n"] else "FAIL"),
        ("U-ON calls / over its quota (429) / busiest second",
         f"{found['uon_calls']} / {found['uon_over_quota']} / {found['uon_busiest_second']}",
         "0 over, ≤ 10 a second",
         "pass" if found["uon_over_quota"] == 0 and found["uon_busiest_second"] <= 10
         else "FAIL"),
        ("hits answered from the cache / lookups per s (4 threads)",
         f"{hit['sources'].get('cache', 0)} / {hit['n']}, {hit['per_s']}/s", "all",
         "pass" if hit["sources"].get("cache", 0) == hit["n"] else "FAIL"),
    ]  # fmt: skip
    lines = [
        f"U-ON lookup — {found['database']}, {found['workers']} receiver worker(s), "
        f"{found['cpus']} CPUs, load average {found['load_before']} before the run",
        "",
        "| measure | result | goal | |",
        "|---|--:|--:|---|",
    ]
    lines += [f"| {name} | {value} | {goal} | {verdict} |" for name, value, goal, verdict in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("CRM_SYNC_SECRET_KEY", generate_key())
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=8.0, help="misses per second")
    parser.add_argument("--miss-seconds", type=float, default=20.0)
    parser.add_argument("--hits", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="crm-bench-uon-") as tmp:
        found = run(args, Path(tmp))
    print("\n" + table(found) + "\n")
    write_result(args.output, "uon", result=found)
    return 0 if found["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
