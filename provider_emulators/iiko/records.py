"""Deterministic iiko data: delivery orders, customers, couriers, and webhook bodies.

Every generated value comes from a hash of its id, so the same order id (and
organization) gives the same order in every emulator process, benchmark and test.
Orders are the Cloud API's ``OrderInfo`` (``deliveries/by_id``), with money as numbers
with kopecks (``1520.5``) and times as ``yyyy-MM-dd HH:mm:ss.fff``.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from crm_sync.providers.iiko import ORDER_STATUSES

STATUSES = ORDER_STATUSES
# What a generated order's status is, roughly as a day's orders spread.
_STATUS_WEIGHTS = (2, 2, 2, 4, 3, 3, 4, 6, 8, 2)
FINAL_STATUSES = frozenset({"Closed", "Cancelled"})
FAILING_SUFFIX = "dead"  # order ids ending in it: every command on them fails


def new_order_id() -> str:
    """A fresh order id that never ends in FAILING_SUFFIX (1 in 65,536 random ones would)."""
    while True:
        order_id = str(uuid.uuid4())
        if not order_id.endswith(FAILING_SUFFIX):
            return order_id


DATE_TIME = "%Y-%m-%d %H:%M:%S.%f"
NAMESPACE = uuid.UUID("6f1c3c1e-6d0b-4c47-9d0e-1f6b0e5f11c0")
_BASE = datetime(2026, 1, 1, 10, 0, 0)

_FIRST = ("Иван", "Пётр", "Анна", "Мария", "Сергей", "Ольга", "Дмитрий", "Елена", "Алексей")
_FIRST += ("Татьяна", "Николай", "Наталья")
_LAST = ("Иванов", "Петров", "Смирнов", "Кузнецов", "Попов", "Соколов", "Лебедев", "Новиков")
_STREETS = ("Ленина", "Мира", "Советская", "Гагарина", "Садовая", "Пушкина", "Молодёжная")
_CITY = ("Москва", "2d3d4c1e-3f7b-4a54-9d7f-0a1d5c6b7e80")
_PRODUCTS = (
    ("Пицца Маргарита", 549.0),
    ("Пицца Пепперони", 649.5),
    ("Ролл Филадельфия", 489.9),
    ("Суп Том-ям", 420.0),
    ("Салат Цезарь", 365.5),
    ("Бургер классический", 399.0),
    ("Морс клюквенный", 129.9),
    ("Картофель фри", 189.0),
    ("Чизкейк", 245.5),
    ("Лимонад", 159.0),
)
PAYMENT_KINDS = ("Cash", "Card", "External")
_PAYMENT_NAMES = {"Cash": "Наличные", "Card": "Банковская карта", "External": "Онлайн-оплата"}
# Deliveries.Common.PaymentTypeKind: what a response may name as a payment's kind.
RESPONSE_PAYMENT_KINDS = frozenset(
    {"Unknown", "Cash", "Card", "Credit", "Writeoff", "Voucher", "External", "SmartSale"}
    | {"Sberbank", "Trpos"}
)
_CANCEL_CAUSE = "Отказ клиента"
_ORDER_TYPES = {
    "DeliveryByCourier": ("Доставка курьером", "DELIVERY"),
    "DeliveryByClient": ("Самовывоз", "PICKUP"),
}
TERMINAL_GROUPS = 3
COURIERS = 8


def _rng(kind: str, key: str) -> random.Random:
    digest = hashlib.blake2b(f"iiko:{kind}:{key}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def stable_id(*parts: object) -> str:
    """A uuid derived from ``parts`` (the same everywhere)."""
    return str(uuid.uuid5(NAMESPACE, ":".join(str(p) for p in parts)))


def fmt_time(moment: datetime) -> str:
    """``yyyy-MM-dd HH:mm:ss.fff``."""
    return moment.strftime(DATE_TIME)[:-3]


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, DATE_TIME)


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def utc_now() -> datetime:
    """Now as a naive UTC datetime (the emulator writes every time in UTC)."""
    return datetime.now(UTC).replace(tzinfo=None)


def _ms(moment: datetime) -> int:
    return int(moment.replace(tzinfo=UTC).timestamp() * 1000)


def money(kopecks: int) -> float:
    """Kopecks as iiko writes money: a number with up to two decimals (``1520.5``)."""
    return kopecks / 100


def kopecks(amount: float | int) -> int:
    return round(amount * 100)


def is_failing(order_id: str) -> bool:
    """Whether commands on ``order_id`` always end in ``Error`` (ids ending in ``dead``)."""
    return order_id.lower().endswith(FAILING_SUFFIX)


def terminal_group(organization_id: str, index: int) -> tuple[str, str]:
    """(terminal group id, restaurant name) number ``index`` of an organization."""
    return stable_id("terminal", organization_id, index), f"Ресторан №{index + 1}"


def restaurant_name(organization_id: str, terminal_group_id: str) -> str | None:
    for i in range(TERMINAL_GROUPS):
        group_id, name = terminal_group(organization_id, i)
        if group_id == terminal_group_id:
            return name
    return None


def employee(employee_id: str) -> dict[str, Any]:
    """A courier (``Deliveries.Response.Order.Employee``) for any employee id."""
    rng = _rng("employee", employee_id)
    name = f"{rng.choice(_LAST)} {rng.choice(_FIRST)}"
    return {"id": employee_id, "name": name, "phone": f"+7926{rng.randrange(10**7):07d}"}


def courier_ids(organization_id: str) -> list[str]:
    """The couriers generated orders of an organization are assigned to."""
    return [stable_id("courier", organization_id, i) for i in range(COURIERS)]


def order_type(service_type: str) -> dict[str, Any]:
    name, _ = _ORDER_TYPES[service_type]
    return {
        "id": stable_id("order-type", service_type),
        "name": name,
        "orderServiceType": service_type,
    }


def payment_item(
    kind: str, amount: float, payment_type_id: str | None = None, processed: bool = False
) -> dict[str, Any]:
    """A response payment (``Deliveries.Response.Order.PaymentItem``)."""
    return {
        "paymentType": {
            "id": payment_type_id or stable_id("payment-type", kind),
            "name": _PAYMENT_NAMES.get(kind, kind),
            "kind": kind if kind in RESPONSE_PAYMENT_KINDS else "Unknown",
        },
        "sum": amount,
        "isPreliminary": False,
        "isExternal": kind == "External",
        "isProcessedExternally": processed,
        "isFiscalizedExternally": False,
        "isPrepay": False,
    }


def _items(rng: random.Random, order_id: str) -> tuple[list[dict[str, Any]], int]:
    items, total = [], 0
    for position in range(rng.randint(1, 4)):
        name, price = rng.choice(_PRODUCTS)
        amount = rng.randint(1, 3)
        cost = kopecks(price) * amount
        total += cost
        items.append(
            {
                "type": "Product",
                "status": "Added",
                "amount": amount,
                "comment": None,
                "product": {"id": stable_id("product", name), "name": name},
                "price": price,
                "cost": money(cost),
                "pricePredefined": False,
                "positionId": stable_id("position", order_id, position),
                "resultSum": money(cost),
            }
        )
    return items, total


def _status_times(status: str, created: datetime, rng: random.Random) -> dict[str, str | None]:
    """The ``when*`` stamps an order in ``status`` has (each later than the one before)."""
    order = STATUSES.index(status) if status != "Cancelled" else 0
    steps = (
        ("whenConfirmed", 1),
        ("whenPrinted", 2),
        ("whenCookingCompleted", 4),
        ("whenSended", 6),
        ("whenDelivered", 7),
        ("whenClosed", 8),
    )
    out: dict[str, str | None] = {}
    moment = created
    for key, reached in steps:
        moment += timedelta(minutes=rng.randint(2, 12), milliseconds=rng.randrange(1000))
        out[key] = fmt_time(moment) if order >= reached else None
    return out


def make_order(
    order_id: str,
    organization_id: str,
    *,
    day: date | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    """The deterministic ``OrderInfo`` of ``order_id`` in ``organization_id``.

    ``day`` puts its delivery (``completeBefore``) on that date (default: a date derived
    from the id in 2026); ``status`` overrides the generated status.
    """
    rng = _rng("order", f"{organization_id}:{order_id}")
    if day is None:
        created = _BASE + timedelta(seconds=rng.randrange(330 * 86400))
    else:
        created = datetime(day.year, day.month, day.day, 8) + timedelta(
            seconds=rng.randrange(13 * 3600)
        )
    created += timedelta(milliseconds=rng.randrange(1000))
    drawn = rng.choices(STATUSES, _STATUS_WEIGHTS)[0]  # drawn always: the rest stays the same
    status = status or drawn
    number = rng.randint(1, 9999)
    items, total = _items(rng, order_id)
    pickup = rng.random() < 0.2
    service = "DeliveryByClient" if pickup else "DeliveryByCourier"
    group_id, _ = terminal_group(organization_id, rng.randrange(TERMINAL_GROUPS))
    times = _status_times(status, created, rng)
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    courier = None
    if not pickup and STATUSES.index(status) >= STATUSES.index("Waiting") and status != "Cancelled":
        courier = {
            "courier": employee(rng.choice(courier_ids(organization_id))),
            "isCourierSelectedManually": rng.random() < 0.3,
        }
    problem = None
    if rng.random() < 0.1:
        problem = {"hasProblem": True, "description": "Клиент не отвечает на звонок"}
    cancel = None
    if status == "Cancelled":
        cancel = {
            "whenCancelled": fmt_time(created + timedelta(minutes=rng.randint(3, 30))),
            "cause": {"id": stable_id("cancel-cause", _CANCEL_CAUSE), "name": _CANCEL_CAUSE},
            "comment": None,
        }
    kind = rng.choice(PAYMENT_KINDS)
    paid = status in ("Delivered", "Closed")
    complete_before = created + timedelta(minutes=rng.choice((45, 60, 90, 120)))
    last_change = max(
        [created] + [parse_time(t) for t in times.values() if t is not None]
    ) + timedelta(milliseconds=rng.randint(1, 999))
    order = {
        "parentDeliveryId": None,
        "customer": {
            "type": "regular",
            "id": stable_id("customer", organization_id, first, last, number),
            "name": first,
            "surname": last,
            "comment": None,
            "gender": "NotSpecified",
            "inBlacklist": False,
            "blacklistReason": None,
            "birthdate": None,
        },
        "phone": f"+79{rng.randrange(10**9):09d}",
        "deliveryPoint": None
        if pickup
        else {
            "coordinates": None,
            "address": {
                "street": {
                    "id": stable_id("street", rng.choice(_STREETS)),
                    "name": rng.choice(_STREETS),
                    "city": {"id": _CITY[1], "name": _CITY[0]},
                },
                "index": None,
                "house": str(rng.randint(1, 120)),
                "building": None,
                "flat": str(rng.randint(1, 300)),
                "entrance": str(rng.randint(1, 8)),
                "floor": str(rng.randint(1, 20)),
                "doorphone": None,
                "region": None,
                "line1": None,
            },
            "externalCartographyId": None,
            "comment": None,
        },
        "status": status,
        "cancelInfo": cancel,
        "courierInfo": courier,
        "completeBefore": fmt_time(complete_before),
        "whenCreated": fmt_time(created),
        **times,
        "comment": rng.choice((None, "Позвонить за 10 минут", "Без лука", "Домофон не работает")),
        "problem": problem,
        "operator": None,
        "marketingSource": None,
        "deliveryDuration": None,
        "indexInCourierRoute": None,
        "cookingStartTime": fmt_time(created + timedelta(minutes=5)),
        "isDeleted": False,
        "sum": money(total),
        "number": number,
        "sourceKey": None,
        "guestsInfo": {"count": rng.randint(1, 4), "splitBetweenPersons": False},
        "items": items,
        "combos": [],
        "payments": [payment_item(kind, money(total))],
        "tips": [],
        "discounts": [],
        "orderType": order_type(service),
        "terminalGroupId": group_id,
        "processedPaymentsSum": money(total) if paid else 0.0,
        "loyaltyInfo": None,
        "externalData": None,
    }
    return {
        "id": order_id,
        "posId": None,
        "externalNumber": f"{created:%Y%m%d}-{number}",
        "organizationId": organization_id,
        "timestamp": _ms(last_change),
        "creationStatus": "Success",
        "errorInfo": None,
        "order": order,
    }


def set_status(info: dict[str, Any], status: str, when: datetime) -> None:
    """Move an order to ``status``, stamping the matching ``when*`` field."""
    order = info["order"]
    order["status"] = status
    stamp = fmt_time(when)
    field = {
        "Waiting": "whenCookingCompleted",
        "OnWay": "whenSended",
        "Delivered": "whenDelivered",
        "Closed": "whenClosed",
    }.get(status)
    if field and not order.get(field):
        order[field] = stamp
    if status in ("Delivered", "Closed"):
        order["processedPaymentsSum"] = order["sum"]


def upper_status(status: str) -> str:
    """``CookingStarted`` → ``COOKING_STARTED`` (the SOI spelling)."""
    return "".join(f"_{c}" if c.isupper() and i else c for i, c in enumerate(status)).upper()


def _iso(text: str | None) -> str | None:
    """A Cloud API time as ISO 8601 with the UTC offset, as SOI bodies write times."""
    return None if text is None else parse_time(text).replace(tzinfo=UTC).isoformat("T", "seconds")


def soi_body(info: dict[str, Any], kind: str = "UPDATE", correlation_id: str | None = None) -> dict:
    """The seed's SOI webhook body (``type`` CREATE / UPDATE) for an ``OrderInfo``."""
    order = info.get("order") or {}
    service = (order.get("orderType") or {}).get("orderServiceType", "DeliveryByCourier")
    error = info.get("errorInfo")
    number = order.get("number")
    return {
        "type": kind,
        "orderExternalId": info.get("externalNumber"),
        "readableNumber": None if number is None else str(number),
        "creationStatus": "OK" if info.get("creationStatus") == "Success" else "Error",
        "errorInfo": None if not error else error.get("message") or error.get("code"),
        "transactionDetails": {
            "correlationId": correlation_id or str(uuid.uuid4()),
            "organizationId": info["organizationId"],
        },
        "iikoOrderDetails": {
            "iikoOrderId": info["id"],
            "iikoOrderNumber": None if number is None else str(number),
            "restaurantName": restaurant_name(
                info["organizationId"], order.get("terminalGroupId", "")
            ),
            "orderType": _ORDER_TYPES.get(service, ("", "DELIVERY"))[1],
            "orderStatus": upper_status(order["status"]) if order.get("status") else None,
            "receivedAt": _iso(order.get("whenCreated")),
            "promisedTime": _iso(order.get("completeBefore")),
            "problem": (order.get("problem") or {}).get("description"),
            "orderAmount": order.get("sum"),
        },
    }


