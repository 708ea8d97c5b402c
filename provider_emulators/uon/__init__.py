"""U-ON.Travel API emulator (`app`, `state`, `clients`), the PBX stand-in (`pbx`), the
U-ON webhook and telephony event senders (`senders`) and `crm-sync emulate uon | pbx |
uon-webhooks | telephony-events` (`commands`).

See :mod:`provider_emulators.uon.app` for the API, the even/odd rule and the admin
routes, and :mod:`provider_emulators.uon.pbx` for the PBX.
"""

from provider_emulators.uon.app import KEY_SCOPE, PROFILE, KeyInPath, create_app, error_response
from provider_emulators.uon.clients import default_client, default_request, digits_of, known
from provider_emulators.uon.commands import COMMANDS as CLI_COMMANDS
from provider_emulators.uon.commands import DEFAULT_PORT
from provider_emulators.uon.demo import DEMO
from provider_emulators.uon.payloads import RUSSIAN_KEYS, TelephonyEvent, UonWebhook
from provider_emulators.uon.pbx import DEFAULT_PORT as PBX_DEFAULT_PORT
from provider_emulators.uon.pbx import create_pbx_app
from provider_emulators.uon.reliability import RELIABILITY
from provider_emulators.uon.senders import (
    SECRET_HEADER,
    call_events,
    send_telephony,
    send_uon_webhooks,
    webhook_request,
)
from provider_emulators.uon.state import DEFAULT_API_KEY, DEFAULT_QUOTA, PAGE_SIZE, Agency

__all__ = [
    "CLI_COMMANDS",
    "DEFAULT_API_KEY",
    "DEFAULT_PORT",
    "DEFAULT_QUOTA",
    "DEMO",
    "KEY_SCOPE",
    "PAGE_SIZE",
    "PBX_DEFAULT_PORT",
    "PROFILE",
    "RELIABILITY",
    "RUSSIAN_KEYS",
    "SECRET_HEADER",
    "Agency",
    "KeyInPath",
    "TelephonyEvent",
    "UonWebhook",
    "call_events",
    "create_app",
    "create_pbx_app",
    "default_client",
    "default_request",
    "digits_of",
    "error_response",
    "known",
    "send_telephony",
    "send_uon_webhooks",
    "webhook_request",
]
