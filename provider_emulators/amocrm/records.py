"""Deterministic amoCRM contacts and leads, RDESK update bodies and contact-webhook forms.

Everything here is derived from ids by a seeded hash, so two emulators (and a test
that never talks to one) agree on the same contact or RDESK update.

- :func:`make_contact`: the contact every contact id answers: a Russian name, e-mail
  ``contact<id>@example.test`` and a Russian mobile (written in one of three formats),
  in ``custom_fields_values`` with ``field_code`` ``PHONE`` / ``EMAIL``.
- :func:`booked_update` / :func:`mc_update`: one element of an RDESK ``booked`` / ``mc``
  array, in the shapes of PROVIDERS.md ("RDESK").
- :func:`contact_webhook_form`: an amoCRM contact webhook as form fields
  (``contacts[add][0][id]=…&account[subdomain]=…``).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

ACCOUNT_ID = 30_000_001
DEFAULT_SUBDOMAIN = "demo"
DEFAULT_PIPELINE_ID = 10_156_066
DEFAULT_STATUS_ID = 80_453_094
RESPONSIBLE_USER_ID = 9_000_001
PHONE_FIELD_ID = 300_001
EMAIL_FIELD_ID = 300_003
BOOKED_STATUSES = ("booked", "checkin", "checkout", "cancel", "waiting")
MC_ITEM_STATUSES = ("set", "done", "cancel")
CONTACT_ACTIONS = ("add", "update", "delete", "restore", "responsible", "note")
RDESK_ENDPOINTS = ("booked", "mc")
# A fixed epoch keeps every generated time reproducible.
_EPOCH = datetime(2025, 9, 1, 9, 0, tzinfo=UTC)

_MALE = ("Николай", "Александр", "Сергей", "Дмитрий", "Андрей", "Алексей", "Михаил", "Иван")
_FEMALE = ("Елена", "Ольга", "Наталья", "Татьяна", "Анна", "Мария", "Ирина", "Светлана")
_LAST = ("Иванов", "Кузнецов", "Смирнов", "Попов", "Соколов", "Лебедев", "Новиков", "Морозов")
_PATRONYMIC = ("Владимиров", "Александров", "Сергеев", "Петров", "Николаев", "Андреев")
_MOBILE_CODES = (903, 905, 909, 912, 916, 917, 919, 926, 927, 937, 950, 977, 985, 999)
# Contacts keep their phones the way managers type them; the sync normalises to E.164.
_PHONE_FORMATS = ("+7{c}{a}{b}{d}", "8 ({c}) {a}-{b}-{d}", "+7 {c} {a} {b} {d}")
_ROOMS = ("Стандарт 2-местный", "Стандарт 1-местный", "Полулюкс", "Люкс", "Семейный номер")
_AGE_GROUPS = ("Взрослый", "Ребёнок 4-13 лет", "Ребёнок до 4 лет")
_CURES = ("Кардиология", "Неврология", "Опорно-двигательный аппарат", "Общетерапевтическое")
_TREATMENTS = ("Массаж спины", "Жемчужная ванна", "Грязелечение", "ЛФК", "Магнитотерапия")
_LABS = ("Общий анализ крови", "Биохимия крови", "ЭКГ", "Общий анализ мочи")
_PACKETS = ("Пакет «Здоровая спина»", "Пакет «Антистресс»")
_COMPLEXES = ("Комплекс «Check-up»", "Комплекс «Кардио»")


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _iso_z(moment: datetime) -> str:
    """RDESK's ``2022-09-05T11:22:33.000Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + "000Z"


def _person(rng: random.Random) -> tuple[str, str, str]:
    """(first name, patronymic, last name), gender-consistent."""
    female = rng.random() < 0.5
    first = rng.choice(_FEMALE if female else _MALE)
    patronymic = rng.choice(_PATRONYMIC) + ("на" if female else "ич")
    last = rng.choice(_LAST) + ("а" if female else "")
    return first, patronymic, last


def _mobile(rng: random.Random) -> tuple[int, str, str, str]:
    return (
        rng.choice(_MOBILE_CODES),
        f"{rng.randint(0, 999):03d}",
        f"{rng.randint(0, 99):02d}",
        f"{rng.randint(0, 99):02d}",
    )


def _birthday(rng: random.Random, oldest: int = 1945, youngest: int = 2005) -> str:
    return f"{rng.randint(oldest, youngest)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


# ---- contacts ---------------------------------------------------------------------------


def contact_phone_e164(contact_id: int) -> str:
    """The contact's phone in E.164 (what a sync should store)."""
    c, a, b, d = _mobile(_rng("contact-phone", contact_id))
    return f"+7{c}{a}{b}{d}"


