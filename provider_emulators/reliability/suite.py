"""Run the scenarios for providers × databases, each on its own fresh stack."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from provider_emulators.reliability import registered
from provider_emulators.reliability.report import Row
from provider_emulators.reliability.scenarios import Context, Sizes, run_all
from provider_emulators.reliability.stack import Database, Stack

DATABASES = ("postgres", "sqlite")


def run_suite(
    providers: Iterable[str],
    databases: Iterable[str],
    sizes: Sizes,
    *,
    seed: int = 9,
    only: set[str] | None = None,
    keep: bool = False,
    admin_url: str | None = None,
    log: Callable[[str], None] = print,
) -> list[Row]:
    """Every scenario for each provider on each database; the rows in that order."""
    specs = registered()
    rows: list[Row] = []
    for name in providers:
        spec = specs[name]
        for kind in databases:
            work = Path(tempfile.mkdtemp(prefix=f"crm-reliability-{name}-{kind}-"))
            log(f"{name} on {kind} (work folder {work}):")
            db = None
            try:
                db = (
                    Database.postgres(admin_url)
                    if kind == "postgres"
                    else Database.sqlite(work / "db")
                )
                ctx = None
                with Stack(spec, db, work, lease_seconds=sizes.lease_seconds) as stack:
                    ctx = Context(spec, stack, sizes, seed, log=log)
                    run_all(ctx, only)
                rows.extend(ctx.rows)
            except Exception as exc:
                row = Row("stack", name, kind)
                row.fail(f"the stack did not run: {type(exc).__name__}: {str(exc)[:300]}")
                rows.append(row)
                log(f"  FAIL {row.reasons[0]}")
            finally:
                if db is not None:
                    db.close()
                if not keep:
                    shutil.rmtree(work, ignore_errors=True)
    return rows
