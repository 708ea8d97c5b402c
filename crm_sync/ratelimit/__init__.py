"""The shared rate limiter: GCRA in ``rate_limit_state``, limiter keys, lanes, throttles."""

from crm_sync.ratelimit.gcra import (
    DatabaseRateLimiter,
    Limiter,
    LocalRateLimiter,
    Reservation,
)
from crm_sync.ratelimit.policy import (
    LANE_FRACTIONS,
    LANES,
    LIVE,
    RateKey,
    Throttle,
    rate_keys,
)
from crm_sync.registry import RatePolicy

__all__ = [
    "LANES",
    "LANE_FRACTIONS",
    "LIVE",
    "DatabaseRateLimiter",
    "Limiter",
    "LocalRateLimiter",
    "RateKey",
    "RatePolicy",
    "Reservation",
    "Throttle",
    "rate_keys",
]
