"""iiko command outbox in Dagster: `iiko_command_sensor` → job `iiko_commands`.

The sensor looks every 5 s for due `iiko_commands` rows (pending, or sent and due for
a `commands/status` poll) and requests a run when no run of the job is active; the
run's op sends them and follows iiko's status until every row is finished or its
time budget ends (rows left are taken by the next run).
"""

from datetime import timedelta
from typing import Any

from dagster import (
    Config,
    DagsterRunStatus,
    DefaultSensorStatus,
    Failure,
    OpExecutionContext,
    Output,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    in_process_executor,
    job,
    op,
    sensor,
)
from pydantic import Field
from sqlalchemy import select, update

from crm_schema.integrations import Integration
from crm_schema.providers.iiko import COMMAND_PENDING, COMMAND_SENT
from crm_schema.providers.iiko import iiko_commands as outbox
from crm_schema.task_queue import now_utc
from crm_sync.settings import get_settings
from orchestration.core.sensors import ACTIVE_STATUSES, SENSOR_INTERVAL_SECONDS
from orchestration.defs.iiko.resources import IikoResource
from orchestration.iiko.commands import SenderOptions, due_commands, send_commands
from orchestration.resources.database import CrmDatabase
from orchestration.resources.transport import CallStats

JOB_NAME = "iiko_commands"
MODE_TAG = {"crm/mode": "iiko-commands"}


class CommandsConfig(Config):
    """Per-run knobs."""

    time_budget_seconds: float = Field(
        120.0, gt=0, le=3600, description="Send and follow commands for at most this long."
    )
    poll_interval_seconds: float = Field(
        1.0, gt=0, le=60, description="Seconds between commands/status polls of one command."
    )
    batch_size: int = Field(50, ge=1, le=1000, description="Rows claimed at a time.")


def sender_clients(iiko: IikoResource, run_id: str, stats: CallStats) -> Any:
    """``client_for`` for the sender: one attempt per call (the outbox retries itself)."""
    resource = iiko.model_copy(update={"max_attempts": 1})

    def client_for(integration: Integration) -> Any:
        return resource.client_for(integration, run_id=run_id, stats=stats)

    return client_for


@op(description="Send due iiko commands, follow commands/status, update orders and rows.")
def iiko_commands_op(
    context: OpExecutionContext, config: CommandsConfig, crm_db: CrmDatabase, iiko: IikoResource
) -> Output[dict]:
    stats = CallStats()
    opts = SenderOptions(
        run_id=context.run.run_id,
        lease=timedelta(seconds=get_settings().task_lease_seconds),
        time_budget_seconds=config.time_budget_seconds,
        poll_interval_seconds=config.poll_interval_seconds,
        batch_size=config.batch_size,
    )
    report = send_commands(crm_db.engine, sender_clients(iiko, context.run.run_id, stats), opts)
    metadata: dict[str, Any] = report.as_metadata() | {"api_calls": stats.calls}
    context.log.info(f"iiko commands: {metadata}")
    if report.errors:
        raise Failure(
            description="iiko commands: unexpected errors in " + "; ".join(report.errors[:10]),
            metadata=metadata,
        )
    return Output(report.as_metadata(), metadata=metadata)


@job(
    name=JOB_NAME,
    executor_def=in_process_executor,
    tags=MODE_TAG,
    description="Send iiko order commands and loyalty operations (the outbox) and follow "
    "them to Success or Error.",
)
def iiko_commands_job() -> None:
    iiko_commands_op()


def release_dead_claims(context: SensorEvaluationContext, crm_db: CrmDatabase) -> int:
    """Hand back rows leased to runs Dagster saw fail or cancelled (not after the lease)."""
    c = outbox.c
    now = now_utc()
    with crm_db.engine.connect() as conn:
        run_ids = conn.execute(
            select(c.run_id)
            .where(
                c.status.in_([COMMAND_PENDING, COMMAND_SENT]),
                c.lease_expires_at > now,
                c.run_id.is_not(None),
            )
            .distinct()
        ).scalars()
        held = list(run_ids)
    released = 0
    for run_id in held:
        record = context.instance.get_run_record_by_id(run_id)
        if record is None or record.dagster_run.status not in (
            DagsterRunStatus.FAILURE,
            DagsterRunStatus.CANCELED,
        ):
            continue  # a vanished or live run keeps its rows until the lease lapses
        with crm_db.engine.begin() as conn:
            released += conn.execute(
                update(outbox)
                .where(c.run_id == run_id, c.lease_expires_at.is_not(None))
                .values(lease_expires_at=None)
            ).rowcount
    return released


@sensor(
    name="iiko_command_sensor",
    # By name: a sensor holding the job object is rebuilt when the job's resources are
    # bound, and that rebuild makes Dagster print a beta warning.
    job_name="iiko_commands",
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Every 5 s: requests an iiko_commands run when outbox rows are due.",
)
def iiko_command_sensor(
    context: SensorEvaluationContext, crm_db: CrmDatabase
) -> RunRequest | SkipReason:
    released = release_dead_claims(context, crm_db)
    if released:
        context.log.warning(f"released {released} iiko commands held by runs that ended")
    with crm_db.engine.connect() as conn:
        due, max_id = due_commands(conn)
    if not due:
        return SkipReason("no iiko commands due")
    active = context.instance.get_runs(
        filters=RunsFilter(job_name=JOB_NAME, statuses=ACTIVE_STATUSES), limit=1
    )
    if active:
        return SkipReason(f"{due} commands due; run {active[0].run_id} is active and takes them")
    # Each request needs a fresh key: rows of one id can be due again after a run ended.
    return RunRequest(
        run_key=f"iiko-commands:{max_id}:{now_utc().isoformat()}",
        tags=MODE_TAG,
    )
