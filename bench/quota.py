"""Quota benchmark: N OS processes call ALLIO through the client against the emulator.

    python bench/quota.py --provider allio --processes 3 --seconds 30 [--base-url URL]
                          [--database-url postgresql://...] [--baseline-seconds 10]

Two phases against the same emulator: ``baseline`` (each process has only an
in-process limiter, no shared state) and ``shared`` (the database GCRA). The
emulator's request log is the judge: ``over_quota`` = requests it rejected (429)
plus accepted requests that broke the "N per any 1-second window" rule.
Prints a Markdown table, writes bench/results/quota.json and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

RESULTS = Path(__file__).resolve().parent / "results" / "quota.json"
TOKEN = "demo-token"
EMULATOR_SNIPPET = """
import sys, uvicorn
from provider_emulators.allio import create_app
uvicorn.run(create_app(token=sys.argv[1], quota_per_second=int(sys.argv[2])),
            host="127.0.0.1", port=int(sys.argv[3]), log_level="warning", access_log=False)
"""


# -- emulator ----------------------------------------------------------------------------


def start_emulator(quota: int) -> tuple[subprocess.Popen[bytes], str]:
    """Run the ALLIO emulator in a subprocess; returns (process, base URL)."""
    from provider_emulators.testing import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", EMULATOR_SNIPPET, TOKEN, str(quota), str(port)],
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/_admin/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("emulator did not start")


# -- worker processes --------------------------------------------------------------------


def worker(args: dict[str, Any]) -> dict[str, Any]:
    """One OS process: call reserve_list(100 ids) until the phase ends."""
    from crm_schema.integrations import get_integration
    from crm_sync.ratelimit import LocalRateLimiter
    from orchestration.db import shared_engine
    from orchestration.defs.allio.resources import AllioResource
    from orchestration.resources import CallStats, ProviderError

    logging.getLogger("orchestration").setLevel(logging.ERROR)  # retries are counted instead
    resource = AllioResource(database_url=args["database_url"], egress_id=args["egress_id"])
    with shared_engine(args["database_url"]).connect() as conn:
        integration = get_integration(conn, args["integration_id"])
    integration = integration.__class__(
        **{**integration.__dict__, "api_base_url": args["base_url"]}
    )
    stats = CallStats()
    limiter = LocalRateLimiter() if args["mode"] == "baseline" else None
    rng = random.Random(args["index"])
    errors = 0
    time.sleep(max(0.0, args["start_at"] - time.time()))
    with resource.client_for(integration, stats=stats, limiter=limiter) as client:
        while time.time() < args["stop_at"]:
            try:
                client.reserve_list(rng.sample(range(1, 100_000), 100))
            except ProviderError:
                errors += 1
    return {**stats.as_metadata(), "errors": errors}


def run_phase(mode: str, opts: argparse.Namespace, common: dict[str, Any]) -> dict[str, Any]:
    """Run ``opts.processes`` workers for one phase and judge it by the emulator's log."""
    seconds = opts.seconds if mode == "shared" else opts.baseline_seconds
    httpx.delete(f"{common['base_url']}/_admin/requests")
    start_at = time.time() + 3.0  # after every spawned process has imported dagster
    stop_at = start_at + seconds
    jobs = [
        {
            **common,
            "mode": mode,
            "index": i,
            "start_at": start_at,
            "stop_at": stop_at,
            "egress_id": f"{common['egress_id']}-{mode}",
        }  # fmt: skip
        for i in range(opts.processes)
    ]
    with mp.get_context("spawn").Pool(opts.processes) as pool:
        per_process = pool.map(worker, jobs)
    log = httpx.get(f"{common['base_url']}/_admin/requests", timeout=30).json()
    return {
        "mode": mode,
        "processes": opts.processes,
        "seconds": seconds,
        **judge(log, opts.quota),
        "client_retries": sum(p["api_retries"] for p in per_process),
        "client_errors": sum(p["errors"] for p in per_process),
    }


