"""U-ON webhooks, click-to-call and telephony events through a real receiver (uvicorn), on
SQLite and PostgreSQL.

U-ON's requests by GET, form and JSON, with Russian keys (the seed's two examples as
given); the seed path's integration (account id, subdomain, the only one, ambiguous);
the secret and the ip_allowlist, with `X-Forwarded-For` believed only from a trusted
proxy; each type_id's route, the cached lookups a client webhook drops; click-to-call
against a real HTTP PBX stand-in (taken, refused, down, not configured); the telephony
system's events, single and in arrays. A refused request writes nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from ipaddress import ip_network
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import Engine, select, update
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from crm_schema.integrations import Integration, set_active
from crm_schema.providers.uon import uon_inbox, uon_originations, uon_phone_cache
from crm_schema.providers.uon_customers import upsert_customers, write_cache
from crm_schema.tables import integrations
from crm_sync.settings import get_settings
from provider_emulators.testing import free_port, running_server
from tests.conftest import count_rows
from tests.receiver_fixtures import assert_error, serve_receiver, sqlite_write_lock
from tests.uon_fixtures import PBX_SECRET, add_uon
from webhook_receiver.security import client_ip

FORM = {"content-type": "application/x-www-form-urlencoded"}
REFRESH = 0.2  # integrations re-read this often: a settings change shows within the test
SEED_PATH = "/uon/webhook"
# The seed's examples, as given.
SEED_FORM = "method=call&user_id=2&phone=375296254070&uon_id=67054"
SEED_JSON = {"method": "call", "user_id": 4, "phone": "375296254070", "uon_id": "67054"}


def key_path(integ: Integration) -> str:
    return f"/webhooks/uon/{integ.webhook_key}"


def inbox(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(select(uon_inbox).order_by(uon_inbox.c.id)).all()


def originations(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(select(uon_originations).order_by(uon_originations.c.id)).all()


def payload_of(row: Any) -> Any:
    return json.loads(row.payload) if isinstance(row.payload, str) else row.payload


def set_settings(engine: Engine, integ: Integration, **changes: Any) -> None:
    with engine.begin() as conn:
        current = conn.execute(
            select(integrations.c.settings).where(integrations.c.id == integ.id)
        ).scalar_one()
        conn.execute(
            update(integrations)
            .where(integrations.c.id == integ.id)
            .values(settings={**(current or {}), **changes})
        )


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


class Pbx:
    """A PBX stand-in over real HTTP: records every originate and answers as told."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []
        self.status = 200
        self.body: dict[str, Any] = {"ok": True, "call_id": "pbx-1"}

    async def originate(self, request: Request) -> JSONResponse:
        self.calls.append(dict(request.query_params))
        return JSONResponse(self.body, self.status)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/api/makecallexternal", self.originate)])


@pytest.fixture
def pbx() -> Iterator[tuple[Pbx, str]]:
    stand_in = Pbx()
    with running_server(stand_in.app()) as base:
        yield stand_in, base


