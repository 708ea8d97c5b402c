"""Stores: where the receiver writes raw webhooks (one module per database)."""

from __future__ import annotations

from crm_schema.engine import normalize_url
from webhook_receiver.config import ReceiverConfig
from webhook_receiver.stores.base import (
    InboxRow,
    InboxTable,
    IntegrationEntry,
    StoreError,
    StoreUnavailable,
    WebhookStore,
)

__all__ = [
    "InboxRow",
    "InboxTable",
    "IntegrationEntry",
    "StoreError",
    "StoreUnavailable",
    "WebhookStore",
    "open_store",
]


def open_store(config: ReceiverConfig) -> WebhookStore:
    """The store for `config.database_url` (not started yet)."""
    if normalize_url(config.database_url).get_backend_name() == "sqlite":
        from webhook_receiver.stores.sqlite import SqliteStore

        return SqliteStore(config)
    from webhook_receiver.stores.postgres import PostgresStore

    return PostgresStore(config)
