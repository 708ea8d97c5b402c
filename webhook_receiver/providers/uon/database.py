"""The U-ON routes' database work beyond the group-committed inbox: the accounts' settings,
click-to-call records, and client webhooks whose cache drop shares the inbox row's
transaction.

Plain SQLAlchemy in a worker thread (not the hot path: most requests only read the
settings snapshot kept here, refreshed as often as the integration map). An unreachable
or locked database raises StoreUnavailable (a 503).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from pydantic import ValidationError
from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.concurrency import run_in_threadpool

from crm_schema import integrations as integ
from crm_schema.engine import make_engine, normalize_url
from crm_schema.providers.uon import uon_inbox, uon_originations
from crm_schema.providers.uon_customers import customer_phones, drop_cached
from crm_schema.tables import integrations
from crm_sync.providers.uon import DEFAULT_REGION, SPEC, UonSettings
from webhook_receiver.lazy_engine import LazyEngine
from webhook_receiver.stores import StoreUnavailable
from webhook_receiver.stores.base import Network, parse_allowlist

if TYPE_CHECKING:
    from webhook_receiver.app import Receiver
    from webhook_receiver.config import ReceiverConfig

log = logging.getLogger(__name__)
T = TypeVar("T")
PROVIDER = SPEC.name


@dataclass(frozen=True)
class Account:
    """An active U-ON integration as the webhook routes see it (no credentials)."""

    id: int
    webhook_key: str
    settings: UonSettings
    allowlist: tuple[Network, ...]
    # Stored settings that do not validate: left at their defaults (an edit made in the
    # database must not cost the integration every other setting).
    invalid: frozenset[str] = frozenset()

    @property
    def region(self) -> str:
        """Where numbers without a country code are read."""
        return self.settings.default_region or DEFAULT_REGION


def account_from(integration_id: int, webhook_key: str, raw: Mapping[str, Any] | None) -> Account:
    """An Account from an `integrations` row's values."""
    stored = dict(raw or {})
    allowlist = parse_allowlist(orjson.dumps(stored.get("ip_allowlist") or []).decode())
    if isinstance(stored.get("account_id"), int) and not isinstance(stored["account_id"], bool):
        stored["account_id"] = str(stored["account_id"])  # U-ON's ids are numbers
    invalid: set[str] = set()
    while True:
        try:
            settings = UonSettings.model_validate(stored)
            break
        except ValidationError as exc:
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]} & set(stored)
            if not bad:
                settings = UonSettings()
                break
            invalid |= bad
            stored = {k: v for k, v in stored.items() if k not in bad}
    if invalid:
        log.warning(
            "U-ON integration %s: invalid settings left at their defaults: %s",
            integration_id,
            ", ".join(sorted(invalid)),
        )
    return Account(integration_id, webhook_key, settings, allowlist, frozenset(invalid))


def load_accounts(conn: Connection) -> dict[int, Account]:
    """Every active U-ON integration, by id."""
    rows = conn.execute(
        select(integrations.c.id, integrations.c.webhook_key, integrations.c.settings)
        .where(integrations.c.provider == PROVIDER, integrations.c.is_active.is_(True))
        .order_by(integrations.c.id)
    )
    return {int(r.id): account_from(int(r.id), r.webhook_key, r.settings) for r in rows}


def pbx_secret(conn: Connection, integration_id: int) -> str | None:
    """The integration's PBX secret (decrypted), if it has one."""
    value = integ.get_integration(conn, integration_id).credentials.get("pbx_secret")
    return str(value) if value else None


def insert_inbox(conn: Connection, values: Mapping[str, Any]) -> int:
    """One `uon_inbox` row; its id."""
    return int(
        conn.execute(insert(uon_inbox).values(**values).returning(uon_inbox.c.id)).scalar_one()
    )


