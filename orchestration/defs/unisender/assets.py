"""Unisender's Dagster asset `unisender/contacts`: amoCRM contacts exported to e-mail lists.

It depends on `amocrm/contacts` (the UI shows the lineage). One run exports every
active Unisender account (or the ones named by the `crm/integration` tag): new and
changed contacts go through ``importContacts`` (≤ 500 a call), contacts deleted in
amoCRM are removed from the lists, and each contact's outcome is recorded in
`unisender_contacts` (orchestration.unisender.export). The materialization carries the
counts per account; an account needing attention (refused API key) fails the
`integrations_need_no_attention` check.
"""

from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    MetadataValue,
    asset,
)
from sqlalchemy import Engine, select

from crm_schema.integrations import list_integrations
from crm_schema.providers.unisender import unisender_contacts
from crm_schema.tables import integrations
from orchestration.core.metadata import KINDS, OWNERS, table_metadata
from orchestration.core.run_tags import integration_filter
from orchestration.defs.unisender.resources import mark_recovered
from orchestration.resources.transport import CallStats
from orchestration.unisender.client import PROVIDER
from orchestration.unisender.export import ExportStats, export_account

CONTACTS_ASSET = AssetKey(["unisender", "contacts"])
AMOCRM_CONTACTS = AssetKey(["amocrm", "contacts"])
GROUP = "unisender"
ATTENTION = "integrations_need_no_attention"
TOTALS = ("sent", "synced", "invalid", "removed", "failed", "unchanged", "calls")

_DESCRIPTION = (
    "amoCRM contacts exported to Unisender lists, one row per (Unisender account, "
    "contact): new and changed contacts (a hash of e-mail, name and list ids) sent with "
    "importContacts (field_names email, Name, email_list_ids; ≤ 500 a call); Unisender's "
    "log names invalid e-mails (status invalid, its reason); contacts without an e-mail "
    "are invalid ('no e-mail'); contacts deleted in amoCRM are removed from the lists."
)


def needing_attention(engine: Engine) -> dict[str, dict[str, Any]]:
    """Active Unisender accounts with `attention` set: {id: {name, attention, since}}."""
    c = integrations.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(c.id, c.name, c.attention, c.attention_at).where(
                c.provider == PROVIDER, c.is_active.is_(True), c.attention.is_not(None)
            )
        ).all()
    return {
        str(r.id): {
            "name": r.name,
            "attention": r.attention,
            "since": str(r.attention_at) if r.attention_at else None,
        }
        for r in rows
    }


def attention_result(engine: Engine) -> AssetCheckResult:
    """The attention check of `unisender/contacts`, now."""
    waiting = needing_attention(engine)
    return AssetCheckResult(
        asset_key=CONTACTS_ASSET,
        check_name=ATTENTION,
        passed=not waiting,
        severity=AssetCheckSeverity.ERROR,
        description="; ".join(f"account {k}: {v['attention']}" for k, v in waiting.items()) or None,
        metadata={
            "integrations_needing_attention": len(waiting),
            "details": MetadataValue.json(waiting),
        },
    )


@asset(
    key=CONTACTS_ASSET,
    deps=[AMOCRM_CONTACTS],
    description=_DESCRIPTION,
    group_name=GROUP,
    kinds=KINDS,
    owners=OWNERS,
    metadata=table_metadata(unisender_contacts),
    check_specs=[
        AssetCheckSpec(
            ATTENTION,
            asset=CONTACTS_ASSET,
            description="No active Unisender account needs a person (refused API key): "
            "`integrations.attention` is empty.",
        )
    ],
    required_resource_keys={"crm_db", "unisender"},
)
def unisender_contacts_asset(context: AssetExecutionContext) -> MaterializeResult:
    """Export every (selected) active Unisender account's amoCRM contacts."""
    engine: Engine = context.resources.crm_db.engine
    resource = context.resources.unisender
    only = integration_filter(context.run.tags)
    with engine.connect() as conn:
        accounts = list_integrations(conn, provider=PROVIDER, active_only=True)
    if only is not None:
        accounts = [a for a in accounts if a.id in only]
    calls = CallStats()
    per_account: dict[str, dict[str, Any]] = {}
    totals = dict.fromkeys(TOTALS, 0)
    for account in accounts:
        try:
            with resource.client_for(account, run_id=context.run.run_id, stats=calls) as client:
                stats = export_account(engine, account, client, run_id=context.run.run_id)
        except ValueError as exc:  # misconfigured account: reported, others go on
            stats = ExportStats(error=str(exc))
        if stats.calls and not stats.auth_failed and stats.error is None:
            mark_recovered(engine, account)
        per_account[str(account.id)] = {"name": account.name, **stats.as_metadata()}
        for key in TOTALS:
            totals[key] += getattr(stats, key)
        if stats.error:
            context.log.warning(f"Unisender account {account.id}: {stats.error}")
    return MaterializeResult(
        metadata={
            **totals,
            "accounts": len(accounts),
            "per_account": MetadataValue.json(per_account),
            "api_calls": calls.calls,
            "api_retries": calls.retries,
            "api_failures": calls.failures,
        },
        check_results=[attention_result(engine)],
    )
