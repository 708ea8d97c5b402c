"""amoCRM webhooks through a real receiver (uvicorn), on SQLite and PostgreSQL.

RDESK booked / mc arrays on the key routes and on the seed's `/zdrav/*` paths (key in a
header, in the query, or a source address in the integration's ip_allowlist), bodies
that are not an array of objects (nothing written), and amoCRM's form-encoded contact
webhooks (one row per contact per action; other entities ignored).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import Engine, select, update

from crm_schema.integrations import Integration, add_integration
from crm_schema.providers.amocrm import amocrm_inbox
from crm_schema.tables import integrations
from tests.conftest import count_rows
from tests.receiver_fixtures import assert_error, serve_receiver, sqlite_write_lock, toggle
from webhook_receiver.providers.amocrm import RdeskBooked, RdeskMc

ROWS = "amocrm_inbox"
FORM = {"content-type": "application/x-www-form-urlencoded"}
# Integrations are re-read this often, so a settings change shows within the test.
REFRESH = 0.2

BOOKED = {
    "status": "booked",
    "bookedAt": "2022-09-05T11:22:33.000Z",
    "name": "Фамилия1 Имя1 Отчество1",
    "phone": "79123123123",
    "email": "mail@example.ru",
    "checkin": "2026-08-25",
    "checkout": "2026-09-05",
    "money": {"total": 153887, "paid": 61361},
    "id": 88888,
    "lead_id": "32129421",
    "docNum": 33333,
    "billData": [{"billNum": "77777", "billSum": "147966.3", "billPaidSum": "59000"}],
    "extData": {
        "guests": [
            {
                "fio": "Фамилия1 Имя1 Отчество2",
                "birthday": "",
                "stayCount": 1,
                "roomCategory": "Стандарт без балкона",
                "ageGroup": "Взрослый",
                "cure": "Лечение суставов и позвоночника",
                "uid": "3E024545345345HHD345345345SDF001",
                "billNum": "77777",
            }
        ]
    },
}
MC = {
    "id": 501,
    "lead_id": 32129422,
    "name": "Иванов Иван",
    "createdAt": "2025-03-01T10:00:00",
    "birthday": "1980-01-02",
    "status": "active",
    "treatments": [
        {
            "item_id": 1,
            "action": "Массаж",
            "status": "set",
            "visit_date": "2025-03-02T09:30:00",
            "pay": True,
            "price": 1500,
            "paid": False,
        }
    ],
    "labs": [],
    "packets": [],
    "complex": [],
}


def add_amocrm(engine: Engine, name: str, allowlist: list[str] | None = None) -> Integration:
    """An active amoCRM integration (as `integrations add` leaves it, tokens aside)."""
    settings: dict[str, Any] = {"subdomain": name, "client_id": f"id-{name}"}
    if allowlist is not None:
        settings["ip_allowlist"] = allowlist
    with engine.begin() as conn:
        return add_integration(
            conn,
            provider="amocrm",
            name=name,
            integration_uuid=None,
            api_base_url="http://amocrm.invalid",
            credentials={"client_secret": f"secret-{name}-0123456789"},
            settings=settings,
        )


def set_allowlist(engine: Engine, integ: Integration, allowlist: list[str]) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(integrations)
            .where(integrations.c.id == integ.id)
            .values(settings={"subdomain": integ.name, "ip_allowlist": allowlist})
        )


def rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(select(amocrm_inbox).order_by(amocrm_inbox.c.id)).all()


def payload_of(row: Any) -> Any:
    return json.loads(row.payload) if isinstance(row.payload, str) else row.payload


def aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def rdesk(integ: Integration, source: str) -> str:
    return f"/webhooks/rdesk/{integ.webhook_key}/{source}"


def eventually(check: Any, seconds: float = 5.0) -> Any:
    """Retry ``check`` (a receiver that re-reads integrations) until it returns truthy."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def test_booked_and_mc_arrays_one_row_per_element(database_url: str, engine: Engine) -> None:
    a = add_amocrm(engine, "alpha")
    second = BOOKED | {"id": 88889, "lead_id": "32129499", "status": "checkin"}
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        before = datetime.now(UTC)
        resp = client.post(rdesk(a, "booked"), json=[BOOKED, second])
        assert resp.status_code == 200, resp.text
        stored = rows(engine)
        # Committed before the answer: another connection sees the rows it names.
        assert resp.json() == {"status": "ok", "ids": [r.id for r in stored]}
        assert [(r.source, r.external_id, r.rdesk_id) for r in stored] == [
            ("booked", "32129421", "88888"),
            ("booked", "32129499", "88889"),
        ]
        assert [payload_of(r) for r in stored] == [BOOKED, second]
        assert all(r.integration_id == a.id and r.action is None for r in stored)
        assert all(r.processed_at is None for r in stored)
        margin = timedelta(milliseconds=5)
        assert all(before - margin <= aware(r.received_at) for r in stored)

        # mc: lead_id is a number, kept as its digits.
        resp = client.post(rdesk(a, "mc"), json=[MC])
        assert resp.status_code == 200, resp.text
        last = rows(engine)[-1]
        assert resp.json()["ids"] == [last.id]
        assert (last.source, last.external_id, last.rdesk_id) == ("mc", "32129422", "501")
        assert payload_of(last) == MC

        # Fields are not checked here (the sync does, per element): a wrong lead_id or no
        # id is stored all the same, its columns empty.
        odd = [{"lead_id": ["x"], "note": 1}, {"id": True, "lead_id": "x" * 65}, {"id": "a\x00"}]
        resp = client.post(rdesk(a, "booked"), json=odd)
        assert resp.status_code == 200, resp.text
        assert [(r.external_id, r.rdesk_id) for r in rows(engine)[-3:]] == [(None, None)] * 3
        assert [payload_of(r) for r in rows(engine)[-3:]] == odd

        # An empty array: nothing to store, still ok. No Content-Type is read as JSON.
        assert client.post(rdesk(a, "mc"), json=[]).json() == {"status": "ok", "ids": []}
        resp = client.post(rdesk(a, "mc"), content=json.dumps([MC]).encode())
        assert resp.status_code == 200, resp.text
    assert count_rows(engine, ROWS) == 7
    # The documented element models take the PROVIDERS.md shapes.
    RdeskBooked.model_validate(BOOKED)
    RdeskMc.model_validate(MC)


