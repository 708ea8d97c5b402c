"""Shared helpers for the U-ON tests: a U-ON integration in the database, and the
emulators (U-ON, the PBX stand-in) over real HTTP."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Engine

from crm_schema.integrations import Integration, add_integration, get_integration

API_KEY = "uon-test-api-key-0123456789abcdef"  # noqa: S105 - a test value
PBX_SECRET = "pbx-client-secret-0123456789"  # noqa: S105 - a test value
# The emulator knows a client for a number whose last digit is even, none for odd.
KNOWN_PHONE = "375296254070"
UNKNOWN_PHONE = "375296254071"

__all__ = [
    "API_KEY",
    "KNOWN_PHONE",
    "PBX_SECRET",
    "UNKNOWN_PHONE",
    "add_uon",
    "reload",
]


def add_uon(
    engine: Engine,
    base_url: str = "http://127.0.0.1:9",
    *,
    api_key: str = API_KEY,
    settings: dict[str, Any] | None = None,
    pbx_secret: str | None = PBX_SECRET,
    name: str | None = None,
) -> Integration:
    """A U-ON integration (BY numbers, managers 2 and 4 on extensions 151 and 152)."""
    credentials = {"api_key": api_key}
    if pbx_secret is not None:
        credentials["pbx_secret"] = pbx_secret
    with engine.begin() as conn:
        return add_integration(
            conn,
            provider="uon",
            name=name or f"uon-{uuid.uuid4().hex[:6]}",
            integration_uuid=None,
            api_base_url=base_url,
            credentials=credentials,
            settings={
                "default_region": "BY",
                "user_extensions": {"2": "151", "4": "152"},
                **(settings or {}),
            },
        )


def reload(engine: Engine, integration: Integration) -> Integration:
    """The integration as stored now."""
    with engine.connect() as conn:
        return get_integration(conn, integration.id)
