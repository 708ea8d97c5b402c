"""The U-ON emulator, the PBX stand-in and the U-ON / telephony senders over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import httpx
import orjson
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from provider_emulators.cli import emulate
from provider_emulators.testing import running_server
from provider_emulators.uon import (
    DEMO,
    RELIABILITY,
    RUSSIAN_KEYS,
    UonWebhook,
    call_events,
    create_app,
    create_pbx_app,
    default_client,
    send_telephony,
    send_uon_webhooks,
)
from provider_emulators.uon.demo import PBX_SECRET as DEMO_PBX_SECRET
from tests.uon_fixtures import API_KEY, KNOWN_PHONE, PBX_SECRET, UNKNOWN_PHONE

OTHER_KEY = "uon-test-other-key-0123456789"


@pytest.fixture(scope="module")
def uon() -> Iterator[str]:
    """The U-ON emulator without a quota, with the PBX (checking its client id) at /pbx."""
    app = create_app((API_KEY,), quota=None, pbx=create_pbx_app(PBX_SECRET))
    with running_server(app) as base:
        yield base


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def api(base: str, endpoint: str, key: str = API_KEY) -> str:
    return f"{base}/{key}/{endpoint}"


# ---- clients ------------------------------------------------------------------------------


def test_an_even_number_is_a_known_deterministic_client(uon: str, client: httpx.Client) -> None:
    first = client.get(api(uon, f"user/phone/{KNOWN_PHONE}.json"))
    again = client.get(api(uon, f"user/phone/{KNOWN_PHONE}.json"))
    assert first.status_code == 200
    body = first.json()
    assert body == again.json()
    assert body["result"] == 200
    [user] = body["users"]
    assert user["u_id"] == KNOWN_PHONE
    assert user["u_phone"] == "+" + KNOWN_PHONE
    assert user["manager_id"] in ("2", "4")
    assert user["u_name"] and user["u_surname"] and user["u_sname"] and user["u_email"]
    assert {"u_phone_mobile", "u_company", "u_status"} <= user.keys()
    # The number in any spelling: only its digits count.
    spelled = client.get(api(uon, "user/phone/%2B375%2029%20625-40-70.json"))
    assert spelled.json()["users"] == [user]


def test_an_odd_number_is_nobody_404_as_empty(uon: str, client: httpx.Client) -> None:
    resp = client.get(api(uon, f"user/phone/{UNKNOWN_PHONE}.json"))
    assert resp.status_code == 404
    assert resp.json()["result"] == 404
    assert "users" not in resp.json()


def test_user_by_id_follows_the_even_rule(uon: str, client: httpx.Client) -> None:
    resp = client.get(api(uon, "user/123456.json"))
    assert resp.status_code == 200
    assert resp.json() == {"user": [default_client("123456")], "result": 200}
    assert resp.json()["user"][0]["u_phone"] == "+123456"
    odd = client.get(api(uon, "user/123457.json"))
    assert odd.status_code == 404 and odd.json()["result"] == 404
    assert client.get(api(uon, "user/abc.json")).status_code == 404


def test_admin_clients_override_the_default_ones(uon: str, client: httpx.Client) -> None:
    # A client with an odd number exists once added.
    added = client.post(
        f"{uon}/_admin/users",
        json={"u_id": 77_001, "u_name": "Олег", "u_phone": "+375 29 111-22-33"},
    )
    assert added.status_code == 201 and added.json()["u_id"] == "77001"
    found = client.get(api(uon, "user/phone/375291112233.json")).json()
    assert [u["u_id"] for u in found["users"]] == ["77001"]
    assert client.get(api(uon, "user/77001.json")).json()["user"][0]["u_name"] == "Олег"
    # A default client changed, then deleted.
    phone = "375297770010"
    patched = client.patch(f"{uon}/_admin/users/{phone}", json={"u_name": "Новое имя"})
    assert patched.status_code == 200 and patched.json()["u_name"] == "Новое имя"
    assert client.get(api(uon, f"user/{phone}.json")).json()["user"][0]["u_name"] == "Новое имя"
    assert client.get(api(uon, f"user/phone/{phone}.json")).json()["users"][0]["u_name"] == (
        "Новое имя"
    )
    assert client.delete(f"{uon}/_admin/users/{phone}").json() == {"deleted": True}
    assert client.get(api(uon, f"user/{phone}.json")).status_code == 404
    assert client.get(api(uon, f"user/phone/{phone}.json")).status_code == 404
    assert client.patch(f"{uon}/_admin/users/{phone}", json={"u_name": "x"}).status_code == 404
    assert client.patch(f"{uon}/_admin/users/77003", json={"u_name": "x"}).status_code == 404
    listed = client.get(f"{uon}/_admin/users").json()
    assert "77001" in {u["u_id"] for u in listed}
    assert client.post(f"{uon}/_admin/users", content=b"[1").status_code == 400


def test_user_create_takes_a_form(uon: str, client: httpx.Client) -> None:
    resp = client.post(
        api(uon, "user/create.json"), data={"u_name": "Ирина", "u_phone": "+375445550001"}
    )
    assert resp.status_code == 200
    new_id = resp.json()["id"]
    assert isinstance(new_id, str) and resp.json()["result"] == 200
    user = client.get(api(uon, f"user/{new_id}.json")).json()["user"][0]
    assert user["u_name"] == "Ирина"
    # Created with an odd number: found by it all the same.
    assert client.get(api(uon, "user/phone/375445550001.json")).json()["users"][0]["u_id"] == new_id


# ---- leads, requests, notifications ---------------------------------------------------------


def test_lead_create_form_or_json_then_read(uon: str, client: httpx.Client) -> None:
    form = {"source": "Телефония", "u_id": KNOWN_PHONE, "manager_id": "2", "note": "Звонок 42 с"}
    resp = client.post(api(uon, "lead/create.json"), data=form)
    assert resp.status_code == 200
    lead_id = resp.json()["id"]
    assert isinstance(lead_id, int)
    lead = client.get(api(uon, f"lead/{lead_id}.json")).json()["lead"][0]
    assert lead["id"] == lead_id and lead["client_id"] == KNOWN_PHONE
    assert lead["source"] == "Телефония" and lead["note"] == "Звонок 42 с"
    assert lead["manager_id"] == "2" and lead["status"] == "new"
    by_json = client.post(api(uon, "lead/create.json"), json={"source": "x", "u_name": "Анна"})
    assert by_json.status_code == 200 and by_json.json()["id"] != lead_id
    listed = {item["id"] for item in client.get(f"{uon}/_admin/leads").json()}
    assert {lead_id, by_json.json()["id"]} <= listed
    empty = client.post(api(uon, "lead/create.json"), data={"u_id": "2"})
    assert empty.status_code == 400 and empty.json()["result"] == 400
    bad = client.post(
        api(uon, "lead/create.json"), content=b"{", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400
    assert client.get(api(uon, "lead/99999999999.json")).status_code == 404


def test_request_by_id_even_rule_and_seeded(uon: str, client: httpx.Client) -> None:
    resp = client.get(api(uon, "request/4242.json"))
    assert resp.status_code == 200
    item = resp.json()["request"][0]
    assert item["id"] == "4242" and int(item["client_id"]) % 2 == 0
    assert {"status", "manager_id", "date_begin"} <= item.keys()
    assert client.get(api(uon, "request/4243.json")).status_code == 404
    seeded = client.post(
        f"{uon}/_admin/uon-requests",
        json=[{"id": 4243, "client_id": "2", "status": "closed", "dat": "2020-01-02 10:00:00"}],
    )
    assert seeded.status_code == 201 and seeded.json() == {"ids": ["4243"]}
    assert client.get(api(uon, "request/4243.json")).json()["request"][0]["status"] == "closed"
    assert client.post(f"{uon}/_admin/uon-requests", json=[{"status": "x"}]).status_code == 400


def test_requests_come_in_pages_of_100_and_404_past_the_end(client: httpx.Client) -> None:
    with running_server(create_app((API_KEY,), quota=None)) as base:
        items = [{"id": i, "client_id": "2", "dat": "2026-11-29 10:00:00"} for i in range(1, 251)]
        items.append({"id": 999, "client_id": "4", "dat": "2026-11-27 10:00:00"})
        assert client.post(f"{base}/_admin/uon-requests", json=items).status_code == 201
        pages = [
            client.get(api(base, f"requests/2026-11-29/2026-11-29/{page}.json"))
            for page in (1, 2, 3, 4)
        ]
        assert [p.status_code for p in pages] == [200, 200, 200, 404]
        sizes = [len(p.json()["requests"]) for p in pages[:3]]
        assert sizes == [100, 100, 50]
        ids = [r["id"] for p in pages[:3] for r in p.json()["requests"]]
        assert ids == [str(i) for i in range(1, 251)]
        assert pages[3].json()["result"] == 404
        wide = client.get(api(base, "requests/2026-11-01/2026-11-30/3.json")).json()
        assert wide["requests"][-1]["id"] == "999"
        none = client.get(api(base, "requests/2025-01-01/2025-01-31/1.json"))
        assert none.status_code == 404
        assert client.get(api(base, "requests/2026-13-01/2026-11-30/1.json")).status_code == 400
        assert client.get(api(base, "requests/2026-11-01/2026-11-30/0.json")).status_code == 400
        assert len(client.get(f"{base}/_admin/uon-requests").json()) == 251
        assert client.delete(f"{base}/_admin/uon-requests").status_code == 200
        assert client.get(f"{base}/_admin/uon-requests").json() == []


def test_notification_create_form_or_json(uon: str, client: httpx.Client) -> None:
    client.delete(f"{uon}/_admin/notifications")
    as_json = client.post(
        api(uon, "notification/create.json"),
        json={"text": "Входящий звонок +375296254070 → 151", "manager_id": "2"},
    )
    assert as_json.status_code == 200 and as_json.json() == {"result": 200}
    as_form = client.post(
        api(uon, "notification/create.json"), data={"text": "hi", "manager_id": 4}
    )
    assert as_form.json() == {"result": 200}
    notes = client.get(f"{uon}/_admin/notifications").json()
    assert [(n["text"], n["manager_id"]) for n in notes] == [
        ("Входящий звонок +375296254070 → 151", "2"),
        ("hi", "4"),
    ]
    missing = client.post(api(uon, "notification/create.json"), data={"manager_id": "2"})
    assert missing.status_code == 400 and missing.json()["result"] == 400


def test_countries_ping_wrong_key_and_unknown_method(uon: str, client: httpx.Client) -> None:
    ping = client.get(api(uon, "countries.json"))
    assert ping.status_code == 200 and ping.json()["result"] == 200
    assert ping.json()["countries"]
    wrong = client.get(api(uon, "countries.json", key="not-the-key"))
    assert wrong.status_code == 403
    assert wrong.json()["result"] == 403 and "message" in wrong.json()
    assert client.get(f"{uon}/countries.json").status_code == 403  # no key at all
    unknown = client.get(api(uon, "nothing/here.json"))
    assert unknown.status_code == 404 and unknown.json()["result"] == 404


def test_the_request_log_never_shows_the_key(uon: str, client: httpx.Client) -> None:
    client.get(api(uon, "countries.json"))
    entries = client.get(f"{uon}/_admin/requests", params={"path": "/countries.json"}).json()
    assert entries and all(e["path"] == "/countries.json" for e in entries)
    everything = client.get(f"{uon}/_admin/requests").text
    assert API_KEY not in everything


# ---- quota and faults ----------------------------------------------------------------------


def test_quota_is_10_per_second_per_key_429_without_retry_after(client: httpx.Client) -> None:
    with running_server(create_app((API_KEY, OTHER_KEY), quota=10)) as base:
        answers = [client.get(api(base, "countries.json")) for _ in range(15)]
        statuses = [a.status_code for a in answers]
        assert statuses.count(200) == 10 and statuses.count(429) == 5
        refused = next(a for a in answers if a.status_code == 429)
        assert refused.json()["result"] == 429
        assert "retry-after" not in refused.headers
        # Another key has its own budget.
        assert client.get(api(base, "countries.json", key=OTHER_KEY)).status_code == 200
        log = client.get(f"{base}/_admin/requests").json()
        assert sum(1 for e in log if e["quota_rejected"]) == 5
        assert len({e["quota_key"] for e in log}) == 2
        assert client.delete(f"{base}/_admin/quota").json() == {"reset": True}
        assert client.get(api(base, "countries.json")).status_code == 200


def test_faults_5xx_and_forced_429_in_uon_shape(client: httpx.Client) -> None:
    with running_server(create_app((API_KEY,), quota=None)) as base:
        client.put(f"{base}/_admin/faults", json={"error_rate": 1}).raise_for_status()
        failed = client.get(api(base, "countries.json"))
        assert failed.status_code in (500, 503) and failed.json()["result"] == failed.status_code
        client.put(
            f"{base}/_admin/faults", json={"error_rate": 0, "force_429": 1, "retry_after": "1"}
        ).raise_for_status()
        forced = client.get(api(base, "countries.json"))
        assert forced.status_code == 429 and "retry-after" not in forced.headers
        assert forced.json()["result"] == 429
        assert client.get(api(base, "countries.json")).status_code == 200
        client.put(f"{base}/_admin/faults", json={"malformed_rate": 1}).raise_for_status()
        with pytest.raises(ValueError):
            client.get(api(base, "countries.json")).json()
        client.delete(f"{base}/_admin/faults").raise_for_status()
        assert client.get(api(base, "countries.json")).json()["result"] == 200


def test_admin_state_reset_forgets_everything(client: httpx.Client) -> None:
    with running_server(create_app((API_KEY,), quota=None)) as base:
        client.delete(f"{base}/_admin/users/{KNOWN_PHONE}")
        client.post(api(base, "lead/create.json"), data={"source": "x"})
        assert client.delete(f"{base}/_admin/state").json() == {"reset": True}
        assert client.get(api(base, f"user/{KNOWN_PHONE}.json")).status_code == 200
        assert client.get(f"{base}/_admin/leads").json() == []


# ---- the PBX stand-in ------------------------------------------------------------------------


def _originate(base: str, client: httpx.Client, **params: str) -> httpx.Response:
    return client.get(f"{base}/api/makecallexternal", params=params)


def test_pbx_records_originated_calls_and_checks_the_client_id(client: httpx.Client) -> None:
    with running_server(create_pbx_app(PBX_SECRET)) as pbx:
        resp = _originate(pbx, client, code="151", phone="+375296254070", clientId=PBX_SECRET)
        assert resp.status_code == 200
        assert resp.json()["ok"] is True and resp.json()["call_id"]
        # "+" not URL-encoded arrives as a space: still the same number.
        raw = client.get(
            f"{pbx}/api/makecallexternal?code=152&phone=+375296254072&clientId={PBX_SECRET}"
        )
        assert raw.status_code == 200
        wrong = _originate(pbx, client, code="151", phone="+375296254070", clientId="nope")
        assert wrong.status_code == 403 and wrong.json()["ok"] is False
        no_code = _originate(pbx, client, code="", phone="+375296254070", clientId=PBX_SECRET)
        assert no_code.status_code == 400 and no_code.json()["error"]
        no_phone = _originate(pbx, client, code="151", phone="12", clientId=PBX_SECRET)
        assert no_phone.status_code == 400
        calls = client.get(f"{pbx}/_admin/calls").json()
        assert [(c["code"], c["e164"]) for c in calls] == [
            ("151", "+375296254070"),
            ("152", "+375296254072"),
        ]
        assert PBX_SECRET not in json.dumps(calls)
        assert len(client.get(f"{pbx}/_admin/requests").json()) == 5
        client.put(f"{pbx}/_admin/faults", json={"error_rate": 1}).raise_for_status()
        failing = _originate(pbx, client, code="151", phone="+375296254070", clientId=PBX_SECRET)
        assert failing.status_code in (500, 503) and failing.json()["ok"] is False
        client.delete(f"{pbx}/_admin/faults")
        assert client.delete(f"{pbx}/_admin/calls").json() == {"cleared": 2}


def test_pbx_without_a_client_id_accepts_any(client: httpx.Client) -> None:
    with running_server(create_pbx_app()) as pbx:
        assert _originate(pbx, client, code="151", phone="375296254070").status_code == 200


def test_pbx_mounted_under_pbx_in_the_uon_emulator(uon: str, client: httpx.Client) -> None:
    client.delete(f"{uon}/pbx/_admin/calls")
    resp = _originate(f"{uon}/pbx", client, code="152", phone="+375296254070", clientId=PBX_SECRET)
    assert resp.status_code == 200 and resp.json()["ok"] is True
    assert (
        _originate(f"{uon}/pbx", client, code="1", phone="+3752962540", clientId="x").status_code
        == 403
    )
    assert [c["code"] for c in client.get(f"{uon}/pbx/_admin/calls").json()] == ["152"]
    # The PBX's requests are its own, not U-ON's.
    assert not client.get(f"{uon}/_admin/requests", params={"path": "/api/makecallexternal"}).json()
    assert client.get(f"{uon}/pbx/_admin/health").json()["provider"] == "pbx"


# ---- senders -------------------------------------------------------------------------------


class Recorder:
    """A tiny receiver that records every request and answers like the real one."""

    def __init__(self, status: int = 200) -> None:
        self.seen: list[dict[str, Any]] = []
        self.status = status
        self.app = Starlette(routes=[Route("/{path:path}", self._record, methods=["GET", "POST"])])

    async def _record(self, request: Request) -> JSONResponse:
        body = await request.body()
        self.seen.append(
            {
                "method": request.method,
                "path": request.url.path,
                "query": dict(request.query_params),
                "headers": dict(request.headers),
                "body": body,
            }
        )
        return JSONResponse({"status": "OK", "ids": [len(self.seen)]}, self.status)


@pytest.fixture
def recorder() -> Iterator[tuple[Recorder, str]]:
    rec = Recorder()
    with running_server(rec.app) as base:
        yield rec, base


def test_uon_webhooks_as_query_form_and_json(recorder: tuple[Recorder, str]) -> None:
    rec, base = recorder
    hook = UonWebhook(type_id=4, client_id=42, uon_id="67054", client={"u_name": "Анна"})
    for encoding in ("query", "form", "json"):
        summary = send_uon_webhooks(f"{base}/webhooks/uon/k", [hook], encoding=encoding)
        assert summary["sent"] == summary["ok"] == 1
        assert summary["answers"] == [{"status": "OK", "ids": [len(rec.seen)]}]
    query, form, as_json = rec.seen
    assert query["method"] == "GET" and query["body"] == b""
    assert query["query"] == {
        "type_id": "4", "client_id": "42", "uon_id": "67054", "client": '{"u_name":"Анна"}',
    }  # fmt: skip
    assert form["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert dict(parse_qsl(form["body"].decode())) == query["query"]
    assert as_json["headers"]["content-type"] == "application/json"
    assert orjson.loads(as_json["body"]) == {
        "type_id": 4, "client_id": "42", "uon_id": "67054", "client": {"u_name": "Анна"},
    }  # fmt: skip


def test_uon_webhook_with_russian_keys_and_a_secret(recorder: tuple[Recorder, str]) -> None:
    rec, base = recorder
    hook = UonWebhook(method="call", user_id=2, phone=KNOWN_PHONE, client_id="6", request_id="8")
    send_uon_webhooks(f"{base}/uon/webhook", [hook], encoding="form", russian=True, secret="s3")
    seen = rec.seen[-1]
    fields = dict(parse_qsl(seen["body"].decode()))
    assert fields == {
        "метод": "call", "ID пользователя": "2", "телефон": KNOWN_PHONE, "ID клиента": "6",
        "ID заявки": "8",
    }  # fmt: skip
    assert seen["headers"]["x-webhook-secret"] == "s3"
    assert set(RUSSIAN_KEYS.values()) >= set(fields)


def test_a_whole_call_and_a_missed_one() -> None:
    answered = call_events("c-1", "+375296254070", extension="151")
    assert [e.event for e in answered] == ["start", "dial", "bridge", "hangup"]
    assert answered[-1].status == "answered" and answered[-1].duration == 42
    assert {e.call_id for e in answered} == {"c-1"}
    times = [e.timestamp for e in answered]
    assert times == sorted(times)
    missed = call_events("c-2", UNKNOWN_PHONE, direction="out", outcome="missed")
    assert [e.event for e in missed] == ["start", "dial", "hangup"]
    assert missed[-1].status == "missed" and missed[-1].direction == "out"


def test_telephony_sender_one_request_per_event_or_a_batch(recorder: tuple[Recorder, str]) -> None:
    rec, base = recorder
    events = call_events("c-3", "+375296254070")
    summary = send_telephony(f"{base}/webhooks/telephony/k", events)
    assert summary["sent"] == summary["ok"] == 4
    bodies = [orjson.loads(s["body"]) for s in rec.seen]
    assert [b["event"] for b in bodies] == ["start", "dial", "bridge", "hangup"]
    assert bodies[0] == {
        "event": "start", "call_id": "c-3", "direction": "in", "phone": "+375296254070",
        "extension": "151", "timestamp": bodies[0]["timestamp"],
    }  # fmt: skip
    batch = send_telephony(f"{base}/webhooks/telephony/k", events, batch=True)
    assert batch["sent"] == 1
    assert [e["event"] for e in orjson.loads(rec.seen[-1]["body"])] == [
        "start", "dial", "bridge", "hangup",
    ]  # fmt: skip


def test_sender_commands(recorder: tuple[Recorder, str]) -> None:
    rec, base = recorder
    runner = CliRunner()
    out = runner.invoke(
        emulate,
        ["uon-webhooks", "--url", f"{base}/webhooks/uon/k", "--as", "json", "--type-id", "4",
         "--client-id", "100", "--count", "3", "--russian"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["ok"] == 3
    ids = [orjson.loads(s["body"])["ID клиента"] for s in rec.seen]
    assert ids == ["100", "102", "104"]
    out = runner.invoke(
        emulate,
        ["telephony-events", "--url", f"{base}/webhooks/telephony/k", "--phone", KNOWN_PHONE,
         "--call-id", "cli-1", "--status", "busy"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["call_id"] == "cli-1"
    assert [orjson.loads(s["body"])["event"] for s in rec.seen[3:]] == ["start", "dial", "hangup"]
    out = runner.invoke(
        emulate,
        ["telephony-events", "--url", f"{base}/webhooks/telephony/k", "--phone", KNOWN_PHONE,
         "--event", "hangup", "--status", "missed", "--duration", "0"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert orjson.loads(rec.seen[-1]["body"])["status"] == "missed"
    assert runner.invoke(emulate, ["uon-webhooks", "--url", "ftp://x"]).exit_code != 0
    bad_client = runner.invoke(emulate, ["uon-webhooks", "--url", base, "--client", "[1]"])
    assert bad_client.exit_code != 0


def test_sender_command_exits_1_on_a_refusal() -> None:
    rec = Recorder(status=422)
    with running_server(rec.app) as base:
        out = CliRunner().invoke(
            emulate, ["uon-webhooks", "--url", f"{base}/webhooks/uon/k", "--type-id", "4"]
        )
    assert out.exit_code == 1
    assert json.loads(out.output)["statuses"] == {"422": 1}


def test_the_serve_commands_are_registered() -> None:
    runner = CliRunner()
    uon_help = runner.invoke(emulate, ["uon", "--help"]).output
    for option in ("--port", "--api-key", "--quota", "--with-pbx", "--pbx-client-id"):
        assert option in uon_help
    assert "--client-id" in runner.invoke(emulate, ["pbx", "--help"]).output


# ---- the suite's and the demo's parts ---------------------------------------------------------


def _integration() -> Any:
    from provider_emulators.reliability.spec import Integration

    return Integration(1, "rel", "wh-key", "/webhooks/uon/wh-key", {}, API_KEY)


def test_reliability_webhooks_name_clients_the_emulator_knows(
    uon: str, client: httpx.Client
) -> None:
    integ = _integration()
    assert RELIABILITY.endpoint(integ) == "/webhooks/uon/wh-key"
    seen: set[str] = set()
    for n, ids in ((0, [1]), (1, [1]), (0, range(101, 201)), (7, [3, 9])):
        hook = RELIABILITY.webhook(integ, n, ids)
        assert hook.path == "/webhooks/uon/wh-key"
        [external] = hook.entities["customers"]
        assert hook.body["client_id"] == int(external) and hook.body["type_id"] in (3, 4)
        assert external not in seen
        seen.add(external)
        user = client.get(api(uon, f"user/{external}.json"))
        assert user.status_code == 200 and user.json()["user"][0]["u_id"] == external
    # The emulator's logged API paths fall under `api_paths`.
    logged = {e["path"] for e in client.get(f"{uon}/_admin/requests").json()}
    under = [
        p for p in logged if any(p == a or p.startswith(a + "/") for a in RELIABILITY.api_paths)
    ]
    assert "/countries.json" in under and any(p.startswith("/user/") for p in under)


def test_reliability_oracle_200s_target_the_keyed_path_and_bodies_are_json() -> None:
    from hypothesis import HealthCheck, given, settings

    integ = _integration()
    for name, _method, template, _headers, _body, status in RELIABILITY.oracle(integ):
        if status == 200:
            assert template.startswith("{path}"), name

    @settings(max_examples=50, database=None, suppress_health_check=list(HealthCheck))
    @given(RELIABILITY.payload_strategy(integ))
    def draws(value: Any) -> None:
        json.dumps(value)  # as the suite sends it (integers of any size)
        if isinstance(value, dict):
            assert value.get("type_id") != 47 and value.get("method") != "call"

    draws()


class FakeCrmSync:
    """`crm-sync` as the demo calls it: records arguments and environment."""

    def __init__(self, existing: list[dict[str, Any]] | None = None) -> None:
        self.calls: list[tuple[tuple[str, ...], dict[str, str]]] = []
        self.existing = existing or []

    def __call__(self, *args: str, **env: str) -> str:
        self.calls.append((args, env))
        if args[:2] == ("integrations", "list"):
            return json.dumps(self.existing)
        if args[:2] == ("integrations", "show"):
            return json.dumps({**self.existing[0], "webhook_key": "revealed"})
        if args[:2] == ("operator-tokens", "create"):
            return json.dumps({"id": 1, "name": args[2], "token": "op-token-0123"})
        return json.dumps({"id": 5, "name": "Demo travel agency", "webhook_key": "k5"})


def test_demo_adds_the_travel_agency_once_without_secrets_in_arguments() -> None:
    assert DEMO.provider == "uon"
    serve = DEMO.serve_args(8094)
    assert serve[:4] == ["emulate", "uon", "--port", "8094"] and "--with-pbx" in serve
    fake = FakeCrmSync()
    [added] = DEMO.ensure_integrations(fake, "http://127.0.0.1:8094")
    assert added["webhook_key"] == "k5"
    assert added["demo_operator_token"] == "op-token-0123"  # for the demo's lookups
    [(args, env)] = [c for c in fake.calls if c[0][:2] == ("integrations", "add")]
    assert args[:4] == ("integrations", "add", "--provider", "uon")
    expected = {
        "--pbx-url": "http://127.0.0.1:8094/pbx",
        "--user-extensions": "2=151,4=152",
        "--default-region": "BY",
    }
    for flag, value in expected.items():
        assert args[args.index(flag) + 1] == value
    assert "--log-calls" in args
    assert env == {
        "CRM_SYNC_UON_API_KEY": "demo-uon-api-key",
        "CRM_SYNC_UON_PBX_SECRET": DEMO_PBX_SECRET,
    }
    assert not any(secret in args for secret in env.values())
    again = FakeCrmSync(existing=[{"id": 5, "provider": "uon", "name": "Demo travel agency"}])
    assert DEMO.ensure_integrations(again, "http://x")[0]["webhook_key"] == "revealed"
    assert not any(a[:2] == ("integrations", "add") for a, _ in again.calls)


def test_demo_traffic_calls_a_client_change_and_a_click_to_call(
    recorder: tuple[Recorder, str], capsys: pytest.CaptureFixture[str]
) -> None:
    rec, base = recorder
    item = {"id": 5, "name": "Demo travel agency", "webhook_key": "k5"}
    DEMO.send_webhooks(base, [item | {"demo_operator_token": "op-token-0123"}])
    telephony = [s for s in rec.seen if s["path"] == "/webhooks/telephony/k5"]
    uon_hooks = [s for s in rec.seen if s["path"] == "/webhooks/uon/k5"]
    events = [orjson.loads(s["body"]) for s in telephony]
    assert len({e["call_id"] for e in events}) == 3
    assert {e["phone"] for e in events} >= {"+" + KNOWN_PHONE, UNKNOWN_PHONE}
    changed = dict(parse_qsl(uon_hooks[0]["body"].decode()))
    assert changed["type_id"] == "4" and changed["client_id"] == KNOWN_PHONE
    click = orjson.loads(uon_hooks[1]["body"])
    assert click["метод"] == "call" and click["ID пользователя"] == "2"
    lookups = [s for s in rec.seen if s["path"] == "/api/v1/uon/customers/by-phone"]
    known = "+" + KNOWN_PHONE
    assert [s["query"]["phone"] for s in lookups] == [known, UNKNOWN_PHONE, known]
    assert {s["headers"]["authorization"] for s in lookups} == {"Bearer op-token-0123"}
    printed = capsys.readouterr().out
    assert "click-to-call" in printed and "client changed" in printed
    assert "who is" in printed and "op-token" not in printed
