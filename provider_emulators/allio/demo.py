"""ALLIO's part of `make dev`: two demo integrations and a burst of webhooks."""

from __future__ import annotations

import json
from typing import Any

from provider_emulators.allio.app import DEFAULT_TOKEN, send_webhooks
from provider_emulators.demo import CrmSync, Demo

INTEGRATIONS = (
    ("Demo estate (delete control)", "6f1c2a7e-0d4b-4f3a-9a51-1c0f5e2b7d10", True),
    ("Demo estate 2", "2b9e4d61-5a7c-4e8f-b3d2-8c6a1f0e9d23", False),
)
WEBHOOKS_PER_INTEGRATION = 40


def _serve_args(port: int) -> list[str]:
    return ["emulate", "allio", "--port", str(port), "--token", DEFAULT_TOKEN]


def ensure_integrations(crm_sync: CrmSync, api_base_url: str) -> list[dict[str, Any]]:
    """The demo integrations, created on first start (the API token is the emulator's)."""
    existing = {
        i["integration_uuid"]: i
        for i in json.loads(crm_sync("integrations", "list", "--json"))
        if i["provider"] == "allio"
    }
    found = []
    for name, uuid, delete_control in INTEGRATIONS:
        if uuid not in existing:
            args = ["integrations", "add", "--provider", "allio", "--name", name]
            args += ["--integration-uuid", uuid, "--api-base-url", api_base_url, "--json"]
            args += ["--delete-control"] if delete_control else []
            existing[uuid] = json.loads(crm_sync(*args, CRM_SYNC_API_TOKEN=DEFAULT_TOKEN))
        else:  # `list` masks webhook keys; the demo needs the real URL to post to
            ident = str(existing[uuid]["id"])
            shown = crm_sync("integrations", "show", ident, "--json", "--reveal-webhook-url")
            existing[uuid] = json.loads(shown)
        found.append(existing[uuid])
    return found


def send_demo_burst(receiver: str, integrations: list[dict[str, Any]]) -> None:
    """A mix of commands and overlapping ids for every demo integration."""
    plan = [
        ("RESERVE_ADD", lambda n: [100 + n, 200 + n % 7]),
        ("RESERVE_MOD", lambda n: [100 + n % 10]),
        ("DEALCARD_ADD", lambda n: [500 + n, 600 + n % 5, 700 + n % 3]),
        ("DEALCARD_MOD", lambda n: [500 + n % 4]),
    ]
    for item in integrations:
        for command, ids in plan:
            summary = send_webhooks(
                receiver + item["webhook_path"],
                item["integration_uuid"],
                command,
                ids,
                count=WEBHOOKS_PER_INTEGRATION // len(plan),
                concurrency=5,
            )
            print(f"  {item['name']}: {command} → {summary['statuses']}", flush=True)


DEMO = Demo(
    provider="allio",
    serve_args=_serve_args,
    ensure_integrations=ensure_integrations,
    send_webhooks=send_demo_burst,
)
