"""amoCRM emulator over real HTTP: OAuth, leads, contacts, HAL pages, quota and IP block,
admin routes, and the contact-webhook and RDESK senders."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from urllib.parse import parse_qsl

import httpx
import orjson
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from provider_emulators import amocrm
from provider_emulators.amocrm import records
from provider_emulators.cli import emulate
from provider_emulators.testing import free_port, running_server

CLIENT = {
    "client_id": amocrm.DEFAULT_CLIENT_ID,
    "client_secret": amocrm.DEFAULT_CLIENT_SECRET,
    "redirect_uri": amocrm.DEFAULT_REDIRECT_URI,
}
LONG_LIVED = "long-lived-test-token"
PROBLEM = "application/problem+json"
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture(scope="module")
def shared_emu() -> Iterator[tuple[Starlette, str]]:
    app = amocrm.create_app(long_lived_token=LONG_LIVED, quota=None)
    with running_server(app) as url:
        yield app, url


@pytest.fixture
def emu(shared_emu) -> Iterator[tuple[Starlette, httpx.Client]]:
    """The emulator without quota (state reset) and a client with the long-lived token."""
    app, url = shared_emu
    app.state.emulator.log.clear()
    app.state.emulator.faults.clear()
    app.state.leads.reset()
    app.state.leads.leads_exist = False
    app.state.contacts.reset()
    headers = {"Authorization": f"Bearer {LONG_LIVED}"}
    with httpx.Client(base_url=url, headers=headers, timeout=5) as client:
        yield app, client


def grant(client: httpx.Client, **fields: str) -> httpx.Response:
    return client.post("/oauth2/access_token", json={**CLIENT, **fields})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---- OAuth ------------------------------------------------------------------------------


def test_code_exchange_json_and_form(emu):
    _, client = emu
    resp = grant(client, grant_type="authorization_code", code="code-abc")
    assert resp.status_code == 200, resp.text
    pair = resp.json()
    assert pair["token_type"] == "Bearer" and pair["expires_in"] == 86_400
    assert pair["access_token"] != pair["refresh_token"]
    form = {**CLIENT, "grant_type": "authorization_code", "code": "code-abc"}
    resp = client.post("/oauth2/access_token", data=form)  # form-encoded, same code again
    assert resp.status_code == 200
    got = client.get("/api/v4/leads", headers=bearer(resp.json()["access_token"]))
    assert got.status_code == 204  # authorised; no leads yet


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"code": "nope"}, 400),
        ({"code": "code-x", "client_secret": "wrong"}, 401),
        ({"code": "code-x", "client_id": "other"}, 401),
        ({"code": "code-x", "redirect_uri": "http://elsewhere/cb"}, 400),
        ({"code": "code-x", "grant_type": "password"}, 400),
    ],
)
def test_code_exchange_refusals(emu, fields, status):
    _, client = emu
    resp = grant(client, **{"grant_type": "authorization_code", **fields})
    assert resp.status_code == status
    assert resp.headers["content-type"] == PROBLEM
    body = resp.json()
    assert body["status"] == status and body["hint"]
    assert "wrong" not in resp.text and amocrm.DEFAULT_CLIENT_SECRET not in resp.text


def test_single_use_codes_option():
    app = amocrm.create_app(single_use_codes=True, quota=None)
    with running_server(app) as url, httpx.Client(base_url=url) as client:
        assert grant(client, grant_type="authorization_code", code="code-1").status_code == 200
        assert grant(client, grant_type="authorization_code", code="code-1").status_code == 400


def test_refresh_is_single_use(emu):
    app, client = emu
    first = grant(client, grant_type="authorization_code", code="code-r").json()
    second = grant(client, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert second.status_code == 200
    pair = second.json()
    assert pair["refresh_token"] != first["refresh_token"]
    reused = grant(client, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert reused.status_code == 401
    assert reused.headers["content-type"] == PROBLEM
    assert reused.json()["hint"] == "Token has been revoked"
    assert first["refresh_token"] not in reused.text
    ok = client.get("/api/v4/contacts?filter[id][]=1", headers=bearer(pair["access_token"]))
    assert ok.status_code == 200
    again = grant(client, grant_type="refresh_token", refresh_token=pair["refresh_token"])
    assert again.status_code == 200
    counts = client.get("/_admin/oauth").json()
    assert counts["refreshes"] == 2 and counts["refused"] >= 1


def test_access_tokens_expire_and_admin_revokes(emu):
    app, client = emu
    app.state.tokens.token_ttl = 0.3
    try:
        pair = grant(client, grant_type="authorization_code", code="code-e").json()
        assert pair["expires_in"] == 1
        url = "/api/v4/contacts?filter[id][]=5"
        assert client.get(url, headers=bearer(pair["access_token"])).status_code == 200
        time.sleep(0.35)
        expired = client.get(url, headers=bearer(pair["access_token"]))
        assert expired.status_code == 401
        assert expired.headers["content-type"] == PROBLEM
        assert "expired" in expired.json()["detail"]
    finally:
        app.state.tokens.token_ttl = 86_400
    pair = grant(client, grant_type="refresh_token", refresh_token=pair["refresh_token"]).json()
    assert client.delete("/_admin/tokens?refresh=1").json()["revoked"] >= 1
    assert client.get(url, headers=bearer(pair["access_token"])).status_code == 401
    refused = grant(client, grant_type="refresh_token", refresh_token=pair["refresh_token"])
    assert refused.status_code == 401
    # The long-lived token survives all of it.
    assert client.get(url).status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc", f"Token {LONG_LIVED}"])
def test_api_needs_a_valid_bearer(emu, header):
    _, client = emu
    headers = {"Authorization": header} if header else {}
    with httpx.Client(base_url=str(client.base_url), headers=headers) as anon:
        resp = anon.get("/api/v4/leads")
    assert resp.status_code == 401
    assert resp.headers["content-type"] == PROBLEM


# ---- leads ------------------------------------------------------------------------------


def test_leads_create_get_patch(emu):
    app, client = emu
    resp = client.post(
        "/api/v4/leads",
        json=[{"name": "ID_123", "pipeline_id": 11, "status_id": 22}, {"name": "ID_1234"}],
    )
    assert resp.status_code == 200, resp.text
    created = resp.json()["_embedded"]["leads"]
    first, second = (lead["id"] for lead in created)
    assert [lead["request_id"] for lead in created] == ["0", "1"]
    lead = client.get(f"/api/v4/leads/{first}").json()
    assert (lead["name"], lead["pipeline_id"], lead["status_id"]) == ("ID_123", 11, 22)
    assert lead["price"] == 0 and lead["custom_fields_values"] is None
    assert lead["_links"]["self"]["href"].endswith(f"/api/v4/leads/{first}")

    fields = [
        {"field_id": 1305111, "values": [{"value": "7001"}]},
        {"field_id": 1304335, "values": [{"value": "Гость 1\nГость 2"}]},
    ]
    resp = client.patch(
        f"/api/v4/leads/{first}", json={"price": 85400, "custom_fields_values": fields}
    )
    assert resp.status_code == 200 and resp.json()["id"] == first
    resp = client.patch(
        f"/api/v4/leads/{first}",
        json={"custom_fields_values": [{"field_id": 1305111, "values": [{"value": "7002"}]}]},
    )
    assert resp.status_code == 200
    stored = client.get(f"/_admin/leads/{first}").json()
    assert stored["price"] == 85400 and stored["pipeline_id"] == 11
    values = {f["field_id"]: f["values"] for f in stored["custom_fields_values"]}
    assert values == {1305111: [{"value": "7002"}], 1304335: [{"value": "Гость 1\nГость 2"}]}

    many = client.patch(
        "/api/v4/leads", json=[{"id": first, "price": 1}, {"id": second, "price": 2}]
    )
    assert many.status_code == 200
    assert [lead["id"] for lead in many.json()["_embedded"]["leads"]] == [first, second]
    listed = client.get("/_admin/leads").json()
    assert [(lead["id"], lead["price"]) for lead in listed] == [(first, 1), (second, 2)]
    assert set(listed[0]) >= {"id", "name", "price", "custom_fields_values", "pipeline_id"}
    assert app.state.emulator.log.entries(path="/api/v4/leads")[-1]["ids"] == [first, second]


def test_leads_query_filter_paging_and_204(emu):
    _, client = emu
    assert client.get("/api/v4/leads").status_code == 204
    names = ["ID_12", "ID_123", "Другая сделка", "id_12 копия"]
    ids = client.post("/_admin/leads", json={"names": names}).json()["ids"]
    found = client.get("/api/v4/leads", params={"query": "ID_12"}).json()
    # Full-text-like: substring, case-insensitive; the caller picks the exact name.
    assert [lead["name"] for lead in found["_embedded"]["leads"]] == [
        "ID_12",
        "ID_123",
        "id_12 копия",
    ]
    assert client.get("/api/v4/leads", params={"query": "ID_999"}).status_code == 204
    picked = client.get(
        "/api/v4/leads", params=[("filter[id][]", ids[1]), ("filter[id][]", ids[3])]
    )
    assert [lead["id"] for lead in picked.json()["_embedded"]["leads"]] == [ids[1], ids[3]]
    page1 = client.get("/api/v4/leads", params={"limit": 3}).json()
    assert page1["_page"] == 1 and len(page1["_embedded"]["leads"]) == 3
    page2 = client.get(page1["_links"]["next"]["href"]).json()
    assert page2["_page"] == 2 and [lead["id"] for lead in page2["_embedded"]["leads"]] == [ids[3]]
    assert "next" not in page2["_links"] and "prev" in page2["_links"]
    assert client.get("/api/v4/leads", params={"limit": 3, "page": 3}).status_code == 204
    too_big = client.get("/api/v4/leads", params={"limit": 251})
    assert too_big.status_code == 400 and "validation-errors" in too_big.json()


def test_absent_leads(emu):
    _, client = emu
    assert client.get("/api/v4/leads/23392663").status_code == 204
    missing = client.patch("/api/v4/leads/23392663", json={"price": 1})
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM
    many = client.patch("/api/v4/leads", json=[{"id": 23392663, "price": 1}])
    assert many.status_code == 400
    assert many.json()["validation-errors"][0]["errors"][0]["code"] == "NotFound"
    assert client.get("/_admin/leads/23392663").status_code == 404
    assert client.get("/_admin/leads").json() == []


def test_leads_exist_mode(emu):
    _, client = emu
    config = client.put("/_admin/config", json={"leads_exist": True}).json()
    assert config["leads_exist"] is True
    lead = client.get("/api/v4/leads/23392663").json()
    assert lead["id"] == 23392663 and lead["name"] == "Сделка #23392663"
    assert client.patch("/api/v4/leads/23392664", json={"price": 5}).status_code == 200
    assert [lead["id"] for lead in client.get("/_admin/leads").json()] == [23392663, 23392664]
    assert client.delete("/_admin/leads/23392663").json()["deleted"] is True
    assert client.get("/api/v4/leads/23392663").status_code == 204  # deleted stays absent
    made = client.post("/_admin/leads", json={"ids": [23392663], "pipeline_id": 7}).json()
    assert made == {"ids": [23392663]}
    assert client.get("/api/v4/leads/23392663").json()["pipeline_id"] == 7
    count = client.post("/_admin/leads", json={"count": 3}).json()["ids"]
    assert len(set(count)) == 3
    bad = client.post("/_admin/leads", json={"count": 1, "ids": [1]})
    assert bad.status_code == 400 and "exactly one" in bad.json()["error"]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"price": "100"}, "price"),
        ({"price": True}, "price"),
        ({"name": 5}, "name"),
        ({"colour": "red"}, "colour"),
        ({"custom_fields_values": {"field_id": 1}}, "custom_fields_values"),
        ({"custom_fields_values": [{"field_id": "x", "values": [{"value": 1}]}]}, None),
        ({"custom_fields_values": [{"field_id": 1}]}, "custom_fields_values.0.values"),
        ({"custom_fields_values": [{"field_id": 1, "values": [{"v": 1}]}]}, None),
        ({"custom_fields_values": [{"field_id": 1, "values": [{"value": [1]}]}]}, None),
        ([{"price": 1}], ""),
    ],
)
def test_malformed_patch_is_400_validation_errors(emu, body, path):
    _, client = emu
    lead_id = client.post("/_admin/leads", json={"count": 1}).json()["ids"][0]
    resp = client.patch(f"/api/v4/leads/{lead_id}", json=body)
    assert resp.status_code == 400
    assert resp.headers["content-type"] == PROBLEM
    problem = resp.json()
    assert problem["status"] == 400 and problem["title"] == "Bad Request"
    errors = problem["validation-errors"][0]["errors"]
    if path is not None:
        assert errors[0]["path"] == path
    assert client.get(f"/_admin/leads/{lead_id}").json()["price"] == 0  # nothing written


def test_bad_json_and_bad_post(emu):
    _, client = emu
    raw = client.patch("/api/v4/leads/1", content=b"{nope")
    assert raw.status_code == 400 and raw.headers["content-type"] == PROBLEM
    assert client.post("/api/v4/leads", json={"name": "x"}).status_code == 400
    assert client.post("/api/v4/leads", json=[{"id": 5, "name": "x"}]).status_code == 400
    assert client.post("/api/v4/leads", json=[{"name": "x"}] * 251).status_code == 400
    assert client.get("/_admin/leads").json() == []


# ---- contacts ---------------------------------------------------------------------------


def test_contacts_are_deterministic(emu):
    _, client = emu
    resp = client.get("/api/v4/contacts", params=[("filter[id][]", 42), ("filter[id][]", 7)])
    assert resp.status_code == 200
    contacts = resp.json()["_embedded"]["contacts"]
    assert [c["id"] for c in contacts] == [42, 7]
    contact = contacts[0]
    fields = {f["field_code"]: f["values"][0]["value"] for f in contact["custom_fields_values"]}
    assert fields["EMAIL"] == "contact42@example.test"
    assert fields["PHONE"] == records.contact_phone_raw(42)
    digits = re.sub(r"\D", "", fields["PHONE"])
    assert "+7" + digits[1:] == records.contact_phone_e164(42)
    assert contact["name"] and contact["name"] == records.make_contact(42)["name"]
    assert client.get("/api/v4/contacts/42").json()["name"] == contact["name"]
    # The same id answers the same contact from a fresh emulator.
    assert (
        records.make_contact(42, base_url="x")["custom_fields_values"]
        == (contact["custom_fields_values"])
    )


def test_contacts_limit_paging_and_admin(emu):
    _, client = emu
    many = [("filter[id][]", i) for i in range(1, 252)]
    resp = client.get("/api/v4/contacts", params=many)
    assert resp.status_code == 400 and "validation-errors" in resp.json()
    seen, url = [], "/api/v4/contacts"
    params: list | None = [*many[:250], ("limit", 100)]
    while url:
        resp = client.get(url, params=params)
        assert resp.status_code == 200
        body = resp.json()
        seen += [c["id"] for c in body["_embedded"]["contacts"]]
        url, params = body["_links"].get("next", {}).get("href"), None
    assert seen == list(range(1, 251))

    assert client.delete("/_admin/contacts/2").json()["deleted"] is True
    got = client.get("/api/v4/contacts", params=[("filter[id][]", 1), ("filter[id][]", 2)])
    assert [c["id"] for c in got.json()["_embedded"]["contacts"]] == [1]
    assert client.get("/api/v4/contacts", params={"filter[id][]": 2}).status_code == 204
    assert client.get("/api/v4/contacts/2").status_code == 204
    assert client.get("/_admin/contacts/2").status_code == 404
    changed = client.put("/_admin/contacts/2", json={"phone": "#ERROR!", "email": ""}).json()
    assert [f["field_code"] for f in changed["custom_fields_values"]] == ["PHONE"]
    assert client.get("/api/v4/contacts/2").json()["custom_fields_values"][0]["values"][0][
        "value"
    ] == ("#ERROR!")
    assert client.get("/api/v4/contacts", params={"query": "contact1@"}).status_code == 200


# ---- quota, block, faults, log ----------------------------------------------------------


def test_quota_429_without_retry_after_then_ip_block():
    app = amocrm.create_app(
        long_lived_token=LONG_LIVED, quota=7, block_after=6, block_window=10, block_seconds=0.6
    )
    with running_server(app) as url, httpx.Client(base_url=url, headers=bearer(LONG_LIVED)) as c:
        answers = [c.get("/api/v4/contacts/1") for _ in range(20)]
        codes = [r.status_code for r in answers]
        assert codes[:7] == [200] * 7
        refused = [r for r in answers if r.status_code == 429]
        assert 2 <= len(refused) <= 7
        assert all("retry-after" not in r.headers for r in refused)
        kinds = {r.headers["content-type"].split(";")[0] for r in refused}
        assert kinds == {PROBLEM, "text/html"}  # sometimes not JSON at all
        blocked = [r for r in answers if r.status_code == 403]
        assert blocked and codes.index(403) == 7 + 7  # the 7th refusal (> 6) starts the block
        assert "IP blocked" in blocked[0].json()["detail"]
        # Another token from the same IP is blocked too (the block is per IP).
        other = c.post("/oauth2/access_token", json={**CLIENT, "grant_type": "x"})
        assert other.status_code == 403
        assert "127.0.0.1" in c.get("/_admin/blocks").json()
        log = app.state.emulator.log.entries()
        assert sum(e["status"] == 403 for e in log) == len(blocked) + 1
        time.sleep(1.05)  # past the block (0.6 s) and the quota window (1 s)
        assert c.get("/api/v4/contacts/1").status_code == 200
        config = c.put("/_admin/config", json={"block_after": 0}).json()
        assert config["block_after"] == 0 and config["quota_per_second"] == 7


def test_quota_is_per_token():
    app = amocrm.create_app(long_lived_token=LONG_LIVED, quota=7, block_after=0)
    with running_server(app) as url, httpx.Client(base_url=url) as c:
        other = grant(c, grant_type="authorization_code", code="code-q").json()["access_token"]
        for _ in range(7):
            assert c.get("/api/v4/contacts/1", headers=bearer(LONG_LIVED)).status_code == 200
        assert c.get("/api/v4/contacts/1", headers=bearer(LONG_LIVED)).status_code == 429
        assert c.get("/api/v4/contacts/1", headers=bearer(other)).status_code == 200
        time.sleep(1.0)
        assert c.get("/api/v4/contacts/1", headers=bearer(LONG_LIVED)).status_code == 200
        assert c.get("/_admin/leads").status_code == 200  # admin bypasses the quota


def test_faults_and_request_log(emu):
    app, client = emu
    client.put("/_admin/faults", json={"force_429": 1, "retry_after": "5"})
    forced = client.get("/api/v4/leads")
    assert forced.status_code == 429 and "retry-after" not in forced.headers
    client.put("/_admin/faults", json={"error_rate": 1.0})
    failed = client.get("/api/v4/leads")
    assert failed.status_code in (500, 503) and failed.headers["content-type"] == PROBLEM
    client.delete("/_admin/faults")
    entries = client.get("/_admin/requests", params={"path": "/api/v4/leads"}).json()
    assert [e["fault"] for e in entries] == ["force_429", "error"]
    assert LONG_LIVED not in orjson.dumps(entries).decode()
    assert client.get("/_admin/health").json()["provider"] == "amocrm"


# ---- senders ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[str, list[dict]]]:
    got: list[dict] = []

    async def capture(request: Request) -> Response:
        got.append(
            {
                "path": request.url.path,
                "type": request.headers.get("content-type"),
                "key": request.headers.get("x-webhook-key"),
                "body": await request.body(),
            }
        )
        return Response(b'{"status": "ok"}', media_type="application/json")

    app = Starlette(routes=[Route("/{path:path}", capture, methods=["POST"])])
    with running_server(app) as url:
        yield url, got


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def check_booked(element: dict) -> None:
    assert isinstance(element["id"], int) and isinstance(element["lead_id"], str)
    assert element["lead_id"].isdigit()
    assert element["status"] in records.BOOKED_STATUSES
    assert ISO_Z.match(element["bookedAt"])
    _iso(element["checkin"]), _iso(element["checkout"])
    assert element["name"] and isinstance(element["docNum"], int)
    money = element["money"]
    assert isinstance(money["total"], int) and isinstance(money["paid"], int)
    assert 0 <= money["paid"] <= money["total"]
    assert element["extData"]["guests"]
    for guest in element["extData"]["guests"]:
        for key in ("fio", "birthday", "roomCategory", "ageGroup", "cure", "uid"):
            assert isinstance(guest[key], str)
        assert isinstance(guest["stayCount"], int)
        assert guest["billNum"] == "" or isinstance(guest["billNum"], int)
    for bill in element.get("billData", []):
        assert all(isinstance(bill[k], str) for k in ("billNum", "billSum", "billPaidSum"))


def _priced(item: dict) -> None:
    assert isinstance(item["pay"], bool) and isinstance(item["paid"], bool)
    assert isinstance(item["price"], int)


def check_mc(element: dict) -> None:
    assert isinstance(element["id"], int) and isinstance(element["lead_id"], int)
    assert element["name"] and ISO_Z.match(element["createdAt"])
    assert element["birthday"] and element["status"]
    for treatment in element["treatments"] + [
        t for group in element["packets"] + element["complex"] for t in group["treatments"]
    ]:
        assert treatment["status"] in records.MC_ITEM_STATUSES
        assert {"item_id", "action", "visit_date"} <= treatment.keys()
        _priced(treatment)
    for lab in element["labs"] + [lab for c in element["complex"] for lab in c["labs"]]:
        assert {"lab_item_id", "lab", "status", "visit_date", "treatment_item_id"} <= lab.keys()
        _priced(lab)
    for packet in element["packets"]:
        assert {"packet_id", "packet"} <= packet.keys()
        _priced(packet)
    for item in element["complex"]:
        assert {"complex_id", "complex"} <= item.keys()
        _priced(item)


def test_builders_are_deterministic_and_well_formed():
    assert records.booked_update(5) == records.booked_update(5)
    assert records.mc_update(5) == records.mc_update(5)
    for n in range(1, 60):
        check_booked(records.booked_update(n))
        check_mc(records.mc_update(n))
    assert records.booked_update(3, 23392663)["lead_id"] == "23392663"
    assert records.mc_update(3, "23392663")["lead_id"] == 23392663
    seen = {records.booked_update(n)["status"] for n in range(1, 60)}
    assert seen == set(records.BOOKED_STATUSES)
    assert any(g["billNum"] == "" for n in range(1, 60) for g in _guests(n))
    assert any(records.mc_update(n)["packets"] for n in range(1, 30))
    assert any(records.mc_update(n)["complex"] for n in range(1, 30))
    with pytest.raises(ValueError):
        records.booked_update(1, status="lost")


def _guests(n: int) -> list[dict]:
    return records.booked_update(n)["extData"]["guests"]


def test_contact_webhook_form_shape():
    form = records.contact_webhook_form([11, 12], "update", subdomain="clinic")
    assert form["contacts[update][0][id]"] == "11" and form["contacts[update][1][id]"] == "12"
    assert form["contacts[update][0][name]"] == records.make_contact(11)["name"]
    assert form["contacts[update][0][custom_fields][0][code]"] == "PHONE"
    assert form["contacts[update][0][custom_fields][1][values][0][value]"] == (
        "contact11@example.test"
    )
    assert form["account[subdomain]"] == "clinic"
    deleted = records.contact_webhook_form([9], "delete")
    assert {k for k in deleted if k.startswith("contacts")} == {
        "contacts[delete][0][id]",
        "contacts[delete][0][type]",
    }
    with pytest.raises(ValueError):
        records.contact_webhook_form([1], "explode")


def test_senders_post_the_documented_shapes(receiver):
    url, got = receiver
    got.clear()
    summary = amocrm.send_contact_webhooks(f"{url}/webhooks/amocrm/k", 3, "add", start_id=100)
    assert summary["ok"] == summary["sent"] == 3
    assert all(g["type"] == "application/x-www-form-urlencoded" for g in got)
    forms = [dict(parse_qsl(g["body"].decode())) for g in got]
    assert sorted(f["contacts[add][0][id]"] for f in forms) == ["100", "101", "102"]
    assert all(f["account[subdomain]"] == "demo" for f in forms)

    got.clear()
    summary = amocrm.send_rdesk(f"{url}/zdrav/booked", "booked", 5, batch_size=2, key="s3")
    assert summary["ok"] == summary["sent"] == 3
    arrays = [orjson.loads(g["body"]) for g in got]
    assert sorted(len(a) for a in arrays) == [1, 2, 2]
    assert all(g["key"] == "s3" and g["type"] == "application/json" for g in got)
    for element in (e for a in arrays for e in a):
        check_booked(element)

    got.clear()
    amocrm.send_rdesk(f"{url}/webhooks/rdesk/k/mc", "mc", 2, lead_id=23392663)
    elements = [orjson.loads(g["body"])[0] for g in got]
    assert [e["lead_id"] for e in elements] == [23392663, 23392663]
    assert all(g["key"] is None for g in got)
    for element in elements:
        check_mc(element)


def test_cli_senders(receiver):
    url, got = receiver
    runner = CliRunner()
    got.clear()
    result = runner.invoke(
        emulate,
        ["rdesk", "--url", f"{url}/zdrav/booked", "--endpoint", "booked", "--count", "2"]
        + ["--lead-id", "23392663", "--key", "sekret"],
    )
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.output)["ok"] == 2 and "sekret" not in result.output
    assert [orjson.loads(g["body"])[0]["lead_id"] for g in got] == ["23392663"] * 2
    got.clear()
    result = runner.invoke(
        emulate,
        ["amocrm-webhooks", "--url", f"{url}/webhooks/amocrm/k", "--count", "2"]
        + ["--action", "delete"],
    )
    assert result.exit_code == 0, result.output
    assert all(b"contacts%5Bdelete%5D%5B0%5D%5Bid%5D" in g["body"] for g in got)
    bad = runner.invoke(emulate, ["rdesk", "--url", url, "--endpoint", "mc", "--lead-id", "x"])
    assert bad.exit_code != 0
    unreachable = runner.invoke(
        emulate, ["rdesk", "--url", "http://127.0.0.1:9/zdrav/mc", "--endpoint", "mc"]
    )
    assert unreachable.exit_code == 1


def test_cli_lists_the_commands():
    result = CliRunner().invoke(emulate, ["amocrm", "--help"])
    assert result.exit_code == 0
    for option in ("--client-id", "--long-lived-token", "--token-ttl", "--quota", "--leads-exist"):
        assert option in result.output
    assert {"amocrm", "amocrm-webhooks", "rdesk"} <= set(emulate.commands)


def test_cli_amocrm_serves_without_printing_secrets():
    port, secret, token = free_port(), "cli-client-secret", "cli-long-lived-token"
    code = "from provider_emulators.cli import emulate; emulate()"
    cmd = [sys.executable, "-c", code, "amocrm", "--port", str(port), "--client-secret", secret]
    cmd += ["--long-lived-token", token, "--leads-exist", "--quota", "0", "--log-level", "info"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                resp = httpx.get(
                    f"http://127.0.0.1:{port}/api/v4/leads/23392663", headers=bearer(token)
                )
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        assert resp.status_code == 200 and resp.json()["id"] == 23392663
        form = {**CLIENT, "client_secret": secret, "grant_type": "authorization_code"}
        pair = httpx.post(
            f"http://127.0.0.1:{port}/oauth2/access_token", data={**form, "code": "code-1"}
        )
        assert pair.status_code == 200
    finally:
        proc.terminate()
        output = proc.communicate(timeout=10)[0].decode()
    assert "amoCRM emulator" in output
    assert secret not in output and token not in output and "code-1" not in output
