"""iiko Cloud API emulator over real HTTP: tokens, orders, commands, loyalty, webhook
settings, spec validation of requests and answers, and the webhook sender."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from provider_emulators import iiko
from provider_emulators.cli import emulate
from provider_emulators.iiko import records, spec
from provider_emulators.testing import free_port, running_server

API_LOGIN = "test-api-login"
DELAY = 0.2
ORG = "1d6f3a52-8c1e-4b7a-9e0d-5f2c4b8a7e31"
OTHER_ORG = "9a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
CUSTOMER = "3b2f6d1e-7a4c-4e9b-8f1d-2c5a6b7e8d90"
STAMP = "%Y-%m-%d %H:%M:%S.%f"


def day_start(day: datetime) -> str:
    return day.strftime("%Y-%m-%d 00:00:00.000")


def day_end(day: datetime) -> str:
    return day.strftime("%Y-%m-%d 23:59:59.999")


@pytest.fixture(scope="module")
def shared_emu() -> Iterator[tuple[Starlette, str]]:
    app = iiko.create_app(api_login=API_LOGIN, command_delay=DELAY, check_responses=True)
    with running_server(app) as url:
        yield app, url


class Api:
    """An authenticated client that records every Cloud API exchange."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.exchanges: list[tuple[str, Any, int, Any]] = []
        token = self.call("access_token", {"apiLogin": API_LOGIN}).json()["token"]
        client.headers["Authorization"] = f"Bearer {token}"

    def call(self, path: str, body: Any, **kwargs: Any) -> httpx.Response:
        resp = self.client.post(f"/api/1/{path}", json=body, **kwargs)
        self.exchanges.append((path, body, resp.status_code, resp.json()))
        return resp

    def ok(self, path: str, body: Any) -> dict[str, Any]:
        resp = self.call(path, body)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def settle(self, correlation_id: str, org: str = ORG) -> dict[str, Any]:
        """commands/status until it leaves InProgress (the first answer must be InProgress)."""
        body = {"organizationId": org, "correlationId": correlation_id}
        first = self.ok("commands/status", body)
        assert first == {"state": "InProgress"}
        deadline = time.monotonic() + 5
        while True:
            time.sleep(DELAY / 2)
            status = self.ok("commands/status", body)
            if status["state"] != "InProgress" or time.monotonic() > deadline:
                return status


@pytest.fixture
def api(shared_emu) -> Iterator[Api]:
    app, url = shared_emu
    app.state.emulator.log.clear()
    app.state.emulator.faults.clear()
    with httpx.Client(base_url=url, timeout=5) as client:
        client.delete("/_admin/orders")
        client.delete("/_admin/commands")
        yield Api(client)


def admin_orders(api: Api, **body: Any) -> dict[str, Any]:
    resp = api.client.post("/_admin/orders", json={"organization_id": ORG, **body})
    assert resp.status_code == 200, resp.text
    return resp.json()


def by_id(api: Api, ids: list[str], org: str = ORG) -> list[dict[str, Any]]:
    return api.ok("deliveries/by_id", {"organizationId": org, "orderIds": ids})["orders"]


