"""Unisender benchmark: 100,000 amoCRM contacts exported to a Unisender list.

    python bench/unisender.py [--contacts 100000] [--database postgres|sqlite]

The contacts are written straight into `contacts` for a fresh amoCRM integration; one
export run then sends them to the Unisender emulator over HTTP at the real quota
(1,200 calls a minute per key and per IP, as a 200 with an error above it). Measured:
calls (goal: ⌈contacts / 500⌉), seconds (set by the quota, not by us), contacts synced,
and the exporting process's peak memory (goal ≤ 300 MB; the export runs in a process of
its own, the emulator in another). Baselines in the same run: the naive export's memory
— a process that loads every contact at once, measured the same way — and its calls
(one a contact), derived.

PostgreSQL: a fresh database on BENCH_DATABASE_URL / TEST_DATABASE_URL (a server URL).
Prints a Markdown table; writes bench/results/unisender.json.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH_DIR))

import httpx  # noqa: E402
from result_file import write_result  # noqa: E402  (bench/result_file.py)
from sqlalchemy import insert, select  # noqa: E402

from crm_schema.engine import make_engine  # noqa: E402
from crm_schema.integrations import add_integration  # noqa: E402
from crm_schema.migrate import upgrade  # noqa: E402
from crm_schema.tables import contacts  # noqa: E402
from crm_sync.encryption import generate_key  # noqa: E402
from provider_emulators.testing import free_port, fresh_postgres_database  # noqa: E402

RESULTS = BENCH_DIR / "results" / "unisender.json"
API_KEY = "bench-unisender-key"
LIST_ID = 1
CHUNK = 5000
DEFAULT_PG = "postgresql://root@127.0.0.1:5432/postgres"


def _database(kind: str, tmp: Path) -> tuple[str, Any]:
    if kind == "postgres":
        admin = os.environ.get("BENCH_DATABASE_URL") or os.environ.get(
            "TEST_DATABASE_URL", DEFAULT_PG
        )
        return fresh_postgres_database(admin, "crm_bench_unisender")
    return f"sqlite:///{tmp / f'unisender-{uuid.uuid4().hex[:8]}.sqlite3'}", None


def _fill(engine: Any, amocrm_id: int, count: int) -> None:
    """``count`` amoCRM contacts, each with an e-mail (1 in 200 invalid) and a phone."""
    with engine.begin() as conn:
        for start in range(0, count, CHUNK):
            rows = [
                {
                    "integration_id": amocrm_id,
                    "external_id": str(n),
                    "custom_fields": {},
                    "raw": {},
                    "source_entity": "amocrm",
                    "role": "contact",
                    "first_name": f"Контакт {n}",
                    "email": f"contact{n}@example.test" if n % 200 else f"broken-{n}@",
                    "phone": f"+7916{n:07d}",
                    "phone_raw": f"8 916 {n:07d}",
                }
                for n in range(start + 1, min(count, start + CHUNK) + 1)
            ]
            conn.execute(insert(contacts), rows)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def naive_load(url: str, amocrm_id: int) -> dict[str, float]:
    """In a fresh process: every contact loaded at once (what a naive export does)."""
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(contacts).where(contacts.c.integration_id == amocrm_id)).all()
    engine.dispose()
    return {"rows": len(rows), "peak_rss_mb": _peak_rss_mb()}


def export_once(url: str, account_id: int) -> dict[str, Any]:
    """In a fresh process: one export of the account; its own peak RSS."""
    from crm_schema.integrations import get_integration
    from orchestration.defs.unisender.resources import UnisenderResource
    from orchestration.unisender.export import export_account

    engine = make_engine(url)
    with engine.connect() as conn:
        account = get_integration(conn, account_id)
    started = time.monotonic()
    client = UnisenderResource(database_url=url).client_for(account)
    try:
        stats = export_account(engine, account, client, run_id="bench")
    finally:
        client.close()
        engine.dispose()
    return {
        "seconds": time.monotonic() - started,
        "peak_rss_mb": _peak_rss_mb(),
        "stats": stats.as_metadata() if hasattr(stats, "as_metadata") else {},
    }


def _in_child(fn: Any, *fn_args: Any) -> Any:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, fn_args)


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    port = free_port()
    emulator = subprocess.Popen(
        [str(Path(sys.executable).parent / "crm-sync"), "emulate", "unisender", "--port",
         str(port), "--lists", str(LIST_ID), "--log-level", "warning"],
        env={**os.environ, "UNISENDER_EMULATOR_API_KEYS": API_KEY},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    url, drop = _database(args.database, tmp)
    upgrade(url)
    engine = make_engine(url)
    try:
        _wait(base + "/_admin/health")
        with engine.begin() as conn:
            amocrm = add_integration(
                conn, provider="amocrm", name="bench amoCRM", integration_uuid=None,
                api_base_url="http://127.0.0.1:9", credentials={"long_lived_token": "x"},
                settings={"subdomain": "bench"},
            )  # fmt: skip
            account = add_integration(
                conn, provider="unisender", name="bench Unisender", integration_uuid=None,
                api_base_url=base, credentials={"api_key": API_KEY},
                settings={"amocrm_integration_id": amocrm.id, "list_ids": [LIST_ID]},
            )  # fmt: skip
        started = time.monotonic()
        _fill(engine, amocrm.id, args.contacts)
        print(f"  {args.contacts} contacts written in {time.monotonic() - started:.1f} s")
        naive = _in_child(naive_load, url, amocrm.id)
        done = _in_child(export_once, url, account.id)
        calls = httpx.get(base + "/_admin/requests", timeout=60).json()
        imports = [c for c in calls if "importContacts" in c["path"]]
        limited = [c for c in calls if c.get("quota_rejected")]
        in_list = len(httpx.get(f"{base}/_admin/lists/{LIST_ID}/contacts", timeout=60).json())
        goal_calls = math.ceil(args.contacts / 500)
        return {
            "ok": len(imports) == goal_calls and done["peak_rss_mb"] <= 300,
            "contacts": args.contacts,
            "import_calls": len(imports),
            "goal_calls": goal_calls,
            "seconds": round(done["seconds"], 1),
            "quota_floor_seconds": round(goal_calls / 20, 1),
            "contacts_in_list": in_list,
            "stats": done["stats"],
            "over_quota": len(limited),
            "peak_rss_mb": round(done["peak_rss_mb"], 1),
            "naive_peak_rss_mb": round(naive["peak_rss_mb"], 1),
            "naive_calls": args.contacts,
            "naive_seconds": round(args.contacts / 20, 1),
        }
    finally:
        engine.dispose()
        if drop is not None:
            drop()
        emulator.terminate()
        emulator.wait(10)


def _wait(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer")


def table(found: dict[str, Any]) -> str:
    rows = [
        ("contacts exported", found["contacts"], found["contacts"]),
        ("importContacts calls (goal ⌈n / 500⌉)", found["import_calls"], found["naive_calls"]),
        ("seconds (the quota allows no fewer than)", f"{found['seconds']} "
         f"({found['quota_floor_seconds']})", found["naive_seconds"]),
        ("contacts in the emulated list", found["contacts_in_list"], ""),
        ("over-quota answers", found["over_quota"], ""),
        ("peak RSS of the exporting process, MB (goal ≤ 300)", found["peak_rss_mb"],
         found["naive_peak_rss_mb"]),
    ]  # fmt: skip
    lines = ["| measure | crm-sync | naive (every contact at once, one call each) |",
             "|---|--:|--:|"]  # fmt: skip
    lines += [f"| {name} | {ours} | {base} |" for name, ours, base in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("CRM_SYNC_SECRET_KEY", generate_key())
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="crm-bench-unisender-") as tmp:
        found = run(args, Path(tmp))
    print("\n" + table(found) + "\n")
    write_result(args.output, "unisender", result=found)
    return 0 if found["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
