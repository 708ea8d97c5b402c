"""ALLIO (real-estate reserves and deal cards): seed 000."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from crm_sync.fields import HttpUrl, Secret, UuidText, setup_field
from crm_sync.registry import ProviderSpec, RatePolicy


class RateLimitSetting(BaseModel):
    """An integration's own cap; it may lower the shared quota, never raise it."""

    model_config = ConfigDict(extra="forbid")

    rate: float = Field(gt=0, description="requests/s for this integration's calls")


class AllioSetup(BaseModel):
    """What `crm-sync integrations add --provider allio` asks for."""

    model_config = ConfigDict(extra="forbid")

    integration_uuid: UuidText = setup_field(
        store="integration_uuid", help="The integration uuid ALLIO puts in every webhook."
    )
    api_base_url: HttpUrl = setup_field(store="api_base_url", help="ALLIO API base URL.")
    api_token: Secret = setup_field(
        store="credentials",
        secret=True,
        env="CRM_SYNC_API_TOKEN",
        help="ALLIO API token (or CRM_SYNC_API_TOKEN). Stored, never printed.",
    )
    delete_control: bool = setup_field(
        False, store="settings", help="Let the daily sweep apply *_DEL tasks."
    )


class AllioSettings(BaseModel):
    """Integration settings (`crm-sync integrations update ID --setting KEY=VALUE`)."""

    model_config = ConfigDict(extra="forbid")

    delete_control: bool = False
    rate_limit: RateLimitSetting | None = None


SPEC = ProviderSpec(
    name="allio",
    title="ALLIO",
    description="Real-estate reserves and deal cards (seed 000).",
    setup=AllioSetup,
    settings=AllioSettings,
    webhook_paths=("/webhooks/allio/{webhook_key}",),
    # 2 requests/s per egress IP, for all integrations together.
    rate_limits=(RatePolicy(rate=2, scope="ip"),),
    modules={
        "schema": "crm_schema.providers.allio",
        "receiver": "webhook_receiver.providers.allio",
        "orchestration": "orchestration.defs.allio",
        "emulator": "provider_emulators.allio",
    },
)
