"""Provider clients and their Dagster resources, on one shared base."""

from orchestration.resources.allio import AllioClient, AllioResource
from orchestration.resources.base import CallStats, ProviderClient, ProviderResource
from orchestration.resources.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderRequestError,
    ProviderResponseError,
    ProviderUnavailableError,
)

__all__ = [
    "AllioClient",
    "AllioResource",
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
