"""Seed 000 mapping on the emulator's records: deal rows, contacts, phones, booleans."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from orchestration.allio.mapping import (
    flatten,
    map_record,
    normalize_phone,
    parse_bool,
    parse_time,
)
from provider_emulators.allio.records import BAD_PHONES, make_record

INTEGRATION, TASK = 7, 42
MOSCOW = ZoneInfo("Europe/Moscow")


def _utc(text: str) -> datetime:
    """What an ALLIO time means: zone-less → Moscow, else its own offset; in UTC."""
    value = datetime.fromisoformat(text)
    return (value if value.tzinfo else value.replace(tzinfo=MOSCOW)).astimezone(UTC)


def _record_with_phone(entity: str, phone: str) -> dict:
    """The first generated record whose person has exactly this phone value."""
    key = "client" if entity == "reserve" else "buyer"
    for record_id in range(1, 5000):
        record = make_record(entity, record_id)
        if record.get(key, {}).get("phone") == phone:
            return record
    raise AssertionError(f"no generated {entity} with phone {phone!r}")


def test_reserve_maps_typed_columns_and_keeps_every_field():
    record = make_record("reserve", 5421)
    mapped = map_record("reserve", record, INTEGRATION, TASK)
    deal = mapped.deal

    assert deal["integration_id"] == INTEGRATION
    assert deal["external_id"] == "5421"
    assert deal["source_task_id"] == TASK
    # Seed: CRM created_at <- ALLIO `till` (Moscow time unless it says), stored in UTC.
    assert deal["created_at"] == _utc(record["till"])
    assert deal["status"] == record["status"]
    assert deal["type"] == record["type"]
    assert deal["space_id"] == str(record["space_id"])
    assert deal["manager_id"] == str(record["manager"]["id"])
    assert deal["manager_fullname"] == record["manager"]["fullname"]
    assert deal["manager_city"] == record["manager"]["city"]
    assert deal["manager_is_agency"] is parse_bool(record["manager"]["is_agency"])
    assert deal["comment"] == (record["comment"] or None)
    assert deal["source_version"] == _utc(record["updated_at"])

    custom = deal["custom_fields"]
    # Every field the provider sent, nested ones as dotted keys, extras included.
    for key in ("status", "type", "till", "space_id", "comment", "updated_at", "created"):
        assert custom[key] == record[key]
    assert custom["price"] == record["price"] and custom["currency"] == "RUB"
    for key in ("id", "fullname", "city", "is_agency"):
        assert custom[f"manager.{key}"] == record["manager"][key]
    assert "manager" not in custom
    # The person is a contact of its own; the deal keeps only the link key.
    assert custom["client.id"] == str(record["client"]["id"])
    assert not any(k.startswith("client.") and k != "client.id" for k in custom)
    assert deal["raw"] == record


def test_reserve_client_becomes_a_contact():
    record = make_record("reserve", 5421)
    contact = map_record("reserve", record, INTEGRATION, TASK).contact
    person = record["client"]
    assert contact is not None
    assert contact["external_id"] == str(person["id"])
    assert contact["integration_id"] == INTEGRATION
    assert contact["source_entity"] == "reserve" and contact["role"] == "client"
    assert contact["source_task_id"] == TASK
    assert (contact["first_name"], contact["middle_name"], contact["last_name"]) == (
        person["first"],
        person["middle"],
        person["last"],
    )
    assert contact["phone"] == "+7" + "".join(ch for ch in person["phone"] if ch.isdigit())[1:]
    assert contact["phone_raw"] == person["phone"]
    assert contact["custom_fields"] == person
    assert contact["raw"] == person


def test_dealcard_buyer_and_extra_fields():
    record = make_record("dealcard", 5421)
    mapped = map_record("dealcard", record, INTEGRATION, None)
    custom = mapped.deal["custom_fields"]
    assert mapped.deal["external_id"] == "5421"
    assert mapped.deal["status"] == record["status"]
    for key in ("sum", "stage", "reserve_id"):
        assert key in custom and custom[key] == record[key]
    assert custom["buyer.id"] == str(record["buyer"]["id"])
    assert "client.id" not in custom
    assert mapped.contact is not None
    assert mapped.contact["source_entity"] == "dealcard" and mapped.contact["role"] == "buyer"
    assert mapped.contact["first_name"] == record["buyer"]["first"]
    assert mapped.contact["last_name"] == record["buyer"]["last"]


@pytest.mark.parametrize("entity", ["reserve", "dealcard"])
@pytest.mark.parametrize("bad", BAD_PHONES)
def test_garbage_phone_is_none_and_raw_is_kept(entity: str, bad: str):
    record = _record_with_phone(entity, bad)
    contact = map_record(entity, record, INTEGRATION, TASK).contact
    assert contact is not None
    assert contact["phone"] is None
    assert contact["phone_raw"] == (bad or None)
    assert contact["raw"]["phone"] == bad
    assert contact["custom_fields"]["phone"] == bad


@pytest.mark.parametrize(
    "raw",
    [
        "+7 (903) 123-45-67",
        "89031234567",
        "79031234567",
        "+79031234567",
        "8 (903) 123-45-67",
        "8-903-123-45-67",
    ],
)
def test_valid_phones_become_e164(raw: str):
    assert normalize_phone(raw) == "+79031234567"


@pytest.mark.parametrize("raw", ["#ERROR!", "", "12", None, "   ", "+7 (000) 000-00-00"])
def test_invalid_phones_become_none(raw):
    assert normalize_phone(raw) is None


def test_every_generated_phone_is_e164_or_none_with_raw():
    for record_id in range(1, 400):
        record = make_record("reserve", record_id)
        contact = map_record("reserve", record, INTEGRATION, None).contact
        if "client" not in record:  # the emulator's reserves without a client
            assert contact is None
            continue
        assert contact is not None and contact["external_id"] == str(record["client"]["id"])
        raw = record["client"]["phone"]
        if raw in BAD_PHONES:
            assert contact["phone"] is None
        else:
            assert contact["phone"] is not None and contact["phone"].startswith("+79")
            assert len(contact["phone"]) == 12
        assert contact["raw"]["phone"] == raw


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("FALSE", False),
        ("TRUE", True),
        ("false", False),
        (" True ", True),
        (False, False),
        (True, True),
        (1, True),
        (0, False),
        ("0", False),
        (None, None),
        ("maybe", None),
    ],
)
def test_parse_bool(value, expected):
    assert parse_bool(value) is expected


def test_manager_is_agency_as_allio_string():
    record = make_record("reserve", 10)
    record["manager"] = dict(record["manager"], is_agency="FALSE")
    assert map_record("reserve", record, 1, None).deal["manager_is_agency"] is False
    record["manager"] = dict(record["manager"], is_agency="TRUE")
    deal = map_record("reserve", record, 1, None).deal
    assert deal["manager_is_agency"] is True
    assert deal["custom_fields"]["manager.is_agency"] == "TRUE"


def test_record_without_person_or_till():
    record = {"id": 9, "status": "ACTIVE", "till": "not a date", "client": {"first": "X"}}
    mapped = map_record("reserve", record, 1, None)
    assert mapped.contact is None  # a person without an id is no contact
    assert mapped.deal["created_at"] is None
    assert mapped.deal["manager_id"] is None and mapped.deal["manager_is_agency"] is None
    assert mapped.deal["custom_fields"]["till"] == "not a date"


def test_flatten_nests_with_dots():
    assert flatten({"a": 1, "m": {"id": 2, "x": {"y": 3}}}) == {"a": 1, "m.id": 2, "m.x.y": 3}


@pytest.mark.parametrize(
    ("till", "zone", "expected"),
    [
        # The seed's example: zone-less, so the integration's zone (default Moscow, +03).
        ("2025-10-30 20:08:10", MOSCOW, datetime(2025, 10, 30, 17, 8, 10, tzinfo=UTC)),
        (
            "2025-10-30 20:08:10",
            ZoneInfo("Asia/Yekaterinburg"),
            datetime(2025, 10, 30, 15, 8, 10, tzinfo=UTC),
        ),
        # An explicit offset wins over the integration's zone.
        ("2025-10-30T20:08:10+05:00", MOSCOW, datetime(2025, 10, 30, 15, 8, 10, tzinfo=UTC)),
        ("2025-10-30T20:08:10Z", MOSCOW, datetime(2025, 10, 30, 20, 8, 10, tzinfo=UTC)),
        ("not a date", MOSCOW, None),
        ("", MOSCOW, None),
    ],
)
def test_till_is_read_in_the_integration_zone_and_stored_in_utc(till, zone, expected):
    record = {"id": 1, "till": till, "updated_at": till}
    deal = map_record("reserve", record, 1, None, zone).deal
    assert deal["created_at"] == expected and parse_time(till, zone) == expected
    assert deal["source_version"] == expected  # a timestamp, not the text ALLIO sent
    if expected is not None:
        assert deal["created_at"].utcoffset().total_seconds() == 0


def test_record_without_client_maps_without_contact():
    mapped = map_record("reserve", {"id": "77", "status": "ACTIVE"}, 1, None)
    assert mapped.contact is None and mapped.deal["external_id"] == "77"
