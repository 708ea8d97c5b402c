"""iiko mapping (seed 001): statuses, exact kopecks, times, and the three order shapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from orchestration.iiko.mapping import (
    STATUSES,
    MappingError,
    carries_order,
    map_api_order,
    map_cloud_event,
    map_event,
    map_soi,
    normalize_status,
    parse_time,
    to_kopecks,
)
from orchestration.iiko.tasks import order_key, split_key
from tests.iiko_fixtures import ORG, SEED_SOI, api_order, cloud_event

ORDER_ID = "1b7e6f0e-41b8-4f8a-9d0f-0d8c5c3b2a10"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("COOKING_STARTED", "CookingStarted"),
        ("ON_WAY", "OnWay"),
        ("on_way", "OnWay"),
        ("OnWay", "OnWay"),
        ("on-way", "OnWay"),
        ("Wait Cooking", "WaitCooking"),
        ("READY_FOR_COOKING", "ReadyForCooking"),
        ("COOKING_COMPLETED", "CookingCompleted"),
        ("unconfirmed", "Unconfirmed"),
        ("CANCELLED", "Cancelled"),
        ("Canceled", "Cancelled"),
        ("DELIVERED", "Delivered"),
        ("closed", "Closed"),
        ("WAITING", "Waiting"),
    ],
)
def test_status_spellings_normalise_to_the_ten_cloud_statuses(raw, expected):
    assert normalize_status(raw) == (expected, True)


def test_every_cloud_status_is_its_own_normal_form_and_unknown_ones_are_kept():
    assert [normalize_status(s)[0] for s in STATUSES] == list(STATUSES)
    assert normalize_status("  LOST_IN_SPACE ") == ("LOST_IN_SPACE", False)
    assert normalize_status(None) == (None, True)
    assert normalize_status("") == (None, True)


@pytest.mark.parametrize(
    ("amount", "kopecks"),
    [
        (1520.50, 152050),
        ("1520.50", 152050),
        (Decimal("1520.50"), 152050),
        (1520, 152000),
        (0.1 + 0.2, 30),  # 0.30000000000000004: float math would not be exact anyway
        (0.29, 29),  # int(0.29 * 100) == 28
        (1.15, 115),  # 1.15 * 100 == 114.99999999999999
        (19.99, 1999),
        (4.35, 435),  # 4.35 * 100 == 434.99999999999994
        (1e-2, 1),
        (0, 0),
        ("0.005", 1),  # half a kopeck rounds up
        (-12.5, -1250),
        (None, None),
        ("", None),
    ],
)
def test_money_becomes_kopecks_exactly(amount, kopecks):
    assert to_kopecks(amount) == kopecks


def test_kopecks_from_parsed_json_match_the_text():
    # The payload column hands floats back: the decimal text must survive the trip.
    for text in ("1520.50", "0.29", "1.15", "99999999.99", "4.35"):
        value = json.loads(f'{{"sum": {text}}}')["sum"]
        assert to_kopecks(value) == int(Decimal(text) * 100)


@pytest.mark.parametrize("bad", ["12,5 руб", True, float("nan"), float("inf"), "NaN"])
def test_an_amount_that_is_not_a_number_is_a_mapping_error(bad):
    with pytest.raises(MappingError):
        to_kopecks(bad)


def test_times_iiko_format_iso_offsets_and_zones():
    assert parse_time("2026-03-01 10:15:30.123") == datetime(
        2026, 3, 1, 10, 15, 30, 123000, tzinfo=UTC
    )
    assert parse_time("2020-08-31T18:08:31+01:00") == datetime(2020, 8, 31, 17, 8, 31, tzinfo=UTC)
    moscow = ZoneInfo("Europe/Moscow")
    assert parse_time("2026-03-01 10:00:00.000", moscow) == datetime(2026, 3, 1, 7, tzinfo=UTC)
    assert parse_time("2026-03-01 10:00:00.1234567") == datetime(
        2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC
    )
    assert parse_time(None) is None and parse_time(" ") is None
    with pytest.raises(MappingError):
        parse_time("yesterday")


def test_the_seed_soi_example_maps_to_the_seed_columns():
    received = datetime(2020, 8, 31, 15, 24, tzinfo=UTC)
    mapped = map_soi(SEED_SOI, 7, received)
    row = mapped.row
    assert mapped.unknown_status is None
    assert row == row | {
        "integration_id": 7,
        "iiko_order_id": "iiko-uuid",
        "external_id": "iiko-uuid",
        "organization_id": "org-uuid",
        "external_order_id": "20200831-515",
        "readable_number": "515",
        "status": "CookingStarted",
        "promised_time": datetime(2020, 8, 31, 17, 8, 31, tzinfo=UTC),
        "courier_id": None,
        "courier_name": None,
        "order_type": "DELIVERY",
        "restaurant_name": "Ресторан №1",
        "problem": None,
        "creation_status": "OK",
        "error_info": None,
        "amount_kopecks": 152050,
        "source_version": received,
    }
    assert row["raw"] == SEED_SOI  # everything is kept
    assert map_event(SEED_SOI, 7, received).row == row
    assert carries_order(SEED_SOI)


def test_a_cloud_event_maps_from_its_order_and_is_versioned_by_event_time():
    event = cloud_event(
        ORDER_ID, status="ON_WAY", amount=1520.5, event_time="2026-03-01 10:00:00.250"
    )
    mapped = map_cloud_event(event, 3)
    row = mapped.row
    assert row["status"] == "OnWay" and row["amount_kopecks"] == 152050
    assert row["readable_number"] == "515"
    assert row["organization_id"] == ORG
    assert row["external_order_id"] == "site-515"
    assert row["courier_id"] == "c0ffee00-0000-4000-8000-000000000001"
    assert row["courier_name"] == "Пётр Петров"
    assert row["order_type"] == "DeliveryByCourier"
    assert row["promised_time"] == datetime(2026, 3, 1, 11, 30, tzinfo=UTC)
    assert row["creation_status"] == "Success" and row["error_info"] is None
    assert row["problem"] == "has problem"
    assert row["source_version"] == datetime(2026, 3, 1, 10, 0, 0, 250000, tzinfo=UTC)
    assert row["raw"] == event
    assert carries_order(event)


def test_an_api_record_is_versioned_by_its_timestamp():
    record = api_order(ORDER_ID, status="Delivered", amount="99.99", timestamp=1772359200123)
    row = map_api_order(record, 3).row
    assert row["status"] == "Delivered" and row["amount_kopecks"] == 9999
    assert row["source_version"] == datetime(2026, 3, 1, 10, 0, 0, 123000, tzinfo=UTC)
    assert row["raw"] == record


def test_an_unknown_status_is_kept_as_given_and_reported():
    mapped = map_api_order(api_order(ORDER_ID, status="TELEPORTED"), 3)
    assert mapped.row["status"] == "TELEPORTED" and mapped.unknown_status == "TELEPORTED"


def test_an_error_event_without_an_order_sets_only_what_it_carries():
    event = {
        "eventType": "DeliveryOrderError",
        "eventTime": "2026-03-01 10:00:00.000",
        "organizationId": ORG,
        "correlationId": "c1",
        "eventInfo": {
            "id": ORDER_ID,
            "externalNumber": "site-1",
            "organizationId": ORG,
            "timestamp": 1,
            "creationStatus": "Error",
            "errorInfo": {"code": "TerminalGroupUnavailable", "message": "Terminal is offline"},
            "order": None,
        },
    }
    assert carries_order(event)
    row = map_cloud_event(event, 3).row
    assert row["error_info"] == "TerminalGroupUnavailable: Terminal is offline"
    assert row["creation_status"] == "Error"
    assert "status" not in row and "amount_kopecks" not in row


def test_events_without_the_order_are_not_applied_from_their_payload():
    partial = cloud_event(ORDER_ID)
    partial["eventInfo"].pop("order")
    partial["eventInfo"]["creationStatus"] = "Success"
    assert not carries_order(partial)
    assert not carries_order({"eventType": "OrderChanged", "eventInfo": {"id": ORDER_ID}})
    assert not carries_order({"type": "UPDATE", "orderExternalId": "x"})
    assert not carries_order(None)


def test_mapping_errors_name_the_problem():
    with pytest.raises(MappingError, match="no iiko order id"):
        map_soi({"type": "CREATE", "iikoOrderDetails": {}}, 1, None)
    with pytest.raises(MappingError, match="eventInfo"):
        map_cloud_event({"eventType": "DeliveryOrderUpdate"}, 1)
    bad_sum = cloud_event(ORDER_ID)
    bad_sum["eventInfo"]["order"]["sum"] = "lots"
    with pytest.raises(MappingError, match="amount"):
        map_cloud_event(bad_sum, 1)


def test_task_keys_carry_the_organization_and_the_order():
    assert order_key(ORG, ORDER_ID) == f"{ORG}:{ORDER_ID}"
    assert split_key(order_key(ORG, ORDER_ID)) == (ORG, ORDER_ID)
    assert split_key(order_key(None, ORDER_ID)) == (None, ORDER_ID)


def test_odd_optional_shapes_leave_their_columns_empty():
    record = api_order(ORDER_ID)
    record["order"] |= {
        "courierInfo": None,
        "problem": None,
        "orderType": None,
        "completeBefore": "soon",  # kept in raw; the column stays empty
    }
    row = map_api_order(record, 3).row
    assert row["courier_id"] is row["courier_name"] is row["problem"] is None
    assert row["order_type"] is None and row["promised_time"] is None
    record["order"]["courierInfo"] = "not an object"
    assert map_api_order(record, 3).row["courier_id"] is None
