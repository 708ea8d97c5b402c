"""Storing edge cases the emulator cannot produce: a provider listing a record twice."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from sqlalchemy import insert, select

from crm_schema.integrations import add_integration
from crm_schema.tables import allio_tasks, reserves
from orchestration.allio.sync import AllioSync, SyncOptions
from provider_emulators.allio_records import make_record


class RepeatingFetcher:
    """Returns every record twice, the second copy newer (the provider's quirk under test)."""

    def reserve_list(self, ids: list[int]) -> list[dict]:
        first = [make_record("reserve", i) for i in ids]
        newer = [dict(r, status="NEWER") for r in first]
        return first + newer

    def dealcard_list(self, ids: list[int]) -> list[dict]:
        return []


def test_record_listed_twice_is_stored_once(engine) -> None:
    with engine.begin() as conn:
        integ = add_integration(
            conn,
            provider="allio",
            name="dup",
            integration_uuid=str(uuid.uuid4()),
            api_base_url="http://127.0.0.1:9",
            credentials={"api_token": "x" * 20},
        )
        conn.execute(
            insert(allio_tasks).values(
                external_ids=json.dumps([7, 8]),
                status=0,
                created_at=datetime.now(UTC),
                entity="reserve",
                integration_id=integ.id,
                command="RESERVE_ADD",
            )
        )
    opts = SyncOptions(day=datetime.now(UTC).date(), run_id="r1", mode="live")
    stats = AllioSync(engine, lambda _id: RepeatingFetcher(), lambda: {integ.id}, opts).run()
    with engine.connect() as conn:
        rows = conn.execute(select(reserves.c.external_id, reserves.c.status)).all()
        status = conn.execute(select(allio_tasks.c.status)).scalar_one()
    assert sorted(rows) == [("7", "NEWER"), ("8", "NEWER")]
    assert status == 2
    assert stats.entities["reserve"].upserted == 2
