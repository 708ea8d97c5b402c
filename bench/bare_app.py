"""The bare baseline for bench/receiver.py: Starlette that parses the same JSON and
answers 200, with no validation and no database."""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def webhook(request: Request) -> Response:
    orjson.loads(await request.body())
    return Response(b'{"status":"ok"}', media_type="application/json")


async def healthz(_request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


app = Starlette(
    routes=[
        Route("/healthz", healthz, methods=["GET"]),
        Route("/webhooks/allio/{webhook_key}", webhook, methods=["POST"]),
        Route("/webhooks/iiko/{webhook_key}", webhook, methods=["POST"]),
    ]
)
