"""The telephony system's call events: `POST /webhooks/telephony/{webhook_key}`.

The body is one event or a JSON array of them (`TelephonyEvent`: `event` start | dial |
bridge | hangup, `call_id`, `direction`, `phone`, optional `extension`, `timestamp`,
`duration`, `status`; other keys kept). Each event becomes one `uon_inbox` row (`source`
telephony, `event`, `external_id` the call id, `phone` in E.164 where it parses, read in
the integration's `default_region`; `payload` the event as sent under `raw` beside the
normalised fields), all committed in one group commit before the 200
`{"status": "OK", "ids"}`. One invalid event refuses the whole body (422 naming each
problem by index) and nothing is written. The enrichment happens later, in batches.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope

from crm_schema.providers.uon import uon_inbox
from crm_sync.providers.uon import SPEC
from webhook_receiver.openapi import Operation
from webhook_receiver.providers.uon.database import UonDatabase, shared
from webhook_receiver.providers.uon.payloads import (
    MAX_PROBLEMS,
    Problems,
    Stored,
    TelephonyBody,
    TelephonyEvent,
    problems_of,
)
from webhook_receiver.responses import describe_json, error_body
from webhook_receiver.stores import InboxRow, InboxTable, IntegrationEntry, StoreUnavailable
from webhook_receiver.webhooks import NO_HEADERS, Answer, WebhookHandler, answer

if TYPE_CHECKING:
    from webhook_receiver.app import Receiver
    from webhook_receiver.config import ReceiverConfig
    from webhook_receiver.integration_cache import IntegrationCache
    from webhook_receiver.stores import WebhookStore
    from webhook_receiver.webhooks import Deadlines

PROVIDER = SPEC.name
SOURCE = "telephony"
KEY_PATH = "/webhooks/telephony/{webhook_key}"
INBOX = InboxTable(
    uon_inbox,
    ("integration_id", "source", "event", "external_id", "phone", "payload", "received_at"),
)


def parse_events(payload: Any) -> list[tuple[TelephonyEvent, dict[str, Any]]] | Problems:
    """The events of a parsed body with each one as sent, or every problem found."""
    if isinstance(payload, dict):
        items, single = [payload], True
    elif isinstance(payload, list):
        items, single = payload, False
    else:
        error = f"must be an event object or an array of them, not {describe_json(payload)}"
        return [{"field": "body", "error": error}]
    events: list[tuple[TelephonyEvent, dict[str, Any]]] = []
    problems: Problems = []
    for index, item in enumerate(items):
        prefix = "" if single else f"[{index}]"
        if not isinstance(item, dict):
            error = f"must be an event object, not {describe_json(item)}"
            problems.append({"field": prefix or "body", "error": error})
        else:
            try:
                events.append((TelephonyEvent.model_validate(item), item))
            except ValidationError as exc:
                problems.extend(problems_of(exc, prefix))
        if len(problems) >= MAX_PROBLEMS:
            break
    return problems[:MAX_PROBLEMS] if problems else events


class TelephonyHandler(WebhookHandler):
    """`POST /webhooks/telephony/{webhook_key}`: one row per event, one group commit."""

    provider = PROVIDER

    def __init__(
        self,
        config: ReceiverConfig,
        cache: IntegrationCache,
        store: WebhookStore,
        deadlines: Deadlines | None = None,
        *,
        db: UonDatabase,
    ) -> None:
        super().__init__(config, cache, store, deadlines)
        self.db = db

    async def handle(self, scope: Scope, receive: Receive) -> Answer:
        """(status, JSON body, extra headers) for one batch of call events."""
        received_at = datetime.now(UTC)
        key = scope["path_params"]["webhook_key"]
        entry = self.cached_integration(key) or await self.integration(key)
        if not isinstance(entry, IntegrationEntry):
            return entry
        body = await self.read_body(scope, receive)
        if isinstance(body, tuple):
            return body
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return answer(400, "body is not valid JSON")
        events = parse_events(payload)
        if events and isinstance(events[0], dict):
            problems: Problems = events  # type: ignore[assignment]
            names = ", ".join(dict.fromkeys(p["field"] for p in problems[:10]))
            return 422, error_body(f"invalid call events: {names}", problems), NO_HEADERS
        try:
            account = await self.db.account(entry.id)
        except StoreUnavailable:
            return self.unavailable()
        if account is None:
            return answer(404, "no active integration for this webhook URL")
        rows = []
        for index, (event, item) in enumerate(events):  # type: ignore[misc]
            fields = event.normalised(account.region)
            try:
                text = orjson.dumps({"raw": item, **fields}).decode()
            except orjson.JSONEncodeError:
                return answer(422, f"event [{index}] is nested too deeply to store")
            values = (
                entry.id,
                SOURCE,
                event.event,
                event.call_id,
                fields["e164"] or event.phone,
                text,
                received_at,
            )
            rows.append(InboxRow(INBOX, values, entry.id))
        ids = await self.store_rows(rows)
        if isinstance(ids, tuple):
            return ids
        return 200, b'{"status":"OK","ids":%s}' % orjson.dumps(ids), NO_HEADERS


TELEPHONY_OPERATIONS = (
    Operation(
        path=KEY_PATH,
        method="post",
        summary="Call events from the telephony system",
        description="One call event or a JSON array of them. One `uon_inbox` row per "
        'event, all committed before the 200 `{"status": "OK", "ids"}`; an empty array '
        "stores nothing. Enriched from U-ON later, in batches (one lookup per number).",
        body=TelephonyBody,
        ok=Stored,
        errors={
            400: "Not JSON (or an invalid Content-Length).",
            404: "Unknown or disabled webhook key.",
            413: "Body over the size limit.",
            415: "A Content-Type that is not JSON.",
            422: "Events of the wrong shape, each problem named (by index); nothing stored.",
            503: "The database could not commit in time; retry after Retry-After.",
        },
        path_params={"webhook_key": "The U-ON integration's webhook key."},
        tags=(PROVIDER, SOURCE),
    ),
)


def _factory(db: UonDatabase) -> Callable[[Receiver], TelephonyHandler]:
    return lambda r: TelephonyHandler(r.config, r.cache, r.store, r.deadlines, db=db)


def telephony_routes(receiver: Receiver) -> list[BaseRoute]:
    """The call event route."""
    endpoint = receiver.endpoint(_factory(shared(receiver)))
    return [Route(KEY_PATH, endpoint, methods=["POST"])]
