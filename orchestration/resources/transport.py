"""The httpx transport every provider client sends through: shared limiter, call log, counters.

Sitting at the transport, these see every request on the wire — including the ones
an ``httpx.Auth`` flow adds (token fetch, OAuth refresh, the retry after a 401) — so
each takes a quota slot and leaves an ``api_call_log`` row like any other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx

from crm_sync.ratelimit import Throttle
from crm_sync.redaction import mask_personal_data, mask_url, redact_body
from orchestration.resources.calllog import CallLog, CallRecord

BODY_LOG_LIMIT = 4096
ATTEMPT = "crm_attempt"  # request extension: the logical call's attempt number
CALL_ROW = "crm_call_row"  # response extension: its api_call_log row id


@dataclass
class CallStats:
    """Counters for run metadata; one object may be shared by several clients."""

    calls: int = 0  # HTTP requests sent (what the provider's quota counts)
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


class ProviderTransport(httpx.BaseTransport):
    """Take a slot on the shared limiter, send, and log the exchange (secrets masked)."""

    def __init__(
        self,
        provider: str,
        *,
        inner: httpx.BaseTransport | None = None,
        throttle: Throttle | None = None,
        call_log: CallLog | None = None,
        stats: CallStats | None = None,
        integration_id: int | None = None,
        run_id: str | None = None,
        secrets: Iterable[str] = (),
        log_personal_data: bool = False,
    ) -> None:
        self.provider = provider
        self.inner = inner or httpx.HTTPTransport()
        self.throttle = throttle
        self.call_log = call_log
        self.stats = stats or CallStats()
        self.integration_id = integration_id
        self.run_id = run_id
        self.secrets = tuple(s for s in secrets if s)
        # Off (the default): phones and e-mails are masked in the logged URL, bodies, errors.
        self.log_personal_data = log_personal_data

    def _personal(self, text: str | None) -> str | None:
        return text if self.log_personal_data else mask_personal_data(text)

    def _body(self, body: bytes | None) -> str | None:
        if body is None:
            return None
        text = self._personal(body.decode("utf-8", "replace"))  # before it is cut short
        return redact_body(text, self.secrets, BODY_LOG_LIMIT)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.throttle is not None:
            granted = self.throttle.acquire()
            self.stats.add(throttled_seconds=granted.wait)
        self.stats.add(calls=1)
        started = time.perf_counter()
        try:
            response = self.inner.handle_request(request)
            response.read()  # bodies are small JSON; the log and the parser both need it
        except Exception as exc:
            self._log(request, None, started, f"{type(exc).__name__}")
            raise
        if response.status_code == 429:
            self.stats.add(http_429=1)
        row_id = self._log(request, response, started, None)
        if row_id is not None:
            response.extensions[CALL_ROW] = row_id
        return response

    def annotate(self, response: httpx.Response, error: str) -> None:
        """Add an error to the call-log row of ``response`` (e.g. a malformed body)."""
        row_id = response.extensions.get(CALL_ROW)
        if self.call_log is not None and row_id is not None:
            masked = redact_body(self._personal(error), self.secrets, 1000)
            self.call_log.annotate(row_id, masked or "")

    def close(self) -> None:
        self.inner.close()

    def _log(
        self,
        request: httpx.Request,
        response: httpx.Response | None,
        started: float,
        error: str | None,
    ) -> int | None:
        if self.call_log is None:
            return None
        status = response.status_code if response is not None else None
        if error is None and status is not None and status >= 400:
            error = f"HTTP {status}"
        return self.call_log.write(
            CallRecord(
                provider=self.provider,
                integration_id=self.integration_id,
                method=request.method,
                url=self._personal(mask_url(str(request.url), self.secrets)) or "",
                attempt=int(request.extensions.get(ATTEMPT, 1)),
                status_code=status,
                duration_ms=round((time.perf_counter() - started) * 1000.0, 3),
                request_body=self._body(request.content),
                response_body=self._body(response.content if response is not None else None),
                error=error,
                run_id=self.run_id,
            )
        )
