"""The provider client base every provider builds on: transport, auth, errors, call log."""

from orchestration.resources.base import ProviderClient, ProviderResource
from orchestration.resources.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderRequestError,
    ProviderResponseError,
    ProviderUnavailableError,
)
from orchestration.resources.transport import CallStats

__all__ = [
    "CallStats",
    "ProviderAuthError",
    "ProviderClient",
    "ProviderError",
    "ProviderRateLimitedError",
    "ProviderRequestError",
    "ProviderResource",
    "ProviderResponseError",
    "ProviderUnavailableError",
]
