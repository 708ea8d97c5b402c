"""iiko webhook registration in Dagster: job `iiko_webhook_registration`, run daily.

For every active iiko integration and organization it reads `webhooks/settings`,
compares it with what crm-sync wants (URL, authToken, the seed's filters) and
registers again on drift; a registration that fails fails the run with its reason.
"""

from typing import Any

from dagster import (
    Config,
    DefaultScheduleStatus,
    Failure,
    MetadataValue,
    OpExecutionContext,
    Output,
    RunRequest,
    ScheduleEvaluationContext,
    in_process_executor,
    job,
    op,
    schedule,
)
from pydantic import Field

from crm_schema.integrations import list_integrations
from orchestration.defs.iiko.resources import IikoResource
from orchestration.iiko.webhook_registration import RegistrationError, check
from orchestration.resources.database import CrmDatabase
from orchestration.resources.errors import ProviderError
from orchestration.resources.transport import CallStats


class WebhookRegistrationConfig(Config):
    """Per-run knobs."""

    fix: bool = Field(True, description="Register again on drift (off: only report it).")


@op(description="Check every active iiko integration's webhook settings; re-register on drift.")
def iiko_webhook_registration_op(
    context: OpExecutionContext,
    config: WebhookRegistrationConfig,
    crm_db: CrmDatabase,
    iiko: IikoResource,
) -> Output[dict]:
    engine = crm_db.engine
    with engine.connect() as conn:
        items = list_integrations(conn, provider="iiko", active_only=True)
    stats = CallStats()
    details: dict[str, Any] = {}
    problems: list[str] = []
    for integration in items:
        try:
            with iiko.client_for(integration, run_id=context.run.run_id, stats=stats) as client:
                results = check(engine, integration, client, fix=config.fix)
        except (RegistrationError, ValueError, ProviderError) as exc:
            problems.append(f"integration {integration.id}: {exc}")
            details[str(integration.id)] = {"error": str(exc)}
            continue
        # The webhook key in the URL is a secret of its own: masked like in the CLI.
        details[str(integration.id)] = [
            r.as_dict() | {"webhook_url": integration.masked_webhook(r.webhook_url)}
            for r in results
        ]
        for r in results:
            if r.status == "failed":
                problems.append(
                    f"integration {integration.id}, organization {r.organization_id}: {r.error}"
                )
    flat = [r for v in details.values() if isinstance(v, list) for r in v]
    metadata: dict[str, Any] = {
        "integrations": len(items),
        "organizations": len(flat),
        "unchanged": sum(1 for r in flat if r["action"] == "unchanged"),
        "registered": sum(
            1 for r in flat if r["status"] == "registered" and r["action"] != "unchanged"
        ),
        "drift": sum(1 for r in flat if r["differences"]),
        "failed": len(problems),
        "api_calls": stats.calls,
        "details": MetadataValue.json(details),
    }
    for key, value in details.items():
        context.log.info(f"integration {key}: {value}")
    if problems:
        raise Failure(
            description="iiko webhook registration failed: " + "; ".join(problems[:10]),
            metadata=metadata,
        )
    return Output(details, metadata=metadata)


@job(
    executor_def=in_process_executor,
    description="Check iiko webhook registrations (webhooks/settings) and re-register on drift.",
)
def iiko_webhook_registration() -> None:
    iiko_webhook_registration_op()


@schedule(
    job=iiko_webhook_registration,
    cron_schedule="40 3 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Daily: compare iiko's webhook settings with ours; register again on drift.",
)
def iiko_webhook_registration_daily(context: ScheduleEvaluationContext) -> RunRequest:
    day = context.scheduled_execution_time.date().isoformat()
    return RunRequest(run_key=f"iiko-webhook-registration:{day}")