@pytest.fixture
def trusted_proxies(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Set CRM_SYNC_TRUSTED_PROXIES for receivers started afterwards."""

    def trust(value: str) -> None:
        monkeypatch.setenv("CRM_SYNC_TRUSTED_PROXIES", value)
        get_settings.cache_clear()

    yield trust
    monkeypatch.delenv("CRM_SYNC_TRUSTED_PROXIES", raising=False)
    get_settings.cache_clear()


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextlib.contextmanager
def capture_logs(*names: str) -> Iterator[Captured]:
    """Every record of these loggers (INFO and up; the root's level is left alone)."""
    handler = Captured()
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg, name in zip(loggers, names, strict=True):
        lg.addHandler(handler)
        if name:
            lg.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)


# -- requests: GET, form, JSON, Russian keys ------------------------------------------------


def test_get_form_and_json_with_english_and_russian_keys(database_url: str, engine: Engine) -> None:
    integ = add_uon(engine)
    url = key_path(integ)
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        sent = [
            client.get(url, params={"type_id": "2", "request_id": "701", "secret": "x"}),
            client.post(url, content="type_id=16&request_id=702&extra=1", headers=FORM),
            client.post(url, json={"type_id": 17, "request_id": 703, "datetime": "2026-11-30"}),
            # Russian keys, any case and spacing; the form's value and the query's merge.
            client.post(
                url + "?type_id=2",
                content=urlencode({"  id  ЗАЯВКИ ": "704", "Телефон": "80296254070"}),
                headers=FORM,
            ),
            client.post(url, json={"type_id": "1", "lead_id": "705", "клиент": '{"u_id": 9}'}),
            # No Content-Type: a body that starts with "{" is JSON, anything else a form.
            client.post(url, content=b'{"type_id": 2, "request_id": "706"}'),
            client.post(url, content=b"type_id=2&request_id=707"),
        ]
        for resp in sent:
            assert resp.status_code == 200, resp.text
            assert resp.json()["status"] == "OK"
    stored = inbox(engine)
    assert [r.external_id for r in stored] == [str(n) for n in range(701, 708)]
    assert [r.event for r in stored] == ["2", "16", "17", "2", "1", "2", "2"]
    assert [r.id for r in stored] == [resp.json()["ids"][0] for resp in sent]
    assert all(r.source == "uon" and r.integration_id == integ.id for r in stored)
    first, form, as_json, russian, lead = (payload_of(r) for r in stored[:5])
    # The request as received (never the secret), beside the normalised fields.
    assert first["raw"] == {"type_id": "2", "request_id": "701"}
    assert first["type_id"] == 2 and first["request_id"] == "701"
    assert form["raw"] == {"type_id": "16", "request_id": "702", "extra": "1"}
    assert as_json["raw"]["request_id"] == 703 and as_json["request_id"] == "703"
    assert as_json["datetime"] == "2026-11-30"
    assert russian["raw"] == {"type_id": "2", "  id  ЗАЯВКИ ": "704", "Телефон": "80296254070"}
    assert russian["phone"] == "80296254070" and russian["e164"] == "+375296254070"
    assert stored[3].phone == "+375296254070"
    assert lead["client"] == {"u_id": 9} and lead["lead_id"] == "705"


def test_bad_requests_are_refused_and_write_nothing(database_url: str, engine: Engine) -> None:
    integ = add_uon(engine)
    url = key_path(integ)
    with (
        serve_receiver(database_url, max_body_bytes=2048) as base,
        httpx.Client(base_url=base) as client,
    ):
        refused = [
            (
                client.post(
                    url, content=b"{not json", headers={"content-type": "application/json"}
                ),
                400,
            ),
            (client.post(url, json=[1, 2]), 400),
            (client.post(url, content=b"\xff\xfe=1", headers=FORM), 400),
            (client.post(url, content=b"a", headers={"content-type": "text/plain"}), 415),
            (client.post(url, content=b"x=" + b"1" * 4000, headers=FORM), 413),
            (client.get(url), 422),  # no type_id, no method=call
            (client.get(url, params={"type_id": "abc"}), 422),
            (client.get(url, params={"type_id": "2", "request_id": "a b"}), 422),
            (client.post(url, json={"type_id": 1, "lead_id": 1, "клиент": "[1]"}), 422),
            (client.post(url, json={"type_id": True, "request_id": 1}), 422),
            (client.post(url, json={"type_id": 2, "request_id": "1", "ID заявки": "2"}), 422),
            (client.get("/webhooks/uon/no-such-key", params={"type_id": "2"}), 404),
            (client.request("HEAD", url), 405),
        ]
        for resp, status in refused:
            if status == 405:
                assert resp.status_code == 405
                continue
            body = assert_error(resp, status)
            assert integ.webhook_key not in resp.text, body
        named = refused[8][0].json()
        assert named["fields"][0]["field"] == "клиент"  # the key as sent
        assert refused[6][0].json()["fields"][0]["field"] == "type_id"
    assert count_rows(engine, "uon_inbox") == 0


def test_an_event_without_the_id_it_should_name_is_stored_not_lost(
    database_url: str, engine: Engine
) -> None:
    integ = add_uon(engine)
    url = f"/webhooks/uon/{integ.webhook_key}"
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        answers = [
            client.get(url, params={"type_id": "4"}),
            client.get(url, params={"type_id": "2"}),
            client.get(url, params={"type_id": "5", "phone": "375296254070"}),
        ]
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    stored = inbox(engine)
    assert [(r.event, r.external_id, r.phone) for r in stored] == [
        ("4", None, None),
        ("2", None, None),
        ("5", None, "+375296254070"),
    ]


# -- the seed path: which integration, and who may post -------------------------------------


def test_seed_path_finds_the_integration(database_url: str, engine: Engine) -> None:
    with (
        serve_receiver(database_url, integrations_refresh_seconds=REFRESH) as base,
        httpx.Client(base_url=base) as client,
    ):
        q = {"type_id": "2", "request_id": "1"}
        # No U-ON integration at all.
        assert_error(client.get(SEED_PATH, params=q | {"secret": "nothing"}), 404)
        alone = add_uon(engine, name="alone")
        # The only active one, whatever uon_id says.
        assert eventually(
            lambda: (
                client.get(SEED_PATH, params=q | {"secret": alone.webhook_key}).status_code == 200
            )
        )
        resp = client.get(SEED_PATH, params=q | {"uon_id": "999", "secret": alone.webhook_key})
        assert resp.status_code == 200, resp.text

        by_id = add_uon(engine, name="by-id", settings={"account_id": "111"})
        by_sub = add_uon(engine, name="by-sub", settings={"uon_subdomain": "Travel"})
        set_settings(engine, alone, account_id="222")
        time.sleep(REFRESH * 3)
        cases = [
            ({"uon_id": "111"}, by_id),
            ({"account_id": "222"}, alone),
            ({"uon_subdomain": "travel"}, by_sub),
            ({"uon_id": "999", "uon_subdomain": "travel"}, by_sub),  # the id matches none
        ]
        for fields, expected in cases:
            params = q | fields | {"secret": expected.webhook_key}
            resp = client.get(SEED_PATH, params=params)
            assert resp.status_code == 200, (fields, resp.text)
            assert inbox(engine)[-1].integration_id == expected.id
        written = count_rows(engine, "uon_inbox")

        # Several and none matches: 409 naming what to send ...
        for fields in ({}, {"uon_id": "999"}, {"uon_subdomain": "other"}):
            body = assert_error(client.get(SEED_PATH, params=q | fields), 409)
            assert "uon_id" in body["error"] and "uon_subdomain" in body["error"]
        # ... unless the secret is one of their keys.
        resp = client.get(SEED_PATH, params=q | {"secret": by_sub.webhook_key})
        assert resp.status_code == 200 and inbox(engine)[-1].integration_id == by_sub.id
        # The integration named by the fields wants its own key.
        assert_error(
            client.get(SEED_PATH, params=q | {"uon_id": "111", "secret": alone.webhook_key}),
            401,
        )
        # A disabled integration is not a candidate (the probe has no type_id: a 422
        # while by_id is still seen, never a row).
        with engine.begin() as conn:
            set_active(conn, by_id.id, False)
        probe = {"uon_id": "111", "secret": by_id.webhook_key}
        assert eventually(lambda: client.get(SEED_PATH, params=probe).status_code == 409)
    assert count_rows(engine, "uon_inbox") == written + 1


def test_secret_and_ip_allowlist(database_url: str, engine: Engine) -> None:
    integ = add_uon(engine)
    q = {"type_id": "2", "request_id": "1"}
    options = {"access_log": True, "log_level": "info"}
    with (
        serve_receiver(
            database_url, integrations_refresh_seconds=REFRESH, server_options=options
        ) as base,
        httpx.Client(base_url=base) as client,
        capture_logs("uvicorn.access") as logs,
    ):
        key = integ.webhook_key
        # No allowlist: the seed path needs the secret.
        assert_error(client.get(SEED_PATH, params=q), 401)
        assert_error(client.get(SEED_PATH, params=q | {"secret": "wrong"}), 401)
        assert_error(
            client.get(SEED_PATH, params=q | {"secret": key}, headers={"X-Webhook-Secret": "x"}),
            401,
        )
        assert client.get(SEED_PATH, params=q | {"secret": key}).status_code == 200
        resp = client.post(SEED_PATH, data=q, headers={"X-Webhook-Secret": key})
        assert resp.status_code == 200, resp.text
        assert client.get(key_path(integ), params=q).status_code == 200
        assert count_rows(engine, "uon_inbox") == 3

        # An allowlist without this address: 403 on both routes, key or not.
        set_settings(engine, integ, ip_allowlist=["192.0.2.0/24"])
        # Both routes' views of the settings refresh on their own: probe each with a body
        # that is refused (422, nothing written) while the allowlist is not yet seen.
        probe = {"type_id": "not a number"}
        assert eventually(lambda: client.get(SEED_PATH, params=probe).status_code == 403)
        assert eventually(lambda: client.get(key_path(integ), params=probe).status_code == 403)
        for resp in (
            client.get(SEED_PATH, params=q | {"secret": key}),
            client.get(key_path(integ), params=q),
            client.get(SEED_PATH, params=q, headers={"X-Forwarded-For": "192.0.2.7"}),
        ):
            assert_error(resp, 403)
        assert count_rows(engine, "uon_inbox") == 3

        # This address allowed: no secret needed (a wrong one still refused).
        set_settings(engine, integ, ip_allowlist=["127.0.0.0/8"])
        assert eventually(lambda: client.get(SEED_PATH, params=probe).status_code == 422)
        assert eventually(lambda: client.get(key_path(integ), params=probe).status_code == 422)
        assert client.get(SEED_PATH, params=q).status_code == 200
        assert_error(client.get(SEED_PATH, params=q | {"secret": "wrong"}), 401)
        time.sleep(0.2)
    assert count_rows(engine, "uon_inbox") == 4
    access = [line for line in logs.lines if "/uon/webhook" in line or "/webhooks/" in line]
    assert access and not [line for line in logs.lines if key in line]


def test_x_forwarded_for_only_from_a_trusted_proxy(
    database_url: str, engine: Engine, trusted_proxies: Callable[[str], None]
) -> None:
    integ = add_uon(engine, settings={"ip_allowlist": ["192.0.2.0/24"]})
    q = {"type_id": "2", "request_id": "1"}
    # The peer (127.0.0.1) is not a trusted proxy: X-Forwarded-For is not believed.
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        assert_error(client.get(SEED_PATH, params=q, headers={"X-Forwarded-For": "192.0.2.7"}), 403)
    assert count_rows(engine, "uon_inbox") == 0

    trusted_proxies("127.0.0.1/32,10.0.0.0/8")
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        allowed = ["192.0.2.7", "192.0.2.7, 10.1.1.1", "198.51.100.1, 192.0.2.7"]
        for chain in allowed:
            resp = client.get(key_path(integ), params=q, headers={"X-Forwarded-For": chain})
            assert resp.status_code == 200, (chain, resp.text)
        resp = client.get(SEED_PATH, params=q, headers={"X-Forwarded-For": "192.0.2.9"})
        assert resp.status_code == 200, resp.text
        # The rightmost address that is not a trusted proxy is the client.
        for chain in ("192.0.2.7, 198.51.100.1", "garbage", "192.0.2.7, , 10.0.0.1"):
            resp = client.get(SEED_PATH, params=q, headers={"X-Forwarded-For": chain})
            assert_error(resp, 403)
        assert_error(client.get(SEED_PATH, params=q), 403)  # no header: the proxy itself
    assert count_rows(engine, "uon_inbox") == 4


def test_client_ip_helper() -> None:
    def scope(peer: str, *forwarded: str) -> dict[str, Any]:
        return {
            "client": (peer, 1234),
            "headers": [(b"x-forwarded-for", f.encode()) for f in forwarded],
        }

    trusted = [ip_network("10.0.0.0/8"), ip_network("::1/128")]
    assert str(client_ip(scope("203.0.113.1", "192.0.2.1"))) == "203.0.113.1"
    assert str(client_ip(scope("203.0.113.1", "192.0.2.1"), trusted)) == "203.0.113.1"
    assert str(client_ip(scope("10.0.0.2", "192.0.2.1"), trusted)) == "192.0.2.1"
    assert str(client_ip(scope("10.0.0.2", "1.1.1.1, 192.0.2.1, 10.0.0.9"), trusted)) == "192.0.2.1"
    # Repeated headers are one list; ports and brackets are taken.
    assert str(client_ip(scope("::1", "1.1.1.1", "192.0.2.1:8080"), trusted)) == "192.0.2.1"
    assert str(client_ip(scope("10.0.0.2", "[2001:db8::1]:443"), trusted)) == "2001:db8::1"
    assert str(client_ip(scope("::ffff:10.0.0.2", "::ffff:192.0.2.1"), trusted)) == "192.0.2.1"
    assert str(client_ip(scope("10.0.0.2", "10.0.0.3"), trusted)) == "10.0.0.3"
    assert str(client_ip(scope("10.0.0.2"), trusted)) == "10.0.0.2"
    assert client_ip(scope("10.0.0.2", "192.0.2.1, junk"), trusted) is None
    assert client_ip({"client": None, "headers": []}, trusted) is None


# -- routing by type_id ---------------------------------------------------------------------


def test_each_type_id_route_and_the_cache_drop(database_url: str, engine: Engine) -> None:
    integ = add_uon(engine)
    other = add_uon(engine, name="other")
    now = datetime.now(UTC)
    user = {"u_id": "555", "u_name": "Анна", "u_phone": "+375291112233"}
    user["u_phone_mobile"] = "+375291112244"
    with engine.begin() as conn:
        upsert_customers(conn, integ.id, [user], "BY", now)
        for phone in ("+375291112233", "+375291112244", "+375296254070", "+375290000000"):
            write_cache(conn, integ.id, phone, {"uon_id": "555"}, now, 180)
        write_cache(conn, other.id, "+375291112233", {"uon_id": "555"}, now, 180)
    url = key_path(integ)
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        answers = [
            client.post(url, data={"type_id": "4", "client_id": "555", "phone": "375296254070"}),
            client.post(url, json={"type_id": 3, "client_id": 556}),
            client.post(url, json={"type_id": 5, "ID клиента": "557"}),
            client.post(url, json={"type_id": 1, "lead_id": "900", "request_id": "901"}),
            client.post(url, json={"type_id": 2, "lead_id": "900", "request_id": "901"}),
            client.post(url, json={"type_id": 16, "request_id": "902"}),
            client.post(url, json={"type_id": 17, "lead_id": "903"}),
            client.post(url, json={"type_id": 44, "phone": "+375296254071", "client_id": "7"}),
            client.post(url, json={"type_id": 99}),
        ]
        for resp in answers:
            assert resp.status_code == 200, resp.text
            assert resp.json()["status"] == "OK"
    stored = inbox(engine)
    assert [(r.event, r.external_id) for r in stored] == [
        ("4", "555"),
        ("3", "556"),
        ("5", "557"),
        ("1", "900"),
        ("2", "901"),
        ("16", "902"),
        ("17", "903"),
        ("44", "7"),
        ("99", None),
    ]
    assert [r.id for r in stored] == [a.json()["ids"][0] for a in answers]
    assert stored[7].phone == "+375296254071"
    # The changed client's numbers and the number sent: dropped; others kept.
    with engine.connect() as conn:
        left = conn.execute(
            select(uon_phone_cache.c.integration_id, uon_phone_cache.c.phone).order_by(
                uon_phone_cache.c.integration_id
            )
        ).all()
    assert [tuple(r) for r in left] == [(integ.id, "+375290000000"), (other.id, "+375291112233")]


# -- click-to-call --------------------------------------------------------------------------


def test_the_seed_examples_originate(
    database_url: str, engine: Engine, pbx: tuple[Pbx, str]
) -> None:
    stand_in, pbx_url = pbx
    integ = add_uon(
        engine,
        settings={"account_id": "67054", "pbx_url": pbx_url, "ip_allowlist": ["127.0.0.1"]},
    )
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        first = client.post(SEED_PATH, content=SEED_FORM, headers=FORM)
        second = client.post(SEED_PATH, json=SEED_JSON)
        # The same in Russian keys, and by GET on the key route.
        russian = {"метод": "call", "ID пользователя": "2", "телефон": "+375 29 625-40-72"}
        third = client.post(
            SEED_PATH, content=urlencode(russian | {"uon_id": "67054"}), headers=FORM
        )
        fourth = client.get(
            key_path(integ), params={"type_id": "47", "user_id": "4", "phone": "375296254073"}
        )
    for resp in (first, second, third, fourth):
        assert resp.status_code == 200, resp.text
        assert resp.json()["ok"] is True
    assert stand_in.calls == [
        {"code": "151", "phone": "+375296254070", "clientId": PBX_SECRET},
        {"code": "152", "phone": "+375296254070", "clientId": PBX_SECRET},
        {"code": "151", "phone": "+375296254072", "clientId": PBX_SECRET},
        {"code": "152", "phone": "+375296254073", "clientId": PBX_SECRET},
    ]
    stored, attempts = inbox(engine), originations(engine)
    assert [r.event for r in stored] == ["47"] * 4
    assert [r.phone for r in stored][:2] == ["+375296254070"] * 2
    assert payload_of(stored[0])["raw"] == {
        "method": "call",
        "user_id": "2",
        "phone": "375296254070",
        "uon_id": "67054",
    }
    assert payload_of(stored[1])["raw"]["user_id"] == 4
    assert [(a.inbox_id, a.manager_id, a.extension, a.phone, a.ok) for a in attempts] == [
        (stored[0].id, "2", "151", "+375296254070", True),
        (stored[1].id, "4", "152", "+375296254070", True),
        (stored[2].id, "2", "151", "+375296254072", True),
        (stored[3].id, "4", "152", "+375296254073", True),
    ]
    assert all(a.pbx_status == 200 and a.error is None for a in attempts)
    assert first.json()["origination_id"] == attempts[0].id
    assert first.json()["ids"] == [stored[0].id]


def test_originate_url_template_encodes_values(
    database_url: str, engine: Engine, pbx: tuple[Pbx, str]
) -> None:
    stand_in, pbx_url = pbx
    template = "{pbx}/api/makecallexternal?code={ext}&phone={digits}&clientId={secret}&m={manager}"
    integ = add_uon(
        engine,
        settings={"pbx_url": pbx_url, "pbx_originate_url": template},
        pbx_secret="a&b=c d+é",
    )
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        resp = client.get(
            key_path(integ), params={"method": "call", "user_id": "2", "phone": "+375296254070"}
        )
    assert resp.status_code == 200, resp.text
    assert stand_in.calls == [
        {"code": "151", "phone": "375296254070", "clientId": "a&b=c d+é", "m": "2"}
    ]


def test_click_to_call_failures(database_url: str, engine: Engine, pbx: tuple[Pbx, str]) -> None:
    stand_in, pbx_url = pbx
    integ = add_uon(engine, settings={"pbx_url": pbx_url})
    url = key_path(integ)
    call = {"method": "call", "user_id": "2", "phone": "375296254070"}
    options = {"access_log": True, "log_level": "info"}
    with (
        serve_receiver(
            database_url, integrations_refresh_seconds=REFRESH, server_options=options
        ) as base,
        httpx.Client(base_url=base, timeout=15) as client,
        capture_logs("", "httpx", "uvicorn.access", "webhook_receiver") as logs,
    ):
        # Bad input: 422 with ok false, nothing written, the PBX not asked.
        for fields, named in (
            ({"user_id": "7"}, "user_id"),
            ({"user_id": None}, "user_id"),
            ({"phone": "12"}, "phone"),
            ({"phone": None}, "phone"),
        ):
            body = {k: v for k, v in (call | fields).items() if v is not None}
            resp = client.post(url, json=body)
            assert resp.status_code == 422, resp.text
            answer = resp.json()
            assert answer["ok"] is False and answer["fields"][0]["field"] == named
        assert stand_in.calls == [] and count_rows(engine, "uon_inbox") == 0

        # The PBX fails: 502 ok false, the request and a failed attempt are stored.
        stand_in.status, stand_in.body = 500, {"error": f"boom {PBX_SECRET}"}
        resp = client.post(url, data=call)
        assert resp.status_code == 502, resp.text
        assert resp.json()["ok"] is False and "500" in resp.json()["error"]
        stand_in.status, stand_in.body = 200, {"ok": False, "error": "busy"}
        resp = client.post(url, data=call)
        assert resp.status_code == 502 and "busy" in resp.json()["error"]
        stand_in.status, stand_in.body = 200, {"ok": True}

        # The PBX down.
        set_settings(engine, integ, pbx_url=f"http://127.0.0.1:{free_port()}")
        time.sleep(REFRESH * 3)
        resp = client.post(url, data=call)
        assert resp.status_code == 502, resp.text
        assert "could not be reached" in resp.json()["error"]

        # Not configured: 409, nothing written.
        set_settings(engine, integ, pbx_url=None)
        time.sleep(REFRESH * 3)
        resp = client.post(url, data=call)
        assert resp.status_code == 409 and resp.json()["ok"] is False
        assert "pbx_url" in resp.json()["error"]
        time.sleep(0.2)
    attempts = originations(engine)
    assert [(a.ok, a.pbx_status) for a in attempts] == [(False, 500), (False, 200), (False, None)]
    assert all(a.error for a in attempts)
    assert count_rows(engine, "uon_inbox") == 3
    assert len(stand_in.calls) == 2
    # The PBX secret is in no answer, no stored error and no log line.
    assert "****" in attempts[0].error and PBX_SECRET not in attempts[0].error
    # (The stand-in's own access log shows what it was sent: that is the PBX's side.)
    ours = [line for line in logs.lines if "GET /api/makecallexternal" not in line]
    assert not [line for line in ours if PBX_SECRET in line]
    assert [line for line in logs.lines if line.startswith("httpx")]  # the lines were there


def test_click_to_call_without_a_pbx_secret(
    database_url: str, engine: Engine, pbx: tuple[Pbx, str]
) -> None:
    stand_in, pbx_url = pbx
    integ = add_uon(engine, settings={"pbx_url": pbx_url}, pbx_secret=None)
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        resp = client.get(
            key_path(integ), params={"method": "call", "user_id": "2", "phone": "375296254070"}
        )
    assert resp.status_code == 409 and "pbx_secret" in resp.json()["error"]
    assert stand_in.calls == [] and count_rows(engine, "uon_inbox") == 0


# -- telephony events ----------------------------------------------------------------------

HANGUP = {
    "event": "hangup",
    "call_id": "1732958100.42",
    "direction": "incoming",
    "phone": "80296254070",
    "extension": "151",
    "timestamp": 1795947300,
    "duration": 42,
    "status": "Answered",
    "trunk": "velcom",
}


def test_telephony_events_single_and_arrays(database_url: str, engine: Engine) -> None:
    integ = add_uon(engine)
    url = f"/webhooks/telephony/{integ.webhook_key}"
    long_id = "c" * 128  # the longest call id: it is the row's external_id
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        one = client.post(url, json=HANGUP)
        many = client.post(
            url,
            json=[
                {"event": "start", "call_id": "c-2", "direction": "out", "phone": "+375296254072"},
                {
                    "event": "DIAL",
                    "call_id": "c-2",
                    "direction": "outgoing",
                    "phone": "not a number",
                    "timestamp": "2026-11-30T10:15:00",
                },
                {"event": "bridge", "call_id": long_id, "direction": "in", "phone": "123"},
            ],
        )
        empty = client.post(url, json=[])
    for resp in (one, many, empty):
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "OK"
    assert empty.json()["ids"] == []
    stored = inbox(engine)
    assert [r.id for r in stored] == one.json()["ids"] + many.json()["ids"]
    assert [(r.source, r.event, r.external_id, r.phone) for r in stored] == [
        ("telephony", "hangup", "1732958100.42", "+375296254070"),
        ("telephony", "start", "c-2", "+375296254072"),
        ("telephony", "dial", "c-2", "not a number"),
        ("telephony", "bridge", long_id, "123"),
    ]
    first = payload_of(stored[0])
    assert first["raw"] == HANGUP
    assert first["direction"] == "in" and first["status"] == "answered"
    assert first["timestamp"] == datetime.fromtimestamp(1795947300, UTC).isoformat()
    assert first["e164"] == "+375296254070" and first["duration"] == 42
    assert payload_of(stored[2])["timestamp"] == "2026-11-30T10:15:00+00:00"
    assert payload_of(stored[3])["call_id"] == long_id


def test_invalid_telephony_bodies_write_nothing(database_url: str, engine: Engine) -> None:
    integ = add_uon(engine)
    url = f"/webhooks/telephony/{integ.webhook_key}"
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        for content, status in (
            (b"{nope", 400),
            (b'"hangup"', 422),
            (b"[1]", 422),
            (json.dumps({**HANGUP, "event": "ring"}).encode(), 422),
            (json.dumps({**HANGUP, "timestamp": "yesterday"}).encode(), 422),
            (json.dumps({**HANGUP, "duration": -1}).encode(), 422),
            (json.dumps({**HANGUP, "call_id": "x" * 129}).encode(), 422),
            (json.dumps({**HANGUP, "direction": "sideways"}).encode(), 422),
        ):
            resp = client.post(url, content=content, headers={"content-type": "application/json"})
            assert_error(resp, status)
        resp = client.post(url, json=[HANGUP, {"event": "ring", "direction": "in"}])
        body = assert_error(resp, 422)
        assert {p["field"] for p in body["fields"]} == {"[1].event", "[1].call_id", "[1].phone"}
        assert_error(client.post(url, content=b"x", headers={"content-type": "text/plain"}), 415)
        assert_error(client.post("/webhooks/telephony/nope", json=HANGUP), 404)
    assert count_rows(engine, "uon_inbox") == 0


def test_openapi_documents_the_routes(database_url: str, engine: Engine) -> None:
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    for path in ("/webhooks/uon/{webhook_key}", SEED_PATH):
        assert {"get", "post"} <= set(paths[path]), path
        post = paths[path]["post"]
        assert set(post["requestBody"]["content"]) == {
            "application/json",
            "application/x-www-form-urlencoded",
        }
        for status in ("200", "403", "409", "422", "502"):
            assert status in post["responses"], (path, status)
        names = {p["name"] for p in paths[path]["get"]["parameters"]}
        assert {"type_id", "user_id", "phone", "client_id"} <= names
    seed = {(p["name"], p["in"]) for p in paths[SEED_PATH]["get"]["parameters"]}
    assert {("secret", "query"), ("X-Webhook-Secret", "header")} <= seed
    assert "401" in paths[SEED_PATH]["post"]["responses"]
    telephony = paths["/webhooks/telephony/{webhook_key}"]["post"]
    assert "422" in telephony["responses"]
    schema = doc["components"]["schemas"]["TelephonyEvent"]
    assert set(schema["required"]) == {"event", "call_id", "direction", "phone"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_database_that_cannot_commit_503_and_nothing_done(
    database_url: str, engine: Engine, pbx: tuple[Pbx, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in, pbx_url = pbx
    integ = add_uon(engine, settings={"pbx_url": pbx_url})
    monkeypatch.setenv("SQLITE_BUSY_TIMEOUT_MS", "300")
    get_settings.cache_clear()
    url = key_path(integ)
    try:
        with (
            serve_receiver(database_url, sqlite_busy_timeout_ms=300) as base,
            httpx.Client(base_url=base, timeout=15) as client,
        ):
            # The settings are read before the lock is taken.
            assert client.get(url, params={"type_id": "99"}).status_code == 200
            with sqlite_write_lock(database_url):
                for params in (
                    {"type_id": "4", "client_id": "555"},
                    {"type_id": "2", "request_id": "1"},
                ):
                    resp = client.get(url, params=params)
                    assert_error(resp, 503)
                    assert resp.headers["retry-after"]
                call = {"method": "call", "user_id": "2", "phone": "375296254070"}
                resp = client.get(url, params=call)
                assert resp.status_code == 503 and resp.json()["ok"] is False
            assert client.get(url, params={"type_id": "4", "client_id": "555"}).status_code == 200
    finally:
        monkeypatch.delenv("SQLITE_BUSY_TIMEOUT_MS")
        get_settings.cache_clear()
    assert stand_in.calls == []
    assert [r.event for r in inbox(engine)] == ["99", "4"]


def test_settings_edited_badly_in_the_database(database_url: str, engine: Engine) -> None:
    integ = add_uon(engine, settings={"ip_allowlist": ["127.0.0.1"], "default_region": "BY"})
    # A number where a string belongs is read as the string; an invalid setting is left
    # at its default and only what depends on it refuses.
    set_settings(engine, integ, account_id=67054, user_extensions="junk")
    add_uon(engine, name="second")
    call = {"method": "call", "user_id": "2", "phone": "375296254070", "uon_id": "67054"}
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        resp = client.post(SEED_PATH, data=call)
        assert resp.status_code == 409 and "user_extensions" in resp.json()["error"]
        resp = client.post(SEED_PATH, data={"type_id": "2", "request_id": "1", "uon_id": "67054"})
        assert resp.status_code == 200, resp.text
    assert [(r.integration_id, r.event) for r in inbox(engine)] == [(integ.id, "2")]
