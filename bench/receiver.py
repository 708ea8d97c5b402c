"""Benchmark the webhook receiver against a bare Starlette app, with wrk.

    python bench/receiver.py [--seconds 10] [--warmup 2]

For each backend (bare, PostgreSQL, SQLite WAL), uvicorn workers (1, 2) and wrk
connections (64, 16): start uvicorn (uvloop + httptools) in a separate process, warm up,
run wrk with a Lua script that POSTs an ALLIO webhook, then compare the rows written with
the 200s answered. Prints a Markdown table and the goals, writes bench/results/receiver.json,
and exits 1 when rows written != 200s answered anywhere.

The Lua script (receiver_post.lua) stops sending after --seconds and lets the connections
idle for a short grace period before wrk exits, so no request is cut off in flight: every
row written belongs to an answer wrk counted, and the comparison can be exact. Webhooks/s
is the 200s answered divided by --seconds; p50/p99 come from wrk's latency histogram.

PostgreSQL: a fresh database on BENCH_DATABASE_URL / TEST_DATABASE_URL (a server URL,
default postgresql://root@127.0.0.1:5432/postgres), created, migrated and dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from crm_schema.engine import make_engine
from crm_schema.integrations import add_integration
from crm_schema.migrate import upgrade
from crm_sync.encryption import generate_key
from provider_emulators.testing import fresh_postgres_database

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
LUA_SCRIPT = BENCH_DIR / "receiver_post.lua"
RESULTS = BENCH_DIR / "results" / "receiver.json"
DEFAULT_PG = "postgresql://root@127.0.0.1:5432/postgres"
GRACE_SECONDS = 2.0  # connections idle this long after the load so every answer is counted

GOAL_PG_RATIO = 0.6
GOAL_SQLITE_RPS = 4000.0
GOAL_PG_P99_MS = 10.0


@dataclass
class Point:
    backend: str
    workers: int
    connections: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    answered_200: int
    non_2xx: int
    socket_errors: int
    rows_written: int | None
    ratio_to_bare: float | None = None

    @property
    def match(self) -> bool | None:
        if self.rows_written is None:
            return None
        return self.rows_written == self.answered_200 and self.socket_errors == 0


# -- databases ----------------------------------------------------------------------------


class Database:
    """A fresh, migrated database with one ALLIO integration."""

    def __init__(self, url: str, cleanup: Any = None) -> None:
        self.url = url
        self._cleanup = cleanup
        upgrade(url)
        self.engine = make_engine(url)
        with self.engine.begin() as conn:
            self.integration = add_integration(
                conn,
                provider="allio",
                name="bench",
                integration_uuid=str(uuid.uuid4()),
                api_base_url=None,
                credentials={},
            )

    def rows(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM allio_webhook")).scalar_one()

    def close(self) -> None:
        self.engine.dispose()
        if self._cleanup is not None:
            self._cleanup()


def postgres_database() -> Database:
    admin_url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get(
        "TEST_DATABASE_URL", DEFAULT_PG
    )
    url, drop = fresh_postgres_database(admin_url, "crm_bench")
    return Database(url, drop)


def sqlite_database(tmp: Path) -> Database:
    path = tmp / "bench.sqlite3"
    db = Database(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    return db


# -- server and load ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """uvicorn in a subprocess (uvloop + httptools, no access log)."""

    def __init__(self, app: str, workers: int, env: dict[str, str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable, "-m", "uvicorn", app,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", "--log-level", "warning",
            "--app-dir", str(BENCH_DIR if app.startswith("bare_app") else ROOT),
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env})
        self._wait_ready(workers)

    def _wait_ready(self, workers: int) -> None:
        deadline = time.monotonic() + 60
        ok = 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {self.proc.returncode}")
            try:
                # Several answers in a row: with 2 workers both should be up.
                if httpx.get(f"{self.base}/healthz", timeout=5).status_code == 200:
                    ok += 1
                    if ok >= 4 * workers:
                        return
                    continue
            except httpx.HTTPError:
                pass
            ok = 0
            time.sleep(0.2)
        raise TimeoutError("uvicorn did not become healthy")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_wrk(
    base: str,
    path: str,
    body: str,
    seconds: float,
    connections: int,
    threads: int,
    authorization: str | None = None,
):
    """One wrk run; returns the numbers printed by the Lua `done` callback."""
    cmd = [
        "wrk", f"-t{min(threads, connections)}", f"-c{connections}",
        f"-d{seconds + GRACE_SECONDS:.0f}s", "--timeout", "30s", "-s", str(LUA_SCRIPT),
        base, "--", path, body, str(seconds), *([authorization] if authorization else []),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line.removeprefix("WRKJSON "))
    raise RuntimeError(f"wrk printed no summary:\n{out}")


def measure(
    backend: str,
    server: Server,
    db: Database | None,
    path: str,
    body: str,
    workers: int,
    connections: int,
    args: argparse.Namespace,
) -> Point:
    if args.warmup > 0:
        run_wrk(server.base, path, body, args.warmup, connections, args.wrk_threads)
    before = db.rows() if db else None
    stats = run_wrk(server.base, path, body, args.seconds, connections, args.wrk_threads)
    after = db.rows() if db else None
    socket_errors = sum(stats[k] for k in ("connect_errors", "read_errors", "write_errors"))
    socket_errors += stats["timeouts"]
    answered = stats["requests"] - stats["status_errors"]
    point = Point(
        backend=backend,
        workers=workers,
        connections=connections,
        seconds=args.seconds,
        rps=answered / args.seconds,
        p50_ms=stats["p50_us"] / 1000,
        p99_ms=stats["p99_us"] / 1000,
        answered_200=answered,
        non_2xx=stats["status_errors"],
        socket_errors=socket_errors,
        rows_written=None if db is None else after - before,  # type: ignore[operator]
    )
    print(
        f"  {backend:8} workers={workers} c={connections:<3} {point.rps:9.0f}/s "
        f"p50={point.p50_ms:.2f}ms p99={point.p99_ms:.2f}ms 200s={answered} "
        f"rows={point.rows_written} non2xx={point.non_2xx} sockerr={socket_errors}",
        flush=True,
    )
    return point


def bench_backend(backend: str, args: argparse.Namespace, tmp: Path) -> list[Point]:
    db: Database | None = None
    if backend == "postgres":
        db = postgres_database()
    elif backend == "sqlite":
        db = sqlite_database(tmp)
    app = "bare_app:app" if db is None else "webhook_receiver.app:app"
    env = {} if db is None else {"DATABASE_URL": db.url}
    integration_uuid = db.integration.integration_uuid if db else str(uuid.uuid4())
    path = db.integration.webhook_path if db else "/webhooks/allio/bare"
    body = json.dumps(
        {"uuid": integration_uuid, "command": "RESERVE_ADD", "indexes": [111, 222, 333, 444]}
    )
    points = []
    try:
        for workers in args.workers:
            server = Server(app, workers, env)
            try:
                for connections in args.connections:
                    points.append(
                        measure(backend, server, db, path, body, workers, connections, args)
                    )
            finally:
                server.stop()
    finally:
        if db is not None:
            db.close()
    return points


# -- report -------------------------------------------------------------------------------


def _mark(ok: bool | None) -> str:
    return "–" if ok is None else ("✓" if ok else "✗")


def table(points: list[Point]) -> str:
    lines = [
        "| backend | workers | connections | webhooks/s | p50 ms | p99 ms | × bare "
        "| rows written | 200s answered | match |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|:-:|",
    ]
    for p in points:
        ratio = "–" if p.ratio_to_bare is None else f"{p.ratio_to_bare:.2f}"
        rows = "–" if p.rows_written is None else str(p.rows_written)
        lines.append(
            f"| {p.backend} | {p.workers} | {p.connections} | {p.rps:,.0f} | {p.p50_ms:.2f} "
            f"| {p.p99_ms:.2f} | {ratio} | {rows} | {p.answered_200} | {_mark(p.match)} |"
        )
    return "\n".join(lines)


def goals(points: list[Point]) -> list[dict[str, Any]]:
    def find(backend: str, workers: int, connections: int) -> Point | None:
        return next(
            (
                p
                for p in points
                if (p.backend, p.workers, p.connections) == (backend, workers, connections)
            ),
            None,
        )

    result: list[dict[str, Any]] = []
    pg = find("postgres", 2, 64)
    if pg is not None and pg.ratio_to_bare is not None:
        result.append(
            {
                "goal": f"PostgreSQL, 2 workers, 64 connections >= {GOAL_PG_RATIO}x bare",
                "measured": f"{pg.ratio_to_bare:.2f}x ({pg.rps:,.0f}/s)",
                "pass": pg.ratio_to_bare >= GOAL_PG_RATIO,
            }
        )
    lite = find("sqlite", 2, 64)
    if lite is not None:
        result.append(
            {
                "goal": f"SQLite (WAL), 2 workers, 64 connections >= {GOAL_SQLITE_RPS:,.0f}/s",
                "measured": f"{lite.rps:,.0f}/s",
                "pass": lite.rps >= GOAL_SQLITE_RPS,
            }
        )
    for workers in (1, 2):
        p = find("postgres", workers, 16)
        if p is not None:
            result.append(
                {
                    "goal": f"PostgreSQL, {workers} worker(s), 16 connections: "
                    f"p99 <= {GOAL_PG_P99_MS:.0f} ms",
                    "measured": f"{p.p99_ms:.2f} ms",
                    "pass": p.p99_ms <= GOAL_PG_P99_MS,
                }
            )
    return result


def main(argv: list[str] | None = None) -> int:
    # A throwaway key for the bench database: credentials are stored encrypted.
    os.environ.setdefault("CRM_SYNC_SECRET_KEY", generate_key())
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per point")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per point")
    parser.add_argument("--backends", default="bare,postgres,sqlite")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--connections", default="64,16")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",")]
    args.connections = [int(c) for c in args.connections.split(",")]
    backends = args.backends.split(",")
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2

    points: list[Point] = []
    with tempfile.TemporaryDirectory(prefix="crm-bench-") as tmp:
        for backend in backends:
            print(f"{backend}:", flush=True)
            points.extend(bench_backend(backend, args, Path(tmp)))

    bare = {(p.workers, p.connections): p.rps for p in points if p.backend == "bare"}
    for p in points:
        base = bare.get((p.workers, p.connections))
        p.ratio_to_bare = p.rps / base if base else None

    print()
    print(table(points))
    checked = goals(points)
    if checked:
        print("\nGoals:")
        for g in checked:
            print(f"- {_mark(g['pass'])} {g['goal']}: {g['measured']}")
    mismatches = [p for p in points if p.match is False]

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "benchmark": "webhook_receiver",
                "finished_at": datetime.now(UTC).isoformat(),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "settings": {
                    "seconds": args.seconds,
                    "warmup": args.warmup,
                    "wrk_threads": args.wrk_threads,
                    "server": "uvicorn --loop uvloop --http httptools",
                },
                "points": [{**asdict(p), "match": p.match} for p in points],
                "goals": checked,
                "rows_match_200s": not mismatches,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {args.output}")
    if mismatches:
        print("MISMATCH: rows written != 200s answered for", len(mismatches), "point(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
