"""Shared provider client: httpx + shared rate limit + tenacity retries + ``api_call_log``.

A provider module subclasses :class:`ProviderClient` (endpoints, envelope via
``parse_response``) and :class:`ProviderResource` (the Dagster resource that builds
clients per integration). Everything cross-cutting lives here and in the transport:

- every request on the wire first takes a slot on each of its limiter keys and
  leaves one ``api_call_log`` row (``ProviderTransport``; secrets masked, and phones
  and e-mails too unless the integration's ``log_personal_data`` setting is on);
- bodies as JSON, form fields or raw bytes, query strings, per-request headers;
  204 / empty bodies are success (``None``) where a provider means "nothing";
- auth as ``httpx.Auth`` (bearer token, a fetched token cached for its lifetime,
  OAuth 2 with single-use refresh tokens: orchestration.resources.auth);
- 429 / 5xx / timeouts / broken connections / malformed bodies — and the errors a
  provider puts inside an HTTP 200 that ``parse_response`` classifies as such — are
  retried by tenacity, waiting ``Retry-After`` when the provider sent one, else
  exponential backoff with jitter; a rate-limit error also pushes the shared keys
  forward for every process;
- 401/403 and other 4xx are raised at once as typed errors.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable, Iterable, Mapping
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
from crm_sync.ratelimit import (
    LANE_FRACTIONS,
    LIVE,
    DatabaseRateLimiter,
    Limiter,
    Throttle,
    rate_keys,
)
from crm_sync.redaction import install_log_redaction, redact_body
from crm_sync.registry import get_provider
from crm_sync.settings import get_settings
from orchestration.db import shared_engine
from orchestration.resources.calllog import CallLog
from orchestration.resources.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderRequestError,
    ProviderResponseError,
    ProviderUnavailableError,
)
from orchestration.resources.transport import ATTEMPT, CallStats, ProviderTransport

logger = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["CallStats", "ProviderClient", "ProviderResource", "parse_retry_after"]


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
        auth: httpx.Auth | None = None,
        secrets: Iterable[str] = (),
        timeout_seconds: float = 30.0,
        max_attempts: int = 5,
        backoff_initial_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
        max_retry_after_seconds: float = 120.0,
        stats: CallStats | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        log_personal_data: bool = False,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.base_url = base_url.rstrip("/")
        self.throttle = throttle
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
        install_log_redaction("httpx", self._secrets)
        self._transport = ProviderTransport(
            self.provider,
            inner=transport,
            throttle=throttle,
            call_log=call_log,
            stats=self.stats,
            integration_id=integration_id,
            run_id=run_id,
            secrets=self._secrets,
            log_personal_data=log_personal_data,
        )
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=dict(headers or {}),
            auth=auth,
            timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 10.0)),
            transport=self._transport,
        )

    # -- public -----------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        parse: Callable[[httpx.Response], T] | None = None,
    ) -> T:
        """Send with limiter, retries and call log; returns ``parse(response)``.

        ``json`` (serialised with orjson), ``data`` (form-encoded) and ``content``
        (raw bytes) are alternatives. Raises a :class:`ProviderError` subclass once
        retries run out (``.attempts`` set).
        """
        if sum(x is not None for x in (json, data, content)) > 1:
            raise ValueError("give one of json, data or content")
        parser = parse or self.parse_response
        send_headers = dict(headers or {})
        if json is not None:
            content = orjson.dumps(json)
            send_headers.setdefault("Content-Type", "application/json")
        attempts = 0

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            request = self._http.build_request(
                method,
                path,
                content=content,
                data=data,
                params=params,
                headers=send_headers or None,
                extensions={ATTEMPT: attempts},
            )
            return self._attempt(request, parser)

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
        """Decode a successful response: JSON, or None for 204 / an empty body.

        Override for envelopes; raise a :class:`ProviderError` for an error a provider
        reports inside an HTTP 200 (a :class:`ProviderRateLimitedError` backs every
        process off).
        """
        if response.status_code == 204 or not response.content.strip():
            return None
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

    def _attempt(self, request: httpx.Request, parse: Callable[[httpx.Response], T]) -> T:
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
            try:
                self._raise_for_status(response)
                return parse(response)
            except ProviderError as exc:
                if response.status_code < 400:  # the wire said fine; the log says why not
                    self._transport.annotate(response, str(exc))
                raise
        except ProviderRateLimitedError as exc:
            if self.throttle is not None:
                self.throttle.penalize(exc.retry_after)
            raise

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


class ProviderResource(ConfigurableResource):
    """Base Dagster resource: shared engine, limiter and call log; clients per integration.

    One resource serves many integrations in a run (``client_for``); ``lane`` picks
    the rate-limit lane (``live``, ``backfill``, ``reconcile``); ``quota_per_second``
    sets the provider's quota for this deployment (default: CRM_SYNC_RATE_LIMITS, else
    the provider's documented quota).
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
    quota_per_second: float | None = None
    # How far a 429 without Retry-After pushes the shared keys (default: the policy's).
    penalty_seconds: float | None = None
    log_calls: bool = True

    _run_id: str | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        run = context.run
        self._run_id = run.run_id if run is not None else None

    def quota_for(self, provider: str) -> float | None:
        """The deployment's quota override for ``provider`` (None: the documented one)."""
        if self.quota_per_second is not None:
            return self.quota_per_second
        return get_settings().rate_limits.get(provider)

    def throttle_for(
        self, provider: str, integration: Integration, *, limiter: Limiter | None = None
    ) -> Throttle:
        """The shared budgets this integration's calls draw from."""
        keys = rate_keys(
            get_provider(provider),
            integration,
            egress_id=self.egress_id,
            quota_per_second=self.quota_for(provider),
            penalty_seconds=self.penalty_seconds,
        )
        return Throttle(
            limiter=limiter or DatabaseRateLimiter(shared_engine(self.database_url)),
            keys=keys,
            lane=self.lane,
            lane_fraction=self.lane_fraction,
        )

    def calls_per_second(self, provider: str) -> float:
        """Calls/s one run can count on in this lane (sizes its claims)."""
        quota = self.quota_for(provider)
        rate = min(
            (p.with_rate(quota) if quota else p).effective_rate
            for p in get_provider(provider).rate_limits
        )
        if self.lane != LIVE:
            rate *= self.lane_fraction or LANE_FRACTIONS[self.lane]
        return rate

    def client_options(
        self,
        run_id: str | None,
        stats: CallStats | None,
        integration: Integration | None = None,
    ) -> dict[str, Any]:
        """Keyword arguments every :class:`ProviderClient` built by this resource gets.

        Pass the ``integration``: its `log_personal_data` setting (crm_sync.fields
        `ProviderSettings`) decides whether phones and e-mails reach the call log.
        """
        settings = integration.settings if integration is not None else {}
        return {
            "log_personal_data": bool(settings.get("log_personal_data", False)),
            "call_log": CallLog(shared_engine(self.database_url)) if self.log_calls else None,
            "run_id": run_id or self._run_id,
            "timeout_seconds": self.timeout_seconds,
            "max_attempts": self.max_attempts,
            "backoff_initial_seconds": self.backoff_initial_seconds,
            "backoff_max_seconds": self.backoff_max_seconds,
            "max_retry_after_seconds": self.max_retry_after_seconds,
            "stats": stats,
        }
