"""Shared helpers for the Unisender export tests: an amoCRM integration with contacts,
a Unisender account linked to it, and the Unisender emulator over real HTTP.

The emulator is `provider_emulators.unisender.create_app`; until it lands a minimal
stand-in (the emulator's own state, behind a tiny Starlette app) serves the same API
shape, so the export is still tested over real HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, insert, select, update

from crm_schema.integrations import Integration, add_integration, get_integration
from crm_schema.providers.unisender import unisender_contacts
from crm_schema.tables import api_call_log, contacts
from crm_schema.task_queue import now_utc
from orchestration.defs.unisender.resources import UnisenderResource
from orchestration.unisender.client import UnisenderClient
from tests.amocrm_fixtures import add_amocrm

API_KEY = "unisender-test-api-key-0123456789abcdef"  # noqa: S105 - a test value
DENIED_KEY = "unisender-denied-api-key-0123456789"  # noqa: S105 - a test value
LISTS = (1, 2)
FAST_QUOTA = 1000.0  # the real 20/s would slow tests that are not about it

__all__ = [
    "API_KEY",
    "DENIED_KEY",
    "Emulator",
    "add_account",
    "add_contacts",
    "call_log_rows",
    "export_rows",
    "unisender_client",
    "unisender_resource",
    "unisender_server",
]


# ---- the database ----------------------------------------------------------------------


def add_account(
    engine: Engine,
    base_url: str,
    *,
    api_key: str = API_KEY,
    list_ids: tuple[int, ...] = (1,),
    settings: dict[str, Any] | None = None,
    amocrm: Integration | None = None,
) -> tuple[Integration, Integration]:
    """(amoCRM integration, Unisender account linked to it)."""
    amocrm = amocrm or add_amocrm(engine, name=f"amocrm-{uuid.uuid4().hex[:6]}")
    with engine.begin() as conn:
        account = add_integration(
            conn,
            provider="unisender",
            name=f"unisender-{uuid.uuid4().hex[:6]}",
            integration_uuid=None,
            api_base_url=base_url,
            credentials={"api_key": api_key},
            settings={
                "amocrm_integration_id": amocrm.id,
                "list_ids": list(list_ids),
                **(settings or {}),
            },
        )
    return amocrm, account


def reload(engine: Engine, integration: Integration) -> Integration:
    with engine.connect() as conn:
        return get_integration(conn, integration.id)


def add_contacts(
    engine: Engine,
    amocrm: Integration,
    count: int,
    *,
    start: int = 1,
    email: Any = None,
    domain: str = "example.com",
) -> list[int]:
    """``count`` amoCRM contacts (external ids from ``start``); ``email(i)`` overrides."""
    tag = uuid.uuid4().hex[:6]
    rows = []
    for i in range(start, start + count):
        address = email(i) if email is not None else f"c{i}-{tag}@{domain}"
        rows.append(
            {
                "integration_id": amocrm.id,
                "external_id": str(i),
                "source_entity": "amocrm",
                "role": "contact",
                "first_name": f"First{i}",
                "last_name": f"Last{i}",
                "email": address,
                "custom_fields": {},
                "raw": {},
                "synced_at": now_utc(),
            }
        )
    with engine.begin() as conn:
        conn.execute(insert(contacts), rows)
        found = conn.execute(
            select(contacts.c.id)
            .where(
                contacts.c.integration_id == amocrm.id,
                contacts.c.external_id.in_([r["external_id"] for r in rows]),
            )
            .order_by(contacts.c.id)
        ).scalars()
        return list(found)


def change_contact(engine: Engine, contact_id: int, **values: Any) -> None:
    """Change a contact as the amoCRM sync would (bumping synced_at)."""
    with engine.begin() as conn:
        conn.execute(
            update(contacts)
            .where(contacts.c.id == contact_id)
            .values(synced_at=now_utc(), **values)
        )


def delete_contact(engine: Engine, contact_id: int, when: datetime | None = None) -> None:
    change_contact(engine, contact_id, deleted_at=when or now_utc())


def export_rows(engine: Engine, account: Integration) -> dict[int, dict[str, Any]]:
    """{contact_id: unisender_contacts row} of one account."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(unisender_contacts).where(unisender_contacts.c.integration_id == account.id)
        ).mappings()
        return {r["contact_id"]: dict(r) for r in rows}


