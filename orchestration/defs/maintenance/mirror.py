"""The traffic mirror's job and sensor: inbox rows → each integration's `mirror_url`.

`inbox_mirror_sensor` looks every 5 s for integrations with a `mirror_url` and settled
inbox rows after their cursor, and requests one `inbox_mirror` run (never a second
while one is queued or running); the run forwards them (orchestration.core.mirror) and
reports, per integration, what it forwarded, the error that stopped it and the lag.
"""

import time
from datetime import UTC, datetime, timedelta

import httpx
from dagster import (
    Config,
    DefaultSensorStatus,
    MetadataValue,
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

from orchestration.core import mirror
from orchestration.core.sensors import ACTIVE_STATUSES, SENSOR_INTERVAL_SECONDS
from orchestration.resources.database import CrmDatabase

JOB_NAME = "inbox_mirror"
# A run still "active" after this long is taken for one whose process vanished: it no
# longer holds the mirror back (passes are bounded to seconds).
STALE_RUN_SECONDS = 600


class InboxMirrorConfig(Config):
    """Per-run overrides of a forwarding pass."""

    batch_size: int = Field(
        mirror.DEFAULT_BATCH, ge=1, le=10_000, description="Rows per integration per pass."
    )
    max_seconds: float = Field(
        mirror.DEFAULT_PASS_SECONDS, gt=0, description="Stop an integration's pass after this."
    )
    timeout_seconds: float = Field(5.0, gt=0, description="Per-request timeout to the mirror.")


@op(description="Forward inbox rows after each mirrored integration's cursor, in id order.")
def forward_inbox_mirror_op(
    context: OpExecutionContext, config: InboxMirrorConfig, crm_db: CrmDatabase
) -> Output[int]:
    timeout = httpx.Timeout(config.timeout_seconds, connect=min(2.0, config.timeout_seconds))
    with mirror.new_client(timeout) as client:
        reports = mirror.forward_pending(
            crm_db.engine, client=client, batch=config.batch_size, max_seconds=config.max_seconds
        )
    forwarded = sum(r.forwarded for r in reports)
    errors = [r for r in reports if r.error]
    metadata: dict[str, object] = {
        "forwarded": forwarded,
        "errors": len(errors),
        "lag": sum(r.lag for r in reports),
        "integrations": len({r.integration_id for r in reports}),
    }
    for report in reports:
        metadata[f"integration_{report.integration_id}_{report.inbox}"] = MetadataValue.json(
            report.as_dict()
        )
        if report.forwarded or report.error:
            context.log.info(
                f"integration {report.integration_id} ({report.inbox}): forwarded "
                f"{report.forwarded}, lag {report.lag}"
                + (f", stopped: {report.error}" if report.error else "")
            )
    return Output(forwarded, metadata=metadata)


@job(
    name=JOB_NAME,
    executor_def=in_process_executor,
    description="Forward stored webhooks to each integration's mirror_url (answers ignored).",
)
def inbox_mirror() -> None:
    forward_inbox_mirror_op()


def _active_run(context: SensorEvaluationContext) -> str | None:
    """The id of a live `inbox_mirror` run, if any (stale ones are ignored)."""
    records = context.instance.get_run_records(
        filters=RunsFilter(job_name=JOB_NAME, statuses=ACTIVE_STATUSES), limit=5
    )
    fresh_after = datetime.now(UTC) - timedelta(seconds=STALE_RUN_SECONDS)
    for record in records:
        created = record.create_timestamp
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        if created >= fresh_after:
            return record.dagster_run.run_id
        context.log.warning(f"inbox_mirror run {record.dagster_run.run_id} looks stuck")
    return None


@sensor(
    name="inbox_mirror_sensor",
    # By name: a sensor holding the job object is rebuilt when the job's resources are
    # bound, and that rebuild makes Dagster print a beta warning.
    job_name=JOB_NAME,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Every 5 s: requests an inbox_mirror run when an integration with a "
    "mirror_url has stored webhooks not yet forwarded.",
)
def inbox_mirror_sensor(
    context: SensorEvaluationContext, crm_db: CrmDatabase
) -> RunRequest | SkipReason:
    pending = mirror.waiting(crm_db.engine)
    if not pending:
        return SkipReason("no stored webhooks waiting for a mirror")
    active = _active_run(context)
    if active is not None:
        return SkipReason(f"run {active} is forwarding")
    ids = ",".join(str(i) for i in sorted(pending)[:20])
    # A fresh key every tick: a pass that could not reach a mirror is retried next tick.
    return RunRequest(run_key=f"inbox-mirror:{time.time_ns()}", tags={"crm/mirror": ids})
