"""The call log keeps no personal data unless an integration opts in, and no row past its
retention: phones and e-mails masked in stored bodies, the daily retention job."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from dagster import DagsterInstance, DefaultScheduleStatus, build_schedule_context
from sqlalchemy import Engine, insert, select

from crm_schema.integrations import Integration, add_integration
from crm_schema.tables import api_call_log
from crm_schema.task_queue import now_utc
from crm_sync.cli import main
from crm_sync.fields import ProviderSettings
from crm_sync.redaction import mask_personal_data
from crm_sync.registry import PROVIDERS
from crm_sync.settings import Settings
from orchestration.db import dispose_engines
from orchestration.definitions import build_definitions, defs
from orchestration.defs.allio.resources import AllioResource
from orchestration.defs.maintenance.schedules import api_call_log_retention_daily
from orchestration.resources import ProviderClient
from orchestration.resources.calllog import CallLog, prune_call_log
from provider_emulators.allio import create_app
from provider_emulators.testing import running_server
from tests.conftest import count_rows, output_metadata

TOKEN = "s3cr3t-allio-token-9f8e7d6c"
PHONE, EMAIL = "+7 (916) 123-45-67", "ivan.petrov@example.ru"


@pytest.fixture(autouse=True)
def _dispose() -> Iterator[None]:
    yield
    dispose_engines()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"phone": "89161234567", "id": 79161234567}', '{"phone": "***", "id": 79161234567}'),
        ('{"client": {"Email": "a.b@c.io", "phone_raw": 79161234567}}',
         '{"client": {"Email": "***", "phone_raw": "***"}}'),
        ("call +7 916 123-45-67 or 8 (916) 123-45-67, mail x@y.org",
         "call *** or ***, mail ***"),
        ("phone=79161234567&email=a%40b.co&format=json", "phone=***&email=***&format=json"),
        # Ids, times and offsets are not phones.
        ('{"id": 1764460800, "till": "2026-11-30 12:00:00", "at": "2026-11-30T12:00:00+03:00"}',
         '{"id": 1764460800, "till": "2026-11-30 12:00:00", "at": "2026-11-30T12:00:00+03:00"}'),
    ],
)  # fmt: skip
def test_mask_personal_data(text: str, expected: str) -> None:
    assert mask_personal_data(text) == expected


def _echo(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200, json={"sent": json.loads(request.content), "support": f"write to {EMAIL}"}
    )


def _logged(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(select(api_call_log).order_by(api_call_log.c.id)).all()
    return [repr(tuple(r)) for r in rows]


@pytest.mark.parametrize("keep", [False, True])
def test_the_call_log_masks_phones_and_emails_unless_kept(engine: Engine, keep: bool) -> None:
    with ProviderClient(
        "http://provider.test",
        transport=httpx.MockTransport(_echo),
        call_log=CallLog(engine),
        secrets=[TOKEN],
        log_personal_data=keep,
    ) as client:
        body = client.request(
            "POST",
            "/contacts",
            params={"phone": "79161234567"},
            json={"phone": PHONE, "email": EMAIL, "token": TOKEN, "id": 7},
        )
    assert body["sent"]["phone"] == PHONE  # the caller gets the data; only the log is masked
    [row] = _logged(engine)
    assert TOKEN not in row  # secrets are masked either way
    assert (PHONE in row, EMAIL in row, "79161234567" in row) == (keep, keep, keep)
    assert "'id': 7" in row or '"id": 7' in row or '"id":7' in row


def _integration(engine: Engine, base_url: str, settings: dict) -> Integration:
    with engine.begin() as conn:
        return add_integration(
            conn,
            provider="allio",
            name="estate",
            integration_uuid=str(uuid.uuid4()),
            api_base_url=base_url,
            credentials={"api_token": TOKEN},
            settings=settings,
        )


def test_an_allio_integration_opts_in_with_log_personal_data(
    engine: Engine, database_url: str
) -> None:
    resource = AllioResource(database_url=database_url, quota_per_second=50)
    with running_server(create_app(token=TOKEN, quota_per_second=None)) as base:
        masked = _integration(engine, base, {})
        kept = _integration(engine, base, {"log_personal_data": True})
        records = {}
        for integ in (masked, kept):
            with resource.client_for(integ) as client:
                records[integ.id] = client.reserve_list(list(range(1, 40)))
    phones = {
        r["client"]["phone"]
        for r in records[masked.id]
        if isinstance(r.get("client"), dict) and len(str(r["client"].get("phone", ""))) > 6
    }
    assert phones  # the emulator's people have phones
    with engine.connect() as conn:
        rows = {
            r.integration_id: r.response_body
            for r in conn.execute(
                select(api_call_log.c.integration_id, api_call_log.c.response_body)
            )
        }
    assert not any(p in rows[masked.id] for p in phones) and '"phone":"***"' in rows[masked.id]
    assert any(p in rows[kept.id] for p in phones)


def test_every_provider_settings_model_has_log_personal_data(database_url: str, engine) -> None:
    for spec in PROVIDERS.values():
        assert issubclass(spec.settings, ProviderSettings), spec.name
        assert spec.validate_settings({"log_personal_data": True})["log_personal_data"] is True
    ident = _integration(engine, "http://x", {}).id
    result = CliRunner().invoke(
        main,
        ["integrations", "update", str(ident), "--setting", "log_personal_data=true", "--json"],
        env={"DATABASE_URL": database_url},
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["settings"]["log_personal_data"] is True


def _log_rows(engine: Engine, ages_days: list[float]) -> None:
    now = now_utc()
    with engine.begin() as conn:
        conn.execute(
            insert(api_call_log),
            [
                {"provider": "p", "method": "GET", "url": f"/{i}", "attempt": 1,
                 "created_at": now - timedelta(days=age)}
                for i, age in enumerate(ages_days)
            ],
        )  # fmt: skip


def test_prune_deletes_old_rows_in_batches(engine: Engine) -> None:
    _log_rows(engine, [30, 20, 15, 14.5, 13, 1, 0, 40, 16])
    result = prune_call_log(engine, now_utc() - timedelta(days=14), batch_size=2)
    assert (result.deleted, result.batches) == (6, 3)
    assert count_rows(engine, "api_call_log") == 3
    assert prune_call_log(engine, now_utc() - timedelta(days=14)).deleted == 0


def _run_retention(database_url: str, config: dict) -> Any:
    with DagsterInstance.ephemeral() as instance:
        return (
            build_definitions(database_url)
            .resolve_job_def("api_call_log_retention")
            .execute_in_process(
                instance=instance,
                run_config={"ops": {"prune_api_call_log_op": {"config": config}}},
            )
        )


def test_the_retention_job_and_its_daily_schedule(database_url: str, engine: Engine) -> None:
    _log_rows(engine, [30, 15, 13, 0])
    result = _run_retention(database_url, {"batch_size": 1})
    assert result.success
    metadata = output_metadata(result)
    assert metadata["deleted"] == 2 and metadata["batches"] == 2
    assert metadata["retention_days"] == 14
    assert count_rows(engine, "api_call_log") == 2
    result = _run_retention(database_url, {"retention_days": 7})
    assert result.success and count_rows(engine, "api_call_log") == 1
    schedule = defs.get_repository_def().get_schedule_def("api_call_log_retention_daily")
    assert schedule.default_status == DefaultScheduleStatus.RUNNING
    assert schedule.job_name == "api_call_log_retention"
    request = api_call_log_retention_daily(
        build_schedule_context(scheduled_execution_time=now_utc())
    )
    assert request.run_key == f"api-call-log-retention:{now_utc().date().isoformat()}"


def test_retention_days_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).call_log_retention_days == 14
    monkeypatch.setenv("CRM_SYNC_CALL_LOG_RETENTION_DAYS", "30")
    assert Settings(_env_file=None).call_log_retention_days == 30
