"""Unisender's part of `make dev`: a demo account linked to the demo amoCRM integration.

Unisender sends no webhooks: the demo account's contacts are the demo sanatorium's
amoCRM contacts (from its contact webhooks), which the export sends to the emulated list
once the amoCRM sync has stored them. See them at `/_admin/lists/1/contacts`.
"""

from __future__ import annotations

import json
from typing import Any

from provider_emulators.demo import CrmSync, Demo
from provider_emulators.unisender.state import DEFAULT_API_KEY

NAME = "Demo mailing"
AMOCRM_NAME = "Demo sanatorium"  # provider_emulators/amocrm/demo.py
LIST_ID = 1


def _serve_args(port: int) -> list[str]:
    return ["emulate", "unisender", "--port", str(port), "--lists", "1,2"]


def ensure_integrations(crm_sync: CrmSync, api_base_url: str) -> list[dict[str, Any]]:
    """The demo account (once), linked to the demo amoCRM integration."""
    listed = json.loads(crm_sync("integrations", "list", "--json"))
    existing = [i for i in listed if i["provider"] == "unisender" and i["name"] == NAME]
    if existing:
        return existing
    amocrm = [i for i in listed if i["provider"] == "amocrm" and i["name"] == AMOCRM_NAME]
    if not amocrm:
        print("  unisender: no demo amoCRM integration to link to; skipped", flush=True)
        return []
    args = ["integrations", "add", "--provider", "unisender", "--name", NAME,
            "--amocrm", str(amocrm[0]["id"]), "--list-id", str(LIST_ID),
            "--api-base-url", api_base_url, "--json"]  # fmt: skip
    return [json.loads(crm_sync(*args, CRM_SYNC_UNISENDER_API_KEY=DEFAULT_API_KEY))]


def report(_receiver: str, integrations: list[dict[str, Any]]) -> None:
    """Nothing to send: the export follows the amoCRM contacts the demo posted."""
    for item in integrations:
        print(f"  {item['name']}: exports the demo amoCRM contacts to list {LIST_ID}", flush=True)


DEMO = Demo(
    provider="unisender",
    serve_args=_serve_args,
    ensure_integrations=ensure_integrations,
    send_webhooks=report,
)
