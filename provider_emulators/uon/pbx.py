"""The PBX stand-in: originates the click-to-call U-ON asks for, and remembers it.

``GET /api/makecallexternal?code=<extension>&phone=<number>&clientId=<secret>`` → 200
``{"ok": true, "call_id"}`` (POST with the same query is accepted too). ``code`` must
be digits and ``phone`` hold 5–15 digits (else 400 ``{"ok": false, "error"}``); when
the PBX has a client id, another ``clientId`` gets 403. Accepted calls are listed at
``GET /_admin/calls`` (never with the client id; ``DELETE`` forgets them); the
framework's ``/_admin/requests`` and ``/_admin/faults`` (500s, latency, drops) work as
for every emulator.
"""

from __future__ import annotations

import hmac
import itertools
import re
import threading
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from provider_emulators.framework import ADMIN_PREFIX, ProviderProfile, build_app, json_response

DEFAULT_PORT = 8095
_DIGITS = re.compile(r"^[0-9]{1,16}$")
_NOT_DIGITS = re.compile(r"\D")


def pbx_error(status: int, message: str) -> Response:
    return json_response({"ok": False, "error": message}, status)


PROFILE = ProviderProfile(
    name="pbx",
    quota_rejection=lambda: pbx_error(429, "too many calls"),
    forced_429=lambda _retry_after: pbx_error(429, "too many calls"),
    server_error=lambda status: pbx_error(status, "PBX error"),
)


class CallBook:
    """The calls the PBX originated (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def add(self, code: str, phone: str) -> dict[str, Any]:
        digits = _NOT_DIGITS.sub("", phone)
        with self._lock:
            call = {
                "call_id": f"pbx-{next(self._ids)}",
                "code": code,
                "phone": phone,
                # "+" arrives as a space when the caller did not URL-encode it.
                "e164": "+" + digits,
                "time": time.time(),
            }
            self._calls.append(call)
            return dict(call)

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self._calls]

    def clear(self) -> int:
        with self._lock:
            n = len(self._calls)
            self._calls.clear()
            return n


async def _originate(request: Request) -> Response:
    params = request.query_params
    expected: str | None = request.app.state.client_id
    given = params.get("clientId", "")
    if expected is not None and not hmac.compare_digest(given.encode(), expected.encode()):
        return pbx_error(403, "wrong clientId")
    code = params.get("code", "").strip()
    phone = params.get("phone", "").strip()
    if not _DIGITS.match(code):
        return pbx_error(400, "code must be the extension's digits")
    if not 5 <= len(_NOT_DIGITS.sub("", phone)) <= 15:
        return pbx_error(400, "phone must be a phone number")
    call = request.app.state.calls.add(code, phone)
    return json_response({"ok": True, "call_id": call["call_id"]})


async def _admin_calls(request: Request) -> Response:
    calls: CallBook = request.app.state.calls
    if request.method == "DELETE":
        return json_response({"cleared": calls.clear()})
    return json_response(calls.all())


def create_pbx_app(client_id: str | None = None, *, seed: int = 0) -> Starlette:
    """The PBX stand-in; ``client_id`` (when set) is the only accepted ``clientId``.

    ``app.state.calls`` is the :class:`CallBook`.
    """
    if client_id is not None and not client_id:
        raise ValueError("the PBX client id must not be empty")
    app = build_app(
        PROFILE,
        [Route("/api/makecallexternal", _originate, methods=["GET", "POST"])],
        extra_admin_routes=[
            Route(f"{ADMIN_PREFIX}/calls", _admin_calls, methods=["GET", "DELETE"])
        ],
        seed=seed,
    )
    app.state.client_id = client_id
    app.state.calls = CallBook()
    return app


__all__ = ["DEFAULT_PORT", "PROFILE", "CallBook", "create_pbx_app", "pbx_error"]
