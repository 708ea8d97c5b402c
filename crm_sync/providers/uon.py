"""U-ON.Travel (travel-agency CRM) with telephony: seed 004.

A call rings: the caller's profile comes from a cache every worker shares, else from
U-ON's `user/phone/{digits}` under the shared limiter. The telephony system's call
events are stored and enriched in batches; a hung-up call may be logged to U-ON as a
lead. U-ON's own webhooks refresh clients and requests, and its "click on a client's
phone" asks the PBX to originate the call.
"""

from __future__ import annotations

import ipaddress
import re
import string
from typing import Annotated, Any

import phonenumbers
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from crm_sync.fields import HttpUrl, NonBlank, ProviderSettings, Secret, setup_field
from crm_sync.provider_spec import ProviderSpec, RatePolicy

DEFAULT_API_BASE_URL = "https://api.u-on.ru"
DEFAULT_REGION = "BY"  # the seed's numbers are Belarusian (375…)
DEFAULT_ORIGINATE_URL = "{pbx}/api/makecallexternal?code={ext}&phone={e164}&clientId={secret}"
# What an originate URL template may name.
ORIGINATE_PLACEHOLDERS = frozenset({"pbx", "ext", "e164", "digits", "secret", "manager", "phone"})
DEFAULT_TEST_PHONE = "+375296254070"  # the seed's example number
PAGE_SIZE = 100  # U-ON's pages
# U-ON's webhook type_id values (PROVIDERS.md).
CLIENT_TYPES = {3: "created", 4: "changed", 5: "deleted"}
LEAD_TYPES = {1: "lead_created", 2: "request_created", 16: "status_changed", 17: "status_changed"}
MISSED_CALL_TYPE = 44
CLICK_TO_CALL_TYPE = 47


