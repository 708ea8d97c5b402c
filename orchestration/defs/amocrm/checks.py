"""amoCRM checks evaluated every 5 minutes, whether or not sync runs happen: the task
queues of both handlers, and integrations that need a person (re-authorization, IP
blocked: `integrations.attention`)."""

from dagster import (
    AssetCheckEvaluation,
    DefaultSensorStatus,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from orchestration.amocrm.tasks import CONTACT, CONTACTS, LEAD, QUEUE, RDESK
from orchestration.core.checks import QueueChecksSpec, build_queue_checks
from orchestration.defs.amocrm.assets import ASSETS, CONTACTS_ASSET, LEADS, attention_result
from orchestration.resources.database import CrmDatabase

LEADS_QUEUE = QueueChecksSpec(
    provider="amocrm", queue=QUEUE, handler=RDESK, asset_keys={LEAD: LEADS}
)
# Its own name: the generic builder names checks and sensor after `provider`.
CONTACTS_QUEUE = QueueChecksSpec(
    provider="amocrm_contacts", queue=QUEUE, handler=CONTACTS, asset_keys={CONTACT: CONTACTS_ASSET}
)
amocrm_queue_checks, amocrm_queue_health_sensor = build_queue_checks(LEADS_QUEUE)
amocrm_contacts_queue_checks, amocrm_contacts_queue_health_sensor = build_queue_checks(
    CONTACTS_QUEUE
)


@sensor(
    name="amocrm_attention_sensor",
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.RUNNING,
    description="Every 5 minutes: fails the amoCRM assets' integrations_need_no_attention "
    "check while an active integration needs re-authorization or is IP blocked.",
)
def amocrm_attention_sensor(context: SensorEvaluationContext, crm_db: CrmDatabase) -> SkipReason:
    failing = []
    for key in ASSETS:
        result = attention_result(key, crm_db.engine)
        context.instance.report_runless_asset_event(
            AssetCheckEvaluation(
                asset_key=key,
                check_name=result.check_name,  # type: ignore[arg-type]
                passed=result.passed,
                metadata=result.metadata,
                severity=result.severity,
                description=result.description,
            )
        )
        if not result.passed:
            failing.append(result.description or key.to_user_string())
    return SkipReason(
        "needs attention: " + "; ".join(failing) if failing else "no attention needed"
    )
