"""Unisender API emulator: getLists, createList, importContacts, subscribe, both quotas.

Every call is ``POST /{method}?format=json&api_key=KEY`` with a form-encoded body
(``GET`` with the same parameters in the query is accepted too; ``api_key`` may also
be in the body, but the per-key quota only sees the query). Answers are HTTP 200 with
``{"result": ...}`` or ``{"error": message, "code": code}``:

- ``invalid_api_key`` (missing or unknown key), ``access_denied`` (a key configured as
  denied), ``unknown_method``, ``invalid_arg`` (bad parameters, unknown list ids, more
  than 500 rows), ``retry_later`` (the admin switch, ``PUT /_admin/config``).
- ``getLists`` → ``[{"id", "title"}]``; ``createList`` (``title``) → ``{"id"}``.
- ``importContacts``: ``field_names[i]`` (one must be ``email``; ``email_list_ids``
  holds comma-separated list ids the contact is added to, ``delete`` = 1 removes it
  from those lists — from every list without ``email_list_ids`` —, other names are
  fields such as ``Name``), ``data[r][c]`` (at most 500 rows), ``overwrite_lists=1``
  replaces memberships. Result ``{"total", "inserted", "updated", "deleted",
  "new_emails", "invalid", "log": [{"index", "code", "message"}]}``; a row with an
  empty or malformed e-mail is counted in ``invalid`` and named in ``log``
  (code ``invalid_email``).
- ``subscribe``: ``list_ids`` (comma-separated), ``fields[email]``, ``fields[Name]`` …
  → ``{"person_id"}``.

Quota: ``quota_per_minute`` calls per API key AND ``ip_quota_per_minute`` per source IP
in any ``quota_window`` (60 s); over either → HTTP 200 ``{"error", "code":
"api_call_limit_exceeded_for_api_key" | "api_call_limit_exceeded_for_ip"}``. The
request log never holds the key (only the framework's hash of the quota key).

Admin (besides the framework's ``/_admin/health|requests|faults``): ``/_admin/lists``
(GET with contact counts; PUT ``{"lists": [id | {"id", "title"}]}`` replaces them),
``GET /_admin/lists/{id}/contacts``, ``/_admin/contacts`` (GET all, DELETE all),
``/_admin/keys`` (GET masked; PUT ``{"api_keys": [...], "denied": [...]}``),
``/_admin/config`` (GET; PUT ``{"retry_later": N calls, "retry_later_seconds": s}``)
and ``DELETE /_admin/quota`` (empty both quota windows).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope

from provider_emulators.framework import (
    ADMIN_PREFIX,
    ProviderProfile,
    admin_error,
    build_app,
    json_response,
    source_ip,
)
from provider_emulators.unisender.state import (
    CURRENT_IP,
    DEFAULT_API_KEY,
    DEFAULT_LISTS,
    DEFAULT_QUOTA_PER_MINUTE,
    IMPORT_LIMIT,
    REFUSAL,
    Account,
    DualQuota,
    UnisenderError,
)

METHODS = ("getLists", "createList", "importContacts", "subscribe")
MAX_FORM_FIELDS = 100_000
_FIELD_NAME = re.compile(r"^field_names\[(\d+)\]$")
_DATA = re.compile(r"^data\[(\d+)\]\[(\d+)\]$")
_FIELDS = re.compile(r"^fields\[([^\]]+)\]$")


def error_response(code: str, message: str, status: int = 200) -> Response:
    """Unisender's error envelope (HTTP 200 unless ``status`` says otherwise)."""
    return json_response({"error": message, "code": code}, status)


def _quota_rejection() -> Response:
    if REFUSAL.get() == "ip":
        return error_response(
            "api_call_limit_exceeded_for_ip", "API call limit exceeded for this IP address"
        )
    return error_response(
        "api_call_limit_exceeded_for_api_key", "API call limit exceeded for this API key"
    )


def _quota_key(scope: Scope) -> str:
    """The per-key budget is keyed by the query's ``api_key``; the IP goes to the quota."""
    CURRENT_IP.set(source_ip(scope))
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "api_key":
            return "key:" + value
    return "key:"


def _ids_from_body(body: bytes) -> list[Any] | None:
    """The list ids a call names (``list_ids``, the ``email_list_ids`` column); never
    e-mails or keys."""
    pairs = parse_qsl(body.decode("utf-8", "replace"), max_num_fields=MAX_FORM_FIELDS)
    column = next(
        (m.group(1) for k, v in pairs if (m := _FIELD_NAME.match(k)) and v == "email_list_ids"),
        None,
    )
    ids: set[int] = set()
    for name, value in pairs:
        m = _DATA.match(name)
        if name == "list_ids" or (m is not None and m.group(2) == column):
            ids.update(int(p) for p in value.split(",") if p.strip().isdigit())
    return sorted(ids) or None


