"""U-ON.Travel in the receiver (seed 004): U-ON's webhooks and click-to-call
(`webhooks`), the telephony system's call events (`telephony`), and the operator's
client-by-phone lookup (`lookup`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

from webhook_receiver.providers.uon.lookup import (
    OPERATOR_OPERATIONS,
    OPERATOR_QUERY_PARAMS,
    OPERATOR_REQUIRED_QUERY_PARAMS,
    operator_routes,
)
from webhook_receiver.providers.uon.telephony import TELEPHONY_OPERATIONS, telephony_routes
from webhook_receiver.providers.uon.webhooks import WEBHOOK_OPERATIONS, webhook_routes

if TYPE_CHECKING:
    from webhook_receiver.app import Receiver

OPERATIONS = (*WEBHOOK_OPERATIONS, *TELEPHONY_OPERATIONS)

__all__ = [
    "OPERATIONS",
    "OPERATOR_OPERATIONS",
    "OPERATOR_QUERY_PARAMS",
    "OPERATOR_REQUIRED_QUERY_PARAMS",
    "operator_routes",
    "routes",
]


def routes(receiver: Receiver) -> list[BaseRoute]:
    """U-ON's webhook routes and the telephony event route."""
    return [*webhook_routes(receiver), *telephony_routes(receiver)]
