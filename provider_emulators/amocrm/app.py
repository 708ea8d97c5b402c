"""amoCRM API v4 emulator: OAuth 2, leads, contacts, amoCRM's quota and IP block.

- ``POST /oauth2/access_token`` (JSON or form): ``grant_type=authorization_code`` with
  any code starting ``code-`` (single-use only with ``single_use_codes``) or
  ``refresh_token`` (single-use: a reused one → 401 ``OAuthProblemJson``); client id,
  secret and redirect URI must match. Access tokens live ``token_ttl`` s; the
  ``long_lived_token`` is accepted forever.
- ``GET /api/v4/leads`` (``page``, ``limit`` ≤ 250, ``query`` — case-insensitive
  substring of name, id or a field value, like amoCRM's full-text search, so
  ``ID_12`` also finds ``ID_123`` —, ``filter[id][]``), ``GET /api/v4/leads/{id}``
  (204 when absent), ``PATCH /api/v4/leads/{id}``, ``PATCH /api/v4/leads`` (array with
  ids), ``POST /api/v4/leads`` (array, ≤ 250). ``custom_fields_values`` are merged per
  field (``values: null`` clears one) and returned as stored.
- ``GET /api/v4/contacts`` (``filter[id][]`` ≤ 250 ids, ``page``, ``limit`` ≤ 250,
  ``query``), ``GET /api/v4/contacts/{id}``: any positive id is a deterministic contact
  (:func:`records.make_contact`) unless the admin deleted it.
- Lists are HAL (``_page``, ``_links.self|next|prev``, ``_embedded``); empty → 204.
  Errors are ``application/problem+json``; malformed PATCH/POST bodies → 400 with
  ``validation-errors``.
- Leads exist when created (``POST /api/v4/leads``, ``POST /_admin/leads``); with
  ``leads_exist=True`` (CLI ``--leads-exist``) any positive id not deleted by the admin
  also exists, created on first use as ``Сделка #<id>``.

Quota (``quota``, default 7): accepted requests per access token (per source IP
without one) in any 1-second window; over it → 429 WITHOUT ``Retry-After``, every
second refusal with an HTML (non-JSON) body. Abuse: a source IP with more than
``block_after`` (20) refusals within ``block_window`` (10 s) gets 403 "IP blocked" on
every request for ``block_seconds`` (60 s). Forced 429s from the fault injector never
carry ``Retry-After`` either, and do not count towards the block.

Admin (besides the framework's ``/_admin/health|requests|faults``):
``/_admin/leads`` (GET all in amoCRM's shape; POST ``{"count"} | {"ids"} | {"names"} |
{"leads": [...]}`` → ``{"ids"}``; DELETE all), ``/_admin/leads/{id}`` (GET, DELETE),
``/_admin/contacts/{id}`` (GET; PUT ``{"name","phone","email"}``; DELETE: absent),
``DELETE /_admin/contacts``, ``GET /_admin/oauth`` (counts), ``DELETE /_admin/tokens``
(expire access tokens; ``?refresh=1`` also revokes refresh tokens), ``/_admin/blocks``
(GET, DELETE) and ``/_admin/config`` (GET; PUT ``leads_exist``, ``token_ttl``,
``block_after``, ``block_window``, ``block_seconds``).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope

from provider_emulators.amocrm import records
from provider_emulators.amocrm.state import (
    CURRENT_IP,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REDIRECT_URI,
    REFUSAL,
    AmocrmError,
    ContactStore,
    GuardedQuota,
    LeadStore,
    TokenBook,
)
from provider_emulators.framework import (
    ADMIN_PREFIX,
    ProviderProfile,
    admin_error,
    build_app,
    json_response,
    source_ip,
)

MAX_LIMIT = 250
DEFAULT_LIMIT = 50
DEFAULT_QUOTA = 7
BLOCK_AFTER, BLOCK_WINDOW, BLOCK_SECONDS = 20, 10.0, 60.0
PROBLEM = "application/problem+json"
_HTTP_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def problem(
    status: int, detail: str, title: str | None = None, extra: dict[str, Any] | None = None
) -> Response:
    """amoCRM's ``application/problem+json`` error."""
    body = {
        "title": title or _HTTP_TITLES.get(status, "Error"),
        "type": f"https://httpstatus.es/{status}",
        "status": status,
        "detail": detail,
        **(extra or {}),
    }
    return Response(orjson.dumps(body), status, media_type=PROBLEM)