PROFILE = ProviderProfile(
    name="unisender",
    quota_rejection=_quota_rejection,
    forced_429=lambda retry_after: Response(
        b"Too Many Requests",
        429,
        {"Retry-After": retry_after} if retry_after is not None else None,
        media_type="text/plain",
    ),
    server_error=lambda status: error_response(
        "unknown_error", "Internal server error, try again later", status
    ),
    ids_from_body=_ids_from_body,
    quota_key=_quota_key,
)


# ---- API ------------------------------------------------------------------------------


def _account(request: Request) -> Account:
    return request.app.state.account


async def _params(request: Request) -> list[tuple[str, str]]:
    """Query plus form body (url-encoded) parameters, in order."""
    params = list(request.query_params.multi_items())
    body = await request.body()
    if body:
        content_type = request.headers.get("content-type", "")
        if "multipart/" in content_type:
            raise UnisenderError("invalid_arg", "multipart bodies are not supported")
        try:
            params += parse_qsl(
                body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
            )
        except (UnicodeDecodeError, ValueError) as exc:
            raise UnisenderError("invalid_arg", f"Cannot parse the request body: {exc}") from None
    return params


def _get_lists(account: Account, params: dict[str, str], _raw: list[tuple[str, str]]) -> Any:
    return account.get_lists()


def _create_list(account: Account, params: dict[str, str], _raw: list[tuple[str, str]]) -> Any:
    return {"id": account.create_list(params.get("title", "").strip())}


def _import_contacts(account: Account, params: dict[str, str], raw: list[tuple[str, str]]) -> Any:
    names: dict[int, str] = {}
    cells: dict[int, dict[int, str]] = {}
    for name, value in raw:
        if m := _FIELD_NAME.match(name):
            names[int(m.group(1))] = value.strip()
        elif m := _DATA.match(name):
            cells.setdefault(int(m.group(1)), {})[int(m.group(2))] = value
    if not names:
        raise UnisenderError("invalid_arg", "field_names is required")
    if sorted(names) != list(range(len(names))):
        raise UnisenderError("invalid_arg", "field_names indices must be 0..n-1")
    field_names = [names[i] for i in range(len(names))]
    lowered = [n.lower() for n in field_names]
    if any(not n for n in field_names) or len(set(lowered)) != len(lowered):
        raise UnisenderError("invalid_arg", "field_names must be non-empty and unique")
    if "email" not in lowered:
        raise UnisenderError("invalid_arg", "field_names must include email")
    if not cells:
        raise UnisenderError("invalid_arg", "data is required")
    if len(cells) > IMPORT_LIMIT:
        raise UnisenderError(
            "invalid_arg", f"Too many rows: {len(cells)}, at most {IMPORT_LIMIT} per call"
        )
    rows: list[list[str]] = []
    for r in sorted(cells):
        row = cells[r]
        if max(row) >= len(field_names):
            raise UnisenderError("invalid_arg", f"data[{r}] has more columns than field_names")
        rows.append([row.get(c, "") for c in range(len(field_names))])
    overwrite = params.get("overwrite_lists", "0").strip() == "1"
    return account.import_contacts(field_names, rows, overwrite).as_dict()


def _subscribe(account: Account, params: dict[str, str], raw: list[tuple[str, str]]) -> Any:
    list_ids = account.list_ids(params.get("list_ids", ""), "list_ids")
    if not list_ids:
        raise UnisenderError("invalid_arg", "list_ids is required")
    fields = {m.group(1): v for k, v in raw if (m := _FIELDS.match(k))}
    fields = {("email" if k.lower() == "email" else k): v for k, v in fields.items()}
    return {"person_id": account.subscribe(list_ids, fields)}


Handler = Callable[[Account, dict[str, str], list[tuple[str, str]]], Any]
HANDLERS: dict[str, Handler] = {
    "getLists": _get_lists,
    "createList": _create_list,
    "importContacts": _import_contacts,
    "subscribe": _subscribe,
}


async def _call(request: Request) -> Response:
    account = _account(request)
    try:
        raw = await _params(request)
        params = dict(raw)
        if account.take_retry_later():
            raise UnisenderError("retry_later", "Service temporarily unavailable, retry later")
        fmt = params.get("format", "json")
        if fmt != "json":
            raise UnisenderError("invalid_arg", "format must be json")
        account.check_key(params.get("api_key"))
        method = request.path_params["method"]
        handler = HANDLERS.get(method)
        if handler is None:
            raise UnisenderError("unknown_method", f"Unknown method: {method}")
        return json_response({"result": handler(account, params, raw)})
    except UnisenderError as exc:
        return error_response(exc.code, exc.message)


# ---- admin ----------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListsChange(_Strict):
    lists: list[int | dict[str, Any]]


