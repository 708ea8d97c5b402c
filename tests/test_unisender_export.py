"""Unisender export (issue 12, points 2 and 4): amoCRM contacts → importContacts over real
HTTP against the emulator, per-contact outcomes, quota and errors, sensor and asset."""

from __future__ import annotations

from datetime import timedelta

import httpx
import orjson
import pytest
from dagster import AssetKey, DagsterInstance, build_sensor_context
from sqlalchemy import select

from crm_schema.providers.unisender import (
    SYNC_FAILED,
    SYNC_INVALID,
    SYNC_REMOVED,
    SYNC_SYNCED,
)
from crm_schema.task_queue import now_utc
from orchestration.db import dispose_engines, shared_engine
from orchestration.definitions import build_definitions
from orchestration.defs.unisender.assets import ATTENTION, CONTACTS_ASSET
from orchestration.defs.unisender.schedules import unisender_export_daily
from orchestration.defs.unisender.sensors import unisender_contacts_sensor
from orchestration.resources.database import CrmDatabase
from orchestration.resources.errors import (
    ProviderAuthError,
    ProviderRateLimitedError,
    ProviderRequestError,
)
from orchestration.unisender.client import UnisenderClient, import_form
from orchestration.unisender.export import NO_EMAIL, content_hash, export_account
from tests.unisender_fixtures import (
    API_KEY,
    DENIED_KEY,
    Emulator,
    add_account,
    add_contacts,
    call_log_rows,
    change_contact,
    delete_contact,
    export_rows,
    reload,
    unisender_client,
    unisender_resource,
    unisender_server,
)

__all__ = ["unisender_server"]  # the emulator fixture, bound here for pytest


@pytest.fixture
def crm(database_url: str):
    engine = shared_engine(database_url)
    yield database_url, engine
    dispose_engines()


@pytest.fixture
def emu(unisender_server) -> Emulator:
    return Emulator(unisender_server[1])


def imports(engine) -> list[dict]:
    return [r for r in call_log_rows(engine) if "/importContacts" in r["url"]]


def run_export(url, engine, account, **kwargs):
    with unisender_client(url, reload(engine, account)) as client:
        return export_account(engine, reload(engine, account), client, **kwargs)


# ---- pure parts -------------------------------------------------------------------------


def _answer(body: dict) -> httpx.Response:
    return httpx.Response(200, json=body, request=httpx.Request("POST", "http://x/m"))


def test_envelope_errors_are_typed_and_auth_marks_attention():
    marks: list[str] = []
    client = UnisenderClient("http://127.0.0.1:9", api_key=API_KEY, on_attention=marks.append)
    try:
        assert client.parse_response(_answer({"result": [{"id": 1}]})) == [{"id": 1}]
        for code in ("retry_later", "api_call_limit_exceeded_for_api_key"):
            with pytest.raises(ProviderRateLimitedError):
                client.parse_response(_answer({"error": "busy", "code": code}))
        with pytest.raises(ProviderRequestError, match="lists not found: 9"):
            client.parse_response(_answer({"error": "lists not found: 9", "code": "invalid_arg"}))
        assert not marks
        leak = f"key {API_KEY} is not valid"
        with pytest.raises(ProviderAuthError) as caught:
            client.parse_response(_answer({"error": leak, "code": "invalid_api_key"}))
        assert not caught.value.retryable and API_KEY not in str(caught.value)
        assert marks and marks[0].startswith("needs attention") and API_KEY not in marks[0]
    finally:
        client.close()


def test_import_form_and_content_hash():
    form = import_form(("email", "Name"), [["a@b.cd", "A"], ["e@f.gh", None]])
    assert form == {
        "field_names[0]": "email",
        "field_names[1]": "Name",
        "data[0][0]": "a@b.cd",
        "data[0][1]": "A",
        "data[1][0]": "e@f.gh",
        "data[1][1]": "",
    }
    assert content_hash("A@B.cd", "A", [2, 1]) == content_hash("a@b.cd", "A", [1, 2])
    assert content_hash("a@b.cd", "A", [1]) != content_hash("a@b.cd", "B", [1])


