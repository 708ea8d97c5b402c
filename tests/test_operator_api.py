"""The operator API on a real receiver (uvicorn), on SQLite and PostgreSQL: token check,
iiko order commands and loyalty (outbox rows, idempotency), command state, received
events and the API call log (secrets masked)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, insert, select

from crm_schema import operator_tokens
from crm_schema.integrations import Integration, add_integration
from crm_schema.providers.iiko import iiko_commands, orders
from crm_schema.tables import api_call_log, provider_tokens
from crm_sync import encryption
from tests.conftest import count_rows
from tests.receiver_fixtures import assert_error, serve_receiver

COMMANDS = "iiko_commands"
U1 = "5d5a3fbd-0000-4000-8000-000000000001"
U3 = "5d5a3fbd-0000-4000-8000-000000000003"
ACCESS_TOKEN = "eyJ-secret-access-token-0123456789"


def add_iiko(engine: Engine, name: str) -> Integration:
    with engine.begin() as conn:
        return add_integration(
            conn,
            provider="iiko",
            name=name,
            integration_uuid=None,
            api_base_url="http://iiko.invalid",
            credentials={"api_login": f"api-login-{name}-0123456789"},
            settings={"organization_ids": [f"org-{name}", "org-second"]},
            webhook_secret=f"webhook-token-{name}-0123456789",
        )


def add_order(engine: Engine, integration: Integration, iiko_id: str) -> int:
    with engine.begin() as conn:
        return conn.execute(
            insert(orders)
            .values(
                integration_id=integration.id,
                external_id=iiko_id,
                iiko_order_id=iiko_id,
                organization_id=f"order-org-{integration.name}",
                status="CookingStarted",
                custom_fields={},
                raw={},
            )
            .returning(orders.c.id)
        ).scalar_one()


def new_token(engine: Engine, name: str) -> str:
    with engine.begin() as conn:
        return operator_tokens.create(conn, name)[1]


def command_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(select(iiko_commands).order_by(iiko_commands.c.id)).all()


@pytest.fixture
def setup(engine: Engine) -> dict[str, Any]:
    a, b = add_iiko(engine, "alpha"), add_iiko(engine, "beta")
    return {
        "a": a,
        "b": b,
        "order1": add_order(engine, a, U1),
        "order2": add_order(engine, b, U1),  # the same iiko id in another integration
        "order3": add_order(engine, a, U3),
        "token": new_token(engine, "ops"),
    }


ROUTES = [
    ("POST", "/api/v1/orders/1/update-status"),
    ("POST", "/api/v1/orders/1/apply-discount"),
    ("POST", "/api/v1/iiko/loyalty/topup?integration=1"),
    ("GET", "/api/v1/commands/1"),
    ("GET", "/api/v1/webhooks/events"),
    ("GET", "/api/v1/logs"),
]


def test_operator_token_required(database_url: str, engine: Engine, setup: dict) -> None:
    revoked = new_token(engine, "gone")
    with engine.begin() as conn:
        operator_tokens.revoke(conn, "gone")
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        for method, path in ROUTES:
            for headers in (
                {},
                {"Authorization": "Bearer crmop_wrong"},
                {"Authorization": f"Bearer {revoked}"},
                {"Authorization": setup["token"]},  # no scheme
                {"Authorization": f"Basic {setup['token']}"},
                # A webhook token is not an operator token.
                {"Authorization": f"Bearer {setup['a'].webhook_secret}"},
            ):
                resp = client.request(method, path, json={"status": "Delivered"}, headers=headers)
                body = assert_error(resp, 401)
                assert "operator token" in body["error"]
                assert resp.headers["www-authenticate"] == "Bearer"
                assert setup["token"] not in resp.text
    assert count_rows(engine, COMMANDS) == 0


def test_order_commands(database_url: str, engine: Engine, setup: dict) -> None:
    a, b = setup["a"], setup["b"]
    auth = {"Authorization": f"Bearer {setup['token']}"}
    with serve_receiver(database_url) as base, httpx.Client(base_url=base, headers=auth) as client:

        def post(path: str, body: Any, **headers: str) -> httpx.Response:
            return client.post(path, json=body, headers=headers)

        resp = post(f"/api/v1/orders/{setup['order1']}/update-status", {"status": "Delivered"})
        assert resp.status_code == 202, resp.text
        created = resp.json()
        assert created["status"] == "pending" and isinstance(created["id"], int)
        assert created["kind"] == "update-status"
        assert created["order_id"] == setup["order1"] and created["iiko_order_id"] == U1
        assert created["organization_id"] == "order-org-alpha"
        assert created["created_by"] == "ops"
        assert created["request"] == {"status": "Delivered"}
        (row,) = command_rows(engine)
        assert (row.id, row.status, row.integration_id) == (created["id"], "pending", a.id)

        state = client.get(f"/api/v1/commands/{created['id']}")
        assert state.status_code == 200
        shown = state.json()
        for field in ("status", "provider_status", "error", "result", "created_at", "sent_at"):
            assert field in shown
        assert shown["status"] == "pending" and shown["provider_status"] is None
        assert_error(client.get("/api/v1/commands/999999"), 404)
        assert_error(client.get("/api/v1/commands/abc"), 404)

        # By the iiko id; ambiguous across integrations unless narrowed.
        resp = post(
            f"/api/v1/orders/{U3}/assign-courier", {"courier_id": "c-1", "courier_name": "Пётр"}
        )
        assert resp.status_code == 202, resp.text
        assert resp.json()["order_id"] == setup["order3"]
        body = assert_error(post(f"/api/v1/orders/{U1}/cancel", {"cancel_reason": "no"}), 409)
        assert "integration" in body["error"]
        resp = post(f"/api/v1/orders/{U1}/cancel?integration={b.id}", {"cancel_reason": "no"})
        assert resp.status_code == 202, resp.text
        assert resp.json()["order_id"] == setup["order2"]
        assert resp.json()["organization_id"] == "order-org-beta"
        resp = post(
            f"/api/v1/orders/{setup['order1']}/update-payment",
            {"payments": [{"paymentTypeKind": "Card", "sum": 1200.5}]},
        )
        assert resp.status_code == 202, resp.text
        assert resp.json()["request"]["payments"][0]["sum"] == 1200.5
        assert count_rows(engine, COMMANDS) == 4

        # Refusals: nothing written.
        order = f"/api/v1/orders/{setup['order1']}"
        body = assert_error(post(f"{order}/update-status", {"status": "CookingStarted"}), 422)
        assert "Waiting, OnWay, Delivered, Closed, Cancelled" in body["error"]
        assert body["problems"][0]["field"] == "status"
        for path, payload, fields in [
            (f"{order}/update-status", {"status": "Eaten"}, {"status"}),
            (f"{order}/update-status", {}, {"status"}),
            (f"{order}/update-status", [], {"body"}),
            (f"{order}/assign-courier", {"courier_id": " "}, {"courier_id"}),
            (f"{order}/update-payment", {"payments": []}, {"payments"}),
            (
                f"{order}/update-payment",
                {"payments": [{"paymentTypeKind": "Card", "sum": -1}], "x": 1},
                {"payments.0.sum", "x"},
            ),
            (
                f"{order}/cancel",
                {"cancel_reason": "x", "cancel_cause_id": "nope"},
                {"cancel_cause_id"},
            ),
            (f"{order}/apply-discount", {}, {"body"}),
            (f"{order}/cancel?integration=abc", {"cancel_reason": "x"}, {"integration"}),
        ]:
            body = assert_error(post(path, payload), 422)
            assert {p["field"] for p in body["problems"]} == fields, (path, body)
        body = assert_error(post(f"{order}/apply-discount", {"discount_percent": 10}), 501)
        assert "no method that changes the discounts" in body["error"]
        assert_error(post("/api/v1/orders/424242/cancel", {"cancel_reason": "x"}), 404)
        assert_error(
            post(f"/api/v1/orders/{U3}/cancel?integration={b.id}", {"cancel_reason": "x"}), 404
        )
        assert_error(post(f"{order}/explode", {}), 404)
        resp = client.post(
            f"{order}/cancel", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert_error(resp, 400)
        resp = client.post(f"{order}/cancel", content=b"x", headers={"content-type": "text/plain"})
        assert_error(resp, 415)
        assert count_rows(engine, COMMANDS) == 4

        # Idempotency: one row per key; another request under the same key is a 409.
        first = post(f"{order}/update-status", {"status": "OnWay"}, **{"Idempotency-Key": "k-1"})
        assert first.status_code == 202, first.text
        again = post(f"{order}/update-status", {"status": "OnWay"}, **{"Idempotency-Key": "k-1"})
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        assert count_rows(engine, COMMANDS) == 5
        body = assert_error(
            post(f"{order}/update-status", {"status": "Closed"}, **{"Idempotency-Key": "k-1"}), 409
        )
        assert "Idempotency-Key" in body["error"]
        other_order = f"/api/v1/orders/{setup['order3']}/update-status"
        assert_error(post(other_order, {"status": "OnWay"}, **{"Idempotency-Key": "k-1"}), 409)
        assert_error(post(other_order, {"status": "OnWay"}, **{"Idempotency-Key": "x" * 201}), 422)
        assert count_rows(engine, COMMANDS) == 5
        assert command_rows(engine)[-1].idempotency_key == "k-1"


def test_loyalty_commands(database_url: str, engine: Engine, setup: dict) -> None:
    a = setup["a"]
    auth = {"Authorization": f"Bearer {setup['token']}"}
    wallet = {"customer_id": "cust-1", "wallet_id": "wal-1", "amount": 150.5, "comment": "за заказ"}
    with serve_receiver(database_url) as base, httpx.Client(base_url=base, headers=auth) as client:
        resp = client.post(f"/api/v1/iiko/loyalty/topup?integration={a.id}", json=wallet)
        assert resp.status_code == 202, resp.text
        topup = resp.json()
        assert topup["kind"] == "loyalty-topup" and topup["order_id"] is None
        assert topup["organization_id"] == "org-alpha"  # the integration's first
        resp = client.post(
            f"/api/v1/iiko/loyalty/hold?integration={a.id}",
            json=wallet | {"organization_id": "org-second"},
            headers={"Idempotency-Key": "hold-1"},
        )
        assert resp.status_code == 202 and resp.json()["organization_id"] == "org-second"
        for action, body in [
            ("chargeoff", wallet),
            ("cancel-hold", {"transaction_id": "tx-1"}),
            ("customer-info", {"phone": "+79990001122"}),
        ]:
            resp = client.post(f"/api/v1/iiko/loyalty/{action}?integration={a.id}", json=body)
            assert resp.status_code == 202, (action, resp.text)
        assert count_rows(engine, COMMANDS) == 5

        for path, body, status in [
            ("/api/v1/iiko/loyalty/topup", wallet, 422),  # no integration
            ("/api/v1/iiko/loyalty/topup?integration=999", wallet, 404),
            (f"/api/v1/iiko/loyalty/topup?integration={a.id}", wallet | {"amount": 0}, 422),
            (f"/api/v1/iiko/loyalty/customer-info?integration={a.id}", {}, 422),
            (
                f"/api/v1/iiko/loyalty/customer-info?integration={a.id}",
                {"phone": "1", "customer_id": "c"},
                422,
            ),
            (f"/api/v1/iiko/loyalty/refund?integration={a.id}", wallet, 404),
        ]:
            assert_error(client.post(path, json=body), status)
        assert count_rows(engine, COMMANDS) == 5
    kinds = [r.kind for r in command_rows(engine)]
    assert kinds == [
        "loyalty-topup",
        "loyalty-hold",
        "loyalty-chargeoff",
        "loyalty-cancel-hold",
        "loyalty-customer-info",
    ]


def test_events_paging_and_logs_masked(database_url: str, engine: Engine, setup: dict) -> None:
    a, b = setup["a"], setup["b"]
    auth = {"Authorization": f"Bearer {setup['token']}"}
    with engine.begin() as conn:
        conn.execute(
            insert(provider_tokens).values(
                integration_id=a.id, name="access", access_token=encryption.encrypt(ACCESS_TOKEN)
            )
        )
        login = a.credentials["api_login"]
        calls = [
            {
                "provider": "iiko",
                "integration_id": a.id,
                "method": "POST",
                "url": "https://api-ru.iiko.services/api/1/access_token?apiLogin=" + login,
                "status_code": 200,
                "request_body": json.dumps({"apiLogin": login}),
                "response_body": json.dumps({"correlationId": "c-1", "token": ACCESS_TOKEN}),
            },
            {
                "provider": "iiko",
                "integration_id": a.id,
                "method": "POST",
                "url": f"http://receiver.local{a.webhook_path}",
                "status_code": 401,
                "request_body": f"authToken={a.webhook_secret} and {setup['token']}",
                "error": f"401: Authorization: Bearer {ACCESS_TOKEN}; login {login}",
            },
            {
                "provider": "allio",
                "method": "GET",
                "url": "https://allio.invalid/api/reserve?token=secret-token-xyz&id=1",
                "status_code": 200,
                "response_body": f"echo {ACCESS_TOKEN}",
            },
        ]
        for call in calls:
            conn.execute(insert(api_call_log).values(**call))
    webhook = {"Authorization": a.webhook_secret}
    events = [{"eventType": "DeliveryOrderUpdate", "eventInfo": {"id": f"o-{i}"}} for i in range(4)]
    with serve_receiver(database_url) as base, httpx.Client(base_url=base, headers=auth) as client:
        assert client.post("/api/v1/webhooks/iiko", json=events, headers=webhook).status_code == 200
        resp = client.post(
            "/api/v1/webhooks/iiko", content=b"{broken", headers={"Authorization": b.webhook_secret}
        )
        assert resp.json()["status"] == "ignored"

        page = client.get("/api/v1/webhooks/events", params={"skip": 0, "limit": 2}).json()
        assert page["skip"] == 0 and page["limit"] == 2 and page["has_more"] is True
        newest, second = page["items"]
        assert newest["event_type"] is None and newest["integration_id"] == b.id
        assert newest["processing_error"].startswith("body is not valid JSON")
        assert newest["raw_body"] == "{broken" and newest["processed"] is False
        assert second["iiko_order_id"] == "o-3" and second["payload"] == events[3]
        assert second["received_at"] and second["processed_at"] is None
        rest = client.get("/api/v1/webhooks/events", params={"skip": 2, "limit": 500}).json()
        assert [e["iiko_order_id"] for e in rest["items"]] == ["o-2", "o-1", "o-0"]
        assert rest["has_more"] is False
        only_b = client.get("/api/v1/webhooks/events", params={"integration": b.id}).json()
        assert [e["integration_id"] for e in only_b["items"]] == [b.id]
        assert client.get("/api/v1/webhooks/events").json()["limit"] == 50

        for path in ("/api/v1/webhooks/events", "/api/v1/logs"):
            for params, field in [
                ({"limit": 0}, "limit"),
                ({"limit": 501}, "limit"),
                ({"limit": "1.5"}, "limit"),
                ({"skip": -1}, "skip"),
                ({"skip": "x"}, "skip"),
            ]:
                body = assert_error(client.get(path, params=params), 422)
                assert [p["field"] for p in body["problems"]] == [field], (path, params)
        body = assert_error(client.get("/api/v1/webhooks/events", params={"integration": "a"}), 422)
        assert body["problems"][0]["field"] == "integration"

        resp = client.get("/api/v1/logs", params={"limit": 500})
        assert resp.status_code == 200, resp.text
        logs = resp.json()
        assert [c["provider"] for c in logs["items"]] == ["allio", "iiko", "iiko"]
        for secret in (
            ACCESS_TOKEN,
            login,
            a.webhook_secret,
            a.webhook_key,
            setup["token"],
            "secret-token-xyz",
        ):
            assert secret not in resp.text, secret
        masked = logs["items"][2]
        assert masked["url"].startswith("https://api-ru.iiko.services/api/1/access_token?apiLogin=")
        assert "****" in masked["response_body"] and "c-1" in masked["response_body"]
        iiko_only = client.get("/api/v1/logs", params={"provider": "iiko", "limit": 1}).json()
        assert len(iiko_only["items"]) == 1 and iiko_only["has_more"] is True
        assert iiko_only["items"][0]["status_code"] == 401


def test_openapi_documents_the_operator_api(database_url: str) -> None:
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["operatorToken"]["scheme"] == "bearer"
    for kind in ("update-status", "assign-courier", "update-payment", "apply-discount", "cancel"):
        post = doc["paths"][f"/api/v1/orders/{{order_id}}/{kind}"]["post"]
        assert post["security"] == [{"operatorToken": []}]
        assert "requestBody" in post
        assert ("202" in post["responses"]) == (kind != "apply-discount")
    for action in ("topup", "chargeoff", "hold", "cancel-hold", "customer-info"):
        post = doc["paths"][f"/api/v1/iiko/loyalty/{action}"]["post"]
        assert {p["name"] for p in post["parameters"]} >= {"integration", "Idempotency-Key"}
    for path in ("/api/v1/webhooks/events", "/api/v1/logs"):
        names = {p["name"] for p in doc["paths"][path]["get"]["parameters"]}
        assert {"skip", "limit"} <= names
    assert "get" in doc["paths"]["/api/v1/commands/{command_id}"]
    status = doc["components"]["schemas"]["UpdateStatus"]["properties"]["status"]
    assert "Delivered" in status["enum"]