def assert_iiko_error(resp: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert spec.validate_error(body) == []
    assert set(body) == {"correlationId", "errorDescription", "error"}
    for word in words:
        assert word in body["errorDescription"]
    return body


# ---- auth --------------------------------------------------------------------------------


def test_token_flow_expiry_and_401():
    app = iiko.create_app(api_login=API_LOGIN, token_ttl=0.4, command_delay=DELAY)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=5) as client:
        wrong = client.post("/api/1/access_token", json={"apiLogin": "nope"})
        assert_iiko_error(wrong, 401)
        assert "nope" not in wrong.text
        resp = client.post("/api/1/access_token", json={"apiLogin": API_LOGIN})
        assert resp.status_code == 200 and set(resp.json()) == {"correlationId", "token"}
        token = resp.json()["token"]
        body = {"organizationId": ORG, "orderIds": [str(uuid.uuid4())]}
        ok = client.post(
            "/api/1/deliveries/by_id", json=body, headers={"Authorization": f"bearer {token}"}
        )
        assert ok.status_code == 200
        for headers in ({}, {"Authorization": token}, {"Authorization": "Bearer other"}):
            assert_iiko_error(
                client.post("/api/1/deliveries/by_id", json=body, headers=headers), 401
            )
        time.sleep(0.5)
        expired = client.post(
            "/api/1/deliveries/by_id", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert_iiko_error(expired, 401, "expired")
        fresh = client.post("/api/1/access_token", json={"apiLogin": API_LOGIN}).json()["token"]
        auth = {"Authorization": f"Bearer {fresh}"}
        assert fresh != token
        assert client.post("/api/1/deliveries/by_id", json=body, headers=auth).status_code == 200
        assert client.delete("/_admin/tokens").json() == {"expired": 1}
        assert client.post("/api/1/deliveries/by_id", json=body, headers=auth).status_code == 401
        log = client.get("/_admin/requests").json()
        assert [e["status"] for e in log][:3] == [401, 200, 200]
        assert token not in json.dumps(log) and API_LOGIN not in json.dumps(log)


# ---- orders ------------------------------------------------------------------------------


def test_by_id_is_deterministic_for_any_uuid(api):
    ids = [str(uuid.uuid4()) for _ in range(5)]
    first = by_id(api, ids)
    assert [o["id"] for o in first] == ids
    assert by_id(api, ids) == first
    assert [records.make_order(i, ORG) for i in ids] == first
    other_app = iiko.create_app(api_login=API_LOGIN)
    with running_server(other_app) as url, httpx.Client(base_url=url, timeout=5) as client:
        assert by_id(Api(client), ids) == first
    one = first[0]
    assert one["organizationId"] == ORG and one["creationStatus"] == "Success"
    order = one["order"]
    assert order["status"] in iiko.STATUSES
    # Roubles with at most kopecks (compared as decimals: 288.9 * 100 is not 28890.0).
    assert isinstance(order["sum"], float)
    assert Decimal(str(order["sum"])).as_tuple().exponent >= -2
    assert order["number"] == int(one["externalNumber"].split("-")[1])
    assert by_id(api, [ids[0], ids[0]]) == [one]
    admin_orders(api, orders=[{"id": ids[1], "status": "Closed"}])
    changed = by_id(api, ids[1:2])[0]
    assert changed["order"]["number"] == first[1]["order"]["number"]
    assert changed["order"]["status"] == "Closed" and changed["timestamp"] > first[1]["timestamp"]
    assert by_id(api, ids, org=OTHER_ORG)[0]["organizationId"] == OTHER_ORG


def test_by_id_takes_at_most_200_ids(api):
    ids = [str(uuid.uuid4()) for _ in range(201)]
    assert len(by_id(api, ids[:200])) == 200
    resp = api.call("deliveries/by_id", {"organizationId": ORG, "orderIds": ids})
    assert_iiko_error(resp, 400, "200")


def test_by_delivery_date_and_status_finds_admin_orders(api):
    today = datetime.now(UTC)
    made = admin_orders(api, count=3)
    assert len(made["ids"]) == 3 and made["created"] == made["ids"]
    tomorrow = (today + timedelta(days=1)).date().isoformat()
    later = admin_orders(api, orders=[{"status": "OnWay", "sum": 1520.5}], delivery_date=tomorrow)
    admin_orders(api, organization_id=OTHER_ORG, count=1)
    body = {
        "organizationIds": [ORG],
        "deliveryDateFrom": day_start(today),
        "deliveryDateTo": day_end(today),
    }
    answer = api.ok("deliveries/by_delivery_date_and_status", body)
    assert [g["organizationId"] for g in answer["ordersByOrganizations"]] == [ORG]
    found = answer["ordersByOrganizations"][0]["orders"]
    assert sorted(o["id"] for o in found) == sorted(made["ids"])
    assert answer["maxRevision"] >= 5
    both = api.ok(
        "deliveries/by_delivery_date_and_status",
        {"organizationIds": [ORG], "deliveryDateFrom": day_start(today), "statuses": ["OnWay"]},
    )
    onway = both["ordersByOrganizations"][0]["orders"]
    assert later["ids"][0] in [o["id"] for o in onway]
    assert all(o["order"]["status"] == "OnWay" for o in onway)
    assert [o["order"]["sum"] for o in onway if o["id"] == later["ids"][0]] == [1520.5]
    start = {"organizationIds": [ORG], "startRevision": made["revision"]}
    since = api.ok("deliveries/by_revision", start)
    assert [o["id"] for o in since["ordersByOrganizations"][0]["orders"]] == later["ids"]
    # the admin can change and remove orders; by_id then answers the new state
    before = by_id(api, made["ids"][:1])[0]
    admin_orders(api, orders=[{"id": made["ids"][0], "status": "Delivered", "problem": "late"}])
    after = by_id(api, made["ids"][:1])[0]
    assert after["order"]["status"] == "Delivered" and after["timestamp"] > before["timestamp"]
    assert after["order"]["problem"] == {"hasProblem": True, "description": "late"}
    assert api.client.get(f"/_admin/orders/{made['ids'][0]}").json() == after
    api.client.delete(f"/_admin/orders/{made['ids'][1]}")
    assert by_id(api, made["ids"][1:2]) == []


# ---- commands ----------------------------------------------------------------------------


def test_commands_in_progress_then_success_change_the_order(api):
    order_id = admin_orders(api, orders=[{"status": "CookingStarted"}])["ids"][0]
    start = by_id(api, [order_id])[0]
    cid = api.ok(
        "deliveries/update_order_delivery_status",
        {"organizationId": ORG, "orderId": order_id, "deliveryStatus": "OnWay"},
    )
    assert set(cid) == {"correlationId"}
    assert by_id(api, [order_id])[0]["order"]["status"] == "CookingStarted"
    assert api.settle(cid["correlationId"]) == {"state": "Success"}
    moved = by_id(api, [order_id])[0]
    assert moved["order"]["status"] == "OnWay" and moved["timestamp"] > start["timestamp"]
    courier = str(uuid.uuid4())
    cid = api.ok(
        "deliveries/update_order_courier",
        {"organizationId": ORG, "orderId": order_id, "employeeId": courier},
    )
    assert api.settle(cid["correlationId"])["state"] == "Success"
    pay = {"paymentTypeKind": "Card", "sum": 1200.0, "paymentTypeId": str(uuid.uuid4())}
    cid = api.ok(
        "deliveries/change_payments",
        {"organizationId": ORG, "orderId": order_id, "payments": [pay]},
    )
    assert api.settle(cid["correlationId"])["state"] == "Success"
    changed = by_id(api, [order_id])[0]
    assert changed["order"]["courierInfo"]["courier"]["id"] == courier
    assert changed["order"]["payments"][0]["sum"] == 1200.0
    assert changed["order"]["payments"][0]["paymentType"]["kind"] == "Card"
    assert changed["timestamp"] > moved["timestamp"]
    cid = api.ok(
        "deliveries/cancel",
        {"organizationId": ORG, "orderId": order_id, "cancelComment": "Клиент отказался от заказа"},
    )
    assert api.settle(cid["correlationId"])["state"] == "Success"
    cancelled = by_id(api, [order_id])[0]["order"]
    assert cancelled["status"] == "Cancelled"
    assert cancelled["cancelInfo"]["comment"] == "Клиент отказался от заказа"
    listed = api.client.get("/_admin/commands").json()
    assert [c["path"] for c in listed] == [
        "deliveries/update_order_delivery_status",
        "deliveries/update_order_courier",
        "deliveries/change_payments",
        "deliveries/cancel",
    ]
    assert {c["state"] for c in listed} == {"Success"} and listed[0]["orderId"] == order_id


def test_impossible_commands_end_in_error(api):
    cancelled = admin_orders(api, orders=[{"status": "Cancelled"}])["ids"][0]
    cid = api.ok("deliveries/close", {"organizationId": ORG, "orderId": cancelled})
    error = api.settle(cid["correlationId"])
    assert error["state"] == "Error" and "Cancelled" in error["errorReason"]
    assert error["exception"]["code"] == "WrongDeliveryStatus"
    assert by_id(api, [cancelled])[0]["order"]["status"] == "Cancelled"
    failing = str(uuid.uuid4())[:-4] + "dead"
    cid = api.ok(
        "deliveries/update_order_delivery_status",
        {"organizationId": ORG, "orderId": failing, "deliveryStatus": "Delivered"},
    )
    assert api.settle(cid["correlationId"])["state"] == "Error"
    marked = admin_orders(api, orders=[{"status": "Waiting", "fail_commands": True}])["ids"][0]
    cid = api.ok("deliveries/close", {"organizationId": ORG, "orderId": marked})
    assert api.settle(cid["correlationId"])["state"] == "Error"
    unknown = api.call(
        "commands/status", {"organizationId": ORG, "correlationId": str(uuid.uuid4())}
    )
    assert_iiko_error(unknown, 400, "not found")


def test_close_after_delivery_succeeds(api):
    order_id = admin_orders(api, orders=[{"status": "Delivered"}])["ids"][0]
    cid = api.ok("deliveries/close", {"organizationId": ORG, "orderId": order_id})
    assert api.settle(cid["correlationId"]) == {"state": "Success"}
    closed = by_id(api, [order_id])[0]["order"]
    assert closed["status"] == "Closed" and closed["whenClosed"]


# ---- loyalty -----------------------------------------------------------------------------


def test_loyalty_topup_hold_cancel_chargeoff(api):
    info = api.ok(
        "loyalty/iiko/customer/info", {"type": "id", "id": CUSTOMER, "organizationId": ORG}
    )
    assert info["id"] == CUSTOMER
    wallet = info["walletBalances"][0]
    start = wallet["balance"]
    args = {"organizationId": ORG, "customerId": CUSTOMER, "walletId": wallet["id"]}
    assert api.ok("loyalty/iiko/customer/wallet/topup", {**args, "sum": 100.5}) == {}
    hold = api.ok("loyalty/iiko/customer/wallet/hold", {**args, "sum": start + 50})
    assert uuid.UUID(hold["transactionId"])
    too_much = api.call("loyalty/iiko/customer/wallet/chargeoff", {**args, "sum": 60})
    assert_iiko_error(too_much, 400, "Not enough")
    cancel = {"organizationId": ORG, "transactionId": hold["transactionId"]}
    assert api.ok("loyalty/iiko/customer/wallet/cancel_hold", cancel) == {}
    assert_iiko_error(api.call("loyalty/iiko/customer/wallet/cancel_hold", cancel), 400)
    assert api.ok("loyalty/iiko/customer/wallet/chargeoff", {**args, "sum": 60}) == {}
    again = api.ok(
        "loyalty/iiko/customer/info", {"type": "id", "id": CUSTOMER, "organizationId": ORG}
    )
    assert again["walletBalances"][0]["balance"] == round(start + 100.5 - 60, 2)
    over = api.call("loyalty/iiko/customer/wallet/chargeoff", {**args, "sum": start + 1000})
    assert_iiko_error(over, 400, "Not enough")
    by_phone = api.ok(
        "loyalty/iiko/customer/info",
        {"type": "phone", "phone": "+79990001122", "organizationId": ORG},
    )
    assert by_phone["phone"] == "+79990001122"
    held = api.ok(
        "loyalty/iiko/customer/wallet/hold", {**args, "sum": 1, "transactionId": str(uuid.uuid4())}
    )
    snapshot = api.client.get("/_admin/loyalty").json()
    assert held["transactionId"] in [h["transactionId"] for h in snapshot["holds"]]


# ---- webhook settings, validation --------------------------------------------------------


def test_webhook_settings_round_trip(api):
    empty = api.ok("webhooks/settings", {"organizationId": OTHER_ORG})
    assert empty["webHooksUri"] is None and empty["authToken"] is None
    filters = {
        "deliveryOrderFilter": {
            "orderStatuses": ["Unconfirmed", "CookingStarted"],
            "itemStatuses": ["Added"],
            "errors": True,
        }
    }
    update = {
        "organizationId": ORG,
        "webHooksUri": "https://crm.example/api/v1/webhooks/iiko",
        "authToken": "hook-token",
        "webHooksFilter": filters,
    }
    assert set(api.ok("webhooks/update_settings", update)) == {"correlationId"}
    got = api.ok("webhooks/settings", {"organizationId": ORG})
    assert got["webHooksUri"] == update["webHooksUri"] and got["authToken"] == "hook-token"
    assert got["webHooksFilter"] == filters
    assert api.client.get("/_admin/webhooks").json()[ORG]["authToken"] == "hook-token"


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("deliveries/by_id", {"orderIds": []}, ["organizationId"]),
        ("deliveries/by_id", {"organizationId": ORG, "orderIds": ["1"], "x": 1}, ["uuid", "'x'"]),
        (
            "deliveries/update_order_delivery_status",
            {"organizationId": ORG, "orderId": ORG, "deliveryStatus": "Closed"},
            ["Closed"],
        ),
        (
            "deliveries/by_delivery_date_and_status",
            {"organizationIds": [ORG], "deliveryDateFrom": "2026-01-01"},
            ["yyyy-MM-dd"],
        ),
        (
            "deliveries/change_payments",
            {
                "organizationId": ORG,
                "orderId": ORG,
                "payments": [{"paymentTypeKind": "Card", "sum": -1}],
            },
            ["paymentTypeId"],
        ),
        ("loyalty/iiko/customer/wallet/hold", {"organizationId": ORG, "sum": "10"}, ["customerId"]),
        ("webhooks/update_settings", [], ["object"]),
    ],
)
def test_invalid_body_is_400_with_iiko_error(api, path, body, words):
    assert_iiko_error(api.call(path, body), 400, "Invalid request body", *words)