# ---- the export over real HTTP ------------------------------------------------------------


def test_1200_contacts_go_in_three_calls_and_reach_the_list(crm, emu):
    url, engine = crm
    amocrm, account = add_account(engine, emu.url)
    ids = add_contacts(engine, amocrm, 1200)
    stats = run_export(url, engine, account, run_id="run-1")
    assert (stats.calls, stats.sent, stats.synced, stats.failed) == (3, 1200, 1200, 0)
    calls = imports(engine)
    assert len(calls) == 3
    for row in calls:
        assert row["status_code"] == 200 and row["error"] is None
    totals = [orjson.loads(r["response_body"])["result"]["total"] for r in calls]
    assert totals == [500, 500, 200]
    assert len(emu.emails(1)) == 1200
    rows = export_rows(engine, account)
    assert set(rows) == set(ids)
    assert {r["status"] for r in rows.values()} == {SYNC_SYNCED}
    assert all(r["run_id"] == "run-1" and r["synced_at"] for r in rows.values())
    # Nothing changed: the next export sends nothing.
    again = run_export(url, engine, account)
    assert (again.calls, again.sent, again.unchanged) == (0, 0, 1200)


def test_invalid_emails_and_contacts_without_one(crm, emu):
    url, engine = crm
    amocrm, account = add_account(engine, emu.url, settings={"retry_invalid_days": 7})
    good = add_contacts(engine, amocrm, 3)
    bad = add_contacts(engine, amocrm, 2, start=10, email=lambda i: f"not-an-email-{i}")
    none = add_contacts(engine, amocrm, 1, start=20, email=lambda i: None)
    stats = run_export(url, engine, account)
    assert (stats.calls, stats.synced, stats.invalid) == (1, 3, 3)
    rows = export_rows(engine, account)
    assert {rows[i]["status"] for i in good} == {SYNC_SYNCED}
    for i in bad:
        assert rows[i]["status"] == SYNC_INVALID
        assert "not-an-email" in rows[i]["reason"] or "nvalid" in rows[i]["reason"]
    assert rows[none[0]]["status"] == SYNC_INVALID and rows[none[0]]["reason"] == NO_EMAIL
    # Invalid ones wait retry_invalid_days; the one without an e-mail never costs a call.
    assert run_export(url, engine, account).calls == 0
    later = run_export(url, engine, account, now=now_utc() + timedelta(days=8))
    assert (later.calls, later.sent, later.invalid) == (1, 2, 2)
    # A fixed e-mail is sent at once.
    change_contact(engine, bad[0], email="fixed@example.com")
    fixed = run_export(url, engine, account)
    assert (fixed.sent, fixed.synced) == (1, 1)
    assert "fixed@example.com" in emu.emails(1)


def test_a_changed_contact_is_sent_again_and_an_unchanged_one_not(crm, emu):
    url, engine = crm
    amocrm, account = add_account(engine, emu.url)
    ids = add_contacts(engine, amocrm, 5)
    run_export(url, engine, account)
    before = len(imports(engine))
    change_contact(engine, ids[0], first_name="Renamed")
    change_contact(engine, ids[1], phone="+79990000000")  # not part of what is sent
    stats = run_export(url, engine, account)
    assert (stats.calls, stats.sent, stats.synced, stats.unchanged) == (1, 1, 1, 4)
    assert len(imports(engine)) == before + 1
    (sent,) = [c for c in emu.list_contacts(1) if c["email"].startswith("c1-")]
    assert "Renamed" in str(sent)
    # A new e-mail replaces the old one in the list.
    old = export_rows(engine, account)[ids[2]]["email"].lower()
    change_contact(engine, ids[2], email="moved@example.com")
    moved = run_export(url, engine, account)
    assert (moved.calls, moved.synced, moved.removed) == (2, 1, 0)
    emails = emu.emails(1)
    assert "moved@example.com" in emails and old not in emails and len(emails) == 5
    assert export_rows(engine, account)[ids[2]]["status"] == SYNC_SYNCED


