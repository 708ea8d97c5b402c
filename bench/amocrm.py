"""amoCRM / RDESK benchmark: RDESK updates applied per second under amoCRM's 7/s quota,
and OAuth refreshes when many processes find the token expired at once.

    python bench/amocrm.py [--updates 120] [--processes 8] [--database postgres|sqlite]

- **updates**: RDESK booked and mc updates for distinct leads are posted to a real
  receiver (arrays of 10), then one run drains them against the amoCRM emulator over
  HTTP at its real quota (7 requests/s per token, 429 and then an IP block above it).
  Each update is a read and a patch of its lead, so the ceiling is 3.5 updates/s; the
  naive baseline is the same updates one at a time with a fixed 1 s pause between calls
  (what a client without a shared limiter must do to stay safe), derived from the counts.
- **refresh**: the stored access token is expired in the emulator and the database; N
  processes each read a lead at the same moment: how many refresh calls amoCRM saw (its
  refresh tokens are single-use: more than one would log everyone out), and how long
  until all processes had their lead.

PostgreSQL: a fresh database on BENCH_DATABASE_URL / TEST_DATABASE_URL (a server URL).
Prints Markdown tables; writes bench/results/amocrm.json.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH_DIR))

import httpx  # noqa: E402
import receiver as wrk_bench  # noqa: E402  (bench/receiver.py: servers)
from result_file import write_result  # noqa: E402  (bench/result_file.py)
from sqlalchemy import func, select, update  # noqa: E402

from crm_schema.engine import make_engine  # noqa: E402
from crm_schema.integrations import add_integration  # noqa: E402
from crm_schema.migrate import upgrade  # noqa: E402
from crm_schema.provider_tokens import NewToken, TokenStore  # noqa: E402
from crm_schema.providers.amocrm import leads  # noqa: E402
from crm_schema.tables import provider_tokens  # noqa: E402
from crm_schema.task_queue import now_utc  # noqa: E402
from crm_sync.encryption import generate_key  # noqa: E402
from orchestration.amocrm.sync import RunOptions, run_amocrm_sync  # noqa: E402
from orchestration.defs.amocrm.resources import AmocrmResource  # noqa: E402
from provider_emulators.amocrm import create_app, rdesk_updates  # noqa: E402
from provider_emulators.sender import post_json  # noqa: E402
from provider_emulators.testing import ServerThread, fresh_postgres_database  # noqa: E402

RESULTS = BENCH_DIR / "results" / "amocrm.json"
LONG_LIVED = "bench-long-lived-token"  # noqa: S105 - a benchmark value
CLIENT = ("demo-client-id", "demo-client-secret", "http://127.0.0.1:8000/oauth/amocrm/callback")


class Database:
    """A fresh, migrated database (PostgreSQL or SQLite)."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.drop = None
        if kind == "postgres":
            admin = os.environ.get("BENCH_DATABASE_URL") or os.environ.get(
                "TEST_DATABASE_URL", wrk_bench.DEFAULT_PG
            )
            self.url, self.drop = fresh_postgres_database(admin, "crm_bench_amocrm")
        else:
            self.url = f"sqlite:///{tmp / f'amocrm-{uuid.uuid4().hex[:8]}.sqlite3'}"
        upgrade(self.url)
        self.engine = make_engine(self.url)

    def add(self, api_base_url: str, **credentials: str) -> Any:
        with self.engine.begin() as conn:
            return add_integration(
                conn,
                provider="amocrm",
                name=f"bench-{uuid.uuid4().hex[:6]}",
                integration_uuid=None,
                api_base_url=api_base_url,
                credentials={"client_secret": CLIENT[1], **credentials},
                settings={"subdomain": "bench", "client_id": CLIENT[0], "redirect_uri": CLIENT[2]},
            )

    def close(self) -> None:
        self.engine.dispose()
        if self.drop is not None:
            self.drop()


def _emulator(**options: Any) -> ServerThread:
    server = ServerThread(create_app(*CLIENT, long_lived_token=LONG_LIVED, **options))
    server.start()
    return server


# -- updates --------------------------------------------------------------------------------


def bench_updates(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    emulator = _emulator(leads_exist=True)
    db = Database(args.database, tmp)
    server = wrk_bench.Server("webhook_receiver.app:app", 1, {"DATABASE_URL": db.url})
    try:
        item = db.add(emulator.base_url, long_lived_token=LONG_LIVED)
        root = server.base + item.webhook_path.rsplit("/", 1)[0]
        half = args.updates // 2
        for endpoint, count, start in (("booked", half, 1), ("mc", args.updates - half, 5001)):
            elements = rdesk_updates(endpoint, count, start_id=start)
            batches = [elements[i : i + 10] for i in range(0, len(elements), 10)]
            sent = post_json(f"{root}/{endpoint}", batches, concurrency=4)
            print(f"  posted {count} {endpoint} updates: {sent['statuses']}", flush=True)
        httpx.delete(emulator.base_url + "/_admin/requests", timeout=10)
        opts = RunOptions(
            day=now_utc().date(), run_id=f"bench-{uuid.uuid4().hex[:8]}", max_seconds=900
        )
        started = time.monotonic()
        result = run_amocrm_sync(db.engine, AmocrmResource(database_url=db.url), opts)
        seconds = time.monotonic() - started
        with db.engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(leads)).scalar_one()
        calls = httpx.get(emulator.base_url + "/_admin/requests", timeout=30).json()
        api = [c for c in calls if c["path"].startswith("/api/v4/")]
        refused = sum(1 for c in calls if c.get("quota_rejected"))
        updated = result.leads_updated
        return {
            "ok": stored == args.updates and refused == 0,
            "updates": args.updates,
            "leads_updated": updated,
            "seconds": round(seconds, 1),
            "updates_per_s": round(updated / seconds, 2) if seconds else 0.0,
            "api_calls": len(api),
            "calls_per_s": round(len(api) / seconds, 2) if seconds else 0.0,
            "over_quota": refused,
            "ceiling_per_s": 3.5,
            "baseline_seconds": round(2 * args.updates * 1.0, 1),
            "baseline_per_s": 0.5,
        }
    finally:
        server.stop()
        db.close()
        emulator.stop()


