"""iiko webhook registration: webhooks/update_settings per organization, drift, failures.

Against the iiko emulator over HTTP, on SQLite and PostgreSQL; the CLI through
click's runner; the daily job through a Dagster instance.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner
from dagster import DagsterInstance, build_schedule_context
from sqlalchemy import Engine, select

from crm_schema.engine import make_engine
from crm_schema.integrations import Integration, add_integration
from crm_schema.providers.iiko import webhook_configs
from crm_sync import encryption
from crm_sync.cli import main
from orchestration.definitions import build_definitions
from orchestration.defs.iiko.resources import IikoResource
from orchestration.defs.iiko.webhook_registration import iiko_webhook_registration_daily
from orchestration.iiko import webhook_registration as reg
from provider_emulators.iiko import create_app
from provider_emulators.testing import running_server
from tests.conftest import output_metadata

API_LOGIN = "reg-api-login-0123456789"
TOKEN = "reg-webhook-token-"  # + a suffix per integration (tokens are unique)
ORGS = ["0d6f1e7c-1111-4a1b-9c2d-3e4f5a6b7c8d", "0d6f1e7c-2222-4a1b-9c2d-3e4f5a6b7c8d"]
URL = "https://crm.example.com/webhooks/iiko/custom"


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    with running_server(create_app(api_login=API_LOGIN)) as url:
        yield url


@pytest.fixture
def crm(database_url: str) -> Iterator[tuple[str, Engine]]:
    engine = make_engine(database_url)
    yield database_url, engine
    engine.dispose()


def add_iiko(
    engine: Engine, base_url: str, api_login: str = API_LOGIN, **settings: Any
) -> Integration:
    with engine.begin() as conn:
        return add_integration(
            conn,
            provider="iiko",
            name=f"reg-{uuid.uuid4().hex[:6]}",
            integration_uuid=None,
            api_base_url=base_url,
            credentials={"api_login": api_login},
            settings={"organization_ids": ORGS, **settings},
            webhook_secret=TOKEN + uuid.uuid4().hex,
        )


def client(url: str, integ: Integration) -> Any:
    return IikoResource(database_url=url, max_attempts=1).client_for(integ)


def configs(engine: Engine, integ: Integration) -> dict[str, Any]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(webhook_configs).where(webhook_configs.c.integration_id == integ.id)
        ).all()
    return {r.organization_id: r for r in rows}


def test_register_records_configs_and_iiko_settings(crm, emulator) -> None:
    url, engine = crm
    integ = add_iiko(engine, emulator)
    with client(url, integ) as api:
        results = reg.register(engine, integ, api)
        settings = api.call("webhooks/settings", {"organizationId": ORGS[0]})
    assert [r.status for r in results] == ["registered", "registered"]
    expected_url = "http://127.0.0.1:8000" + integ.webhook_path  # receiver_public_base_url
    token = integ.webhook_secret
    assert settings["webHooksUri"] == expected_url and settings["authToken"] == token
    assert reg.differences(settings, reg.wanted_settings(ORGS[0], expected_url, token)) == []
    delivery = settings["webHooksFilter"]["deliveryOrderFilter"]
    assert len(delivery["orderStatuses"]) == 10 and delivery["errors"] is True
    assert "Served" in delivery["itemStatuses"]
    rows = configs(engine, integ)
    assert set(rows) == set(ORGS)
    for row in rows.values():
        assert (row.registration_status, row.registration_error) == ("registered", None)
        assert row.last_registration is not None and row.webhook_url == expected_url
        assert row.auth_token != token and encryption.is_encrypted(row.auth_token)
        assert encryption.decrypt(row.auth_token, "test") == token
        assert row.webhooks_filter == reg.WEBHOOKS_FILTER


def test_drift_is_found_and_registered_again(crm, emulator) -> None:
    url, engine = crm
    integ = add_iiko(engine, emulator, webhook_url=URL)
    with client(url, integ) as api:
        reg.register(engine, integ, api)
        # Someone changes the settings at iiko: another URL, fewer events.
        api.call(
            "webhooks/update_settings",
            {
                "organizationId": ORGS[1],
                "webHooksUri": "https://elsewhere.example.com/hook",
                "authToken": integ.webhook_secret,
                "webHooksFilter": {"deliveryOrderFilter": {"errors": True}},
            },
        )
        looked = reg.check(engine, integ, api, fix=False)
        assert [r.status for r in looked] == ["registered", "drift"]
        assert looked[1].differences == ("webHooksUri", "webHooksFilter.deliveryOrderFilter",
                                         "webHooksFilter.personalShiftFilter",
                                         "webHooksFilter.reserveFilter",
                                         "webHooksFilter.stopListUpdateFilter",
                                         "webHooksFilter.tableOrderFilter")  # fmt: skip
        assert configs(engine, integ)[ORGS[1]].registration_status == "drift"

        fixed = reg.check(engine, integ, api)
        assert [(r.status, r.action) for r in fixed] == [
            ("registered", "unchanged"),
            ("registered", "re-register"),
        ]
        settings = api.call("webhooks/settings", {"organizationId": ORGS[1]})
    assert settings["webHooksUri"] == URL
    assert configs(engine, integ)[ORGS[1]].registration_status == "registered"


def test_failed_registration_is_recorded_without_secrets(crm, emulator) -> None:
    url, engine = crm
    wrong = "wrong-api-login-secret-42"
    integ = add_iiko(engine, emulator, api_login=wrong)
    with client(url, integ) as api:
        results = reg.register(engine, integ, api)
    assert [r.status for r in results] == ["failed", "failed"]
    for row in configs(engine, integ).values():
        assert row.registration_status == "failed" and row.last_registration is None
        assert "webhooks/update_settings failed" in row.registration_error
        assert "(401)" in row.registration_error
        assert wrong not in row.registration_error and TOKEN not in row.registration_error


def test_cli_register_and_check_print_no_secrets(crm, emulator) -> None:
    url, engine = crm
    integ = add_iiko(engine, emulator)
    runner = CliRunner()
    base = ["--database-url", url]
    done = runner.invoke(
        main, ["iiko", "register-webhook", str(integ.id), "--url", URL, "--json", *base]
    )
    assert done.exit_code == 0, done.output
    data = json.loads(done.output)
    assert data["ok"] is True and [o["status"] for o in data["organizations"]] == ["registered"] * 2
    checked = runner.invoke(
        main, ["iiko", "check-webhook", str(integ.id), "--url", URL, "--json", *base]
    )
    assert checked.exit_code == 0, checked.output
    assert {o["action"] for o in json.loads(checked.output)["organizations"]} == {"unchanged"}
    default = runner.invoke(main, ["iiko", "register-webhook", str(integ.id), *base])
    assert default.exit_code == 0, default.output
    assert "registered" in default.output
    assert integ.webhook_key not in default.output  # the webhook key is masked

    bad = add_iiko(engine, emulator, api_login="another-wrong-login-77")
    failed = runner.invoke(main, ["iiko", "register-webhook", str(bad.id), "--json", *base])
    assert failed.exit_code == 1
    assert "registration failed for 2 of 2 organizations" in failed.output
    for out in (done.output, checked.output, default.output, failed.output):
        assert TOKEN not in out and API_LOGIN not in out and "another-wrong-login-77" not in out
    not_iiko = runner.invoke(main, ["iiko", "register-webhook", "999", *base])
    assert not_iiko.exit_code != 0


def test_daily_job_re_registers_and_fails_on_a_failed_registration(crm, emulator) -> None:
    url, engine = crm
    good = add_iiko(engine, emulator, webhook_url=URL)
    defs = build_definitions(url)
    job = defs.resolve_job_def("iiko_webhook_registration")
    when = datetime(2026, 3, 1, 3, 40, tzinfo=UTC)
    request = iiko_webhook_registration_daily(build_schedule_context(scheduled_execution_time=when))
    assert request.run_key == "iiko-webhook-registration:2026-03-01"
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance)
        assert result.success
        meta = output_metadata(result)
        assert (meta["integrations"], meta["organizations"], meta["failed"]) == (1, 2, 0)
        assert good.webhook_key not in json.dumps(meta["details"])
        assert {r.registration_status for r in configs(engine, good).values()} == {"registered"}

        add_iiko(engine, emulator, api_login="bad-login-for-the-job")
        failed = job.execute_in_process(instance=instance, raise_on_error=False)
    assert not failed.success
    [failure] = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.message
    assert "iiko webhook registration failed" in message and "(401)" in message
    assert "bad-login-for-the-job" not in message
