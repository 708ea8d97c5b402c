"""Typed provider errors: what went wrong, whether a retry can help, how many attempts."""

from __future__ import annotations


class ProviderError(Exception):
    """Base of every provider call failure. Messages never contain secrets."""

    retryable = False

    def __init__(self, message: str, *, provider: str = "", status_code: int | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.status_code = status_code
        self.attempts = 1

    def __str__(self) -> str:
        base = super().__str__()
        prefix = f"{self.provider}: " if self.provider else ""
        suffix = f" (after {self.attempts} attempts)" if self.attempts > 1 else ""
        return f"{prefix}{base}{suffix}"


class ProviderRateLimitedError(ProviderError):
    """429 (or the provider's quota error code); ``retry_after`` from the response, if any."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ProviderUnavailableError(ProviderError):
    """5xx, timeout or a broken connection."""

    retryable = True


class ProviderAuthError(ProviderError):
    """401/403: bad or revoked credentials. Never retried."""


class ProviderRequestError(ProviderError):
    """Another 4xx: the request itself is wrong. Never retried."""


class ProviderResponseError(ProviderError):
    """The body is not what the provider documents (bad JSON, ``success: false``, ...).

    Malformed bodies are retried (``retryable=True``); an explicit error envelope is not.
    """

    def __init__(self, message: str, *, retryable: bool = False, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retryable = retryable