def test_seed_paths_by_header_query_and_ip_allowlist(database_url: str, engine: Engine) -> None:
    local = add_amocrm(engine, "local", ["127.0.0.1/32"])
    other = add_amocrm(engine, "other", ["10.0.0.0/8", "not-a-network"])
    off = add_amocrm(engine, "off")
    toggle(engine, off, False)
    body = [MC]
    with (
        serve_receiver(database_url, integrations_refresh_seconds=REFRESH) as base,
        httpx.Client(base_url=base) as client,
    ):
        accepted = [
            ("/zdrav/mc", {"X-Webhook-Key": other.webhook_key}, {}, other.id),
            ("/zdrav/booked", {}, {"key": other.webhook_key}, other.id),
            (
                "/zdrav/mc",
                {"X-Webhook-Key": other.webhook_key},
                {"key": other.webhook_key},
                other.id,
            ),
            # No key: the peer (127.0.0.1) is in `local`'s allowlist; X-Forwarded-For is
            # not trusted, whatever it says.
            ("/zdrav/booked", {}, {}, local.id),
            ("/zdrav/mc", {"X-Forwarded-For": "10.1.2.3"}, {}, local.id),
        ]
        for path, headers, params, expected in accepted:
            resp = client.post(path, json=body, headers=headers, params=params)
            assert resp.status_code == 200, (path, headers, params, resp.text)
            last = rows(engine)[-1]
            assert resp.json()["ids"] == [last.id]
            assert (last.integration_id, last.source) == (expected, path.rsplit("/", 1)[1])
        written = len(accepted)

        # Wrong, disabled or conflicting keys: refused, nothing written.
        refused = [
            ({"X-Webhook-Key": "no-such-key"}, {}, 404),
            ({}, {"key": "no-such-key"}, 404),
            ({}, {"key": ""}, 404),
            ({"X-Webhook-Key": off.webhook_key}, {}, 404),
            ({"X-Webhook-Key": local.webhook_key}, {"key": other.webhook_key}, 401),
        ]
        for headers, params, status in refused:
            resp = client.post("/zdrav/booked", json=body, headers=headers, params=params)
            answer = assert_error(resp, status)
            assert local.webhook_key not in str(answer) and other.webhook_key not in str(answer)
        assert count_rows(engine, ROWS) == written

        # 127.0.0.1 no longer allowed: no key → 401 (X-Forwarded-For does not help).
        set_allowlist(engine, local, ["192.0.2.0/24"])
        # An empty array as the probe: accepted until the change is seen, never a row.
        assert eventually(lambda: client.post("/zdrav/mc", json=[]).status_code == 401)
        for headers in ({}, {"X-Forwarded-For": "192.0.2.7"}, {"X-Real-IP": "192.0.2.7"}):
            assert_error(client.post("/zdrav/mc", json=body, headers=headers), 401)
        assert count_rows(engine, ROWS) == written
        # A key still works from anywhere.
        resp = client.post("/zdrav/mc", json=body, params={"key": local.webhook_key})
        assert resp.status_code == 200, resp.text

        # Allowed by two integrations: which one is meant cannot be told.
        set_allowlist(engine, local, ["127.0.0.0/8"])
        set_allowlist(engine, other, ["::ffff:127.0.0.1/128", "127.0.0.1"])
        assert eventually(lambda: client.post("/zdrav/mc", json=[]).status_code == 409)
    assert count_rows(engine, ROWS) == written + 1


