"""ALLIO (real-estate reserves and deal cards): seed 000."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from crm_sync.fields import (
    HttpUrl,
    ProviderSettings,
    Secret,
    TimeZoneName,
    UuidText,
    setup_field,
)
from crm_sync.provider_spec import ProviderSpec, RatePolicy


class RateLimitSetting(BaseModel):
    """An integration's own cap; it may lower the shared quota, never raise it."""

    model_config = ConfigDict(extra="forbid")

    rate: float = Field(gt=0, description="requests/s for this integration's calls")


# ALLIO is a Russian system: its zone-less times (`till`, `updated_at`) are Moscow time
# unless an integration says otherwise.
DEFAULT_TIME_ZONE = "Europe/Moscow"


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
    timezone: TimeZoneName = setup_field(
        DEFAULT_TIME_ZONE,
        store="settings",
        help="IANA time zone of ALLIO's zone-less times (till, updated_at).",
    )


class AllioSettings(ProviderSettings):
    """Integration settings (`crm-sync integrations update ID --setting KEY=VALUE`);
    `log_personal_data` comes from ProviderSettings."""

    delete_control: bool = False
    timezone: TimeZoneName = DEFAULT_TIME_ZONE
    # Delete control's guard rails: a sweep may tombstone up to max(floor, share × live
    # entities); DEL tasks older than max_age_days wait for ops to confirm them.
    delete_max_share: float = Field(0.2, ge=0, le=1)
    delete_floor: int = Field(10, ge=0)
    delete_max_age_days: float = Field(7, gt=0)
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