def contact_phone_raw(contact_id: int) -> str:
    """The contact's phone as amoCRM returns it (one of three spellings)."""
    c, a, b, d = _mobile(_rng("contact-phone", contact_id))
    return _PHONE_FORMATS[contact_id % len(_PHONE_FORMATS)].format(c=c, a=a, b=b, d=d)


def contact_email(contact_id: int) -> str:
    return f"contact{contact_id}@example.test"


def contact_custom_fields(phone: str | None, email: str | None) -> list[dict[str, Any]] | None:
    """amoCRM's PHONE / EMAIL multitext fields (None when both are empty)."""
    fields = []
    if phone:
        fields.append(
            {
                "field_id": PHONE_FIELD_ID,
                "field_name": "Телефон",
                "field_code": "PHONE",
                "field_type": "multitext",
                "values": [{"value": phone, "enum_id": 1, "enum_code": "WORK"}],
            }
        )
    if email:
        fields.append(
            {
                "field_id": EMAIL_FIELD_ID,
                "field_name": "Email",
                "field_code": "EMAIL",
                "field_type": "multitext",
                "values": [{"value": email, "enum_id": 3, "enum_code": "WORK"}],
            }
        )
    return fields or None


def make_contact(
    contact_id: int,
    *,
    name: str | None = None,
    phone: str | None = None,
    email: str | None = None,
    base_url: str = "",
) -> dict[str, Any]:
    """The contact amoCRM answers for ``contact_id`` (``name``/``phone``/``email`` override)."""
    first, _, last = _person(_rng("contact-name", contact_id))
    created = int((_EPOCH - timedelta(days=contact_id % 400)).timestamp())
    return {
        "id": contact_id,
        "name": name if name is not None else f"{first} {last}",
        "first_name": first if name is None else name.split(" ")[0],
        "last_name": last if name is None else " ".join(name.split(" ")[1:]),
        "responsible_user_id": RESPONSIBLE_USER_ID,
        "group_id": 0,
        "created_by": RESPONSIBLE_USER_ID,
        "updated_by": RESPONSIBLE_USER_ID,
        "created_at": created,
        "updated_at": created + 3600,
        "closest_task_at": None,
        "is_deleted": False,
        "is_unsorted": False,
        "custom_fields_values": contact_custom_fields(
            contact_phone_raw(contact_id) if phone is None else phone,
            contact_email(contact_id) if email is None else email,
        ),
        "account_id": ACCOUNT_ID,
        "_links": {"self": {"href": f"{base_url}/api/v4/contacts/{contact_id}"}},
        "_embedded": {"tags": [], "companies": []},
    }


# ---- leads ------------------------------------------------------------------------------


def make_lead(
    lead_id: int,
    *,
    name: str | None = None,
    price: int = 0,
    pipeline_id: int | None = None,
    status_id: int | None = None,
    now: int | None = None,
) -> dict[str, Any]:
    """A fresh lead in amoCRM's shape (no custom fields yet)."""
    stamp = now if now is not None else int(_EPOCH.timestamp())
    return {
        "id": lead_id,
        "name": name if name is not None else f"Сделка #{lead_id}",
        "price": price,
        "responsible_user_id": RESPONSIBLE_USER_ID,
        "group_id": 0,
        "status_id": status_id if status_id is not None else DEFAULT_STATUS_ID,
        "pipeline_id": pipeline_id if pipeline_id is not None else DEFAULT_PIPELINE_ID,
        "loss_reason_id": None,
        "created_by": RESPONSIBLE_USER_ID,
        "updated_by": RESPONSIBLE_USER_ID,
        "created_at": stamp,
        "updated_at": stamp,
        "closed_at": None,
        "closest_task_at": None,
        "is_deleted": False,
        "custom_fields_values": None,
        "score": None,
        "account_id": ACCOUNT_ID,
        "labor_cost": None,
        "_embedded": {"tags": [], "companies": []},
    }


# ---- RDESK ------------------------------------------------------------------------------