def _split_commas(value: Any) -> Any:
    """`a,b` (or several of them, from a repeated option) as a flat list."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list | tuple):
        out: list[Any] = []
        for item in value:
            if isinstance(item, str):
                out.extend(p.strip() for p in item.split(",") if p.strip())
            else:
                out.append(item)
        return out
    return value


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(f"'{value}' is not an IP address or CIDR network") from None


_DIGITS = re.compile(r"^[0-9]{1,16}$")


def _extensions(value: Any) -> Any:
    """`2=151,4=152` (U-ON manager id = PBX extension) as {"2": "151", "4": "152"}."""
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    if isinstance(value, str):
        pairs: dict[str, str] = {}
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            manager, sep, ext = part.partition("=")
            if not sep:
                raise ValueError(f"'{part}' is not MANAGER_ID=EXTENSION")
            pairs[manager.strip()] = ext.strip()
        value = pairs
    if isinstance(value, dict):
        out = {}
        for manager, ext in value.items():
            manager, ext = str(manager).strip(), str(ext).strip()
            if not _DIGITS.match(manager) or not _DIGITS.match(ext):
                raise ValueError(
                    f"'{manager}={ext}': a U-ON manager id and an extension, both digits"
                )
            out[manager] = ext
        return out
    return value


def _region(value: str) -> str:
    region = value.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"'{value}' is not a phone region code such as BY or RU")
    return region


def _template(value: str) -> str:
    names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    unknown = names - ORIGINATE_PLACEHOLDERS
    if unknown or "" in names:
        known = ", ".join("{" + n + "}" for n in sorted(ORIGINATE_PLACEHOLDERS))
        raise ValueError(f"the template may name only {known}")
    if not value.startswith(("http://", "https://", "{pbx}")):
        raise ValueError("the template must start with http://, https:// or {pbx}")
    return value


Cidrs = Annotated[list[Annotated[str, AfterValidator(_cidr)]], BeforeValidator(_split_commas)]
UserExtensions = Annotated[dict[str, str], BeforeValidator(_extensions)]
Region = Annotated[str, AfterValidator(_region)]
OriginateTemplate = Annotated[str, AfterValidator(_template)]


class UonSetup(BaseModel):
    """What `crm-sync integrations add --provider uon` asks for."""

    model_config = ConfigDict(extra="forbid")

    api_key: Secret = setup_field(
        store="credentials",
        secret=True,
        env="CRM_SYNC_UON_API_KEY",
        help="The U-ON API key (or CRM_SYNC_UON_API_KEY). Stored, never printed.",
    )
    api_base_url: HttpUrl = setup_field(
        DEFAULT_API_BASE_URL, store="api_base_url", help="U-ON API base URL."
    )
    log_calls: bool = setup_field(
        False, store="settings", help="Log every hung-up call to U-ON as a lead."
    )
    primary: bool = setup_field(
        False, store="settings", help="U-ON is the main source of client names."
    )
    user_extensions: UserExtensions = setup_field(
        {},
        store="settings",
        help="U-ON manager id = PBX extension pairs, e.g. 2=151,4=152.",
    )
    default_region: Region = setup_field(
        DEFAULT_REGION,
        store="settings",
        help="Region for numbers without a country code (default BY).",
    )
    pbx_url: HttpUrl | None = setup_field(
        None, store="settings", help="The PBX base URL, {pbx} in the originate template."
    )
    pbx_originate_url: OriginateTemplate = setup_field(
        DEFAULT_ORIGINATE_URL,
        store="settings",
        help="The PBX originate URL template ({pbx} {ext} {e164} {digits} {secret} {manager}).",
    )
    pbx_secret: Secret | None = setup_field(
        None,
        store="credentials",
        secret=True,
        env="CRM_SYNC_UON_PBX_SECRET",
        help="The PBX client id, {secret} in the template (or CRM_SYNC_UON_PBX_SECRET).",
    )
    ip_allowlist: Cidrs = setup_field(
        [],
        store="settings",
        help="Networks U-ON's webhooks come from, CIDR,… (when set, others get 403).",
    )
    account_id: NonBlank | None = setup_field(
        None,
        store="settings",
        help="The U-ON account id (uon_id / account_id in its webhooks).",
    )
    uon_subdomain: NonBlank | None = setup_field(
        None, store="settings", help="The U-ON subdomain (uon_subdomain in its webhooks)."
    )


class UonSettings(ProviderSettings):
    """Integration settings (`crm-sync integrations update ID --setting KEY=VALUE`)."""

    log_calls: bool = False
    primary: bool = False
    user_extensions: UserExtensions = Field(default_factory=dict)
    default_region: Region = DEFAULT_REGION
    pbx_url: HttpUrl | None = None
    pbx_originate_url: OriginateTemplate = DEFAULT_ORIGINATE_URL
    ip_allowlist: Cidrs = Field(default_factory=list)
    account_id: NonBlank | None = None
    uon_subdomain: NonBlank | None = None
    # The seed's cache: profiles 2–5 minutes, "no such client" 1–2 minutes.
    cache_ttl_seconds: float = Field(180, ge=1, le=86400)
    negative_cache_ttl_seconds: float = Field(90, ge=1, le=86400)
    # How long a ringing call may wait for U-ON (quota wait included) before the
    # lookup answers from the stale entry, or empty.
    lookup_deadline_seconds: float = Field(1.0, gt=0, le=30)
    test_phone: NonBlank = DEFAULT_TEST_PHONE  # `integrations check` looks it up
    call_log_source: NonBlank = "Телефония"  # the lead's `source` in U-ON


SPEC = ProviderSpec(
    name="uon",
    title="U-ON.Travel",
    description="U-ON.Travel clients by phone, call events, webhooks, click-to-call (seed 004).",
    setup=UonSetup,
    settings=UonSettings,
    webhook_paths=(
        "/webhooks/uon/{webhook_key}",
        "/webhooks/telephony/{webhook_key}",
    ),
    # 10 requests/s per API key; we aim at 8.
    rate_limits=(RatePolicy(rate=10, safety_margin=0.2, scope="account", account_field="api_key"),),
    modules={
        "schema": "crm_schema.providers.uon",
        "receiver": "webhook_receiver.providers.uon",
        "orchestration": "orchestration.defs.uon",
        "emulator": "provider_emulators.uon",
        "cli": "crm_sync.cli.providers.uon",
    },
)
