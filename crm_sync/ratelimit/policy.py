"""Limiter keys for one integration's calls, lanes, and the ``Throttle`` a client uses.

A provider's `RatePolicy`s (crm_sync.registry) say whose budget each quota is: our
egress IP, one integration, or one provider account (API key). A call draws from
every key that applies. An integration's own ``rate_limit`` setting can only make it
slower: it adds (or tightens) a per-integration key and never touches the budget it
shares with other integrations. A deployment-wide override (CRM_SYNC_RATE_LIMITS, or
the resource's ``quota_per_second``) sets the provider's quota itself.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from crm_sync.ratelimit.gcra import Limiter, Reservation
from crm_sync.registry import ProviderSpec, RatePolicy


class Integration(Protocol):
    """What the keys read of an integration (crm_schema's `Integration` has it)."""

    @property
    def id(self) -> int: ...

    @property
    def credentials(self) -> Mapping[str, Any]: ...

    @property
    def settings(self) -> Mapping[str, Any]: ...


LIVE = "live"
LANE_FRACTIONS: dict[str, float] = {"backfill": 0.5, "reconcile": 0.5}
LANES = (LIVE, *LANE_FRACTIONS)
MIN_LATENESS = 0.005  # seconds: waking this late is normal scheduling noise
MAX_RESLOTS = 3


@dataclass(frozen=True)
class RateKey:
    """One shared budget a call draws from."""

    key: str
    policy: RatePolicy


def _fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def _own_rate(integration: Integration | None) -> float | None:
    raw: Mapping[str, Any] = (integration.settings if integration else {}).get("rate_limit") or {}
    unknown = set(raw) - {"rate"}
    if unknown:
        raise ValueError(f"unknown rate_limit setting(s): {', '.join(sorted(unknown))}")
    rate = raw.get("rate")
    if rate is None:
        return None
    if not isinstance(rate, int | float) or isinstance(rate, bool) or rate <= 0:
        raise ValueError("rate_limit.rate must be a number > 0")
    return float(rate)


def rate_keys(
    spec: ProviderSpec,
    integration: Integration | None,
    *,
    egress_id: str = "default",
    quota_per_second: float | None = None,
    penalty_seconds: float | None = None,
) -> list[RateKey]:
    """Every key one integration's calls draw from, most specific first, widest last.

    Keys look like ``allio:ip:default``, ``amocrm:integration:7``,
    ``unisender:account:<sha256 prefix>`` (no secret lands in the table).
    """
    own = _own_rate(integration)
    keys: list[tuple[int, RateKey]] = []
    for policy in spec.rate_limits:
        if quota_per_second is not None:
            policy = policy.with_rate(quota_per_second)
        if penalty_seconds is not None:
            policy = replace(policy, penalty_seconds=penalty_seconds)
        keys.append((SCOPE_ORDER[policy.scope], _key(spec, policy, integration, egress_id, own)))
    has_own_key = any(policy.scope == "integration" for policy in spec.rate_limits)
    if own is not None and not has_own_key and integration is not None:
        widest = min(keys, key=lambda k: k[1].policy.rate)[1].policy
        if own < widest.rate:
            own_key = RateKey(f"{spec.name}:integration:{integration.id}", widest.with_rate(own))
            keys.append((SCOPE_ORDER["integration"], own_key))
    # Narrow keys first: the widest (shared) budget is taken last, right before sending.
    return [k for _, k in sorted(keys, key=lambda k: k[0])]


SCOPE_ORDER = {"integration": 0, "account": 1, "ip": 2}


def _key(
    spec: ProviderSpec,
    policy: RatePolicy,
    integration: Integration | None,
    egress_id: str,
    own: float | None,
) -> RateKey:
    if policy.scope == "ip":
        return RateKey(f"{spec.name}:ip:{egress_id}", policy)
    if integration is None:
        raise ValueError(f"{spec.name}: a per-{policy.scope} rate limit needs an integration")
    if policy.scope == "account":
        # The account is named by a credential (an API key) or a setting (a subdomain).
        field_name = policy.account_field or ""
        account = str(
            integration.credentials.get(field_name) or integration.settings.get(field_name) or ""
        )
        if not account:
            raise ValueError(
                f"{spec.name}: a per-account rate limit needs credentials.{field_name} "
                f"or settings.{field_name}"
            )
        return RateKey(f"{spec.name}:account:{_fingerprint(account)}", policy)
    if own is not None and own < policy.rate:
        policy = policy.with_rate(own)
    return RateKey(f"{spec.name}:integration:{integration.id}", policy)


@dataclass
class Throttle:
    """A client's handle on its budgets: ``acquire()`` before each attempt, ``penalize()`` on 429.

    Every key's slot is reserved on one instant (``not_before``), so no key is used
    later than its slot: a late slot would crowd the next caller's window. Lanes other
    than ``live`` first draw from ``<widest key>:lane:<lane>`` at ``lane_fraction`` of
    its rate, so backfills and reconciles can never take the whole quota.
    """

    limiter: Limiter
    keys: Sequence[RateKey]
    lane: str = LIVE
    lane_fraction: float | None = None
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    late_slots: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a throttle needs at least one key")
        if self.lane not in LANES:
            raise ValueError(f"unknown lane '{self.lane}' (known: {', '.join(LANES)})")
        if self.lane != LIVE and self.lane_fraction is None:
            self.lane_fraction = LANE_FRACTIONS[self.lane]
        if self.lane_fraction is not None and not 0 < self.lane_fraction <= 1:
            raise ValueError("lane_fraction must be in (0, 1]")
        self.keys = list(self.keys)

    @classmethod
    def single(cls, limiter: Limiter, key: str, policy: RatePolicy, **kwargs: Any) -> Throttle:
        """A throttle over one key."""
        return cls(limiter, [RateKey(key, policy)], **kwargs)

    @property
    def key(self) -> str:
        """The widest (shared) key."""
        return self.keys[-1].key

    @property
    def policy(self) -> RatePolicy:
        """The widest key's policy."""
        return self.keys[-1].policy

    @property
    def lane_key(self) -> str | None:
        return None if self.lane == LIVE else f"{self.key}:lane:{self.lane}"

    def acquire(self) -> Reservation:
        """Sleep until this process's next slot on every key; returns the widest key's.

        Keys are taken one after the other, narrowest first, sleeping until each slot,
        so the widest (shared) key is reserved last, for now, and never pushed into the
        future for everyone else. A caller that wakes later than half the policy's slack
        (a stalled host, CPU starvation) gives its stale shared slot up and takes a
        fresh one rather than crowding the next caller's window.
        """
        if self.lane_key is not None and self.lane_fraction is not None:
            lane = self.limiter.reserve(
                self.lane_key, self.policy.interval / self.lane_fraction, self.policy.burst
            )
            self._sleep(lane.wait)
        for narrow in self.keys[:-1]:
            self._sleep(self._reserve(narrow).wait)
        widest = self.keys[-1]
        max_late = max(MIN_LATENESS, widest.policy.slack_seconds / 2)
        for _ in range(MAX_RESLOTS):
            granted = self._reserve(widest)
            due = time.monotonic() + granted.wait
            self._sleep(granted.wait)
            if time.monotonic() - due <= max_late:
                break
            self.late_slots += 1
        return granted

    def _reserve(self, key: RateKey) -> Reservation:
        return self.limiter.reserve(key.key, key.policy.interval, key.policy.burst)

    def penalize(self, seconds: float | None = None) -> float:
        """Push every key so its next slot is ``seconds`` (or the policy's penalty) away.

        Returns the widest key's new ``tat``.
        """
        tat = 0.0
        for k in self.keys:
            delay = k.policy.penalty_seconds if seconds is None else seconds
            # tat runs (burst - 1) intervals ahead of the next slot; keep the burst from
            # eating into the penalty.
            tat = self.limiter.penalize(k.key, delay + (k.policy.burst - 1) * k.policy.interval)
        return tat

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.sleep(seconds)
