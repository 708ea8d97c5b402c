"""Shared GCRA limiter: atomic reservations, penalties, policies, lanes, many processes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from multiprocessing.pool import Pool

import pytest
from sqlalchemy import Engine, select

from crm_schema.integrations import Integration
from crm_schema.tables import rate_limit_state
from crm_sync.providers.allio import SPEC as ALLIO
from crm_sync.ratelimit import (
    DatabaseRateLimiter,
    LocalRateLimiter,
    RateKey,
    RatePolicy,
    Throttle,
    rate_keys,
)
from crm_sync.registry import ProviderSpec
from tests.mp_workers import acquire_worker, max_in_window, warm_pool


def _integration(
    id_: int = 7, settings: dict | None = None, credentials: dict | None = None
) -> Integration:
    return Integration(
        id=id_, provider="allio", name="t", integration_uuid=None, webhook_key="k",
        api_base_url=None, settings=settings or {}, is_active=True,
        credentials=credentials or {},
    )  # fmt: skip


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- pure GCRA ---------------------------------------------------------------------------


def test_local_gcra_spaces_slots_and_allows_burst() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(clock)
    slots = [limiter.reserve("k", 0.5).slot for _ in range(3)]
    assert slots == [1000.0, 1000.5, 1001.0]
    burst = LocalRateLimiter(clock)
    assert [burst.reserve("k", 0.5, burst=2).wait for _ in range(3)] == [0.0, 0.0, 0.5]


def test_local_penalty_pushes_the_next_slot() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(clock)
    limiter.reserve("k", 0.1)
    limiter.penalize("k", 2.0)
    assert limiter.reserve("k", 0.1).slot == pytest.approx(1002.0)


# -- policies ----------------------------------------------------------------------------


def _keys(spec: ProviderSpec, integration: Integration, **kw: object) -> dict[str, float]:
    return {k.key: k.policy.rate for k in rate_keys(spec, integration, **kw)}  # type: ignore[arg-type]


def test_allio_shares_one_key_per_egress_ip() -> None:
    [key] = rate_keys(ALLIO, _integration(), egress_id="eu-1")
    assert (key.key, key.policy.rate, key.policy.scope) == ("allio:ip:eu-1", 2, "ip")
    assert 0.95 <= key.policy.effective_rate / key.policy.rate < 1.0
    # The deployment may set the provider's quota (a granted raise, an emulator).
    assert _keys(ALLIO, _integration(), quota_per_second=50) == {"allio:ip:default": 50}


def test_an_integration_may_lower_but_never_raise_a_shared_rate() -> None:
    slower = _integration(3, settings={"rate_limit": {"rate": 0.5}})
    # Its own key at 0.5/s, drawn first; the shared per-IP key keeps ALLIO's 2/s for all.
    assert [(k.key, k.policy.rate) for k in rate_keys(ALLIO, slower)] == [
        ("allio:integration:3", 0.5),
        ("allio:ip:default", 2),
    ]
    faster = _integration(4, settings={"rate_limit": {"rate": 500}})
    assert _keys(ALLIO, faster) == {"allio:ip:default": 2}
    with pytest.raises(ValueError, match="unknown rate_limit"):
        rate_keys(ALLIO, _integration(settings={"rate_limit": {"burst": 2}}))


def test_keys_per_integration_and_per_account_hash_the_secret() -> None:
    spec = ProviderSpec(
        name="mail",
        title="Mail",
        setup=ALLIO.setup,
        settings=ALLIO.settings,
        webhook_paths=(),
        rate_limits=(
            RatePolicy(rate=20, scope="account", account_field="api_key"),
            RatePolicy(rate=20, scope="ip"),
            RatePolicy(rate=7, scope="integration"),
        ),
    )
    integration = _integration(9, credentials={"api_key": "secret-api-key"})
    keys = [k.key for k in rate_keys(spec, integration)]
    assert keys[0] == "mail:integration:9" and keys[2] == "mail:ip:default"
    assert keys[1].startswith("mail:account:") and "secret-api-key" not in keys[1]
    lower = _integration(9, {"rate_limit": {"rate": 3}}, {"api_key": "k"})
    assert rate_keys(spec, lower)[0].policy.rate == 3  # the per-integration key tightens
    with pytest.raises(ValueError, match="credentials.api_key"):
        rate_keys(spec, _integration(9))


def test_several_keys_respect_each_rate_and_never_hold_the_shared_one_back() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(clock)
    slow, fast = RatePolicy(rate=2, safety_margin=0), RatePolicy(rate=10, safety_margin=0)

    def sleep(seconds: float) -> None:
        clock.now += seconds

    throttle = Throttle(limiter, [RateKey("own", slow), RateKey("shared", fast)], sleep=sleep)
    slots = [throttle.acquire().slot for _ in range(5)]
    assert slots == pytest.approx([1000.0, 1000.5, 1001.0, 1001.5, 1002.0])
    # Another caller on the shared key alone gets the very next shared slot, not one
    # behind the slow key's schedule.
    other = Throttle.single(limiter, "shared", fast, sleep=sleep)
    assert other.acquire().slot == pytest.approx(clock.now)
    with pytest.raises(ValueError, match="at least one key"):
        Throttle(limiter, [])


def test_safety_margin_keeps_any_window_within_quota() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(clock)
    policy = RatePolicy(rate=2)
    slots = [limiter.reserve("k", policy.interval).slot for _ in range(50)]
    assert max_in_window(slots) == 2
    assert (len(slots) - 1) / (slots[-1] - slots[0]) / policy.rate >= 0.95


# -- database limiter --------------------------------------------------------------------


@pytest.fixture
def limiter(engine: Engine) -> DatabaseRateLimiter:
    return DatabaseRateLimiter(engine)


def test_db_reservations_are_spaced_on_the_database_clock(
    limiter: DatabaseRateLimiter, engine: Engine
) -> None:
    grants = [limiter.reserve("allio:ip:test", 0.25) for _ in range(4)]
    assert abs(grants[0].now - time.time()) < 1.0  # the database clock is epoch seconds
    assert grants[0].wait == 0.0
    gaps = [b.slot - a.slot for a, b in zip(grants, grants[1:], strict=False)]
    assert gaps == pytest.approx([0.25] * 3, abs=1e-6)
    # The wait is measured on the database clock; the four calls themselves take time,
    # so on a busy machine it is somewhat under the 0.75 s the schedule alone gives.
    last = grants[-1]
    assert last.wait == pytest.approx(last.slot - last.now)
    assert 0.0 < last.wait <= 0.75 + 0.01
    with engine.connect() as conn:
        tat = conn.execute(select(rate_limit_state.c.tat)).scalar_one()
    assert tat == pytest.approx(grants[-1].tat)


def test_db_penalty_moves_every_callers_next_slot(limiter: DatabaseRateLimiter) -> None:
    first = limiter.reserve("k", 0.01)
    limiter.penalize("k", 1.5)
    after = limiter.reserve("k", 0.01)
    assert after.slot - first.now >= 1.5
    assert after.wait == pytest.approx(1.5, abs=0.1)
    limiter.penalize("k", 0.1)  # a shorter penalty never pulls the slot back
    assert limiter.reserve("k", 0.01).slot >= after.slot


def test_throttle_sleeps_until_slot_without_polling(limiter: DatabaseRateLimiter) -> None:
    sleeps: list[float] = []
    throttle = Throttle.single(
        limiter, "k", RatePolicy(rate=10, safety_margin=0), sleep=sleeps.append
    )
    for _ in range(3):
        throttle.acquire()
    assert len(sleeps) == 2  # one sleep per waiting call, none for the first
    assert sleeps == pytest.approx([0.1, 0.2], abs=0.03)


def test_backfill_lane_never_takes_the_whole_quota(limiter: DatabaseRateLimiter) -> None:
    policy = RatePolicy(rate=40)
    counts = {"live": 0, "backfill": 0}
    stop = time.monotonic() + 1.0

    def run(lane: str) -> None:
        throttle = Throttle.single(limiter, "amocrm:integration:1", policy, lane=lane)
        while time.monotonic() < stop:
            throttle.acquire()
            counts[lane] += 1

    threads = [threading.Thread(target=run, args=(lane,)) for lane in counts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counts["backfill"] <= 0.5 * policy.rate + 2
    assert counts["live"] >= 0.4 * policy.rate
    assert counts["live"] + counts["backfill"] <= policy.rate + 2


def test_lane_key_is_separate_and_unknown_lane_refused(limiter: DatabaseRateLimiter) -> None:
    throttle = Throttle.single(limiter, "k", RatePolicy(rate=100), lane="reconcile")
    assert throttle.lane_key == "k:lane:reconcile" and throttle.lane_fraction == 0.5
    with pytest.raises(ValueError, match="unknown lane"):
        Throttle.single(limiter, "k", RatePolicy(rate=1), lane="bulk")


# -- many OS processes -------------------------------------------------------------------


@pytest.fixture
def spawn_pool() -> Iterator[Pool]:
    with warm_pool(3) as pool:
        yield pool


@pytest.mark.slow
def test_three_processes_never_exceed_the_window(database_url: str, spawn_pool) -> None:
    rate, seconds = 20, 1.5
    start_at = time.time() + 0.3
    jobs = [
        {
            "database_url": database_url,
            "key": "allio:ip:mp",
            "rate": rate,
            "start_at": start_at,
            "stop_at": start_at + seconds,
        }  # fmt: skip
        for _ in range(3)
    ]
    per_process = spawn_pool.map(acquire_worker, jobs)
    assert all(len(grants) >= 5 for grants in per_process)  # every process got its share
    slots = sorted(slot for grants in per_process for slot, _ in grants)
    woke = sorted(w for grants in per_process for _, w in grants)
    interval = RatePolicy(rate=rate).interval
    assert min(b - a for a, b in zip(slots, slots[1:], strict=False)) >= interval - 1e-3
    assert max_in_window(slots) <= rate
    assert max_in_window(woke) <= rate
    achieved = (len(slots) - 1) / (slots[-1] - slots[0])
    assert achieved / rate >= 0.9


def test_penalty_is_not_eaten_by_the_burst() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(clock)
    policy = RatePolicy(rate=10, burst=3, safety_margin=0)
    Throttle.single(limiter, "k", policy).penalize(1.0)
    assert limiter.reserve("k", policy.interval, burst=3).slot == pytest.approx(1001.0)


def test_a_stalled_caller_takes_a_fresh_slot_instead_of_crowding() -> None:
    policy = RatePolicy(rate=20)
    stalls = [0.1]

    def stalling_sleep(seconds: float) -> None:
        time.sleep(seconds + (stalls.pop() if stalls else 0.0))

    throttle = Throttle.single(LocalRateLimiter(), "k", policy, sleep=stalling_sleep)
    first = throttle.acquire()
    second = throttle.acquire()  # oversleeps 100 ms: its slot is stale, so it re-reserves
    assert throttle.late_slots == 1
    assert second.slot - first.slot >= 2 * policy.interval - 1e-6
    assert time.time() - second.slot < policy.slack_seconds


def test_reserve_within_takes_a_slot_only_inside_the_wait_allowed(
    limiter: DatabaseRateLimiter,
) -> None:
    first = limiter.reserve_within("k", 0.5, max_wait=0.1)
    assert first is not None and first.wait == 0.0
    # The next slot is 0.5 s away: refused within 0.1 s, and the budget is untouched.
    with limiter.engine.connect() as conn:
        before = conn.execute(select(rate_limit_state.c.tat)).scalar_one()
    assert limiter.reserve_within("k", 0.5, max_wait=0.1) is None
    with limiter.engine.connect() as conn:
        assert conn.execute(select(rate_limit_state.c.tat)).scalar_one() == before
    second = limiter.reserve_within("k", 0.5, max_wait=2.0)
    assert second is not None
    assert second.slot - first.slot == pytest.approx(0.5, abs=1e-6)


def test_local_reserve_within_matches_the_database_one() -> None:
    clock = FakeClock()
    local = LocalRateLimiter(clock)
    assert local.reserve_within("k", 0.5, max_wait=0.0) is not None
    assert local.reserve_within("k", 0.5, max_wait=0.1) is None
    granted = local.reserve_within("k", 0.5, max_wait=0.5)
    assert granted is not None and granted.wait == pytest.approx(0.5)
