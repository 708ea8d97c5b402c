"""Reconcile / backfill one day from the API: orders whose webhooks were lost.

For each integration, ``deliveries/by_delivery_date_and_status`` for all of its
organizations and the day (iiko's delivery date, terminal-local, whole day) returns
every order; each is upserted version-arbitrated like any pull, so a newer event
already stored is never overwritten. Orders the database did not have are counted
(``orders_found_by_reconcile``): each is a webhook that never arrived.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from sqlalchemy import Engine, select

from crm_schema.integrations import Integration
from crm_schema.providers.iiko import orders
from orchestration.iiko.client import IikoClient
from orchestration.iiko.sync import store_orders


@dataclass
class DayReconcile:
    """What reconciling one day did for one integration."""

    integration_id: int
    organizations: int = 0
    orders_seen: int = 0
    orders_new: int = 0
    upserted: int = 0
    unknown_status: int = 0
    not_mapped: int = 0
    error: str | None = None
    new_order_ids: list[str] = field(default_factory=list)


def day_span(day: date) -> tuple[datetime, datetime]:
    """[00:00:00.000, 23:59:59.999] of ``day`` (iiko's bounds are inclusive)."""
    start = datetime.combine(day, time())
    return start, start + timedelta(days=1) - timedelta(milliseconds=1)


def reconcile_integration(
    engine: Engine, integration: Integration, client: IikoClient, day: date
) -> DayReconcile:
    """Pull ``day``'s orders of every organization of ``integration`` and upsert them."""
    organizations = [str(o) for o in integration.settings.get("organization_ids") or ()]
    result = DayReconcile(integration.id, organizations=len(organizations))
    if not organizations:
        return result
    start, end = day_span(day)
    try:
        records = client.by_delivery_date_and_status(organizations, start, end)
    except Exception as exc:  # reported per integration; the others still reconcile
        result.error = f"{type(exc).__name__}: {exc}"
        return result
    ids = {str(r.get("id")) for r in records if r.get("id") is not None}
    result.orders_seen = len(ids)
    with engine.begin() as conn:
        known = set(
            conn.execute(
                select(orders.c.iiko_order_id).where(
                    orders.c.integration_id == integration.id,
                    orders.c.iiko_order_id.in_(sorted(ids)),
                )
            ).scalars()
        )
        stored = store_orders(
            conn, integration.id, [(r, None) for r in records], lambda r: str(r.get("id"))
        )
    result.upserted = stored.upserted
    result.unknown_status = stored.extra.get("orders_unknown_status", 0)
    result.not_mapped = len(stored.failed)
    result.new_order_ids = sorted(ids - known)
    result.orders_new = len(result.new_order_ids)
    return result


def reconcile_day(
    engine: Engine,
    integrations: Iterable[Integration],
    client_for: Callable[[Integration], IikoClient],
    day: date,
) -> list[DayReconcile]:
    """Reconcile ``day`` for every integration (each one's failure is its own)."""
    results = []
    for integration in integrations:
        try:
            client = client_for(integration)
        except Exception as exc:
            results.append(DayReconcile(integration.id, error=f"{type(exc).__name__}: {exc}"))
            continue
        results.append(reconcile_integration(engine, integration, client, day))
    return results
