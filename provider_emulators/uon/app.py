"""U-ON.Travel API emulator: the key in the path, even/odd clients, pages of 100, quota.

Every call is ``{base}/{api_key}/{endpoint}.json``; GET reads, POST writes (a form, or a
JSON object). Every answer carries ``"result"`` equal to its HTTP status.

- ``GET user/phone/{digits}.json`` → ``{"users": [...]}``: a number whose last digit is
  even is a known client (``u_id`` = its digits, name, manager and e-mail fixed by a
  hash of them), an odd one is not (404 ``{"result": 404, "message"}``: U-ON answers an
  empty search with 404).
- ``GET user/{id}.json`` → ``{"user": [...]}`` for an even id, else 404.
- ``POST user/create.json`` → ``{"id"}``; ``POST lead/create.json`` (``source``,
  ``u_id``, ``u_name``, ``u_phone``, ``manager_id``, ``note``) → ``{"id": int}``;
  ``GET lead/{id}.json`` → ``{"lead": [...]}``.
- ``GET request/{id}.json`` → ``{"request": [...]}`` (even ids, or seeded);
  ``GET requests/{from}/{to}/{page}.json`` → ``{"requests": [≤ 100]}`` of the seeded
  requests created (``dat``) in the range; a page past the end → 404.
- ``POST notification/create.json`` (``text``, ``manager_id``); ``GET countries.json``.
- Unknown key → 403; over ``quota`` requests per second per key → 429 with no
  ``Retry-After`` (forced 429s have none either); framework faults as everywhere.

The request log shows paths without the key (``/user/phone/…``), so the key is never in
it. Admin (besides ``/_admin/health|requests|faults``): ``/_admin/users`` (GET created
or changed clients; POST a client), ``/_admin/users/{id}`` (GET, PATCH, DELETE),
``GET /_admin/leads``, ``/_admin/uon-requests`` (GET; POST a JSON list; DELETE),
``/_admin/notifications`` (GET, DELETE), ``DELETE /_admin/state`` (forget everything),
``DELETE /_admin/quota``. With a PBX (``pbx`` app) everything under ``/pbx`` is the
PBX stand-in (:mod:`provider_emulators.uon.pbx`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import date
from typing import Any
from urllib.parse import parse_qsl

import orjson
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from provider_emulators.framework import (
    ADMIN_PREFIX,
    ProviderProfile,
    admin_error,
    build_app,
    json_response,
)
from provider_emulators.uon.payloads import NotificationIn, RequestIn, UserIn
from provider_emulators.uon.state import DEFAULT_API_KEY, DEFAULT_QUOTA, Agency

KEY_SCOPE = "uon.api_key"  # where the key taken out of the path travels in the ASGI scope
PBX_PREFIX = "/pbx"


class UonError(Exception):
    """An API error: HTTP ``status`` with ``{"result": status, "message": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> Response:
    """U-ON's error envelope."""
    return json_response({"result": status, "message": message}, status)


def ok(data: dict[str, Any] | None = None) -> Response:
    return json_response({**(data or {}), "result": 200})


def _quota_key(scope: Scope) -> str:
    return "key:" + str(scope.get(KEY_SCOPE, ""))


PROFILE = ProviderProfile(
    name="uon",
    quota_rejection=lambda: error_response(429, "Too many requests per second for this API key"),
    # U-ON never sends Retry-After, so a forced 429 has none either.
    forced_429=lambda _retry_after: error_response(429, "Too many requests"),
    server_error=lambda status: error_response(status, "Internal server error"),
    quota_key=_quota_key,
)


# ---- request plumbing -----------------------------------------------------------------


def _agency(request: Request) -> Agency:
    return request.app.state.agency


def _check_key(request: Request) -> None:
    if request.scope.get(KEY_SCOPE) not in request.app.state.api_keys:
        raise UonError(403, "Invalid API key")


async def _fields(request: Request) -> dict[str, Any]:
    """Query parameters plus the body: a form, or a JSON object (the seed posts JSON)."""
    fields: dict[str, Any] = dict(request.query_params)
    body = await request.body()
    if not body.strip():
        return fields
    content_type = request.headers.get("content-type", "")
    if "json" in content_type or body.lstrip().startswith(b"{"):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UonError(400, "The body is not valid JSON") from None
        if not isinstance(data, dict):
            raise UonError(400, "The body must be a JSON object")
        return fields | data
    try:
        return fields | dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        raise UonError(400, "Cannot parse the form body") from None


def _param(request: Request, name: str) -> str:
    return str(request.path_params[name])


def _api(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Key check and U-ON's error envelope around an API handler."""

    async def wrapped(request: Request) -> Response:
        try:
            _check_key(request)
            return await handler(request)
        except UonError as exc:
            return error_response(exc.status, exc.message)
        except ValidationError as exc:
            problem = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(p) for p in problem["loc"])
            return error_response(400, f"{where}: {problem['msg']}")

    return wrapped


def _not_found(what: str) -> UonError:
    return UonError(404, f"{what} not found")


# ---- API ------------------------------------------------------------------------------


async def _user_by_phone(request: Request) -> Response:
    users = _agency(request).users_by_phone(_param(request, "phone"))
    if not users:
        raise _not_found("Client")
    return ok({"users": users})


async def _user(request: Request) -> Response:
    user = _agency(request).user(_param(request, "user_id"))
    if user is None:
        raise _not_found("Client")
    return ok({"user": [user]})


async def _user_create(request: Request) -> Response:
    return ok({"id": _agency(request).create_user(await _fields(request))})


async def _lead_create(request: Request) -> Response:
    fields = await _fields(request)
    if not str(fields.get("source") or fields.get("note") or "").strip():
        raise UonError(400, "source or note is required")
    return ok({"id": _agency(request).create_lead(fields)})


async def _lead(request: Request) -> Response:
    lead = _agency(request).lead(_param(request, "lead_id"))
    if lead is None:
        raise _not_found("Lead")
    return ok({"lead": [lead]})


async def _request(request: Request) -> Response:
    item = _agency(request).request(_param(request, "request_id"))
    if item is None:
        raise _not_found("Request")
    return ok({"request": [item]})


def _day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UonError(400, f"{name} must be a date YYYY-MM-DD") from None


async def _requests(request: Request) -> Response:
    first = _day(_param(request, "date_from"), "date_from")
    last = _day(_param(request, "date_to"), "date_to")
    page_raw = _param(request, "page")
    if not page_raw.isdigit() or int(page_raw) < 1:
        raise UonError(400, "page must be a positive integer")
    items = _agency(request).requests_page(first, last, int(page_raw))
    if not items:  # U-ON answers an empty page (or one past the end) with 404
        raise _not_found("Requests")
    return ok({"requests": items})


async def _notification_create(request: Request) -> Response:
    note = NotificationIn.model_validate(await _fields(request))
    _agency(request).notify(note.text, note.manager_id)
    return ok()


COUNTRIES = [
    {"id": 1, "name": "Беларусь", "name_en": "Belarus"},
    {"id": 2, "name": "Россия", "name_en": "Russia"},
    {"id": 3, "name": "Турция", "name_en": "Turkey"},
    {"id": 4, "name": "Египет", "name_en": "Egypt"},
]


async def _countries(_request: Request) -> Response:
    return ok({"countries": COUNTRIES})


async def _unknown(_request: Request) -> Response:
    raise UonError(404, "Unknown method")


def api_routes() -> list[Route]:
    """The U-ON endpoints, as seen once the key is out of the path."""
    get, post = ["GET"], ["POST"]
    table: list[tuple[str, Callable[[Request], Awaitable[Response]], list[str]]] = [
        ("/user/phone/{phone}.json", _user_by_phone, get),
        ("/user/create.json", _user_create, post),
        ("/user/{user_id}.json", _user, get),
        ("/lead/create.json", _lead_create, post),
        ("/lead/{lead_id}.json", _lead, get),
        ("/request/{request_id}.json", _request, get),
        ("/requests/{date_from}/{date_to}/{page}.json", _requests, get),
        ("/notification/create.json", _notification_create, post),
        ("/countries.json", _countries, get),
        ("/{rest:path}", _unknown, ["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]
    return [Route(path, _api(fn), methods=methods) for path, fn, methods in table]


# ---- admin ----------------------------------------------------------------------------


def _admin(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ValidationError as exc:
            return admin_error(repr(exc.errors(include_url=False, include_input=False)))
        except (ValueError, orjson.JSONDecodeError) as exc:
            return admin_error(str(exc))

    return wrapped


async def _parse(request: Request, model: type[BaseModel]) -> Any:
    return model.model_validate(orjson.loads(await request.body() or b"{}"))


async def _admin_users(request: Request) -> Response:
    agency = _agency(request)
    if request.method == "POST":
        user: UserIn = await _parse(request, UserIn)
        return json_response(agency.put_user(user.model_dump(exclude_none=True)), 201)
    return json_response(agency.changed_users())


async def _admin_user(request: Request) -> Response:
    agency, user_id = _agency(request), _param(request, "user_id")
    if request.method == "DELETE":
        return json_response({"deleted": agency.delete_user(user_id)})
    if request.method == "PATCH":
        changes: UserIn = await _parse(request, UserIn)
        user = agency.patch_user(user_id, changes.model_dump(exclude_none=True))
    else:
        user = agency.user(user_id)
    return json_response(user) if user is not None else admin_error("no such client", 404)


async def _admin_leads(request: Request) -> Response:
    return json_response(_agency(request).all_leads())


async def _admin_requests(request: Request) -> Response:
    agency = _agency(request)
    if request.method == "POST":
        data = orjson.loads(await request.body() or b"[]")
        items = [RequestIn.model_validate(i) for i in (data if isinstance(data, list) else [data])]
        return json_response({"ids": agency.seed_requests(i.model_dump() for i in items)}, 201)
    if request.method == "DELETE":
        agency.clear_requests()
        return json_response({"cleared": True})
    return json_response(agency.all_requests())


async def _admin_notifications(request: Request) -> Response:
    agency = _agency(request)
    if request.method == "DELETE":
        agency.clear_notifications()
        return json_response({"cleared": True})
    return json_response(agency.all_notifications())


async def _admin_state(request: Request) -> Response:
    _agency(request).reset()
    return json_response({"reset": True})


async def _admin_quota(request: Request) -> Response:
    quota = request.app.state.emulator.quota
    if quota is not None:
        quota.reset()
    return json_response({"reset": quota is not None})


def admin_routes() -> list[Route]:
    a = ADMIN_PREFIX
    return [
        Route(f"{a}/users", _admin(_admin_users), methods=["GET", "POST"]),
        Route(f"{a}/users/{{user_id}}", _admin(_admin_user), methods=["GET", "PATCH", "DELETE"]),
        Route(f"{a}/leads", _admin_leads, methods=["GET"]),
        Route(f"{a}/uon-requests", _admin(_admin_requests), methods=["GET", "POST", "DELETE"]),
        Route(f"{a}/notifications", _admin_notifications, methods=["GET", "DELETE"]),
        Route(f"{a}/state", _admin_state, methods=["DELETE"]),
        Route(f"{a}/quota", _admin_quota, methods=["DELETE"]),
    ]


# ---- the key in the path, the PBX under /pbx ---------------------------------------------


class KeyInPath:
    """Takes the API key out of ``/{key}/{endpoint}`` (into the scope) before the
    framework sees the path, and sends ``/pbx…`` to the PBX app when there is one."""

    def __init__(self, api: Starlette, pbx: ASGIApp | None = None) -> None:
        self.api = api
        self.pbx = pbx
        self.state = api.state  # tests and admins reach the emulator's state here

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        path: str = scope["path"]
        if self.pbx is not None and (path == PBX_PREFIX or path.startswith(PBX_PREFIX + "/")):
            await self.pbx(_moved(scope, path[len(PBX_PREFIX) :] or "/", PBX_PREFIX), receive, send)
            return
        if path.startswith(ADMIN_PREFIX):
            await self.api(scope, receive, send)
            return
        key, _, rest = path.lstrip("/").partition("/")
        inner = _moved(scope, "/" + rest, "")
        inner[KEY_SCOPE] = key
        await self.api(inner, receive, send)


def _moved(scope: Scope, path: str, prefix: str) -> Scope:
    return {
        **scope,
        "path": path,
        "raw_path": path.encode(),
        "root_path": scope.get("root_path", "") + prefix,
    }


def create_app(
    api_keys: Iterable[str] = (DEFAULT_API_KEY,),
    *,
    quota: int | None = DEFAULT_QUOTA,
    seed: int = 0,
    pbx: ASGIApp | None = None,
) -> KeyInPath:
    """The U-ON API emulator (an ASGI app); ``pbx`` is served under ``/pbx`` when given.

    ``app.state.agency`` is the :class:`Agency`, ``app.state.emulator`` the framework's
    state (quota ``quota`` per second per key; None or 0: none).
    """
    keys = set(api_keys)
    if not keys or any(not isinstance(k, str) or not k or "/" in k for k in keys):
        raise ValueError("API keys must be non-empty strings without '/'")
    api = build_app(
        PROFILE,
        api_routes(),
        extra_admin_routes=admin_routes(),
        quota_per_second=quota or None,
        seed=seed,
    )
    api.state.agency = Agency()
    api.state.api_keys = keys
    return KeyInPath(api, pbx)


__all__ = ["KEY_SCOPE", "PROFILE", "KeyInPath", "UonError", "create_app", "error_response"]
