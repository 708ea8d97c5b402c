"""Environment configuration shared by every crm-sync process (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SQLITE_PATH = Path(".data") / "crm.sqlite3"


class Settings(BaseSettings):
    """Settings read from the environment (and `.env`, when present)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    database_url: str = f"sqlite:///{DEFAULT_SQLITE_PATH}"
    receiver_max_body_bytes: int = Field(1024 * 1024, gt=0)
    # How often a running receiver re-reads the integrations table; the CLI
    # promises that enable/disable takes effect within 5 s.
    receiver_integrations_refresh_seconds: float = Field(2.0, gt=0)
    receiver_public_base_url: str = "http://127.0.0.1:8000"
    sqlite_busy_timeout_ms: int = Field(5000, ge=0)
    # A claimed task not heartbeaten for this long is handed to another run.
    task_lease_seconds: float = Field(
        120.0, gt=0, validation_alias=AliasChoices("CRM_SYNC_TASK_LEASE_SECONDS")
    )
    # Deployment-wide provider quotas in requests/s ("allio=2,iiko=10"): set it when a
    # provider grants a different quota, or for emulators without one (tests, benchmarks).
    # Unlike an integration's own `rate_limit` setting, this may raise a shared key's rate.
    rate_limits: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict, validation_alias=AliasChoices("CRM_SYNC_RATE_LIMITS")
    )

    # Reverse proxies in front of the receiver (CIDR list, "10.0.0.0/8,127.0.0.1"): only a
    # request whose TCP peer is one of them has its `X-Forwarded-For` believed (anyone can
    # send the header). Empty: the peer is always the client.
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("CRM_SYNC_TRUSTED_PROXIES")
    )

    # Fernet key(s) that encrypt credentials and provider tokens at rest (crm_sync.encryption):
    # "current[,older,...]" — the first encrypts, all decrypt (a rotation in progress).
    # Checked where it is used, so a bad key's text never lands in a settings error.
    secret_key: SecretStr | None = Field(None, validation_alias=AliasChoices("CRM_SYNC_SECRET_KEY"))
    # A file holding the key(s) instead (`make dev`: .data/secret.key); the variable wins.
    secret_key_file: Path | None = Field(
        None, validation_alias=AliasChoices("CRM_SYNC_SECRET_KEY_FILE")
    )
    # The daily maintenance job deletes api_call_log rows older than this.
    call_log_retention_days: int = Field(
        14, ge=1, validation_alias=AliasChoices("CRM_SYNC_CALL_LOG_RETENTION_DAYS")
    )

    @field_validator("secret_key", "secret_key_file", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("rate_limits", mode="before")
    @classmethod
    def _parse_rate_limits(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        out: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in value.split(","))):
            name, sep, rate = part.partition("=")
            if not sep:
                raise ValueError(f"CRM_SYNC_RATE_LIMITS: '{part}' is not provider=rate")
            out[name.strip()] = float(rate)
        return out

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        if isinstance(value, str):
            value = [p.strip() for p in value.split(",") if p.strip()]
        if not isinstance(value, list | tuple):
            return value
        networks = []
        for item in value:
            try:
                networks.append(ip_network(str(item).strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"CRM_SYNC_TRUSTED_PROXIES: '{item}' is not an IP address or CIDR network"
                ) from None
        return networks

    @field_validator("rate_limits")
    @classmethod
    def _positive_rates(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [name for name, rate in value.items() if rate <= 0]
        if bad:
            raise ValueError(f"rates must be > 0 (check {', '.join(bad)})")
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings (read once)."""
    return Settings()
