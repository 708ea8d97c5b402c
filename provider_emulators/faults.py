"""Fault injection for emulators: latency, 5xx, forced 429s, malformed bodies, drops."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

_RATE_FIELDS = ("error_rate", "malformed_rate", "drop_rate")
FAULT_FIELDS = (
    "latency_ms",
    "error_rate",
    "force_429",
    "force_429_seconds",
    "retry_after",
    "malformed_rate",
    "drop_rate",
    "seed",
)


@dataclass
class Decision:
    """What the fault injector does to one request."""

    latency_s: float = 0.0
    outcome: str | None = None  # "force_429" | "drop" | "error" | None
    status: int | None = None
    retry_after: str | None = None
    malformed: bool = False


@dataclass
class FaultInjector:
    """Fault settings plus a seedable RNG; all access under one lock."""

    seed: int = 0
    latency_ms: float = 0.0
    error_rate: float = 0.0
    force_429: int = 0
    storm_until: float = 0.0
    retry_after: str | None = "1"
    malformed_rate: float = 0.0
    drop_rate: float = 0.0
    rng: random.Random = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.initial_seed = self.seed

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "error_rate": self.error_rate,
            "force_429": self.force_429,
            "force_429_seconds": round(max(0.0, self.storm_until - time.monotonic()), 3),
            "retry_after": self.retry_after,
            "malformed_rate": self.malformed_rate,
            "drop_rate": self.drop_rate,
            "seed": self.seed,
        }

    def configure(self, updates: dict[str, Any]) -> dict[str, Any]:
        """Validate and merge ``updates``; raises ValueError on a bad field."""
        clean = _validate_faults(updates)
        with self._lock:
            for key, value in clean.items():
                if key == "force_429_seconds":
                    self.storm_until = time.monotonic() + value
                elif key == "seed":
                    self.seed = value
                    self.rng = random.Random(value)
                else:
                    setattr(self, key, value)
            return self._snapshot()

    def clear(self) -> dict[str, Any]:
        """Back to no faults and the initial seed."""
        with self._lock:
            self.latency_ms = self.error_rate = self.malformed_rate = self.drop_rate = 0.0
            self.force_429, self.storm_until, self.retry_after = 0, 0.0, "1"
            self.seed = self.initial_seed
            self.rng = random.Random(self.seed)
            return self._snapshot()

    def decide(self) -> Decision:
        with self._lock:
            d = Decision(latency_s=self.latency_ms / 1000.0, retry_after=self.retry_after)
            if self.force_429 > 0 or time.monotonic() < self.storm_until:
                self.force_429 = max(0, self.force_429 - 1)
                d.outcome, d.status = "force_429", 429
            elif self.drop_rate and self.rng.random() < self.drop_rate:
                d.outcome = "drop"
            elif self.error_rate and self.rng.random() < self.error_rate:
                d.outcome, d.status = "error", self.rng.choice((500, 503))
            elif self.malformed_rate and self.rng.random() < self.malformed_rate:
                d.malformed = True
            return d


def _validate_faults(updates: Any) -> dict[str, Any]:
    if not isinstance(updates, dict):
        raise ValueError("faults body must be a JSON object")
    clean: dict[str, Any] = {}
    for key, value in updates.items():
        if key not in FAULT_FIELDS:
            raise ValueError(f"unknown fault field: {key}")
        if key == "retry_after":
            if value is not None and (isinstance(value, bool) or not isinstance(value, str | int)):
                raise ValueError("retry_after must be a string, an integer or null")
            clean[key] = None if value is None else str(value)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key} must be a number")
        if value < 0 or (key in _RATE_FIELDS and value > 1):
            raise ValueError(f"{key} out of range")
        if key in ("force_429", "seed"):
            if value != int(value):
                raise ValueError(f"{key} must be an integer")
            value = int(value)
        clean[key] = value
    return clean


def _invalid_json(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return True
    return False


def corrupt(body: bytes) -> bytes:
    """Truncate a JSON body so that it no longer parses."""
    cut = body[: len(body) // 2] or b"{"
    return cut if _invalid_json(cut) else cut + b'{"'