def booked_update(
    update_id: int,
    lead_id: int | str | None = None,
    *,
    status: str | None = None,
    guests: int | None = None,
    bills: int | None = None,
    contacts: bool = True,
) -> dict[str, Any]:
    """One element of an RDESK ``booked`` array (a sanatorium stay), deterministic by id.

    ``lead_id`` defaults to ``23390000 + update_id``; it is sent as a string, as RDESK
    does. ``guests`` (1..) and ``bills`` (0..) default to 1-3 / 0-2. ``contacts``: add
    the optional ``phone`` and ``email``.
    """
    rng = _rng("booked", update_id)
    if status is not None and status not in BOOKED_STATUSES:
        raise ValueError(f"status must be one of {', '.join(BOOKED_STATUSES)}")
    booked_at = _EPOCH + timedelta(minutes=update_id * 7 % 100_000, seconds=rng.randint(0, 59))
    checkin = booked_at + timedelta(days=rng.randint(3, 60))
    checkout = checkin + timedelta(days=rng.randint(5, 21))
    total = rng.randint(20, 300) * 1000
    paid = rng.choice((0, total // 2, total))
    doc_num = 10_000 + update_id
    bill_count = rng.randint(0, 2) if bills is None else bills
    guest_count = rng.randint(1, 3) if guests is None else guests
    first, patronymic, last = _person(rng)
    element: dict[str, Any] = {
        "id": update_id,
        "lead_id": str(23_390_000 + update_id if lead_id is None else lead_id),
        "status": status or rng.choice(BOOKED_STATUSES),
        "bookedAt": _iso_z(booked_at),
        "name": f"{last} {first} {patronymic}",
        # RDESK sends check-in / check-out as a date or as a zone-less datetime.
        "checkin": checkin.strftime("%Y-%m-%d" if rng.random() < 0.5 else "%Y-%m-%dT14:00:00"),
        "checkout": checkout.strftime("%Y-%m-%d" if rng.random() < 0.5 else "%Y-%m-%dT12:00:00"),
        "money": {"total": total, "paid": paid},
        "docNum": doc_num,
        "extData": {"guests": [_guest(update_id, n, doc_num) for n in range(guest_count)]},
    }
    if contacts:
        c, a, b, d = _mobile(rng)
        element["phone"] = f"+7{c}{a}{b}{d}"
        element["email"] = f"guest{update_id}@example.test"
    if bill_count:
        share = total // bill_count
        element["billData"] = [
            {
                "billNum": str(doc_num * 10 + n),
                "billSum": str(share),
                "billPaidSum": str(min(share, max(0, paid - n * share))),
            }
            for n in range(bill_count)
        ]
    return element


def _guest(update_id: int, n: int, doc_num: int) -> dict[str, Any]:
    rng = _rng("guest", update_id, n)
    first, patronymic, last = _person(rng)
    return {
        "fio": f"{last} {first} {patronymic}",
        "birthday": _birthday(rng),
        "roomCategory": rng.choice(_ROOMS),
        "ageGroup": _AGE_GROUPS[0] if n == 0 else rng.choice(_AGE_GROUPS),
        "cure": rng.choice(_CURES),
        "uid": f"g-{update_id}-{n + 1}",
        "stayCount": rng.randint(1, 6),
        # "" = no bill for this guest (RDESK's spelling of "none").
        "billNum": doc_num if n == 0 or rng.random() < 0.5 else "",
    }


def _visit(rng: random.Random, base: datetime) -> str:
    moment = base + timedelta(days=rng.randint(0, 20), hours=rng.randint(0, 8))
    return moment.strftime("%Y-%m-%d %H:%M:00")


def _priced(rng: random.Random) -> dict[str, Any]:
    pay = rng.random() < 0.8
    return {
        "pay": pay,
        "price": rng.randint(5, 60) * 100 if pay else 0,
        "paid": pay and rng.random() < 0.6,
    }


def _treatment(rng: random.Random, item_id: int, base: datetime) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "action": rng.choice(_TREATMENTS),
        "status": rng.choice(MC_ITEM_STATUSES),
        "visit_date": _visit(rng, base),
        **_priced(rng),
    }


def _lab(rng: random.Random, item_id: int, base: datetime, treatment: int | None) -> dict[str, Any]:
    return {
        "lab_item_id": item_id,
        "lab": rng.choice(_LABS),
        "status": rng.choice(MC_ITEM_STATUSES),
        "visit_date": _visit(rng, base),
        **_priced(rng),
        "treatment_item_id": treatment,
    }


def mc_update(
    update_id: int,
    lead_id: int | str | None = None,
    *,
    status: str | None = None,
    contacts: bool = True,
) -> dict[str, Any]:
    """One element of an RDESK ``mc`` array (outpatient services), deterministic by id.

    ``lead_id`` defaults to ``23490000 + update_id``; it is sent as an int, as RDESK
    does. Every list (``treatments``, ``labs``, ``packets``, ``complex``) is present;
    packets and complexes carry nested treatments (and labs).
    """
    rng = _rng("mc", update_id)
    created = _EPOCH + timedelta(minutes=update_id * 11 % 100_000, seconds=rng.randint(0, 59))
    first, patronymic, last = _person(rng)
    ids = iter(range(update_id * 100 + 1, update_id * 100 + 100))
    treatments = [_treatment(rng, next(ids), created) for _ in range(rng.randint(1, 3))]
    labs = [
        _lab(rng, next(ids), created, rng.choice([None, treatments[0]["item_id"]]))
        for _ in range(rng.randint(0, 2))
    ]
    packets = [
        {
            "packet_id": next(ids),
            "packet": rng.choice(_PACKETS),
            **_priced(rng),
            "treatments": [_treatment(rng, next(ids), created) for _ in range(2)],
        }
        for _ in range(rng.randint(0, 1))
    ]
    complexes = [
        {
            "complex_id": next(ids),
            "complex": rng.choice(_COMPLEXES),
            **_priced(rng),
            "treatments": [_treatment(rng, next(ids), created)],
            "labs": [_lab(rng, next(ids), created, None)],
        }
        for _ in range(rng.randint(0, 1))
    ]
    element: dict[str, Any] = {
        "id": update_id,
        "lead_id": int(23_490_000 + update_id if lead_id is None else lead_id),
        "name": f"{last} {first} {patronymic}",
        "createdAt": _iso_z(created),
        "birthday": _birthday(rng),
        "status": status or rng.choice(("active", "closed")),
    }
    if contacts:
        c, a, b, d = _mobile(rng)
        element["phone"] = f"8{c}{a}{b}{d}"
        element["email"] = f"patient{update_id}@example.test"
    element.update(treatments=treatments, labs=labs, packets=packets, complex=complexes)
    return element


def rdesk_updates(
    endpoint: Literal["booked", "mc"],
    count: int,
    *,
    lead_id: int | str | None = None,
    start_id: int = 1,
) -> list[dict[str, Any]]:
    """``count`` RDESK elements with ids ``start_id…`` (all for ``lead_id`` when given)."""
    if endpoint not in RDESK_ENDPOINTS:
        raise ValueError("endpoint must be booked or mc")
    build = booked_update if endpoint == "booked" else mc_update
    return [build(start_id + n, lead_id) for n in range(count)]


# ---- contact webhooks -------------------------------------------------------------------


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}[{key}]", item, out)
    elif isinstance(value, list | tuple):
        for n, item in enumerate(value):
            _flatten(f"{prefix}[{n}]", item, out)
    elif value is not None:
        out[prefix] = str(int(value)) if isinstance(value, bool) else str(value)


