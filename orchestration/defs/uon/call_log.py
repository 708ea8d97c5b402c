"""The U-ON call log in Dagster: `uon_call_log_sensor` → job `uon_call_log`.

Every 5 s the sensor looks for `uon_calls` rows whose log is pending (or left
`sending` by a sender that died) and requests a run when no run of the job is active;
the run sends them (orchestration.uon.call_log: `lead/create` once per call id).
"""

from dagster import (
    Config,
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

from crm_schema.integrations import Integration
from crm_schema.task_queue import now_utc
from orchestration.core.sensors import ACTIVE_STATUSES, SENSOR_INTERVAL_SECONDS
from orchestration.defs.uon.resources import UonResource
from orchestration.resources.database import CrmDatabase
from orchestration.resources.transport import CallStats
from orchestration.uon.call_log import CallLogOptions, due_logs, send_call_logs

JOB_NAME = "uon_call_log"
MODE_TAG = {"crm/mode": "uon-call-log", "crm/provider": "uon"}


class CallLogConfig(Config):
    """Per-run knobs."""

    time_budget_seconds: float = Field(
        120.0, gt=0, le=3600, description="Send call logs for at most this long."
    )
    stale_after_seconds: float = Field(
        300.0,
        ge=0,
        description="A row `sending` this long belongs to a sender that died: failed, "
        "outcome unknown (never re-sent).",
    )
    max_attempts: int = Field(
        5, ge=1, le=50, description="Runs a call log U-ON refuses with 429 is tried in."
    )


@op(description="Send pending call logs to U-ON as leads (lead/create, once per call id).")
def uon_call_log_op(
    context: OpExecutionContext, config: CallLogConfig, crm_db: CrmDatabase, uon: UonResource
) -> Output[dict]:
    stats = CallStats()

    def client_for(integration: Integration) -> object:
        return uon.client_for(integration, run_id=context.run.run_id, stats=stats)

    opts = CallLogOptions(
        run_id=context.run.run_id,
        time_budget_seconds=config.time_budget_seconds,
        stale_after_seconds=config.stale_after_seconds,
        max_attempts=config.max_attempts,
    )
    report = send_call_logs(crm_db.engine, client_for, opts, log=context.log.warning)
    metadata = report.as_metadata() | {"api_calls": stats.calls, "api_429s": stats.http_429}
    context.log.info(f"U-ON call log: {metadata}")
    if report.errors:
        raise Failure(
            description="U-ON call log: unexpected errors in " + "; ".join(report.errors[:10]),
            metadata=metadata,
        )
    return Output(report.as_metadata(), metadata=metadata)


@job(
    name=JOB_NAME,
    executor_def=in_process_executor,
    tags=MODE_TAG,
    description="Log hung-up calls to U-ON as leads (the call-log outbox of uon_calls).",
)
def uon_call_log_job() -> None:
    uon_call_log_op()


@sensor(
    name="uon_call_log_sensor",
    # By name: a sensor holding the job object is rebuilt when the job's resources are
    # bound, and that rebuild makes Dagster print a beta warning.
    job_name=JOB_NAME,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Every 5 s: requests a uon_call_log run when call logs are pending.",
)
def uon_call_log_sensor(
    context: SensorEvaluationContext, crm_db: CrmDatabase
) -> RunRequest | SkipReason:
    with crm_db.engine.connect() as conn:
        due, max_id = due_logs(conn)
    if not due:
        return SkipReason("no U-ON call logs pending")
    active = context.instance.get_runs(
        filters=RunsFilter(job_name=JOB_NAME, statuses=ACTIVE_STATUSES), limit=1
    )
    if active:
        return SkipReason(f"{due} call logs pending; run {active[0].run_id} is active")
    # A fresh key each time: a row 429 put back to pending is due again later.
    return RunRequest(run_key=f"uon-call-log:{max_id}:{now_utc().isoformat()}", tags=MODE_TAG)
