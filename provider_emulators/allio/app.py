"""ALLIO emulator: ``POST /reserve/list`` and ``POST /dealcard/list``, plus a webhook sender.

Quota: 2 accepted requests per source IP in any 1-second window; over it → 429
``Retry-After: 1`` ``{"success": false, "error": "too_many_requests"}``.

Records come from :mod:`provider_emulators.allio.records`: mostly the seed's spelling,
with a stable minority of spelling variants (``is_agency`` as ``"TRUE"``/``"FALSE"``,
times with a zone offset, reserves without ``client``, ids as digit strings).

Admin, besides the framework's: ``/_admin/records/{entity}/{id}`` (GET / PUT / DELETE
one record), ``DELETE /_admin/records`` (drop overrides, default variants back),
``/_admin/variants`` (GET; PUT ``{"variants": true | false | [names]}``; DELETE = the
default) and ``POST /_admin/send_webhooks``.
"""

from __future__ import annotations

import asyncio
import hmac
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from provider_emulators.allio.records import ALL_VARIANTS, ENTITIES, RecordStore
from provider_emulators.framework import (
    ADMIN_PREFIX,
    ProviderProfile,
    admin_error,
    build_app,
    json_response,
)
from provider_emulators.sender import post_json_async

DEFAULT_TOKEN = "demo-token"  # noqa: S105 - the emulator's documented demo token
MAX_LIMIT = 100
COMMANDS = (
    "RESERVE_ADD",
    "RESERVE_MOD",
    "RESERVE_DEL",
    "DEALCARD_ADD",
    "DEALCARD_MOD",
    "DEALCARD_DEL",
    "SPACE_CHANGED",
)

IndexSource = Sequence[int] | Iterable[Sequence[int]] | Callable[[int], Sequence[int]]


