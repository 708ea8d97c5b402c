"""Environment configuration shared by every crm-sync process."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_PATH = Path(".data") / "crm.sqlite3"


class Settings(BaseSettings):
    """Settings read from the environment (and `.env`, when present)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = f"sqlite:///{DEFAULT_SQLITE_PATH}"
    receiver_max_body_bytes: int = 1024 * 1024
    # How often a running receiver re-reads the integrations table; the CLI
    # promises that enable/disable takes effect within 5 s.
    receiver_integrations_refresh_seconds: float = 2.0
    receiver_public_base_url: str = "http://127.0.0.1:8000"
    sqlite_busy_timeout_ms: int = 5000


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings (read once)."""
    return Settings()