def _error(exc: AmocrmError) -> Response:
    return problem(exc.status, exc.detail, exc.title, exc.extra)


_REFUSALS = itertools.count()
_HTML_429 = b"<html><head><title>429 Too Many Requests</title></head><body><center><h1>429 Too Many Requests</h1></center><hr><center>nginx</center></body></html>"  # noqa: E501


def _quota_rejection() -> Response:
    if REFUSAL.get() == "blocked":
        return problem(403, "IP blocked: too many requests over the limit, try again later")
    # amoCRM's 429 has no Retry-After, and its body is not always JSON.
    if next(_REFUSALS) % 2:
        return Response(_HTML_429, 429, media_type="text/html")
    return problem(429, "Too many requests: at most 7 requests per second")


def _quota_key(scope: Scope) -> str:
    """amoCRM's budget is per access token (per IP for ``/oauth2``); the IP is kept for
    the block."""
    ip = source_ip(scope)
    CURRENT_IP.set(ip)
    for name, value in scope["headers"]:
        if name == b"authorization":
            return "token:" + value.decode("latin-1").partition(" ")[2].strip()
    return "ip:" + ip


def _ids_from_body(body: bytes) -> list[Any] | None:
    data = orjson.loads(body)
    if isinstance(data, list):
        ids = [item.get("id") for item in data if isinstance(item, dict)]
        return [i for i in ids if i is not None] or None
    return None


PROFILE = ProviderProfile(
    name="amocrm",
    quota_rejection=_quota_rejection,
    forced_429=lambda _retry_after: problem(429, "Too many requests"),
    server_error=lambda status: problem(status, "Internal error" if status == 500 else "Busy"),
    ids_from_body=_ids_from_body,
    quota_key=_quota_key,
)


# ---- body validation --------------------------------------------------------------------

_INT_FIELDS = ("price", "status_id", "pipeline_id", "responsible_user_id", "created_at")
_INT_FIELDS += ("updated_at", "closed_at", "created_by", "updated_by")
_OTHER_FIELDS = ("name", "custom_fields_values", "loss_reason_id", "_embedded", "request_id")
_OTHER_FIELDS += ("tags_to_add", "tags_to_delete", "id")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field_errors(fields: Any, path: str) -> list[dict[str, str]]:
    if fields is None:
        return []
    if not isinstance(fields, list):
        return [_err("InvalidType", path, "This value should be of type array.")]
    errors = []
    for n, field in enumerate(fields):
        at = f"{path}.{n}"
        if not isinstance(field, dict):
            errors.append(_err("InvalidType", at, "This value should be of type object."))
            continue
        if "field_id" in field:
            if not _is_int(field["field_id"]) or field["field_id"] <= 0:
                errors.append(_err("InvalidType", f"{at}.field_id", "This value should be int."))
        elif not isinstance(field.get("field_code"), str):
            errors.append(_err("FieldMissing", f"{at}.field_id", "field_id or field_code needed."))
        values = field.get("values", ...)
        if values is ...:
            errors.append(_err("FieldMissing", f"{at}.values", "This field is missing."))
        elif values is not None:
            errors += _value_errors(values, f"{at}.values")
    return errors


def _value_errors(values: Any, path: str) -> list[dict[str, str]]:
    if not isinstance(values, list) or not values:
        return [_err("InvalidType", path, "This value should be a non-empty array.")]
    errors = []
    for n, value in enumerate(values):
        at = f"{path}.{n}"
        if not isinstance(value, dict) or not ({"value", "enum_id", "enum_code"} & value.keys()):
            errors.append(_err("FieldMissing", f"{at}.value", "This field is missing."))
            continue
        if "value" in value and not isinstance(value["value"], str | int | float | bool | None):
            errors.append(_err("InvalidType", f"{at}.value", "This value should be scalar."))
    return errors


def _err(code: str, path: str, detail: str) -> dict[str, str]:
    return {"code": code, "path": path, "detail": detail}


