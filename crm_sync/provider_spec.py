"""What a provider is: its `ProviderSpec` and `RatePolicy` (plain data).

Kept apart from the registry so a provider's own module can import these types
without loading the registry, which imports every provider.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any, Literal

from pydantic import BaseModel

Scope = Literal["ip", "integration", "account"]
Layer = Literal["schema", "receiver", "orchestration", "emulator", "cli"]
# Aiming m under the quota leaves ~m seconds of slack in every 1-second window (at any
# rate), so requests that arrive up to ~40 ms late still never break the provider's
# "N per any second" rule; utilization stays at 1 - m = 0.96.
DEFAULT_SAFETY_MARGIN = 0.04


@dataclass(frozen=True)
class RatePolicy:
    """``rate`` requests/s (the provider's quota) with ``burst``, aimed ``safety_margin`` under.

    ``scope`` says whose budget it is: our egress IP (every integration shares it), one
    integration, or one provider account (an API key; ``account_field`` names the
    credential that identifies it). ``penalty_seconds`` is how far a 429 without
    ``Retry-After`` pushes the key. With ``burst`` 1 and any margin > 0, no 1-second
    window ever holds more than ``rate`` granted slots.
    """

    rate: float
    burst: int = 1
    scope: Scope = "integration"
    safety_margin: float = DEFAULT_SAFETY_MARGIN
    penalty_seconds: float = 1.0
    account_field: str | None = None

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1 or not 0 <= self.safety_margin < 1:
            raise ValueError("rate must be > 0, burst >= 1 and 0 <= safety_margin < 1")

    @property
    def effective_rate(self) -> float:
        """The rate actually granted (quota minus the safety margin)."""
        return self.rate * (1.0 - self.safety_margin)

    @property
    def interval(self) -> float:
        """Seconds of quota one request costs."""
        return 1.0 / self.effective_rate

    @property
    def slack_seconds(self) -> float:
        """How late a request may arrive before it could crowd a 1-second window."""
        return self.rate * self.interval - 1.0

    def with_rate(self, rate: float) -> RatePolicy:
        """The same policy at another rate."""
        return replace(self, rate=rate)


@dataclass(frozen=True)
class ProviderSpec:
    """Everything generic code needs to know about one provider."""

    name: str
    title: str
    setup: type[BaseModel]  # fields of `integrations add` (see crm_sync.fields)
    settings: type[BaseModel]  # integration settings (`integrations update --setting`)
    webhook_paths: tuple[str, ...]  # templates with {webhook_key}
    rate_limits: tuple[RatePolicy, ...]
    modules: Mapping[Layer, str] = field(default_factory=dict)
    description: str = ""

    def module(self, layer: Layer) -> ModuleType | None:
        """This provider's module in ``layer`` (None when it has none there)."""
        name = self.modules.get(layer)
        return importlib.import_module(name) if name else None

    def webhook_urls(self, base_url: str, webhook_key: str) -> list[str]:
        """The URLs to give the provider for one integration."""
        root = base_url.rstrip("/")
        return [root + path.format(webhook_key=webhook_key) for path in self.webhook_paths]

    def validate_settings(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Settings checked against the provider's model (ValueError naming the problem)."""
        from crm_sync.fields import validation_message

        try:
            model = self.settings.model_validate(dict(raw))
        except Exception as exc:
            raise ValueError(validation_message(exc)) from None
        return model.model_dump(mode="json", exclude_none=True, exclude_unset=True)
