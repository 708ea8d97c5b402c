"""iiko Cloud API emulator: the API (`app`), its data (`records`), the spec (`spec`),
`crm-sync emulate iiko…` (`commands`), and webhook builders and senders.

Orders are deterministic by id (`records.make_order`); requests and answers follow the
official OpenAPI spec, which `spec.validate_request` / `spec.validate_response` check.
"""

from provider_emulators.iiko.app import (
    DEFAULT_API_LOGIN,
    DEFAULT_ORGANIZATION_ID,
    PATHS,
    create_app,
    demo_events,
    order_ids,
    send_webhooks,
    send_webhooks_async,
    webhook_bodies,
)
from provider_emulators.iiko.commands import COMMANDS as CLI_COMMANDS
from provider_emulators.iiko.demo import DEMO
from provider_emulators.iiko.records import (
    STATUSES,
    cloud_event,
    make_order,
    soi_body,
    webhook_events,
)
from provider_emulators.iiko.reliability import RELIABILITY
from provider_emulators.iiko.spec import validate_request, validate_response, validate_webhook

__all__ = [
    "CLI_COMMANDS",
    "DEMO",
    "DEFAULT_API_LOGIN",
    "DEFAULT_ORGANIZATION_ID",
    "PATHS",
    "RELIABILITY",
    "STATUSES",
    "cloud_event",
    "create_app",
    "demo_events",
    "make_order",
    "order_ids",
    "send_webhooks",
    "send_webhooks_async",
    "soi_body",
    "validate_request",
    "validate_response",
    "validate_webhook",
    "webhook_bodies",
    "webhook_events",
]
