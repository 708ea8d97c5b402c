"""Storing edge cases the emulator cannot produce: a provider listing a record twice."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from sqlalchemy import insert, select

from crm_schema.integrations import add_integration
from crm_schema.providers.allio import allio_tasks, reserves
from orchestration.allio.sync import AllioSyncHandler
from orchestration.allio.tasks import QUEUE, SYNC
from orchestration.core.sync_engine import SyncEngine, SyncOptions
from provider_emulators.allio.records import make_record


class RepeatingClient:
    """Returns every record twice, the second copy newer (the provider's quirk under test)."""

    def list_records(self, entity: str, ids: list[int]) -> list[dict]:
        first = [make_record(entity, i) for i in ids]
        newer = [dict(r, status="NEWER") for r in first]
        return first + newer


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
                handler=SYNC,
            )
        )
    opts = SyncOptions(day=datetime.now(UTC).date(), run_id="r1", mode="live")
    sync = SyncEngine(
        engine, QUEUE, AllioSyncHandler(), lambda _id: RepeatingClient(), lambda: {integ.id}, opts
    )
    stats = sync.run()
    with engine.connect() as conn:
        rows = conn.execute(select(reserves.c.external_id, reserves.c.status)).all()
        status = conn.execute(select(allio_tasks.c.status)).scalar_one()
    assert sorted(rows) == [("7", "NEWER"), ("8", "NEWER")]
    assert status == 2
    assert stats.entities["reserve"].upserted == 2
