"""Shared provider client: httpx + shared rate limit + tenacity retries + ``api_call_log``.

A provider module subclasses :class:`ProviderClient` (endpoints, envelope via
``parse_response``) and :class:`ProviderResource` (the Dagster resource that builds
clients per integration). Everything cross-cutting lives here:

- every attempt first takes a slot from the shared limiter (``Throttle.acquire``);
- 429 / 5xx / timeouts / broken connections / malformed bodies are retried by
  tenacity, waiting ``Retry-After`` when the provider sent one, else exponential
  backoff with jitter; a 429 also pushes the shared key forward for every process;
- 401/403 and other 4xx are raised at once as typed errors;
- one ``api_call_log`` row per attempt, with secrets masked and no headers.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import httpx
import orjson
from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from tenacity.wait import wait_base

from crm_schema.integrations import Integration
from orchestration.db import shared_engine
from orchestration.ratelimit import (
    LIVE,
    DatabaseRateLimiter,
    Limiter,
    Throttle,
    policy_for,
    rate_limit_key,
)
from orchestration.resources.calllog import CallLog, CallRecord
from orchestration.resources.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderRequestError,
    ProviderResponseError,
    ProviderUnavailableError,
)
from orchestration.resources.redact import install_httpx_log_redaction, mask_url, redact_body

logger = logging.getLogger(__name__)
T = TypeVar("T")
BODY_LOG_LIMIT = 4096


@dataclass
class CallStats:
    """Counters for run metadata; one object may be shared by several clients."""

    calls: int = 0  # HTTP attempts sent (what the provider's quota counts)
    retries: int = 0
    http_429: int = 0
    failures: int = 0  # logical calls that raised after their last attempt
    ids_requested: int = 0
    throttled_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: float) -> None:
        """Increment counters atomically."""
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def as_metadata(self) -> dict[str, float]:
        """Plain numbers for ``MaterializeResult(metadata=...)``."""
        return {
            "api_calls": self.calls,
            "api_retries": self.retries,
            "api_429s": self.http_429,
            "api_failures": self.failures,
            "ids_requested": self.ids_requested,
            "throttled_seconds": round(self.throttled_seconds, 3),
        }


def parse_retry_after(value: str | None, cap: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(0.0, seconds), cap)


class wait_retry_after(wait_base):  # noqa: N801 - tenacity's naming style
    """Wait ``Retry-After`` when the failed attempt carried one, else ``fallback``."""

    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, ProviderRateLimitedError) and exc.retry_after is not None:
            return exc.retry_after
        return self.fallback(retry_state)


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.retryable


class ProviderClient:
    """One provider account's HTTP client. Subclasses add endpoints and ``parse_response``."""

    provider: ClassVar[str] = "generic"

    def __init__(
        self,
        base_url: str,
        *,
        throttle: Throttle | None = None,
        call_log: CallLog | None = None,
        integration_id: int | None = None,
        run_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
        timeout_seconds: float = 30.0,
        max_attempts: int = 5,
        backoff_initial_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
        max_retry_after_seconds: float = 120.0,
        stats: CallStats | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.base_url = base_url.rstrip("/")
        self.throttle = throttle
        self.call_log = call_log
        self.integration_id = integration_id
        self.run_id = run_id
        self.stats = stats or CallStats()
        self.max_attempts = max_attempts
        self.max_retry_after_seconds = max_retry_after_seconds
        self._secrets = tuple(s for s in secrets if s)
        self._sleep = sleep
        self._wait = wait_retry_after(
            wait_exponential(multiplier=backoff_initial_seconds, max=backoff_max_seconds)
            + wait_random(0, backoff_initial_seconds)
        )
        install_httpx_log_redaction(self._secrets)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=dict(headers or {}),
            timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 10.0)),
            transport=transport,
        )

    # -- public -----------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        parse: Callable[[httpx.Response], T] | None = None,
    ) -> T:
        """Send with limiter, retries and call log; returns ``parse(response)``.

        Raises a :class:`ProviderError` subclass once retries run out (``.attempts`` set).
        """
        parser = parse or self.parse_response
        content = orjson.dumps(json) if json is not None else None
        attempts = 0

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            return self._attempt(method, path, content, params, parser, attempts)

        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception(_is_retryable),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except ProviderError as exc:
            exc.attempts = attempts
            self.stats.add(failures=1)
            raise

    def parse_response(self, response: httpx.Response) -> Any:
        """Decode a successful response (default: JSON). Override for envelopes."""
        return self.decode_json(response)

    def decode_json(self, response: httpx.Response) -> Any:
        """JSON body, or a retryable :class:`ProviderResponseError`."""
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise ProviderResponseError(
                f"malformed JSON body ({len(response.content)} bytes)",
                provider=self.provider,
                status_code=response.status_code,
                retryable=True,
            ) from None

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> ProviderClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(integration_id={self.integration_id})"

    # -- one attempt ----------------------------------------------------------------------

    def _attempt(
        self,
        method: str,
        path: str,
        content: bytes | None,
        params: Mapping[str, Any] | None,
        parse: Callable[[httpx.Response], T],
        number: int,
    ) -> T:
        if self.throttle is not None:
            granted = self.throttle.acquire()
            self.stats.add(throttled_seconds=granted.wait)
        headers = {"Content-Type": "application/json"} if content is not None else None
        request = self._http.build_request(
            method, path, content=content, params=params, headers=headers
        )
        started = time.perf_counter()
        response: httpx.Response | None = None
        error: ProviderError | None = None
        self.stats.add(calls=1)
        try:
            try:
                response = self._http.send(request)
            except httpx.TimeoutException as exc:
                raise self._error(
                    ProviderUnavailableError, f"timeout ({type(exc).__name__})"
                ) from None
            except httpx.TransportError as exc:
                raise self._error(
                    ProviderUnavailableError, f"connection error ({type(exc).__name__})"
                ) from None
            self._raise_for_status(response)
            return parse(response)
        except ProviderError as exc:
            error = exc
            if isinstance(exc, ProviderRateLimitedError):
                self.stats.add(http_429=1)
                if self.throttle is not None:
                    self.throttle.penalize(exc.retry_after)
            raise
        finally:
            self._log_attempt(request, response, content, error, number, started)

    def _raise_for_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        snippet = redact_body(response.text, self._secrets, 200) or ""
        if status == 429:
            retry_after = parse_retry_after(
                response.headers.get("Retry-After"), self.max_retry_after_seconds
            )
            raise self._error(
                ProviderRateLimitedError, "rate limited (429)", status, retry_after=retry_after
            )
        if status in (401, 403):
            message = f"authentication failed ({status}): {snippet}"
            raise self._error(ProviderAuthError, message, status)
        if status >= 500 or status == 408:
            raise self._error(ProviderUnavailableError, f"server error ({status})", status)
        raise self._error(ProviderRequestError, f"request rejected ({status}): {snippet}", status)

    def _error(
        self, cls: type[ProviderError], message: str, status: int | None = None, **kw: Any
    ) -> ProviderError:
        return cls(message, provider=self.provider, status_code=status, **kw)

    def _before_sleep(self, retry_state: RetryCallState) -> None:
        self.stats.add(retries=1)
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        logger.warning(
            "%s call failed (attempt %d/%d): %s; retrying in %.2f s",
            self.provider,
            retry_state.attempt_number,
            self.max_attempts,
            exc,
            retry_state.upcoming_sleep,
        )

    def _log_attempt(
        self,
        request: httpx.Request,
        response: httpx.Response | None,
        content: bytes | None,
        error: ProviderError | None,
        number: int,
        started: float,
    ) -> None:
        if self.call_log is None:
            return
        self.call_log.write(
            CallRecord(
                provider=self.provider,
                integration_id=self.integration_id,
                method=request.method,
                url=mask_url(str(request.url), self._secrets),
                attempt=number,
                status_code=response.status_code if response is not None else None,
                duration_ms=round((time.perf_counter() - started) * 1000.0, 3),
                request_body=redact_body(content, self._secrets, BODY_LOG_LIMIT),
                response_body=redact_body(
                    response.content if response is not None else None,
                    self._secrets,
                    BODY_LOG_LIMIT,
                ),
                error=redact_body(str(error), self._secrets, 1000) if error else None,
                run_id=self.run_id,
            )
        )


