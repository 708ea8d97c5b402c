"""Seed 000 data as ALLIO sends it, through a real sync: time zones, contact roles,
deals without their person, readable JSON — on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import String, cast, select

from crm_schema.providers.allio import dealcards, reserves
from crm_schema.tables import contacts
from provider_emulators.allio.records import make_record
from tests import allio_fixtures as fx
from tests.allio_fixtures import (
    CONTACTS,
    DEALCARDS,
    RESERVES,
    Emulator,
    add_allio,
    add_webhook,
    metadata,
    rows,
    run_sync,
    tick,
    today,
    utc,
)

allio_server, crm, emulator, instance = fx.allio_server, fx.crm, fx.emulator, fx.instance


def _sync(url, engine, instance, integ, command: str, ids: list[int]):  # noqa: ANN001, ANN202
    add_webhook(engine, integ, command, ids)
    tick(url, instance)
    return run_sync(url, instance, today())


def _reserve(record_id: int, **fields) -> dict:  # noqa: ANN003
    return {**make_record("reserve", record_id), **fields}


def test_till_is_read_in_each_integrations_zone(crm, instance, emulator: Emulator):
    url, engine = crm
    moscow = add_allio(engine, emulator.base_url, name="moscow")
    yekat = add_allio(
        engine, emulator.base_url, name="yekat", settings={"timezone": "Asia/Yekaterinburg"}
    )
    emulator.put_record("reserve", 1, _reserve(1, till="2025-10-30 20:08:10"))
    emulator.put_record("reserve", 2, _reserve(2, till="2025-10-30T20:08:10+05:00"))
    add_webhook(engine, moscow, "RESERVE_ADD", [1, 2])
    add_webhook(engine, yekat, "RESERVE_ADD", [1])
    tick(url, instance)
    assert run_sync(url, instance, today()).success

    in_moscow = rows(engine, reserves, integration_id=moscow.id)
    # The seed's zone-less `till` is Moscow time (+03): 17:08:10 UTC.
    assert utc(in_moscow["1"]["created_at"]) == datetime(2025, 10, 30, 17, 8, 10, tzinfo=UTC)
    # A `till` that names its zone keeps it, whatever the integration's zone.
    assert utc(in_moscow["2"]["created_at"]) == datetime(2025, 10, 30, 15, 8, 10, tzinfo=UTC)
    # The same text for an integration in Yekaterinburg (+05).
    in_yekat = rows(engine, reserves, integration_id=yekat.id)
    assert utc(in_yekat["1"]["created_at"]) == datetime(2025, 10, 30, 15, 8, 10, tzinfo=UTC)
    assert in_yekat["1"]["raw"]["till"] == "2025-10-30 20:08:10"  # what ALLIO sent is kept


def test_client_and_buyer_ids_are_kept_apart(crm, instance, emulator: Emulator):
    """A reserve's client 5000 and a deal card's buyer 5000 may be two people."""
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    client = {
        "id": 5000,
        "first": "Анна",
        "middle": "",
        "last": "Клиентова",
        "phone": "+7 912 000-00-01",
    }
    buyer = {"id": "5000", "first": "Борис", "middle": "", "last": "Покупатель", "phone": "#ERROR!"}
    emulator.put_record("reserve", 1, _reserve(1, client=client))
    emulator.put_record("dealcard", 1, {**make_record("dealcard", 1), "buyer": buyer})
    _sync(url, engine, instance, integ, "RESERVE_ADD", [1])
    result = _sync(url, engine, instance, integ, "DEALCARD_ADD", [1])
    assert result.success

    with engine.connect() as conn:
        people = {r.role: r for r in conn.execute(select(contacts))}
    assert set(people) == {"client", "buyer"}
    assert people["client"].external_id == people["buyer"].external_id == "5000"
    assert people["client"].last_name == "Клиентова" and people["buyer"].last_name == "Покупатель"
    assert rows(engine, reserves)["1"]["contact_id"] == people["client"].id
    assert rows(engine, dealcards)["1"]["contact_id"] == people["buyer"].id

    # Syncing the deal card again updates the buyer, never the client.
    emulator.put_record(
        "dealcard", 1, {**make_record("dealcard", 1), "buyer": buyer | {"last": "Новый"}}
    )
    _sync(url, engine, instance, integ, "DEALCARD_MOD", [1])
    with engine.connect() as conn:
        people = {r.role: r for r in conn.execute(select(contacts))}
    assert people["buyer"].last_name == "Новый" and people["client"].last_name == "Клиентова"


def test_deals_without_their_person_are_counted(crm, instance, emulator: Emulator):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    for record_id in (1, 2):
        record = _reserve(record_id)
        record.pop("client", None)
        emulator.put_record("reserve", record_id, record)
    emulator.put_record("reserve", 3, _reserve(3, client=make_record("reserve", 1)["client"]))
    deal = make_record("dealcard", 4)
    deal.pop("buyer", None)
    emulator.put_record("dealcard", 4, deal)
    add_webhook(engine, integ, "RESERVE_ADD", [1, 2, 3])
    add_webhook(engine, integ, "DEALCARD_ADD", [4])
    tick(url, instance)
    result = run_sync(url, instance, today())
    assert result.success

    assert metadata(result, RESERVES)["reserves_without_client"] == 2
    assert metadata(result, DEALCARDS)["dealcards_without_buyer"] == 1
    assert metadata(result, CONTACTS)["deals_without_contact"] == 3
    stored = rows(engine, reserves)
    assert stored["1"]["contact_id"] is None and stored["3"]["contact_id"] is not None


def test_json_columns_store_readable_utf8(crm, instance, emulator: Emulator):
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    record = _reserve(1, comment="Бронь продлена")
    record["manager"] = {**record["manager"], "fullname": "Менеджер 7"}
    emulator.put_record("reserve", 1, record)
    assert _sync(url, engine, instance, integ, "RESERVE_ADD", [1]).success

    with engine.connect() as conn:
        custom, raw = conn.execute(
            select(cast(reserves.c.custom_fields, String), cast(reserves.c.raw, String))
        ).one()
        people = conn.execute(select(cast(contacts.c.custom_fields, String))).scalars().all()
    assert "Менеджер 7" in custom and "Бронь продлена" in raw
    assert "\\u04" not in custom + raw
    assert people and all("\\u04" not in text for text in people)


def test_records_spelled_as_allio_may_spell_them_sync_like_plain_ones(
    crm, instance, emulator: Emulator
):
    """Digit-string ids, "TRUE"/"FALSE", zoned times, reserves without a client: the
    emulator's variants, each stored exactly as its plain spelling would be."""
    url, engine = crm
    integ = add_allio(engine, emulator.base_url)
    ids = [2, 3, 4, 5, 7, 9, 12, 14, 17]
    variant_records = {i: make_record("reserve", i) for i in ids}
    plain_records = {i: make_record("reserve", i, variants=False) for i in ids}
    assert any(isinstance(r["id"], str) for r in variant_records.values())
    assert any(isinstance(r["manager"]["is_agency"], str) for r in variant_records.values())
    assert any("+" in r["till"] for r in variant_records.values())
    assert any("client" not in r for r in variant_records.values())
    assert _sync(url, engine, instance, integ, "RESERVE_ADD", ids).success

    stored = rows(engine, reserves)
    assert set(stored) == {str(i) for i in ids}
    with engine.connect() as conn:
        people = {r.id: r for r in conn.execute(select(contacts))}
    for i in ids:
        row, plain, sent = stored[str(i)], plain_records[i], variant_records[i]
        assert utc(row["created_at"]) == _moscow(plain["till"])
        assert utc(row["source_version"]) == _moscow(plain["updated_at"])
        assert row["manager_is_agency"] is plain["manager"]["is_agency"]
        if "client" in sent:
            assert people[row["contact_id"]].external_id == str(plain["client"]["id"])
        else:
            assert row["contact_id"] is None


def _moscow(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo("Europe/Moscow")).astimezone(UTC)