def cloud_event(
    info: dict[str, Any],
    event_type: str = "DeliveryOrderUpdate",
    *,
    with_order: bool = True,
    event_time: datetime | None = None,
    correlation_id: str | None = None,
) -> dict[str, Any]:
    """One Cloud API webhook event for an ``OrderInfo`` (``with_order=False``: no order)."""
    event_info = dict(info)
    if not with_order:
        event_info["order"] = None
    return {
        "eventType": event_type,
        "eventTime": fmt_time(event_time or utc_now()),
        "organizationId": info["organizationId"],
        "correlationId": correlation_id or str(uuid.uuid4()),
        "eventInfo": event_info,
    }


def webhook_events(
    orders: Iterable[dict[str, Any]],
    *,
    event_type: str = "DeliveryOrderUpdate",
    with_order: bool = True,
    soi: bool = False,
    soi_type: str = "UPDATE",
) -> list[dict[str, Any]]:
    """Webhook events for ``OrderInfo`` dicts: Cloud events, or SOI bodies when ``soi``."""
    if soi:
        return [soi_body(info, soi_type) for info in orders]
    return [cloud_event(info, event_type, with_order=with_order) for info in orders]


# ---- loyalty ---------------------------------------------------------------------------


def wallet_id(customer_id: str) -> str:
    """The bonus wallet every generated customer has."""
    return stable_id("wallet", customer_id)


