"""`unisender_contacts_sensor`: one export run when amoCRM contacts changed.

Every 30 s it reads, per active Unisender account, a watermark of its amoCRM
integration's contacts (latest ``synced_at``, highest id, row count). An account whose
watermark moved since the cursor (or, on the first tick, whose contacts changed after
its last export) is due; all due accounts go into one run (the `crm/integration` tag),
so a burst of contact changes is one export, not a call per contact.
"""

import json
from datetime import UTC, datetime
from typing import Any

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from sqlalchemy import Engine, func, select

from crm_schema.integrations import list_integrations
from crm_schema.providers.unisender import unisender_contacts
from crm_schema.tables import contacts
from orchestration.core.run_tags import INTEGRATION, PROVIDER
from orchestration.defs.unisender.jobs import unisender_export_job
from orchestration.resources.database import CrmDatabase
from orchestration.unisender.client import PROVIDER as UNISENDER

__all__ = ["due_accounts", "unisender_contacts_sensor"]


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC) if value is not None else None


def _iso(value: datetime | None) -> str:
    moment = _utc(value)
    return moment.isoformat(timespec="microseconds") if moment is not None else ""


def due_accounts(engine: Engine, cursor: str | None) -> tuple[list[int], dict[str, str]]:
    """(accounts whose amoCRM contacts changed since ``cursor``, the new watermarks)."""
    seen: dict[str, str] = json.loads(cursor) if cursor else {}
    c, u = contacts.c, unisender_contacts.c
    due: list[int] = []
    marks: dict[str, str] = {}
    with engine.connect() as conn:
        accounts = list_integrations(conn, provider=UNISENDER, active_only=True)
        for account in accounts:
            amocrm_id = account.settings.get("amocrm_integration_id")
            if not amocrm_id:
                continue
            latest, top, count = conn.execute(
                select(func.max(c.synced_at), func.max(c.id), func.count()).where(
                    c.integration_id == int(amocrm_id), c.role == "contact"
                )
            ).one()
            if not count:
                continue
            mark = f"{_iso(latest)}|{top}|{count}"
            key = str(account.id)
            marks[key] = mark
            if key in seen:
                if seen[key] != mark:
                    due.append(account.id)
                continue
            exported = conn.execute(
                select(func.max(u.updated_at)).where(u.integration_id == account.id)
            ).scalar()
            newest, last = _utc(latest), _utc(exported)
            if last is None or (newest is not None and newest > last):
                due.append(account.id)
    return due, marks


@sensor(
    name="unisender_contacts_sensor",
    job=unisender_export_job,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Every 30 s: one unisender_export run for the accounts whose amoCRM "
    "contacts changed since the last tick (changes batched, never a run per contact).",
)
def unisender_contacts_sensor(
    context: SensorEvaluationContext, crm_db: CrmDatabase
) -> SensorResult | SkipReason:
    due, marks = due_accounts(crm_db.engine, context.cursor)
    cursor = json.dumps(marks, sort_keys=True)
    if not due:
        return SensorResult(skip_reason="no amoCRM contact changed", cursor=cursor)
    ids = ",".join(map(str, sorted(due)))
    tags: dict[str, Any] = {INTEGRATION: ids, PROVIDER: UNISENDER}
    key = "|".join(f"{i}:{marks[str(i)]}" for i in sorted(due))
    return SensorResult(
        run_requests=[RunRequest(run_key=f"unisender:{key}", tags=tags)], cursor=cursor
    )
