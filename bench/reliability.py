"""Reliability suite (issue 9): faults injected into the running stack, one row each.

    python bench/reliability.py [--provider allio|all] [--database postgres|sqlite|both]
                                [--quick] [--only 1,2,7] [--keep]

For each registered provider with a reliability part (`RELIABILITY` in its emulator
package) and each database, it starts the real stack — the receiver with 2 uvicorn
workers, the provider's emulator (its real quota), the Dagster daemon and run launcher
on a temporary DAGSTER_HOME with the repository's dagster.yaml, on a fresh PostgreSQL
database (created and dropped; the receiver reaches it through a TCP proxy the suite
can cut) or a fresh SQLite file — and runs scenarios 1–7: bad input (hypothesis, and
schemathesis on /openapi.json), a database outage under load, a receiver worker killed,
a run worker killed with the daemon restarted, provider storms, a duplicate storm and a
secrets scan of every log. Prints a Markdown table and the reasons of every FAIL, writes
bench/results/reliability.json (reliability-quick.json with --quick), exits 1 on a FAIL.

PostgreSQL: BENCH_DATABASE_URL / TEST_DATABASE_URL (a server URL, default
postgresql://root@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from provider_emulators.reliability import registered  # noqa: E402
from provider_emulators.reliability.report import failures, table, write_json  # noqa: E402
from provider_emulators.reliability.scenarios import FULL, QUICK  # noqa: E402
from provider_emulators.reliability.suite import DATABASES, run_suite  # noqa: E402


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    known = sorted(registered())
    parser.add_argument("--provider", default="all", choices=[*known, "all"])
    parser.add_argument("--database", default="both", choices=[*DATABASES, "both"])
    parser.add_argument("--quick", action="store_true", help="reduced sizes (as in the tests)")
    parser.add_argument("--only", default=None, help="scenarios to run, e.g. 1,1b,3,7")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--keep", action="store_true", help="keep the work folders (logs)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    providers = known if args.provider == "all" else [args.provider]
    databases = DATABASES if args.database == "both" else (args.database,)
    sizes = QUICK if args.quick else FULL
    only = set(args.only.split(",")) if args.only else None
    admin = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    started = time.monotonic()
    rows = run_suite(providers, databases, sizes, seed=args.seed, only=only, keep=args.keep,
                     admin_url=admin, log=lambda m: print(m, flush=True))  # fmt: skip
    print()
    print(table(rows))
    failed = failures(rows)
    if failed:
        print("\nFAIL reasons:\n" + failed)
    output = args.output or ROOT / "bench" / "results" / (
        "reliability-quick.json" if args.quick else "reliability.json"
    )
    write_json(rows, output, {"sizes": dataclasses.asdict(sizes), "seed": args.seed,
                              "seconds": round(time.monotonic() - started, 1)})  # fmt: skip
    print(f"\nwrote {output} ({time.monotonic() - started:.0f} s)")
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
