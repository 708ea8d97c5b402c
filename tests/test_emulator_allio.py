"""ALLIO emulator over real HTTP: records and their spelling variants, auth, paging, quota,
log, faults, webhooks."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import orjson
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from provider_emulators import allio, faults, framework
from provider_emulators.allio.records import (
    ALL_VARIANTS,
    BAD_PHONES,
    make_record,
    person,
    variants_of,
)
from provider_emulators.cli import emulate
from provider_emulators.testing import free_port, running_server

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
ZONED = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$")
MOSCOW = timezone(timedelta(hours=3))
TIMES = ("till", "updated_at", "created")
PERSON_KEY = {"reserve": "client", "dealcard": "buyer"}


@pytest.fixture(scope="module")
def shared_emu() -> Iterator[tuple[Starlette, str]]:
    app = allio.create_app(token=TOKEN, quota_per_second=None, seed=1)
    with running_server(app) as url:
        yield app, url


@pytest.fixture
def emu(shared_emu) -> Iterator[tuple[Starlette, httpx.Client]]:
    """An ALLIO emulator without quota (state reset), and a client that authenticates."""
    app, url = shared_emu
    state = app.state.emulator
    state.log.clear()
    state.faults.clear()
    app.state.records.reset()
    with httpx.Client(base_url=url, headers=AUTH, timeout=5) as client:
        yield app, client


def fetch(client: httpx.Client, entity: str, indexes: list[int], **extra: int) -> dict:
    resp = client.post(f"/{entity}/list", json={"indexes": indexes, **extra})
    assert resp.status_code == 200, resp.text
    return resp.json()


def assert_within_quota(entries: list[dict], limit: int, window: float = 1.0) -> None:
    times = sorted(e["monotonic"] for e in entries if not e["quota_rejected"])
    for first, later in zip(times, times[limit:], strict=False):
        assert later - first >= window


# ---- records -------------------------------------------------------------------------


def test_records_are_deterministic_and_complete(emu):
    _, client = emu
    body = fetch(client, "reserve", [1, 2, 5421])
    assert body["success"] is True and body["total"] == 3
    assert body["data"] == [make_record("reserve", i) for i in (1, 2, 5421)]
    assert fetch(client, "reserve", [5421])["data"][0] == body["data"][2]
    rec = body["data"][2]
    assert {"id", "status", "type", "till", "space_id", "manager", "comment", "client"} <= set(rec)
    assert {"updated_at", "price", "created"} <= set(rec)
    assert set(rec["manager"]) == {"id", "fullname", "city", "is_agency"}
    assert set(rec["client"]) == {"id", "first", "middle", "last", "phone"}
    assert STAMP.match(rec["till"]) and STAMP.match(rec["updated_at"])
    assert rec["client"]["id"] == 100000 + 5421 % 997
    assert rec["status"] in {"ACTIVE", "EXPIRED", "CANCELLED", "CONVERTED"}


def test_dealcards_have_buyer_and_clients_repeat(emu):
    _, client = emu
    deal = fetch(client, "dealcard", [7])["data"][0]
    assert "buyer" in deal and "client" not in deal
    assert {"sum", "stage"} <= set(deal)
    a, b = fetch(client, "reserve", [5, 5 + 997])["data"]
    assert a["client"] == b["client"] == person(100005)
    assert deal["buyer"] == person(100007) | {"id": "100007"}  # id % 10 == 7: a text id


def test_phones_mostly_valid_some_garbage():
    phones = [person(100000 + i)["phone"] for i in range(997)]
    bad = [p for p in phones if p in BAD_PHONES]
    assert set(bad) == set(BAD_PHONES)
    assert 0.03 < len(bad) / len(phones) < 0.2
    for phone in phones:
        if phone not in BAD_PHONES:
            digits = re.sub(r"\D", "", phone)
            assert len(digits) == 11 and digits[0] in "78" and digits[1] == "9", phone


def test_absent_ids(emu):
    _, client = emu
    body = fetch(client, "reserve", [0, -5, 3, 3, 7])
    assert [r["id"] for r in body["data"]] == [3, 7] and body["total"] == 2
    assert fetch(client, "dealcard", [])["data"] == []


# ---- spelling variants -------------------------------------------------------------------


def _instant(stamp: str) -> datetime:
    """A zone-less ALLIO time is Moscow time; a zoned one carries its offset."""
    parsed = datetime.fromisoformat(stamp)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=MOSCOW)


def _unvaried(entity: str, record: dict) -> dict:
    """``record`` respelled the plain way: bool flag, zone-less Moscow times, int ids."""
    plain = dict(record, id=int(record["id"]))
    agency = record["manager"]["is_agency"]
    if isinstance(agency, str):
        plain["manager"] = dict(record["manager"], is_agency={"TRUE": True, "FALSE": False}[agency])
    for key in TIMES:
        moscow = _instant(record[key]).astimezone(MOSCOW).replace(tzinfo=None)
        plain[key] = moscow.strftime("%Y-%m-%d %H:%M:%S")
    key = PERSON_KEY[entity]
    if key in record:
        plain[key] = dict(record[key], id=int(record[key]["id"]))
    return plain


def _list_all(client: httpx.Client, entity: str, ids: list[int]) -> list[dict]:
    data = []
    for start in range(0, len(ids), 100):
        body = fetch(client, entity, ids[start : start + 100])
        assert body["total"] == len(ids[start : start + 100])
        data += body["data"]
    return data


VARIANT_IDS = list(range(1, 301))


@pytest.mark.parametrize("entity", ["reserve", "dealcard"])
def test_variants_appear_and_only_respell(emu, entity):
    _, client = emu
    data = _list_all(client, entity, VARIANT_IDS)
    assert [int(r["id"]) for r in data] == VARIANT_IDS  # every id is still there, in order
    seen: dict[str, list[int]] = {name: [] for name in ALL_VARIANTS}
    offsets = set()
    for i, rec in zip(VARIANT_IDS, data, strict=True):
        plain = make_record(entity, i, variants=False)
        has = variants_of(entity, i)
        agency = rec["manager"]["is_agency"]
        if isinstance(agency, str):
            seen["agency_text"].append(i)
            assert agency == ("TRUE" if plain["manager"]["is_agency"] else "FALSE")
        else:
            assert isinstance(agency, bool)
        if ZONED.match(rec["till"]):
            seen["zoned_times"].append(i)
            assert all(ZONED.match(rec[k]) for k in TIMES)
            offsets.add(rec["till"][-6:])
        else:
            assert all(STAMP.match(rec[k]) for k in TIMES)
        for key in TIMES:  # the same instant, only spelled differently
            assert _instant(rec[key]) == _instant(plain[key]), (i, key)
        person_key = PERSON_KEY[entity]
        if person_key not in rec:
            seen["no_client"].append(i)
        elif isinstance(rec[person_key]["id"], str):
            seen["text_person_id"].append(i)
            assert rec[person_key]["id"] == str(plain[person_key]["id"])
        if isinstance(rec["id"], str):
            seen["text_id"].append(i)
            assert rec["id"] == str(i)
        else:
            assert type(rec["id"]) is int
        expected = {k: v for k, v in plain.items() if k != person_key or person_key in rec}
        assert _unvaried(entity, rec) == expected
        assert {name for name, ids in seen.items() if i in ids} == has, i

    assert seen["agency_text"] == [i for i in VARIANT_IDS if i % 6 == 3]
    assert seen["zoned_times"] == [i for i in VARIANT_IDS if i % 7 == 2]
    assert seen["text_id"] == [i for i in VARIANT_IDS if i % 9 == 5]
    assert seen["text_person_id"] == [i for i in VARIANT_IDS if i % 10 == 7]  # all odd
    if entity == "reserve":
        assert seen["no_client"] == [i for i in VARIANT_IDS if i % 8 == 4]
    else:
        assert seen["no_client"] == []  # deal cards always keep their buyer
    assert {"+03:00", "+05:00"} <= offsets
    for name, ids in seen.items():  # each a stable minority
        if ids:
            assert 1 / 12 < len(ids) / len(VARIANT_IDS) < 1 / 4, name
    assert {"TRUE", "FALSE"} <= {r["manager"]["is_agency"] for r in data}


def test_seed_example_reads_like_the_seed(emu):
    _, client = emu
    rec = fetch(client, "reserve", [5421])["data"][0]
    assert rec["id"] == 5421 and STAMP.match(rec["till"]) and STAMP.match(rec["updated_at"])
    assert rec["manager"]["is_agency"] == "FALSE" and type(rec["client"]["id"]) is int


def test_variants_are_deterministic_across_emulators():
    bodies = []
    for seed in (1, 2):
        app = allio.create_app(token=TOKEN, quota_per_second=None, seed=seed)
        with running_server(app) as url, httpx.Client(base_url=url, headers=AUTH) as client:
            bodies.append(
                [
                    client.post(f"/{entity}/list", json={"indexes": VARIANT_IDS[:100]}).content
                    for entity in ("reserve", "dealcard")
                ]
            )
    assert bodies[0] == bodies[1]
    reserves = orjson.loads(bodies[0][0])["data"]
    assert reserves == [make_record("reserve", i) for i in VARIANT_IDS[:100]]
    assert {name for i in VARIANT_IDS[:100] for name in variants_of("reserve", i)} == ALL_VARIANTS


def _is_plain(rec: dict, entity: str) -> bool:
    return (
        type(rec["id"]) is int
        and isinstance(rec["manager"]["is_agency"], bool)
        and all(STAMP.match(rec[k]) for k in TIMES)
        and type(rec[PERSON_KEY[entity]]["id"]) is int
    )


def test_variants_off_gives_the_plain_spelling():
    app = allio.create_app(token=TOKEN, quota_per_second=None, variants=False)
    with running_server(app) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        for entity in ("reserve", "dealcard"):
            data = fetch(client, entity, VARIANT_IDS[:100])["data"]
            assert all(_is_plain(rec, entity) for rec in data)
            assert data == [make_record(entity, i, variants=False) for i in VARIANT_IDS[:100]]
    with pytest.raises(ValueError, match="unknown variants: nope"):
        make_record("reserve", 1, variants=["nope"])


def test_admin_variants_knob(emu):
    _, client = emu
    everything = sorted(ALL_VARIANTS)
    assert client.get("/_admin/variants").json() == {
        "variants": everything,
        "available": everything,
    }
    assert client.put("/_admin/variants", json={"variants": False}).json()["variants"] == []
    assert all(_is_plain(r, "reserve") for r in fetch(client, "reserve", VARIANT_IDS[:60])["data"])
    only = client.put("/_admin/variants", json={"variants": ["no_client"]}).json()
    assert only["variants"] == ["no_client"]
    data = fetch(client, "reserve", [4, 5, 9])["data"]  # 4: no client; 5 text id, 9 zoned
    assert "client" not in data[0] and data[1]["id"] == 5 and STAMP.match(data[2]["till"])
    for bad in ({"variants": ["nope"]}, {"variants": "no_client"}, {}, [True]):
        assert client.put("/_admin/variants", json=bad).status_code == 400
    assert client.put("/_admin/variants", content=b"{x").status_code == 400
    assert client.delete("/_admin/variants").json()["variants"] == everything
    client.put("/_admin/variants", json={"variants": False})
    client.delete("/_admin/records")  # a records reset restores the default variants too
    assert fetch(client, "reserve", [5])["data"][0]["id"] == "5"


# ---- auth, validation, paging ------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN])
def test_auth_required(emu, header):
    _, client = emu
    headers = {"Authorization": header} if header else {}
    with httpx.Client(base_url=str(client.base_url), headers=headers) as anon:
        resp = anon.post("/reserve/list", json={"indexes": [1]})
    assert resp.status_code == 401
    assert resp.json() == {"success": False, "error": "unauthorized"}


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b"{}",
        b'{"indexes": "1,2"}',
        b'{"indexes": [1, "2"]}',
        b'{"indexes": [true]}',
        b'{"indexes": [1], "limit": 101}',
        b'{"indexes": [1], "limit": 0}',
        b'{"indexes": [1], "offset": -1}',
    ],
)
def test_bad_body_is_400(emu, body):
    _, client = emu
    resp = client.post("/dealcard/list", content=body)
    assert resp.status_code == 400
    assert resp.json()["success"] is False and resp.json()["error"]


def test_paging(emu):
    _, client = emu
    ids = list(range(1, 251))
    pages = [fetch(client, "reserve", ids, limit=100, offset=off) for off in (0, 100, 200)]
    assert [len(p["data"]) for p in pages] == [100, 100, 50]
    assert all(p["total"] == 250 for p in pages)
    assert [int(r["id"]) for p in pages for r in p["data"]] == ids  # some ids are text
    assert fetch(client, "reserve", ids, offset=300) == {"success": True, "data": [], "total": 250}
    assert len(fetch(client, "reserve", ids, limit=7)["data"]) == 7


# ---- quota -------------------------------------------------------------------------------


def test_quota_window_unit(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(framework.time, "monotonic", lambda: now[0])
    quota = framework.SlidingWindowQuota(2)
    for t, expected in [(0.0, True), (0.5, True), (0.999, False), (0.9999, False), (1.0, True)]:
        now[0] = 100.0 + t
        assert quota.acquire("ip")[0] is expected, t
    assert quota.acquire("other-ip")[0] is True


def test_quota_429_then_recovers():
    app = allio.create_app(token=TOKEN, quota_per_second=2)
    with running_server(app) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        statuses = [client.post("/reserve/list", json={"indexes": [1]}) for _ in range(3)]
        assert [r.status_code for r in statuses] == [200, 200, 429]
        assert statuses[2].headers["retry-after"] == "1"
        assert statuses[2].json() == {"success": False, "error": "too_many_requests"}
        for _ in range(4):  # rejected requests do not extend the window
            assert client.post("/reserve/list", json={"indexes": [1]}).status_code == 429
        first = app.state.emulator.log.entries()[0]["monotonic"]
        time.sleep(max(0.0, first + 1.0 - time.monotonic()) + 0.02)
        assert client.post("/reserve/list", json={"indexes": [1]}).status_code == 200
        # another source IP has its own window
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(base_url=url, headers=AUTH, transport=transport) as other:
            assert other.post("/reserve/list", json={"indexes": [1]}).status_code == 200
        log = client.get("/_admin/requests").json()
    assert [e["quota_rejected"] for e in log][:7] == [False, False] + [True] * 5
    assert {e["ip"] for e in log} == {"127.0.0.1", "127.0.0.2"}
    assert_within_quota([e for e in log if e["ip"] == "127.0.0.1"], 2)


def test_quota_exact_under_concurrency():
    app = allio.create_app(token=TOKEN, quota_per_second=2)

    async def burst(url: str) -> list[int]:
        async with httpx.AsyncClient(base_url=url, headers=AUTH) as client:
            calls = [client.post("/dealcard/list", json={"indexes": [i]}) for i in range(20)]
            return [r.status_code for r in await asyncio.gather(*calls)]

    with running_server(app) as url:
        statuses = asyncio.run(burst(url))
    assert statuses.count(200) == 2 and statuses.count(429) == 18
    assert_within_quota(app.state.emulator.log.entries(), 2)


# ---- request log -------------------------------------------------------------------------


def test_request_log(emu):
    _, client = emu
    fetch(client, "reserve", [11, 12])
    mark = time.time()
    client.post("/dealcard/list", json={"indexes": [13]})
    client.post("/dealcard/list", content=b"garbage")
    client.get("/_admin/health")  # admin calls are not logged
    log = client.get("/_admin/requests").json()
    assert len(log) == 3
    entry = log[0]
    assert {"time", "monotonic", "method", "path", "status", "ip", "ids", "quota_rejected"} <= set(
        entry
    )
    assert entry["method"] == "POST" and entry["path"] == "/reserve/list"
    assert entry["status"] == 200 and entry["ids"] == [11, 12] and entry["ip"] == "127.0.0.1"
    assert entry["quota_rejected"] is False and entry["fault"] is None
    assert abs(entry["time"] - time.time()) < 5
    recent = client.get("/_admin/requests", params={"since": mark}).json()
    assert [(e["ids"], e["status"]) for e in recent] == [([13], 200), (None, 400)]
    assert len(client.get("/_admin/requests", params={"path": "/reserve/list"}).json()) == 1
    assert client.get("/_admin/requests", params={"since": "x"}).status_code == 400
    assert client.delete("/_admin/requests").status_code == 200
    assert client.get("/_admin/requests").json() == []


def test_health(emu):
    _, client = emu
    body = client.get("/_admin/health").json()
    assert body["status"] == "ok" and body["provider"] == "allio"


# ---- faults ------------------------------------------------------------------------------


def test_fault_admin_api(emu):
    _, client = emu
    defaults = client.get("/_admin/faults").json()
    assert defaults["error_rate"] == 0 and defaults["retry_after"] == "1"
    set_ = client.put("/_admin/faults", json={"latency_ms": 5, "error_rate": 0.5}).json()
    assert set_["latency_ms"] == 5 and set_["error_rate"] == 0.5
    merged = client.post("/_admin/faults", json={"drop_rate": 0.1}).json()
    assert merged["error_rate"] == 0.5 and merged["drop_rate"] == 0.1
    for bad in ({"nope": 1}, {"error_rate": 2}, {"latency_ms": -1}, {"force_429": "x"}, [1]):
        assert client.put("/_admin/faults", json=bad).status_code == 400
    assert client.delete("/_admin/faults").json() == defaults


def test_fault_latency(emu):
    _, client = emu
    client.put("/_admin/faults", json={"latency_ms": 200})
    started = time.perf_counter()
    fetch(client, "reserve", [1])
    assert time.perf_counter() - started >= 0.2


def test_fault_errors_are_seeded(emu):
    _, client = emu

    def run() -> list[int]:
        client.put("/_admin/faults", json={"error_rate": 0.5, "seed": 42})
        return [client.post("/reserve/list", json={"indexes": [1]}).status_code for _ in range(20)]

    first = run()
    assert first == run()
    assert {500, 503} <= set(first) and 200 in first
    client.put("/_admin/faults", json={"error_rate": 1})
    resp = client.post("/reserve/list", json={"indexes": [1]})
    assert resp.status_code in (500, 503) and resp.json()["success"] is False
    assert client.get("/_admin/requests").json()[-1]["fault"] == "error"


def test_fault_force_429_count_and_retry_after(emu):
    _, client = emu
    client.put("/_admin/faults", json={"force_429": 2})
    first, second, third = (client.post("/reserve/list", json={"indexes": [1]}) for _ in range(3))
    assert (first.status_code, second.status_code, third.status_code) == (429, 429, 200)
    assert first.headers["retry-after"] == "1"
    assert first.json() == {"success": False, "error": "too_many_requests"}
    client.put("/_admin/faults", json={"force_429": 1, "retry_after": None})
    assert "retry-after" not in client.post("/reserve/list", json={"indexes": [1]}).headers
    client.put("/_admin/faults", json={"force_429": 1, "retry_after": 7})
    assert client.post("/reserve/list", json={"indexes": [1]}).headers["retry-after"] == "7"
    log = client.get("/_admin/requests").json()
    assert [e["fault"] for e in log] == ["force_429", "force_429", None, "force_429", "force_429"]
    assert not any(e["quota_rejected"] for e in log)


def test_fault_429_storm(emu):
    _, client = emu
    client.put("/_admin/faults", json={"force_429_seconds": 0.3})
    assert client.get("/_admin/faults").json()["force_429_seconds"] > 0
    assert client.post("/reserve/list", json={"indexes": [1]}).status_code == 429
    assert client.post("/reserve/list", json={"indexes": [1]}).status_code == 429
    time.sleep(0.35)
    assert client.post("/reserve/list", json={"indexes": [1]}).status_code == 200


def test_fault_malformed(emu):
    _, client = emu
    good = client.post("/reserve/list", json={"indexes": [1, 2]})
    client.put("/_admin/faults", json={"malformed_rate": 1})
    bad = client.post("/reserve/list", json={"indexes": [1, 2]})
    assert bad.status_code == 200 and bad.headers["content-type"] == "application/json"
    assert good.content.startswith(bad.content) and len(bad.content) < len(good.content)
    with pytest.raises(json.JSONDecodeError):
        bad.json()
    # errors are not corrupted, only 200s
    assert client.post("/reserve/list", content=b"x").json()["success"] is False


def test_fault_drop(emu):
    _, client = emu
    client.put("/_admin/faults", json={"drop_rate": 1})
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/reserve/list", json={"indexes": [1]})
    client.delete("/_admin/faults")
    assert fetch(client, "reserve", [1])["total"] == 1
    log = client.get("/_admin/requests").json()
    assert (log[0]["fault"], log[0]["status"]) == ("drop", None)


def test_corrupt_always_invalid():
    for body in (b"", b"{}", b"123456", b'{"a": 1}', b"[1, 22]"):
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(faults.corrupt(body))


# ---- admin records -----------------------------------------------------------------------


def test_admin_put_and_delete_records(emu):
    _, client = emu
    custom = {"status": "ACTIVE", "client": {"id": 1, "phone": "#ERROR!"}, "extra": [1]}
    stored = client.put("/_admin/records/reserve/42", json=custom).json()
    assert stored == custom | {"id": 42}
    assert fetch(client, "reserve", [42, 43])["data"][0] == stored
    assert client.get("/_admin/records/reserve/42").json() == stored
    assert client.delete("/_admin/records/dealcard/43").json()["deleted"] is True
    assert fetch(client, "dealcard", [43, 44])["total"] == 1
    assert client.get("/_admin/records/dealcard/43").status_code == 404
    assert fetch(client, "reserve", [43])["total"] == 1  # other entity untouched
    assert client.put("/_admin/records/booking/1", json={}).status_code == 404
    assert client.put("/_admin/records/reserve/1", json=[1]).status_code == 400
    assert client.delete("/_admin/records").json() == {"reset": 2}
    assert fetch(client, "reserve", [42])["data"][0] == make_record("reserve", 42)
    assert fetch(client, "dealcard", [43])["total"] == 1


# ---- webhook sender ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_receiver() -> Iterator[tuple[str, list[bytes]]]:
    """A tiny app that records raw webhook bodies; path /deny answers 403."""
    bodies: list[bytes] = []

    async def hook(request: Request) -> Response:
        bodies.append(await request.body())
        return Response(status_code=403 if request.url.path == "/deny" else 200)

    routes = [Route("/hook", hook, methods=["POST"]), Route("/deny", hook, methods=["POST"])]
    with running_server(Starlette(routes=routes)) as url:
        yield url, bodies


@pytest.fixture
def receiver(shared_receiver) -> tuple[str, list[bytes]]:
    shared_receiver[1].clear()
    return shared_receiver


def test_send_webhooks_exact_body(receiver):
    url, bodies = receiver
    summary = allio.send_webhooks(
        f"{url}/hook", "u-1", "RESERVE_ADD", [1, 2], count=5, concurrency=3
    )
    assert summary["sent"] == 5 and summary["ok"] == 5
    assert summary["statuses"] == {"200": 5} and summary["errors"] == {}
    assert bodies == [b'{"uuid":"u-1","command":"RESERVE_ADD","indexes":[1,2]}'] * 5


def test_send_webhooks_sources_and_errors(receiver):
    url, bodies = receiver
    allio.send_webhooks(f"{url}/hook", "u", "DEALCARD_DEL", allio.random_indexes(3), count=4)
    allio.send_webhooks(f"{url}/hook", "u", "RESERVE_MOD", lambda n: [n], count=2)
    allio.send_webhooks(f"{url}/hook", "u", "SPACE_CHANGED", iter([[9], [8]]), count=5)
    sent = [orjson.loads(b) for b in bodies]
    assert all(set(b) == {"uuid", "command", "indexes"} for b in sent)
    assert len({tuple(b["indexes"]) for b in sent[:4]}) > 1
    assert [b["indexes"] for b in sent[4:]] == [[0], [1], [9], [8]]
    denied = allio.send_webhooks(f"{url}/deny", "u", "RESERVE_ADD", [1])
    assert denied["ok"] == 0 and denied["statuses"] == {"403": 1}
    dead = allio.send_webhooks(f"http://127.0.0.1:{free_port()}/x", "u", "RESERVE_ADD", [1])
    assert dead["sent"] == 1 and dead["errors"] == {"ConnectError": 1}


def test_admin_send_webhooks(emu, receiver):
    _, client = emu
    url, bodies = receiver
    req = {"url": f"{url}/hook", "uuid": "u-2", "indexes": [5], "count": 3, "concurrency": 2}
    summary = client.post("/_admin/send_webhooks", json=req).json()
    assert summary["sent"] == 3 and summary["statuses"] == {"200": 3}
    assert orjson.loads(bodies[0]) == {"uuid": "u-2", "command": "RESERVE_ADD", "indexes": [5]}
    assert (
        client.post("/_admin/send_webhooks", json={"url": "ftp://x", "uuid": "u"}).status_code
        == 400
    )
    assert client.post("/_admin/send_webhooks", json=req | {"indexes": None}).status_code == 400
    rnd = req | {"indexes": None, "random_ids": True, "count": 2}
    assert client.post("/_admin/send_webhooks", json=rnd).json()["ok"] == 2


# ---- CLI ---------------------------------------------------------------------------------


def test_cli_allio_webhooks(receiver):
    url, bodies = receiver
    runner = CliRunner()
    args = ["allio-webhooks", "--url", f"{url}/hook", "--uuid", "u-3", "--indexes", "1,2,3"]
    result = runner.invoke(emulate, [*args, "--count", "2", "--command", "DEALCARD_ADD"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["statuses"] == {"200": 2}
    assert orjson.loads(bodies[0]) == {
        "uuid": "u-3",
        "command": "DEALCARD_ADD",
        "indexes": [1, 2, 3],
    }
    denied = ["allio-webhooks", "--url", f"{url}/deny", "--uuid", "u", "--random-ids"]
    assert runner.invoke(emulate, denied).exit_code == 1
    for bad in (
        ["--indexes", "1,x"],
        ["--command", "NOPE", "--indexes", "1"],
        [],
        ["--count", "0"],
    ):
        result = runner.invoke(emulate, ["allio-webhooks", "--url", url, "--uuid", "u", *bad])
        assert result.exit_code == 2 and "Error" in result.output


def test_cli_allio_serves_without_printing_token():
    port, secret = free_port(), "s3cret-token-value"
    code = "from provider_emulators.cli import emulate; emulate()"
    cmd = [sys.executable, "-c", code, "allio", "--port", str(port), "--token", secret]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                resp = httpx.post(
                    f"http://127.0.0.1:{port}/reserve/list",
                    json={"indexes": [1]},
                    headers={"Authorization": f"Bearer {secret}"},
                )
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        assert resp.status_code == 200 and resp.json()["total"] == 1
    finally:
        proc.terminate()
        output = proc.communicate(timeout=10)[0].decode()
    assert "ALLIO emulator" in output and secret not in output
