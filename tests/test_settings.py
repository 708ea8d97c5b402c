"""Environment settings: defaults, the lease, deployment-wide provider quotas."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from crm_sync.settings import Settings


def test_defaults() -> None:
    settings = Settings(_env_file=None)
    assert settings.task_lease_seconds == 120
    assert settings.rate_limits == {}
    assert settings.database_url.startswith("sqlite:///")
    assert settings.call_log_retention_days == 14
    assert settings.secret_key_file is None


def test_secret_key_settings(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("CRM_SYNC_SECRET_KEY", "k1,k2")
    monkeypatch.setenv("CRM_SYNC_SECRET_KEY_FILE", str(tmp_path / "secret.key"))
    settings = Settings(_env_file=None)
    assert settings.secret_key is not None and settings.secret_key.get_secret_value() == "k1,k2"
    assert "k1" not in repr(settings)  # a SecretStr
    assert settings.secret_key_file == tmp_path / "secret.key"
    monkeypatch.setenv("CRM_SYNC_SECRET_KEY", " ")
    assert Settings(_env_file=None).secret_key is None  # blank is unset


def test_lease_and_quotas_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_SYNC_TASK_LEASE_SECONDS", "45")
    monkeypatch.setenv("CRM_SYNC_RATE_LIMITS", "allio=5, iiko=12.5")
    settings = Settings(_env_file=None)
    assert settings.task_lease_seconds == 45
    assert settings.rate_limits == {"allio": 5.0, "iiko": 12.5}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CRM_SYNC_RATE_LIMITS", "allio", "is not provider=rate"),
        ("CRM_SYNC_RATE_LIMITS", "allio=0", "rates must be > 0"),
        ("CRM_SYNC_TASK_LEASE_SECONDS", "0", "greater than 0"),
        ("CRM_SYNC_CALL_LOG_RETENTION_DAYS", "0", "greater than or equal to 1"),
    ],
)
def test_bad_values_are_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        Settings(_env_file=None)
