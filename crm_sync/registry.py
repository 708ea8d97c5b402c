"""The provider registry: every layer finds providers here, and nowhere else.

A provider is a set of files (one module or folder per layer) plus one line in
`PROVIDERS` below. Its `ProviderSpec` is plain data: the fields `crm-sync
integrations add` asks for, the integration settings it accepts, its webhook paths,
its rate limits, and the dotted names of its modules in each layer — each layer
imports only its own, so the import direction between layers stays one way.
"""

from __future__ import annotations

from types import ModuleType

from crm_sync.provider_spec import (
    DEFAULT_SAFETY_MARGIN,
    Layer,
    ProviderSpec,
    RatePolicy,
    Scope,
)

__all__ = [
    "DEFAULT_SAFETY_MARGIN",
    "PROVIDERS",
    "Layer",
    "ProviderSpec",
    "RatePolicy",
    "Scope",
    "UnknownProvider",
    "get_provider",
    "layer_modules",
    "provider_names",
]


def _providers() -> dict[str, ProviderSpec]:
    # The registry: one line per provider.
    from crm_sync.providers import allio, amocrm, iiko, unisender, uon

    specs = (allio.SPEC, iiko.SPEC, amocrm.SPEC, unisender.SPEC, uon.SPEC)
    return {spec.name: spec for spec in specs}


PROVIDERS: dict[str, ProviderSpec] = _providers()


class UnknownProvider(ValueError):
    """A provider name that is not registered."""


def get_provider(name: str) -> ProviderSpec:
    """The spec of ``name`` (UnknownProvider lists the known ones)."""
    try:
        return PROVIDERS[name]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise UnknownProvider(f"unknown provider '{name}' (known: {known})") from None


def provider_names() -> tuple[str, ...]:
    """Registered provider names, in registry order."""
    return tuple(PROVIDERS)


def layer_modules(layer: Layer) -> dict[str, ModuleType]:
    """{provider: its module in ``layer``} for every provider that has one."""
    found = {}
    for spec in PROVIDERS.values():
        module = spec.module(layer)
        if module is not None:
            found[spec.name] = module
    return found
