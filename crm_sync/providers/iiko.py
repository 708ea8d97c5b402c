"""iiko Cloud API (restaurant delivery orders, two-way commands, loyalty): seed 001."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from crm_sync.fields import (
    HttpUrl,
    NonBlank,
    ProviderSettings,
    Secret,
    TimeZoneName,
    setup_field,
)
from crm_sync.provider_spec import ProviderSpec, RatePolicy

DEFAULT_API_BASE_URL = "https://api-ru.iiko.services"
# The Cloud API's delivery order statuses (seed 001 lists the same ten).
ORDER_STATUSES = (
    "Unconfirmed",
    "WaitCooking",
    "ReadyForCooking",
    "CookingStarted",
    "CookingCompleted",
    "Waiting",
    "OnWay",
    "Delivered",
    "Closed",
    "Cancelled",
)
# The Cloud API's webhook event types (x-webhooks) and the seed's two; others are stored
# all the same.
EVENT_TYPES = (
    "DeliveryOrderUpdate",
    "DeliveryOrderError",
    "ReserveUpdate",
    "ReserveError",
    "TableOrderUpdate",
    "TableOrderError",
    "StopListUpdate",
    "PersonalShift",
    "OrderChanged",
    "DeliveryOrderChanged",
)


class IikoSetup(BaseModel):
    """What `crm-sync integrations add --provider iiko` asks for."""

    model_config = ConfigDict(extra="forbid")

    api_login: Secret = setup_field(
        store="credentials",
        secret=True,
        env="CRM_SYNC_IIKO_API_LOGIN",
        help="iiko Cloud API login (apiLogin; or CRM_SYNC_IIKO_API_LOGIN). Stored, never printed.",
    )
    organization_id: list[NonBlank] = setup_field(
        store="settings",
        key="organization_ids",
        help="iiko organization id (repeat the option for several organizations).",
    )
    webhook_token: Secret = setup_field(
        store="webhook_secret",
        secret=True,
        env="CRM_SYNC_IIKO_WEBHOOK_TOKEN",
        help="The authToken iiko sends with every webhook (or CRM_SYNC_IIKO_WEBHOOK_TOKEN).",
    )
    api_base_url: HttpUrl = setup_field(
        DEFAULT_API_BASE_URL, store="api_base_url", help="iiko Cloud API base URL."
    )


class IikoSettings(ProviderSettings):
    """Integration settings (`crm-sync integrations update ID --setting KEY=VALUE`)."""

    # Required when the integration is added; an update may not empty it (defaults
    # are not validated, so a partial settings check passes without it).
    organization_ids: list[NonBlank] = Field(default_factory=list, min_length=1)
    # Seconds before an access token's hour ends when it is fetched again.
    token_margin_seconds: float = Field(300, ge=0, lt=3600)
    # Where iiko should post webhooks (default: CRM_SYNC_RECEIVER_PUBLIC_BASE_URL + the
    # integration's webhook path), and the events it should post.
    webhook_url: HttpUrl | None = None
    # iiko's order times (completeBefore, whenCreated) are the terminal's local time
    # without an offset: read in this zone (unset: UTC). Event times are always UTC.
    timezone: TimeZoneName | None = None
    # How long a command may stay InProgress at iiko before it is failed.
    command_timeout_seconds: float = Field(600, gt=0)


SPEC = ProviderSpec(
    name="iiko",
    title="iiko",
    description="Restaurant delivery orders, two-way order commands and loyalty (seed 001).",
    setup=IikoSetup,
    settings=IikoSettings,
    webhook_paths=("/webhooks/iiko/{webhook_key}",),
    # iiko publishes no quota; 10 requests/s per integration is ours (429s are honoured).
    rate_limits=(RatePolicy(rate=10, scope="integration"),),
    modules={
        "schema": "crm_schema.providers.iiko",
        "receiver": "webhook_receiver.providers.iiko",
        "orchestration": "orchestration.defs.iiko",
        "emulator": "provider_emulators.iiko",
        "cli": "crm_sync.cli.providers.iiko",
    },
)