def test_not_json_is_400(api):
    resp = api.client.post("/api/1/deliveries/by_id", content=b"{nope")
    assert_iiko_error(resp, 400, "JSON")


def test_every_request_and_answer_validates_against_the_spec(api):
    """The issue's proof: a JSON-schema validator over the spec file checks both sides."""
    order_id = admin_orders(api, orders=[{"status": "CookingStarted"}])["ids"][0]
    today = datetime.now(UTC)
    by_id(api, [order_id, str(uuid.uuid4()), str(uuid.uuid4())[:-4] + "dead"])
    api.ok(
        "deliveries/by_delivery_date_and_status",
        {
            "organizationIds": [ORG, OTHER_ORG],
            "deliveryDateFrom": day_start(today),
            "deliveryDateTo": day_end(today),
            "statuses": ["CookingStarted"],
        },
    )
    api.ok("deliveries/by_revision", {"organizationIds": [ORG], "startRevision": 0})
    commands = [
        (
            "deliveries/update_order_delivery_status",
            {"deliveryStatus": "Waiting", "deliveryDate": None},
        ),
        ("deliveries/update_order_courier", {"employeeId": str(uuid.uuid4())}),
        (
            "deliveries/change_payments",
            {
                "payments": [
                    {
                        "paymentTypeKind": "Cash",
                        "sum": 10.5,
                        "paymentTypeId": ORG,
                        "isProcessedExternally": False,
                    }
                ]
            },
        ),
        ("deliveries/close", {}),
        ("deliveries/cancel", {"cancelComment": "поздно", "cancelCauseId": None}),
    ]
    for path, extra in commands:
        cid = api.ok(path, {"organizationId": ORG, "orderId": order_id, **extra})
        api.settle(cid["correlationId"])  # the last one ends in Error: the order is Closed
    wallet = records.wallet_id(CUSTOMER)
    args = {"organizationId": ORG, "customerId": CUSTOMER, "walletId": wallet}
    api.ok("loyalty/iiko/customer/info", {"type": "id", "id": CUSTOMER, "organizationId": ORG})
    api.ok("loyalty/iiko/customer/info", {"type": "email", "email": "a@b.c"})
    api.ok("loyalty/iiko/customer/wallet/topup", {**args, "sum": 5, "comment": "бонус"})
    hold = api.ok("loyalty/iiko/customer/wallet/hold", {**args, "sum": 5})
    api.ok(
        "loyalty/iiko/customer/wallet/cancel_hold",
        {"organizationId": ORG, "transactionId": hold["transactionId"]},
    )
    api.ok("loyalty/iiko/customer/wallet/chargeoff", {**args, "sum": 1})
    api.ok("webhooks/update_settings", {"organizationId": ORG, "webHooksUri": "http://x.test/h"})
    api.ok("webhooks/settings", {"organizationId": ORG})
    api.call("deliveries/by_id", {"organizationId": "bad"})
    api.call("loyalty/iiko/customer/wallet/chargeoff", {**args, "sum": 10**9})

    assert {path for path, *_ in api.exchanges} == set(iiko.PATHS)
    statuses = [state for path, _, _, state in api.exchanges if path == "commands/status"]
    assert {s["state"] for s in statuses} == {"InProgress", "Success", "Error"}
    for path, request, status, answer in api.exchanges:
        if status == 200:
            assert spec.validate_request(path, request) == [], (path, request)
            assert spec.validate_response(path, answer) == [], (path, answer)
        else:
            assert status == 400 and spec.validate_error(answer) == [], (path, answer)
    # the validator does reject what the spec forbids, on both sides
    good = api.exchanges[1]
    assert spec.validate_response(good[0], {**good[3], "extra": 1})
    assert spec.validate_response("commands/status", {"state": "Success", "exception": {}})
    assert spec.validate_request("deliveries/by_id", {"organizationId": ORG, "orderIds": [1]})