# -- judging -----------------------------------------------------------------------------


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The largest number of (sorted) ``times`` inside any half-open ``window``."""
    best, left = 0, 0
    for right, t in enumerate(times):
        while t - times[left] >= window:
            left += 1
        best = max(best, right - left + 1)
    return best


def window_breaks(times: list[float], limit: int, window: float = 1.0) -> int:
    """Requests that were the (limit+1)-th or later inside some ``window``."""
    breaks, left = 0, 0
    for right, t in enumerate(times):
        while t - times[left] >= window:
            left += 1
        if right - left + 1 > limit:
            breaks += 1
    return breaks


def judge(log: list[dict[str, Any]], quota: int) -> dict[str, Any]:
    """Requests, 429s, window breaks, utilization and ids/call from the request log."""
    entries = sorted(log, key=lambda e: e["monotonic"])
    sent = [e["monotonic"] for e in entries]
    accepted = [e for e in entries if e["status"] != 429]
    ok_times = [e["monotonic"] for e in accepted]
    rejected = len(entries) - len(accepted)
    breaks = window_breaks(ok_times, quota)
    span = ok_times[-1] - ok_times[0] if len(ok_times) > 1 else 0.0
    rate = (len(ok_times) - 1) / span if span > 0 else 0.0
    ids = [len(e["ids"] or []) for e in accepted if e["status"] == 200]
    return {
        "requests": len(entries),
        "accepted": len(accepted),
        "http_429": rejected,
        "window_breaks": breaks,
        "over_quota": rejected + breaks,
        "max_sent_per_1s": max_in_window(sent),
        "max_accepted_per_1s": max_in_window(ok_times),
        "accepted_per_s": round(rate, 3),
        "utilization": round(rate / quota, 4),
        "ids_per_call": round(sum(ids) / len(ids), 2) if ids else 0.0,
    }


# -- main --------------------------------------------------------------------------------


def prepare_database(database_url: str | None, base_url: str) -> tuple[str, int]:
    """Migrate (a fresh SQLite by default) and add the benchmark integration."""
    from crm_schema.engine import make_engine
    from crm_schema.integrations import add_integration
    from crm_schema.migrate import upgrade

    url = database_url or f"sqlite:///{tempfile.mkdtemp(prefix='quota-bench-')}/crm.sqlite3"
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        integration = add_integration(
            conn,
            provider="allio",
            name=f"quota bench {uuid.uuid4().hex[:6]}",
            integration_uuid=str(uuid.uuid4()),
            api_base_url=base_url,
            credentials={"api_token": TOKEN},
        )
    engine.dispose()
    return url, integration.id


def table(rows: list[dict[str, Any]]) -> str:
    cols = [
        ("mode", "mode"), ("processes", "proc"), ("seconds", "s"), ("requests", "requests"),
        ("accepted", "accepted"), ("http_429", "429"), ("window_breaks", "window breaks"),
        ("over_quota", "over_quota"), ("max_sent_per_1s", "max sent/1 s"),
        ("accepted_per_s", "accepted/s"), ("utilization", "utilization"),
        ("ids_per_call", "ids/call"),
    ]  # fmt: skip
    lines = ["| " + " | ".join(title for _, title in cols) + " |"]
    lines.append("|" + "---|" * len(cols))
    lines += ["| " + " | ".join(str(r[key]) for key, _ in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from crm_sync.encryption import generate_key

    # A throwaway key for the bench database: credentials are stored encrypted.
    os.environ.setdefault("CRM_SYNC_SECRET_KEY", generate_key())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", default="allio", choices=["allio"])
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--baseline-seconds", type=float, default=10.0)
    parser.add_argument("--base-url", help="a running emulator (default: start one)")
    parser.add_argument("--quota", type=int, default=2, help="the emulator's requests/s")
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    parser.add_argument("--output", type=Path, default=RESULTS)
    opts = parser.parse_args(argv)

    proc, base_url = (None, opts.base_url) if opts.base_url else start_emulator(opts.quota)
    try:
        database_url, integration_id = prepare_database(opts.database_url, base_url)
        common = {
            "base_url": base_url,
            "database_url": database_url,
            "integration_id": integration_id,
            "egress_id": f"bench-{uuid.uuid4().hex[:8]}",
        }
        rows = []
        if opts.baseline_seconds > 0:
            rows.append(run_phase("baseline", opts, common))
            time.sleep(1.5)  # let the emulator's window drain between phases
        rows.append(run_phase("shared", opts, common))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    shared = rows[-1]
    result = {
        "provider": opts.provider,
        "database": database_url.split(":", 1)[0],
        "quota_per_second": opts.quota,
        **{k: v for k, v in shared.items() if k != "mode"},
        "baseline": rows[0] if len(rows) > 1 else None,
    }
    print(table(rows))
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0 if shared["over_quota"] == 0 else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
