"""ALLIO's Dagster resource: a rate-limited client per integration."""

from typing import Any

from crm_schema.integrations import Integration
from crm_sync.ratelimit import Limiter
from orchestration.allio.client import AllioClient
from orchestration.resources.auth import BearerAuth
from orchestration.resources.base import ProviderResource
from orchestration.resources.transport import CallStats


class AllioResource(ProviderResource):
    """``allio.client_for(integration)`` → :class:`AllioClient`.

    Token from ``integration.credentials["api_token"]``, base URL from
    ``integration.api_base_url``; all integrations share the per-egress-IP quota.
    """

    def client_for(
        self,
        integration: Integration,
        *,
        run_id: str | None = None,
        stats: CallStats | None = None,
        limiter: Limiter | None = None,
    ) -> AllioClient:
        """A client for one ALLIO integration (close it, or use it as a context manager)."""
        token = str(integration.credentials.get("api_token") or "")
        if not token:
            raise ValueError(f"allio integration {integration.id} has no credentials.api_token")
        if not integration.api_base_url:
            raise ValueError(f"allio integration {integration.id} has no api_base_url")
        return AllioClient(
            integration.api_base_url,
            throttle=self.throttle_for("allio", integration, limiter=limiter),
            integration_id=integration.id,
            auth=BearerAuth(token),
            secrets=[token],
            **self.client_options(run_id, stats, integration),
        )


def build_resources(database_url: str | None = None) -> dict[str, Any]:
    """The resources ALLIO's assets and jobs need (besides `crm_db`)."""
    return {"allio": AllioResource(database_url=database_url)}
