"""Unisender in the receiver: no webhooks (Unisender sends none), only operator routes
for the accounts and their synced / unsynced contacts (see `operator`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

from webhook_receiver.providers.unisender.operator import (
    OPERATOR_OPERATIONS,
    OPERATOR_QUERY_PARAMS,
    operator_routes,
)

if TYPE_CHECKING:
    from webhook_receiver.app import Receiver

OPERATIONS = ()

__all__ = [
    "OPERATIONS",
    "OPERATOR_OPERATIONS",
    "OPERATOR_QUERY_PARAMS",
    "operator_routes",
    "routes",
]


def routes(receiver: Receiver) -> list[BaseRoute]:
    """No webhook routes: Unisender posts nothing."""
    return []
