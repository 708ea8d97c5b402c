"""iiko's part of the reliability suite (`provider_emulators.reliability`).

Webhooks are what iiko posts: a JSON array of `DeliveryOrderUpdate` events with the
integration's authToken in `Authorization`, one event (one inbox row) per order. Odd
kinds carry the whole order (stored without an API call), even kinds only its id (the
sync completes them with `deliveries/by_id`), so both paths are attacked. Order ids are
uuids derived from the suite's integer ids.
"""

from __future__ import annotations

import hashlib
import uuid as uuid_module
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from crm_sync.providers.iiko import EVENT_TYPES
from provider_emulators.reliability.spec import Integration, ProviderReliability, Webhook

ORGANIZATION_ID = "7c9b2f4e-5d1a-4e8b-9f3c-2a6d8e0b1c47"
_NAMESPACE = uuid_module.UUID("0f5e3a8c-6b2d-4c71-9e04-d83a1b7c5f29")
SQL_ISH = ("' OR 1=1 --", "'; DROP TABLE webhook_events; --", "1; SELECT pg_sleep(10)", "%00")
UNICODE = ("Ресторан №1", "\u202e\u0041", "\ufeff", "\u0000", "K", "ß", "\U0010ffff")


def webhook_token(name: str) -> str:
    """The authToken of the suite's integration ``name`` (unique per integration)."""
    return "rel-" + hashlib.sha256(name.encode()).hexdigest()[:32]


def order_id(integ: Integration, n: int) -> str:
    """The iiko order id the suite's integer id ``n`` stands for."""
    return str(uuid_module.uuid5(_NAMESPACE, f"{integ.id}:{n}"))


def _serve_args(port: int, api_login: str, quota: int) -> list[str]:
    return [
        "emulate",
        "iiko",
        "--port",
        str(port),
        "--api-login",
        api_login,
        "--quota",
        str(quota),
        "--log-level",
        "warning",
    ]


def _add_args(name: str, api_base_url: str) -> list[str]:
    return [
        "integrations",
        "add",
        "--provider",
        "iiko",
        "--name",
        name,
        "--organization-id",
        ORGANIZATION_ID,
        "--api-base-url",
        api_base_url,
        "--json",
    ]


def _add_env(name: str) -> dict[str, str]:
    return {"CRM_SYNC_IIKO_WEBHOOK_TOKEN": webhook_token(name)}


def _auth(integ: Integration) -> dict[str, str]:
    return {"Authorization": webhook_token(integ.name)}


def _endpoint(integ: Integration) -> str:
    return f"/webhooks/iiko/{integ.webhook_key}"


def _event(integ: Integration, n: int, full: bool) -> dict[str, Any]:
    ident = order_id(integ, n)
    info: dict[str, Any] = {
        "id": ident,
        "posId": None,
        "externalNumber": f"rel-{n}",
        "organizationId": ORGANIZATION_ID,
        "timestamp": 1_700_000_000_000 + n,
        "creationStatus": "Success",
        "errorInfo": None,
    }
    if full:
        info["order"] = {
            "status": "CookingStarted",
            "number": n,
            "sum": 100 + n % 1000 + 0.5,
            "phone": "+79990000000",
            "orderType": {"id": ident, "name": "Delivery", "orderServiceType": "DeliveryByCourier"},
            "completeBefore": "2026-11-30 12:00:00.000",
            "whenCreated": "2026-11-30 11:00:00.000",
        }
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return {
        "eventType": "DeliveryOrderUpdate",
        "eventTime": now,
        "organizationId": ORGANIZATION_ID,
        "correlationId": str(uuid_module.uuid4()),
        "eventInfo": info,
    }


def _webhook(integ: Integration, n: int, ids: Sequence[int]) -> Webhook:
    full = n % 2 == 1
    body = [_event(integ, i, full) for i in ids]
    orders = tuple(order_id(integ, i) for i in ids)
    return Webhook(_endpoint(integ), body, {"orders": orders}, headers=_auth(integ))


