"""iiko's part of `make dev`: a demo restaurant, its webhook registration, and orders.

The orders are made in the emulator, which posts their webhooks to the receiver: some
events carry the whole order (stored as they come), some only its id (the sync reads
it with `deliveries/by_id`), one is the seed's SOI `CREATE` body.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from provider_emulators.demo import CrmSync, Demo
from provider_emulators.iiko.app import DEFAULT_API_LOGIN, DEFAULT_ORGANIZATION_ID

NAME = "Demo restaurant"
# The demo's authToken: iiko sends it with every webhook (a real one comes from ops).
WEBHOOK_TOKEN = "demo-iiko-webhook-token"  # noqa: S105 - a demo value, not a secret
ORDERS_PER_KIND = 15


def _serve_args(port: int) -> list[str]:
    return ["emulate", "iiko", "--port", str(port), "--api-login", DEFAULT_API_LOGIN]


def ensure_integrations(crm_sync: CrmSync, api_base_url: str) -> list[dict[str, Any]]:
    """The demo integration, created on first start, with its webhook registered in iiko."""
    existing = [
        i
        for i in json.loads(crm_sync("integrations", "list", "--json"))
        if i["provider"] == "iiko" and i["name"] == NAME
    ]
    if existing:  # `list` masks webhook keys; the demo needs the real URL to post to
        shown = crm_sync("integrations", "show", str(existing[0]["id"]), "--json",
                         "--reveal-webhook-url")  # fmt: skip
        item = json.loads(shown)
    else:
        args = ["integrations", "add", "--provider", "iiko", "--name", NAME,
                "--organization-id", DEFAULT_ORGANIZATION_ID, "--api-base-url", api_base_url,
                "--json"]  # fmt: skip
        item = json.loads(
            crm_sync(
                *args,
                CRM_SYNC_IIKO_API_LOGIN=DEFAULT_API_LOGIN,
                CRM_SYNC_IIKO_WEBHOOK_TOKEN=WEBHOOK_TOKEN,
            )
        )
    # The emulator forgets registrations when it stops: register on every start.
    crm_sync("iiko", "register-webhook", str(item["id"]))
    return [item | {"api_base_url": api_base_url}]


def send_demo_orders(receiver: str, integrations: list[dict[str, Any]]) -> None:
    """Orders made in the emulator, whose webhooks it posts to the receiver."""
    kinds = (
        ("full orders", {"full": True}),
        ("ids only (read with deliveries/by_id)", {"full": False}),
        ("SOI CREATE", {"soi": True, "soi_type": "CREATE"}),
    )
    for item in integrations:
        for label, options in kinds:
            body = {
                "organization_id": DEFAULT_ORGANIZATION_ID,
                "count": ORDERS_PER_KIND if "soi" not in options else 1,
                "send_webhooks": True,
                "url": receiver + item["webhook_path"],
                "token": WEBHOOK_TOKEN,
                "batch_size": 5,
                **options,
            }
            resp = httpx.post(item["api_base_url"] + "/_admin/orders", json=body, timeout=30)
            resp.raise_for_status()
            sent = resp.json().get("webhooks") or {}
            print(f"  {item['name']}: {label} → {sent.get('statuses', sent)}", flush=True)


DEMO = Demo(
    provider="iiko",
    serve_args=_serve_args,
    ensure_integrations=ensure_integrations,
    send_webhooks=send_demo_orders,
)
