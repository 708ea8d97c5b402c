"""`GET /openapi.json`: the receiver's contract, generated from the payload models the
handlers validate with — what it documents is what the receiver accepts."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from crm_schema.providers.allio import allio_webhook
from tests.receiver_fixtures import add_allio, serve_receiver
from webhook_receiver.providers.allio import AllioWebhookPayload

PATH = "/webhooks/allio/{webhook_key}"


def test_openapi_documents_every_route_from_the_models(database_url: str, engine) -> None:
    integration = add_allio(engine)
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        resp = client.get("/openapi.json")
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("application/json")
        doc = resp.json()
        assert doc["openapi"].startswith("3.1")
        assert {"/healthz", PATH, "/webhooks/iiko/{webhook_key}", "/api/v1/webhooks/iiko"} <= set(
            doc["paths"]
        )
        post = doc["paths"][PATH]["post"]
        body_ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        schema = doc["components"]["schemas"][body_ref.rsplit("/", 1)[1]]
        assert schema == AllioWebhookPayload.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        assert sorted(schema["required"]) == ["command", "indexes", "uuid"]
        assert schema["properties"]["command"]["pattern"] == "^[A-Z][A-Z_]{0,63}$"
        for status in ("200", "400", "403", "404", "413", "415", "422", "503"):
            assert status in post["responses"], status
        assert post["parameters"][0]["name"] == "webhook_key"

        # Each example the document gives for `indexes` is accepted as documented.
        url = PATH.format(webhook_key=integration.webhook_key)
        for example in schema["properties"]["indexes"]["examples"]:
            payload = {"uuid": integration.integration_uuid, "command": "RESERVE_ADD"}
            answer = client.post(url, json=payload | {"indexes": example})
            assert answer.status_code == 200, answer.text
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(allio_webhook)).scalar_one() == 2
