"""The sync and command parts of bench/iiko.py (run that file, not this one).

sync: a backlog of order events is posted to a real receiver (arrays of 50), then one
live run of the generic sync engine drains it against the iiko emulator over HTTP at
the real quota (10 requests/s per integration, aimed 4 % under). Events that carry the
whole order are stored from the event; the rest are read with `deliveries/by_id`, 200
ids a call. The baseline is the naive design on the same events — one `by_id` call per
event, at the same quota — derived from the counts (it would take minutes to run).

commands: `update-status` commands (`OnWay`) on orders that exist in the emulator are
put in the outbox as the operator API does, then the outbox sender sends each and
follows `commands/status` until `Success` (the emulator answers `InProgress` for its
command delay first): latency from the request to `succeeded`.
"""

from __future__ import annotations

import argparse
import math
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import receiver as wrk_bench
from sqlalchemy import func, select

from crm_schema.integrations import get_integration
from crm_schema.providers.iiko import orders
from crm_schema.task_queue import now_utc
from orchestration.core.sync_engine import SyncOptions, run_sync
from orchestration.defs.iiko.resources import IikoResource
from orchestration.iiko.sync import IikoSyncHandler
from orchestration.iiko.tasks import QUEUE, take_webhooks
from orchestration.resources.transport import CallStats
from provider_emulators.iiko import DEFAULT_ORGANIZATION_ID, create_app, demo_events
from provider_emulators.sender import post_json
from provider_emulators.testing import ServerThread

BATCH = 50
BY_ID_LIMIT = 200


def _emulator(api_login: str, command_delay: float = 0.5) -> ServerThread:
    app = create_app(api_login=api_login, command_delay=command_delay, quota=10)
    server = ServerThread(app)
    server.start()
    return server


def _drain(db: Any, resource: IikoResource, stats: CallStats, seconds: float) -> Any:
    with db.engine.begin() as conn:
        take_webhooks(conn)
    opts = SyncOptions(
        day=now_utc().date(),
        run_id=f"bench-{uuid.uuid4().hex[:12]}",
        provider="iiko",
        idle_seconds=0,
        max_seconds=seconds,
        calls_per_second=resource.calls_per_second("iiko"),
    )
    return run_sync(db.engine, QUEUE, IikoSyncHandler(), resource, opts, stats=stats)


def bench_sync(
    args: argparse.Namespace, tmp: Path, open_database: Callable[..., Any]
) -> dict[str, Any]:
    """Post a backlog of events, drain it once; the numbers for the table."""
    emulator = _emulator(args.api_login)
    db = open_database(args.database, tmp, emulator.base_url)
    server = wrk_bench.Server("webhook_receiver.app:app", 1, {"DATABASE_URL": db.url})
    try:
        half = args.orders // 2
        events = demo_events(DEFAULT_ORGANIZATION_ID, half, seed=1, with_order=True)
        events += demo_events(DEFAULT_ORGANIZATION_ID, args.orders - half, seed=2,
                              with_order=False)  # fmt: skip
        bodies = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
        url = server.base + db.integration.webhook_path
        sent = post_json(url, bodies, concurrency=8, headers={"Authorization": args.token})
        print(f"  posted {len(events)} events in {len(bodies)} requests: {sent['statuses']}",
              flush=True)  # fmt: skip
        stats = CallStats()
        resource = IikoResource(database_url=db.url, max_attempts=5)
        started = time.monotonic()
        result = _drain(db, resource, stats, seconds=600)
        seconds = time.monotonic() - started
        with db.engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(orders)).scalar_one()
            integration = get_integration(conn, db.integration.id)
        calls = httpx.get(emulator.base_url + "/_admin/requests", timeout=30).json()
        by_id = [c for c in calls if c["path"].endswith("/deliveries/by_id")]
        over_quota = sum(1 for c in calls if c.get("quota_rejected"))
        partial = args.orders - half
        rate = resource.calls_per_second("iiko")
        stats_order = result.entities["order"]
        return {
            "ok": stored == len({e["eventInfo"]["id"] for e in events}) and over_quota == 0,
            "integration": integration.id,
            "events": len(events),
            "events_with_order": half,
            "orders_stored": stored,
            "seconds": round(seconds, 2),
            "orders_per_s": round(stored / seconds, 1) if seconds else 0.0,
            "by_id_calls": len(by_id),
            "ids_per_call": round(partial / len(by_id), 1) if by_id else 0.0,
            "api_calls": len(calls),
            "over_quota": over_quota,
            "tasks_done": stats_order.tasks_done,
            "tasks_failed": stats_order.tasks_failed,
            "baseline_calls": args.orders,
            "baseline_seconds": round(args.orders / rate, 1),
            "baseline_orders_per_s": round(rate, 1),
            "min_calls": math.ceil(partial / BY_ID_LIMIT),
        }
    finally:
        server.stop()
        db.close()
        emulator.stop()


