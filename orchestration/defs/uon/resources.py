"""U-ON's Dagster resource: a rate-limited client per integration (API key).

Every call takes a slot on the API key's shared limiter key (10 requests/s, 8 aimed
at), the one the receiver's live lookups draw from too; a 429 (U-ON sends no
Retry-After) pushes that key forward for every process. The key is in the URL path,
masked in the call log.
"""

from __future__ import annotations

from typing import Any

from crm_schema.integrations import Integration
from crm_sync.providers.uon import DEFAULT_API_BASE_URL
from crm_sync.ratelimit import Limiter
from orchestration.resources.base import ProviderResource
from orchestration.resources.transport import CallStats
from orchestration.uon.client import PROVIDER, UonClient

__all__ = ["UonResource", "build_resources"]


class UonResource(ProviderResource):
    """``uon.client_for(integration)`` → :class:`UonClient`."""

    def client_for(
        self,
        integration: Integration,
        *,
        run_id: str | None = None,
        stats: CallStats | None = None,
        limiter: Limiter | None = None,
    ) -> UonClient:
        """A client for one U-ON integration (close it, or use it as a context manager)."""
        api_key = str(integration.credentials.get("api_key") or "")
        if not api_key:
            raise ValueError(f"U-ON integration {integration.id} has no api_key")
        secrets = [str(integration.credentials.get("pbx_secret") or "")]
        return UonClient(
            str(integration.api_base_url or DEFAULT_API_BASE_URL),
            api_key=api_key,
            throttle=self.throttle_for(PROVIDER, integration, limiter=limiter),
            integration_id=integration.id,
            secrets=[s for s in secrets if s],
            **self.client_options(run_id, stats, integration),
        )


def build_resources(database_url: str | None = None) -> dict[str, Any]:
    """The resources U-ON's assets and jobs need (besides `crm_db`)."""
    return {"uon": UonResource(database_url=database_url)}
