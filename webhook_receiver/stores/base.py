"""What every store offers the receiver: group-committed inbox inserts plus a few small reads.

The store is generic: a provider's receiver module declares its inbox table once
(`InboxTable`) and hands the store rows for it; the store knows nothing of providers.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any, NamedTuple, Protocol

import orjson
from sqlalchemy import JSON, BigInteger, DateTime, Integer, SmallInteger, Table

from crm_schema.tables import integrations


class StoreUnavailable(Exception):
    """The database cannot be reached or is locked: answer 503, the sender retries."""


class StoreError(Exception):
    """The database refused this one row (not an outage): answer 500."""


Network = IPv4Network | IPv6Network


class IntegrationEntry(NamedTuple):
    """What the receiver needs to know about a webhook key."""

    id: int
    provider: str
    integration_uuid: str | None
    is_active: bool
    webhook_secret: str | None = None
    # The networks of the integration's `ip_allowlist` setting (routes that let a
    # request without a key through by its source address); () for most integrations.
    ip_allowlist: tuple[Network, ...] = ()


def _pg_type(column: Any) -> str:
    kind = column.type
    if isinstance(kind, DateTime):
        return "timestamptz" if kind.timezone else "timestamp"
    if isinstance(kind, BigInteger | Integer | SmallInteger):
        return "bigint"
    if isinstance(kind, JSON):
        return "json"
    return "text"


@dataclass(frozen=True)
class InboxTable:
    """An inbox table and the columns the receiver fills, in the order rows give them.

    The SQL of both stores is derived from the SQLAlchemy table, so it stays in step
    with the schema; JSON columns take already-serialised text.
    """

    table: Table
    columns: tuple[str, ...]
    pg_types: tuple[str, ...] = field(init=False)
    timestamp_positions: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        unknown = [c for c in self.columns if c not in self.table.c]
        if unknown:
            raise ValueError(f"{self.table.name} has no column(s) {', '.join(unknown)}")
        cols = [self.table.c[c] for c in self.columns]
        object.__setattr__(self, "pg_types", tuple(_pg_type(c) for c in cols))
        object.__setattr__(
            self,
            "timestamp_positions",
            tuple(i for i, c in enumerate(cols) if isinstance(c.type, DateTime)),
        )

    @property
    def name(self) -> str:
        return self.table.name


@dataclass(slots=True)
class InboxRow:
    """One row for an inbox table: values in `table.columns` order (timestamps aware UTC)."""

    table: InboxTable
    values: tuple[Any, ...]
    integration_id: int
    deadline: float = 0.0  # time.monotonic() when the request gives up (0: never)

    def can_finish(self, now: float, seconds: float) -> bool:
        """Whether a write started at ``now`` and lasting up to ``seconds`` ends in time."""
        return not self.deadline or now + seconds < self.deadline


class WebhookStore(Protocol):
    """A database behind the receiver. Implementations batch concurrent inserts
    into one transaction (group commit) and resolve each future after COMMIT."""

    # The longest a request waits for its row's COMMIT, from when the row is queued
    # (at most `commit_timeout_seconds`); the handler gives each row this deadline.
    commit_wait_seconds: float

    async def start(self) -> None:
        """Open connections / threads (an unreachable database is not fatal)."""

    async def close(self) -> None:
        """Finish in-flight batches and release everything."""

    def insert(self, row: InboxRow) -> asyncio.Future[int]:
        """Queue a row; the future resolves to its id once committed, or raises
        StoreUnavailable / StoreError. A future cancelled before its batch starts is
        never written."""

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database can take writes."""

    async def load_integrations(self) -> dict[str, IntegrationEntry]:
        """Every integration by webhook key (raises StoreUnavailable)."""

    async def find_integration(self, webhook_key: str) -> IntegrationEntry | None:
        """One integration by webhook key (raises StoreUnavailable)."""


# Column lists come from the SQLAlchemy schema so the raw SQL stays in step with it.
INTEGRATION_COLUMNS = (
    integrations.c.webhook_key.name,
    integrations.c.id.name,
    integrations.c.provider.name,
    integrations.c.integration_uuid.name,
    integrations.c.is_active.name,
    integrations.c.webhook_secret.name,
)
# The setting (a list of CIDRs) whose networks `IntegrationEntry.ip_allowlist` holds.
ALLOWLIST_SETTING = "ip_allowlist"
SETTINGS_COLUMN = integrations.c.settings.name


def select_integrations(allowlist_sql: str) -> str:
    """The integrations query: INTEGRATION_COLUMNS, then ``allowlist_sql`` — the store's SQL
    for the `ip_allowlist` setting as JSON text (NULL unless it is an array), so only that
    small part of the settings leaves the database."""
    return f"SELECT {', '.join(INTEGRATION_COLUMNS)}, {allowlist_sql} FROM {integrations.name}"


@functools.lru_cache(maxsize=1024)
def parse_allowlist(text: str | None) -> tuple[Network, ...]:
    """The networks of an `ip_allowlist` setting given as JSON text; entries that are not
    an address or CIDR are skipped (the CLI validates them: an edit in the database must
    not break the refresh). Cached: the refresh sees the same texts every time."""
    if not text:
        return ()
    try:
        items = orjson.loads(text)
    except orjson.JSONDecodeError:
        return ()
    networks = []
    for item in items if isinstance(items, list) else ():
        if isinstance(item, str):
            try:
                networks.append(ip_network(item.strip(), strict=False))
            except ValueError:
                continue
    return tuple(networks)


def entries_from_rows(rows: object) -> dict[str, IntegrationEntry]:
    """Rows of a `select_integrations` query → {webhook_key: entry}."""
    return {
        row[0]: IntegrationEntry(
            int(row[1]), row[2], row[3], bool(row[4]), row[5], parse_allowlist(row[6])
        )
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