class ProviderResource(ConfigurableResource):
    """Base Dagster resource: shared engine, limiter and call log; clients per integration.

    One resource serves many integrations in a run (``client_for``); ``lane`` picks
    the rate-limit lane (``live``, ``backfill``, ``reconcile``).
    """

    database_url: str | None = None
    timeout_seconds: float = 30.0
    max_attempts: int = 5
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    max_retry_after_seconds: float = 120.0
    egress_id: str = "default"
    lane: str = LIVE
    lane_fraction: float | None = None
    log_calls: bool = True

    _run_id: str | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        run = context.run
        self._run_id = run.run_id if run is not None else None

    def throttle_for(
        self,
        provider: str,
        integration: Integration,
        *,
        account: str | None = None,
        limiter: Limiter | None = None,
    ) -> Throttle:
        """The shared budget this integration's calls draw from."""
        policy = policy_for(provider, integration)
        key = rate_limit_key(provider, policy, integration, self.egress_id, account)
        return Throttle(
            limiter=limiter or DatabaseRateLimiter(shared_engine(self.database_url)),
            key=key,
            policy=policy,
            lane=self.lane,
            lane_fraction=self.lane_fraction,
        )

    def client_options(self, run_id: str | None, stats: CallStats | None) -> dict[str, Any]:
        """Keyword arguments every :class:`ProviderClient` built by this resource gets."""
        return {
            "call_log": CallLog(shared_engine(self.database_url)) if self.log_calls else None,
            "run_id": run_id or self._run_id,
            "timeout_seconds": self.timeout_seconds,
            "max_attempts": self.max_attempts,
            "backoff_initial_seconds": self.backoff_initial_seconds,
            "backoff_max_seconds": self.backoff_max_seconds,
            "max_retry_after_seconds": self.max_retry_after_seconds,
            "stats": stats,
        }
