"""Deterministic ALLIO reserves and deal cards, derived from the id by a seeded hash.

Every positive id exists. People (``client`` / ``buyer``) are derived from the person
id ``100000 + id % 997``, so the same person recurs with the same name and phone
across reserves and deal cards. About 9% of people have a garbage phone
(``"#ERROR!"``, ``""`` or ``"12"``); the rest are Russian mobiles in assorted formats.

Times are ALLIO's zone-less ``"2025-10-30 20:08:10"``, Moscow local time (+03:00).

Spelling variants, as a real ALLIO sends them, on a stable minority of records chosen
by id arithmetic (the same for both entities, reproducible across emulators; see
``VARIANTS``). They change how a value is written, never what it means:

- ``agency_text`` (``id % 6 == 3``): ``manager.is_agency`` is ``"TRUE"`` / ``"FALSE"``
  (the seed's own spelling) instead of a JSON boolean;
- ``zoned_times`` (``id % 7 == 2``): ``till``, ``updated_at`` and ``created`` are ISO
  8601 with an offset, e.g. ``"2025-10-30T22:08:10+05:00"``: the same instant as the
  zone-less Moscow time, written in ``+03:00``, ``+05:00``, ``+04:00`` or ``+00:00``
  (cycling with ``id // 7``);
- ``no_client`` (reserves only, ``id % 8 == 4``): no ``client`` key at all (deal cards
  always keep their ``buyer``);
- ``text_id`` (``id % 9 == 5``): the record's ``id`` is a digit string (``"1234"``);
- ``text_person_id`` (``id % 10 == 7``): ``client.id`` / ``buyer.id`` is a digit string.

Id 5421, the seed's example, reads like the seed: int ids, zone-less times and
``is_agency`` as ``"FALSE"``. ``make_record(..., variants=False)`` (or
``RecordStore(variants=...)`` / ``create_app(variants=...)``) turns them off.
"""

from __future__ import annotations

import copy
import hashlib
import random
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

ENTITIES = ("reserve", "dealcard")
PERSON_BASE, PERSON_MOD = 100_000, 997
BAD_PHONES = ("#ERROR!", "", "12")

_MALE = ("Николай", "Александр", "Сергей", "Дмитрий", "Андрей", "Алексей", "Михаил", "Иван")
_MALE += ("Евгений", "Павел", "Олег", "Артём", "Максим", "Виктор")
_FEMALE = ("Елена", "Ольга", "Наталья", "Татьяна", "Анна", "Мария", "Ирина", "Светлана")
_FEMALE += ("Юлия", "Екатерина", "Дарья", "Ксения")
_PATRONYMIC_ROOTS = ("Владимиров", "Александров", "Сергеев", "Петров", "Игорев", "Николаев")
_PATRONYMIC_ROOTS += ("Михайлов", "Анатольев", "Викторов", "Андреев")
_LAST = ("Омельченко", "Астахов", "Иванов", "Кузнецов", "Смирнов", "Попов", "Соколов")
_LAST += ("Лебедев", "Новиков", "Морозов", "Волков", "Дик", "Ковальчук", "Шевченко", "Зайцев")
_CITIES = ("Самара", "Москва", "Санкт-Петербург", "Казань", "Екатеринбург", "Новосибирск")
_CITIES += ("Тольятти", "Уфа", "Краснодар", "Сочи")
_MOBILE_CODES = (903, 905, 906, 909, 910, 912, 915, 916, 917, 919, 920, 921, 922, 926, 927)
_MOBILE_CODES += (937, 950, 951, 953, 960, 961, 967, 977, 985, 987, 991, 995, 999)
_PHONE_FORMATS = (
    "+7 ({c}) {a}-{b}-{d}",
    "8{c}{a}{b}{d}",
    "7{c}{a}{b}{d}",
    "+7{c}{a}{b}{d}",
    "8 ({c}) {a}-{b}-{d}",
    "8-{c}-{a}-{b}-{d}",
)
_BASE = datetime(2025, 1, 1, 9, 0, 0)
_FMT = "%Y-%m-%d %H:%M:%S"
MOSCOW = timezone(timedelta(hours=3))
ZONE_OFFSETS = (3, 5, 4, 0)  # hours east of UTC, for `zoned_times` records
TIME_FIELDS = ("till", "updated_at", "created")

VariantRule = Callable[[str, int], bool]
#: Spelling variant → which (entity, id) get it.
VARIANTS: dict[str, VariantRule] = {
    "agency_text": lambda entity, i: i % 6 == 3,
    "zoned_times": lambda entity, i: i % 7 == 2,
    "no_client": lambda entity, i: entity == "reserve" and i % 8 == 4,
    "text_id": lambda entity, i: i % 9 == 5,
    "text_person_id": lambda entity, i: i % 10 == 7,
}
ALL_VARIANTS = frozenset(VARIANTS)


