"""iiko benchmarks: webhook events ingested, orders synced from a backlog, command latency.

    python bench/iiko.py [--seconds 8] [--backends bare,postgres,sqlite]
                         [--orders 5000] [--commands 20] [--only ingest,sync,commands]

- **ingest** (wrk): iiko posts JSON arrays of events; arrays of 1 and of 50 events go to
  `/webhooks/iiko/{key}` with the authToken, against bare Starlette (parse the JSON,
  answer 200) in the same run. Events/s, requests/s, p50/p99, and the rows written
  compared with the events the 200s acknowledged (must be equal).
- **sync**: a backlog of order events in `webhook_events` (half carry the whole order,
  half only its id) is drained by the sync engine against the emulator over HTTP:
  orders/s, API calls, ids per `deliveries/by_id` call. Baseline in the same run: the
  same events with one `by_id` call per event.
- **commands**: `update-status` commands put in the outbox, sent and followed through
  `commands/status` until `Success`: latency from the request to `succeeded`.

PostgreSQL: a fresh database on BENCH_DATABASE_URL / TEST_DATABASE_URL (a server URL).
Prints Markdown tables; writes bench/results/iiko.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH_DIR))

import receiver as wrk_bench  # noqa: E402  (bench/receiver.py: servers, wrk, databases)
from result_file import write_result  # noqa: E402  (bench/result_file.py)
from sqlalchemy import text  # noqa: E402

from crm_schema.engine import make_engine  # noqa: E402
from crm_schema.integrations import add_integration  # noqa: E402
from crm_schema.migrate import upgrade  # noqa: E402
from crm_sync.encryption import generate_key  # noqa: E402
from provider_emulators.iiko import DEFAULT_ORGANIZATION_ID, demo_events  # noqa: E402
from provider_emulators.testing import fresh_postgres_database  # noqa: E402

RESULTS = BENCH_DIR / "results" / "iiko.json"
TOKEN = "bench-iiko-webhook-token"  # noqa: S105 - a benchmark value
API_LOGIN = "bench-api-login"


# -- databases ----------------------------------------------------------------------------


class Database:
    """A fresh, migrated database with one iiko integration."""

    def __init__(self, url: str, cleanup: Any = None, api_base_url: str | None = None) -> None:
        self.url = url
        self._cleanup = cleanup
        upgrade(url)
        self.engine = make_engine(url)
        with self.engine.begin() as conn:
            self.integration = add_integration(
                conn,
                provider="iiko",
                name="bench",
                integration_uuid=None,
                api_base_url=api_base_url or "http://127.0.0.1:9",
                credentials={"api_login": API_LOGIN},
                settings={"organization_ids": [DEFAULT_ORGANIZATION_ID]},
                webhook_secret=TOKEN,
            )

    def rows(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM webhook_events")).scalar_one()

    def close(self) -> None:
        self.engine.dispose()
        if self._cleanup is not None:
            self._cleanup()


def open_database(backend: str, tmp: Path, api_base_url: str | None = None) -> Database:
    if backend == "postgres":
        admin = os.environ.get("BENCH_DATABASE_URL") or os.environ.get(
            "TEST_DATABASE_URL", wrk_bench.DEFAULT_PG
        )
        url, drop = fresh_postgres_database(admin, "crm_bench_iiko")
        return Database(url, drop, api_base_url)
    path = tmp / f"iiko-{time.monotonic_ns()}.sqlite3"
    return Database(f"sqlite:///{path}", None, api_base_url)


# -- ingest -------------------------------------------------------------------------------


@dataclass
class IngestPoint:
    backend: str
    events_per_request: int
    connections: int
    requests_per_s: float
    events_per_s: float
    p50_ms: float
    p99_ms: float
    answered_200: int
    non_2xx: int
    rows_written: int | None
    ratio_to_bare: float | None = None

    @property
    def match(self) -> bool | None:
        if self.rows_written is None:
            return None
        return self.rows_written == self.answered_200 * self.events_per_request


def _body(size: int) -> str:
    return json.dumps(demo_events(DEFAULT_ORGANIZATION_ID, size, seed=size), ensure_ascii=False)


def bench_ingest(args: argparse.Namespace, tmp: Path) -> list[IngestPoint]:
    points = []
    for backend in args.backends:
        db = None if backend == "bare" else open_database(backend, tmp)
        app = "bare_app:app" if db is None else "webhook_receiver.app:app"
        env = {} if db is None else {"DATABASE_URL": db.url}
        path = db.integration.webhook_path if db else "/webhooks/iiko/bare"
        server = wrk_bench.Server(app, 1, env)
        try:
            for size in args.sizes:
                body_file = tmp / f"body-{size}.json"
                body_file.write_text(_body(size))
                body = f"@{body_file}"  # 50 whole orders are too long for wrk's argv
                run = argparse.Namespace(**vars(args))
                wrk_bench.run_wrk(server.base, path, body, args.warmup, args.connections,
                                  args.wrk_threads, TOKEN)  # fmt: skip
                before = db.rows() if db else None
                stats = wrk_bench.run_wrk(server.base, path, body, run.seconds,
                                          args.connections, args.wrk_threads, TOKEN)  # fmt: skip
                after = db.rows() if db else None
                answered = stats["requests"] - stats["status_errors"]
                point = IngestPoint(
                    backend=backend,
                    events_per_request=size,
                    connections=args.connections,
                    requests_per_s=answered / args.seconds,
                    events_per_s=answered * size / args.seconds,
                    p50_ms=stats["p50_us"] / 1000,
                    p99_ms=stats["p99_us"] / 1000,
                    answered_200=answered,
                    non_2xx=stats["status_errors"],
                    rows_written=None if db is None else after - before,  # type: ignore[operator]
                )
                print(f"  {backend:8} {size:>2} events/request: {point.events_per_s:9.0f} "
                      f"events/s p99={point.p99_ms:.2f}ms rows={point.rows_written}",
                      flush=True)  # fmt: skip
                points.append(point)
        finally:
            server.stop()
            if db is not None:
                db.close()
    bare = {p.events_per_request: p.events_per_s for p in points if p.backend == "bare"}
    for p in points:
        base = bare.get(p.events_per_request)
        p.ratio_to_bare = p.events_per_s / base if base and p.backend != "bare" else None
    return points


def ingest_table(points: list[IngestPoint]) -> str:
    lines = [
        "| backend | events/request | requests/s | events/s | p50 ms | p99 ms | × bare "
        "| rows written | events acked | match |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|:-:|",
    ]
    for p in points:
        ratio = "–" if p.ratio_to_bare is None else f"{p.ratio_to_bare:.2f}"
        rows = "–" if p.rows_written is None else f"{p.rows_written:,}"
        mark = "–" if p.match is None else ("✓" if p.match else "✗")
        lines.append(
            f"| {p.backend} | {p.events_per_request} | {p.requests_per_s:,.0f} "
            f"| {p.events_per_s:,.0f} | {p.p50_ms:.2f} | {p.p99_ms:.2f} | {ratio} | {rows} "
            f"| {p.answered_200 * p.events_per_request:,} | {mark} |"
        )
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("CRM_SYNC_SECRET_KEY", generate_key())
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="ingest,sync,commands")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--backends", default="bare,postgres,sqlite")
    parser.add_argument("--sizes", default="1,50", help="events per request")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--orders", type=int, default=5000, help="sync backlog (events)")
    parser.add_argument("--commands", type=int, default=20)
    parser.add_argument("--database", default="postgres", help="sync/commands database")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.token, args.api_login = TOKEN, API_LOGIN
    args.backends = args.backends.split(",")
    args.sizes = [int(s) for s in args.sizes.split(",")]
    only = set(args.only.split(","))
    results: dict[str, Any] = {}
    failed = False
    with tempfile.TemporaryDirectory(prefix="crm-bench-iiko-") as tmp:
        if "ingest" in only:
            if shutil.which("wrk") is None:
                print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
                return 2
            print("ingest:", flush=True)
            points = bench_ingest(args, Path(tmp))
            print("\n" + ingest_table(points) + "\n")
            results["ingest"] = [{**asdict(p), "match": p.match} for p in points]
            failed |= any(p.match is False for p in points)
        if "sync" in only:
            import iiko_sync

            print("sync:", flush=True)
            found = iiko_sync.bench_sync(args, Path(tmp), open_database)
            print("\n" + iiko_sync.sync_table(found) + "\n")
            results["sync"] = found
            failed |= not found.get("ok", False)
        if "commands" in only:
            import iiko_sync

            print("commands:", flush=True)
            found = iiko_sync.bench_commands(args, Path(tmp), open_database)
            print("\n" + iiko_sync.commands_table(found) + "\n")
            results["commands"] = found
            failed |= not found.get("ok", False)
    write_result(args.output, "iiko", results=results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