def webhook_contact(contact_id: int, action: str = "add") -> dict[str, Any]:
    """One contact as amoCRM's webhook describes it (``delete`` carries only id and type)."""
    if action == "delete":
        return {"id": contact_id, "type": "contact"}
    contact = make_contact(contact_id)
    fields = [
        {
            "id": f["field_id"],
            "name": f["field_name"],
            "code": f["field_code"],
            "values": [{"value": v["value"], "enum": v["enum_id"]} for v in f["values"]],
        }
        for f in contact["custom_fields_values"] or []
    ]
    return {
        "id": contact_id,
        "name": contact["name"],
        "responsible_user_id": RESPONSIBLE_USER_ID,
        "date_create": contact["created_at"],
        "last_modified": contact["updated_at"],
        "created_user_id": RESPONSIBLE_USER_ID,
        "modified_user_id": RESPONSIBLE_USER_ID,
        "account_id": ACCOUNT_ID,
        "type": "contact",
        "custom_fields": fields,
    }


def contact_webhook_form(
    contact_ids: Iterable[int],
    action: str = "add",
    *,
    subdomain: str = DEFAULT_SUBDOMAIN,
    account_id: int = ACCOUNT_ID,
) -> dict[str, str]:
    """An amoCRM contact webhook as flat form fields, in order.

    ``{"contacts[add][0][id]": "111", "contacts[add][0][name]": "…", …,
    "account[subdomain]": "demo", "account[id]": "…", "account[_links][self]": "…"}``;
    post it ``application/x-www-form-urlencoded`` (``httpx.post(url, data=form)``).
    """
    if action not in CONTACT_ACTIONS:
        raise ValueError(f"action must be one of {', '.join(CONTACT_ACTIONS)}")
    form: dict[str, str] = {}
    contacts = [webhook_contact(int(i), action) for i in contact_ids]
    if not contacts:
        raise ValueError("at least one contact id is needed")
    _flatten(f"contacts[{action}]", contacts, form)
    _flatten(
        "account",
        {
            "subdomain": subdomain,
            "id": account_id,
            "_links": {"self": f"https://{subdomain}.amocrm.ru"},
        },
        form,
    )
    return form
