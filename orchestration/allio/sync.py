"""ALLIO's part of the generic sync: fetch reserves / deal cards, map, upsert with contacts."""

from __future__ import annotations

from datetime import tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select

from crm_schema.entities import upsert_entities
from crm_schema.tables import integrations
from crm_schema.task_queue import now_utc
from crm_sync.providers.allio import AllioSettings
from orchestration.allio.client import BATCH_SIZE, AllioClient
from orchestration.allio.mapping import map_record
from orchestration.allio.tasks import ENTITY_TABLES, SYNC, take_webhooks
from orchestration.core.sync_engine import StoreResult

ENTITIES = ("reserve", "dealcard")


class AllioSyncHandler:
    """Reserves and deal cards by id (100 per call); each carries its contact."""

    handler = SYNC
    entities = ENTITIES
    batch_size = BATCH_SIZE

    def fetch(self, client: AllioClient, entity: str, ids: list[str]) -> list[dict[str, Any]]:
        """`POST /{entity}/list` for ``ids``."""
        return client.list_records(entity, [int(i) for i in ids])  # type: ignore[arg-type]

    def record_id(self, entity: str, record: dict[str, Any]) -> str | None:
        """ALLIO records carry their id in `id`."""
        value = record.get("id")
        return None if value is None else str(value)

    def store(
        self,
        conn: Connection,
        integration_id: int,
        entity: str,
        records: list[tuple[dict[str, Any], int | None]],
    ) -> StoreResult:
        """Contacts first (deals link to them), then the deals."""
        zone = time_zone(conn, integration_id)
        mapped = [
            map_record(entity, record, integration_id, owner, zone) for record, owner in records
        ]
        people = {m.contact["external_id"]: m.contact for m in mapped if m.contact}
        now = now_utc()
        contact_ids = upsert_entities(conn, ENTITY_TABLES["contact"], list(people.values()), now)
        deals = [
            m.deal
            | {"contact_id": contact_ids.get(m.contact["external_id"]) if m.contact else None}
            for m in mapped
        ]
        upsert_entities(conn, ENTITY_TABLES[entity], deals, now)
        return StoreResult(
            upserted=len(deals),
            extra={
                "contacts_upserted": len(people),
                "contacts_with_phone": sum(1 for p in people.values() if p["phone"]),
                f"{entity}_without_contact": sum(1 for m in mapped if m.contact is None),
            },
        )

    def take_webhooks(self, conn: Connection) -> int:
        """Waiting `allio_webhook` rows → tasks."""
        return take_webhooks(conn)[0]


def time_zone(conn: Connection, integration_id: int) -> tzinfo:
    """The zone an integration's zone-less ALLIO times are in (its `timezone` setting)."""
    raw = conn.execute(
        select(integrations.c.settings).where(integrations.c.id == integration_id)
    ).scalar_one_or_none()
    return ZoneInfo(AllioSettings.model_validate(raw or {}).timezone)
