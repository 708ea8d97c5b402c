"""The scenarios of issue 9, generic over providers: each returns one `Row`.

Order on one stack (`run_all`): the ingest-only scenarios first, with no daemon (1 bad
input, 2 database outage, 3 receiver worker killed, and the ingest half of 6); their
integrations are then disabled so the sync leaves their random ids alone; then the
daemon starts and the sync scenarios run (6 duplicate storm, 4 run worker killed,
5 provider storms); 7 scans every log for every secret the others used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from provider_emulators.reliability import fuzz
from provider_emulators.reliability.rawhttp import (
    Response,
    bounded,
    build_request,
    post_json,
    send_raw,
)
from provider_emulators.reliability.report import Row
from provider_emulators.reliability.spec import Integration, ProviderReliability, Webhook
from provider_emulators.reliability.stack import Stack, sqlite_held

# The receiver's longest wait for a commit (ReceiverConfig.commit_timeout_seconds) and the
# slack allowed on top of it before a request counts as hung.
COMMIT_TIMEOUT = 8.0
HANG_SLACK = 1.0
RESUME_WITHIN = 5.0
TASK_DONE, TASK_ERROR = 2, 3


@dataclass(frozen=True)
class Sizes:
    fuzz_requests: int
    outage_seconds: float
    outage_lead: float
    outage_tail: float
    kill_load_seconds: float
    dup_webhooks: int
    run_kill_webhooks: int
    storm_webhooks: int
    storm_phase_seconds: float
    lease_seconds: float
    sync_timeout: float
    schemathesis_examples: int
    # A phase of answers slower than the client's timeout (30 s): real timeouts, slow.
    client_timeouts: bool = False
    concurrency: int = 16
    dup_copies: int = 5


FULL = Sizes(
    fuzz_requests=5200, outage_seconds=10, outage_lead=3, outage_tail=8, kill_load_seconds=8,
    dup_webhooks=200, run_kill_webhooks=30, storm_webhooks=80, storm_phase_seconds=5,
    lease_seconds=20, sync_timeout=300, schemathesis_examples=200, client_timeouts=True,
)  # fmt: skip
QUICK = Sizes(
    fuzz_requests=500, outage_seconds=4, outage_lead=1, outage_tail=2, kill_load_seconds=3,
    dup_webhooks=20, run_kill_webhooks=10, storm_webhooks=16, storm_phase_seconds=1.2,
    lease_seconds=10, sync_timeout=100, schemathesis_examples=10,
)  # fmt: skip


@dataclass
class Context:
    spec: ProviderReliability
    stack: Stack
    sizes: Sizes
    seed: int = 9
    rows: list[Row] = field(default_factory=list)
    log: Callable[[str], None] = print

    @property
    def db(self):  # noqa: ANN201
        return self.stack.db

    def row(self, scenario: str) -> Row:
        return Row(scenario, self.spec.provider, self.stack.db.kind)

    def host_port(self) -> tuple[str, int]:
        return "127.0.0.1", self.stack.receiver_port

    def integration(self, name: str) -> Integration:
        """The integration ``name`` (added up front by `run_all`, else now)."""
        for integ in self.stack.integrations:
            if integ.name == name:
                return integ
        integ = self.stack.add_integration(name)
        self.stack.wait_integrations_loaded()
        return integ


# -- helpers ------------------------------------------------------------------------------


def _row_ids(data: Any) -> list[int] | None:
    """The inbox rows a 200 names: `{"id": N}`, or `{"ids": [...]}` for a batch of events
    (empty for an empty batch); None when it names none."""
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("id"), int):
        return [data["id"]]
    ids = data.get("ids")
    if isinstance(ids, list) and all(isinstance(i, int) for i in ids):
        return ids
    return None


def _acked_ids(responses: list[Response]) -> tuple[list[int], int]:
    """(row ids the 200s name, 200s that name none)."""
    ids, nameless = [], 0
    for r in responses:
        if r.status == 200:
            try:
                data = r.json()
            except ValueError:  # the worker died mid-answer: the status line came, no body
                continue
            named = _row_ids(data)
            if named is None:
                nameless += 1
            else:
                ids += named
    return ids, nameless


def _inbox_count(ctx: Context, integ: Integration) -> int:
    return int(
        ctx.db.scalar(
            f"SELECT count(*) FROM {ctx.spec.inbox_table} WHERE integration_id = :i", i=integ.id
        )
    )


def _check_acked(ctx: Context, row: Row, responses: list[Response], integ: Integration) -> None:
    """Every 200 names a row that exists; fills acked / rows."""
    ids, nameless = _acked_ids(responses)
    # Rows acknowledged: one per 200, or each row of a 200 that names several (an iiko
    # request carries an array of events, each its own row).
    row.acked = len(ids) + nameless
    row.rows = _inbox_count(ctx, integ)
    row.check(not nameless, f"{nameless} answers 200 without a row id")
    missing = set(ids) - ctx.db.existing_ids(ctx.spec.inbox_table, ids)
    row.check(not missing, f"{len(missing)} acked webhooks have no row (ids {sorted(missing)[:5]})")
    row.check(len(set(ids)) == len(ids), "two 200s named the same row id")


def _statuses(ctx: Context, integ_ids: list[int]) -> Counter:
    marks = ", ".join(str(i) for i in integ_ids)
    rows = ctx.db.rows(
        f"SELECT status, count(*) FROM {ctx.spec.task_table} "
        f"WHERE integration_id IN ({marks}) GROUP BY status"
    )
    return Counter({int(s): int(n) for s, n in rows})


def _unprocessed(ctx: Context, integ_ids: list[int]) -> int:
    marks = ", ".join(str(i) for i in integ_ids)
    return int(
        ctx.db.scalar(
            f"SELECT count(*) FROM {ctx.spec.inbox_table} "
            f"WHERE integration_id IN ({marks}) AND processed_at IS NULL"
        )
    )


def _wait_tasks(ctx: Context, integ_ids: list[int], timeout: float) -> tuple[bool, Counter, float]:
    """Until every webhook of these integrations became tasks and each task ended 2 or 3."""
    started = time.monotonic()
    counts: Counter = Counter()
    while time.monotonic() - started < timeout:
        counts = _statuses(ctx, integ_ids)
        total = sum(counts.values())
        finished = counts[TASK_DONE] + counts[TASK_ERROR]
        if total and finished == total and _unprocessed(ctx, integ_ids) == 0:
            return True, counts, time.monotonic() - started
        time.sleep(0.5)
    return False, counts, time.monotonic() - started


def _tasks_cell(ctx: Context, integ_ids: list[int], counts: Counter) -> str:
    marks = ", ".join(str(i) for i in integ_ids)
    errors = ctx.db.rows(
        f"SELECT error, count(*) FROM {ctx.spec.task_table} WHERE integration_id IN ({marks}) "
        f"AND status = {TASK_ERROR} GROUP BY error ORDER BY count(*) DESC"
    )
    cell = f"{counts[TASK_DONE]} / {counts[TASK_ERROR]}"
    if errors:
        reasons = "; ".join(f"{(e or 'no reason')[:60]} ×{n}" for e, n in errors[:3])
        cell += f" ({reasons})"
    others = {s: n for s, n in counts.items() if s not in (TASK_DONE, TASK_ERROR)}
    if others:
        cell += " + " + ", ".join(f"{n} in {s}" for s, n in sorted(others.items()))
    return cell


def _duplicates(ctx: Context, integ_ids: list[int]) -> tuple[int, dict[str, int]]:
    marks = ", ".join(str(i) for i in integ_ids)
    total, counts = 0, {}
    for table, key in ctx.spec.entity_tables.items():
        cols = ", ".join(key)
        extra = ctx.db.scalar(
            f"SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM {table} "
            f"WHERE integration_id IN ({marks}) GROUP BY {cols}) AS g"
        )
        stored = ctx.db.scalar(f"SELECT count(*) FROM {table} WHERE integration_id IN ({marks})")
        counts[table] = int(stored)
        total += int(extra)
    return total, counts


def _over_quota(ctx: Context, since: float) -> tuple[int, int]:
    """(requests the emulator refused as over its quota, 1-second windows over it)."""
    entries = ctx.stack.emulator_requests(since)
    rejected = sum(1 for e in entries if e.get("quota_rejected"))
    limit = ctx.spec.quota_per_second
    by_key: dict[str, list[float]] = {}
    for e in entries:
        if not e.get("quota_rejected"):
            by_key.setdefault(e.get("quota_key", e["ip"]), []).append(e["monotonic"])
    windows = 0
    for times in by_key.values():
        times.sort()
        windows += sum(1 for i in range(limit, len(times)) if times[i] - times[i - limit] < 1.0)
    return rejected, windows


async def _send_webhooks(
    ctx: Context, webhooks: list[Webhook], copies: int = 1
) -> list[list[Response]]:
    """Each webhook ``copies`` times at once; answers per webhook."""
    host, port = ctx.host_port()

    async def deliver(w: Webhook) -> list[Response]:
        return list(await asyncio.gather(*(post_json(host, port, w.path, w.body, headers=w.headers)
                                           for _ in range(copies))))  # fmt: skip

    return await bounded([deliver(w) for w in webhooks], max(1, ctx.sizes.concurrency // copies))


async def _load(
    ctx: Context,
    integ: Integration,
    seconds: float,
    events: list[tuple[float, Callable[[], Any]]] = (),  # type: ignore[assignment]
) -> tuple[list[Response], dict[str, float]]:
    """Webhooks as fast as ``concurrency`` senders go for ``seconds``; runs blocking
    ``events`` (at offsets, in seconds) in threads. Returns the answers and the start."""
    host, port = ctx.host_port()
    started = time.monotonic()
    stop_at = started + seconds
    answers: list[Response] = []
    counter = iter(range(10**9))
    marks: dict[str, float] = {}

    async def sender() -> None:
        while time.monotonic() < stop_at:
            n = next(counter)
            w = ctx.spec.webhook(integ, n, [n % 50 + 1])
            answers.append(
                await post_json(host, port, w.path, w.body, timeout=30, headers=w.headers)
            )

    async def event(at: float, fn: Callable[[], Any]) -> None:
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        await asyncio.to_thread(fn)

    await asyncio.gather(
        *(sender() for _ in range(ctx.sizes.concurrency)), *(event(a, f) for a, f in events)
    )
    marks["started"] = started
    return answers, marks


# -- 1. bad input -------------------------------------------------------------------------


def bad_input(ctx: Context) -> Row:
    row = ctx.row(TITLES["bad_input"])
    integ = ctx.integration("reliability bad input")
    cases = fuzz.cases(ctx.spec, integ, ctx.sizes.fuzz_requests, ctx.seed)
    host, port = ctx.host_port()

    async def send(case: fuzz.Case) -> Response:
        request = build_request(case.method, case.target, f"{host}:{port}", case.headers,
                                case.body, case.content_length)  # fmt: skip
        careful = any(n.lower() == "expect" for n, _ in case.headers)
        return await send_raw(host, port, request, timeout=20, half_close=case.half_close,
                              wait_continue=2.0 if careful else 0.0)  # fmt: skip

    started = time.monotonic()
    answers = asyncio.run(bounded([send(c) for c in cases], ctx.sizes.concurrency))
    row.seconds = time.monotonic() - started
    families = Counter(c.family for c in cases)
    problems: Counter = Counter()
    examples: dict[str, str] = {}
    statuses: Counter = Counter()
    server_level = 0
    for case, resp in zip(cases, answers, strict=True):
        statuses[resp.status or resp.error] += 1
        server_level += resp.server_level
        problem = fuzz.judge(case, resp)
        if problem:
            kind = f"{case.family}: {problem.split(':')[0][:70]}"
            problems[kind] += 1
            target = case.target.replace(integ.webhook_key, "<key>")[:80]
            examples.setdefault(kind, f"{case.method} {target!r} → {problem[:160]}")
    keyed = [a for c, a in zip(cases, answers, strict=True) if c.uses_key]
    _check_acked(ctx, row, keyed, integ)
    # A request that got no answer at all may have its row (the answer was lost); a
    # rejected one (any 4xx) never may.
    unanswered = sum(1 for a in keyed if a.status is None)
    extra = (row.rows or 0) - (row.acked or 0)
    row.check(
        extra <= unanswered,
        f"{row.rows} rows for {row.acked} acked requests and {unanswered} unanswered: "
        "a rejected request left a row",
    )
    fivexx = sum(n for s, n in statuses.items() if isinstance(s, int) and s >= 500)
    for kind, n in problems.most_common():
        row.fail(f"{n}× {kind} — e.g. {examples[kind]}")
    row.load = f"{len(cases)} requests, 1 endpoint"
    row.faults = "fuzz: " + ", ".join(f"{k} {v}" for k, v in families.most_common())
    row.details = {
        "families": dict(families),
        "statuses": {str(k): v for k, v in statuses.items()},
        "5xx": fivexx,
        "server_level_400": server_level,
        "problems": dict(problems),
        "unanswered": unanswered,
        "rows_not_acked": extra,
    }
    ctx.stack.disable(integ)
    return row


def openapi(ctx: Context) -> Row:
    """Schemathesis against the receiver's own OpenAPI document."""
    row = ctx.row(TITLES["openapi"])
    url = ctx.stack.receiver + "/openapi.json"
    try:
        resp = httpx.get(url, timeout=10)
        document = resp.json() if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        resp, document = None, None
    if not isinstance(document, dict) or "paths" not in document:
        status = resp.status_code if resp is not None else "no answer"
        row.fail(f"no OpenAPI document: GET /openapi.json answered {status}")
        row.load = "–"
        return row
    integ = ctx.integration("reliability openapi")
    try:
        found = _run_schemathesis(
            ctx.stack.receiver, integ, ctx.sizes.schemathesis_examples, ctx.seed
        )
    except Exception as exc:  # a schemathesis API change must not crash the suite
        row.fail(f"schemathesis could not run: {type(exc).__name__}: {str(exc)[:200]}")
        return row
    row.load = f"{found['checked']} schemathesis requests, {found['operations']} operations"
    row.faults = "schemathesis: generated from /openapi.json, every check"
    row.details = {k: v for k, v in found.items() if k != "acked"}
    row.check(not found["5xx"], f"{len(found['5xx'])} answers 5xx, e.g. {found['5xx'][:2]}")
    for message, n in found["violations"].items():
        row.fail(f"{n}× the answer breaks the document: {message}")
    _check_acked(ctx, row, found["acked"], integ)
    row.check(row.rows == row.acked, f"{row.rows} rows for {row.acked} acked requests")
    ctx.stack.disable(integ)
    return row


