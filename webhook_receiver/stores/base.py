"""What every store offers the receiver: group-committed inserts plus a few small reads."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol

from crm_schema.tables import allio_webhook, integrations


class StoreUnavailable(Exception):
    """The database cannot be reached or is locked: answer 503, the sender retries."""


class StoreError(Exception):
    """The database refused this one row (not an outage): answer 500."""


class IntegrationEntry(NamedTuple):
    """What the receiver needs to know about a webhook key."""

    id: int
    provider: str
    integration_uuid: str | None
    is_active: bool


@dataclass(slots=True)
class AllioRow:
    """One `allio_webhook` row to insert."""

    integration_id: int
    integration_uuid: str
    command: str
    external_ids_array: str
    created_at: datetime  # timezone-aware UTC


class WebhookStore(Protocol):
    """A database behind the receiver. Implementations batch concurrent inserts
    into one transaction (group commit) and resolve each future after COMMIT."""

    async def start(self) -> None:
        """Open connections / threads (an unreachable database is not fatal)."""

    async def close(self) -> None:
        """Finish in-flight batches and release everything."""

    def insert_allio(self, row: AllioRow) -> asyncio.Future[int]:
        """Queue a row; the future resolves to its id once committed, or raises
        StoreUnavailable / StoreError."""

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database can take writes."""

    async def load_integrations(self) -> dict[str, IntegrationEntry]:
        """Every integration by webhook key (raises StoreUnavailable)."""

    async def find_integration(self, webhook_key: str) -> IntegrationEntry | None:
        """One integration by webhook key (raises StoreUnavailable)."""


# Column lists come from the SQLAlchemy schema so the raw SQL stays in step with it.
ALLIO_INSERT_COLUMNS = (
    allio_webhook.c.integration_uuid.name,
    allio_webhook.c.command.name,
    allio_webhook.c.external_ids_array.name,
    allio_webhook.c.created_at.name,
    allio_webhook.c.integration_id.name,
)
INTEGRATION_COLUMNS = (
    integrations.c.webhook_key.name,
    integrations.c.id.name,
    integrations.c.provider.name,
    integrations.c.integration_uuid.name,
    integrations.c.is_active.name,
)
SELECT_INTEGRATIONS = f"SELECT {', '.join(INTEGRATION_COLUMNS)} FROM {integrations.name}"


def entries_from_rows(rows: object) -> dict[str, IntegrationEntry]:
    """Rows of SELECT_INTEGRATIONS → {webhook_key: entry}."""
    return {
        row[0]: IntegrationEntry(int(row[1]), row[2], row[3], bool(row[4]))
        for row in rows  # type: ignore[attr-defined]
    }


def resolve(futures: list[asyncio.Future[int]], results: list[int | BaseException]) -> None:
    """Hand each waiting request its id or its error (skipping abandoned futures)."""
    for fut, result in zip(futures, results, strict=True):
        if fut.done():
            continue
        if isinstance(result, BaseException):
            fut.set_exception(result)
        else:
            fut.set_result(result)


def fail_all(futures: list[asyncio.Future[int]], exc: BaseException) -> None:
    """The whole batch failed the same way."""
    for fut in futures:
        if not fut.done():
            fut.set_exception(exc)
