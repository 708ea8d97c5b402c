"""amoCRM API v4 emulator (`app`), its data and RDESK bodies (`records`), the senders
(`senders`) and `crm-sync emulate amocrm|amocrm-webhooks|rdesk` (`commands`).

See :mod:`provider_emulators.amocrm.app` for the API, the quota and IP-block
thresholds and the admin routes.
"""

from provider_emulators.amocrm.app import (
    BLOCK_AFTER,
    BLOCK_SECONDS,
    BLOCK_WINDOW,
    DEFAULT_QUOTA,
    PROFILE,
    create_app,
    lead_errors,
)
from provider_emulators.amocrm.commands import COMMANDS as CLI_COMMANDS
from provider_emulators.amocrm.demo import DEMO
from provider_emulators.amocrm.records import (
    BOOKED_STATUSES,
    CONTACT_ACTIONS,
    RDESK_ENDPOINTS,
    booked_update,
    contact_email,
    contact_phone_e164,
    contact_phone_raw,
    contact_webhook_form,
    make_contact,
    make_lead,
    mc_update,
    rdesk_updates,
)
from provider_emulators.amocrm.reliability import RELIABILITY
from provider_emulators.amocrm.senders import (
    WEBHOOK_KEY_HEADER,
    contact_webhook_forms,
    rdesk_batches,
    send_contact_webhooks,
    send_contact_webhooks_async,
    send_rdesk,
    send_rdesk_async,
)
from provider_emulators.amocrm.state import (
    CODE_PREFIX,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REDIRECT_URI,
)

__all__ = [
    "BLOCK_AFTER",
    "BLOCK_SECONDS",
    "BLOCK_WINDOW",
    "BOOKED_STATUSES",
    "CLI_COMMANDS",
    "CODE_PREFIX",
    "CONTACT_ACTIONS",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_QUOTA",
    "DEFAULT_REDIRECT_URI",
    "DEMO",
    "PROFILE",
    "RDESK_ENDPOINTS",
    "RELIABILITY",
    "WEBHOOK_KEY_HEADER",
    "booked_update",
    "contact_email",
    "contact_phone_e164",
    "contact_phone_raw",
    "contact_webhook_form",
    "contact_webhook_forms",
    "create_app",
    "lead_errors",
    "make_contact",
    "make_lead",
    "mc_update",
    "rdesk_batches",
    "rdesk_updates",
    "send_contact_webhooks",
    "send_contact_webhooks_async",
    "send_rdesk",
    "send_rdesk_async",
]