def _payload_strategy(integ: Integration) -> Any:
    """JSON bodies: valid event arrays, each field wrong in every way, SOI objects, junk."""
    from hypothesis import strategies as st

    text = st.text(st.characters(codec="utf-8"), max_size=40)
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
    json_values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=10,
    )
    strings = text | st.sampled_from(SQL_ISH + UNICODE)
    ids = st.uuids().map(str) | strings | json_values
    times = (
        st.just("2026-11-30 10:00:00.000")
        | st.datetimes().map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3])
        | strings
        | json_values
    )
    event_types = st.sampled_from(EVENT_TYPES) | strings | json_values
    info = st.fixed_dictionaries(
        {"id": ids},
        optional={
            "externalNumber": strings | json_values,
            "creationStatus": st.sampled_from(["Success", "Error", "InProgress"]) | strings,
            "errorInfo": json_values,
            "order": st.dictionaries(text, json_values, max_size=5) | json_values,
        },
    )
    event = st.fixed_dictionaries(
        {"eventType": event_types},
        optional={
            "eventTime": times,
            "organizationId": ids,
            "correlationId": ids,
            "eventInfo": info | json_values,
            "extra": json_values,
        },
    )
    events = st.lists(event, max_size=5) | st.lists(event | json_values, max_size=4)
    soi = st.fixed_dictionaries(
        {"type": st.sampled_from(["CREATE", "UPDATE"]) | strings},
        optional={
            "orderExternalId": strings | json_values,
            "transactionDetails": st.dictionaries(text, json_values, max_size=3) | json_values,
            "iikoOrderDetails": st.dictionaries(text, json_values, max_size=5) | json_values,
        },
    )
    return events | soi | json_values | st.dictionaries(strings, json_values, max_size=6)


def _oracle(integ: Integration) -> list[tuple[str, str, str, dict[str, str], bytes, Any]]:
    """Answers issue 10 fixes for the iiko endpoint."""
    token = webhook_token(integ.name)
    good = orjson.dumps([_event(integ, 1, True)])
    json_ct = {"Content-Type": "application/json"}
    authed = {**json_ct, "Authorization": token}
    return [
        ("valid event array", "POST", "{path}", authed, good, 200),
        (
            "Bearer token",
            "POST",
            "{path}",
            {**json_ct, "Authorization": f"Bearer {token}"},
            good,
            200,
        ),
        ("authToken header", "POST", "{path}", {**json_ct, "authToken": token}, good, 200),
        ("no token", "POST", "{path}", json_ct, good, 401),
        ("wrong token", "POST", "{path}", {**json_ct, "Authorization": token + "x"}, good, 401),
        ("malformed JSON is ignored, kept", "POST", "{path}", authed, b"[{", 200),
        (
            "the shared endpoint without a token",
            "POST",
            "/api/v1/webhooks/iiko",
            json_ct,
            good,
            401,
        ),
        ("an event that is not an object", "POST", "{path}", authed, b"[1]", 422),
        ("GET on the endpoint", "GET", "{path}", {}, b"", 405),
        ("NUL byte in the webhook key", "POST", "/webhooks/iiko/%00", authed, good, 404),
        (
            "body over the limit",
            "POST",
            "{path}",
            {**authed, "Expect": "100-continue"},
            b" " * (1024 * 1024 + 1),
            413,
        ),
    ]


RELIABILITY = ProviderReliability(
    provider="iiko",
    serve_args=_serve_args,
    quota_per_second=10,
    add_args=_add_args,
    token_env="CRM_SYNC_IIKO_API_LOGIN",  # noqa: S106 - the variable's name, not a token
    add_env=_add_env,
    webhook=_webhook,
    payload_strategy=_payload_strategy,
    endpoint=_endpoint,
    inbox_table="webhook_events",
    task_table="iiko_tasks",
    entity_tables={"orders": ("integration_id", "iiko_order_id")},
    api_paths=("/api/1/deliveries/by_id", "/api/1/access_token"),
    oracle=_oracle,
    auth_headers=_auth,
)
