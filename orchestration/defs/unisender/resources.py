"""Unisender's Dagster resource: a rate-limited client per account (API key).

Every call takes a slot on both shared limiter keys (per API key and per egress IP);
refused credentials (``invalid_api_key`` / ``access_denied``) mark the account
"needs attention" (``integrations.attention``) and are never retried.
"""

from __future__ import annotations

from typing import Any

from crm_schema.integrations import Integration, clear_attention, set_attention
from crm_sync.providers.unisender import DEFAULT_API_BASE_URL
from crm_sync.ratelimit import Limiter
from orchestration.db import shared_engine
from orchestration.resources.base import ProviderResource
from orchestration.resources.transport import CallStats
from orchestration.unisender.client import ATTENTION_PREFIX, PROVIDER, UnisenderClient

__all__ = ["UnisenderResource", "build_resources", "mark_recovered"]


def mark_recovered(engine: Any, integration: Integration) -> None:
    """Clear the account's "needs attention" mark once a call with its key succeeded."""
    if (integration.attention or "").startswith(ATTENTION_PREFIX):
        with engine.begin() as conn:
            clear_attention(conn, integration.id)


class UnisenderResource(ProviderResource):
    """``unisender.client_for(integration)`` → :class:`UnisenderClient`."""

    def client_for(
        self,
        integration: Integration,
        *,
        run_id: str | None = None,
        stats: CallStats | None = None,
        limiter: Limiter | None = None,
    ) -> UnisenderClient:
        """A client for one Unisender account (close it, or use it as a context manager)."""
        engine = shared_engine(self.database_url)
        api_key = str(integration.credentials.get("api_key") or "")
        if not api_key:
            raise ValueError(f"Unisender integration {integration.id} has no api_key")

        def on_attention(reason: str) -> None:
            with engine.begin() as conn:
                set_attention(conn, integration.id, reason)

        return UnisenderClient(
            str(integration.api_base_url or DEFAULT_API_BASE_URL),
            api_key=api_key,
            throttle=self.throttle_for(PROVIDER, integration, limiter=limiter),
            integration_id=integration.id,
            on_attention=on_attention,
            **self.client_options(run_id, stats, integration),
        )


def build_resources(database_url: str | None = None) -> dict[str, Any]:
    """The resources Unisender's assets and jobs need (besides `crm_db`)."""
    return {"unisender": UnisenderResource(database_url=database_url)}