def test_a_contact_deleted_in_amocrm_leaves_the_list(crm, emu):
    url, engine = crm
    amocrm, account = add_account(engine, emu.url)
    ids = add_contacts(engine, amocrm, 3)
    never = add_contacts(engine, amocrm, 1, start=50, email=lambda i: None)
    run_export(url, engine, account)
    rows = export_rows(engine, account)
    gone = rows[ids[0]]["email"].lower()
    assert gone in emu.emails(1)
    delete_contact(engine, ids[0])
    delete_contact(engine, never[0])
    stats = run_export(url, engine, account)
    assert (stats.calls, stats.removed) == (1, 2)
    rows = export_rows(engine, account)
    assert rows[ids[0]]["status"] == SYNC_REMOVED
    assert rows[never[0]]["status"] == SYNC_REMOVED
    assert gone not in emu.emails(1) and len(emu.emails(1)) == 2
    assert run_export(url, engine, account).calls == 0


def test_retry_later_backs_off_and_recovers(crm, emu):
    url, engine = crm
    amocrm, account = add_account(engine, emu.url)
    add_contacts(engine, amocrm, 10)
    emu.retry_later(2)
    stats = run_export(url, engine, account)
    assert (stats.calls, stats.synced, stats.failed) == (1, 10, 0)
    attempts = [r["attempt"] for r in imports(engine)]
    assert attempts == [1, 2, 3]
    assert reload(engine, account).attention is None


def test_invalid_api_key_marks_attention_without_retrying(crm, emu):
    url, engine = crm
    amocrm, account = add_account(engine, emu.url, api_key="wrong-key-0123456789abcdef")
    add_contacts(engine, amocrm, 600)
    stats = run_export(url, engine, account)
    assert stats.auth_failed and "invalid_api_key" in (stats.error or "")
    assert len(imports(engine)) == 1  # one attempt, no retry, no second batch
    assert reload(engine, account).attention.startswith("needs attention")
    assert {r["status"] for r in export_rows(engine, account).values()} == {SYNC_FAILED}
    _, denied = add_account(engine, emu.url, api_key=DENIED_KEY, amocrm=amocrm)
    assert run_export(url, engine, denied).auth_failed
    assert "access_denied" in reload(engine, denied).attention


def test_invalid_arg_fails_the_batch_with_the_message(crm, emu):
    url, engine = crm
    amocrm, account = add_account(engine, emu.url, list_ids=(99,))
    ids = add_contacts(engine, amocrm, 4)
    stats = run_export(url, engine, account)
    assert (stats.calls, stats.failed, stats.synced) == (1, 4, 0)
    rows = export_rows(engine, account)
    for i in ids:
        assert rows[i]["status"] == SYNC_FAILED
        assert "invalid_arg" in rows[i]["reason"] and "99" in rows[i]["reason"]
    assert len(imports(engine)) == 1  # never retried
    assert reload(engine, account).attention is None


def test_the_api_key_never_reaches_the_call_log(crm, emu):
    url, engine = crm
    amocrm, account = add_account(engine, emu.url)
    add_contacts(engine, amocrm, 3)
    with unisender_client(url, reload(engine, account)) as client:
        assert client.get_lists()[0]["id"] == 1
    run_export(url, engine, account)
    add_account(engine, emu.url, api_key="wrong-key-0123456789abcdef", amocrm=amocrm)
    rows = call_log_rows(engine)
    assert len(rows) >= 2
    for row in rows:
        text = " ".join(str(v) for v in row.values())
        assert API_KEY not in text
        assert "api_key=" in row["url"] and "format=json" in row["url"]