def lead_errors(body: Any, *, need_id: bool = False) -> list[dict[str, str]]:
    """amoCRM's validation errors for one lead object of a POST / PATCH."""
    if not isinstance(body, dict):
        return [_err("InvalidType", "", "This value should be of type object.")]
    errors = []
    for key, value in body.items():
        if key in _INT_FIELDS:
            if not _is_int(value) or value < 0:
                errors.append(_err("InvalidType", key, "This value should be of type int."))
        elif key == "name":
            if not isinstance(value, str):
                errors.append(_err("InvalidType", key, "This value should be of type string."))
        elif key == "custom_fields_values":
            errors += _field_errors(value, key)
        elif key not in _OTHER_FIELDS:
            errors.append(_err("NotSupportedChoice", key, "This field is not supported."))
    if need_id and (not _is_int(body.get("id")) or body["id"] <= 0):
        errors.append(_err("FieldMissing", "id", "This field is missing."))
    return errors


def _validation_failed(per_request: list[tuple[int, list[dict[str, str]]]]) -> AmocrmError:
    return AmocrmError(
        400,
        "Request validation failed",
        extra={
            "validation-errors": [
                {"request_id": str(n), "errors": errs} for n, errs in per_request if errs
            ]
        },
    )


# ---- request plumbing -------------------------------------------------------------------


def _state(request: Request) -> Any:
    return request.app.state


def _authorize(request: Request) -> None:
    _state(request).tokens.check(request.headers.get("authorization"))


