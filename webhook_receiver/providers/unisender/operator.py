"""Unisender's part of the operator API: the accounts (the seed's `/accounts` endpoints
and its "unlink an account" call) and the synced / unsynced views.

- `GET /api/v1/accounts`, `GET|PUT|DELETE /api/v1/accounts/{id}`,
- `POST /api/v1/accounts/{id}/disconnect`: deactivated, rows kept (enable it again with
  `crm-sync integrations enable ID`),
- `GET /api/v1/accounts/{id}/sync` and `/unsync?skip&limit`: the contacts, unsynced
  ones with the reason.

The API key is never returned, not even masked.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from crm_schema import integrations as integ
from crm_sync.registry import get_provider
from webhook_receiver.openapi import Operation
from webhook_receiver.operator_api.common import (
    ApiError,
    OperatorApi,
    answer,
    endpoint,
    invalid,
    paging,
    problem,
)
from webhook_receiver.operator_api.monitoring import PAGE_ERRORS, PAGING_PARAMS
from webhook_receiver.providers.unisender import accounts

ACCOUNTS_PATH = "/api/v1/accounts"
ACCOUNT_PATH = "/api/v1/accounts/{account_id}"
DISCONNECT_PATH = ACCOUNT_PATH + "/disconnect"
SYNC_PATH = ACCOUNT_PATH + "/sync"
UNSYNC_PATH = ACCOUNT_PATH + "/unsync"


class AccountCounts(BaseModel):
    """Contacts per export state."""

    pending: int
    synced: int
    invalid: int
    failed: int
    removed: int
    not_exported: int = Field(description="amoCRM contacts not exported yet.")
    unsynced: int = Field(description="pending + invalid + failed + not_exported.")


class AccountView(BaseModel):
    """A Unisender account (the API key is never shown)."""

    id: int
    name: str
    amocrm_integration_id: int | None
    amocrm_integration_name: str | None
    list_ids: list[int]
    api_base_url: str | None
    active: bool
    attention: str | None
    attention_at: str | None
    counts: AccountCounts


class AccountList(BaseModel):
    """Every Unisender account."""

    items: list[AccountView]


class AccountUpdate(BaseModel):
    """What `PUT` may change; absent fields stay."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    list_ids: list[int] | None = Field(None, min_length=1)
    active: bool | None = None


class RemovedAccount(BaseModel):
    """What `DELETE` did: the rows deleted per table (amoCRM's contacts stay)."""

    id: int
    removed: bool
    deleted_rows: dict[str, int]
    note: str


class ContactView(BaseModel):
    """One contact's export state."""

    contact_id: int
    amocrm_id: str | None
    name: str | None
    email: str | None
    status: str = Field(examples=["invalid"])
    reason: str | None = Field(description="Why it is not synced (None when synced).")
    list_ids: list[int] | None
    attempts: int
    synced_at: str | None
    updated_at: str | None
    deleted_in_amocrm: bool


class ContactsPage(BaseModel):
    """A page of contacts, by contact id."""

    account_id: int
    items: list[ContactView]
    skip: int
    limit: int
    has_more: bool


