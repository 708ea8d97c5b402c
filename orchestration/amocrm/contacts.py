"""amoCRM contacts (API v4) → `contacts` rows (role "contact", source_entity "amocrm").

The e-mail and phone come from `custom_fields_values` entries with `field_code`
EMAIL / PHONE (the first non-empty value each); the phone is stored as sent in
`phone_raw` and in E.164 in `phone` (phonenumbers, default region RU; None when it is
not a valid number). Every custom field lands in `custom_fields` by its code (or its
id when it has none), the contact as received in `raw`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from crm_sync.phones import DEFAULT_PHONE_REGION, normalize_phone

ROLE = "contact"
SOURCE_ENTITY = "amocrm"


def field_values(contact: dict[str, Any], code: str) -> list[str]:
    """The non-empty values of the custom field with ``field_code`` ``code``."""
    out: list[str] = []
    for item in contact.get("custom_fields_values") or ():
        if not isinstance(item, dict) or str(item.get("field_code") or "").upper() != code:
            continue
        for value in item.get("values") or ():
            text = value.get("value") if isinstance(value, dict) else value
            if text is not None and str(text).strip():
                out.append(str(text).strip())
    return out


def custom_fields(contact: dict[str, Any]) -> dict[str, Any]:
    """Every custom field's values by field code (or id), plus the contact's name."""
    out: dict[str, Any] = {}
    for item in contact.get("custom_fields_values") or ():
        if not isinstance(item, dict):
            continue
        key = item.get("field_code") or item.get("field_name") or item.get("field_id")
        values = [v.get("value") if isinstance(v, dict) else v for v in item.get("values") or ()]
        out[str(key)] = values[0] if len(values) == 1 else values
    if contact.get("name"):
        out["name"] = contact["name"]
    return out


def _text(value: object, limit: int) -> str | None:
    text = "" if value is None else str(value).strip()
    return text[:limit] or None


def _updated_at(value: object) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return datetime.fromtimestamp(value, UTC)
    return None


def map_contact(contact: dict[str, Any], region: str = DEFAULT_PHONE_REGION) -> dict[str, Any]:
    """One amoCRM contact as the columns of a `contacts` row (integration left out)."""
    first = _text(contact.get("first_name"), 200)
    last = _text(contact.get("last_name"), 200)
    if first is None and last is None:
        first = _text(contact.get("name"), 200)  # amoCRM may only have the full name
    phones = field_values(contact, "PHONE")
    emails = field_values(contact, "EMAIL")
    phone = next((p for p in (normalize_phone(raw, region) for raw in phones) if p), None)
    return {
        "external_id": str(contact["id"]),
        "role": ROLE,
        "source_entity": SOURCE_ENTITY,
        "first_name": first,
        "middle_name": None,
        "last_name": last,
        "email": _text(emails[0], 320) if emails else None,
        "phone": phone,
        "phone_raw": _text(phones[0], 200) if phones else None,
        "custom_fields": custom_fields(contact),
        "raw": contact,
        "source_version": _updated_at(contact.get("updated_at")),
        "deleted_at": None,
    }
