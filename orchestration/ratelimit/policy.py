"""Per-provider rate policies, limiter keys, lanes, and the ``Throttle`` a client uses."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from crm_schema.integrations import Integration
from orchestration.ratelimit.gcra import Limiter, Reservation

Scope = Literal["ip", "integration", "account"]
LIVE = "live"
LANE_FRACTIONS: dict[str, float] = {"backfill": 0.5, "reconcile": 0.5}
LANES = (LIVE, *LANE_FRACTIONS)
# Aiming m under the quota leaves ~m seconds of slack in every 1-second window (at any
# rate), so requests that arrive up to ~40 ms late still never break the provider's
# "N per any second" rule; utilization stays at 1 - m = 0.96.
DEFAULT_SAFETY_MARGIN = 0.04
MIN_LATENESS = 0.005  # seconds: waking this late is normal scheduling noise
MAX_RESLOTS = 3


@dataclass(frozen=True)
class RatePolicy:
    """``rate`` requests/s (the provider's quota) with ``burst``, aimed ``safety_margin`` under.

    ``penalty_seconds`` is how far a 429 without ``Retry-After`` pushes the key.
    With ``burst`` 1 and any margin > 0, no 1-second window ever holds more than
    ``rate`` granted slots.
    """

    rate: float
    burst: int = 1
    scope: Scope = "integration"
    safety_margin: float = DEFAULT_SAFETY_MARGIN
    penalty_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1 or not 0 <= self.safety_margin < 1:
            raise ValueError("rate must be > 0, burst >= 1 and 0 <= safety_margin < 1")

    @property
    def effective_rate(self) -> float:
        """The rate actually granted (quota minus the safety margin)."""
        return self.rate * (1.0 - self.safety_margin)

    @property
    def interval(self) -> float:
        """Seconds of quota one request costs."""
        return 1.0 / self.effective_rate

    @property
    def slack_seconds(self) -> float:
        """How late a request may arrive before it could crowd a 1-second window."""
        return self.rate * self.interval - 1.0


PROVIDER_POLICIES: dict[str, RatePolicy] = {
    "allio": RatePolicy(rate=2, scope="ip"),
    "amocrm": RatePolicy(rate=7, scope="integration"),
    "uon": RatePolicy(rate=8, scope="account"),
    "unisender": RatePolicy(rate=20, scope="account"),
    "iiko": RatePolicy(rate=10, scope="integration"),
}


def policy_for(provider: str, integration: Integration | None = None) -> RatePolicy:
    """The provider default, overridden by ``integration.settings["rate_limit"]``."""
    try:
        policy = PROVIDER_POLICIES[provider]
    except KeyError:
        raise ValueError(f"no rate policy for provider '{provider}'") from None
    override: Mapping[str, Any] = (integration.settings if integration else {}).get(
        "rate_limit"
    ) or {}
    allowed = {"rate", "burst", "safety_margin", "penalty_seconds"}
    unknown = set(override) - allowed
    if unknown:
        raise ValueError(f"unknown rate_limit setting(s): {', '.join(sorted(unknown))}")
    return replace(policy, **override) if override else policy


def _fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def rate_limit_key(
    provider: str,
    policy: RatePolicy,
    integration: Integration | None = None,
    egress_id: str = "default",
    account: str | None = None,
) -> str:
    """The shared budget's key: ``allio:ip:default``, ``amocrm:integration:7``, ...

    ``account`` (e.g. the API key) is hashed, so no secret lands in the table.
    """
    if policy.scope == "ip":
        return f"{provider}:ip:{egress_id}"
    if policy.scope == "account" and account:
        return f"{provider}:account:{_fingerprint(account)}"
    if integration is None:
        raise ValueError(f"{provider}: a per-{policy.scope} rate limit needs an integration")
    return f"{provider}:integration:{integration.id}"


@dataclass
class Throttle:
    """A client's handle on its budget: ``acquire()`` before each attempt, ``penalize()`` on 429.

    ``live`` draws only from ``key``; other lanes first draw from ``key:lane:<lane>``
    at ``lane_fraction`` of the rate, so they can never take the whole quota.
    """

    limiter: Limiter
    key: str
    policy: RatePolicy
    lane: str = LIVE
    lane_fraction: float | None = None
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    late_slots: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.lane not in LANES:
            raise ValueError(f"unknown lane '{self.lane}' (known: {', '.join(LANES)})")
        if self.lane != LIVE and self.lane_fraction is None:
            self.lane_fraction = LANE_FRACTIONS[self.lane]
        if self.lane_fraction is not None and not 0 < self.lane_fraction <= 1:
            raise ValueError("lane_fraction must be in (0, 1]")

    @property
    def lane_key(self) -> str | None:
        return None if self.lane == LIVE else f"{self.key}:lane:{self.lane}"

    def acquire(self) -> Reservation:
        """Sleep until this process's next slot; returns the main key's reservation.

        A caller that wakes later than half the policy's slack (a stalled host, CPU
        starvation) gives its stale slot up and takes a fresh one rather than crowding
        the next caller's window.
        """
        if self.lane_key is not None and self.lane_fraction is not None:
            lane = self.limiter.reserve(
                self.lane_key, self.policy.interval / self.lane_fraction, self.policy.burst
            )
            self._sleep(lane.wait)
        max_late = max(MIN_LATENESS, self.policy.slack_seconds / 2)
        for _ in range(MAX_RESLOTS):
            granted = self.limiter.reserve(self.key, self.policy.interval, self.policy.burst)
            due = time.monotonic() + granted.wait
            self._sleep(granted.wait)
            if time.monotonic() - due <= max_late:
                break
            self.late_slots += 1
        return granted

    def penalize(self, seconds: float | None = None) -> float:
        """Push the shared key so its next slot is ``seconds`` (or the policy's penalty) away."""
        delay = self.policy.penalty_seconds if seconds is None else seconds
        # tat runs (burst - 1) intervals ahead of the next slot; keep the burst from
        # eating into the penalty.
        return self.limiter.penalize(
            self.key, delay + (self.policy.burst - 1) * self.policy.interval
        )

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.sleep(seconds)
