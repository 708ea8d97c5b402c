"""Unisender emulator over real HTTP: methods, the 200 error envelope, importContacts'
limits and log, delete, both quotas, keys, faults, admin routes and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from provider_emulators import unisender
from provider_emulators.testing import free_port, running_server

KEY = unisender.DEFAULT_API_KEY


@contextmanager
def emulator(**options: Any) -> Iterator[tuple[Starlette, httpx.Client]]:
    """A fresh emulator (no quota unless asked) and a client on it."""
    options.setdefault("quota_per_minute", None)
    app = unisender.create_app(**options)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=5) as client:
        yield app, client


@pytest.fixture
def emu() -> Iterator[tuple[Starlette, httpx.Client]]:
    with emulator() as pair:
        yield pair


def call(
    client: httpx.Client, method: str, data: dict[str, Any] | None = None, key: str | None = KEY
) -> dict[str, Any]:
    params = {"format": "json"} | ({"api_key": key} if key is not None else {})
    resp = client.post(f"/{method}", params=params, data=data or {})
    assert resp.status_code == 200, resp.text
    return resp.json()


def import_form(
    rows: list[list[str]], names: tuple[str, ...] = ("email", "Name", "email_list_ids")
):
    form = {f"field_names[{i}]": n for i, n in enumerate(names)}
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            form[f"data[{r}][{c}]"] = value
    return form


def emails(client: httpx.Client, list_id: int) -> set[str]:
    resp = client.get(f"/_admin/lists/{list_id}/contacts")
    assert resp.status_code == 200, resp.text
    return {c["email"] for c in resp.json()}


def test_get_lists_post_and_get(emu) -> None:
    _app, client = emu
    assert call(client, "getLists") == {
        "result": [{"id": 1, "title": "List 1"}, {"id": 2, "title": "List 2"}]
    }
    resp = client.get("/getLists", params={"format": "json", "api_key": KEY})
    assert resp.status_code == 200 and len(resp.json()["result"]) == 2
    # api_key in the body is accepted too
    resp = client.post("/getLists?format=json", data={"api_key": KEY})
    assert "result" in resp.json()


def test_create_list(emu) -> None:
    _app, client = emu
    created = call(client, "createList", {"title": "Newsletter"})["result"]
    assert created == {"id": 3}
    assert {"id": 3, "title": "Newsletter"} in call(client, "getLists")["result"]
    assert call(client, "createList", {"title": "Newsletter"})["code"] == "invalid_arg"
    assert call(client, "createList")["code"] == "invalid_arg"


def test_error_envelopes(emu) -> None:
    app, client = emu
    assert call(client, "getLists", key=None) == {
        "error": "Invalid API key",
        "code": "invalid_api_key",
    }
    assert call(client, "getLists", key="wrong")["code"] == "invalid_api_key"
    answer = call(client, "noSuchMethod")
    assert answer["code"] == "unknown_method" and "noSuchMethod" in answer["error"]
    resp = client.post("/getLists", params={"format": "html", "api_key": KEY})
    assert resp.status_code == 200 and resp.json()["code"] == "invalid_arg"
    # a denied key (configured at start or via the admin API) → access_denied
    resp = client.put("/_admin/keys", json={"denied": ["blocked-key"]})
    assert resp.status_code == 200 and resp.json()["denied"] == ["bloc…"]
    assert call(client, "getLists", key="blocked-key")["code"] == "access_denied"
    resp = client.put("/_admin/keys", json={"api_keys": ["other-key-123"], "denied": []})
    assert resp.json() == {"api_keys": ["othe…"], "denied": []}
    assert call(client, "getLists")["code"] == "invalid_api_key"
    assert "result" in call(client, "getLists", key="other-key-123")
    assert client.put("/_admin/keys", json={"api_keys": [""]}).status_code == 400
    assert client.put("/_admin/keys", json={"bogus": 1}).status_code == 400
    with emulator(denied_keys=("no-access",)) as (_a, c2):
        assert call(c2, "getLists", key="no-access")["code"] == "access_denied"
        assert "result" in call(c2, "getLists")


def test_import_contacts_insert_update_and_lists(emu) -> None:
    _app, client = emu
    rows = [
        ["ann@example.com", "Ann", "1"],
        ["bob@example.org", "Bob", "1,2"],
        ["Ann@Example.com", "Ann B", "2"],  # the same address (case-insensitive) again
    ]
    result = call(client, "importContacts", import_form(rows))["result"]
    assert result == {
        "total": 3,
        "inserted": 2,
        "updated": 1,
        "deleted": 0,
        "new_emails": 2,
        "invalid": 0,
        "log": [],
    }
    assert emails(client, 1) == {"ann@example.com", "bob@example.org"}
    assert emails(client, 2) == {"ann@example.com", "bob@example.org"}
    ann = next(
        c for c in client.get("/_admin/lists/1/contacts").json() if c["email"].startswith("ann")
    )
    assert ann["name"] == "Ann B" and ann["list_ids"] == [1, 2]
    again = call(client, "importContacts", import_form([["bob@example.org", "Bobby", "1"]]))
    assert again["result"]["updated"] == 1 and again["result"]["inserted"] == 0
    # overwrite_lists replaces memberships
    form = import_form([["bob@example.org", "Bobby", "2"]]) | {"overwrite_lists": "1"}
    call(client, "importContacts", form)
    assert emails(client, 1) == {"ann@example.com"}
    lists = client.get("/_admin/lists").json()
    assert lists == [
        {"id": 1, "title": "List 1", "contacts": 1},
        {"id": 2, "title": "List 2", "contacts": 2},
    ]
    assert len(client.get("/_admin/contacts").json()) == 2


def test_import_contacts_invalid_emails_in_log(emu) -> None:
    _app, client = emu
    rows = [
        ["good@example.com", "Good", "1"],
        ["not-an-email", "Bad", "1"],
        ["", "Empty", "1"],
        ["two@@example.com", "Worse", "1"],
        ["ok@mail.example.ru", "Ok", "1"],
    ]
    result = call(client, "importContacts", import_form(rows))["result"]
    assert result["total"] == 5 and result["inserted"] == 2 and result["invalid"] == 3
    assert [e["index"] for e in result["log"]] == [1, 2, 3]
    assert {e["code"] for e in result["log"]} == {"invalid_email"}
    assert all(e["message"] for e in result["log"])
    assert emails(client, 1) == {"good@example.com", "ok@mail.example.ru"}


def test_import_contacts_delete(emu) -> None:
    _app, client = emu
    rows = [["a@example.com", "A", "1,2"], ["b@example.com", "B", "1"], ["c@example.com", "C", "2"]]
    call(client, "importContacts", import_form(rows))
    names = ("email", "email_list_ids", "delete")
    form = import_form(
        [["a@example.com", "1", "1"], ["b@example.com", "1", "0"], ["zz@example.com", "1", "1"]],
        names,
    )
    result = call(client, "importContacts", form)["result"]
    assert result["deleted"] == 1 and result["updated"] == 1 and result["total"] == 3
    assert emails(client, 1) == {"b@example.com"}
    assert emails(client, 2) == {"a@example.com", "c@example.com"}
    # without email_list_ids, delete removes the contact from every list
    form = import_form([["c@example.com", "1"]], ("email", "delete"))
    assert call(client, "importContacts", form)["result"]["deleted"] == 1
    assert emails(client, 2) == {"a@example.com"}
    assert "c@example.com" not in {c["email"] for c in client.get("/_admin/contacts").json()}


def test_import_contacts_limits_and_bad_args(emu) -> None:
    _app, client = emu
    rows = [[f"u{i}@example.com", f"U{i}", "1"] for i in range(500)]
    result = call(client, "importContacts", import_form(rows))["result"]
    assert result["inserted"] == 500 and result["total"] == 500
    assert len(emails(client, 1)) == 500
    too_many = rows + [["extra@example.com", "X", "1"]]
    answer = call(client, "importContacts", import_form(too_many))
    assert answer["code"] == "invalid_arg" and "500" in answer["error"]
    assert len(emails(client, 1)) == 500  # nothing of the refused call applied
    bad = [
        import_form([["x@example.com", "X"]], ("Name", "phone")),  # no email column
        import_form([["x@example.com", "9"]], ("email", "email_list_ids")),  # unknown list
        import_form([["x@example.com", "1", "extra"]], ("email", "email_list_ids")),
        {"field_names[0]": "email"},  # no data
        {},
    ]
    for form in bad:
        assert call(client, "importContacts", form)["code"] == "invalid_arg", form
    assert "x@example.com" not in {c["email"] for c in client.get("/_admin/contacts").json()}


def test_subscribe(emu) -> None:
    _app, client = emu
    answer = call(client, "subscribe", {"list_ids": "1,2", "fields[email]": "s@example.com",
                                        "fields[Name]": "Sub", "double_optin": "3"})  # fmt: skip
    assert isinstance(answer["result"]["person_id"], int)
    assert emails(client, 1) == emails(client, 2) == {"s@example.com"}
    again = call(client, "subscribe", {"list_ids": "2", "fields[email]": "s@example.com"})
    assert again["result"]["person_id"] == answer["result"]["person_id"]
    assert (
        call(client, "subscribe", {"list_ids": "7", "fields[email]": "s@example.com"})["code"]
        == "invalid_arg"
    )
    assert call(client, "subscribe", {"list_ids": "1", "fields[email]": "nope"})["code"] == (
        "invalid_arg"
    )
    assert call(client, "subscribe", {"fields[email]": "t@example.com"})["code"] == "invalid_arg"


def test_quota_per_api_key() -> None:
    with emulator(api_keys=(KEY, "second-key"), quota_per_minute=3, ip_quota_per_minute=100) as (
        app,
        client,
    ):
        for _ in range(3):
            assert "result" in call(client, "getLists")
        resp = client.post("/getLists", params={"format": "json", "api_key": KEY})
        assert resp.status_code == 200
        assert resp.json()["code"] == "api_call_limit_exceeded_for_api_key"
        assert "error" in resp.json()
        assert "result" in call(client, "getLists", key="second-key")  # another key's budget
        log = app.state.emulator.log.entries()
        assert [e["quota_rejected"] for e in log] == [False, False, False, True, False]
        assert client.delete("/_admin/quota").json() == {"reset": True}
        assert "result" in call(client, "getLists")
        config = client.get("/_admin/config").json()
        assert config["quota_per_minute"] == 3 and config["ip_quota_per_minute"] == 100


def test_quota_per_ip() -> None:
    keys = ("k-one", "k-two", "k-three")
    with emulator(api_keys=keys, quota_per_minute=100, ip_quota_per_minute=2) as (_app, client):
        assert "result" in call(client, "getLists", key="k-one")
        assert "result" in call(client, "getLists", key="k-two")
        answer = call(client, "getLists", key="k-three")
        assert answer["code"] == "api_call_limit_exceeded_for_ip"


def test_default_quota_is_1200_per_minute() -> None:
    app = unisender.create_app()
    quota = app.state.emulator.quota
    assert (quota.limit, quota.ip_limit, quota.window) == (1200, 1200, 60.0)


def test_retry_later_switch_and_faults(emu) -> None:
    app, client = emu
    assert client.put("/_admin/config", json={"retry_later": 2}).json()["retry_later"] == 2
    assert call(client, "getLists")["code"] == "retry_later"
    assert call(client, "getLists")["code"] == "retry_later"
    assert "result" in call(client, "getLists")
    client.put("/_admin/config", json={"retry_later_seconds": 30})
    assert (
        call(client, "importContacts", import_form([["a@example.com", "A", "1"]]))["code"]
        == "retry_later"
    )
    assert emails(client, 1) == set()
    client.put("/_admin/config", json={"retry_later_seconds": 0})
    assert "result" in call(client, "getLists")
    assert client.put("/_admin/config", json={"retry_later": -1}).status_code == 400
    # the framework's faults: 5xx and forced 429
    client.put("/_admin/faults", json={"error_rate": 1.0})
    resp = client.post("/getLists", params={"format": "json", "api_key": KEY})
    assert resp.status_code in (500, 503) and resp.json()["code"] == "unknown_error"
    client.put("/_admin/faults", json={"error_rate": 0, "force_429": 1})
    assert client.post("/getLists", params={"api_key": KEY}).status_code == 429
    client.delete("/_admin/faults")
    assert "result" in call(client, "getLists")


def test_request_log_and_admin_routes(emu) -> None:
    app, client = emu
    call(client, "importContacts", import_form([["a@example.com", "A", "2,1"]]))
    call(client, "subscribe", {"list_ids": "2", "fields[email]": "b@example.com"})
    log = client.get("/_admin/requests").json()
    assert [e["path"] for e in log] == ["/importContacts", "/subscribe"]
    assert [e["ids"] for e in log] == [[1, 2], [2]]
    assert KEY not in orjson.dumps(log).decode()
    assert "a@example.com" not in orjson.dumps(log).decode()
    assert client.get("/_admin/requests", params={"path": "/subscribe"}).json()[0]["status"] == 200
    assert client.get("/_admin/health").json()["provider"] == "unisender"
    assert client.get("/_admin/lists/9/contacts").status_code == 404
    contacts = client.get("/_admin/lists/2/contacts").json()
    assert {c["email"] for c in contacts} == {"a@example.com", "b@example.com"}
    assert set(contacts[0]) >= {"email", "name", "fields", "list_ids", "person_id"}
    # replacing the lists drops the memberships of removed lists
    resp = client.put("/_admin/lists", json={"lists": [{"id": 2, "title": "Main"}, 5]})
    assert resp.json() == [
        {"id": 2, "title": "Main", "contacts": 2},
        {"id": 5, "title": "List 5", "contacts": 0},
    ]
    assert call(client, "getLists")["result"] == [
        {"id": 2, "title": "Main"},
        {"id": 5, "title": "List 5"},
    ]
    assert client.get("/_admin/lists/1/contacts").status_code == 404
    assert client.put("/_admin/lists", json={"lists": [0]}).status_code == 400
    assert client.delete("/_admin/contacts").json() == {"cleared": 2}
    assert client.get("/_admin/lists/2/contacts").json() == []
    assert client.get("/_admin/keys").json() == {"api_keys": ["demo…"], "denied": []}


def test_cli_serves_the_emulator() -> None:
    port = free_port()
    bin_dir = os.path.dirname(sys.executable)
    proc = subprocess.Popen(
        [
            os.path.join(bin_dir, "crm-sync"),
            "emulate",
            "unisender",
            "--port",
            str(port),
            "--api-key",
            "cli-key-1",
            "--api-key",
            "cli-key-2",
            "--lists",
            "4,7",
            "--quota-per-minute",
            "50",
            "--log-level",
            "warning",
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"{base}/_admin/health", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        with httpx.Client(base_url=base, timeout=5) as client:
            assert [x["id"] for x in call(client, "getLists", key="cli-key-2")["result"]] == [4, 7]
            assert call(client, "getLists")["code"] == "invalid_api_key"
            assert client.get("/_admin/config").json()["quota_per_minute"] == 50
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=10)
    assert b"cli-key" not in err  # keys are never printed