def _fail(error: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return json_response({"success": False, "error": error}, status, headers)


def _ids_from_body(body: bytes) -> list[Any] | None:
    data = orjson.loads(body)
    indexes = data.get("indexes") if isinstance(data, dict) else None
    return indexes if isinstance(indexes, list) else None


PROFILE = ProviderProfile(
    name="allio",
    quota_rejection=lambda: _fail("too_many_requests", 429, {"Retry-After": "1"}),
    forced_429=lambda retry_after: _fail(
        "too_many_requests", 429, {"Retry-After": retry_after} if retry_after is not None else None
    ),
    server_error=lambda status: _fail(
        "internal_error" if status == 500 else "service_unavailable", status
    ),
    ids_from_body=_ids_from_body,
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_list_body(body: bytes) -> tuple[list[int], int, int]:
    """Validate a ``*/list`` body → (indexes, limit, offset); ValueError on a bad body."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError("invalid JSON body") from None
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    indexes = data.get("indexes")
    if not isinstance(indexes, list) or not all(_is_int(i) for i in indexes):
        raise ValueError("indexes must be a list of integers")
    limit, offset = data.get("limit", MAX_LIMIT), data.get("offset", 0)
    if not _is_int(limit) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}")
    if not _is_int(offset) or offset < 0:
        raise ValueError("offset must be a non-negative integer")
    return indexes, limit, offset


def _authorized(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())


def _list_endpoint(entity: str, token: str, store: RecordStore) -> Callable[..., Any]:
    async def endpoint(request: Request) -> Response:
        if not _authorized(request, token):
            return _fail("unauthorized", 401)
        try:
            indexes, limit, offset = parse_list_body(await request.body())
        except ValueError as exc:
            return _fail(str(exc), 400)
        found = [i for i in dict.fromkeys(indexes) if store.exists(entity, i)]
        page = [store.get(entity, i) for i in found[offset : offset + limit]]
        return json_response({"success": True, "data": [r for r in page if r], "total": len(found)})

    return endpoint


def _record_key(request: Request) -> tuple[str, int] | Response:
    entity, record_id = request.path_params["entity"], request.path_params["record_id"]
    if entity not in ENTITIES:
        return admin_error(f"entity must be one of {', '.join(ENTITIES)}", 404)
    return entity, record_id


async def _admin_record(request: Request) -> Response:
    key = _record_key(request)
    if isinstance(key, Response):
        return key
    store: RecordStore = request.app.state.records
    if request.method == "GET":
        record = store.get(*key)
        return json_response(record) if record else admin_error("not found", 404)
    if request.method == "DELETE":
        store.delete(*key)
        return json_response({"deleted": True, "entity": key[0], "id": key[1]})
    try:
        record = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return admin_error("invalid JSON body")
    if not isinstance(record, dict):
        return admin_error("record must be a JSON object")
    return json_response(store.put(*key, record))


async def _admin_reset_records(request: Request) -> Response:
    return json_response({"reset": request.app.state.records.reset()})


def _variants_body(store: RecordStore) -> Response:
    return json_response({"variants": sorted(store.variants), "available": sorted(ALL_VARIANTS)})


async def _admin_variants(request: Request) -> Response:
    """Which spelling variants generated records get (overrides are served as stored)."""
    store: RecordStore = request.app.state.records
    if request.method == "DELETE":
        store.set_variants(store.default_variants)
    elif request.method == "PUT":
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return admin_error("invalid JSON body")
        wanted = body.get("variants") if isinstance(body, dict) else None
        valid = isinstance(wanted, bool) or (
            isinstance(wanted, list) and all(isinstance(v, str) for v in wanted)
        )
        if not valid:
            return admin_error('body must be {"variants": true | false | [names]}')
        try:
            store.set_variants(wanted)
        except ValueError as exc:
            return admin_error(str(exc))
    return _variants_body(store)


def random_indexes(
    seed: int | None = None, max_id: int = 100_000, max_len: int = 5
) -> Iterator[list[int]]:
    """Endless lists of 1..max_len random ids in 1..max_id."""
    rng = random.Random(seed)
    while True:
        yield [rng.randint(1, max_id) for _ in range(rng.randint(1, max_len))]


def _index_lists(indexes: IndexSource, count: int) -> Iterator[list[int]]:
    if callable(indexes):
        for n in range(count):
            yield list(indexes(n))
    elif isinstance(indexes, list | tuple) and all(_is_int(i) for i in indexes):
        for _ in range(count):
            yield list(indexes)
    else:
        source = iter(indexes)
        for _ in range(count):
            item = next(source, None)
            if item is None:
                return
            yield list(item)


def webhook_payloads(
    uuid: str, command: str, indexes: IndexSource, count: int = 1
) -> Iterator[dict]:
    """ALLIO webhook bodies ``{"uuid", "command", "indexes"}``, ``count`` of them.

    ``indexes`` is one id list reused for every webhook, an iterable of id lists
    (one per webhook), or a callable ``n -> id list``.
    """
    for ids in _index_lists(indexes, count):
        yield {"uuid": uuid, "command": command, "indexes": ids}


async def send_webhooks_async(
    url: str,
    uuid: str,
    command: str,
    indexes: IndexSource,
    count: int = 1,
    concurrency: int = 1,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Async :func:`send_webhooks`."""
    payloads = webhook_payloads(uuid, command, indexes, count)
    return await post_json_async(url, payloads, concurrency=concurrency, timeout=timeout)


def send_webhooks(
    url: str,
    uuid: str,
    command: str,
    indexes: IndexSource,
    count: int = 1,
    concurrency: int = 1,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Blocking :func:`send_webhooks_async` (not callable inside a running event loop)."""
    return asyncio.run(
        send_webhooks_async(url, uuid, command, indexes, count, concurrency, timeout)
    )


def _parse_send_request(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    url, uuid = data.get("url"), data.get("uuid")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError("url must be an http(s) URL")
    if not isinstance(uuid, str):
        raise ValueError("uuid must be a string")
    command = data.get("command", "RESERVE_ADD")
    count, concurrency = data.get("count", 1), data.get("concurrency", 1)
    if not isinstance(command, str):
        raise ValueError("command must be a string")
    if not _is_int(count) or count < 1 or not _is_int(concurrency) or not 1 <= concurrency <= 256:
        raise ValueError("count must be >= 1 and concurrency 1..256")
    indexes: IndexSource
    if data.get("random_ids"):
        seed = data.get("seed")
        indexes = random_indexes(seed if _is_int(seed) else None)
    else:
        indexes = data.get("indexes")
        if not isinstance(indexes, list) or not all(_is_int(i) for i in indexes):
            raise ValueError("indexes must be a list of integers (or set random_ids)")
    return {"url": url, "uuid": uuid, "command": command, "indexes": indexes, "count": count,
            "concurrency": concurrency}  # fmt: skip


async def _admin_send_webhooks(request: Request) -> Response:
    try:
        args = _parse_send_request(orjson.loads(await request.body()))
    except (orjson.JSONDecodeError, ValueError) as exc:
        return admin_error(str(exc))
    return json_response(await send_webhooks_async(**args))


def create_app(
    token: str = DEFAULT_TOKEN,
    quota_per_second: int | None = 2,
    seed: int = 0,
    variants: bool | Iterable[str] = True,
) -> Starlette:
    """The ALLIO emulator app; ``quota_per_second`` None or 0 disables the quota.

    ``variants``: the records' spelling variants, True (all, the default), False (the
    plain seed spelling everywhere) or the names to keep (see ``records.VARIANTS``).
    ``app.state.emulator`` is the framework state, ``app.state.records`` the record store.
    """
    store = RecordStore(variants)
    routes = [
        Route(f"/{entity}/list", _list_endpoint(entity, token, store), methods=["POST"])
        for entity in ENTITIES
    ]
    admin = [
        Route(f"{ADMIN_PREFIX}/records", _admin_reset_records, methods=["DELETE"]),
        Route(
            f"{ADMIN_PREFIX}/records/{{entity}}/{{record_id:int}}",
            _admin_record,
            methods=["GET", "PUT", "DELETE"],
        ),
        Route(f"{ADMIN_PREFIX}/variants", _admin_variants, methods=["GET", "PUT", "DELETE"]),
        Route(f"{ADMIN_PREFIX}/send_webhooks", _admin_send_webhooks, methods=["POST"]),
    ]
    app = build_app(
        PROFILE, routes, extra_admin_routes=admin, quota_per_second=quota_per_second, seed=seed
    )
    app.state.records = store
    return app