def test_bodies_that_are_not_arrays_of_objects(database_url: str, engine: Engine) -> None:
    a = add_amocrm(engine, "alpha")
    url = rdesk(a, "booked")
    json_type = {"content-type": "application/json"}
    with (
        serve_receiver(database_url, max_body_bytes=4096) as base,
        httpx.Client(base_url=base) as client,
    ):
        for content in (b"{not json", b"", b"\xff\xfe", b"[1e999]"):
            assert (
                "JSON"
                in assert_error(client.post(url, content=content, headers=json_type), 400)["error"]
            )
        for value in ({"id": 1}, "text", 42, None):
            content = json.dumps(value).encode()
            answer = assert_error(client.post(url, content=content, headers=json_type), 400)
            assert "array" in answer["error"]
        answer = assert_error(client.post(url, json=[1, BOOKED, "x", [], None]), 422)
        assert [f["field"] for f in answer["fields"]] == ["[0]", "[2]", "[3]", "[4]"]
        assert all(f["error"].startswith("must be an object") for f in answer["fields"])
        assert "[0]" in answer["error"]
        deep = b'[{"a": ' + b"[" * 300 + b"]" * 300 + b"}]"
        assert (
            "nested too deeply"
            in assert_error(client.post(url, content=deep, headers=json_type), 422)["error"]
        )
        assert_error(client.post(url, json=[BOOKED] * 10), 413)
        assert_error(client.post(url, content=b"[]", headers={"content-type": "text/plain"}), 415)
        assert_error(client.get(url), 405)
        assert_error(client.post("/webhooks/rdesk/no-such-key/booked", json=[BOOKED]), 404)
        assert_error(client.post(f"/webhooks/rdesk/{a.webhook_key}/other", json=[]), 404)
    assert count_rows(engine, ROWS) == 0


