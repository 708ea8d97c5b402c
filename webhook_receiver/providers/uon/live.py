"""The receiver's own U-ON call: `user/phone/{digits}` for a ringing call's number.

The call draws from the same limiter keys as every Dagster run (crm_sync.ratelimit:
`rate_keys` of the integration, the live lane), so lookups and batch work together never
pass U-ON's 10 requests/s per API key. Everything happens within the lookup's deadline:
a quota slot further away than the deadline allows is not taken (and no call is made),
and the request itself is cut off when the deadline passes. One shared `httpx.AsyncClient` keeps
connections to U-ON open between calls.

Each call leaves an `api_call_log` row, as the orchestration's clients do: the API key
(a path segment in U-ON's URLs) masked, and the number masked unless the integration's
`log_personal_data` is on. A 429 without `Retry-After` pushes the shared keys by the
policy's penalty, so every process backs off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import httpx
import orjson
from sqlalchemy import Engine, insert
from starlette.concurrency import run_in_threadpool

from crm_schema.integrations import Integration
from crm_schema.providers.uon_customers import users_in
from crm_schema.tables import api_call_log
from crm_sync.ratelimit import DatabaseRateLimiter, RateKey, Throttle, rate_keys
from crm_sync.ratelimit.policy import MAX_RESLOTS, MIN_LATENESS
from crm_sync.redaction import (
    PERSONAL_MASK,
    mask_personal_data,
    mask_url,
    redact_body,
)
from crm_sync.registry import get_provider
from crm_sync.settings import get_settings

log = logging.getLogger(__name__)

PROVIDER = "uon"
BODY_LOG_LIMIT = 4096
# A slot that leaves less than this for the call itself is not worth taking.
MIN_CALL_SECONDS = 0.05
# The longest a Retry-After may push the shared keys.
MAX_RETRY_AFTER_SECONDS = 60.0

# GCRA's reservation (crm_sync.ratelimit.gcra), taken only when the slot is near enough:
# a refused update leaves the row as it was and returns nothing.

Outcome = Literal["found", "not_found", "rate_limited", "failed"]


@dataclass(frozen=True)
class LiveAnswer:
    """What U-ON said (or why it said nothing): ``users`` when found, ``error`` otherwise."""

    outcome: Outcome
    users: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    called: bool = True  # False: no request was sent (no quota slot in time, no API key)


def _digits(e164: str) -> str:
    return e164.lstrip("+")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


class UonLive:
    """Live U-ON lookups for one receiver app: the HTTP client, the limiter, the call log.

    ``engine`` is the operator API's engine (read lazily: it is made on first use).
    """

    def __init__(self, engine: Any, *, timeout_seconds: float = 10.0) -> None:
        self._engine_source = engine
        self._client: httpx.AsyncClient | None = None
        self._limiter: DatabaseRateLimiter | None = None
        self._timeout = timeout_seconds

    @property
    def engine(self) -> Engine:
        source = self._engine_source
        return source() if callable(source) else source

    @property
    def limiter(self) -> DatabaseRateLimiter:
        if self._limiter is None:
            self._limiter = DatabaseRateLimiter(self.engine)
        return self._limiter

    def client(self) -> httpx.AsyncClient:
        """The shared client (made on first use, on the serving event loop)."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
                headers={"Accept": "application/json"},
                follow_redirects=False,
            )
        return self._client

    def close(self) -> None:
        """Release the client's connections (at shutdown; the receiver's hooks are sync)."""
        client, self._client = self._client, None
        self._limiter = None
        if client is None:
            return
        # Without a running loop its sockets simply go with the process.
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(client.aclose())

    @staticmethod
    def keys(integration: Integration) -> list[RateKey]:
        """The limiter keys this integration's U-ON calls draw from (ValueError: no API key).

        CRM_SYNC_RATE_LIMITS may set U-ON's quota for the deployment, as for Dagster runs.
        """
        return rate_keys(
            get_provider(PROVIDER),
            integration,
            quota_per_second=get_settings().rate_limits.get(PROVIDER),
        )

    async def _slot(self, keys: list[RateKey], deadline: float) -> bool:
        """Wait for a slot on every key, narrowest first (as `Throttle.acquire`); False
        when a key has no slot before the deadline allows. Such a slot is not taken:
        lookups that give up never push the shared budget further out (under a burst
        of calls, the Dagster runs and the next lookups keep their turns). Woken too late
        for the widest key's slot (a busy event loop), a lookup takes a fresh one rather
        than crowd the next caller's window, as `Throttle.acquire` does."""
        widest = keys[-1]
        max_late = max(MIN_LATENESS, widest.policy.slack_seconds / 2)
        for key in keys:
            for _ in range(MAX_RESLOTS if key is widest else 1):
                max_wait = deadline - MIN_CALL_SECONDS - time.monotonic()
                if max_wait < 0:
                    return False
                wait = await run_in_threadpool(self.reserve_within, key, max_wait)
                if wait is None:
                    return False
                due = time.monotonic() + wait
                if wait > 0:
                    await asyncio.sleep(wait)
                if time.monotonic() - due <= max_late:
                    break
        return True

    def reserve_within(self, key: RateKey, max_wait: float) -> float | None:
        """Take ``key``'s next slot only if it is at most ``max_wait`` seconds away; the
        seconds to wait for it, or None (nothing taken)."""
        policy = key.policy
        granted = self.limiter.reserve_within(key.key, policy.interval, max_wait, policy.burst)
        return None if granted is None else granted.wait

    async def penalize(self, keys: list[RateKey], seconds: float | None) -> None:
        """Push every key (a 429): ``seconds`` from Retry-After, else the policy's penalty."""
        throttle = Throttle(self.limiter, keys)
        await run_in_threadpool(throttle.penalize, seconds)

    async def by_phone(
        self,
        integration: Integration,
        e164: str,
        deadline: float,
        *,
        log_personal_data: bool = False,
    ) -> LiveAnswer:
        """U-ON's clients with this number, asked before ``deadline`` (monotonic)."""
        api_key = str(integration.credentials.get("api_key") or "")
        try:
            keys = self.keys(integration)
        except ValueError:
            keys = []
        if not api_key or not keys:
            return LiveAnswer("failed", error="the integration has no U-ON API key", called=False)
        if not await self._slot(keys, deadline):
            return LiveAnswer(
                "failed",
                error="U-ON quota: no request slot free within the lookup deadline",
                called=False,
            )
        base = str(integration.api_base_url or "").rstrip("/")
        # The key is a path segment: quoted, and masked in the log in either form.
        key_segment = quote(api_key, safe="")
        url = f"{base}/{key_segment}/user/phone/{_digits(e164)}.json"
        record = _Record(integration.id, url, (api_key, key_segment), e164, log_personal_data)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return LiveAnswer(
                "failed", error="U-ON was not asked: the deadline passed", called=False
            )
        started = time.perf_counter()
        try:
            async with asyncio.timeout(remaining):
                response = await self.client().get(url)
        except TimeoutError:
            error = f"U-ON did not answer within the lookup deadline ({remaining:.2f} s)"
            await self._log(record, None, None, started, "timeout")
            return LiveAnswer("failed", error=error)
        except httpx.HTTPError as exc:
            await self._log(record, None, None, started, type(exc).__name__)
            return LiveAnswer("failed", error=f"U-ON could not be reached ({type(exc).__name__})")
        answer = _classify(response)
        await self._log(record, response.status_code, response.content, started, answer.error)
        if answer.outcome == "rate_limited":
            await self.penalize(keys, _retry_after(response.headers.get("retry-after")))
        return answer

    async def _log(
        self,
        record: _Record,
        status: int | None,
        body: bytes | None,
        started: float,
        error: str | None,
    ) -> None:
        row = record.row(status, body, (time.perf_counter() - started) * 1000.0, error)
        await run_in_threadpool(write_call_log, self.engine, row)