async def _json(request: Request) -> Any:
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise AmocrmError(400, "Request body is not valid JSON") from None


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _int_param(request: Request, name: str, default: int, high: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1 or (high is not None and value > high):
        bound = f" and at most {high}" if high else ""
        raise _validation_failed(
            [(0, [_err("InvalidType", name, f"This value should be an integer >= 1{bound}.")])]
        )
    return value


def _filter_ids(request: Request) -> list[int] | None:
    """``filter[id][]=1&filter[id][]=2`` (also ``filter[id]=1`` and ``filter[id][0]=1``)."""
    raw = [
        v
        for k, v in request.query_params.multi_items()
        if k == "filter[id]" or (k.startswith("filter[id][") and k.endswith("]"))
    ]
    if not raw:
        return None
    ids = []
    for value in raw:
        for part in value.split(","):
            try:
                ids.append(int(part))
            except ValueError:
                raise _validation_failed(
                    [(0, [_err("InvalidType", "filter.id", "This value should be int.")])]
                ) from None
    return list(dict.fromkeys(ids))


def _page_url(request: Request, page: int) -> str:
    items = [(k, v) for k, v in request.query_params.multi_items() if k != "page"]
    return f"{_base(request)}{request.url.path}?{urlencode([*items, ('page', str(page))])}"


def _hal(request: Request, entity: str, items: list[dict[str, Any]]) -> Response:
    """One HAL page of ``items``; 204 when the page is empty."""
    page = _int_param(request, "page", 1)
    limit = _int_param(request, "limit", DEFAULT_LIMIT, MAX_LIMIT)
    chunk = items[(page - 1) * limit : page * limit]
    if not chunk:
        return Response(status_code=204)
    links: dict[str, Any] = {"self": {"href": _page_url(request, page)}}
    if page * limit < len(items):
        links["next"] = {"href": _page_url(request, page + 1)}
    if page > 1:
        links["prev"] = {"href": _page_url(request, page - 1)}
    return json_response({"_page": page, "_links": links, "_embedded": {entity: chunk}})


def _with_link(request: Request, entity: str, item: dict[str, Any]) -> dict[str, Any]:
    return {**item, "_links": {"self": {"href": f"{_base(request)}/api/v4/{entity}/{item['id']}"}}}


def _api(
    handler: Callable[[Request], Awaitable[Response]], *, auth: bool = True
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            if auth:
                _authorize(request)
            return await handler(request)
        except AmocrmError as exc:
            return _error(exc)

    return endpoint


# ---- OAuth ------------------------------------------------------------------------------


async def _access_token(request: Request) -> Response:
    raw = await request.body()
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        form: Any = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    else:
        try:
            form = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise AmocrmError(400, "Request body is not valid JSON or form data") from None
    if not isinstance(form, dict):
        raise AmocrmError(400, "Request body must be an object")
    return json_response(_state(request).tokens.grant(form))


# ---- leads ------------------------------------------------------------------------------


async def _leads_list(request: Request) -> Response:
    store: LeadStore = _state(request).leads
    items = store.search(request.query_params.get("query") or None, _filter_ids(request))
    return _hal(request, "leads", [_with_link(request, "leads", lead) for lead in items])


async def _lead_get(request: Request) -> Response:
    lead = _state(request).leads.get(request.path_params["lead_id"])
    if lead is None:
        return Response(status_code=204)
    return json_response(_with_link(request, "leads", lead))


def _updated(request: Request, lead: dict[str, Any], request_id: int | None = None) -> dict:
    answer = {"id": lead["id"], "updated_at": lead["updated_at"]}
    if request_id is not None:
        answer["request_id"] = str(request_id)
    return _with_link(request, "leads", answer)


async def _lead_patch(request: Request) -> Response:
    lead_id = request.path_params["lead_id"]
    body = await _json(request)
    errors = lead_errors(body)
    if errors:
        raise _validation_failed([(0, errors)])
    lead = _state(request).leads.patch(lead_id, body)
    if lead is None:
        raise AmocrmError(404, f"Lead {lead_id} not found")
    return json_response(_updated(request, lead))


async def _leads_patch(request: Request) -> Response:
    body = await _json(request)
    if not isinstance(body, list) or not body or len(body) > MAX_LIMIT:
        raise _validation_failed([(0, [_err("InvalidType", "", "Expected 1-250 leads.")])])
    store: LeadStore = _state(request).leads
    problems = [(n, lead_errors(item, need_id=True)) for n, item in enumerate(body)]
    problems += [
        (n, [_err("NotFound", "id", "Lead not found.")])
        for n, item in enumerate(body)
        if not any(errs for m, errs in problems if m == n) and not store.exists(item["id"])
    ]
    if any(errs for _, errs in problems):
        raise _validation_failed(problems)
    done = [store.patch(item["id"], item) for item in body]
    return json_response(
        {
            "_links": {"self": {"href": f"{_base(request)}/api/v4/leads"}},
            "_embedded": {
                "leads": [_updated(request, lead, n) for n, lead in enumerate(done) if lead]
            },
        }
    )


async def _leads_post(request: Request) -> Response:
    body = await _json(request)
    if not isinstance(body, list) or not body or len(body) > MAX_LIMIT:
        raise _validation_failed([(0, [_err("InvalidType", "", "Expected 1-250 leads.")])])
    problems = [(n, lead_errors(item)) for n, item in enumerate(body)]
    problems += [
        (n, [_err("NotSupportedChoice", "id", "id cannot be set on create.")])
        for n, item in enumerate(body)
        if isinstance(item, dict) and "id" in item
    ]
    if any(errs for _, errs in problems):
        raise _validation_failed(problems)
    store: LeadStore = _state(request).leads
    created = [store.create(item) for item in body]
    leads = [
        _with_link(
            request, "leads", {"id": lead["id"], "request_id": str(item.get("request_id", n))}
        )
        for n, (item, lead) in enumerate(zip(body, created, strict=True))
    ]
    return json_response(
        {
            "_links": {"self": {"href": f"{_base(request)}/api/v4/leads"}},
            "_embedded": {"leads": leads},
        }
    )


# ---- contacts ---------------------------------------------------------------------------


async def _contacts_list(request: Request) -> Response:
    store: ContactStore = _state(request).contacts
    ids = _filter_ids(request)
    if ids is not None and len(ids) > MAX_LIMIT:
        raise _validation_failed(
            [(0, [_err("InvalidType", "filter.id", f"At most {MAX_LIMIT} ids per request.")])]
        )
    if ids is not None and any(i <= 0 for i in ids):
        raise _validation_failed(
            [(0, [_err("InvalidType", "filter.id", "Ids must be positive integers.")])]
        )
    base = _base(request)
    found = [store.get(i, base) for i in (ids if ids is not None else store.known_ids())]
    contacts = [c for c in found if c is not None]
    query = request.query_params.get("query")
    if query:
        needle = query.casefold()
        contacts = [c for c in contacts if needle in orjson.dumps(c).decode().casefold()]
    return _hal(request, "contacts", contacts)


async def _contact_get(request: Request) -> Response:
    contact = _state(request).contacts.get(request.path_params["contact_id"], _base(request))
    return json_response(contact) if contact else Response(status_code=204)


# ---- admin ------------------------------------------------------------------------------


class LeadSpec(BaseModel):
    """One lead for ``POST /_admin/leads``."""

    model_config = ConfigDict(extra="forbid")

    id: int | None = Field(None, gt=0)
    name: str | None = None
    price: int = Field(0, ge=0)
    pipeline_id: int | None = Field(None, gt=0)
    status_id: int | None = Field(None, gt=0)
    custom_fields_values: list[dict[str, Any]] | None = None


class AdminLeads(BaseModel):
    """``POST /_admin/leads``: exactly one of ``count``, ``ids``, ``names``, ``leads``."""

    model_config = ConfigDict(extra="forbid")

    count: int | None = Field(None, ge=1, le=100_000)
    ids: list[int] | None = None
    names: list[str] | None = None
    leads: list[LeadSpec] | None = None
    pipeline_id: int | None = Field(None, gt=0)
    status_id: int | None = Field(None, gt=0)


class ContactOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    phone: str | None = None
    email: str | None = None


class ConfigChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    leads_exist: bool | None = None
    token_ttl: float | None = Field(None, gt=0)
    block_after: int | None = Field(None, ge=0)
    block_window: float | None = Field(None, gt=0)
    block_seconds: float | None = Field(None, ge=0)


def _parse(model: type[BaseModel], raw: bytes) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise AmocrmError(400, problems) from None


def _admin(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except AmocrmError as exc:
            return admin_error(exc.detail, exc.status)

    return endpoint


async def _admin_leads(request: Request) -> Response:
    store: LeadStore = _state(request).leads
    if request.method == "GET":
        return json_response(store.all())
    if request.method == "DELETE":
        return json_response({"reset": store.reset()})
    args: AdminLeads = _parse(AdminLeads, await request.body())
    given = [x for x in (args.count, args.ids, args.names, args.leads) if x is not None]
    if len(given) != 1:
        raise AmocrmError(400, "give exactly one of count, ids, names or leads")
    defaults = {"pipeline_id": args.pipeline_id, "status_id": args.status_id}
    if args.leads is not None:
        specs = [{**defaults, **lead.model_dump(exclude_none=True)} for lead in args.leads]
    elif args.ids is not None:
        if any(i <= 0 for i in args.ids):
            raise AmocrmError(400, "ids must be positive")
        specs = [{**defaults, "id": i} for i in args.ids]
    elif args.names is not None:
        specs = [{**defaults, "name": name} for name in args.names]
    else:
        specs = [dict(defaults) for _ in range(args.count or 0)]
    created = [store.create(spec) for spec in specs]
    return json_response({"ids": [lead["id"] for lead in created]})


async def _admin_lead(request: Request) -> Response:
    store: LeadStore = _state(request).leads
    lead_id = request.path_params["lead_id"]
    if request.method == "DELETE":
        return json_response({"deleted": store.delete(lead_id), "id": lead_id})
    lead = store.get(lead_id)
    return json_response(lead) if lead else admin_error("not found", 404)


async def _admin_contact(request: Request) -> Response:
    store: ContactStore = _state(request).contacts
    contact_id = request.path_params["contact_id"]
    if request.method == "DELETE":
        store.delete(contact_id)
        return json_response({"deleted": True, "id": contact_id})
    if request.method == "PUT":
        change: ContactOverride = _parse(ContactOverride, await request.body())
        store.put(contact_id, change.model_dump(exclude_none=True))
    contact = store.get(contact_id)
    return json_response(contact) if contact else admin_error("not found", 404)


async def _admin_contacts_reset(request: Request) -> Response:
    return json_response({"reset": _state(request).contacts.reset()})


async def _admin_oauth(request: Request) -> Response:
    return json_response(_state(request).tokens.snapshot())


async def _admin_tokens(request: Request) -> Response:
    revoke = request.query_params.get("refresh") in ("1", "true", "yes")
    return json_response(_state(request).tokens.expire_all(revoke_refresh=revoke))


def _guard(request: Request) -> GuardedQuota | None:
    quota = request.app.state.emulator.quota
    return quota if isinstance(quota, GuardedQuota) else None


async def _admin_blocks(request: Request) -> Response:
    guard = _guard(request)
    if request.method == "DELETE":
        return json_response({"cleared": guard.clear_blocks() if guard else 0})
    return json_response(guard.blocks() if guard else {})


async def _admin_config(request: Request) -> Response:
    state = _state(request)
    guard = _guard(request)
    if request.method == "PUT":
        change: ConfigChange = _parse(ConfigChange, await request.body())
        if change.leads_exist is not None:
            state.leads.leads_exist = change.leads_exist
        if change.token_ttl is not None:
            state.tokens.token_ttl = change.token_ttl
        for key in ("block_after", "block_window", "block_seconds"):
            value = getattr(change, key)
            if value is not None and guard is not None:
                setattr(guard, key, value)
    return json_response(
        {
            "leads_exist": state.leads.leads_exist,
            "token_ttl": state.tokens.token_ttl,
            "quota_per_second": guard.limit if guard else None,
            "block_after": guard.block_after if guard else None,
            "block_window": guard.block_window if guard else None,
            "block_seconds": guard.block_seconds if guard else None,
        }
    )


def create_app(
    client_id: str = DEFAULT_CLIENT_ID,
    client_secret: str = DEFAULT_CLIENT_SECRET,
    redirect_uri: str = DEFAULT_REDIRECT_URI,
    *,
    token_ttl: float = 86_400,
    long_lived_token: str | None = None,
    single_use_codes: bool = False,
    leads_exist: bool = False,
    quota: int | None = DEFAULT_QUOTA,
    block_after: int = BLOCK_AFTER,
    block_window: float = BLOCK_WINDOW,
    block_seconds: float = BLOCK_SECONDS,
    seed: int = 0,
) -> Starlette:
    """The amoCRM API v4 emulator app.

    ``quota``: requests per access token per second (None or 0: no quota and no IP
    block). ``block_after`` refusals within ``block_window`` s block the source IP for
    ``block_seconds`` (``block_after=0``: never). ``leads_exist``: every positive lead
    id exists (created on first use). ``app.state.tokens`` / ``leads`` / ``contacts`` are
    the :class:`TokenBook`, :class:`LeadStore` and :class:`ContactStore`;
    ``app.state.emulator`` the framework's state.
    """
    if not client_id or not client_secret or not redirect_uri:
        raise ValueError("client_id, client_secret and redirect_uri must not be empty")
    if token_ttl <= 0:
        raise ValueError("token_ttl must be > 0")
    routes = [
        Route("/oauth2/access_token", _api(_access_token, auth=False), methods=["POST"]),
        Route("/api/v4/leads", _api(_leads_list), methods=["GET"]),
        Route("/api/v4/leads", _api(_leads_patch), methods=["PATCH"]),
        Route("/api/v4/leads", _api(_leads_post), methods=["POST"]),
        Route("/api/v4/leads/{lead_id:int}", _api(_lead_get), methods=["GET"]),
        Route("/api/v4/leads/{lead_id:int}", _api(_lead_patch), methods=["PATCH"]),
        Route("/api/v4/contacts", _api(_contacts_list), methods=["GET"]),
        Route("/api/v4/contacts/{contact_id:int}", _api(_contact_get), methods=["GET"]),
    ]
    admin = [
        Route(f"{ADMIN_PREFIX}/leads", _admin(_admin_leads), methods=["GET", "POST", "DELETE"]),
        Route(f"{ADMIN_PREFIX}/leads/{{lead_id:int}}", _admin_lead, methods=["GET", "DELETE"]),
        Route(f"{ADMIN_PREFIX}/contacts", _admin_contacts_reset, methods=["DELETE"]),
        Route(
            f"{ADMIN_PREFIX}/contacts/{{contact_id:int}}",
            _admin(_admin_contact),
            methods=["GET", "PUT", "DELETE"],
        ),
        Route(f"{ADMIN_PREFIX}/oauth", _admin_oauth, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/tokens", _admin_tokens, methods=["DELETE"]),
        Route(f"{ADMIN_PREFIX}/blocks", _admin_blocks, methods=["GET", "DELETE"]),
        Route(f"{ADMIN_PREFIX}/config", _admin(_admin_config), methods=["GET", "PUT"]),
    ]
    app = build_app(PROFILE, routes, extra_admin_routes=admin, quota_per_second=None, seed=seed)
    if quota:
        app.state.emulator.quota = GuardedQuota(
            quota,
            block_after=block_after,
            block_window=block_window,
            block_seconds=block_seconds,
        )
    app.state.tokens = TokenBook(
        client_id, client_secret, redirect_uri, token_ttl, long_lived_token, single_use_codes
    )
    app.state.leads = LeadStore(leads_exist)
    app.state.contacts = ContactStore()
    return app


__all__ = ["PROFILE", "create_app", "lead_errors", "problem", "records"]