class _Answer:
    """What `_check_acked` reads from an answer (status and body)."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.body = status, body

    def json(self) -> Any:
        import json

        return json.loads(self.body)


def _run_schemathesis(base: str, integ: Integration, examples: int, seed: int) -> dict[str, Any]:
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    out: dict[str, Any] = {"checked": 0, "operations": 0, "5xx": [], "acked": []}
    statuses: Counter = Counter()
    violations: Counter = Counter()
    pick = random.Random(seed)
    for result in schema.get_all_operations():
        operation = result.ok()
        out["operations"] += 1

        @hypothesis_seed(seed)
        @settings(max_examples=examples, database=None, deadline=None,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=operation.as_strategy())
        def call(case: Any) -> None:
            if isinstance(getattr(case, "path_parameters", None), dict):
                for name in list(case.path_parameters):
                    if "key" in name and pick.random() < 0.5:
                        case.path_parameters[name] = integ.webhook_key
            response = case.call(base_url=base, timeout=20)
            out["checked"] += 1
            statuses[f"{case.method} {response.status_code}"] += 1
            path = str(case.formatted_path).replace(integ.webhook_key, "<key>")
            if response.status_code >= 500:
                out["5xx"].append(f"{case.method} {path} → {response.status_code}")
            if integ.webhook_key in str(case.formatted_path):
                out["acked"].append(_Answer(response.status_code, response.content))
            try:
                case.validate_response(response)
            except Exception as exc:
                lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
                message = next((x for x in lines if not x.startswith(("-", "+", "["))), "?")
                violations[f"{case.method} {path.split('/')[1]}…: {message[:120]}"] += 1

        call()
    out["statuses"] = dict(statuses)
    out["violations"] = dict(violations)
    return out


# -- 2. database outage -------------------------------------------------------------------


def database_outage(ctx: Context) -> Row:
    row = ctx.row(TITLES["database_outage"])
    sizes = ctx.sizes
    integ = ctx.integration("reliability outage")
    window: dict[str, float] = {}
    stack = ctx.stack

    if stack.db.kind == "postgres":
        assert stack.proxy is not None

        def down() -> None:
            window["down"] = time.monotonic()
            stack.proxy.cut()  # type: ignore[union-attr]

        def up() -> None:
            stack.proxy.restore()  # type: ignore[union-attr]
            window["up"] = time.monotonic()

        events = [(sizes.outage_lead, down), (sizes.outage_lead + sizes.outage_seconds, up)]
        row.faults = f"TCP proxy to PostgreSQL cut {sizes.outage_seconds:g} s"
    else:

        def hold() -> None:
            with sqlite_held(stack.db.path):
                window["down"] = time.monotonic()
                time.sleep(sizes.outage_seconds)
            window["up"] = time.monotonic()

        events = [(sizes.outage_lead, hold)]
        row.faults = f"BEGIN EXCLUSIVE held {sizes.outage_seconds:g} s"
    seconds = sizes.outage_lead + sizes.outage_seconds + sizes.outage_tail
    answers, _ = asyncio.run(_load(ctx, integ, seconds, events))
    row.seconds = seconds
    row.load = f"{len(answers)} webhooks, {sizes.concurrency} senders"
    _check_acked(ctx, row, answers, integ)
    down, up = window.get("down"), window.get("up")
    row.check(down is not None and up is not None, "the outage did not run")
    others = [a for a in answers if a.status != 200]
    bad = [a for a in others if a.status != 503 or "retry-after" not in a.headers]
    kinds = Counter(f"{a.status or a.error}" for a in bad)
    row.check(not bad, f"{len(bad)} answers neither 200 nor 503 with Retry-After: {dict(kinds)}")
    not_json = [a for a in others if a.status and a.json_error() is None]
    row.check(not not_json, f"{len(not_json)} 503s without a JSON error")
    slowest = max((a.seconds for a in answers), default=0.0)
    limit = COMMIT_TIMEOUT + HANG_SLACK
    hung = [a for a in answers if a.seconds > limit]
    row.check(not hung, f"{len(hung)} requests waited past {limit:g} s (slowest {slowest:.1f} s)")
    # 503s answered while the database was away (or just as it came back).
    refused = sum(
        1 for a in answers if a.status == 503 and down and up and down <= a.finished <= up + 1
    )
    row.check(refused > 0, "no request was refused during the outage (did it bite?)")
    resumed = None
    if up is not None:
        after = sorted(a.finished for a in answers if a.status == 200 and a.finished > up)
        resumed = (after[0] - up) if after else None
        row.check(resumed is not None and resumed <= RESUME_WITHIN,
                  f"200s resumed {resumed if resumed is None else round(resumed, 2)} s after "
                  f"the database came back (goal ≤ {RESUME_WITHIN:g} s)")  # fmt: skip
    row.details = {
        "answers": dict(Counter(str(a.status or a.error) for a in answers)),
        "slowest_s": round(slowest, 2),
        "refused_during_outage": refused,
        "resumed_after_s": None if resumed is None else round(resumed, 2),
        "rows_not_acked": (row.rows or 0) - (row.acked or 0),
    }
    row.faults += f"; slowest answer {slowest:.1f} s"
    ctx.stack.disable(integ)
    return row


# -- 3. receiver worker killed ------------------------------------------------------------


def worker_killed(ctx: Context) -> Row:
    row = ctx.row(TITLES["worker_killed"])
    integ = ctx.integration("reliability worker kill")
    killed: dict[str, Any] = {}

    def kill() -> None:
        # The worker holding the most connections: the kill must hit requests in flight.
        workers = len(ctx.stack.receiver_workers_pids())
        busiest = ctx.stack.busiest_receiver_worker()
        if busiest:
            os.kill(busiest[0], signal.SIGKILL)
            killed["pid"], killed["sockets"], killed["workers"] = *busiest, workers

    seconds = ctx.sizes.kill_load_seconds
    answers, _ = asyncio.run(_load(ctx, integ, seconds, [(seconds / 3, kill)]))
    row.seconds = seconds
    row.load = f"{len(answers)} webhooks, {ctx.sizes.concurrency} senders"
    row.faults = f"kill -9 of 1 of {killed.get('workers', '?')} uvicorn workers"
    row.check("pid" in killed, "found no receiver worker to kill")
    _check_acked(ctx, row, answers, integ)
    errors = Counter(a.error for a in answers if a.status is None)
    others = Counter(a.status for a in answers if a.status not in (None, 200))
    row.check(not others, f"answers other than 200: {dict(others)}")
    back = ctx.stack.wait_receiver(30)
    row.check(back, "the receiver did not answer health checks after the kill")
    workers_after = len(ctx.stack.receiver_workers_pids())
    row.details = {
        "killed_pid": killed.get("pid"),
        "sockets_of_killed": killed.get("sockets"),
        "lost_in_flight": dict(errors),
        "workers_after": workers_after,
        "rows_not_acked": (row.rows or 0) - (row.acked or 0),
    }
    row.faults += f"; {sum(errors.values())} requests lost in flight, {workers_after} workers after"
    ctx.stack.disable(integ)
    return row


# -- 6. duplicate storm (ingest before the daemon, sync after) ----------------------------


def duplicate_storm_ingest(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes
    rng = random.Random(ctx.seed)
    pool = max(10, sizes.dup_webhooks * 2)
    plan = [sorted(rng.sample(range(1, pool + 1), rng.randint(1, 5)))
            for _ in range(sizes.dup_webhooks)]  # fmt: skip
    once = ctx.integration("reliability once")
    storm = ctx.integration("reliability duplicate storm")
    sent: dict[str, Any] = {"once": once, "storm": storm, "plan": plan}
    for name, integ, copies in (("once", once, 1), ("storm", storm, sizes.dup_copies)):
        webhooks = [ctx.spec.webhook(integ, n, ids) for n, ids in enumerate(plan)]
        answers = asyncio.run(_send_webhooks(ctx, webhooks, copies))
        sent[f"{name}_answers"] = [a for group in answers for a in group]
    return sent


def duplicate_storm(ctx: Context, sent: dict[str, Any]) -> Row:
    row = ctx.row(TITLES["duplicate_storm"])
    sizes = ctx.sizes
    once, storm = sent["once"], sent["storm"]
    started = time.monotonic()
    ok, counts, waited = _wait_tasks(ctx, [once.id, storm.id], sizes.sync_timeout)
    row.seconds = time.monotonic() - started
    row.load = f"{sizes.dup_webhooks} webhooks × {sizes.dup_copies} concurrent copies"
    row.faults = "every webhook delivered 5× at once"
    _check_acked(ctx, row, sent["storm_answers"], storm)
    once_row = ctx.row("6. baseline")
    _check_acked(ctx, once_row, sent["once_answers"], once)
    for reason in once_row.reasons:
        row.fail(f"baseline: {reason}")
    expected = sizes.dup_webhooks * sizes.dup_copies
    delivered = sum(1 for a in sent["storm_answers"] if a.status == 200)
    row.check(delivered == expected, f"{delivered} of {expected} deliveries acked")
    row.check(ok, f"tasks not finished within {sizes.sync_timeout:g} s: {dict(counts)}")
    storm_counts = _statuses(ctx, [storm.id])
    row.tasks = _tasks_cell(ctx, [storm.id], storm_counts)
    row.check(storm_counts[TASK_ERROR] == 0, f"{storm_counts[TASK_ERROR]} tasks failed")
    dupes, stored = _duplicates(ctx, [storm.id])
    row.duplicates = dupes
    row.check(dupes == 0, f"{dupes} duplicate entity rows")
    _, stored_once = _duplicates(ctx, [once.id])
    row.check(stored == stored_once, f"stored {stored} vs {stored_once} without duplicates")
    calls = {
        name: int(
            ctx.db.scalar("SELECT count(*) FROM api_call_log WHERE integration_id = :i", i=integ.id)
        )  # fmt: skip
        for name, integ in (("once", once), ("storm", storm))
    }
    ids = len({i for ids in sent["plan"] for i in ids})
    row.check(calls["storm"] <= calls["once"],
              f"{calls['storm']} API calls with duplicates vs {calls['once']} without "
              f"({calls['storm'] / ids:.2f} vs {calls['once'] / ids:.2f} per id)")  # fmt: skip
    row.details = {"calls": calls, "distinct_ids": ids, "stored": stored, "waited_s": waited}
    row.faults += f"; API calls {calls['storm']} vs {calls['once']} once"
    return row


# -- 4. run worker killed -----------------------------------------------------------------


def run_worker_killed(ctx: Context) -> Row:
    row = ctx.row(TITLES["run_worker_killed"])
    sizes = ctx.sizes
    integ = ctx.integration("reliability run kill")
    since = time.time()
    ctx.stack.faults({"latency_ms": 300})
    n = sizes.run_kill_webhooks
    webhooks = [ctx.spec.webhook(integ, 0, range(k * 100 + 1, k * 100 + 101)) for k in range(n)]
    answers = [a for g in asyncio.run(_send_webhooks(ctx, webhooks)) for a in g]
    _check_acked(ctx, row, answers, integ)
    row.load = f"{n} webhooks × 100 ids"
    expected = {t: set() for t in ctx.spec.entity_tables}
    for w in webhooks:
        for table, ids in w.entities.items():
            expected[table].update(ids)

    def mid_batch() -> tuple[str, int] | None:
        counts = _statuses(ctx, [integ.id])
        if counts[TASK_DONE] < 1 or counts[1] < 1:
            return None
        beats = ctx.db.rows("SELECT run_id, pid FROM run_heartbeats ORDER BY beat_at DESC")
        for run_id, pid in beats:
            if pid and Path(f"/proc/{pid}").exists():
                return run_id, int(pid)
        return None

    found = None
    deadline = time.monotonic() + sizes.sync_timeout
    while found is None and time.monotonic() < deadline:
        found = mid_batch()
        time.sleep(0.2)
    if found is None:
        counts = dict(_statuses(ctx, [integ.id]))
        row.fail(f"never saw a run in the middle of its batches: {counts}")
        ctx.stack.faults(None)
        return row
    run_id, pid = found
    before = _statuses(ctx, [integ.id])
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    ctx.stack.stop_daemon()
    ctx.stack.faults(None)
    ctx.stack.start_daemon()
    limit = sizes.lease_seconds + 60
    ok, counts, _ = _wait_tasks(ctx, [integ.id], limit + 5)
    took = time.monotonic() - killed_at
    row.seconds = took
    row.faults = (f"kill -9 of the run worker with {before[TASK_DONE]} done, {before[1]} in hand; "
                  f"daemon restarted; lease {sizes.lease_seconds:g} s")  # fmt: skip
    row.tasks = _tasks_cell(ctx, [integ.id], counts)
    row.check(ok and counts[TASK_ERROR] == 0 and set(counts) == {TASK_DONE},
              f"not every task ended 2 after the kill: {dict(counts)}")  # fmt: skip
    row.check(took <= limit, f"took {took:.0f} s after the kill (goal ≤ lease + 60 = {limit:g} s)")
    dupes, stored = _duplicates(ctx, [integ.id])
    row.duplicates = dupes
    row.check(dupes == 0, f"{dupes} entities stored more than once")
    for table, ids in expected.items():
        row.check(stored.get(table, 0) >= len(ids),
                  f"{table}: {stored.get(table, 0)} stored of {len(ids)}")  # fmt: skip
    rejected, windows = _over_quota(ctx, since)
    row.over_quota = rejected + windows
    row.check(row.over_quota == 0, f"{rejected} requests refused over quota by the emulator")
    crashes = ctx.db.scalar(
        f"SELECT count(*) FROM {ctx.spec.task_table} WHERE integration_id = :i AND crashes > 0",
        i=integ.id,
    )
    row.details = {"killed_run": run_id, "killed_pid": pid, "seconds_to_done": round(took, 1),
                   "tasks_with_crash": int(crashes), "stored": stored}  # fmt: skip
    return row


# -- 5. provider storms -------------------------------------------------------------------

CLIENT_TIMEOUT_MS = 31_000  # the provider clients give up after 30 s
STORMS = (
    ("429 storm", "seconds", {"retry_after": "1"}),
    ("5xx burst", "faults", {"error_rate": 0.6}),
    ("slow answers", "faults", {"latency_ms": 2500}),
    ("malformed bodies", "faults", {"malformed_rate": 0.6}),
    ("dropped connections", "faults", {"drop_rate": 0.6}),
)


def provider_storms(ctx: Context) -> Row:
    row = ctx.row(TITLES["provider_storms"])
    sizes = ctx.sizes
    integ = ctx.integration("reliability storms")
    since = time.time()
    n = sizes.storm_webhooks
    base = 100_000
    # 100 ids a webhook: one API call each, so the sync is busy through every storm.
    webhooks = [ctx.spec.webhook(integ, k, range(base + k * 100 + 1, base + k * 100 + 101))
                for k in range(n)]  # fmt: skip
    answers = [a for g in asyncio.run(_send_webhooks(ctx, webhooks)) for a in g]
    _check_acked(ctx, row, answers, integ)
    row.load = f"{n} webhooks × 100 ids"
    phase = sizes.storm_phase_seconds
    started = time.monotonic()
    # Let the sync start calling the provider, then one storm after another.
    row.check(_wait_until(lambda: bool(ctx.stack.emulator_requests(since)), 60),
              "the sync did not call the provider within 60 s")  # fmt: skip
    storms = list(STORMS)
    if sizes.client_timeouts:
        storms.append(("client timeouts", "faults", {"latency_ms": CLIENT_TIMEOUT_MS}))
    for _name, kind, faults in storms:
        ctx.stack.faults(None)
        if kind == "seconds":
            ctx.stack.faults({**faults, "force_429_seconds": phase})
        else:
            ctx.stack.faults(faults)
        time.sleep(phase)
    ctx.stack.faults(None)
    ok, counts, _ = _wait_tasks(ctx, [integ.id], sizes.sync_timeout)
    row.seconds = time.monotonic() - started
    row.faults = ", ".join(name for name, _, _ in storms) + f" ({phase:g} s each)"
    row.tasks = _tasks_cell(ctx, [integ.id], counts)
    row.check(counts[1] == 0, f"{counts[1]} tasks left in 1")
    if not ok:
        waiting = ctx.db.rows(
            f"SELECT error, count(*) FROM {ctx.spec.task_table} WHERE integration_id = :i "
            "AND status = 0 GROUP BY error", i=integ.id)  # fmt: skip
        row.fail(f"tasks not ended 2 or 3 within {sizes.sync_timeout:g} s: {dict(counts)}; "
                 f"waiting: {[(str(e)[:60], k) for e, k in waiting]}")  # fmt: skip
    no_reason = ctx.db.scalar(
        f"SELECT count(*) FROM {ctx.spec.task_table} WHERE integration_id = :i AND status = 3 "
        "AND (error IS NULL OR error = '')", i=integ.id)  # fmt: skip
    row.check(no_reason == 0, f"{no_reason} failed tasks without an error")
    rejected, windows = _over_quota(ctx, since)
    row.over_quota = rejected + windows
    row.check(row.over_quota == 0,
              f"{rejected} requests refused over quota, {windows} windows over it")  # fmt: skip
    dupes, stored = _duplicates(ctx, [integ.id])
    row.duplicates = dupes
    row.check(dupes == 0, f"{dupes} duplicate entity rows")
    faults_seen = Counter(e.get("fault") or "none" for e in ctx.stack.emulator_requests(since))
    seen = ctx.db.rows(
        "SELECT coalesce(status_code, 0), error, count(*) FROM api_call_log "
        "WHERE integration_id = :i GROUP BY 1, 2 ORDER BY 3 DESC", i=integ.id)  # fmt: skip
    client_saw = {
        f"{code or 'no answer'} {(error or '')[:60]}".strip(): n for code, error, n in seen
    }
    row.details = {"emulator_outcomes": dict(faults_seen), "client_saw": client_saw,
                   "stored": stored}  # fmt: skip
    return row


def _wait_until(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.25)
    return False


# -- 7. secrets ---------------------------------------------------------------------------


def secrets_scan(ctx: Context) -> Row:
    row = ctx.row(TITLES["secrets_scan"])
    stack = ctx.stack
    stack.show_integrations(everyone=ctx.sizes is not QUICK)
    secrets: dict[str, str] = {"API token": stack.api_token}
    if stack.db.password:
        secrets["database password"] = stack.db.password
    if stack.secret_key:
        secrets["CRM_SYNC_SECRET_KEY"] = stack.secret_key
    keys = {f"webhook key of {i.name}": i.webhook_key for i in stack.integrations}
    needles = _needles(secrets, keys)
    hits: Counter = Counter()
    files = [p for p in stack.logs.rglob("*") if p.is_file()]
    files += [p for p in stack.dagster_home.rglob("*") if p.is_file()]
    for path in files:
        data = path.read_bytes()
        lowered = data.lower()
        for label, needle, is_key in needles:
            # `integrations add` prints the webhook URL to hand to the provider, by design.
            if is_key and path.name == "cli-add.log":
                continue
            found = lowered.count(needle.lower()) if is_key else data.count(needle)
            if found:
                hits[(label.split(" of ")[0], _where(path, stack))] += found
    for column in ("url", "request_body", "response_body", "error"):
        values = stack.db.rows(f"SELECT {column} FROM api_call_log WHERE {column} IS NOT NULL")
        text_blob = "\n".join(str(v[0]) for v in values).encode()
        for label, needle, is_key in needles:
            blob = text_blob.lower() if is_key else text_blob
            found = blob.count(needle.lower() if is_key else needle)
            if found:
                hits[(label.split(" of ")[0], f"api_call_log.{column}")] += found
    row.secrets = sum(hits.values())
    row.load = f"{len(files)} files + api_call_log"
    row.faults = f"{len(secrets) + len(keys)} secrets searched"
    for (label, where), n in sorted(hits.items()):
        row.fail(f"{label} found {n}× in {where}")
    row.details = {"secrets": sorted(list(secrets) + list(keys)),
                   "hits": {f"{a} in {b}": n for (a, b), n in hits.items()}}  # fmt: skip
    return row


def _needles(secrets: dict[str, str], keys: dict[str, str]) -> list[tuple[str, bytes, bool]]:
    out = []
    for label, value in secrets.items():
        out.append((label, value.encode(), False))
        if quote(value, safe="") != value:
            out.append((label, quote(value, safe="").encode(), False))
    for label, value in keys.items():
        out.append((label, value.encode(), True))
    return out


def _where(path: Path, stack: Stack) -> str:
    for base, name in ((stack.logs, "logs"), (stack.dagster_home, "DAGSTER_HOME")):
        with contextlib.suppress(ValueError):
            return f"{name}/{path.relative_to(base)}"
    return str(path)


# -- all of them on one stack -------------------------------------------------------------

INTEGRATIONS = {
    "1": ["reliability bad input"], "2": ["reliability outage"], "3": ["reliability worker kill"],
    "4": ["reliability run kill"], "5": ["reliability storms"],
    "6": ["reliability once", "reliability duplicate storm"],
}  # fmt: skip
TITLES = {
    "bad_input": "1. bad input", "openapi": "1b. OpenAPI (schemathesis)",
    "database_outage": "2. database outage", "worker_killed": "3. receiver worker killed",
    "run_worker_killed": "4. run worker killed", "provider_storms": "5. provider storms",
    "duplicate_storm": "6. duplicate storm", "secrets_scan": "7. secrets in logs",
}  # fmt: skip
INGEST = {"1": bad_input, "1b": openapi, "2": database_outage, "3": worker_killed}


def run_all(ctx: Context, only: set[str] | None = None) -> list[Row]:
    """Every scenario (or those in ``only``: "1", "1b", "2" … "7") on one started stack."""

    def want(key: str) -> bool:
        return only is None or key in only

    def record(fn: Callable[..., Row], *args: Any) -> Row:
        ctx.log(f"  {ctx.spec.provider}/{ctx.stack.db.kind}: {fn.__name__} …")
        started = time.monotonic()
        try:
            row = fn(ctx, *args)
        except Exception as exc:
            row = ctx.row(TITLES.get(fn.__name__, fn.__name__))
            row.fail(f"the scenario crashed: {type(exc).__name__}: {str(exc)[:300]}")
        row.seconds = round(row.seconds or time.monotonic() - started, 1)
        ctx.rows.append(row)
        ctx.log(f"    {row.verdict} ({time.monotonic() - started:.0f} s)"
                + "".join(f"\n      {r}" for r in row.reasons[:6]))  # fmt: skip
        return row

    needed = [name for key, names in INTEGRATIONS.items() if want(key) for name in names]
    ctx.stack.add_integrations(needed)
    for key, fn in INGEST.items():
        if want(key):
            record(fn)
    sync = [k for k in ("4", "5", "6") if want(k)]
    sent = duplicate_storm_ingest(ctx) if want("6") else None
    if sync:
        ctx.stack.start_daemon()
    if sent is not None:
        record(duplicate_storm, sent)
    if want("4"):
        record(run_worker_killed)
    if want("5"):
        record(provider_storms)
    if want("7"):
        if sync:
            ctx.stack.stop_daemon()  # flush its logs
        record(secrets_scan)
    return ctx.rows
