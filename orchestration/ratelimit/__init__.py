"""The shared rate limiter: GCRA in ``rate_limit_state``, per-provider policies, lanes."""

from orchestration.ratelimit.gcra import (
    DatabaseRateLimiter,
    Limiter,
    LocalRateLimiter,
    Reservation,
)
from orchestration.ratelimit.policy import (
    LANE_FRACTIONS,
    LANES,
    LIVE,
    PROVIDER_POLICIES,
    RatePolicy,
    Throttle,
    policy_for,
    rate_limit_key,
)

__all__ = [
    "LANES",
    "LANE_FRACTIONS",
    "LIVE",
    "PROVIDER_POLICIES",
    "DatabaseRateLimiter",
    "Limiter",
    "LocalRateLimiter",
    "RatePolicy",
    "Reservation",
    "Throttle",
    "policy_for",
    "rate_limit_key",
]
