"""RDESK (seed 002) updates → amoCRM lead bodies.

One RDESK array element is one update. `BookedUpdate` / `McUpdate` validate it (a bad
element ends its task in 3 with `validation_errors`), `lead_body` builds the PATCH
body: `price` and `custom_fields_values` with the field ids from the integration's
`fields` settings. Text formats (PROVIDERS.md, RDESK):

- dates and times go as ISO 8601 with an offset (`2022-09-05T11:22:33+00:00`); a value
  without a zone is Moscow time (+03:00); a bare date is its Moscow midnight;
- booked guests: a block per guest, blocks separated by a blank line::

      ФИО: Иванов Иван
      Дата рождения: 01.05.1980
      Заездов: 1
      Категория номера: Стандарт
      Возрастная группа: Взрослый
      Направление: Кардиология
      UID: g-1
      Счёт: 11

  (a missing value shows as `—`: billNum "" means the guest has no bill);
- booked bills: a block per bill (`Счёт: 11` / `Сумма: 120000 ₽` / `Оплачено: 60000 ₽`);
- mc treatments / labs / packets / complexes: a line per item,
  `name | ✅ 2500 ₽ | 01.12.2026 10:30 | ⏳ Назначено` (✅ paid, ❌ not paid, `Бесплатно`
  when `pay` is false; the visit date and status only when the item has them), nested
  items (a packet's treatments, a complex's treatments and labs) on lines of their own
  starting with `  • `; a visit time with a zone is shown in Moscow time;
- mc price: the sum of the top-level items' prices (rounded half up to roubles: the
  lead price is an integer); paid price: of those with `pay` and `paid`;
- a list that is empty or absent clears its field (`"values": null`, amoCRM's way).

`lead_id` is accepted as digits or an integer in both shapes (booked sends a string,
mc an integer).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)

from crm_sync.providers.amocrm import AmocrmSettings

MOSCOW = timezone(timedelta(hours=3), "MSK")
FREE = "Бесплатно"
PAID_MARK, UNPAID_MARK = "✅", "❌"
RUB = "₽"
NESTED = "  • "
STATUS_TEXT = {"set": "⏳ Назначено", "done": "✔️ Выполнено", "cancel": "✖️ Отменено"}
_RU_DATE = re.compile(r"^(\d{2})\.(\d{2})\.(\d{4})(?:[ T](\d{2}):(\d{2})(?::(\d{2}))?)?$")


# ---- value types ------------------------------------------------------------------------


def _lead_id(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a lead id (digits)")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise ValueError("must be a lead id (digits)")
    if number <= 0:
        raise ValueError("must be a positive lead id")
    return number


def parse_moment(value: Any) -> datetime | date:
    """An RDESK date or time: ISO 8601 (`Z`, offsets, space or T, fractions) or
    `dd.mm.yyyy[ HH:MM[:SS]]`; a bare date stays a date."""
    if isinstance(value, datetime | date):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a date or date-time string")
    text = value.strip()
    found = _RU_DATE.match(text)
    if found:
        day, month, year, hour, minute, second = found.groups()
        if hour is None:
            return date(int(year), int(month), int(day))
        return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0))
    if len(text) == 10:
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("must be an ISO 8601 date or date-time") from None


def _optional_moment(value: Any) -> datetime | date | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return parse_moment(value)


LeadId = Annotated[int, BeforeValidator(_lead_id)]
Moment = Annotated[datetime | date, BeforeValidator(parse_moment)]
OptionalMoment = Annotated[datetime | date | None, BeforeValidator(_optional_moment)]
Money = Annotated[Decimal, Field(allow_inf_nan=False)]


def _bill_num(value: Any) -> int | None:
    if value is None or value == "":
        return None  # "" = the guest has no bill
    if isinstance(value, bool):
        raise ValueError("must be a bill number or an empty string")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    raise ValueError("must be a bill number or an empty string")


def _blank_none(value: Any) -> Any:
    return None if value is None or (isinstance(value, str) and not value.strip()) else value


def _zero_if_none(value: Any) -> Any:
    return 0 if value is None or (isinstance(value, str) and not value.strip()) else value


OptionalInt = Annotated[int | None, BeforeValidator(_blank_none)]
OptionalText = Annotated[str | None, BeforeValidator(_blank_none)]


class _Element(BaseModel):
    # RDESK may add keys (only the documented ones are read) and send numbers where
    # text is documented.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, coerce_numbers_to_str=True)


# ---- booked -----------------------------------------------------------------------------


class Guest(_Element):
    fio: OptionalText = None
    birthday: OptionalText = None
    roomCategory: OptionalText = None  # noqa: N815 - RDESK's key
    ageGroup: OptionalText = None  # noqa: N815
    cure: OptionalText = None
    uid: OptionalText = None
    stayCount: OptionalInt = None  # noqa: N815
    billNum: Annotated[int | None, BeforeValidator(_bill_num)] = None  # noqa: N815


class ExtData(_Element):
    guests: list[Guest]


class BookedMoney(_Element):
    total: int
    paid: int


class Bill(_Element):
    billNum: OptionalText = None  # noqa: N815
    billSum: OptionalText = None  # noqa: N815
    billPaidSum: OptionalText = None  # noqa: N815


class BookedUpdate(_Element):
    """A `/zdrav/booked` element (a sanatorium stay)."""

    id: int
    lead_id: LeadId
    status: Literal["booked", "checkin", "checkout", "cancel", "waiting"]
    bookedAt: Moment  # noqa: N815
    name: str
    checkin: Moment
    checkout: Moment
    money: BookedMoney
    docNum: int  # noqa: N815
    extData: ExtData  # noqa: N815
    phone: OptionalText = None
    email: OptionalText = None
    billData: list[Bill] | None = None  # noqa: N815


# ---- mc ---------------------------------------------------------------------------------


class _Priced(_Element):
    pay: bool = False
    price: Annotated[Money, BeforeValidator(_zero_if_none)] = Decimal(0)
    paid: bool = False


class Treatment(_Priced):
    item_id: int | str | None = None
    action: OptionalText = None
    status: Literal["set", "done", "cancel"] | None = None
    visit_date: OptionalMoment = None


class Lab(_Priced):
    lab_item_id: int | str | None = None
    lab: OptionalText = None
    status: Literal["set", "done", "cancel"] | None = None
    visit_date: OptionalMoment = None
    treatment_item_id: int | str | None = None


class Packet(_Priced):
    packet_id: int | str | None = None
    packet: OptionalText = None
    treatments: list[Treatment] = Field(default_factory=list)


class Complex(_Priced):
    complex_id: int | str | None = None
    complex: OptionalText = None
    treatments: list[Treatment] = Field(default_factory=list)
    labs: list[Lab] = Field(default_factory=list)


class McUpdate(_Element):
    """A `/zdrav/mc` element (medical centre services)."""

    id: int
    lead_id: LeadId
    name: str
    createdAt: Moment  # noqa: N815
    birthday: Moment
    status: str
    phone: str | None = None
    email: str | None = None
    treatments: list[Treatment] | None = None
    labs: list[Lab] | None = None
    packets: list[Packet] | None = None
    complex: list[Complex] | None = None


Update = BookedUpdate | McUpdate
MODELS: dict[str, type[BookedUpdate] | type[McUpdate]] = {"booked": BookedUpdate, "mc": McUpdate}


class InvalidUpdate(ValueError):
    """An element that does not match its shape; the message lists every problem."""


def validation_errors(exc: ValidationError) -> str:
    """`loc: message` per problem, never the values (they may be personal data)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "element"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def parse_update(source: str, payload: Any) -> Update:
    """Validate one element of ``source`` (booked | mc); raises :class:`InvalidUpdate`."""
    model = MODELS.get(source)
    if model is None:
        raise InvalidUpdate(f"unknown RDESK endpoint '{source}'")
    if not isinstance(payload, dict):
        raise InvalidUpdate("element: must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise InvalidUpdate(validation_errors(exc)) from None


# ---- text formats -----------------------------------------------------------------------


def iso(value: datetime | date) -> str:
    """ISO 8601 with an offset; zone-less values are Moscow time, a date its midnight."""
    if not isinstance(value, datetime):
        value = datetime.combine(value, time(0, 0))
    if value.tzinfo is None:
        value = value.replace(tzinfo=MOSCOW)
    return value.isoformat(timespec="seconds")


def ru_date(value: Any) -> str:
    """`dd.mm.yyyy` for a parseable date (a birthday), else the text as sent."""
    try:
        moment = parse_moment(value)
    except ValueError:
        return str(value or "").strip()
    return moment.strftime("%d.%m.%Y")


def visit_time(value: datetime | date) -> str:
    """`dd.mm.yyyy HH:MM` (Moscow time when the value has a zone)."""
    if not isinstance(value, datetime):
        return value.strftime("%d.%m.%Y")
    if value.tzinfo is not None:
        value = value.astimezone(MOSCOW)
    return value.strftime("%d.%m.%Y %H:%M")


def amount(value: Decimal | int) -> str:
    """A sum without a useless fraction: 2500, 2500.5."""
    number = Decimal(value)
    if number == number.to_integral_value():
        return str(int(number))
    return format(number.normalize(), "f")


def price_text(item: _Priced) -> str:
    """`✅ 2500 ₽` / `❌ 2500 ₽` when the item is paid for, else `Бесплатно`."""
    if not item.pay:
        return FREE
    return f"{PAID_MARK if item.paid else UNPAID_MARK} {amount(item.price)} {RUB}"


def _dash(value: object) -> str:
    text = "" if value is None else str(value).strip()
    return text or "—"


def _rubles(value: str | None) -> str:
    return f"{value} {RUB}" if value else "—"


def guests_text(guests: Sequence[Guest]) -> str:
    """The guests textarea (see the module docstring)."""
    blocks = []
    for guest in guests:
        blocks.append(
            "\n".join(
                [
                    f"ФИО: {_dash(guest.fio)}",
                    f"Дата рождения: {_dash(ru_date(guest.birthday))}",
                    f"Заездов: {_dash(guest.stayCount)}",
                    f"Категория номера: {_dash(guest.roomCategory)}",
                    f"Возрастная группа: {_dash(guest.ageGroup)}",
                    f"Направление: {_dash(guest.cure)}",
                    f"UID: {_dash(guest.uid)}",
                    f"Счёт: {_dash(guest.billNum)}",
                ]
            )
        )
    return "\n\n".join(blocks)


def bills_text(bills: Sequence[Bill]) -> str:
    """The bills textarea (see the module docstring)."""
    blocks = []
    for bill in bills:
        blocks.append(
            "\n".join(
                [
                    f"Счёт: {_dash(bill.billNum)}",
                    f"Сумма: {_rubles(bill.billSum)}",
                    f"Оплачено: {_rubles(bill.billPaidSum)}",
                ]
            )
        )
    return "\n\n".join(blocks)


def _item_line(name: str | None, item: _Priced, status: str | None, visit: Any) -> str:
    parts = [_dash(name), price_text(item)]
    if visit is not None:
        parts.append(visit_time(visit))
    if status is not None:
        parts.append(STATUS_TEXT[status])
    return " | ".join(parts)


def treatment_line(item: Treatment) -> str:
    return _item_line(item.action, item, item.status, item.visit_date)


def lab_line(item: Lab) -> str:
    return _item_line(item.lab, item, item.status, item.visit_date)


def treatments_text(items: Iterable[Treatment]) -> str:
    return "\n".join(treatment_line(i) for i in items)


def labs_text(items: Iterable[Lab]) -> str:
    return "\n".join(lab_line(i) for i in items)


def packets_text(items: Iterable[Packet]) -> str:
    lines = []
    for packet in items:
        lines.append(_item_line(packet.packet, packet, None, None))
        lines += [NESTED + treatment_line(t) for t in packet.treatments]
    return "\n".join(lines)


def complex_text(items: Iterable[Complex]) -> str:
    lines = []
    for item in items:
        lines.append(_item_line(item.complex, item, None, None))
        lines += [NESTED + treatment_line(t) for t in item.treatments]
        lines += [NESTED + lab_line(lab) for lab in item.labs]
    return "\n".join(lines)


# ---- the lead body ----------------------------------------------------------------------


def field(field_id: int, value: Any) -> dict[str, Any]:
    """One `custom_fields_values` entry; None or "" clears the field."""
    if value is None or value == "":
        return {"field_id": field_id, "values": None}
    return {"field_id": field_id, "values": [{"value": value}]}


def _number(value: Decimal | int) -> int | float:
    number = Decimal(value)
    return int(number) if number == number.to_integral_value() else float(number)


def mc_totals(update: McUpdate) -> tuple[Decimal, Decimal]:
    """(price, paid) of an mc update: top-level items only; paid where `pay` and `paid`."""
    items: list[_Priced] = [
        *(update.treatments or ()),
        *(update.labs or ()),
        *(update.packets or ()),
        *(update.complex or ()),
    ]
    price = sum((i.price for i in items), Decimal(0))
    paid = sum((i.price for i in items if i.pay and i.paid), Decimal(0))
    return price, paid


def lead_body(update: Update, settings: AmocrmSettings) -> dict[str, Any]:
    """The `PATCH /api/v4/leads/{id}` body: `price` and `custom_fields_values`."""
    shared = settings.fields.shared
    if isinstance(update, BookedUpdate):
        ids = settings.fields.booked
        values = [
            field(shared.created_at, iso(update.bookedAt)),
            field(shared.paid_price, update.money.paid),
            field(shared.rdesk_id, str(update.id)),
            field(ids.status, update.status),
            field(ids.check_in, iso(update.checkin)),
            field(ids.check_out, iso(update.checkout)),
            field(ids.guests, guests_text(update.extData.guests)),
            field(ids.doc_num, update.docNum),
            field(ids.bill_data, bills_text(update.billData or ())),
        ]
        return {"price": update.money.total, "custom_fields_values": values}
    mc = settings.fields.mc
    price, paid = mc_totals(update)
    values = [
        field(shared.created_at, iso(update.createdAt)),
        field(shared.paid_price, _number(paid)),
        field(shared.rdesk_id, str(update.id)),
        field(mc.treatments, treatments_text(update.treatments or ())),
        field(mc.labs, labs_text(update.labs or ())),
        field(mc.packets, packets_text(update.packets or ())),
        field(mc.complex, complex_text(update.complex or ())),
    ]
    # amoCRM's lead price is an integer: kopecks are rounded (half up).
    return {
        "price": int(price.to_integral_value(rounding=ROUND_HALF_UP)),
        "custom_fields_values": values,
    }


def settings_of(raw: dict[str, Any] | None) -> AmocrmSettings:
    """The integration's settings as the model (defaults for what is unset)."""
    return AmocrmSettings.model_validate(raw or {})
