"""Unisender checks evaluated every 5 minutes, whether or not exports run: accounts that
need a person (refused API key: `integrations.attention`) fail the attention check."""

from dagster import (
    AssetCheckEvaluation,
    DefaultSensorStatus,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from orchestration.defs.unisender.assets import CONTACTS_ASSET, attention_result
from orchestration.resources.database import CrmDatabase


@sensor(
    name="unisender_attention_sensor",
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.RUNNING,
    description="Every 5 minutes: fails unisender/contacts' integrations_need_no_attention "
    "check while an active Unisender account's API key is refused.",
)
def unisender_attention_sensor(context: SensorEvaluationContext, crm_db: CrmDatabase) -> SkipReason:
    result = attention_result(crm_db.engine)
    context.instance.report_runless_asset_event(
        AssetCheckEvaluation(
            asset_key=CONTACTS_ASSET,
            check_name=result.check_name,  # type: ignore[arg-type]
            passed=result.passed,
            metadata=result.metadata,
            severity=result.severity,
            description=result.description,
        )
    )
    return SkipReason(
        f"needs attention: {result.description}" if not result.passed else "no attention needed"
    )
