"""Unisender accounts (issue 12, points 1 and 3): `integrations add` validation,
`integrations check` against the emulator over HTTP, `integrations remove`,
`crm-sync unisender status`, and the operator API under /api/v1/accounts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, insert, select

from crm_schema import operator_tokens
from crm_schema.integrations import add_integration, get_integration
from crm_schema.providers.unisender import unisender_contacts
from crm_schema.tables import contacts, integrations
from crm_sync.cli import main
from tests.conftest import count_rows
from tests.receiver_fixtures import serve_receiver

API_KEY = "uni-SECRET-key-0123456789"


def run(database_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args], env={"DATABASE_URL": database_url})
    return result.exit_code, result.output


def add_amocrm(engine: Engine, name: str = "amo") -> int:
    with engine.begin() as conn:
        return add_integration(
            conn,
            provider="amocrm",
            name=name,
            integration_uuid=None,
            api_base_url="http://amocrm.invalid",
            credentials={"access_token": "amo-token"},
            settings={"subdomain": name},
        ).id


def add_account(
    database_url: str, amocrm_id: int, *lists: str, base: str = "http://unisender.invalid"
) -> int:
    code, out = run(
        database_url,
        "integrations",
        "add",
        "--provider",
        "unisender",
        "--name",
        "mailing",
        "--amocrm",
        str(amocrm_id),
        "--api-key",
        API_KEY,
        *(a for lst in lists or ("1",) for a in ("--list-id", lst)),
        "--api-base-url",
        base,
        "--json",
    )
    assert code == 0, out
    assert API_KEY not in out
    return json.loads(out)["id"]


def contact(engine: Engine, amocrm_id: int, ext: str, email: str | None, **extra: Any) -> int:
    with engine.begin() as conn:
        return conn.execute(
            insert(contacts)
            .values(
                integration_id=amocrm_id,
                external_id=ext,
                custom_fields={},
                raw={},
                source_entity="amocrm",
                role="contact",
                first_name=f"First{ext}",
                email=email,
                **extra,
            )
            .returning(contacts.c.id)
        ).scalar_one()


def state(engine: Engine, account: int, contact_id: int, status: str, reason: str | None) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(unisender_contacts).values(
                integration_id=account,
                contact_id=contact_id,
                email=f"c{contact_id}@example.com",
                list_ids=[1],
                status=status,
                reason=reason,
                attempts=1,
                synced_at=now if status == "synced" else None,
                updated_at=now,
            )
        )


@pytest.fixture
def world(database_url: str, engine: Engine) -> dict[str, Any]:
    """An amoCRM integration with five contacts, linked to one Unisender account:
    synced, invalid (Unisender's reason), pending, not exported, without an e-mail."""
    amo = add_amocrm(engine)
    account = add_account(database_url, amo, "1", "2")
    ids = {
        "synced": contact(engine, amo, "1", "a@example.com"),
        "invalid": contact(engine, amo, "2", "bad@@example"),
        "pending": contact(engine, amo, "3", "p@example.com"),
        "waiting": contact(engine, amo, "4", "w@example.com"),
        "no_email": contact(engine, amo, "5", None),
    }
    state(engine, account, ids["synced"], "synced", None)
    state(engine, account, ids["invalid"], "invalid", "invalid e-mail: bad@@example")
    state(engine, account, ids["pending"], "pending", None)
    return {"amo": amo, "account": account, "ids": ids}


# -- add ---------------------------------------------------------------------------------


def test_add_needs_an_existing_amocrm_integration(database_url: str, engine: Engine) -> None:
    base = ["integrations", "add", "--provider", "unisender", "--name", "u"]
    rest = ["--api-key", API_KEY, "--list-id", "1"]
    code, out = run(database_url, *base, "--amocrm", "999", *rest)
    assert code == 2 and "--amocrm 999: no integration with this id" in out
    other = add_account(database_url, add_amocrm(engine))  # a Unisender id is no amoCRM id
    code, out = run(database_url, *base, "--amocrm", str(other), *rest)
    assert code == 2 and f"integration {other} is unisender, not amoCRM" in out
    assert count_rows(engine, "integrations") == 2  # nothing added by the refusals
    with engine.connect() as conn:
        item = get_integration(conn, other)
    assert item.settings["list_ids"] == [1]


# -- status ------------------------------------------------------------------------------


def test_status_shows_synced_and_unsynced_with_reasons(
    database_url: str, world: dict[str, Any]
) -> None:
    ids = world["ids"]
    code, out = run(database_url, "unisender", "status", str(world["account"]), "--json")
    assert code == 0, out
    data = json.loads(out)
    assert API_KEY not in out
    assert [r["contact_id"] for r in data["synced"]] == [ids["synced"]]
    unsynced = {r["contact_id"]: (r["status"], r["reason"]) for r in data["unsynced"]}
    assert unsynced == {
        ids["invalid"]: ("invalid", "invalid e-mail: bad@@example"),
        ids["pending"]: ("pending", "not exported yet: waits for the next export"),
        ids["waiting"]: ("not_exported", "not exported yet: waits for the next export"),
        ids["no_email"]: ("not_exported", "no e-mail address in amoCRM"),
    }
    counts = data["account"]["counts"]
    assert counts["synced"] == 1 and counts["unsynced"] == 4 and counts["not_exported"] == 2

    code, out = run(database_url, "unisender", "status", str(world["account"]), "--unsynced")
    assert code == 0, out
    assert "invalid e-mail: bad@@example" in out and "no e-mail address in amoCRM" in out
    assert "synced (" not in out.replace("unsynced (", "")
    code, out = run(database_url, "unisender", "status", str(world["amo"]))
    assert code == 1 and "not a Unisender account" in out


# -- remove ------------------------------------------------------------------------------


def test_remove_says_what_goes_and_needs_yes(
    database_url: str, engine: Engine, world: dict[str, Any]
) -> None:
    account = str(world["account"])
    code, out = run(database_url, "integrations", "remove", account)
    assert code == 1
    assert "unisender_contacts: 3" in out and "integrations: 1" in out and "--yes" in out
    assert count_rows(engine, "unisender_contacts") == 3
    code, out = run(database_url, "integrations", "remove", str(world["amo"]), "--yes")
    assert code == 1 and "cannot be removed here" in out  # amoCRM names no rows of its own
    code, out = run(database_url, "integrations", "remove", account, "--yes", "--json")
    assert code == 0, out
    assert json.loads(out)["rows"] == {"unisender_contacts": 3, "integrations": 1}
    assert count_rows(engine, "unisender_contacts") == 0
    assert count_rows(engine, "contacts") == 5  # amoCRM's contacts stay
    with engine.connect() as conn:
        assert conn.execute(select(integrations.c.id)).scalars().all() == [world["amo"]]


# -- operator API ------------------------------------------------------------------------


def test_operator_api_accounts(database_url: str, engine: Engine, world: dict[str, Any]) -> None:
    with engine.begin() as conn:
        token = operator_tokens.create(conn, "ops")[1]
    account, ids = world["account"], world["ids"]
    auth = {"Authorization": f"Bearer {token}"}
    with serve_receiver(database_url) as base, httpx.Client(base_url=base, headers=auth) as http:
        assert httpx.get(f"{base}/api/v1/accounts").status_code == 401
        paths = httpx.get(f"{base}/openapi.json").json()["paths"]
        assert set(paths["/api/v1/accounts/{account_id}"]) == {"get", "put", "delete"}
        assert "/api/v1/accounts/{account_id}/unsync" in paths
        listed = http.get("/api/v1/accounts")
        assert listed.status_code == 200, listed.text
        [item] = listed.json()["items"]
        assert item["id"] == account and item["amocrm_integration_id"] == world["amo"]
        assert item["list_ids"] == [1, 2] and item["active"] is True
        assert item["counts"]["synced"] == 1 and item["counts"]["invalid"] == 1
        assert http.get(f"/api/v1/accounts/{world['amo']}").status_code == 404
        assert http.get("/api/v1/accounts/abc").status_code == 404

        changed = http.put(f"/api/v1/accounts/{account}", json={"name": "news", "list_ids": [7]})
        assert changed.status_code == 200, changed.text
        assert changed.json()["name"] == "news" and changed.json()["list_ids"] == [7]
        bad = http.put(f"/api/v1/accounts/{account}", json={"list_ids": [], "api_key": "x"})
        assert bad.status_code == 422
        assert {p["field"] for p in bad.json()["problems"]} == {"list_ids", "api_key"}

        synced = http.get(f"/api/v1/accounts/{account}/sync").json()
        assert [r["contact_id"] for r in synced["items"]] == [ids["synced"]]
        page = http.get(f"/api/v1/accounts/{account}/unsync", params={"limit": 2}).json()
        assert [r["contact_id"] for r in page["items"]] == [ids["invalid"], ids["pending"]]
        assert page["has_more"] is True and page["items"][0]["reason"].startswith("invalid")
        rest = http.get(f"/api/v1/accounts/{account}/unsync", params={"skip": 2}).json()
        assert [r["reason"] for r in rest["items"]] == [
            "not exported yet: waits for the next export",
            "no e-mail address in amoCRM",
        ]
        assert rest["has_more"] is False
        too_many = http.get(f"/api/v1/accounts/{account}/unsync", params={"limit": 501})
        assert too_many.status_code == 422

        off = http.post(f"/api/v1/accounts/{account}/disconnect")
        assert off.status_code == 200 and off.json()["active"] is False
        on = http.put(f"/api/v1/accounts/{account}", json={"active": True})
        assert on.json()["active"] is True

        gone = http.delete(f"/api/v1/accounts/{account}")
        assert gone.status_code == 200, gone.text
        assert gone.json()["deleted_rows"] == {"unisender_contacts": 3, "integrations": 1}
        assert http.get(f"/api/v1/accounts/{account}").status_code == 404
        bodies = [listed.text, changed.text, off.text, gone.text, json.dumps(synced)]
        assert not any(API_KEY in b or "api_key" in b for b in bodies)
    assert count_rows(engine, "contacts") == 5


# -- check (the emulator over HTTP) ------------------------------------------------------


def test_check_calls_get_lists(database_url: str, engine: Engine) -> None:
    from provider_emulators.testing import running_server
    from provider_emulators.unisender import create_app

    amo = add_amocrm(engine)
    app = create_app(api_keys=[API_KEY], lists=[1, 2], quota_per_minute=None)
    with running_server(app) as base:
        good = add_account(database_url, amo, "1", "2", base=base)
        code, out = run(database_url, "integrations", "check", str(good), "--json")
        assert code == 0, out
        data = json.loads(out)
        assert data["ok"] is True and data["details"]["missing_list_ids"] == []

        unknown = add_account(database_url, amo, "1", "77", base=base)
        code, out = run(database_url, "integrations", "check", str(unknown))
        assert code == 1 and "list(s) 77 do not exist" in out

        bad = add_account(database_url, amo, "1", base=base)
        # another key than the emulator's
        code, out = run(
            database_url, "integrations", "update", str(bad), "--api-key", "wrong-key-1"
        )
        assert code == 0, out
        code, out = run(database_url, "integrations", "check", str(bad), "--json")
        assert code == 1 and "invalid_api_key" in out and "wrong-key-1" not in out
        with engine.connect() as conn:
            assert "needs attention" in (get_integration(conn, bad).attention or "")
    code, out = run(database_url, "integrations", "check", str(amo))
    assert code == 0 and "have no check" in out