def _classify(response: httpx.Response) -> LiveAnswer:
    status = response.status_code
    if status == 429:
        return LiveAnswer("rate_limited", error="U-ON answered 429: over its request quota")
    if status == 404:
        return LiveAnswer("not_found")
    if status in (401, 403):
        return LiveAnswer("failed", error=f"U-ON refused the API key ({status})")
    if status != 200:
        return LiveAnswer("failed", error=f"U-ON answered {status}")
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return LiveAnswer("failed", error="U-ON's answer is not JSON")
    if not isinstance(body, dict):
        return LiveAnswer("failed", error="U-ON's answer is not a JSON object")
    users = users_in(body)
    if users:
        return LiveAnswer("found", users=users)
    # An empty list, or U-ON's own "result": 404 in a 200 answer: no such client.
    return LiveAnswer("not_found")


@dataclass(frozen=True)
class _Record:
    integration_id: int
    url: str
    secrets: tuple[str, ...]
    e164: str
    log_personal_data: bool

    def _personal(self, text: str | None) -> str | None:
        if text is None or self.log_personal_data:
            return text
        # The number is a bare path segment (`/user/phone/375…`), which the generic masking
        # cannot tell from an id: replace it by value, then mask what else looks personal.
        for form in (self.e164, _digits(self.e164)):
            text = text.replace(form, PERSONAL_MASK)
        return mask_personal_data(text)

    def row(
        self, status: int | None, body: bytes | None, duration_ms: float, error: str | None
    ) -> dict[str, Any]:
        secrets = self.secrets
        text = None if body is None else body.decode("utf-8", "replace")
        if error is None and status is not None and status >= 400 and status != 404:
            error = f"HTTP {status}"
        return {
            "provider": PROVIDER,
            "integration_id": self.integration_id,
            "method": "GET",
            "url": self._personal(mask_url(self.url, secrets)) or "",
            "attempt": 1,
            "status_code": status,
            "duration_ms": round(duration_ms, 3),
            "request_body": None,
            "response_body": redact_body(self._personal(text), secrets, BODY_LOG_LIMIT),
            "error": redact_body(self._personal(error), secrets, 1000),
            "run_id": None,
        }


def write_call_log(engine: Engine, row: dict[str, Any]) -> None:
    """One `api_call_log` row in its own short transaction; a failure is logged, never raised
    (the caller's answer matters more than its log row)."""
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                # A diagnostic row: the ringing call never waits for its WAL flush.
                conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            conn.execute(insert(api_call_log).values(**row))
    except Exception as exc:
        log.warning("api_call_log write failed: %s", type(exc).__name__)


__all__ = ["LiveAnswer", "UonLive", "write_call_log"]
