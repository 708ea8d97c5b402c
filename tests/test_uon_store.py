"""U-ON customers and the shared phone cache (crm_schema.providers.uon_customers), and the
U-ON integration settings: on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, insert, select

from crm_schema.providers.uon import customers, uon_requests
from crm_schema.providers.uon_customers import (
    customer_phones,
    customers_by_phone,
    drop_cached,
    profiles_for,
    purge_expired_cache,
    read_cache,
    upsert_customers,
    users_in,
    write_cache,
)
from crm_sync.providers.uon import SPEC, UonSettings, UonSetup
from tests.uon_fixtures import add_uon

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
USER = {
    "u_id": 1001,
    "u_name": "Ирина",
    "u_surname": "Ковалёва",
    "u_sname": "Сергеевна",
    "u_phone": "8 029 625-40-70",
    "u_phone_mobile": "",
    "u_email": "irina@example.by",
    "manager_id": "2",
}


def test_a_user_becomes_a_customer_with_e164_phones(engine: Engine) -> None:
    integration = add_uon(engine)
    with engine.begin() as conn:
        [stored] = upsert_customers(conn, integration.id, [USER], "BY", NOW)
    assert stored["external_id"] == "1001"
    assert stored["name"] == "Ковалёва Ирина Сергеевна"
    assert stored["phone"] == "+375296254070"
    assert stored["phone_raw"] == "8 029 625-40-70"
    assert stored["phone_mobile"] is None
    assert stored["manager_id"] == "2"
    with engine.connect() as conn:
        assert [
            c["external_id"] for c in customers_by_phone(conn, integration.id, "+375296254070")
        ] == ["1001"]
        assert customer_phones(conn, integration.id, ["1001"]) == {"+375296254070"}


def test_fresh_non_empty_values_overwrite_and_empty_ones_never_erase(engine: Engine) -> None:
    integration = add_uon(engine)
    with engine.begin() as conn:
        upsert_customers(conn, integration.id, [USER], "BY", NOW)
        later = NOW + timedelta(minutes=1)
        changed = {"u_id": "1001", "u_name": "Ирина", "u_surname": "Новикова", "u_email": ""}
        [stored] = upsert_customers(conn, integration.id, [changed], "BY", later)
    assert stored["last_name"] == "Новикова"  # fresh non-empty wins
    assert stored["email"] == "irina@example.by"  # empty never erases
    assert stored["phone"] == "+375296254070"  # missing never erases
    assert stored["name"] == "Новикова Ирина"  # the name as now known
    with engine.connect() as conn:
        assert conn.execute(select(customers.c.id)).all().__len__() == 1


def test_a_user_without_an_id_is_not_stored(engine: Engine) -> None:
    integration = add_uon(engine)
    with engine.begin() as conn:
        assert upsert_customers(conn, integration.id, [{"u_name": "x"}], "BY", NOW) == []


def test_profiles_carry_active_requests_only(engine: Engine) -> None:
    integration = add_uon(engine)
    with engine.begin() as conn:
        stored = upsert_customers(conn, integration.id, [USER], "BY", NOW)
        base = {"integration_id": integration.id, "custom_fields": {}, "raw": {}}
        conn.execute(
            insert(uon_requests),
            [
                dict(base, external_id="7", kind="request", status="В работе", active=True,
                     customer_external_id="1001", manager_id="2"),
                dict(base, external_id="8", kind="request", status="closed", active=False,
                     customer_external_id="1001", manager_id=None),
                dict(base, external_id="9", kind="lead", status="new", active=None,
                     customer_external_id="1001", manager_id=None),
            ],
        )  # fmt: skip
        [profile] = profiles_for(conn, integration.id, stored)
    assert profile["uon_id"] == "1001"
    assert profile["manager_id"] == "2"
    assert [r["id"] for r in profile["active_requests"]] == ["7", "9"]


def test_cache_entries_expire_and_a_slower_writer_never_wins(engine: Engine) -> None:
    integration = add_uon(engine)
    phone = "+375296254070"
    with engine.begin() as conn:
        assert read_cache(conn, integration.id, phone) is None
        write_cache(conn, integration.id, phone, {"uon_id": "1"}, NOW, 180)
        write_cache(conn, integration.id, phone, None, NOW - timedelta(seconds=5), 90)
        entry = read_cache(conn, integration.id, phone)
    assert entry is not None and entry.found and entry.profile == {"uon_id": "1"}
    assert entry.fresh(NOW + timedelta(seconds=179))
    assert not entry.fresh(NOW + timedelta(seconds=181))
    with engine.begin() as conn:
        write_cache(conn, integration.id, phone, None, NOW + timedelta(seconds=1), 90)
        negative = read_cache(conn, integration.id, phone)
        assert negative is not None and not negative.found and negative.profile is None
        assert drop_cached(conn, integration.id, [phone, None, ""]) == 1
        assert read_cache(conn, integration.id, phone) is None


def test_purge_keeps_recently_expired_entries_for_stale_answers(engine: Engine) -> None:
    integration = add_uon(engine)
    with engine.begin() as conn:
        write_cache(conn, integration.id, "+375296254070", None, NOW - timedelta(days=2), 90)
        write_cache(conn, integration.id, "+375296254072", None, NOW - timedelta(minutes=5), 90)
        assert purge_expired_cache(conn, NOW - timedelta(days=1)) == 1
        assert read_cache(conn, integration.id, "+375296254072") is not None


def test_users_in_reads_both_answer_shapes() -> None:
    assert users_in({"users": [USER], "result": 200}) == [USER]
    assert users_in({"user": [USER]}) == [USER]
    assert users_in({"user": USER}) == [USER]
    assert users_in({"result": 404}) == []
    assert users_in([USER]) == []


def test_setup_parses_the_interface_values() -> None:
    setup = UonSetup.model_validate(
        {
            "api_key": "k",
            "user_extensions": "2=151, 4=152",
            "ip_allowlist": ["10.0.0.0/8,192.168.1.1", "2001:db8::/32"],
            "default_region": "by",
        }
    )
    assert setup.user_extensions == {"2": "151", "4": "152"}
    assert setup.ip_allowlist == ["10.0.0.0/8", "192.168.1.1/32", "2001:db8::/32"]
    assert setup.default_region == "BY"
    assert SPEC.rate_limits[0].effective_rate == pytest.approx(8)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("user_extensions", "2:151", "MANAGER_ID=EXTENSION"),
        ("user_extensions", "two=151", "both digits"),
        ("ip_allowlist", "10.0.0.300", "not an IP address"),
        ("default_region", "XX", "region code"),
        ("pbx_originate_url", "{pbx}/call?to={number}", "may name only"),
        ("pbx_originate_url", "ftp://pbx/{ext}", "must start with"),
        ("cache_ttl_seconds", 0, "greater than or equal to 1"),
    ],
)
def test_bad_settings_say_what_is_wrong(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        UonSettings.model_validate({field: value})
