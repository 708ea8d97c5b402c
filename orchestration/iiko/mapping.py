"""Seed 001 mapping: iiko orders → `orders` rows (pure functions, no I/O).

Three shapes carry an order:

- a Cloud API webhook event ``{"eventType", "eventTime", "organizationId",
  "correlationId", "eventInfo": OrderInfo}`` (version: ``eventTime``, UTC);
- the seed's SOI body ``{"type": "CREATE"|"UPDATE", "orderExternalId",
  "readableNumber", "creationStatus", "errorInfo", "transactionDetails",
  "iikoOrderDetails": {...}}`` (version: when we received it — SOI sends no time);
- an API record from ``deliveries/by_id`` / ``by_delivery_date_and_status``, the
  spec's ``OrderInfo`` ``{"id", "externalNumber", "organizationId", "timestamp",
  "creationStatus", "errorInfo", "order": {...}}`` (version: ``timestamp``, ms epoch).

Statuses are normalised to the ten Cloud API statuses whatever their spelling
(``COOKING_STARTED``, ``on-way``, ``onway`` …); an unknown one is kept as given and
reported. Money becomes kopecks exactly: numbers go through their decimal text,
never through binary float arithmetic (``1520.50`` → ``152050``, ``0.29`` → ``29``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from crm_sync.providers.iiko import ORDER_STATUSES

STATUSES = ORDER_STATUSES
_STATUS_BY_KEY = {s.lower(): s for s in STATUSES} | {"canceled": "Cancelled"}
_SEPARATORS = re.compile(r"[\s_\-.]+")
IIKO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d{1,7})?)?$")
SOI_TYPES = ("CREATE", "UPDATE")
# Cloud API event types that name a delivery order (the seed's two are included).
ORDER_EVENT_TYPES = (
    "DeliveryOrderUpdate",
    "DeliveryOrderError",
    "OrderChanged",
    "DeliveryOrderChanged",
)


class MappingError(ValueError):
    """A value that cannot become a column (the event is marked, the task retried)."""


@dataclass(frozen=True)
class MappedOrder:
    """One order as an `orders` row, and what the mapping noticed."""

    row: dict[str, Any]
    unknown_status: str | None = None  # a status spelling none of the ten matches

    @property
    def iiko_order_id(self) -> str:
        return str(self.row["iiko_order_id"])


# -- values ---------------------------------------------------------------------------------


def normalize_status(raw: object) -> tuple[str | None, bool]:
    """(status, known): one of the ten Cloud API statuses, or the value as given."""
    if raw is None:
        return None, True
    text = str(raw).strip()
    if not text:
        return None, True
    found = _STATUS_BY_KEY.get(_SEPARATORS.sub("", text).lower())
    return (found, True) if found else (text, False)


def to_kopecks(value: object) -> int | None:
    """Roubles → kopecks, exactly (half a kopeck rounds up); None stays None.

    A float is read through ``str`` (its shortest round-tripping decimal text), so
    ``1520.5`` → ``152050`` and ``0.1 + 0.2`` → ``30`` — never ``value * 100``.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise MappingError(f"amount is not a number: {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise MappingError(f"amount is not a finite number: {value!r}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise MappingError(f"amount is not a number: {str(value)[:50]!r}") from None
    if not amount.is_finite():
        raise MappingError(f"amount is not a finite number: {str(value)[:50]!r}")
    return int((amount * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def parse_time(value: object, zone: tzinfo = UTC) -> datetime | None:
    """An aware UTC datetime from iiko's ``yyyy-MM-dd HH:mm:ss.fff`` (read in ``zone``)
    or ISO 8601 with an offset; None for None / blank; MappingError when unreadable."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if IIKO_TIME.match(text):
        head, _, fraction = text.replace("T", " ").partition(".")
        # Python before 3.11 and iiko's 7-digit fractions: keep microseconds.
        text = f"{head}.{fraction[:6].ljust(6, '0')}" if fraction else head
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MappingError(f"not a time: {str(value)[:40]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(UTC)


def epoch_ms(value: object) -> datetime:
    """iiko's ``timestamp`` (milliseconds since the epoch) as aware UTC."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise MappingError(f"timestamp is not a number: {str(value)[:40]!r}")
    try:
        millis = Decimal(str(value).strip())
        return datetime.fromtimestamp(float(millis / 1000), UTC)
    except (InvalidOperation, OverflowError, ValueError, OSError):
        raise MappingError(f"timestamp is not a number: {str(value)[:40]!r}") from None


def _text(value: object, limit: int | None = None) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    return text[:limit] if limit else text


def error_info_text(value: object) -> str | None:
    """iiko's ``errorInfo`` (``{"code", "message", "description", ...}``) or the SOI
    string as one line of text."""
    if value is None:
        return None
    if isinstance(value, dict):
        code = _text(value.get("code"))
        message = _text(value.get("message") or value.get("description"))
        reason = _text(value.get("errorReason"))
        parts = [p for p in (code, message) if p]
        text = ": ".join(parts)
        if reason:
            text = f"{text} ({reason})" if text else reason
        return text or json.dumps(value, ensure_ascii=False, sort_keys=True)
    return _text(value)


def problem_text(value: object) -> str | None:
    """A delivery problem: Cloud ``{"hasProblem", "description"}`` or the SOI text."""
    if value is None:
        return None
    if isinstance(value, dict):
        if not value.get("hasProblem"):
            return None
        return _text(value.get("description")) or "has problem"
    if isinstance(value, bool):
        return "has problem" if value else None
    return _text(value)


def order_type_text(value: object) -> str | None:
    """``orderType``: the Cloud object's service type (else its name), or the SOI text."""
    if isinstance(value, dict):
        return _text(value.get("orderServiceType") or value.get("name"), 50)
    return _text(value, 50)


# -- shapes ---------------------------------------------------------------------------------


def _row(
    integration_id: int,
    iiko_order_id: object,
    organization_id: object,
    raw: dict[str, Any],
    source_version: datetime | None,
    **columns: Any,
) -> dict[str, Any]:
    order_id = _text(iiko_order_id, 64)
    if order_id is None:
        raise MappingError("the order has no iiko order id")
    return {
        "integration_id": integration_id,
        "external_id": order_id,
        "iiko_order_id": order_id,
        "organization_id": _text(organization_id, 64),
        "raw": raw,
        "custom_fields": {},
        "source_version": source_version,
        **columns,
    }


def _from_order_info(
    info: dict[str, Any],
    integration_id: int,
    *,
    organization_id: object,
    raw: dict[str, Any],
    version: datetime | None,
    zone: tzinfo,
) -> MappedOrder:
    """OrderInfo (API record or ``eventInfo``) → row. Without an ``order`` object (an
    error about an order iiko did not create) only what the record carries is set."""
    columns: dict[str, Any] = {
        "external_order_id": _text(info.get("externalNumber"), 255),
        "creation_status": _text(info.get("creationStatus"), 50),
        "error_info": error_info_text(info.get("errorInfo")),
    }
    order = info.get("order")
    unknown = None
    if isinstance(order, dict):
        status, known = normalize_status(order.get("status"))
        unknown = None if known else status
        courier_info = order.get("courierInfo")
        courier = courier_info.get("courier") if isinstance(courier_info, dict) else None
        if not isinstance(courier, dict):
            courier = {}
        columns |= {
            "readable_number": _text(order.get("number"), 100),
            "status": status,
            "promised_time": _lenient_time(order.get("completeBefore"), zone),
            "courier_id": _text(courier.get("id"), 255),
            "courier_name": _text(courier.get("name"), 255),
            "order_type": order_type_text(order.get("orderType")),
            "restaurant_name": _restaurant(order),
            "problem": problem_text(order.get("problem")),
            "amount_kopecks": to_kopecks(order.get("sum")),
        }
    elif order is not None:
        raise MappingError("`order` is not an object")
    row = _row(integration_id, info.get("id"), organization_id, raw, version, **columns)
    return MappedOrder(row, unknown)


def _restaurant(order: dict[str, Any]) -> str | None:
    """The Cloud order names no restaurant; a terminal group or conception name may."""
    for key in ("terminalGroup", "conception"):
        value = order.get(key)
        if isinstance(value, dict) and _text(value.get("name")):
            return _text(value.get("name"), 255)
    return _text(order.get("restaurantName"), 255)


def _lenient_time(value: object, zone: tzinfo) -> datetime | None:
    # A promised time iiko wrote oddly must not block the order: raw keeps it.
    try:
        return parse_time(value, zone)
    except MappingError:
        return None


def map_api_order(record: dict[str, Any], integration_id: int, zone: tzinfo = UTC) -> MappedOrder:
    """A ``deliveries/by_id`` / ``by_delivery_date_and_status`` record → row
    (version: its ``timestamp``)."""
    if not isinstance(record, dict):
        raise MappingError("the order record is not an object")
    version = epoch_ms(record["timestamp"]) if record.get("timestamp") is not None else None
    return _from_order_info(
        record,
        integration_id,
        organization_id=record.get("organizationId"),
        raw=record,
        version=version,
        zone=zone,
    )


def map_cloud_event(event: dict[str, Any], integration_id: int, zone: tzinfo = UTC) -> MappedOrder:
    """A Cloud API order event (``eventInfo`` = OrderInfo) → row (version: ``eventTime``)."""
    info = event.get("eventInfo")
    if not isinstance(info, dict):
        raise MappingError("the event has no eventInfo object")
    version = parse_time(event.get("eventTime"), UTC)
    return _from_order_info(
        info,
        integration_id,
        organization_id=info.get("organizationId") or event.get("organizationId"),
        raw=event,
        version=version,
        zone=zone,
    )


def map_soi(
    body: dict[str, Any], integration_id: int, received_at: datetime | None, zone: tzinfo = UTC
) -> MappedOrder:
    """The seed's SOI ``CREATE`` / ``UPDATE`` body → row (version: ``received_at``)."""
    details = body.get("iikoOrderDetails")
    if not isinstance(details, dict):
        raise MappingError("the SOI body has no iikoOrderDetails object")
    transaction = body.get("transactionDetails")
    transaction = transaction if isinstance(transaction, dict) else {}
    status, known = normalize_status(details.get("orderStatus"))
    row = _row(
        integration_id,
        details.get("iikoOrderId"),
        transaction.get("organizationId"),
        body,
        received_at.astimezone(UTC) if received_at else None,
        external_order_id=_text(body.get("orderExternalId"), 255),
        readable_number=_text(body.get("readableNumber") or details.get("iikoOrderNumber"), 100),
        status=status,
        promised_time=_lenient_time(details.get("promisedTime"), zone),
        courier_id=_text(details.get("courierId"), 255),
        courier_name=_text(details.get("courierName"), 255),
        order_type=order_type_text(details.get("orderType")),
        restaurant_name=_text(details.get("restaurantName"), 255),
        problem=problem_text(details.get("problem")),
        creation_status=_text(body.get("creationStatus"), 50),
        error_info=error_info_text(body.get("errorInfo")),
        amount_kopecks=to_kopecks(details.get("orderAmount")),
    )
    return MappedOrder(row, None if known else status)


def is_soi(payload: object) -> bool:
    """True for the seed's SOI body (``type`` CREATE / UPDATE)."""
    return isinstance(payload, dict) and str(payload.get("type") or "").upper() in SOI_TYPES


def carries_order(payload: object) -> bool:
    """True when an event holds the whole order, so it is applied without an API call:
    a SOI body with its details, or a Cloud event whose ``eventInfo`` has the ``order``
    object — or reports an order iiko failed to create (``creationStatus`` Error,
    no ``order``: there is nothing to fetch)."""
    if not isinstance(payload, dict):
        return False
    if is_soi(payload):
        return isinstance(payload.get("iikoOrderDetails"), dict)
    info = payload.get("eventInfo")
    if not isinstance(info, dict) or not info.get("id"):
        return False
    if isinstance(info.get("order"), dict):
        return True
    return info.get("order") is None and str(info.get("creationStatus") or "") == "Error"


def map_event(
    payload: dict[str, Any], integration_id: int, received_at: datetime | None, zone: tzinfo = UTC
) -> MappedOrder:
    """A stored webhook payload (SOI or Cloud event) → row."""
    if is_soi(payload):
        return map_soi(payload, integration_id, received_at, zone)
    return map_cloud_event(payload, integration_id, zone)
