"""amoCRM's part of the reliability suite (`provider_emulators.reliability`): RDESK updates.

A webhook is what RDESK posts to `/webhooks/rdesk/{key}/booked` (even kinds) or `/mc`
(odd kinds): a JSON array with one update for the first id it is given — the lead with
that id, which the emulator knows. Each update costs two amoCRM calls (read the lead,
then patch it) at 7 requests/s, so one update per webhook keeps the suite's loads within
what the quota can drain in its time limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from provider_emulators.reliability.spec import Integration, ProviderReliability, Webhook

SQL_ISH = ("' OR 1=1 --", "'; DROP TABLE amocrm_inbox; --", "1; SELECT pg_sleep(10)", "%00")
UNICODE = ("Санаторий «Здравница»", "\u202e\u0041", "\ufeff", "\u0000", "K", "ß", "\U0010ffff")
LEAD_BASE = 23_300_000  # RDESK lead ids look like 23392663


def lead_id(n: int) -> int:
    """The amoCRM lead the suite's integer id ``n`` stands for."""
    return LEAD_BASE + n


def booked(n: int) -> dict[str, Any]:
    """A booked update (PROVIDERS.md's shape) for lead ``lead_id(n)``."""
    return {
        "id": 700_000 + n,
        "lead_id": str(lead_id(n)),
        "status": "booked",
        "bookedAt": "2026-11-30T08:15:00.000Z",
        "name": f"Гость {n}",
        "checkin": "2026-12-10",
        "checkout": "2026-12-20T12:00:00",
        "money": {"total": 120_000 + n, "paid": 60_000},
        "docNum": 900 + n,
        "extData": {
            "guests": [
                {
                    "fio": f"Гость {n}",
                    "birthday": "1980-05-01",
                    "roomCategory": "Стандарт",
                    "ageGroup": "Взрослый",
                    "cure": "Кардиология",
                    "uid": f"g-{n}",
                    "stayCount": 1,
                    "billNum": 11,
                }
            ]
        },
        "billData": [{"billNum": "11", "billSum": "120000", "billPaidSum": "60000"}],
    }


def mc(n: int) -> dict[str, Any]:
    """An mc (medical centre) update for lead ``lead_id(n)``."""
    return {
        "id": 800_000 + n,
        "lead_id": lead_id(n),
        "name": f"Пациент {n}",
        "createdAt": "2026-11-30T09:00:00",
        "birthday": "1975-02-03",
        "status": "active",
        "treatments": [
            {
                "item_id": 1,
                "action": "Массаж",
                "status": "set",
                "visit_date": "2026-12-01 10:30",
                "pay": True,
                "price": 2500,
                "paid": True,
            },
        ],  # fmt: skip
        "labs": [],
        "packets": [],
        "complex": [],
    }


def _serve_args(port: int, token: str, quota: int) -> list[str]:
    return ["emulate", "amocrm", "--port", str(port), "--long-lived-token", token,
            "--quota", str(quota), "--leads-exist", "--log-level", "warning"]  # fmt: skip


def _add_args(name: str, api_base_url: str) -> list[str]:
    # The suite's integrations share one emulated account: its subdomain names the
    # rate-limit budget (7/s), as one amoCRM account would.
    return [
        "integrations", "add", "--provider", "amocrm", "--name", name, "--subdomain",
        "reliability", "--client-id", "demo-client-id", "--redirect-uri",
        "http://127.0.0.1:8000/oauth/amocrm/callback", "--api-base-url", api_base_url, "--json",
    ]  # fmt: skip


def _add_env(_name: str) -> dict[str, str]:
    return {"CRM_SYNC_AMOCRM_CLIENT_SECRET": "demo-client-secret"}


def _endpoint(integ: Integration) -> str:
    return f"/webhooks/rdesk/{integ.webhook_key}/booked"


def _webhook(integ: Integration, n: int, ids: Sequence[int]) -> Webhook:
    # One lead per (kind, first id): updates of one lead that arrive together are
    # coalesced (only the newest is sent), so a shared lead would make the call counts
    # depend on timing rather than on duplicates.
    first = n * 10_000 + next(iter(ids))
    source, element = ("mc", mc(first)) if n % 2 else ("booked", booked(first))
    path = f"/webhooks/rdesk/{integ.webhook_key}/{source}"
    return Webhook(path, [element], {"leads": (str(lead_id(first)),)})


def _payload_strategy(_integ: Integration) -> Any:
    """JSON bodies: valid arrays, elements wrong in every way, objects, junk."""
    from hypothesis import strategies as st

    text = st.text(st.characters(codec="utf-8"), max_size=40)
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
    json_values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=10,
    )
    strings = text | st.sampled_from(SQL_ISH + UNICODE)
    element = st.fixed_dictionaries(
        {},
        optional={
            "id": st.integers() | strings | json_values,
            "lead_id": st.integers() | st.integers(1, 10**9).map(str) | strings | json_values,
            "status": st.sampled_from(["booked", "checkin", "checkout", "cancel", "waiting"])
            | strings,
            "bookedAt": st.just("2026-11-30T08:15:00.000Z") | strings | json_values,
            "money": st.fixed_dictionaries({"total": st.integers(), "paid": st.integers()})
            | json_values,
            "extData": st.dictionaries(text, json_values, max_size=3) | json_values,
            "name": strings,
        },
    )
    valid = st.integers(1, 50).map(lambda n: [booked(n)])
    arrays = st.lists(element, max_size=4) | st.lists(element | json_values, max_size=4)
    return valid | arrays | json_values | st.dictionaries(strings, json_values, max_size=6)


def _oracle(integ: Integration) -> list[tuple[str, str, str, dict[str, str], bytes, Any]]:
    """Answers issue 11 fixes for the RDESK endpoints."""
    good = orjson.dumps([booked(1)])
    json_ct = {"Content-Type": "application/json"}
    return [
        ("valid booked array", "POST", "{path}", json_ct, good, 200),
        ("an object, not an array", "POST", "{path}", json_ct, orjson.dumps(booked(1)), (400, 422)),
        ("an element that is not an object", "POST", "{path}", json_ct, b"[1]", 422),
        ("not JSON", "POST", "{path}", json_ct, b"[{", 400),
        ("seed path without a key", "POST", "/zdrav/booked", json_ct, good, (401, 403, 404)),
        ("GET on the endpoint", "GET", "{path}", {}, b"", 405),
        ("body over the limit", "POST", "{path}", {**json_ct, "Expect": "100-continue"},
         b" " * (1024 * 1024 + 1), 413),
    ]  # fmt: skip


RELIABILITY = ProviderReliability(
    provider="amocrm",
    serve_args=_serve_args,
    quota_per_second=7,
    add_args=_add_args,
    token_env="CRM_SYNC_AMOCRM_LONG_LIVED_TOKEN",  # noqa: S106 - the variable's name
    add_env=_add_env,
    webhook=_webhook,
    payload_strategy=_payload_strategy,
    endpoint=_endpoint,
    inbox_table="amocrm_inbox",
    task_table="amocrm_tasks",
    entity_tables={"leads": ("integration_id", "external_id")},
    api_paths=("/api/v4/leads",),
    oracle=_oracle,
)
