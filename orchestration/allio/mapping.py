"""Seed 000 mapping: ALLIO reserves / deal cards / their contacts → CRM rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from crm_sync.phones import normalize_phone
from crm_sync.providers.allio import DEFAULT_TIME_ZONE

# The person a record names, which is also the contact's role: ids of a reserve's
# `client` and a deal card's `buyer` may come from different ALLIO id spaces.
CONTACT_KEY = {"reserve": "client", "dealcard": "buyer"}
MOSCOW = ZoneInfo(DEFAULT_TIME_ZONE)


@dataclass(frozen=True)
class Mapped:
    """One provider record as CRM rows: the deal row and the contact row, if any."""

    deal: dict[str, Any]
    contact: dict[str, Any] | None


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested fields as dotted keys: {"manager": {"id": 1}} → {"manager.id": 1}."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def parse_time(value: object, zone: tzinfo = MOSCOW) -> datetime | None:
    """An ALLIO time ("2025-10-30 20:08:10", zone-less: read in ``zone``; or ISO 8601
    with an offset) as UTC; None if absent or unparseable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(UTC)


def parse_bool(value: object) -> bool | None:
    """Booleans as ALLIO sends them: true/false, "TRUE"/"FALSE", 1/0."""
    if isinstance(value, bool):
        return value
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    return None


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def map_contact(
    person: dict[str, Any], integration_id: int, source_entity: str, task_id: int | None
) -> dict[str, Any] | None:
    """A contact row from `client` / `buyer` (its role); None when it carries no id."""
    external_id = _text(person.get("id"))
    if external_id is None:
        return None
    phone_raw = _text(person.get("phone"))
    return {
        "integration_id": integration_id,
        "external_id": external_id,
        "role": CONTACT_KEY[source_entity],
        "source_entity": source_entity,
        "first_name": _text(person.get("first")),
        "middle_name": _text(person.get("middle")),
        "last_name": _text(person.get("last")),
        "phone": normalize_phone(phone_raw),
        "phone_raw": phone_raw,
        "email": _text(person.get("email")),
        "custom_fields": flatten(person),
        "raw": person,
        "source_version": None,
        "source_task_id": task_id,
    }


def map_record(
    entity: str,
    record: dict[str, Any],
    integration_id: int,
    task_id: int | None,
    zone: tzinfo = MOSCOW,
) -> Mapped:
    """Map a reserve or deal card; every field the provider sent lands in custom_fields.

    Zone-less times are read in the integration's ``zone`` and stored in UTC."""
    contact_key = CONTACT_KEY[entity]
    person = record.get(contact_key)
    contact = (
        map_contact(person, integration_id, entity, task_id) if isinstance(person, dict) else None
    )
    fields = {k: v for k, v in record.items() if k != contact_key}
    custom = flatten(fields)
    if contact is not None:
        custom[f"{contact_key}.id"] = contact["external_id"]
    manager = record.get("manager") if isinstance(record.get("manager"), dict) else {}
    deal = {
        "integration_id": integration_id,
        "external_id": str(record["id"]),
        "created_at": parse_time(record.get("till"), zone),
        "status": _text(record.get("status")),
        "type": _text(record.get("type")),
        "space_id": _text(record.get("space_id")),
        "manager_id": _text(manager.get("id")),
        "manager_fullname": _text(manager.get("fullname")),
        "manager_city": _text(manager.get("city")),
        "manager_is_agency": parse_bool(manager.get("is_agency")),
        "comment": _text(record.get("comment")),
        "custom_fields": custom,
        "raw": record,
        "source_version": parse_time(record.get("updated_at"), zone),
        "source_task_id": task_id,
    }
    return Mapped(deal=deal, contact=contact)