# ---- Dagster -----------------------------------------------------------------------------


def test_sensor_batches_changes_into_one_run_and_the_asset_materializes(crm, emu):
    url, engine = crm
    amocrm, account = add_account(engine, emu.url)
    ids = add_contacts(engine, amocrm, 20)
    with DagsterInstance.ephemeral() as instance:

        def tick(cursor=None):
            context = build_sensor_context(
                instance=instance,
                cursor=cursor,
                resources={"crm_db": CrmDatabase(database_url=url)},
            )
            return unisender_contacts_sensor(context)

        first = tick()
        (request,) = first.run_requests
        assert request.tags["crm/integration"] == str(account.id)
        result = (
            build_definitions(url)
            .resolve_job_def("unisender_export")
            .execute_in_process(
                instance=instance,
                tags=request.tags,
                resources={"unisender": unisender_resource(url)},
            )
        )
        assert result.success
        graph = build_definitions(url).resolve_asset_graph()
        assert graph.get(CONTACTS_ASSET).parent_keys == {AssetKey(["amocrm", "contacts"])}
        (event,) = result.get_asset_materialization_events()
        mat = event.materialization
        meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
        assert (meta["sent"], meta["synced"], meta["calls"]) == (20, 20, 1)
        assert meta["per_account"][str(account.id)]["synced"] == 20
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks == {ATTENTION: True}
        # Nothing changed since: no run. Three changes: one run.
        second = tick(first.cursor)
        assert not second.run_requests
        assert not tick().run_requests  # no cursor: compared with the last export
        for contact_id in ids[:3]:
            change_contact(engine, contact_id, first_name="Changed")
        third = tick(second.cursor)
        assert len(third.run_requests) == 1


def test_an_account_needing_attention_fails_the_check(crm, emu):
    url, engine = crm
    amocrm, account = add_account(engine, emu.url, api_key="wrong-key-0123456789abcdef")
    add_contacts(engine, amocrm, 2)
    with DagsterInstance.ephemeral() as instance:
        result = (
            build_definitions(url)
            .resolve_job_def("unisender_export")
            .execute_in_process(
                instance=instance,
                resources={"unisender": unisender_resource(url)},
                raise_on_error=False,
            )
        )
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {ATTENTION: False}


def test_the_daily_schedule_exports_everything():
    from dagster import build_schedule_context

    when = now_utc().replace(hour=2, minute=30)
    request = unisender_export_daily(build_schedule_context(scheduled_execution_time=when))
    assert request.run_key == f"unisender-daily:{when.date().isoformat()}"
    assert "crm/integration" not in request.tags


def test_the_call_quota_backs_off_every_process_and_recovers(crm):
    from crm_schema.tables import rate_limit_state
    from provider_emulators.testing import running_server
    from provider_emulators.unisender import create_app

    url, engine = crm
    # Two calls in any 3 s: the third of three is refused even on a busy machine.
    app = create_app(api_keys=[API_KEY], lists=[1], quota_per_minute=2, quota_window=3.0)
    with running_server(app) as base:
        amocrm, account = add_account(engine, base)
        add_contacts(engine, amocrm, 1200)
        with unisender_resource(url, max_attempts=5).client_for(reload(engine, account)) as client:
            stats = export_account(engine, reload(engine, account), client)
            retries = client.stats.retries
        assert (stats.calls, stats.synced, stats.failed) == (3, 1200, 0)
        assert retries >= 1
        refused = [r for r in imports(engine) if "api_call_limit_exceeded" in (r["error"] or "")]
        assert refused
        assert len(Emulator(base).emails(1)) == 1200
    with engine.connect() as conn:
        keys = [
            k for k in conn.execute(select(rate_limit_state.c.key)).scalars() if "unisender" in k
        ]
    assert len(keys) == 2  # the API key's budget and the IP's: both on every call