def _account_id(request: Request) -> int:
    raw = request.path_params["account_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18 or int(raw) < 1:
        raise ApiError(404, "no such account")
    return int(raw)


def _account(conn: Connection, account_id: int) -> integ.Integration:
    try:
        return accounts.get_account(conn, account_id)
    except accounts.AccountError as exc:
        raise ApiError(404, str(exc)) from None


def _update(conn: Connection, account_id: int, change: AccountUpdate) -> dict[str, Any]:
    item = _account(conn, account_id)
    settings = None
    if change.list_ids is not None:
        try:
            settings = get_provider(accounts.PROVIDER).validate_settings(
                dict(item.settings) | {"list_ids": change.list_ids}
            )
        except ValueError as exc:
            raise invalid([problem("list_ids", str(exc))]) from None
    item = integ.update_integration(conn, account_id, name=change.name, settings=settings)
    if change.active is not None and change.active != item.is_active:
        item = integ.set_active(conn, account_id, change.active)
    return accounts.account_view(conn, item)


def _remove(conn: Connection, account_id: int) -> dict[str, Any]:
    deleted = accounts.remove_account(conn, _account(conn, account_id))
    return {
        "id": account_id,
        "removed": True,
        "deleted_rows": deleted,
        "note": "the account and its export state are deleted; the amoCRM contacts stay, "
        "and the contacts already in the Unisender lists stay there",
    }


class AccountRoutes:
    """The handlers (one instance per app)."""

    def __init__(self, api: OperatorApi) -> None:
        self.api = api

    async def list(self, request: Request) -> Response:
        await self.api.authenticate(request)
        return answer({"items": await self.api.transaction(accounts.list_accounts)})

    async def get(self, request: Request) -> Response:
        await self.api.authenticate(request)
        account_id = _account_id(request)
        return answer(
            await self.api.transaction(
                lambda conn: accounts.account_view(conn, _account(conn, account_id))
            )
        )

    async def put(self, request: Request) -> Response:
        await self.api.authenticate(request)
        account_id = _account_id(request)
        body = await self.api.json_body(request)
        try:
            change = AccountUpdate.model_validate(body)
        except ValidationError as exc:
            raise invalid(
                [
                    problem(".".join(str(p) for p in e["loc"]) or "body", e["msg"])
                    for e in exc.errors()
                ]
            ) from None
        return answer(await self.api.transaction(lambda conn: _update(conn, account_id, change)))

    async def disconnect(self, request: Request) -> Response:
        await self.api.authenticate(request)
        account_id = _account_id(request)

        def work(conn: Connection) -> dict[str, Any]:
            _account(conn, account_id)
            return accounts.account_view(conn, integ.set_active(conn, account_id, False))

        return answer(await self.api.transaction(work))

    async def delete(self, request: Request) -> Response:
        await self.api.authenticate(request)
        account_id = _account_id(request)
        return answer(await self.api.transaction(lambda conn: _remove(conn, account_id)))

    async def contacts(self, request: Request, synced: bool) -> Response:
        await self.api.authenticate(request)
        account_id = _account_id(request)
        skip, limit, problems = paging(request)
        if problems:
            raise invalid(problems)

        def work(conn: Connection) -> tuple[list[dict[str, Any]], bool]:
            item = _account(conn, account_id)
            return accounts.contacts_page(conn, item, synced=synced, skip=skip, limit=limit)

        items, more = await self.api.transaction(work)
        return answer(
            {
                "account_id": account_id,
                "items": items,
                "skip": skip,
                "limit": limit,
                "has_more": more,
            }
        )

    async def sync(self, request: Request) -> Response:
        return await self.contacts(request, synced=True)

    async def unsync(self, request: Request) -> Response:
        return await self.contacts(request, synced=False)


def operator_routes(api: OperatorApi) -> list[BaseRoute]:
    """Unisender's operator routes."""
    h = AccountRoutes(api)
    return [
        Route(ACCOUNTS_PATH, endpoint(h.list), methods=["GET"]),
        Route(ACCOUNT_PATH, endpoint(h.get), methods=["GET"]),
        Route(ACCOUNT_PATH, endpoint(h.put), methods=["PUT"]),
        Route(ACCOUNT_PATH, endpoint(h.delete), methods=["DELETE"]),
        Route(DISCONNECT_PATH, endpoint(h.disconnect), methods=["POST"]),
        Route(SYNC_PATH, endpoint(h.sync), methods=["GET"]),
        Route(UNSYNC_PATH, endpoint(h.unsync), methods=["GET"]),
    ]


_ERRORS = {
    401: "No or unknown operator token.",
    404: "No Unisender account with this id.",
    503: "The database is unavailable.",
}
_ID = {"account_id": "The Unisender account's integration id."}


def _op(path: str, method: str, summary: str, ok: type[BaseModel], **extra: Any) -> Operation:
    errors = extra.pop("errors", _ERRORS)
    params = {} if path == ACCOUNTS_PATH else _ID
    return Operation(
        path=path,
        method=method,
        summary=summary,
        ok=ok,
        errors=errors,
        path_params=params,
        tags=("operator",),
        **extra,
    )


OPERATOR_OPERATIONS = (
    _op(
        ACCOUNTS_PATH,
        "get",
        "Unisender accounts",
        AccountList,
        errors={401: _ERRORS[401], 503: _ERRORS[503]},
    ),
    _op(ACCOUNT_PATH, "get", "One Unisender account", AccountView),
    _op(
        ACCOUNT_PATH,
        "put",
        "Change an account's name, list ids or active flag",
        AccountView,
        body=AccountUpdate,
        errors=_ERRORS
        | {
            413: "Body over the size limit.",
            415: "A Content-Type that is not JSON.",
            422: "Invalid body: every problem named.",
        },
    ),
    _op(
        ACCOUNT_PATH,
        "delete",
        "Remove an account and its export state (says what was deleted)",
        RemovedAccount,
    ),
    _op(
        DISCONNECT_PATH,
        "post",
        "Unlink an account: deactivated, nothing deleted",
        AccountView,
    ),
    _op(
        SYNC_PATH,
        "get",
        "An account's synced contacts",
        ContactsPage,
        errors=_ERRORS | {422: PAGE_ERRORS[422]},
    ),
    _op(
        UNSYNC_PATH,
        "get",
        "An account's unsynced contacts, each with the reason",
        ContactsPage,
        errors=_ERRORS | {422: PAGE_ERRORS[422]},
    ),
)
OPERATOR_QUERY_PARAMS = {SYNC_PATH: PAGING_PARAMS, UNSYNC_PATH: PAGING_PARAMS}