def test_spec_path_is_next_to_the_repo(monkeypatch, tmp_path):
    monkeypatch.delenv(spec.SPEC_ENV, raising=False)
    assert spec.spec_path().parts[-3:] == ("shared", "provider_specs", "iiko-cloud-openapi.json")
    assert spec.spec_path().exists()
    monkeypatch.setenv(spec.SPEC_ENV, str(tmp_path / "missing.json"))
    assert spec.spec_path() == tmp_path / "missing.json"
    with pytest.raises(spec.SpecError, match=spec.SPEC_ENV):
        spec.load_spec(spec.spec_path())


def test_faults_answer_like_iiko(api):
    api.client.put("/_admin/faults", json={"force_429": 1})
    resp = api.call("deliveries/by_id", {"organizationId": ORG, "orderIds": [ORG]})
    assert_iiko_error(resp, 429)
    assert resp.headers["Retry-After"] == "1"
    api.client.put("/_admin/faults", json={"error_rate": 1.0})
    assert api.call("deliveries/by_id", {"organizationId": ORG, "orderIds": [ORG]}).status_code in (
        500,
        503,
    )
    api.client.delete("/_admin/faults")
    assert len(by_id(api, [ORG])) == 1


# ---- webhooks ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], Any]]]]:
    """A small Starlette app recording each webhook's headers and JSON body."""
    got: list[tuple[dict[str, str], Any]] = []

    async def hook(request: Request) -> Response:
        got.append((dict(request.headers), orjson.loads(await request.body())))
        return Response(orjson.dumps({"status": "OK"}), media_type="application/json")

    with running_server(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as url:
        yield f"{url}/hook", got


@pytest.fixture
def receiver(shared_receiver) -> tuple[str, list[tuple[dict[str, str], Any]]]:
    shared_receiver[1].clear()
    return shared_receiver


def test_sender_posts_event_arrays_with_the_auth_token(receiver):
    url, got = receiver
    orders = [records.make_order(i, ORG) for i in iiko.order_ids(5, seed="t")]
    events = iiko.webhook_events(orders)
    summary = iiko.send_webhooks(url, "hook-token", events, batch_size=2)
    assert summary["sent"] == 3 and summary["ok"] == 3
    assert [len(body) for _, body in got] == [2, 2, 1]
    assert {headers["authorization"] for headers, _ in got} == {"hook-token"}
    sent = [event for _, body in got for event in body]
    assert [e["eventInfo"]["id"] for e in sent] == [o["id"] for o in orders]
    for event in sent:
        assert spec.validate_webhook(event) == []
        assert datetime.strptime(event["eventTime"], STAMP) <= datetime.now(UTC).replace(
            tzinfo=None
        )
        assert event["eventInfo"]["order"]["status"] in iiko.STATUSES
    got.clear()
    bare = iiko.webhook_events(orders[:2], with_order=False)
    soi = iiko.webhook_events(orders[:2], soi=True, soi_type="CREATE")
    iiko.send_webhooks(url, "hook-token", [*bare, *soi], bearer=True)
    assert {headers["authorization"] for headers, _ in got} == {"Bearer hook-token"}
    bodies = [body for _, body in got]
    assert bodies[0]["type"] == "CREATE" and bodies[1]["type"] == "CREATE"
    assert [e["eventInfo"]["order"] for e in bodies[2]] == [None, None]
    first = bodies[0]
    assert first["orderExternalId"] == orders[0]["externalNumber"]
    assert first["iikoOrderDetails"]["iikoOrderId"] == orders[0]["id"]
    assert first["iikoOrderDetails"]["orderAmount"] == orders[0]["order"]["sum"]
    assert first["iikoOrderDetails"]["orderStatus"] == records.upper_status(
        orders[0]["order"]["status"]
    )
    assert first["transactionDetails"]["organizationId"] == ORG


def test_admin_orders_send_webhooks_to_the_registered_url(api, receiver):
    url, got = receiver
    api.ok(
        "webhooks/update_settings",
        {"organizationId": ORG, "webHooksUri": url, "authToken": "registered"},
    )
    made = admin_orders(api, count=3, send_webhooks=True, full=False)
    assert made["webhooks"]["ok"] == 1
    ((headers, body),) = got
    assert headers["authorization"] == "registered"
    assert [e["eventInfo"]["id"] for e in body] == made["ids"]
    assert all(e["eventInfo"]["order"] is None for e in body)
    got.clear()
    sent = api.client.post(
        "/_admin/webhooks/send",
        json={"organization_id": ORG, "ids": made["ids"][:2], "soi": True, "token": "other"},
    ).json()
    assert sent["ok"] == 2 and sent["events"] == 2
    assert [b["type"] for _, b in got] == ["UPDATE", "UPDATE"]
    assert {h["authorization"] for h, _ in got} == {"other"}
    bad = api.client.post(
        "/_admin/orders", json={"organization_id": OTHER_ORG, "count": 1, "send_webhooks": True}
    )
    assert bad.status_code == 400 and "webhook settings" in bad.json()["error"]
    assert api.client.post("/_admin/orders", json={"organization_id": ORG}).status_code == 400


def test_push_changes_posts_an_update_after_a_command(receiver):
    url, got = receiver
    app = iiko.create_app(
        api_login=API_LOGIN,
        command_delay=0,
        push_changes=True,
        webhook_url=url,
        auth_token="pushed",
    )
    with running_server(app) as base, httpx.Client(base_url=base, timeout=5) as client:
        api = Api(client)
        order_id = admin_orders(api, orders=[{"status": "Waiting"}])["ids"][0]
        cid = api.ok(
            "deliveries/update_order_delivery_status",
            {"organizationId": ORG, "orderId": order_id, "deliveryStatus": "OnWay"},
        )
        status = {"organizationId": ORG, "correlationId": cid["correlationId"]}
        assert api.ok("commands/status", status) == {"state": "Success"}
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
    ((headers, body),) = got
    assert headers["authorization"] == "pushed"
    assert body[0]["eventInfo"]["order"]["status"] == "OnWay"


def test_cli_iiko_webhooks(receiver):
    url, got = receiver
    runner = CliRunner()
    args = ["iiko-webhooks", "--url", url, "--token", "cli-secret", "--organization-id", ORG]
    result = runner.invoke(emulate, [*args, "--count", "4", "--batch-size", "2", "--seed", "x"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["statuses"] == {"200": 2}
    assert "cli-secret" not in result.output
    assert [len(body) for _, body in got] == [2, 2]
    assert got[0][1][0]["eventInfo"]["id"] == iiko.order_ids(1, seed="x")[0]
    got.clear()
    result = runner.invoke(emulate, [*args, "--soi"])
    assert result.exit_code == 0 and got[0][1]["type"] == "UPDATE"
    got.clear()
    result = runner.invoke(emulate, [*args, "--without-order"])
    assert result.exit_code == 0 and got[0][1][0]["eventInfo"]["order"] is None
    assert runner.invoke(emulate, [*args, "--count", "0"]).exit_code == 2


def test_cli_iiko_serves_without_printing_the_api_login():
    port, secret = free_port(), "s3cret-api-login"
    code = "from provider_emulators.cli import emulate; emulate()"
    cmd = [sys.executable, "-c", code, "iiko", "--port", str(port), "--api-login", secret,
           "--command-delay", "0", "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                resp = httpx.post(
                    f"http://127.0.0.1:{port}/api/1/access_token", json={"apiLogin": secret}
                )
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        assert resp.status_code == 200 and resp.json()["token"]
    finally:
        proc.terminate()
        output = proc.communicate(timeout=10)[0].decode()
    assert "iiko emulator" in output and secret not in output


def test_without_validation_bad_bodies_are_still_400():
    app = iiko.create_app(api_login=API_LOGIN, validate=False)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=5) as client:
        api = Api(client)
        assert_iiko_error(api.call("deliveries/by_id", {"orderIds": [ORG]}), 400)
        assert_iiko_error(api.call("deliveries/by_id", [1]), 400)
        bad_date = {"organizationIds": [ORG], "deliveryDateFrom": "yesterday"}
        assert_iiko_error(api.call("deliveries/by_delivery_date_and_status", bad_date), 400)
        assert len(by_id(api, [ORG])) == 1
