"""The reliability suite (issue 9): faults injected into the running stack, per provider.

`stack` starts and stops the real processes, `fuzz` generates bad input, `scenarios`
runs the scenarios and `report` prints the table. Providers take part by exposing a
`ProviderReliability` as `RELIABILITY` from their emulator package.
"""

from __future__ import annotations

from provider_emulators.reliability.spec import Integration, ProviderReliability, Webhook

__all__ = ["Integration", "ProviderReliability", "Webhook", "registered"]


def registered() -> dict[str, ProviderReliability]:
    """{provider: its reliability part} for every registered provider that has one."""
    from crm_sync.registry import layer_modules

    return {
        name: module.RELIABILITY
        for name, module in layer_modules("emulator").items()
        if getattr(module, "RELIABILITY", None) is not None
    }