def sync_table(found: dict[str, Any]) -> str:
    rows = [
        ("events in the backlog (half with the whole order)", found["events"], ""),
        ("orders stored", found["orders_stored"], ""),
        ("drain time, s", found["seconds"], found["baseline_seconds"]),
        ("orders synced per second", found["orders_per_s"], found["baseline_orders_per_s"]),
        ("`deliveries/by_id` calls", found["by_id_calls"], found["baseline_calls"]),
        ("ids per `by_id` call", found["ids_per_call"], 1),
        ("API calls in all (token included)", found["api_calls"], ""),
        ("over-quota requests", found["over_quota"], ""),
        ("tasks done / failed", f"{found['tasks_done']} / {found['tasks_failed']}", ""),
    ]
    lines = ["| measure | crm-sync | naive baseline (one call per event) |", "|---|--:|--:|"]
    lines += [f"| {name} | {ours} | {base} |" for name, ours, base in rows]
    return "\n".join(lines)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return (
        ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] if values else 0.0
    )


def bench_commands(
    args: argparse.Namespace, tmp: Path, open_database: Callable[..., Any]
) -> dict[str, Any]:
    """Latency of `update-status` from the request to `succeeded` (see module docstring)."""
    import threading
    from datetime import timedelta

    from crm_schema import operator_tokens
    from crm_schema.providers.iiko import COMMAND_SUCCEEDED, iiko_commands
    from orchestration.iiko.commands import SenderOptions, send_commands

    delay = 0.5
    emulator = _emulator(args.api_login, command_delay=delay)
    db = open_database(args.database, tmp, emulator.base_url)
    server = wrk_bench.Server("webhook_receiver.app:app", 1, {"DATABASE_URL": db.url})
    stop = threading.Event()
    try:
        # Orders that exist in iiko and in the CRM: made in the emulator, synced from
        # their webhooks.
        made = httpx.post(
            emulator.base_url + "/_admin/orders",
            json={
                "organization_id": DEFAULT_ORGANIZATION_ID,
                "orders": [{"status": "CookingStarted"} for _ in range(args.commands)],
                "send_webhooks": True,
                "url": server.base + db.integration.webhook_path,
                "token": args.token,
            },
            timeout=60,
        ).json()
        resource = IikoResource(database_url=db.url, max_attempts=1)
        _drain(db, IikoResource(database_url=db.url), CallStats(), seconds=120)
        with db.engine.begin() as conn:
            _, token = operator_tokens.create(conn, f"bench-{uuid.uuid4().hex[:6]}")
            ids = dict(
                conn.execute(
                    select(orders.c.iiko_order_id, orders.c.id).where(
                        orders.c.iiko_order_id.in_(made["ids"])
                    )
                ).all()
            )

        def sender() -> None:
            # What the sensor-launched job does, running all along (no launch latency).
            while not stop.is_set():
                opts = SenderOptions(
                    run_id=f"bench-{uuid.uuid4().hex[:8]}",
                    lease=timedelta(seconds=60),
                    time_budget_seconds=2.0,
                    poll_interval_seconds=0.1,
                )
                send_commands(db.engine, resource.client_for, opts)

        thread = threading.Thread(target=sender, daemon=True)
        thread.start()
        latencies: list[float] = []
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.base, headers=auth, timeout=30) as http:
            for iiko_id in made["ids"]:
                started = time.monotonic()
                resp = http.post(f"/api/v1/orders/{ids[iiko_id]}/update-status",
                                 json={"status": "OnWay"})  # fmt: skip
                resp.raise_for_status()
                command_id = resp.json()["id"]
                while time.monotonic() - started < 60:
                    with db.engine.connect() as conn:
                        status = conn.execute(
                            select(iiko_commands.c.status).where(iiko_commands.c.id == command_id)
                        ).scalar_one()
                    if status in (COMMAND_SUCCEEDED, "failed"):
                        break
                    time.sleep(0.02)
                if status == COMMAND_SUCCEEDED:
                    latencies.append(time.monotonic() - started)
        stop.set()
        thread.join(30)
        changed = [
            httpx.get(f"{emulator.base_url}/_admin/orders/{i}", timeout=10).json()
            for i in made["ids"]
        ]
        on_way = sum(1 for o in changed if "OnWay" in str(o))
        return {
            "ok": len(latencies) == args.commands and on_way == args.commands,
            "commands": args.commands,
            "succeeded": len(latencies),
            "orders_on_way_in_iiko": on_way,
            "emulator_in_progress_s": delay,
            "p50_s": round(_percentile(latencies, 0.5), 3),
            "p95_s": round(_percentile(latencies, 0.95), 3),
            "max_s": round(max(latencies, default=0.0), 3),
        }
    finally:
        stop.set()
        server.stop()
        db.close()
        emulator.stop()


def commands_table(found: dict[str, Any]) -> str:
    lines = [
        "| measure | value |",
        "|---|--:|",
        f"| update-status commands (request → succeeded) | {found['commands']} |",
        f"| succeeded / orders OnWay in the emulator | {found['succeeded']} / "
        f"{found['orders_on_way_in_iiko']} |",
        f"| iiko's InProgress time (emulator), s | {found['emulator_in_progress_s']} |",
        f"| latency p50 / p95 / max, s | {found['p50_s']} / {found['p95_s']} / {found['max_s']} |",
    ]
    return "\n".join(lines)
