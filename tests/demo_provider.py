"""A provider that exists only in the tests: its files, for the registry seam test.

Like a real provider it brings an inbox and a task table, a receiver module with a
webhook route, and a sync handler; nothing generic is edited to plug it in.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Column, DateTime, ForeignKey, MetaData, String, Table, Text
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope

from crm_schema.tables import BigId, created_at_column, integrations, task_table
from crm_schema.task_queue import NewTask, TaskQueue
from crm_sync.fields import HttpUrl, Secret, setup_field
from crm_sync.registry import ProviderSpec, RatePolicy
from orchestration.core.sync_engine import StoreResult
from webhook_receiver.stores import InboxRow, InboxTable, IntegrationEntry
from webhook_receiver.webhooks import (
    NO_HEADERS,
    STORE_ERRORS,
    Answer,
    WebhookHandler,
    answer,
)

if TYPE_CHECKING:
    from webhook_receiver.app import Receiver

# Its own metadata, so the CRM schema the other tests compare stays untouched.
metadata = MetaData()
integrations.to_metadata(metadata)
demo_inbox = Table(
    "demo_inbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("integration_id", BigId, ForeignKey("integrations.id"), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("item_ids", Text, nullable=False),
    created_at_column(),
    Column("processed_at", DateTime(timezone=True)),
)
demo_tasks = task_table("demo_tasks", demo_inbox, metadata=metadata)
QUEUE = TaskQueue(demo_tasks)
INBOX = InboxTable(demo_inbox, ("integration_id", "kind", "item_ids", "created_at"))


class DemoSetup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_base_url: HttpUrl = setup_field(store="api_base_url", help="Demo API.")
    api_key: Secret = setup_field(store="credentials", secret=True, help="Demo key.")


class DemoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


SPEC = ProviderSpec(
    name="demo",
    title="Demo",
    setup=DemoSetup,
    settings=DemoSettings,
    webhook_paths=("/webhooks/demo/{webhook_key}",),
    rate_limits=(RatePolicy(rate=5, scope="account", account_field="api_key"),),
    modules={"receiver": __name__},
)


class DemoHandler(WebhookHandler):
    provider = "demo"

    async def handle(self, scope: Scope, receive: Receive) -> Answer:
        entry = await self.integration(scope["path_params"]["webhook_key"])
        if not isinstance(entry, IntegrationEntry):
            return entry
        body = await self.read_body(scope, receive)
        if isinstance(body, tuple):
            return body
        payload = orjson.loads(body)
        if not isinstance(payload, dict) or not isinstance(payload.get("ids"), list):
            return answer(422, "ids must be a list")
        values = (entry.id, "item", orjson.dumps(payload["ids"]).decode(), datetime.now(UTC))
        try:
            row_id = await self.store_row(InboxRow(INBOX, values, entry.id))
        except STORE_ERRORS as exc:
            return self.store_failed(exc)
        return 200, b'{"id":%d}' % row_id, NO_HEADERS


def routes(receiver: Receiver) -> list[BaseRoute]:
    endpoint = receiver.endpoint(lambda r: DemoHandler(r.config, r.cache, r.store, r.deadlines))
    return [Route("/webhooks/demo/{webhook_key}", endpoint, methods=["POST"])]


def tasks_for(row: Any) -> list[NewTask]:
    return [
        NewTask(row.integration_id, row.kind, "ITEM", orjson.loads(row.item_ids), row.id, "sync")
    ]


class DemoSyncHandler:
    handler = "sync"
    entities = ("item",)
    batch_size = 2

    def __init__(self) -> None:
        self.stored: dict[str, dict[str, Any]] = {}

    def fetch(self, client: Any, entity: str, ids: list[str]) -> list[dict[str, Any]]:
        return client(ids)

    def record_id(self, entity: str, record: dict[str, Any]) -> str | None:
        return str(record["id"])

    def store(self, conn: Any, integration_id: int, entity: str, records: list) -> StoreResult:
        for record, _owner in records:
            self.stored[str(record["id"])] = record
        return StoreResult(upserted=len(records))

    def take_webhooks(self, conn: Any) -> int:
        return QUEUE.ingest(conn, demo_inbox, tasks_for)[0]
