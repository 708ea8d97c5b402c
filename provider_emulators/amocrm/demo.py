"""amoCRM's part of `make dev`: a demo sanatorium account authorized with an OAuth code,
RDESK booked and mc updates for its leads, and amoCRM contact webhooks."""

from __future__ import annotations

import json
from typing import Any

from provider_emulators.amocrm.senders import send_contact_webhooks, send_rdesk
from provider_emulators.amocrm.state import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REDIRECT_URI,
)
from provider_emulators.demo import CrmSync, Demo

NAME = "Demo sanatorium"
SUBDOMAIN = "demo-sanatorium"
UPDATES_PER_ENDPOINT = 8
CONTACT_WEBHOOKS = 10


def _serve_args(port: int) -> list[str]:
    # Every lead id RDESK names exists, as in the account RDESK feeds.
    return ["emulate", "amocrm", "--port", str(port), "--leads-exist"]


def ensure_integrations(crm_sync: CrmSync, api_base_url: str) -> list[dict[str, Any]]:
    """The demo integration, installed on first start with an authorization code."""
    existing = [
        i
        for i in json.loads(crm_sync("integrations", "list", "--json"))
        if i["provider"] == "amocrm" and i["name"] == NAME
    ]
    if existing:  # `list` masks webhook keys; the demo needs the real URLs to post to
        shown = crm_sync("integrations", "show", str(existing[0]["id"]), "--json",
                         "--reveal-webhook-url")  # fmt: skip
        return [json.loads(shown)]
    args = ["integrations", "add", "--provider", "amocrm", "--name", NAME,
            "--subdomain", SUBDOMAIN, "--client-id", DEFAULT_CLIENT_ID,
            "--redirect-uri", DEFAULT_REDIRECT_URI, "--api-base-url", api_base_url,
            "--json"]  # fmt: skip
    added = crm_sync(
        *args,
        CRM_SYNC_AMOCRM_CLIENT_SECRET=DEFAULT_CLIENT_SECRET,
        CRM_SYNC_AMOCRM_AUTH_CODE="code-demo-install",
    )
    return [json.loads(added)]


def send_demo_updates(receiver: str, integrations: list[dict[str, Any]]) -> None:
    """RDESK updates for both endpoints and a burst of contact webhooks, per integration."""
    for item in integrations:
        root = receiver + item["webhook_path"].rsplit("/", 1)[0]  # /webhooks/rdesk/<key>
        key = root.rsplit("/", 1)[1]
        for start, endpoint in ((1, "booked"), (101, "mc")):
            sent = send_rdesk(
                f"{root}/{endpoint}", endpoint, UPDATES_PER_ENDPOINT, start_id=start, batch_size=4
            )
            print(f"  {item['name']}: RDESK {endpoint} → {sent['statuses']}", flush=True)
        sent = send_contact_webhooks(
            f"{receiver}/webhooks/amocrm/{key}", CONTACT_WEBHOOKS, "add", per_webhook=3
        )
        print(f"  {item['name']}: contact webhooks → {sent['statuses']}", flush=True)


DEMO = Demo(
    provider="amocrm",
    serve_args=_serve_args,
    ensure_integrations=ensure_integrations,
    send_webhooks=send_demo_updates,
)