def contact_form(**groups: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """amoCRM's form fields for contacts grouped by action, plus the account."""
    fields: list[tuple[str, str]] = []
    for action, contacts in groups.items():
        for i, contact in enumerate(contacts):
            for name, value in contact.items():
                fields.append((f"contacts[{action}][{i}][{name}]", str(value)))
    return fields + [("account[subdomain]", "clinic"), ("account[id]", "29085955")]


def test_contact_webhooks_one_row_per_contact_and_action(database_url: str, engine: Engine) -> None:
    a = add_amocrm(engine, "alpha")
    url = f"/webhooks/amocrm/{a.webhook_key}"
    fields = contact_form(
        add=[{"id": 111, "name": "Анна Петрова"}, {"id": 112, "name": "B"}],
        update=[{"id": 113, "name": "C", "type": "contact"}],
        delete=[{"id": 114, "type": "contact"}],
    ) + [
        ("contacts[update][0][custom_fields][0][id]", "1001"),
        ("contacts[update][0][custom_fields][0][code]", "PHONE"),
        ("contacts[update][0][custom_fields][0][values][0][value]", "+7 912 000-00-01"),
        ("contacts[update][0][custom_fields][0][values][0][enum]", "WORK"),
        ("contacts[update][0][custom_fields][0][values][1][value]", "+7 912 000-00-02"),
        ("leads[status][0][id]", "555"),
    ]
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        started = time.monotonic()
        resp = client.post(url, content=urlencode(fields).encode(), headers=FORM)
        assert time.monotonic() - started < 2.0  # amoCRM gives up after 2 s
        assert resp.status_code == 200, resp.text
        stored = rows(engine)
        assert resp.json() == {"status": "ok", "ids": [r.id for r in stored]}
        assert [(r.source, r.action, r.external_id, r.rdesk_id) for r in stored] == [
            ("contacts", "add", "111", None),
            ("contacts", "add", "112", None),
            ("contacts", "update", "113", None),
            ("contacts", "delete", "114", None),
        ]
        account = {"subdomain": "clinic", "id": "29085955"}
        assert payload_of(stored[0]) == {
            "contact": {"id": "111", "name": "Анна Петрова"},
            "account": account,
        }
        assert payload_of(stored[2])["contact"]["custom_fields"] == [
            {
                "id": "1001",
                "code": "PHONE",
                "values": [
                    {"value": "+7 912 000-00-01", "enum": "WORK"},
                    {"value": "+7 912 000-00-02"},
                ],
            }
        ]
        assert all(r.integration_id == a.id for r in stored)

        # Only other entities: accepted, nothing stored. An empty form too.
        leads_only = urlencode([("leads[add][0][id]", "1"), ("account[subdomain]", "clinic")])
        assert client.post(url, content=leads_only.encode(), headers=FORM).json() == {
            "status": "ok",
            "ids": [],
        }
        assert client.post(url, content=b"", headers=FORM).json()["ids"] == []
        # The same nested shape as JSON; a form Content-Type with a charset.
        resp = client.post(url, json={"contacts": {"restore": [{"id": 115}]}, "account": account})
        assert resp.status_code == 200, resp.text
        resp = client.post(
            url,
            content=urlencode(contact_form(status=[{"id": 116}])).encode(),
            headers={"content-type": "application/x-www-form-urlencoded; charset=UTF-8"},
        )
        assert resp.status_code == 200, resp.text
        assert [(r.action, r.external_id) for r in rows(engine)[-2:]] == [
            ("restore", "115"),
            ("status", "116"),
        ]
        written = count_rows(engine, ROWS)

        # A contact without an id (or with a bad one) refuses the whole webhook.
        bad = [
            (contact_form(add=[{"id": 1}, {"name": "no id"}]), ["contacts[add][1][id]"]),
            (contact_form(update=[{"id": "abc"}]), ["contacts[update][0][id]"]),
            ([("contacts[add]", "x")], ["contacts[add]"]),
            ([("contacts[add][0]", "x")], ["contacts[add][0]"]),
            ([("contacts[add][0][id]", "1"), ("contacts[add][0]", "x")], ["contacts[add][0]"]),
        ]
        for form, names in bad:
            answer = assert_error(client.post(url, content=urlencode(form), headers=FORM), 422)
            assert [f["field"] for f in answer["fields"]] == names, answer
        deep = "contacts[add][0][id]=1&" + "x" + "[a]" * 40 + "=1"
        assert_error(client.post(url, content=deep.encode(), headers=FORM), 422)
        assert_error(client.post(url, content=b"%ff=1", headers=FORM), 400)
        assert_error(client.post(url, content=b"id=1", headers={"content-type": "text/plain"}), 415)
        assert_error(
            client.post(url, content=b"[1]", headers={"content-type": "application/json"}), 400
        )
        assert_error(client.post("/webhooks/amocrm/no-such-key", content=b"a=1", headers=FORM), 404)
    assert count_rows(engine, ROWS) == written


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_database_that_cannot_commit_503_and_no_row(database_url: str, engine: Engine) -> None:
    a = add_amocrm(engine, "alpha")
    with (
        serve_receiver(database_url, sqlite_busy_timeout_ms=300) as base,
        httpx.Client(base_url=base, timeout=10) as client,
    ):
        with sqlite_write_lock(database_url):
            resp = client.post(rdesk(a, "booked"), json=[BOOKED, BOOKED])
            assert_error(resp, 503)
            assert resp.headers["retry-after"]
        assert count_rows(engine, ROWS) == 0
        assert client.post(rdesk(a, "booked"), json=[BOOKED, BOOKED]).status_code == 200
    assert count_rows(engine, ROWS) == 2


def test_openapi_lists_the_routes(database_url: str, engine: Engine) -> None:
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    for source, model in (("booked", "RdeskBooked"), ("mc", "RdeskMc")):
        for path in (f"/webhooks/rdesk/{{webhook_key}}/{source}", f"/zdrav/{source}"):
            post = paths[path]["post"]
            ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            array = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
            assert array["type"] == "array"
            assert array["items"]["$ref"].endswith(f"/{model}")
            for status in ("200", "400", "404", "413", "415", "422", "503"):
                assert status in post["responses"], (path, status)
        seed = paths[f"/zdrav/{source}"]["post"]
        assert {(p["name"], p["in"]) for p in seed["parameters"]} == {
            ("key", "query"),
            ("X-Webhook-Key", "header"),
        }
        assert {"401", "409"} <= set(seed["responses"])
    schemas = doc["components"]["schemas"]
    assert "lead_id" in schemas["RdeskBooked"]["required"]
    assert schemas["RdeskBooked"]["properties"]["lead_id"]["type"] == "string"
    assert schemas["RdeskMc"]["properties"]["lead_id"]["type"] == "integer"
    contacts = paths["/webhooks/amocrm/{webhook_key}"]["post"]
    content = contacts["requestBody"]["content"]
    assert {"application/x-www-form-urlencoded", "application/json"} <= set(content)
    form = schemas["AmocrmContactWebhookForm"]
    assert "contacts[add][0][id]" in form["properties"]
    assert contacts["parameters"][0]["name"] == "webhook_key"
    assert "get" in paths["/oauth/amocrm/callback"]
