"""Unisender API emulator (`app`), its account state (`state`) and
`crm-sync emulate unisender` (`commands`).

See :mod:`provider_emulators.unisender.app` for the methods, the error envelope, the
two quotas and the admin routes.
"""

from provider_emulators.unisender.app import METHODS, PROFILE, create_app, error_response
from provider_emulators.unisender.commands import COMMANDS as CLI_COMMANDS
from provider_emulators.unisender.commands import DEFAULT_PORT
from provider_emulators.unisender.demo import DEMO
from provider_emulators.unisender.state import (
    DEFAULT_API_KEY,
    DEFAULT_LISTS,
    DEFAULT_QUOTA_PER_MINUTE,
    IMPORT_LIMIT,
    Account,
    DualQuota,
    UnisenderError,
    valid_email,
)

__all__ = [
    "CLI_COMMANDS",
    "DEMO",
    "DEFAULT_API_KEY",
    "DEFAULT_LISTS",
    "DEFAULT_PORT",
    "DEFAULT_QUOTA_PER_MINUTE",
    "IMPORT_LIMIT",
    "METHODS",
    "PROFILE",
    "Account",
    "DualQuota",
    "UnisenderError",
    "create_app",
    "error_response",
    "valid_email",
]
