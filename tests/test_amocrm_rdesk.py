"""RDESK elements → amoCRM lead bodies (pure): validation, every PROVIDERS.md field of
booked and mc with its exact text, dates with and without a zone, sums."""

from __future__ import annotations

import copy

import pytest

from orchestration.amocrm.contacts import map_contact
from orchestration.amocrm.rdesk import (
    InvalidUpdate,
    iso,
    lead_body,
    parse_moment,
    parse_update,
    settings_of,
)
from tests.amocrm_fixtures import BOOKED, MC, by_id

SETTINGS = settings_of({})

GUESTS_TEXT = (
    "ФИО: Иванов Иван Иванович\n"
    "Дата рождения: 01.05.1980\n"
    "Заездов: 3\n"
    "Категория номера: Стандарт 2-местный\n"
    "Возрастная группа: Взрослый\n"
    "Направление: Кардиология\n"
    "UID: g-1\n"
    "Счёт: 4512\n"
    "\n"
    "ФИО: Иванова Анна\n"
    "Дата рождения: 03.02.2015\n"
    "Заездов: 1\n"
    "Категория номера: Стандарт 2-местный\n"
    "Возрастная группа: Ребёнок 4-13 лет\n"
    "Направление: Общетерапевтическое\n"
    "UID: g-2\n"
    "Счёт: —"
)
BILLS_TEXT = (
    "Счёт: 45120\nСумма: 80000 ₽\nОплачено: 60000 ₽\n\nСчёт: 45121\nСумма: 40000 ₽\nОплачено: 0 ₽"
)


def test_booked_every_field():
    body = lead_body(parse_update("booked", BOOKED), SETTINGS)
    assert body["price"] == 120000
    assert set(body) == {"price", "custom_fields_values"}  # name, phone, e-mail not sent
    assert by_id(body) == {
        1287599: "2022-09-05T11:22:33+00:00",
        1305167: 60000,
        1305111: "700001",
        1304923: "checkin",
        1305059: "2022-10-01T00:00:00+03:00",
        1305061: "2022-10-15T12:00:00+03:00",
        1304335: GUESTS_TEXT,
        1305107: 4512,
        1304929: BILLS_TEXT,
    }


def test_mc_every_field_with_nested_items_and_sums():
    body = lead_body(parse_update("mc", MC), SETTINGS)
    # 2500 + 1200.5 + 0 + 900 + 10000 + 5000 (top-level items only), half up.
    assert body["price"] == 19601
    assert by_id(body) == {
        1287599: "2026-11-30T09:00:00+03:00",
        1305167: 8400,  # 2500 + 900 + 5000: pay and paid
        1305111: "800001",
        1363929: "Массаж спины | ✅ 2500 ₽ | 01.12.2026 10:30 | ⏳ Назначено\n"
        "ЛФК | ❌ 1200.5 ₽ | 02.12.2026 11:15 | ✔️ Выполнено\n"
        "Жемчужная ванна | Бесплатно | 03.12.2026 09:00 | ✖️ Отменено",
        1363931: "ЭКГ | ✅ 900 ₽ | 01.12.2026 08:00 | ✔️ Выполнено",
        1363933: "Пакет «Здоровая спина» | ❌ 10000 ₽\n"
        "  • Грязелечение | Бесплатно | 04.12.2026 11:00 | ⏳ Назначено",
        1363935: "Комплекс «Кардио» | ✅ 5000 ₽\n"
        "  • Магнитотерапия | ✅ 700 ₽ | 05.12.2026 12:00 | ✔️ Выполнено\n"
        "  • Биохимия крови | Бесплатно | 05.12.2026 08:30 | ⏳ Назначено",
    }


def test_empty_lists_clear_their_fields_and_field_ids_come_from_settings():
    mc = copy.deepcopy(MC) | {"labs": [], "packets": None}
    del mc["complex"]
    settings = settings_of(
        {"fields": {"mc": {"labs": 11, "packets": 12}, "shared": {"rdesk_id": 13}}}
    )
    values = by_id(lead_body(parse_update("mc", mc), settings))
    assert values[11] is None and values[12] is None and values[1363935] is None
    assert values[13] == "800001" and 1305111 not in values
    booked = copy.deepcopy(BOOKED)
    del booked["billData"]
    settings = settings_of({"fields": {"booked": {"guests": 21, "bill_data": 22}}})
    values = by_id(lead_body(parse_update("booked", booked), settings))
    assert values[22] is None and values[21] == GUESTS_TEXT


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2022-09-05T11:22:33.000Z", "2022-09-05T11:22:33+00:00"),
        ("2022-09-05T11:22:33+05:00", "2022-09-05T11:22:33+05:00"),
        ("2022-09-05T11:22:33", "2022-09-05T11:22:33+03:00"),
        ("2022-09-05 11:22", "2022-09-05T11:22:00+03:00"),
        ("2022-09-05", "2022-09-05T00:00:00+03:00"),
        ("05.09.2022 11:22", "2022-09-05T11:22:00+03:00"),
        ("05.09.2022", "2022-09-05T00:00:00+03:00"),
    ],
)
def test_dates_are_iso_8601_and_zone_less_is_moscow(raw, expected):
    assert iso(parse_moment(raw)) == expected