def initial_balance(customer_id: str, wallet: str) -> int:
    """A wallet's starting balance in kopecks (its own wallet: 0–5000 ₽; others: 0)."""
    if wallet != wallet_id(customer_id):
        return 0
    return _rng("balance", customer_id).randrange(0, 500_000, 50)


def customer_id_for(kind: str, value: str) -> str:
    """The customer found by a lookup (``id`` → itself, else one derived from the value)."""
    return value if kind == "id" else stable_id("customer-by", kind, value)


def customer(
    customer_id: str,
    balances: dict[str, int],
    lookup: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """``GetCustomerInfoResponse`` for a customer id with its wallets' balances (kopecks)."""
    rng = _rng("customer", customer_id)
    phone = f"+79{rng.randrange(10**9):09d}"
    email = f"guest{rng.randrange(10**6)}@example.com"
    if lookup is not None and lookup[0] == "phone":
        phone = lookup[1]
    if lookup is not None and lookup[0] == "email":
        email = lookup[1]
    registered = _BASE - timedelta(days=rng.randint(1, 900))
    own = wallet_id(customer_id)
    return {
        "id": customer_id,
        "referrerId": None,
        "name": rng.choice(_FIRST),
        "surname": rng.choice(_LAST),
        "middleName": "",
        "comment": "",
        "phone": phone,
        "cultureName": "ru-RU",
        "birthday": None,
        "email": email,
        "sex": 0,
        "consentStatus": 1,
        "anonymized": False,
        "cards": [],
        "categories": [],
        "walletBalances": [
            {
                "id": wid,
                "name": "Бонусы" if wid == own else "Кошелёк",
                "type": 1,
                "balance": money(amount),
            }
            for wid, amount in balances.items()
        ],
        "userData": "",
        "shouldReceivePromoActionsInfo": None,
        "shouldReceiveLoyaltyInfo": None,
        "shouldReceiveOrderStatusInfo": None,
        "personalDataConsentFrom": None,
        "personalDataConsentTo": None,
        "personalDataProcessingFrom": None,
        "personalDataProcessingTo": None,
        "isDeleted": False,
        "whenRegistered": fmt_time(registered),
        "lastProcessedOrderDate": None,
        "firstOrderDate": None,
        "lastVisitedOrganizationId": None,
        "registrationOrganizationId": None,
    }