class KeysChange(_Strict):
    api_keys: list[str] | None = None
    denied: list[str] | None = None


class ConfigChange(_Strict):
    retry_later: int | None = Field(default=None, ge=0)
    retry_later_seconds: float | None = Field(default=None, ge=0)


def _admin(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ValidationError as exc:
            return admin_error(exc.errors(include_url=False, include_input=False).__repr__())
        except (ValueError, orjson.JSONDecodeError) as exc:
            return admin_error(str(exc))

    return wrapped


def _parse(model: type[BaseModel], body: bytes) -> Any:
    return model.model_validate(orjson.loads(body or b"{}"))


async def _admin_lists(request: Request) -> Response:
    account = _account(request)
    if request.method == "PUT":
        change: ListsChange = _parse(ListsChange, await request.body())
        account.set_lists(change.lists)
    return json_response(account.lists_snapshot())


async def _admin_list_contacts(request: Request) -> Response:
    contacts = _account(request).list_contacts(request.path_params["list_id"])
    if contacts is None:
        return admin_error("no such list", 404)
    return json_response(contacts)


async def _admin_contacts(request: Request) -> Response:
    account = _account(request)
    if request.method == "DELETE":
        return json_response({"cleared": account.clear_contacts()})
    return json_response(account.all_contacts())


async def _admin_keys(request: Request) -> Response:
    account = _account(request)
    if request.method == "PUT":
        change: KeysChange = _parse(KeysChange, await request.body())
        account.set_keys(
            account.api_keys if change.api_keys is None else change.api_keys,
            account.denied_keys if change.denied is None else change.denied,
        )
    return json_response(account.keys_snapshot())


async def _admin_config(request: Request) -> Response:
    account = _account(request)
    if request.method == "PUT":
        change: ConfigChange = _parse(ConfigChange, await request.body())
        if change.retry_later is not None:
            account.retry_later = change.retry_later
        if change.retry_later_seconds is not None:
            account.retry_later_until = time.monotonic() + change.retry_later_seconds
    quota = request.app.state.emulator.quota
    return json_response(
        {
            "retry_later": account.retry_later,
            "retry_later_seconds": round(max(0.0, account.retry_later_until - time.monotonic()), 3),
            "quota_per_minute": quota.limit if quota else None,
            "ip_quota_per_minute": quota.ip_limit if quota else None,
            "quota_window": quota.window if quota else None,
        }
    )


async def _admin_quota(request: Request) -> Response:
    quota = request.app.state.emulator.quota
    if quota is not None:
        quota.reset()
    return json_response({"reset": quota is not None})


def create_app(
    api_keys: Iterable[str] = (DEFAULT_API_KEY,),
    lists: Iterable[int | dict[str, Any]] = DEFAULT_LISTS,
    *,
    denied_keys: Iterable[str] = (),
    quota_per_minute: int | None = DEFAULT_QUOTA_PER_MINUTE,
    ip_quota_per_minute: int | None = None,
    quota_window: float = 60.0,
    seed: int = 0,
) -> Starlette:
    """The Unisender API emulator app.

    ``api_keys`` are accepted, ``denied_keys`` answer ``access_denied``; ``lists`` are
    ids or ``{"id", "title"}``. ``quota_per_minute`` calls per key and
    ``ip_quota_per_minute`` (default: the same) per IP in any ``quota_window`` s
    (``quota_per_minute`` None or 0: no quota). ``app.state.account`` is the
    :class:`Account`; ``app.state.emulator`` the framework's state.
    """
    routes = [Route("/{method:str}", _call, methods=["GET", "POST"])]
    admin = [
        Route(f"{ADMIN_PREFIX}/lists", _admin(_admin_lists), methods=["GET", "PUT"]),
        Route(
            f"{ADMIN_PREFIX}/lists/{{list_id:int}}/contacts",
            _admin_list_contacts,
            methods=["GET"],
        ),
        Route(f"{ADMIN_PREFIX}/contacts", _admin_contacts, methods=["GET", "DELETE"]),
        Route(f"{ADMIN_PREFIX}/keys", _admin(_admin_keys), methods=["GET", "PUT"]),
        Route(f"{ADMIN_PREFIX}/config", _admin(_admin_config), methods=["GET", "PUT"]),
        Route(f"{ADMIN_PREFIX}/quota", _admin_quota, methods=["DELETE"]),
    ]
    account = Account(api_keys, denied_keys, lists)
    app = build_app(PROFILE, routes, extra_admin_routes=admin, quota_per_second=None, seed=seed)
    if quota_per_minute:
        app.state.emulator.quota = DualQuota(
            quota_per_minute, ip_quota_per_minute or quota_per_minute, quota_window
        )
    app.state.account = account
    return app


__all__ = ["METHODS", "PROFILE", "create_app", "error_response"]
