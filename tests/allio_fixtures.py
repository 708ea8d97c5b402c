"""Shared helpers for the ALLIO sync tests: a real emulator over HTTP, a real Dagster
instance, integrations, webhooks and tasks written straight into the CRM database.

Test modules import the fixtures they use (`from tests.allio_fixtures import ...`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    ExecuteInProcessResult,
    build_sensor_context,
)
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.utils import make_new_run_id
from sqlalchemy import Engine, insert, select

from crm_schema.engine import make_engine
from crm_schema.integrations import Integration, add_integration
from crm_schema.providers.allio import allio_tasks, allio_webhook
from crm_schema.tables import api_call_log
from orchestration.allio.tasks import entity_for_command, handler_for
from orchestration.db import dispose_engines
from orchestration.definitions import build_definitions
from orchestration.defs.allio.resources import AllioResource
from orchestration.defs.allio.sensors import allio_webhook_sensor
from orchestration.resources.database import CrmDatabase
from provider_emulators.allio import create_app
from provider_emulators.testing import running_server

TOKEN = "allio-test-token-0123456789"
# The client's shared limiter would pace ALLIO at its real 2 requests/s; tests that
# are not about the quota raise the deployment's ALLIO quota so they stay fast.
FAST_QUOTA = 500.0
RESERVES = AssetKey(["allio", "reserves"])
DEALCARDS = AssetKey(["allio", "dealcards"])
CONTACTS = AssetKey(["allio", "contacts"])
NO_IDLE = {"ops": {"allio_sync_assets": {"config": {"idle_seconds": 0}}}}


def utcnow() -> datetime:
    return datetime.now(UTC)


def utc(value: datetime | None) -> datetime | None:
    """A stored timestamp as aware UTC (SQLite hands back naive UTC, PostgreSQL aware)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def today() -> date:
    return utcnow().date()


def at_noon(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, 0, tzinfo=UTC)


# ---- emulator ----------------------------------------------------------------------------


@dataclass
class Emulator:
    """A running ALLIO emulator and its admin API."""

    app: Any
    base_url: str

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=5)

    def put_record(self, entity: str, record_id: int, record: dict) -> None:
        with self.admin() as c:
            c.put(f"/_admin/records/{entity}/{record_id}", json=record).raise_for_status()

    def delete_record(self, entity: str, record_id: int) -> None:
        with self.admin() as c:
            c.delete(f"/_admin/records/{entity}/{record_id}").raise_for_status()

    def set_faults(self, **faults: Any) -> None:
        with self.admin() as c:
            c.put("/_admin/faults", json=faults).raise_for_status()

    def requests(self, entity: str | None = None) -> list[dict]:
        """Logged provider requests (oldest first), optionally for one entity."""
        params = {"path": f"/{entity}/list"} if entity else {}
        with self.admin() as c:
            resp = c.get("/_admin/requests", params=params)
            resp.raise_for_status()
            return sorted(resp.json(), key=lambda e: e["seq"])

    def requested_ids(self, entity: str) -> list[int]:
        return [i for e in self.requests(entity) for i in (e["ids"] or [])]


@pytest.fixture(scope="module")
def allio_server() -> Iterator[tuple[Any, str]]:
    app = create_app(token=TOKEN, quota_per_second=None)
    with running_server(app) as url:
        yield app, url


@pytest.fixture
def emulator(allio_server) -> Emulator:
    """The module's emulator (no quota), with records, faults and request log reset."""
    app, url = allio_server
    app.state.emulator.log.clear()
    app.state.emulator.faults.clear()
    app.state.records.reset()
    return Emulator(app, url)


# ---- database ----------------------------------------------------------------------------


@pytest.fixture
def crm(database_url: str) -> Iterator[tuple[str, Engine]]:
    """(url, engine) of a fresh migrated CRM database; shared engines disposed after."""
    eng = make_engine(database_url)
    yield database_url, eng
    eng.dispose()
    dispose_engines()


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with DagsterInstance.ephemeral() as inst:
        yield inst


def add_allio(
    engine: Engine,
    base_url: str,
    *,
    name: str = "allio",
    delete_control: bool = False,
    settings: dict[str, Any] | None = None,
) -> Integration:
    settings = {"delete_control": delete_control, **(settings or {})}
    with engine.begin() as conn:
        return add_integration(
            conn,
            provider="allio",
            name=name,
            integration_uuid=str(uuid.uuid4()),
            api_base_url=base_url,
            credentials={"api_token": TOKEN},
            settings=settings,
        )


def add_webhook(
    engine: Engine,
    integration: Integration,
    command: str,
    ids: Sequence[int],
    *,
    webhook_id: int | None = None,
) -> int:
    values = {
        "integration_uuid": integration.integration_uuid,
        "command": command,
        "external_ids_array": json.dumps(list(ids)),
        "created_at": utcnow(),
        "integration_id": integration.id,
    }
    if webhook_id is not None:
        values["id"] = webhook_id
    with engine.begin() as conn:
        return conn.execute(
            insert(allio_webhook).values(**values).returning(allio_webhook.c.id)
        ).scalar_one()


