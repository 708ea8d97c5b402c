"""iiko webhooks through a real receiver (uvicorn), on SQLite and PostgreSQL.

Both routes (`/api/v1/webhooks/iiko`, integration found by its authToken, and
`/webhooks/iiko/{key}`), every token form, the seed's SOI example, Cloud API event
arrays, bodies that are not JSON (kept raw), wrong shapes (422, nothing written).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select, update

from crm_schema.integrations import Integration, add_integration
from crm_schema.providers.iiko import webhook_events
from crm_schema.tables import integrations
from tests.conftest import count_rows
from tests.receiver_fixtures import assert_error, serve_receiver, sqlite_write_lock, toggle
from webhook_receiver.providers.iiko import IikoWebhookBody

SEED_PATH = "/api/v1/webhooks/iiko"
ROWS = "webhook_events"

# Seed 001, "Пример 1", exactly as given.
SEED_EXAMPLE = """{
  "type": "CREATE",
  "orderExternalId": "20200831-515",
  "readableNumber": "515",
  "creationStatus": "OK",
  "errorInfo": null,
  "transactionDetails": {
    "correlationId": "uuid",
    "organizationId": "org-uuid"
  },
  "iikoOrderDetails": {
    "iikoOrderId": "iiko-uuid",
    "iikoOrderNumber": "51",
    "restaurantName": "Ресторан №1",
    "orderType": "DELIVERY",
    "orderStatus": "COOKING_STARTED",
    "receivedAt": "2020-08-31T16:23:31+01:00",
    "promisedTime": "2020-08-31T18:08:31+01:00",
    "problem": null,
    "orderAmount": 1520.50
  }
}""".encode()
JSON = {"content-type": "application/json"}


def add_iiko(engine: Engine, name: str, token: str | None) -> Integration:
    """An active iiko integration whose webhook token is ``token``."""
    with engine.begin() as conn:
        return add_integration(
            conn,
            provider="iiko",
            name=name,
            integration_uuid=None,
            api_base_url="http://iiko.invalid",
            credentials={"api_login": f"login-{name}"},
            settings={"organization_ids": [f"org-{name}"]},
            webhook_secret=token,
        )


def rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(select(webhook_events).order_by(webhook_events.c.id)).all()


def aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def payload_of(row: Any) -> Any:
    return json.loads(row.payload) if isinstance(row.payload, str) else row.payload


def cloud_event(event_type: str, order_id: str | None = None, **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "eventType": event_type,
        "eventTime": "2019-08-24 14:15:22.123",
        "organizationId": "7bc05553-4b68-44e8-b7bc-37be63c6d9e9",
        "correlationId": "f3d8f7b4-2d5e-4c51-8a4f-1c7c2f7e9a10",
        "eventInfo": {
            "id": order_id,
            "externalNumber": f"ext-{order_id}",
            "organizationId": "7bc05553-4b68-44e8-b7bc-37be63c6d9e9",
            "timestamp": 1566656122123,
            "creationStatus": "Success",
            "errorInfo": None,
            "order": {"status": "CookingStarted", "number": 7, "sum": 1520.5},
        },
    }
    event.update(extra)
    return event


@pytest.fixture
def iiko(engine: Engine) -> dict[str, Integration]:
    a = add_iiko(engine, "alpha", "token-alpha-0123456789")
    b = add_iiko(engine, "beta", "token-beta-0123456789")
    off = add_iiko(engine, "off", "token-off-0123456789")
    toggle(engine, off, False)
    return {"a": a, "b": b, "off": off}


def test_seed_example_and_every_token_form(
    database_url: str, engine: Engine, iiko: dict[str, Integration]
) -> None:
    a, b, off = iiko["a"], iiko["b"], iiko["off"]
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        before = datetime.now(UTC)
        resp = client.post(
            SEED_PATH, content=SEED_EXAMPLE, headers=JSON | {"Authorization": a.webhook_secret}
        )
        after = datetime.now(UTC)
        assert resp.status_code == 200, resp.text
        # Committed before the answer: another connection sees the row it names now.
        (row,) = rows(engine)
        assert resp.json() == {"status": "OK", "ids": [row.id]}
        assert row.integration_id == a.id
        assert row.event_type == "CREATE"
        assert row.order_external_id == "20200831-515"
        assert row.iiko_order_id == "iiko-uuid"
        assert row.organization_id == "org-uuid"
        assert row.correlation_id == "uuid"
        assert row.event_time is None
        assert row.raw_body is None and row.processing_error is None and row.processed_at is None
        assert payload_of(row)["iikoOrderDetails"]["orderAmount"] == 1520.5
        assert payload_of(row)["iikoOrderDetails"]["restaurantName"] == "Ресторан №1"
        margin = timedelta(milliseconds=5)
        assert before - margin <= aware(row.received_at) <= after + margin

        # `Bearer`, any case of the scheme; the authToken header; the key route.
        forms = [
            (SEED_PATH, {"Authorization": f"Bearer {b.webhook_secret}"}, b.id),
            (SEED_PATH, {"Authorization": f"bearer   {a.webhook_secret}"}, a.id),
            (SEED_PATH, {"authToken": b.webhook_secret}, b.id),
            (a.webhook_path, {"Authorization": f"Bearer {a.webhook_secret}"}, a.id),
            (b.webhook_path, {"authToken": b.webhook_secret}, b.id),
            (b.webhook_path, {"Authorization": b.webhook_secret}, b.id),
        ]
        for path, headers, expected in forms:
            resp = client.post(
                path, json=[cloud_event("DeliveryOrderUpdate", "o-1")], headers=headers
            )
            assert resp.status_code == 200, (path, headers, resp.text)
            assert rows(engine)[-1].integration_id == expected
        assert count_rows(engine, ROWS) == 1 + len(forms)

        # Wrong, missing, another integration's, a disabled integration's: 401, no row.
        refused = [
            (SEED_PATH, {}),
            (SEED_PATH, {"Authorization": "Bearer"}),
            (SEED_PATH, {"Authorization": "Bearer wrong-token-0123456789"}),
            (SEED_PATH, {"authToken": a.webhook_secret[:-1]}),
            (SEED_PATH, {"Authorization": off.webhook_secret}),
            (a.webhook_path, {"Authorization": b.webhook_secret}),
            (a.webhook_path, {}),
            (a.webhook_path, {"authToken": a.webhook_secret + "x"}),
        ]
        for path, headers in refused:
            body = assert_error(
                client.post(path, content=SEED_EXAMPLE, headers=JSON | headers), 401
            )
            assert "token" in body["error"].lower()
            assert a.webhook_secret not in str(body)
        # Unknown and disabled keys are 404s (before the token is looked at).
        assert_error(
            client.post(
                "/webhooks/iiko/no-such-key", content=SEED_EXAMPLE, headers={"authToken": "x"}
            ),
            404,
        )
        assert_error(
            client.post(
                off.webhook_path, content=SEED_EXAMPLE, headers={"authToken": off.webhook_secret}
            ),
            404,
        )
    assert count_rows(engine, ROWS) == 1 + len(forms)


def test_event_arrays_one_row_per_event(
    database_url: str, engine: Engine, iiko: dict[str, Integration]
) -> None:
    a = iiko["a"]
    auth = {"Authorization": f"Bearer {a.webhook_secret}"}
    events = [
        cloud_event("DeliveryOrderUpdate", "5d5a3fbd-0000-4000-8000-000000000001"),
        {
            "eventType": "StopListUpdate",
            "eventTime": "2019-08-24 14:15:23.000",
            "organizationId": "org-1",
            "correlationId": "corr-2",
            "eventInfo": {"terminalGroupsStopListsUpdates": [{"id": "tg-1", "isFull": False}]},
        },
        {"eventType": "SomethingNew", "eventInfo": {"id": "not-an-order"}, "extra": [1, 2]},
    ]
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        resp = client.post(SEED_PATH, json=events, headers=auth)
        assert resp.status_code == 200, resp.text
        stored = rows(engine)
        assert resp.json() == {"status": "OK", "ids": [r.id for r in stored]}
        assert [r.event_type for r in stored] == [
            "DeliveryOrderUpdate",
            "StopListUpdate",
            "SomethingNew",
        ]
        first, stop, unknown = stored
        assert first.iiko_order_id == "5d5a3fbd-0000-4000-8000-000000000001"
        assert first.order_external_id == "ext-5d5a3fbd-0000-4000-8000-000000000001"
        assert first.organization_id == "7bc05553-4b68-44e8-b7bc-37be63c6d9e9"
        assert first.correlation_id == "f3d8f7b4-2d5e-4c51-8a4f-1c7c2f7e9a10"
        assert aware(first.event_time) == datetime(2019, 8, 24, 14, 15, 22, 123000, tzinfo=UTC)
        assert payload_of(first) == events[0]
        assert stop.iiko_order_id is None and stop.organization_id == "org-1"
        # Not an order event: its eventInfo id is not taken for an order id.
        assert unknown.iiko_order_id is None and unknown.event_time is None
        assert payload_of(unknown) == events[2]
        assert all(r.integration_id == a.id and r.processing_error is None for r in stored)

        # An empty array: nothing to store, still OK. One event without its array: one row.
        assert client.post(SEED_PATH, json=[], headers=auth).json() == {"status": "OK", "ids": []}
        assert count_rows(engine, ROWS) == 3
        single = cloud_event("DeliveryOrderError", "o-9", eventTime="2020-01-02T03:04:05Z")
        resp = client.post(a.webhook_path, json=single, headers=auth)
        assert resp.status_code == 200, resp.text
        last = rows(engine)[-1]
        assert (last.event_type, last.iiko_order_id) == ("DeliveryOrderError", "o-9")
        assert aware(last.event_time) == datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)

        # Fifty events in one request: fifty rows, one answer.
        batch = [cloud_event("DeliveryOrderUpdate", f"o-{i}") for i in range(50)]
        assert client.post(SEED_PATH, json=batch, headers=auth).status_code == 200
    assert count_rows(engine, ROWS) == 54


def test_body_that_is_not_json_is_kept_raw(
    database_url: str, engine: Engine, iiko: dict[str, Integration]
) -> None:
    a = iiko["a"]
    auth = {"authToken": a.webhook_secret}
    bodies = [b"{not json", b"", b"\xff\xfe{\x00", b"base64:abc", b"[1e999]"]
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        for content in bodies:
            resp = client.post(SEED_PATH, content=content, headers=JSON | auth)
            assert resp.status_code == 200, resp.text
            assert resp.json()["status"] == "ignored"
            assert resp.json()["ids"] == [rows(engine)[-1].id]
        # Not authenticated: refused before the body is looked at.
        assert_error(client.post(SEED_PATH, content=b"{oops", headers=JSON), 401)
    stored = rows(engine)
    assert len(stored) == len(bodies)
    for row, sent in zip(stored, bodies, strict=True):
        assert row.integration_id == a.id
        assert row.event_type is None and row.payload is None and row.processed_at is None
        assert row.processing_error.startswith("body is not valid JSON: ")
        assert len(row.processing_error) < 300
        raw = row.raw_body
        kept = (
            base64.b64decode(raw.removeprefix("base64:"))
            if raw.startswith("base64:")
            else raw.encode()
        )
        assert kept == sent  # losslessly, whatever the bytes
    assert stored[0].raw_body == "{not json"
    assert stored[2].raw_body.startswith("base64:")  # not UTF-8
    assert stored[3].raw_body.startswith("base64:")  # text that looks encoded is encoded


# (body, the fields a 422 names)
WRONG_SHAPES: list[tuple[Any, set[str]]] = [
    ("just a string", {"body"}),
    (42, {"body"}),
    (None, {"body"}),
    ({"hello": "world"}, {"body"}),
    ([1, "x"], {"[0]", "[1]"}),
    ([{"eventTime": "2019-08-24 14:15:22.123"}], {"[0].eventType"}),
    ([cloud_event("DeliveryOrderUpdate", "o"), {"eventType": ""}], {"[1].eventType"}),
    ([{"eventType": 5, "organizationId": 7}], {"[0].eventType", "[0].organizationId"}),
    ([{"eventType": "X", "eventTime": "yesterday"}], {"[0].eventTime"}),
    ([{"eventType": "X", "eventTime": 1566656122}], {"[0].eventTime"}),
    ([{"eventType": "X", "eventInfo": "text"}], {"[0].eventInfo"}),
    ([{"eventType": "X" * 65}], {"[0].eventType"}),
    ([{"eventType": "A\u0000B"}], {"[0].eventType"}),
    ([cloud_event("DeliveryOrderUpdate", None) | {"eventInfo": {"id": 12}}], {"[0].eventInfo.id"}),
    ({"type": "DELETE"}, {"type"}),
    ({"type": "CREATE", "orderExternalId": 515}, {"orderExternalId"}),
    ({"type": "UPDATE", "transactionDetails": []}, {"transactionDetails"}),
    (
        {"type": "UPDATE", "iikoOrderDetails": {"iikoOrderId": ["x"], "orderAmount": "lots"}},
        {"iikoOrderDetails.iikoOrderId", "iikoOrderDetails.orderAmount"},
    ),
]


def test_wrong_shapes_422_nothing_written(
    database_url: str, engine: Engine, iiko: dict[str, Integration]
) -> None:
    a = iiko["a"]
    auth = {"Authorization": a.webhook_secret}
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        for body, fields in WRONG_SHAPES:
            content = json.dumps(body).encode()
            resp = client.post(SEED_PATH, content=content, headers=JSON | auth)
            answer = assert_error(resp, 422)
            assert {f["field"] for f in answer["fields"]} == fields, (body, answer)
            assert all(f["error"] for f in answer["fields"])
        # Deeper than can be stored as JSON: a 422, never a 500.
        deep = b'[{"eventType": "X", "eventInfo": {"a": ' + b"[" * 300 + b"]" * 300 + b"}}]"
        resp = client.post(SEED_PATH, content=deep, headers=JSON | auth)
        assert "nested too deeply" in assert_error(resp, 422)["error"]
        # A body partly right is refused whole: the good event is not stored either.
        assert count_rows(engine, ROWS) == 0


def test_limits_and_content_type(
    database_url: str, engine: Engine, iiko: dict[str, Integration]
) -> None:
    a = iiko["a"]
    auth = {"Authorization": a.webhook_secret}
    with (
        serve_receiver(database_url, max_body_bytes=2048) as base,
        httpx.Client(base_url=base) as client,
    ):
        big = [cloud_event("DeliveryOrderUpdate", f"o-{i}") for i in range(20)]
        assert_error(client.post(SEED_PATH, json=big, headers=auth), 413)
        assert_error(
            client.post(
                SEED_PATH, content=SEED_EXAMPLE, headers=auth | {"content-type": "text/plain"}
            ),
            415,
        )
        assert_error(client.get(SEED_PATH, headers=auth), 405)
        # No Content-Type at all is read as JSON.
        assert client.post(SEED_PATH, content=SEED_EXAMPLE, headers=auth).status_code == 200
    assert count_rows(engine, ROWS) == 1


def test_shared_token_is_refused_on_the_seed_path_only(database_url: str, engine: Engine) -> None:
    one = add_iiko(engine, "one", "shared-token-0123456789")
    two = add_iiko(engine, "two", "other-token-0123456789")
    # `integrations add` refuses a token in use; an edit in the database can still share one.
    with engine.begin() as conn:
        conn.execute(
            update(integrations)
            .where(integrations.c.id == two.id)
            .values(webhook_secret="shared-token-0123456789")
        )
    auth = {"authToken": "shared-token-0123456789"}
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        assert (
            "several" in assert_error(client.post(SEED_PATH, json=[], headers=auth), 409)["error"]
        )
        for integ in (one, two):
            resp = client.post(integ.webhook_path, content=SEED_EXAMPLE, headers=auth)
            assert resp.status_code == 200, resp.text
    assert [r.integration_id for r in rows(engine)] == [one.id, two.id]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_database_that_cannot_commit_503_and_no_row(
    database_url: str, engine: Engine, iiko: dict[str, Integration]
) -> None:
    a = iiko["a"]
    auth = {"Authorization": a.webhook_secret}
    events = [cloud_event("DeliveryOrderUpdate", f"o-{i}") for i in range(3)]
    with (
        serve_receiver(database_url, sqlite_busy_timeout_ms=300) as base,
        httpx.Client(base_url=base, timeout=10) as client,
    ):
        with sqlite_write_lock(database_url):
            resp = client.post(SEED_PATH, json=events, headers=auth)
            assert_error(resp, 503)
            assert resp.headers["retry-after"]
        assert count_rows(engine, ROWS) == 0
        assert client.post(SEED_PATH, json=events, headers=auth).status_code == 200
    assert count_rows(engine, ROWS) == 3


def test_openapi_documents_both_routes(database_url: str, engine: Engine) -> None:
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        doc = client.get("/openapi.json").json()
    for path in (SEED_PATH, "/webhooks/iiko/{webhook_key}"):
        post = doc["paths"][path]["post"]
        ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        name = ref.rsplit("/", 1)[1]
        expected = IikoWebhookBody.model_json_schema(ref_template="#/components/schemas/{model}")
        defs = expected.pop("$defs")
        assert doc["components"]["schemas"][name] == expected
        assert all(doc["components"]["schemas"][k] == v for k, v in defs.items())
        for status in ("200", "401", "413", "415", "422", "503"):
            assert status in post["responses"], (path, status)
    schemas = doc["components"]["schemas"]
    assert {"IikoCloudEvent", "IikoSoiEvent", "IikoOrderInfo"} <= set(schemas)
    assert schemas["IikoSoiEvent"]["properties"]["type"]["enum"] == ["CREATE", "UPDATE"]
    # The documented SOI example is the seed's.
    assert IikoWebhookBody.model_validate_json(SEED_EXAMPLE)
