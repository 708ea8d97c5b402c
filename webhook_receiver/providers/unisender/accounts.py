"""Unisender accounts as the operator sees them: the account (never its API key), its
contacts' export state, and removal with what happened to its rows.

Shared by the operator API (webhook_receiver.providers.unisender.operator) and the CLI
(`crm-sync unisender status`, `crm-sync integrations remove`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, delete, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from crm_schema import integrations as integ
from crm_schema.providers.unisender import (
    SYNC_FAILED,
    SYNC_INVALID,
    SYNC_PENDING,
    SYNC_REMOVED,
    SYNC_SYNCED,
    unisender_contacts,
)
from crm_schema.tables import contacts, integrations
from crm_schema.task_queue import as_utc

PROVIDER = "unisender"
UNSYNCED = (SYNC_PENDING, SYNC_INVALID, SYNC_FAILED)
STATUSES = (SYNC_PENDING, SYNC_SYNCED, SYNC_INVALID, SYNC_FAILED, SYNC_REMOVED)
NOT_EXPORTED = "not_exported"  # an amoCRM contact without a row yet
NO_EMAIL = "no e-mail address in amoCRM"
WAITING = "not exported yet: waits for the next export"


class AccountError(LookupError):
    """No such Unisender account (a clear message)."""


def _iso(value: Any) -> str | None:
    return as_utc(value).isoformat() if value is not None else None


def get_account(conn: Connection, account_id: int) -> integ.Integration:
    """The Unisender integration with this id, or AccountError."""
    try:
        item = integ.get_integration(conn, account_id)
    except integ.IntegrationError:
        raise AccountError(f"no Unisender account with id {account_id}") from None
    if item.provider != PROVIDER:
        raise AccountError(f"integration {account_id} is {item.provider}, not a Unisender account")
    return item


def _amocrm_id(item: integ.Integration) -> int | None:
    value = item.settings.get("amocrm_integration_id")
    return int(value) if value is not None else None


def _base(item: integ.Integration) -> Any:
    """amoCRM contacts of the linked integration, outer-joined with this account's rows;
    rows whose contact belongs elsewhere are kept by the OR below."""
    join = and_(
        unisender_contacts.c.contact_id == contacts.c.id,
        unisender_contacts.c.integration_id == item.id,
    )
    return contacts.outerjoin(unisender_contacts, join)


def _scope(item: integ.Integration) -> ColumnElement[bool]:
    amocrm_id = _amocrm_id(item)
    mine = unisender_contacts.c.integration_id == item.id
    if amocrm_id is None:
        return mine
    linked = and_(contacts.c.integration_id == amocrm_id, contacts.c.role == "contact")
    return or_(mine, linked)


def _not_exported() -> ColumnElement[bool]:
    return and_(unisender_contacts.c.id.is_(None), contacts.c.deleted_at.is_(None))


def _columns() -> list[Any]:
    return [
        contacts.c.id.label("contact_id"),
        contacts.c.external_id,
        contacts.c.first_name,
        contacts.c.last_name,
        contacts.c.email.label("contact_email"),
        contacts.c.deleted_at,
        unisender_contacts.c.id.label("row_id"),
        unisender_contacts.c.email,
        unisender_contacts.c.list_ids,
        unisender_contacts.c.status,
        unisender_contacts.c.reason,
        unisender_contacts.c.attempts,
        unisender_contacts.c.synced_at,
        unisender_contacts.c.updated_at,
    ]


def _view(row: Any) -> dict[str, Any]:
    name = " ".join(p for p in (row.first_name, row.last_name) if p) or None
    if row.row_id is None:
        email = (row.contact_email or "").strip() or None
        status, reason = NOT_EXPORTED, WAITING if email else NO_EMAIL
    else:
        email, status = row.email or row.contact_email, row.status
        reason = row.reason
        if status == SYNC_PENDING and not reason:
            reason = WAITING
    return {
        "contact_id": row.contact_id,
        "amocrm_id": row.external_id,
        "name": name,
        "email": email,
        "status": status,
        "reason": None if status == SYNC_SYNCED else reason,
        "list_ids": row.list_ids,
        "attempts": row.attempts or 0,
        "synced_at": _iso(row.synced_at),
        "updated_at": _iso(row.updated_at),
        "deleted_in_amocrm": row.deleted_at is not None,
    }


def contacts_page(
    conn: Connection, item: integ.Integration, *, synced: bool, skip: int = 0, limit: int = 50
) -> tuple[list[dict[str, Any]], bool]:
    """Synced contacts, or unsynced ones (each with its reason), by contact id; and
    whether more follow."""
    if synced:
        where = and_(
            unisender_contacts.c.integration_id == item.id,
            unisender_contacts.c.status == SYNC_SYNCED,
        )
    else:
        where = and_(
            _scope(item),
            or_(unisender_contacts.c.status.in_(UNSYNCED), _not_exported()),
        )
    query = (
        select(*_columns())
        .select_from(_base(item))
        .where(where)
        .order_by(contacts.c.id)
        .offset(skip)
        .limit(limit + 1)
    )
    rows = conn.execute(query).all()
    return [_view(r) for r in rows[:limit]], len(rows) > limit


def counts(conn: Connection, item: integ.Integration) -> dict[str, int]:
    """How many of the account's contacts are in each state (`not_exported`: amoCRM
    contacts without a row yet)."""
    result = dict.fromkeys(STATUSES, 0)
    for status, n in conn.execute(
        select(unisender_contacts.c.status, func.count())
        .where(unisender_contacts.c.integration_id == item.id)
        .group_by(unisender_contacts.c.status)
    ):
        result[status] = n
    amocrm_id = _amocrm_id(item)
    waiting = 0
    if amocrm_id is not None:
        waiting = conn.execute(
            select(func.count())
            .select_from(_base(item))
            .where(
                contacts.c.integration_id == amocrm_id,
                contacts.c.role == "contact",
                _not_exported(),
            )
        ).scalar_one()
    result[NOT_EXPORTED] = waiting
    result["unsynced"] = sum(result[s] for s in UNSYNCED) + waiting
    return result


def account_view(conn: Connection, item: integ.Integration) -> dict[str, Any]:
    """The account as the operator API shows it: no API key, not even masked."""
    amocrm_id = _amocrm_id(item)
    amocrm_name = None
    if amocrm_id is not None:
        amocrm_name = conn.execute(
            select(integrations.c.name).where(integrations.c.id == amocrm_id)
        ).scalar_one_or_none()
    return {
        "id": item.id,
        "name": item.name,
        "amocrm_integration_id": amocrm_id,
        "amocrm_integration_name": amocrm_name,
        "list_ids": list(item.settings.get("list_ids") or []),
        "api_base_url": item.api_base_url,
        "active": item.is_active,
        "attention": item.attention,
        "attention_at": _iso(item.attention_at),
        "counts": counts(conn, item),
    }


def list_accounts(conn: Connection) -> list[dict[str, Any]]:
    """Every Unisender account, by id."""
    return [account_view(conn, i) for i in integ.list_integrations(conn, provider=PROVIDER)]


def owned_rows(conn: Connection, item: integ.Integration) -> list[tuple[Any, Any]]:
    """The rows that belong to the account, in deletion order: (table, where clause).
    The amoCRM contacts are the amoCRM integration's and stay."""
    return [(unisender_contacts, unisender_contacts.c.integration_id == item.id)]


def row_counts(conn: Connection, item: integ.Integration) -> dict[str, int]:
    """How many rows removal deletes, per table (the integration's own row last)."""
    found = {
        str(table.name): conn.execute(
            select(func.count()).select_from(table).where(clause)
        ).scalar_one()
        for table, clause in owned_rows(conn, item)
    }
    return found | {str(integrations.name): 1}


def remove_account(conn: Connection, item: integ.Integration) -> dict[str, int]:
    """Delete the account and its rows; the rows deleted per table."""
    deleted = {
        str(table.name): conn.execute(delete(table).where(clause)).rowcount
        for table, clause in owned_rows(conn, item)
    }
    deleted[str(integrations.name)] = conn.execute(
        delete(integrations).where(integrations.c.id == item.id)
    ).rowcount
    return deleted
