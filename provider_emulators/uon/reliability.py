"""U-ON's part of the reliability suite (`provider_emulators.reliability`): client webhooks.

A webhook is what U-ON posts to `/webhooks/uon/{key}` when a client is created (odd
kinds, type_id 3) or changed (even kinds, type_id 4): one JSON object naming one client,
the first id it is given. The sync reads that client with `user/{id}` and stores it in
`customers`. Client ids are even (the emulator knows every even id) and unique per
(kind, first id), so the call counts depend on duplicates, not on timing.

The emulator's request log shows API paths without the key (`/user/…`), which is what
`api_paths` names. Click-to-call (type_id 47, method=call) is left out of the fuzzed
bodies: its answer is about the PBX, not about an inbox row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import orjson

from provider_emulators.reliability.spec import Integration, ProviderReliability, Webhook

SQL_ISH = ("' OR 1=1 --", "'; DROP TABLE uon_inbox; --", "1; SELECT pg_sleep(10)", "%00")
UNICODE = ("Турагентство «Вояж»", "\u202e\u0041", "\ufeff", "\u0000", "K", "ß", "\U0010ffff")
CLIENT_BASE = 200_000_000  # even: every client id below is even too
ACCOUNT_ID = "67054"
RUSSIAN = ("ID клиента", "ID заявки", "метод", "телефон", "ID пользователя", "клиент")


def client_id(k: int) -> int:
    """The U-ON client the suite's integer ``k`` stands for (even: the emulator knows it)."""
    return CLIENT_BASE + 2 * k


def client_webhook(n: int, first: int) -> dict[str, Any]:
    """A client created (odd ``n``) or changed (even ``n``) webhook body."""
    return {
        "type_id": 3 if n % 2 else 4,
        "client_id": client_id(first),
        "uon_id": ACCOUNT_ID,
        "datetime": "2026-11-30 09:15:00",
    }


def _serve_args(port: int, api_key: str, quota: int) -> list[str]:
    return ["emulate", "uon", "--port", str(port), "--api-key", api_key, "--quota", str(quota),
            "--log-level", "warning"]  # fmt: skip


def _add_args(name: str, api_base_url: str) -> list[str]:
    # Every suite integration uses the same emulated key: one U-ON budget (10/s).
    return ["integrations", "add", "--provider", "uon", "--name", name,
            "--api-base-url", api_base_url, "--default-region", "BY", "--json"]  # fmt: skip


def _endpoint(integ: Integration) -> str:
    return f"/webhooks/uon/{integ.webhook_key}"


def _webhook(integ: Integration, n: int, ids: Sequence[int]) -> Webhook:
    first = n * 10_000 + next(iter(ids))
    return Webhook(
        _endpoint(integ), client_webhook(n, first), {"customers": (str(client_id(first)),)}
    )


def _payload_strategy(_integ: Integration) -> Any:
    """JSON bodies: valid client webhooks, fields wrong in every way, other JSON."""
    from hypothesis import strategies as st

    text = st.text(st.characters(codec="utf-8"), max_size=40)
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
    json_values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=10,
    )
    strings = text | st.sampled_from(SQL_ISH + UNICODE)
    ids = st.integers() | st.integers(1, 10**12).map(str) | strings | json_values
    # Not 47 and no method=call: a click-to-call rings the PBX.
    type_ids = st.sampled_from([1, 2, 3, 4, 5, 16, 17, 44, 0, -1, 10**12]) | st.sampled_from(
        ["3", "4", " 5 ", "x", ""]
    )
    body = st.fixed_dictionaries(
        {},
        optional={
            "type_id": type_ids | json_values,
            "client_id": ids,
            "request_id": ids,
            "lead_id": ids,
            "user_id": ids,
            "phone": st.sampled_from(["375296254070", "+375 29 625-40-71", "12", ""]) | strings,
            "uon_id": ids,
            "uon_subdomain": strings,
            "datetime": st.just("2026-11-30 09:15:00") | strings | json_values,
            "client": st.dictionaries(text, json_values, max_size=3) | strings | json_values,
            "ID клиента": ids,
            "телефон": strings,
        },
    )
    valid = st.integers(1, 50).map(lambda k: client_webhook(k, k))
    return valid | body | json_values | st.dictionaries(strings, json_values, max_size=6)


def _oracle(integ: Integration) -> list[tuple[str, str, str, dict[str, str], bytes, Any]]:
    """Answers the U-ON webhook contract fixes (every 200 on the keyed path)."""
    good = client_webhook(0, 1)
    json_ct = {"Content-Type": "application/json"}
    form_ct = {"Content-Type": "application/x-www-form-urlencoded"}
    form = urlencode({k: str(v) for k, v in good.items()}).encode()
    russian = {"type_id": 4, "ID клиента": str(client_id(2)), "uon_id": ACCOUNT_ID}
    query = "{path}?" + urlencode({"type_id": 4, "client_id": client_id(3)})
    return [
        ("valid JSON client webhook", "POST", "{path}", json_ct, orjson.dumps(good), 200),
        ("valid form client webhook", "POST", "{path}", form_ct, form, 200),
        ("valid GET query client webhook", "GET", query, {}, b"", 200),
        ("Russian keys", "POST", "{path}", json_ct, orjson.dumps(russian), 200),
        ("a JSON array, not an object", "POST", "{path}", json_ct, orjson.dumps([good]),
         (400, 422)),
        ("not JSON", "POST", "{path}", json_ct, b"{", (400, 422)),
        ("seed path without a secret", "POST", "/uon/webhook", json_ct, orjson.dumps(good),
         (401, 403, 404, 409)),
        ("a wrong key", "POST", "/webhooks/uon/not-the-key", json_ct, orjson.dumps(good),
         (401, 403, 404)),
        ("PUT on the endpoint", "PUT", "{path}", json_ct, orjson.dumps(good), 405),
        ("body over the limit", "POST", "{path}", {**json_ct, "Expect": "100-continue"},
         b" " * (1024 * 1024 + 1), 413),
    ]  # fmt: skip


RELIABILITY = ProviderReliability(
    provider="uon",
    serve_args=_serve_args,
    quota_per_second=10,
    add_args=_add_args,
    token_env="CRM_SYNC_UON_API_KEY",  # noqa: S106 - the variable's name
    webhook=_webhook,
    payload_strategy=_payload_strategy,
    endpoint=_endpoint,
    inbox_table="uon_inbox",
    task_table="uon_tasks",
    entity_tables={"customers": ("integration_id", "external_id")},
    api_paths=("/user", "/lead", "/request", "/requests", "/notification", "/countries.json"),
    oracle=_oracle,
)
