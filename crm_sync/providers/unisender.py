"""Unisender (e-mail lists): amoCRM contacts exported to an account's lists, seed 003."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from crm_sync.fields import HttpUrl, ProviderSettings, Secret, setup_field
from crm_sync.provider_spec import ProviderSpec, RatePolicy

DEFAULT_API_BASE_URL = "https://api.unisender.com/ru/api"
# importContacts takes at most this many contacts a call.
IMPORT_BATCH = 500


class UnisenderSetup(BaseModel):
    """What `crm-sync integrations add --provider unisender` asks for."""

    model_config = ConfigDict(extra="forbid")

    amocrm: int = setup_field(
        store="settings",
        key="amocrm_integration_id",
        help="The amoCRM integration whose contacts this Unisender account receives.",
    )
    api_key: Secret = setup_field(
        store="credentials",
        secret=True,
        env="CRM_SYNC_UNISENDER_API_KEY",
        help="The Unisender API key (or CRM_SYNC_UNISENDER_API_KEY). Stored, never printed.",
    )
    list_id: list[int] = setup_field(
        store="settings",
        key="list_ids",
        help="A Unisender list the contacts go into (repeat the option for several).",
    )
    api_base_url: HttpUrl = setup_field(
        DEFAULT_API_BASE_URL, store="api_base_url", help="Unisender API base URL."
    )


class UnisenderSettings(ProviderSettings):
    """Integration settings (`crm-sync integrations update ID --setting KEY=VALUE`)."""

    # Required when the account is added (defaults are not validated, so a partial
    # settings check passes without them); an update may not empty them.
    amocrm_integration_id: int | None = Field(None, gt=0)
    list_ids: list[int] = Field(default_factory=list, min_length=1)
    # Send contacts whose e-mail Unisender calls invalid again only after this long.
    retry_invalid_days: float = Field(7, ge=0)


SPEC = ProviderSpec(
    name="unisender",
    title="Unisender",
    description="amoCRM contacts exported to Unisender lists (seed 003).",
    setup=UnisenderSetup,
    settings=UnisenderSettings,
    webhook_paths=(),  # Unisender sends nothing: the export follows amoCRM's contacts
    # 1,200 calls a minute per API key and per egress IP: two budgets on every call.
    rate_limits=(
        RatePolicy(rate=20, scope="account", account_field="api_key"),
        RatePolicy(rate=20, scope="ip"),
    ),
    modules={
        "schema": "crm_schema.providers.unisender",
        "receiver": "webhook_receiver.providers.unisender",
        "orchestration": "orchestration.defs.unisender",
        "emulator": "provider_emulators.unisender",
        "cli": "crm_sync.cli.providers.unisender",
    },
)