def call_log_rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(api_call_log).where(api_call_log.c.provider == "unisender")
        ).mappings()
        return [dict(r) for r in rows]


def unisender_resource(url: str, **kwargs: Any) -> UnisenderResource:
    options = {"quota_per_second": FAST_QUOTA, "max_attempts": 3, "backoff_initial_seconds": 0.01}
    return UnisenderResource(database_url=url, **(options | kwargs))


def unisender_client(url: str, account: Integration, **kwargs: Any) -> UnisenderClient:
    return unisender_resource(url, **kwargs).client_for(account)


# ---- the emulator ------------------------------------------------------------------------


def _stand_in_app() -> Any:  # pragma: no cover - only until the emulator exists
    """The Unisender API shape over the emulator's state (no quota, no faults)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from provider_emulators.unisender.state import IMPORT_LIMIT, Account, UnisenderError

    account = Account([API_KEY], [DENIED_KEY], list(LISTS))
    log: list[dict[str, Any]] = []

    async def api(request: Request) -> JSONResponse:
        method = request.path_params["method"]
        form = dict(await request.form())
        query = dict(request.query_params)
        log.append({"method": method, "path": request.url.path, "form": form})
        try:
            if account.take_retry_later():
                raise UnisenderError("retry_later", "Service is busy, retry later")
            account.check_key(query.get("api_key") or form.get("api_key"))
            if method == "getLists":
                return JSONResponse({"result": account.get_lists()})
            if method == "importContacts":
                names: list[str] = []
                while f"field_names[{len(names)}]" in form:
                    names.append(form[f"field_names[{len(names)}]"])
                rows: list[list[str]] = []
                while f"data[{len(rows)}][0]" in form:
                    i = len(rows)
                    rows.append([form.get(f"data[{i}][{j}]", "") for j in range(len(names))])
                if "email" not in [n.lower() for n in names]:
                    raise UnisenderError("invalid_arg", "field_names must contain email")
                if len(rows) > IMPORT_LIMIT:
                    raise UnisenderError("invalid_arg", f"Too many rows: at most {IMPORT_LIMIT}")
                return JSONResponse({"result": account.import_contacts(names, rows).as_dict()})
            raise UnisenderError("invalid_arg", f"unknown method {method}")
        except UnisenderError as exc:
            return JSONResponse({"error": exc.message, "code": exc.code})

    async def requests(request: Request) -> JSONResponse:
        return JSONResponse(log)

    async def list_contacts(request: Request) -> JSONResponse:
        found = account.list_contacts(int(request.path_params["list_id"]))
        return JSONResponse(found, status_code=200 if found is not None else 404)

    async def retry_later(request: Request) -> JSONResponse:
        body = await request.json()
        account.retry_later = int(body.get("retry_later", 0))
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/_admin/requests", requests),
            Route("/_admin/lists/{list_id:int}/contacts", list_contacts),
            Route("/_admin/config", retry_later, methods=["PUT"]),
            Route("/{method}", api, methods=["GET", "POST"]),
        ]
    )


@pytest.fixture
def unisender_server() -> Iterator[tuple[Any, str]]:
    """(app, base URL) of a fresh emulator: keys API_KEY (DENIED_KEY refused), lists 1, 2."""
    from provider_emulators.testing import running_server

    try:
        from provider_emulators.unisender import create_app
    except ImportError:
        app = _stand_in_app()
    else:
        app = create_app(api_keys=[API_KEY], denied_keys=[DENIED_KEY], lists=list(LISTS))
    with running_server(app) as url:
        yield app, url


class Emulator:
    """The admin side of the emulator."""

    def __init__(self, url: str) -> None:
        self.url = url

    def list_contacts(self, list_id: int) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/_admin/lists/{list_id}/contacts")
        answer.raise_for_status()
        body = answer.json()
        return body["contacts"] if isinstance(body, dict) else body

    def emails(self, list_id: int) -> set[str]:
        return {c["email"].lower() for c in self.list_contacts(list_id)}

    def requests(self) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/_admin/requests").json()
        return body["requests"] if isinstance(body, dict) else body

    def retry_later(self, count: int) -> None:
        httpx.put(f"{self.url}/_admin/config", json={"retry_later": count}).raise_for_status()
