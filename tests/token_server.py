"""A small provider API for the client-seam tests: echo, 204, errors in 200, a login token
endpoint and an OAuth 2 endpoint with single-use refresh tokens."""

from __future__ import annotations

import itertools
import threading
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

LOGIN = "api-login-secret-0123456789"
CLIENT_SECRET = "client-secret-0123456789"


class TokenServer:
    """State of the test API (counters are what the tests assert on)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counter = itertools.count(1)
        self.login_calls = 0
        self.refresh_calls = 0
        self.valid_access: set[str] = set()
        self.valid_refresh: set[str] = set()
        self.refuse_refresh = False
        self.envelope_errors: list[str] = []
        self.app = Starlette(
            routes=[
                Route("/echo", self.echo, methods=["GET", "POST"]),
                Route("/nothing", self.nothing, methods=["POST", "DELETE"]),
                Route("/empty", self.empty, methods=["GET"]),
                Route("/envelope", self.envelope, methods=["GET"]),
                Route("/login", self.login, methods=["POST"]),
                Route("/oauth/token", self.oauth, methods=["POST"]),
                Route("/api", self.api, methods=["GET"]),
            ]
        )

    def issue_pair(self) -> dict[str, Any]:
        """A new access / refresh pair (the refresh token works once)."""
        with self.lock:
            n = next(self.counter)
            access, refresh = f"access-{n:04d}-abcdefgh", f"refresh-{n:04d}-abcdefgh"
            self.valid_access.add(access)
            self.valid_refresh.add(refresh)
        return {"access_token": access, "refresh_token": refresh, "expires_in": 3600}

    async def echo(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode())) if request.method == "POST" else {}
        return JSONResponse(
            {
                "query": dict(request.query_params),
                "form": form,
                "content_type": request.headers.get("content-type"),
                "x_req": request.headers.get("x-req"),
            }
        )

    async def nothing(self, _request: Request) -> Response:
        return Response(status_code=204)

    async def empty(self, _request: Request) -> Response:
        return Response(b"", status_code=200, media_type="application/json")

    async def envelope(self, _request: Request) -> Response:
        if self.envelope_errors:
            return JSONResponse({"error": "failed", "code": self.envelope_errors.pop(0)})
        return JSONResponse({"result": {"ok": True}})

    async def login(self, request: Request) -> Response:
        body = await request.json()
        if body.get("apiLogin") != LOGIN:
            return JSONResponse({"errorDescription": "bad login"}, status_code=401)
        with self.lock:
            self.login_calls += 1
        pair = self.issue_pair()
        return JSONResponse({"token": pair["access_token"]})

    async def oauth(self, request: Request) -> Response:
        body = await request.json()
        with self.lock:
            self.refresh_calls += 1
            token = body.get("refresh_token")
            if self.refuse_refresh or token not in self.valid_refresh:
                return JSONResponse({"hint": "Token has been revoked"}, status_code=400)
            self.valid_refresh.discard(token)  # single use
        return JSONResponse(self.issue_pair())

    async def api(self, request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or token not in self.valid_access:
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        return JSONResponse({"token": token})
