"""What `make dev` needs from each provider's emulator to show a working demo."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Runs `crm-sync <args>` with extra environment variables; returns its stdout.
CrmSync = Callable[..., str]


@dataclass(frozen=True)
class Demo:
    """One provider's part of the demo stack."""

    provider: str
    # `crm-sync emulate …` arguments serving the emulator on a port.
    serve_args: Callable[[int], list[str]]
    # Create the demo integrations (once) pointing at the emulator; returns them as JSON.
    ensure_integrations: Callable[[CrmSync, str], list[dict[str, Any]]]
    # Send demo webhooks to the receiver for those integrations.
    send_webhooks: Callable[[str, list[dict[str, Any]]], None]
    health_path: str = "/_admin/health"
