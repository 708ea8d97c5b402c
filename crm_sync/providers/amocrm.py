"""amoCRM (API v4) with the RDESK gateway: seed 002 (RDESK bookings → leads) and the
amoCRM contact webhooks seed 003 builds on."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from crm_sync.fields import HttpUrl, NonBlank, ProviderSettings, Secret, setup_field
from crm_sync.provider_spec import ProviderSpec, RatePolicy

RDESK_ENDPOINTS = ("booked", "mc")
_SUBDOMAIN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def _subdomain(value: str) -> str:
    name = value.strip().lower().removesuffix(".amocrm.ru")
    if not _SUBDOMAIN.match(name):
        raise ValueError("must be the account's subdomain, e.g. 'clinic' for clinic.amocrm.ru")
    return name


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(f"'{value}' is not an IP address or CIDR network") from None


Subdomain = Annotated[str, AfterValidator(_subdomain)]
Cidr = Annotated[str, AfterValidator(_cidr)]


def default_api_base_url(subdomain: str) -> str:
    """amoCRM's API base for an account."""
    return f"https://{subdomain}.amocrm.ru"


class AmocrmSetup(BaseModel):
    """What `crm-sync integrations add --provider amocrm` asks for."""

    model_config = ConfigDict(extra="forbid")

    subdomain: Subdomain = setup_field(
        store="settings", help="The amoCRM account's subdomain (clinic for clinic.amocrm.ru)."
    )
    client_id: NonBlank = setup_field(store="settings", help="The amoCRM integration's id.")
    client_secret: Secret = setup_field(
        store="credentials",
        secret=True,
        env="CRM_SYNC_AMOCRM_CLIENT_SECRET",
        help="The amoCRM integration's secret key (or CRM_SYNC_AMOCRM_CLIENT_SECRET).",
    )
    redirect_uri: HttpUrl = setup_field(
        store="settings", help="The integration's redirect URI, exactly as amoCRM has it."
    )
    auth_code: Secret | None = setup_field(
        None,
        store="none",
        secret=True,
        env="CRM_SYNC_AMOCRM_AUTH_CODE",
        help="An authorization code (lives 20 minutes): exchanged for tokens at once.",
    )
    long_lived_token: Secret | None = setup_field(
        None,
        store="credentials",
        secret=True,
        env="CRM_SYNC_AMOCRM_LONG_LIVED_TOKEN",
        help="A long-lived token instead of an authorization code.",
    )
    mock_lead_id: bool = setup_field(
        False,
        store="settings",
        help="Find or create the lead named ID_<lead_id> instead of trusting RDESK's lead id.",
    )
    api_base_url: HttpUrl | None = setup_field(
        None,
        store="api_base_url",
        help="amoCRM API base URL (default https://<subdomain>.amocrm.ru).",
    )

    @model_validator(mode="after")
    def _one_credential(self) -> AmocrmSetup:
        if (self.auth_code is None) == (self.long_lived_token is None):
            raise ValueError("give exactly one of --auth-code and --long-lived-token")
        return self


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


FieldId = Annotated[int, Field(gt=0)]


class SharedFields(_Strict):
    created_at: FieldId = 1287599
    paid_price: FieldId = 1305167
    rdesk_id: FieldId = 1305111


class BookedFields(_Strict):
    status: FieldId = 1304923
    check_in: FieldId = 1305059
    check_out: FieldId = 1305061
    guests: FieldId = 1304335
    doc_num: FieldId = 1305107
    bill_data: FieldId = 1304929


class McFields(_Strict):
    treatments: FieldId = 1363929
    labs: FieldId = 1363931
    packets: FieldId = 1363933
    complex: FieldId = 1363935


class LeadFields(_Strict):
    """amoCRM custom field ids the RDESK updates fill (the seed's example ids)."""

    shared: SharedFields = SharedFields()
    booked: BookedFields = BookedFields()
    mc: McFields = McFields()


class MockPipeline(_Strict):
    pipeline_id: FieldId | None = None
    status_id: FieldId | None = None


class MockPipelines(_Strict):
    """Where mock_lead_id mode creates leads, per RDESK endpoint (unset: amoCRM's default)."""

    booked: MockPipeline = MockPipeline()
    mc: MockPipeline = MockPipeline()


class AmocrmSettings(ProviderSettings):
    """Integration settings (`crm-sync integrations update ID --setting KEY=VALUE`)."""

    subdomain: Subdomain | None = None
    client_id: NonBlank | None = None
    redirect_uri: HttpUrl | None = None
    mock_lead_id: bool = False
    fields: LeadFields = LeadFields()
    mock: MockPipelines = MockPipelines()
    # RDESK posts from these networks may skip the key (the seed's IP allowlist).
    ip_allowlist: list[Cidr] = Field(default_factory=list)


SPEC = ProviderSpec(
    name="amocrm",
    title="amoCRM",
    description="amoCRM leads fed by RDESK (seed 002) and amoCRM contacts (seed 003).",
    setup=AmocrmSetup,
    settings=AmocrmSettings,
    webhook_paths=(
        "/webhooks/rdesk/{webhook_key}/booked",
        "/webhooks/rdesk/{webhook_key}/mc",
        "/webhooks/amocrm/{webhook_key}",
    ),
    # 7 requests/s per amoCRM account (its subdomain), whatever the integration.
    rate_limits=(RatePolicy(rate=7, scope="account", account_field="subdomain"),),
    modules={
        "schema": "crm_schema.providers.amocrm",
        "receiver": "webhook_receiver.providers.amocrm",
        "orchestration": "orchestration.defs.amocrm",
        "emulator": "provider_emulators.amocrm",
        "cli": "crm_sync.cli.providers.amocrm",
    },
)
