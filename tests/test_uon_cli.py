"""`crm-sync integrations add --provider uon` with every field and bad values,
`integrations check` and `crm-sync uon notify` against the U-ON emulator over HTTP,
`integrations remove`; secrets are never printed."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import func, insert, select

from crm_schema.integrations import get_integration
from crm_schema.providers.uon import customers, uon_calls, uon_inbox
from crm_schema.providers.uon_customers import write_cache
from crm_schema.tables import api_call_log, integrations
from crm_schema.task_queue import now_utc
from crm_sync.cli import main
from orchestration.db import dispose_engines
from orchestration.uon.tasks import take_webhooks
from provider_emulators.testing import running_server
from provider_emulators.uon import create_app
from tests.uon_fixtures import API_KEY, KNOWN_PHONE, PBX_SECRET, UNKNOWN_PHONE, add_uon

TEMPLATE = "{pbx}/api/makecallexternal?code={ext}&phone={e164}&clientId={secret}"


@pytest.fixture(scope="module")
def uon_url():
    with running_server(create_app(api_keys=(API_KEY,), quota=None)) as url:
        yield url


@pytest.fixture(autouse=True)
def _engines():
    yield
    dispose_engines()


def run(database_url: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args], env={"DATABASE_URL": database_url, **(env or {})})
    return result.exit_code, result.output


def every_flag(base_url: str = "http://uon.invalid", **change: str) -> list[str]:
    """`integrations add` with every U-ON flag; ``change`` replaces one (log_calls="maybe")."""
    flags: dict[str, str | None] = {
        "name": "agency",
        "api_key": API_KEY,
        "api_base_url": base_url,
        "log_calls": None,
        "primary": None,
        "user_extensions": "2=151,4=152",
        "ip_allowlist": "10.0.0.0/8,192.168.1.1",
        "default_region": "by",
        "pbx_url": "http://pbx.test:8090",
        "pbx_originate_url": TEMPLATE,
        "pbx_secret": PBX_SECRET,
        "account_id": "7001",
        "uon_subdomain": "agency",
    } | change
    args = ["integrations", "add", "--provider", "uon"]
    for name, value in flags.items():
        args += ["--" + name.replace("_", "-")] + ([] if value is None else [value])
    return args


def count(engine: Any) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(integrations)).scalar_one()


def test_add_with_every_interface_flag(database_url, engine):
    code, out = run(database_url, *every_flag(), "--json")
    assert code == 0, out
    assert API_KEY not in out and PBX_SECRET not in out
    data = json.loads(out)
    with engine.connect() as conn:
        item = get_integration(conn, data["id"])
    assert item.provider == "uon" and item.api_base_url == "http://uon.invalid"
    assert item.credentials == {"api_key": API_KEY, "pbx_secret": PBX_SECRET}
    s = item.settings
    assert s["log_calls"] is True and s["primary"] is True
    assert s["user_extensions"] == {"2": "151", "4": "152"}
    assert s["ip_allowlist"] == ["10.0.0.0/8", "192.168.1.1/32"]
    assert s["default_region"] == "BY"
    assert s["pbx_url"].startswith("http://pbx.test:8090")
    assert s["pbx_originate_url"] == TEMPLATE
    assert s["account_id"] == "7001" and s["uon_subdomain"] == "agency"
    assert data["webhook_url"]  # U-ON's webhook URL, shown once here
    code, out = run(database_url, "integrations", "show", str(item.id))
    assert code == 0 and API_KEY not in out and PBX_SECRET not in out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"user_extensions": "2=abc"}, "--user-extensions"),
        ({"user_extensions": "2"}, "MANAGER_ID=EXTENSION"),
        ({"ip_allowlist": "10.0.0.0/33"}, "not an IP address or CIDR"),
        ({"default_region": "XX"}, "not a phone region"),
        ({"pbx_originate_url": "ftp://pbx/{ext}"}, "must start with"),
        ({"pbx_originate_url": "{pbx}/call?x={password}"}, "may name only"),
        ({"api_base_url": "not a url"}, "--api-base-url"),
        ({"log_calls": "maybe"}, "is not on or off"),
    ],
)
def test_bad_values_are_refused_clearly_and_nothing_is_written(
    database_url, engine, change: dict[str, str], message: str
):
    code, out = run(database_url, *every_flag(**change))
    assert code != 0 and message in out, out
    assert API_KEY not in out and PBX_SECRET not in out
    assert count(engine) == 0


def test_the_pbx_fields_must_fit_together_and_account_ids_are_unique(database_url, engine):
    without_pbx = every_flag()
    at = without_pbx.index("--pbx-url")
    del without_pbx[at : at + 2]
    code, out = run(database_url, *without_pbx)
    assert code != 0 and "give --pbx-url too" in out
    assert count(engine) == 0
    assert run(database_url, *every_flag())[0] == 0
    code, out = run(database_url, *every_flag(uon_subdomain="other"))
    assert code != 0 and "--account-id 7001: integration" in out
    code, out = run(database_url, *every_flag(account_id="7002"))
    assert code != 0 and "--uon-subdomain agency: integration" in out
    assert count(engine) == 1
    # A PBX that checks no client id needs no --pbx-secret ({secret} stays empty).
    no_secret = every_flag(name="no-secret", account_id="7003", uon_subdomain="third")
    at = no_secret.index("--pbx-secret")
    del no_secret[at : at + 2]
    assert run(database_url, *no_secret)[0] == 0
    # Without any PBX field the default template is fine: click-to-call is just off.
    plain = ["integrations", "add", "--provider", "uon", "--name", "plain", "--api-key", API_KEY]
    code, out = run(database_url, *plain)
    assert code == 0, out


def test_check_looks_up_the_test_number(database_url, engine, uon_url):
    known = add_uon(engine, uon_url, settings={"test_phone": "+" + KNOWN_PHONE})
    code, out = run(database_url, "integrations", "check", str(known.id))
    assert code == 0, out
    assert f"test number +{KNOWN_PHONE}: U-ON client {KNOWN_PHONE}" in out
    code, out = run(database_url, "integrations", "check", str(known.id), "--json")
    data = json.loads(out)
    assert data["ok"] and data["checked"] and data["details"]["found"] is True
    assert data["details"]["customers"][0]["uon_id"] == KNOWN_PHONE
    assert data["details"]["countries"] > 0

    unknown = add_uon(engine, uon_url, settings={"test_phone": UNKNOWN_PHONE})
    code, out = run(database_url, "integrations", "check", str(unknown.id))
    assert code == 0 and f"no U-ON client has the test number +{UNKNOWN_PHONE}" in out

    refused = add_uon(engine, uon_url, api_key="not-the-key-0123456789")
    code, out = run(database_url, "integrations", "check", str(refused.id))
    assert code == 1 and "refused the API key" in out and "not-the-key" not in out

    down = add_uon(engine, "http://127.0.0.1:9")
    code, out = run(database_url, "integrations", "check", str(down.id), "--json")
    assert code == 1 and json.loads(out)["ok"] is False
    with engine.connect() as conn:
        logged = " ".join(
            f"{r.url} {r.response_body} {r.error}" for r in conn.execute(select(api_call_log))
        )
    assert API_KEY not in logged and "not-the-key-0123456789" not in logged


def test_notify_sends_a_notification_to_a_manager(database_url, engine, uon_url):
    item = add_uon(engine, uon_url)
    httpx.delete(f"{uon_url}/_admin/notifications")
    code, out = run(
        database_url,
        "uon",
        "notify",
        "--integration",
        str(item.id),
        "--manager",
        "2",
        "--text",
        "Перезвоните клиенту",
    )
    assert code == 0 and "notification sent to U-ON manager 2" in out, out
    code, out = run(
        database_url,
        "uon",
        "notify",
        "--integration",
        str(item.id),
        "--manager",
        "4",
        "--text",
        "second",
        "--json",
    )
    assert code == 0 and json.loads(out) == {
        "integration": item.id,
        "manager_id": "4",
        "sent": True,
    }
    sent = httpx.get(f"{uon_url}/_admin/notifications").json()
    assert [(n["manager_id"], n["text"]) for n in sent] == [
        ("2", "Перезвоните клиенту"),
        ("4", "second"),
    ]
    assert API_KEY not in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--manager", "two", "--text", "x"), "not a U-ON manager id"),
        (("--manager", "2", "--text", "   "), "must not be empty"),
        (("--manager", "2"), "Missing option '--text'"),
    ],
)
def test_notify_refuses_bad_input(database_url, engine, args, message):
    item = add_uon(engine)
    code, out = run(database_url, "uon", "notify", "--integration", str(item.id), *args)
    assert code == 2 and message in out


def test_notify_fails_clearly(database_url, engine, uon_url):
    refused = add_uon(engine, uon_url, api_key="not-the-key-0123456789")
    code, out = run(
        database_url, "uon", "notify", "--integration", str(refused.id), "--manager", "2",
        "--text", "x",
    )  # fmt: skip
    assert code == 1 and "authentication failed" in out and "not-the-key" not in out
    code, out = run(
        database_url, "uon", "notify", "--integration", "999", "--manager", "2", "--text", "x"
    )
    assert code == 1 and "999" in out


def test_remove_deletes_the_integrations_rows(database_url, engine):
    item = add_uon(engine)
    with engine.begin() as conn:
        conn.execute(
            insert(uon_inbox).values(
                integration_id=item.id,
                source="telephony",
                event="start",
                external_id="c-1",
                phone="+375291234568",
                payload={"raw": {}},
                received_at=now_utc(),
            )
        )
        take_webhooks(conn)
        conn.execute(insert(uon_calls).values(integration_id=item.id, call_id="c-1"))
        conn.execute(
            insert(customers).values(
                integration_id=item.id, external_id="1", custom_fields={}, raw={}
            )
        )
        write_cache(conn, item.id, "+375291234568", None, now_utc(), 90)
    code, out = run(database_url, "integrations", "remove", str(item.id))
    assert code == 1 and "uon_tasks: 2" in out and "customers: 1" in out
    code, out = run(database_url, "integrations", "remove", str(item.id), "--yes", "--json")
    assert code == 0, out
    rows = json.loads(out)["rows"]
    assert rows["uon_inbox"] == 1 and rows["uon_phone_cache"] == 1 and rows["integrations"] == 1
    assert count(engine) == 0


def test_a_shared_flag_reads_the_chosen_providers_own_environment_variable(database_url, engine):
    # `--api-key` is Unisender's and U-ON's: each reads its own variable, never the other's.
    base = ["integrations", "add", "--provider", "uon", "--json"]
    code, out = run(
        database_url, *base, "--name", "wrong-env", env={"CRM_SYNC_UNISENDER_API_KEY": API_KEY}
    )
    assert code != 0 and "--api-key" in out and API_KEY not in out
    code, out = run(database_url, *base, "--name", "env", env={"CRM_SYNC_UON_API_KEY": API_KEY})
    assert code == 0, out
    assert API_KEY not in out
    with engine.connect() as conn:
        assert get_integration(conn, json.loads(out)["id"]).credentials["api_key"] == API_KEY
