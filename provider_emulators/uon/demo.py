"""U-ON's part of `make dev`: a demo travel agency on the U-ON emulator (with the PBX
stand-in under /pbx), a few telephony calls, a client-changed webhook, a click-to-call
and client-by-phone lookups (the first asks U-ON, the second comes from the cache).

Numbers ending in an even digit are U-ON clients, odd ones are not; see the calls the
PBX was asked to make at `/pbx/_admin/calls` and U-ON's lead log at `/_admin/leads`.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from provider_emulators.demo import CrmSync, Demo
from provider_emulators.uon.payloads import UonWebhook
from provider_emulators.uon.senders import call_events, send_telephony, send_uon_webhooks
from provider_emulators.uon.state import DEFAULT_API_KEY

NAME = "Demo travel agency"
ACCOUNT_ID = "67054"  # the seed's uon_id
PBX_SECRET = "demo-pbx-client-id"  # noqa: S105 - the demo PBX's client id
KNOWN = "375296254070"  # last digit even: a U-ON client
UNKNOWN = "375296254071"  # odd: nobody
# (call id suffix, number, direction, extension, how it ends)
CALLS = (
    ("in-known", "+" + KNOWN, "in", "151", "answered"),
    ("in-unknown", UNKNOWN, "in", "152", "missed"),
    ("out-known", "80291234568", "out", "151", "answered"),  # national format, BY
)


def _serve_args(port: int) -> list[str]:
    return ["emulate", "uon", "--port", str(port), "--with-pbx", "--pbx-client-id", PBX_SECRET]


def ensure_integrations(crm_sync: CrmSync, api_base_url: str) -> list[dict[str, Any]]:
    """The demo travel agency (once): calls logged to U-ON, managers 2 and 4 on
    extensions 151 and 152, click-to-call through the emulator's PBX."""
    existing = [
        i
        for i in json.loads(crm_sync("integrations", "list", "--json"))
        if i["provider"] == "uon" and i["name"] == NAME
    ]
    if existing:  # `list` masks webhook keys; the demo needs the real URLs to post to
        shown = crm_sync("integrations", "show", str(existing[0]["id"]), "--json",
                         "--reveal-webhook-url")  # fmt: skip
        return [_with_token(crm_sync, json.loads(shown))]
    args = ["integrations", "add", "--provider", "uon", "--name", NAME,
            "--api-base-url", api_base_url, "--log-calls", "--user-extensions", "2=151,4=152",
            "--default-region", "BY", "--account-id", ACCOUNT_ID,
            "--pbx-url", api_base_url.rstrip("/") + "/pbx", "--json"]  # fmt: skip
    added = crm_sync(
        *args, CRM_SYNC_UON_API_KEY=DEFAULT_API_KEY, CRM_SYNC_UON_PBX_SECRET=PBX_SECRET
    )
    return [_with_token(crm_sync, json.loads(added))]


def _with_token(crm_sync: CrmSync, item: dict[str, Any]) -> dict[str, Any]:
    """The integration with an operator token for the demo's lookups (never printed)."""
    name = f"uon-demo-lookups-{int(time.time())}"
    token = json.loads(crm_sync("operator-tokens", "create", name, "--json"))["token"]
    return item | {"demo_operator_token": token}


def _lookups(receiver: str, item: dict[str, Any]) -> None:
    """Who is calling: each number twice — U-ON, then the shared cache."""
    headers = {"Authorization": f"Bearer {item['demo_operator_token']}"}
    url = f"{receiver}/api/v1/uon/customers/by-phone"
    with httpx.Client(headers=headers, timeout=10) as http:
        for phone in ("+" + KNOWN, UNKNOWN, "+" + KNOWN):
            started = time.monotonic()
            try:
                got = http.get(url, params={"phone": phone, "integration": item["id"]})
            except httpx.HTTPError as exc:  # the demo goes on; the UI shows the rest
                print(f"  {item['name']}: who is {phone}? → {type(exc).__name__}", flush=True)
                continue
            took = (time.monotonic() - started) * 1000
            body = got.json() if got.status_code == 200 else {}
            who = (body.get("customer") or {}).get("name") or "no U-ON client"
            print(
                f"  {item['name']}: who is {phone}? → {got.status_code} {who} "
                f"(from {body.get('source', '?')}, {took:.0f} ms)",
                flush=True,
            )


def send_demo_traffic(receiver: str, integrations: list[dict[str, Any]]) -> None:
    """Three calls (known, unknown, outgoing), a client change and a click-to-call."""
    for item in integrations:
        key = item["webhook_key"]
        name = item["name"]
        telephony = f"{receiver}/webhooks/telephony/{key}"
        for suffix, phone, direction, ext, outcome in CALLS:
            events = call_events(
                f"demo-{item['id']}-{suffix}", phone, direction=direction,  # type: ignore[arg-type]
                extension=ext, outcome=outcome,  # type: ignore[arg-type]
            )  # fmt: skip
            sent = send_telephony(telephony, events)
            print(
                f"  {name}: call {suffix} ({len(events)} events) → {sent['statuses']}", flush=True
            )
        uon = f"{receiver}/webhooks/uon/{key}"
        changed = UonWebhook(type_id=4, client_id=KNOWN, uon_id=ACCOUNT_ID)
        sent = send_uon_webhooks(uon, [changed], encoding="form")
        print(f"  {name}: client changed webhook → {sent['statuses']}", flush=True)
        click = UonWebhook(method="call", user_id="2", phone=KNOWN, uon_id=ACCOUNT_ID)
        sent = send_uon_webhooks(uon, [click], encoding="json", russian=True)
        print(f"  {name}: click-to-call → {sent['statuses']} {sent['answers'][:1]}", flush=True)
        _lookups(receiver, item)


DEMO = Demo(
    provider="uon",
    serve_args=_serve_args,
    ensure_integrations=ensure_integrations,
    send_webhooks=send_demo_traffic,
)