def add_task(
    engine: Engine,
    integration: Integration,
    command: str,
    ids: Sequence[int],
    *,
    entity: str | None = None,
    status: int = 0,
    created_at: datetime | None = None,
    attempts: int = 0,
    claimed_at: datetime | None = None,
    lease_expires_at: datetime | None = None,
    run_id: str | None = None,
    error: str | None = None,
    next_attempt_at: datetime | None = None,
    crashes: int = 0,
) -> int:
    """A task written directly (e.g. on another day, or in a given state)."""
    if claimed_at is not None and lease_expires_at is None:
        lease_expires_at = claimed_at + timedelta(minutes=2)
    with engine.begin() as conn:
        return conn.execute(
            insert(allio_tasks)
            .values(
                external_ids=json.dumps(list(ids)),
                status=status,
                created_at=created_at or utcnow(),
                entity=entity or entity_for_command(command),
                integration_id=integration.id,
                command=command,
                handler=handler_for(command),
                attempts=attempts,
                crashes=crashes,
                claimed_at=claimed_at,
                lease_expires_at=lease_expires_at,
                next_attempt_at=next_attempt_at,
                run_id=run_id,
                error=error,
                ids_count=len(ids),
                finished_at=utcnow() if status in (2, 3) else None,
            )
            .returning(allio_tasks.c.id)
        ).scalar_one()


def tasks(engine: Engine) -> dict[int, dict]:
    """Every allio_tasks row by id."""
    with engine.connect() as conn:
        return {r.id: r._asdict() for r in conn.execute(select(allio_tasks))}


def rows(engine: Engine, table, **where: Any) -> dict[str, dict]:  # noqa: ANN001
    """Rows of an entity table by external_id."""
    query = select(table)
    for col, value in where.items():
        query = query.where(table.c[col] == value)
    with engine.connect() as conn:
        return {r.external_id: r._asdict() for r in conn.execute(query)}


def call_log_integrations(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(select(api_call_log.c.integration_id).order_by(api_call_log.c.id))
            .scalars()
            .all()
        )


# ---- Dagster -----------------------------------------------------------------------------


def add_run(instance: DagsterInstance, status: DagsterRunStatus, tags: dict[str, str]) -> Any:
    """A run of `allio_sync` recorded in the instance, in the given status (no process)."""
    origin = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=InProcessCodeLocationOrigin(
                loadable_target_origin=LoadableTargetOrigin(module_name="orchestration.definitions")
            ),
            repository_name="__repository__",
        ),
        job_name="allio_sync",
    )
    return instance.add_run(
        DagsterRun(
            job_name="allio_sync",
            run_id=make_new_run_id(),
            status=status,
            tags=tags,
            remote_job_origin=origin,
        )
    )


def tick(url: str, instance: DagsterInstance, cursor: str | None = None):  # noqa: ANN201
    """Evaluate the webhook sensor once; returns the SensorResult."""
    context = build_sensor_context(
        instance=instance, cursor=cursor, resources={"crm_db": CrmDatabase(database_url=url)}
    )
    return allio_webhook_sensor(context)


def allio_resource(
    url: str, *, fast_retries: bool = False, quota: float | None = FAST_QUOTA
) -> AllioResource:
    """The ALLIO resource: at a test quota (None: ALLIO's real one), quick retries if asked."""
    retries: dict[str, Any] = (
        {"max_attempts": 2, "backoff_initial_seconds": 0.01, "backoff_max_seconds": 0.05}
        if fast_retries
        else {}
    )
    return AllioResource(database_url=url, quota_per_second=quota, **retries)


def run_sync(
    url: str,
    instance: DagsterInstance,
    day: date | str,
    tags: dict[str, str] | None = None,
    *,
    fast_retries: bool = False,
    quota: float | None = FAST_QUOTA,
    config: dict[str, Any] | None = None,
    raise_on_error: bool = True,
) -> ExecuteInProcessResult:
    """Execute the `allio_sync` job in process for one partition."""
    defs = build_definitions(url)
    run_config = {"ops": {"allio_sync_assets": {"config": {"idle_seconds": 0, **(config or {})}}}}
    return defs.resolve_job_def("allio_sync").execute_in_process(
        instance=instance,
        partition_key=day if isinstance(day, str) else day.isoformat(),
        tags=tags if tags is not None else {"crm/mode": "live"},
        run_config=run_config,
        resources={"allio": allio_resource(url, fast_retries=fast_retries, quota=quota)},
        raise_on_error=raise_on_error,
    )


def run_delete_control(
    url: str, instance: DagsterInstance, *, fast_retries: bool = False, **config: Any
) -> ExecuteInProcessResult:
    """Execute `allio_delete_control` in process (failures are returned, not raised)."""
    defs = build_definitions(url)
    return defs.resolve_job_def("allio_delete_control").execute_in_process(
        instance=instance,
        run_config={"ops": {"allio_delete_control_op": {"config": config}}},
        raise_on_error=False,
        resources={"allio": allio_resource(url, fast_retries=fast_retries)},
    )


def metadata(result: ExecuteInProcessResult, key: AssetKey) -> dict[str, Any]:
    """The plain metadata values of the run's materialization of `key`."""
    found = [
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == key
    ]
    assert len(found) == 1, f"expected one materialization of {key}"
    return {k: v.value for k, v in found[0].items()}


def checks(result: ExecuteInProcessResult) -> dict[tuple[str, str], Any]:
    """{(asset path, check name): AssetCheckEvaluation} of the run."""
    return {
        ("/".join(e.asset_key.path), e.check_name): e for e in result.get_asset_check_evaluations()
    }


def step_failure_message(result: ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    assert failures, "expected a step failure"
    data = failures[0].step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    return data.error.message if data.error else ""


def days_ago(n: int) -> date:
    return today() - timedelta(days=n)