def _rng(kind: str, key: int) -> random.Random:
    digest = hashlib.blake2b(f"allio:{kind}:{key}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def _full_name(rng: random.Random) -> tuple[str, str, str]:
    """(first, middle, last) with matching gender forms."""
    female = rng.random() < 0.5
    first = rng.choice(_FEMALE if female else _MALE)
    middle = rng.choice(_PATRONYMIC_ROOTS) + ("на" if female else "ич")
    last = rng.choice(_LAST)
    if female and last.endswith(("ов", "ев", "ин")):
        last += "а"
    return first, middle, last


def _phone(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.09:
        return BAD_PHONES[0 if roll < 0.04 else 1 if roll < 0.07 else 2]
    code, rest = rng.choice(_MOBILE_CODES), rng.randrange(10_000_000)
    a, b, d = f"{rest:07d}"[:3], f"{rest:07d}"[3:5], f"{rest:07d}"[5:]
    return rng.choice(_PHONE_FORMATS).format(c=code, a=a, b=b, d=d)


def person(person_id: int) -> dict[str, Any]:
    """The client / buyer object for a person id."""
    rng = _rng("person", person_id)
    first, middle, last = _full_name(rng)
    if rng.random() < 0.05:
        middle = ""
    return {"id": person_id, "first": first, "middle": middle, "last": last, "phone": _phone(rng)}


def manager(manager_id: int) -> dict[str, Any]:
    rng = _rng("manager", manager_id)
    first, middle, last = _full_name(rng)
    return {
        "id": manager_id,
        "fullname": f"{last} {first} {middle}",
        "city": rng.choice(_CITIES),
        "is_agency": manager_id % 5 == 0,
    }


def _comment(rng: random.Random, mgr: dict[str, Any], till: datetime) -> str:
    last, first, middle = mgr["fullname"].split(" ")
    options = (
        f"Бронь продлена {last} {first[0]}. {middle[0]}. до {till:%d.%m.%Y}",
        "Клиент просил перезвонить после 18:00",
        "Ипотека, ждём одобрения банка",
        "",
        'Рассрочка; "особые условия" — см. договор',
    )
    return rng.choice(options)


def _common(rng: random.Random, record_id: int) -> dict[str, Any]:
    created = _BASE + timedelta(seconds=rng.randrange(300 * 86400))
    till = created + timedelta(days=rng.randint(1, 14), seconds=rng.randrange(86400))
    updated = created + timedelta(seconds=rng.randrange(3 * 86400))
    mgr = manager(rng.randint(1, 40))
    return {
        "id": record_id,
        "till": till.strftime(_FMT),
        "space_id": rng.randint(1000, 9999),
        "manager": mgr,
        "comment": _comment(rng, mgr, till),
        "updated_at": updated.strftime(_FMT),
        "created": created.strftime(_FMT),
    }


def reserve(record_id: int) -> dict[str, Any]:
    rng = _rng("reserve", record_id)
    common = _common(rng, record_id)
    status = rng.choices(("ACTIVE", "EXPIRED", "CANCELLED", "CONVERTED"), (5, 3, 2, 2))[0]
    return {
        "id": record_id,
        "status": status,
        "type": rng.choice(("PREPAID", "FREE", "PAID")),
        "till": common["till"],
        "space_id": common["space_id"],
        "manager": common["manager"],
        "comment": common["comment"],
        "client": person(PERSON_BASE + record_id % PERSON_MOD),
        "updated_at": common["updated_at"],
        "created": common["created"],
        "price": rng.randrange(2_500_000, 25_000_000, 1000),
        "currency": "RUB",
    }


def dealcard(record_id: int) -> dict[str, Any]:
    rng = _rng("dealcard", record_id)
    common = _common(rng, record_id)
    return {
        "id": record_id,
        "status": rng.choices(("ACTIVE", "WON", "LOST", "CANCELLED"), (5, 3, 2, 1))[0],
        "type": rng.choice(("PREPAID", "MORTGAGE", "INSTALLMENT", "CASH")),
        "till": common["till"],
        "space_id": common["space_id"],
        "manager": common["manager"],
        "comment": common["comment"],
        "buyer": person(PERSON_BASE + record_id % PERSON_MOD),
        "updated_at": common["updated_at"],
        "created": common["created"],
        "sum": rng.randrange(2_500_000, 25_000_000, 1000),
        "stage": rng.choice(("NEW", "CONTRACT", "REGISTRATION", "PAID")),
        "reserve_id": record_id if rng.random() < 0.5 else None,
    }


_BUILDERS = {"reserve": reserve, "dealcard": dealcard}
_PERSON_KEY = {"reserve": "client", "dealcard": "buyer"}


def zoned(stamp: str, offset_hours: int) -> str:
    """A zone-less Moscow time as the same instant in ISO 8601 with ``offset_hours``."""
    moscow = datetime.strptime(stamp, _FMT).replace(tzinfo=MOSCOW)
    return moscow.astimezone(timezone(timedelta(hours=offset_hours))).isoformat()


def variants_of(entity: str, record_id: int) -> frozenset[str]:
    """The spelling variants a generated record has (before any is turned off)."""
    return frozenset(name for name, rule in VARIANTS.items() if rule(entity, record_id))


def apply_variants(entity: str, record: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """``record`` (as built, int id) respelled by the variants ``names`` that it has."""
    record_id = record["id"]
    chosen = variants_of(entity, record_id) & set(names)
    person_key = _PERSON_KEY[entity]
    if "agency_text" in chosen:
        agency = record["manager"]["is_agency"]
        record["manager"] = dict(record["manager"], is_agency="TRUE" if agency else "FALSE")
    if "zoned_times" in chosen:
        offset = ZONE_OFFSETS[(record_id // 7) % len(ZONE_OFFSETS)]
        for key in TIME_FIELDS:
            record[key] = zoned(record[key], offset)
    if "no_client" in chosen:
        del record[person_key]
    if "text_person_id" in chosen and person_key in record:
        record[person_key] = dict(record[person_key], id=str(record[person_key]["id"]))
    if "text_id" in chosen:
        record["id"] = str(record_id)
    return record


def _variant_names(variants: bool | Iterable[str]) -> frozenset[str]:
    if variants is True:
        return ALL_VARIANTS
    if variants is False:
        return frozenset()
    names = frozenset([variants] if isinstance(variants, str) else variants)
    unknown = names - ALL_VARIANTS
    if unknown:
        raise ValueError(f"unknown variants: {', '.join(sorted(unknown))}")
    return names


def make_record(
    entity: str, record_id: int, variants: bool | Iterable[str] = True
) -> dict[str, Any] | None:
    """The generated record, or None for a non-positive id.

    ``variants``: True (every spelling variant the id has), False (none: the plain
    seed spelling) or the variant names to keep.
    """
    if record_id < 1:
        return None
    return apply_variants(entity, _BUILDERS[entity](record_id), _variant_names(variants))


class RecordStore:
    """Generated records plus admin overrides (replaced or deleted ids).

    ``variants`` (see :func:`make_record`) is the default; ``set_variants`` changes it
    until ``reset``.
    """

    def __init__(self, variants: bool | Iterable[str] = True) -> None:
        self._overrides: dict[tuple[str, int], dict[str, Any] | None] = {}
        self._lock = threading.Lock()
        self._default_variants = _variant_names(variants)
        self._variants = self._default_variants

    @property
    def variants(self) -> frozenset[str]:
        return self._variants

    @property
    def default_variants(self) -> frozenset[str]:
        return self._default_variants

    def set_variants(self, variants: bool | Iterable[str]) -> frozenset[str]:
        """Which spelling variants generated records get from now on; ValueError if unknown."""
        names = _variant_names(variants)
        with self._lock:
            self._variants = names
        return names

    def exists(self, entity: str, record_id: int) -> bool:
        with self._lock:
            if (entity, record_id) in self._overrides:
                return self._overrides[(entity, record_id)] is not None
        return record_id >= 1

    def get(self, entity: str, record_id: int) -> dict[str, Any] | None:
        with self._lock:
            if (entity, record_id) in self._overrides:
                found = self._overrides[(entity, record_id)]
                return copy.deepcopy(found) if found is not None else None
        return make_record(entity, record_id, self._variants)

    def put(self, entity: str, record_id: int, record: dict[str, Any]) -> dict[str, Any]:
        stored = dict(record)
        stored["id"] = record_id
        with self._lock:
            self._overrides[(entity, record_id)] = stored
        return copy.deepcopy(stored)

    def delete(self, entity: str, record_id: int) -> None:
        with self._lock:
            self._overrides[(entity, record_id)] = None

    def reset(self) -> int:
        """Drop every override and restore the default variants; returns the overrides dropped."""
        with self._lock:
            count = len(self._overrides)
            self._overrides.clear()
            self._variants = self._default_variants
            return count