def test_lead_id_string_or_int_in_both_shapes():
    assert parse_update("booked", BOOKED).lead_id == 23392663
    assert parse_update("booked", BOOKED | {"lead_id": 23392663}).lead_id == 23392663
    assert parse_update("mc", MC | {"lead_id": "23490001"}).lead_id == 23490001


def test_invalid_elements_list_every_problem_without_values():
    bad = copy.deepcopy(BOOKED) | {"lead_id": "abc", "status": "teleported", "docNum": "x"}
    del bad["bookedAt"]
    bad["money"] = {"total": "lots"}
    with pytest.raises(InvalidUpdate) as info:
        parse_update("booked", bad)
    message = str(info.value)
    for where in ("lead_id", "status", "bookedAt", "docNum", "money.total", "money.paid"):
        assert where in message
    assert "teleported" not in message and "lots" not in message
    with pytest.raises(InvalidUpdate, match="treatments.0.status"):
        parse_update("mc", MC | {"treatments": [MC["treatments"][0] | {"status": "later"}]})
    with pytest.raises(InvalidUpdate, match="createdAt"):
        parse_update("mc", MC | {"createdAt": "yesterday"})
    with pytest.raises(InvalidUpdate, match="must be a JSON object"):
        parse_update("mc", [1])
    with pytest.raises(InvalidUpdate, match="extData"):
        parse_update("booked", {k: v for k, v in BOOKED.items() if k != "extData"})


def test_contact_mapping_email_and_e164_phone():
    contact = {
        "id": 101,
        "name": "Анна Смирнова",
        "first_name": "Анна",
        "last_name": "Смирнова",
        "updated_at": 1764489600,
        "custom_fields_values": [
            {
                "field_id": 300001,
                "field_code": "PHONE",
                "values": [{"value": "8 (916) 123-45-67", "enum_code": "WORK"}],
            },
            {"field_id": 300003, "field_code": "EMAIL", "values": [{"value": "a@example.test"}]},
        ],
    }
    row = map_contact(contact)
    assert row["external_id"] == "101" and row["role"] == "contact"
    assert row["source_entity"] == "amocrm"
    assert (row["first_name"], row["last_name"]) == ("Анна", "Смирнова")
    assert row["phone"] == "+79161234567" and row["phone_raw"] == "8 (916) 123-45-67"
    assert row["email"] == "a@example.test"
    assert row["custom_fields"] == {
        "PHONE": "8 (916) 123-45-67",
        "EMAIL": "a@example.test",
        "name": "Анна Смирнова",
    }
    assert row["source_version"].isoformat() == "2025-11-30T08:00:00+00:00"
    bare = map_contact({"id": 5, "name": "Только имя", "custom_fields_values": None})
    assert bare["first_name"] == "Только имя" and bare["phone"] is None and bare["email"] is None
    junk = map_contact(
        {"id": 6, "custom_fields_values": [{"field_code": "PHONE", "values": [{"value": "12"}]}]}
    )
    assert junk["phone"] is None and junk["phone_raw"] == "12"


def test_sparse_values_are_dashes_and_numbers_may_come_as_text():
    element = copy.deepcopy(BOOKED)
    element["extData"]["guests"] = [{"fio": "Гость", "stayCount": "", "billNum": None}]
    element["billData"] = [{"billNum": 45120, "billSum": 80000}]
    values = by_id(lead_body(parse_update("booked", element), SETTINGS))
    assert values[1304335] == (
        "ФИО: Гость\nДата рождения: —\nЗаездов: —\nКатегория номера: —\n"
        "Возрастная группа: —\nНаправление: —\nUID: —\nСчёт: —"
    )
    assert values[1304929] == "Счёт: 45120\nСумма: 80000 ₽\nОплачено: —"
    item = {"action": "ЛФК", "pay": 1, "paid": 0, "price": "1500", "status": None}
    values = by_id(lead_body(parse_update("mc", MC | {"treatments": [item]}), SETTINGS))
    assert values[1363929] == "ЛФК | ❌ 1500 ₽"
