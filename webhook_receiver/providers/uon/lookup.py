"""The operator's client-by-phone lookup for a ringing call (seed 004):
`GET /api/v1/uon/customers/by-phone?phone=…&integration=ID` with an operator token.

The number is read as E.164 (the integration's `default_region` for numbers without a
country code). A fresh entry of `uon_phone_cache` — shared by every receiver worker and
every Dagster run — answers at once: the token check and one primary-key read, in one
transaction. Otherwise U-ON's `user/phone/{digits}` is asked through the shared limiter
within `lookup_deadline_seconds` (quota wait included, `live`): the clients found are
stored in `customers` (fresh non-empty values overwrite) and cached for
`cache_ttl_seconds`; "no such client" is cached for `negative_cache_ttl_seconds`. When
U-ON is slow, down or over its quota, the expired entry is the answer (`"stale": true`),
or, without one, an empty answer that says why (`"source": "unavailable"`). Concurrent
lookups of one number in a worker share one U-ON call.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from crm_schema import integrations as integ
from crm_schema import operator_tokens
from crm_schema.providers.uon_customers import (
    CacheEntry,
    cache_users,
    cached_profiles,
    read_cache,
)
from crm_sync.encryption import EncryptionError
from crm_sync.phones import normalize_phone
from crm_sync.providers.uon import UonSettings
from webhook_receiver.openapi import Operation
from webhook_receiver.operator_api.common import (
    ApiError,
    OperatorApi,
    answer,
    bearer_token,
    endpoint,
    int_param,
    invalid,
    iso,
    problem,
)
from webhook_receiver.providers.uon.live import LiveAnswer, UonLive

PROVIDER = "uon"
BY_PHONE_PATH = "/api/v1/uon/customers/by-phone"
MAX_PHONE_LENGTH = 64
# How long a finished U-ON call's answer is kept for lookups that read the cache before
# the call stored its entry (longer than any lookup's deadline needs).
RECENT_SECONDS = 60.0
UNAUTHORIZED = (
    "an operator token is required: Authorization: Bearer <token> "
    "(crm-sync operator-tokens create NAME)"
)

Source = Literal["cache", "uon", "stale", "unavailable"]


class ActiveRequest(BaseModel):
    """An open U-ON lead or request of the client."""

    id: str
    kind: str | None = Field(None, examples=["request"])
    status: str | None = None
    manager_id: str | None = None


class CustomerProfile(BaseModel):
    """A U-ON client as the operator sees it."""

    uon_id: str = Field(examples=["375296254070"])
    name: str | None = Field(None, description="Surname, name, patronymic.")
    first_name: str | None = None
    middle_name: str | None = None
    last_name: str | None = None
    phone: str | None = Field(None, examples=["+375296254070"])
    email: str | None = None
    company: str | None = None
    status: str | None = None
    manager_id: str | None = Field(None, description="The U-ON manager (user) id.")
    active_requests: list[ActiveRequest] = Field(default_factory=list)


class CustomerLookup(BaseModel):
    """Who is calling: the client (or none) and where the answer came from."""

    integration: int
    phone: str = Field(description="The number in E.164.", examples=["+375296254070"])
    found: bool
    customer: CustomerProfile | None = Field(description="The first (newest) client found.")
    customers: list[CustomerProfile] = Field(description="Every client with this number.")
    source: Source = Field(
        description="cache: a fresh cached answer; uon: U-ON asked now; stale: U-ON did "
        "not answer in time, the expired cached answer; unavailable: neither."
    )
    stale: bool
    fetched_at: str | None = Field(description="When U-ON gave this answer.")
    error: str | None = Field(description="Why U-ON's answer is missing (stale, unavailable).")


@dataclass(frozen=True)
class _Target:
    """An integration as the lookup needs it."""

    integration: integ.Integration
    settings: UonSettings


class _Integrations:
    """Integrations by id, kept briefly in memory so a cache hit reads no more than the
    cache: re-read after ``ttl`` seconds (the receiver's integration refresh interval),
    so a disabled integration stops answering as soon as webhooks stop."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._items: dict[int, tuple[float, _Target | ApiError]] = {}
        self._lock = threading.Lock()

    def get(self, conn: Connection, integration_id: int) -> _Target:
        now = time.monotonic()
        with self._lock:
            held = self._items.get(integration_id)
        if held is not None and held[0] > now:
            item = held[1]
        else:
            item = self._load(conn, integration_id)
            with self._lock:
                if len(self._items) > 10_000:  # ids from junk requests: start over
                    self._items.clear()
                self._items[integration_id] = (now + self.ttl, item)
        if isinstance(item, ApiError):
            raise item
        return item

    @staticmethod
    def _load(conn: Connection, integration_id: int) -> _Target | ApiError:
        try:
            found = integ.get_integration(conn, integration_id)
        except integ.IntegrationError:
            return ApiError(404, f"no integration with id {integration_id}")
        except EncryptionError as exc:  # the message names the cause, never a value
            return ApiError(503, str(exc))
        if found.provider != PROVIDER:
            return ApiError(404, f"integration {integration_id} is not a U-ON integration")
        if not found.is_active:
            return ApiError(404, f"integration {integration_id} is disabled")
        try:
            settings = UonSettings.model_validate(found.settings)
        except ValidationError as exc:
            fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
            return ApiError(409, f"integration {integration_id} has invalid settings: {fields}")
        return _Target(found, settings)


def read_phone(raw: str | None, region: str) -> str | None:
    """The number as E.164, or None. A `+` sent unencoded in a query string arrives as a
    space: a leading space before digits is read as the `+` it was."""
    if raw is None:
        return None
    if raw[:1] == " " and raw.strip()[:1].isdigit():
        raw = "+" + raw.strip()
    return normalize_phone(raw, region)


def _view(
    integration_id: int,
    phone: str,
    entry: CacheEntry | None,
    source: Source,
    error: str | None = None,
) -> dict[str, Any]:
    customer, customers = cached_profiles(entry.profile if entry is not None else None)
    return {
        "integration": integration_id,
        "phone": phone,
        "found": bool(entry is not None and entry.found and customer is not None),
        "customer": customer,
        "customers": customers,
        "source": source,
        "stale": source == "stale",
        "fetched_at": iso(entry.fetched_at) if entry is not None else None,
        "error": error,
    }


def store_answer(
    conn: Connection, target: _Target, phone: str, users: list[dict[str, Any]], now: datetime
) -> CacheEntry:
    """U-ON's answer for a number kept: its clients in `customers`, the profile (or "no
    such client") in the cache."""
    settings = target.settings
    entry, _ = cache_users(
        conn,
        target.integration.id,
        phone,
        users,
        region=settings.default_region,
        now=now,
        ttl_seconds=settings.cache_ttl_seconds,
        negative_ttl_seconds=settings.negative_cache_ttl_seconds,
    )
    return entry


class LookupRoutes:
    """The lookup handler (one instance per app)."""

    def __init__(self, api: OperatorApi) -> None:
        self.api = api
        self.live = UonLive(lambda: api.engine)
        self.integrations = _Integrations(api.receiver.config.integrations_refresh_seconds)
        # (integration id, phone) → the U-ON call under way in this worker, and the
        # answers of the last few seconds' calls (monotonic time they came).
        self._pending: dict[tuple[int, str], asyncio.Future[dict[str, Any]]] = {}
        self._recent: dict[tuple[int, str], tuple[float, dict[str, Any]]] = {}

    def close(self) -> None:
        self.live.close()

    async def by_phone(self, request: Request) -> Response:
        started = time.monotonic()
        token = bearer_token(request)
        if token is None:
            raise ApiError(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
        problems: list[dict[str, str]] = []
        integration_id = int_param(request, "integration", problems, minimum=1)
        if integration_id is None and not problems:
            problems.append(problem("integration", "required: the U-ON integration id"))
        raw_phone = request.query_params.get("phone")
        if raw_phone is None or not raw_phone.strip():
            problems.append(problem("phone", "required: the caller's number"))
        elif len(raw_phone) > MAX_PHONE_LENGTH:
            problems.append(problem("phone", f"at most {MAX_PHONE_LENGTH} characters"))

        def first_read(conn: Connection) -> tuple[_Target, str, CacheEntry | None] | None:
            # The token first: without a valid one, nothing is said about the input.
            if operator_tokens.verify(conn, token) is None:
                return None
            if problems:
                raise invalid(problems)
            target = self.integrations.get(conn, integration_id)  # type: ignore[arg-type]
            phone = read_phone(raw_phone, target.settings.default_region)
            if phone is None:
                raise invalid(
                    [
                        problem(
                            "phone",
                            "not a valid phone number (E.164 such as +375296254070, or a "
                            f"national number of region {target.settings.default_region})",
                        )
                    ]
                )
            return target, phone, read_cache(conn, target.integration.id, phone)

        found = await self.api.transaction(first_read)
        if found is None:
            raise ApiError(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
        target, phone, entry = found
        now = datetime.now(UTC)
        if entry is not None and entry.fresh(now):
            return answer(_view(target.integration.id, phone, entry, "cache"))
        deadline = started + target.settings.lookup_deadline_seconds
        return answer(await self._shared_miss(target, phone, entry, started, deadline))

    async def _shared_miss(
        self,
        target: _Target,
        phone: str,
        entry: CacheEntry | None,
        started: float,
        deadline: float,
    ) -> dict[str, Any]:
        """One U-ON call per number at a time in this worker; the others wait for it. A
        call that ended after this lookup read the cache is its answer too (the read
        missed the entry that call wrote)."""
        key = (target.integration.id, phone)
        recent = self._recent.get(key)
        if recent is not None and recent[0] >= started:
            return recent[1]
        pending = self._pending.get(key)
        if pending is not None:
            try:
                return await asyncio.wait_for(
                    asyncio.shield(pending), max(0.0, deadline - time.monotonic())
                )
            except TimeoutError:
                return _view(key[0], phone, entry, *_fallback(entry, "U-ON did not answer in time"))
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            result = await self._miss(target, phone, entry, deadline)
            future.set_result(result)
            self._remember(key, result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiting lookups get it, no "never retrieved"
            raise
        finally:
            self._pending.pop(key, None)

    def _remember(self, key: tuple[int, str], result: dict[str, Any]) -> None:
        now = time.monotonic()
        if len(self._recent) > 1000:
            self._recent = {k: v for k, v in self._recent.items() if now - v[0] < RECENT_SECONDS}
        self._recent[key] = (now, result)

    async def _miss(
        self, target: _Target, phone: str, entry: CacheEntry | None, deadline: float
    ) -> dict[str, Any]:
        integration_id = target.integration.id
        live: LiveAnswer = await self.live.by_phone(
            target.integration,
            phone,
            deadline,
            log_personal_data=target.settings.log_personal_data,
        )
        if live.outcome in ("found", "not_found"):
            now = datetime.now(UTC)
            stored = await self.api.transaction(
                lambda conn: store_answer(conn, target, phone, live.users, now)
            )
            return _view(integration_id, phone, stored, "uon")
        return _view(integration_id, phone, entry, *_fallback(entry, live.error or "U-ON failed"))


def _fallback(entry: CacheEntry | None, error: str) -> tuple[Source, str]:
    return ("stale" if entry is not None else "unavailable"), error


def operator_routes(api: OperatorApi) -> list[BaseRoute]:
    """U-ON's operator route: the client-by-phone lookup."""
    handlers = LookupRoutes(api)
    api.receiver.on_close.append(handlers.close)
    return [Route(BY_PHONE_PATH, endpoint(handlers.by_phone), methods=["GET"])]


OPERATOR_OPERATIONS = (
    Operation(
        path=BY_PHONE_PATH,
        method="get",
        summary="Who is calling: the U-ON client with this number",
        description="A fresh cached answer at once; otherwise U-ON is asked within the "
        "integration's `lookup_deadline_seconds` (its quota shared with every process). "
        "When U-ON cannot answer in time, the expired cached answer (`stale`), else an "
        "empty answer whose `error` says why (`source` unavailable). The API key never "
        "appears in answers or in the call log.",
        ok=CustomerLookup,
        errors={
            401: "No or unknown operator token.",
            404: "Unknown, disabled or non-U-ON integration.",
            409: "The integration's stored settings are invalid.",
            422: "Missing or invalid phone or integration: every problem named.",
            503: "The database is unavailable.",
        },
        # `integration` is documented (as an integer) through OPERATOR_QUERY_PARAMS.
        query_params={
            "phone": "The caller's number: E.164 (+375296254070, `+` URL-encoded as %2B) "
            "or national in the integration's default_region.",
        },
        required_params=frozenset({"phone"}),
        tags=("operator",),
    ),
)
OPERATOR_QUERY_PARAMS = {BY_PHONE_PATH: {"integration": "The U-ON integration id."}}
OPERATOR_REQUIRED_QUERY_PARAMS = {BY_PHONE_PATH: frozenset({"integration"})}
