"""ALLIO emulator: the API (`app`), its records, `crm-sync emulate allio…` and the demo.

Records (`records`) are deterministic by id, in the seed's spelling except on a stable
minority that carries ALLIO's other spellings (string booleans and ids, zoned times,
reserves without a client); `create_app(variants=False)` turns those off.
"""

from provider_emulators.allio.app import (
    COMMANDS,
    DEFAULT_TOKEN,
    create_app,
    random_indexes,
    send_webhooks,
    send_webhooks_async,
    webhook_payloads,
)
from provider_emulators.allio.commands import COMMANDS as CLI_COMMANDS
from provider_emulators.allio.demo import DEMO
from provider_emulators.allio.reliability import RELIABILITY

__all__ = [
    "CLI_COMMANDS",
    "COMMANDS",
    "DEFAULT_TOKEN",
    "DEMO",
    "RELIABILITY",
    "create_app",
    "random_indexes",
    "send_webhooks",
    "send_webhooks_async",
    "webhook_payloads",
]
