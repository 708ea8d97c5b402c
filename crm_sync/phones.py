"""Phone numbers as the CRM stores them: E.164 when the value is a valid number."""

from __future__ import annotations

import phonenumbers

# Every provider so far serves Russian businesses: numbers without a country code are
# read as Russian unless a caller says otherwise.
DEFAULT_PHONE_REGION = "RU"


def normalize_phone(raw: object, region: str = DEFAULT_PHONE_REGION) -> str | None:
    """E.164 when the value parses as a valid number, else None (raw is kept apart)."""
    text = "" if raw is None else str(raw).strip()
    if not text:
        return None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