def updates_table(found: dict[str, Any]) -> str:
    rows = [
        ("RDESK updates (half booked, half mc)", found["updates"], found["updates"]),
        ("leads updated", found["leads_updated"], ""),
        ("drain time, s", found["seconds"], found["baseline_seconds"]),
        ("updates applied per second", found["updates_per_s"], found["baseline_per_s"]),
        ("amoCRM calls (read + patch per update)", found["api_calls"], 2 * found["updates"]),
        ("calls per second (quota 7)", found["calls_per_s"], 1.0),
        ("over-quota requests (429 / 403)", found["over_quota"], ""),
    ]
    lines = [
        "| measure | crm-sync | naive baseline (1 call/s, no shared limiter) |",
        "|---|--:|--:|",
    ]
    lines += [f"| {name} | {ours} | {base} |" for name, ours, base in rows]
    return "\n".join(lines)


# -- refresh --------------------------------------------------------------------------------


def refresh_worker(args: dict[str, Any]) -> dict[str, Any]:
    """One process: read a lead through the shared token (refreshing it if needed)."""
    import logging

    from crm_schema.integrations import get_integration

    logging.getLogger("orchestration").setLevel(logging.ERROR)
    engine = make_engine(args["database_url"])
    with engine.connect() as conn:
        item = get_integration(conn, args["integration_id"])
    engine.dispose()
    resource = AmocrmResource(database_url=args["database_url"], backoff_initial_seconds=0.05)
    time.sleep(max(0.0, args["start_at"] - time.time()))
    with resource.client_for(item) as client:
        lead = client.get_lead(args["lead_id"])
    return {"lead": lead["id"] if lead else None, "done_at": time.time()}


def bench_refresh(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    emulator = _emulator()
    db = Database(args.database, tmp)
    try:
        item = db.add(emulator.base_url)
        exchanged = httpx.post(
            emulator.base_url + "/oauth2/access_token",
            json={"client_id": CLIENT[0], "client_secret": CLIENT[1], "redirect_uri": CLIENT[2],
                  "grant_type": "authorization_code", "code": "code-bench"},
            timeout=10,
        ).json()  # fmt: skip
        TokenStore(db.engine, item.id, "oauth").seed(
            NewToken(exchanged["access_token"], exchanged["expires_in"], exchanged["refresh_token"])
        )
        lead = httpx.post(emulator.base_url + "/_admin/leads", json={"count": 1}, timeout=10)
        (lead_id,) = lead.json()["ids"]
        # Dead everywhere: amoCRM refuses the access token, and ours says it expired.
        httpx.delete(emulator.base_url + "/_admin/tokens", timeout=10)
        with db.engine.begin() as conn:
            conn.execute(
                update(provider_tokens).values(expires_at=now_utc() - timedelta(minutes=1))
            )
        httpx.delete(emulator.base_url + "/_admin/requests", timeout=10)
        ctx = mp.get_context("spawn")
        with ctx.Pool(args.processes) as pool:
            pool.map(time.sleep, [0] * args.processes)  # processes up before the clock starts
            start_at = time.time() + 1.0
            jobs = [
                {"database_url": db.url, "integration_id": item.id, "lead_id": lead_id,
                 "start_at": start_at}
                for _ in range(args.processes)
            ]  # fmt: skip
            results = pool.map(refresh_worker, jobs)
        seconds = max(r["done_at"] for r in results) - start_at
        calls = httpx.get(emulator.base_url + "/_admin/requests", timeout=30).json()
        refreshes = sum(1 for c in calls if c["path"] == "/oauth2/access_token")
        got = sum(1 for r in results if r["lead"] == lead_id)
        return {
            "ok": refreshes == 1 and got == args.processes,
            "processes": args.processes,
            "refresh_calls": refreshes,
            "processes_with_their_lead": got,
            "seconds": round(seconds, 2),
            "baseline_refresh_calls": args.processes,
            "baseline_logged_in": 1,
        }
    finally:
        db.close()
        emulator.stop()


def refresh_table(found: dict[str, Any]) -> str:
    rows = [
        ("processes finding the token expired at once", found["processes"], found["processes"]),
        ("refresh calls to amoCRM", found["refresh_calls"], found["baseline_refresh_calls"]),
        ("processes that got their lead", found["processes_with_their_lead"],
         found["baseline_logged_in"]),
        ("seconds until all had it", found["seconds"], ""),
    ]  # fmt: skip
    lines = [
        "| measure | crm-sync (stored pair, compare-and-swap) | naive (each process refreshes) |",
        "|---|--:|--:|",
    ]
    lines += [f"| {name} | {ours} | {base} |" for name, ours, base in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("CRM_SYNC_SECRET_KEY", generate_key())
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="updates,refresh")
    parser.add_argument("--updates", type=int, default=120)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="crm-bench-amocrm-") as tmp:
        if "updates" in only:
            print("updates:", flush=True)
            results["updates"] = bench_updates(args, Path(tmp))
            print("\n" + updates_table(results["updates"]) + "\n", flush=True)
        if "refresh" in only:
            print("refresh:", flush=True)
            results["refresh"] = bench_refresh(args, Path(tmp))
            print("\n" + refresh_table(results["refresh"]) + "\n", flush=True)
    write_result(args.output, "amocrm", results=results)
    return 0 if all(r.get("ok") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