def store_client_event(
    conn: Connection,
    values: Mapping[str, Any],
    client_id: str | None,
    phones: Iterable[str | None],
) -> tuple[int, int]:
    """A client webhook's inbox row, and the cache entries of that client's stored numbers
    and of ``phones`` dropped, in the caller's transaction: (row id, entries dropped)."""
    row_id = insert_inbox(conn, values)
    integration_id = int(values["integration_id"])
    known = customer_phones(conn, integration_id, [client_id] if client_id else [])
    dropped = drop_cached(conn, integration_id, [*known, *phones])
    return row_id, dropped


def insert_origination(conn: Connection, values: Mapping[str, Any]) -> int:
    """One `uon_originations` row; its id."""
    return int(
        conn.execute(
            insert(uon_originations).values(**values).returning(uon_originations.c.id)
        ).scalar_one()
    )


class UonDatabase:
    """A lazily made engine and the accounts snapshot, shared by a receiver's U-ON routes."""

    def __init__(self, config: ReceiverConfig) -> None:
        self.config = config
        self._lazy = LazyEngine(self._make_engine)
        self._accounts: dict[int, Account] = {}
        self._loaded_at = -math.inf
        self._reload: asyncio.Lock | None = None

    def _make_engine(self) -> Engine:
        options: dict[str, Any] = {}
        url = self.config.database_url
        if normalize_url(url).get_backend_name() != "sqlite":
            # Bounded like the store's: a database that does not answer is a 503.
            timeout_ms = int(self.config.statement_timeout_seconds * 1000)
            options["connect_args"] = {
                "connect_timeout": max(1, math.ceil(self.config.connect_timeout_seconds)),
                "options": f"-c statement_timeout={timeout_ms}",
            }
        else:
            # A locked database is a 503 as soon as the store's would be.
            options["sqlite_busy_timeout_ms"] = int(self.config.sqlite_busy_timeout_ms)
        return make_engine(url, **options)

    @property
    def engine(self) -> Engine:
        """The U-ON routes' engine (made on first use)."""
        return self._lazy.engine

    def close(self) -> None:
        """Release the engine's connections (at shutdown)."""
        self._lazy.close()

    async def transaction(self, work: Callable[[Connection], T]) -> T:
        """``work`` in one transaction, in a worker thread (StoreUnavailable: database
        unreachable or locked; nothing of ``work`` is kept)."""

        def run() -> T:
            with self.engine.begin() as conn:
                return work(conn)

        try:
            return await run_in_threadpool(run)
        except (OperationalError, DBAPIError) as exc:
            if isinstance(exc, OperationalError) or exc.connection_invalidated:
                log.warning("U-ON webhook: database unavailable (%s)", type(exc).__name__)
                raise StoreUnavailable("database unavailable") from None
            raise

    async def accounts(self, *, fresher_than: float | None = None) -> dict[int, Account]:
        """The active U-ON integrations, re-read once the snapshot is older than the
        integration map's refresh interval (or ``fresher_than`` seconds)."""
        max_age = self.config.integrations_refresh_seconds
        if fresher_than is not None:
            max_age = min(max_age, fresher_than)
        if time.monotonic() - self._loaded_at <= max_age:
            return self._accounts
        if self._reload is None:
            self._reload = asyncio.Lock()
        async with self._reload:  # one reload at a time; the others take its result
            if time.monotonic() - self._loaded_at > max_age:
                started = time.monotonic()
                self._accounts = await self.transaction(load_accounts)
                self._loaded_at = started
        return self._accounts

    async def account(self, integration_id: int) -> Account | None:
        """One active U-ON integration (re-read soon when the snapshot lacks it: added
        since)."""
        found = (await self.accounts()).get(integration_id)
        if found is None:
            found = (await self.accounts(fresher_than=0.25)).get(integration_id)
        return found


_shared: weakref.WeakKeyDictionary[Receiver, UonDatabase] = weakref.WeakKeyDictionary()


def shared(receiver: Receiver) -> UonDatabase:
    """The receiver's UonDatabase, made once (closed with the receiver)."""
    found = _shared.get(receiver)
    if found is None:
        found = _shared[receiver] = UonDatabase(receiver.config)
        receiver.on_close.append(found.close)
    return found
