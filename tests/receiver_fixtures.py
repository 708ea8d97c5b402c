"""Helpers for the receiver tests: serve a receiver, add integrations, cut the database.

Test modules import what they use (`from tests.receiver_fixtures import ...`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from crm_schema.integrations import Integration, add_integration, set_active
from provider_emulators.reliability.stack import sqlite_held
from provider_emulators.testing import running_server
from webhook_receiver.app import create_app


@contextlib.contextmanager
def serve_receiver(
    database_url: str, *, server_options: dict[str, Any] | None = None, **overrides: Any
) -> Iterator[str]:
    """A receiver on a real uvicorn server; yields its base URL.

    ``overrides`` go to the receiver's config, ``server_options`` to uvicorn's (e.g.
    ``{"access_log": True, "log_level": "info"}``).
    """
    app = create_app(database_url, **overrides)
    with running_server(app, **(server_options or {})) as base_url:
        yield base_url


def add_allio(engine: Engine, name: str = "acme", uuid: str | None = None) -> Integration:
    """A fresh active ALLIO integration (as the CLI would add it)."""
    with engine.begin() as conn:
        return add_integration(
            conn,
            provider="allio",
            name=name,
            integration_uuid=uuid or f"uuid-{name}-0001",
            api_base_url="http://allio.invalid",
            credentials={"token": "secret-token"},
        )


def toggle(engine: Engine, integration: Integration, active: bool) -> None:
    """Enable / disable directly in the database (what `crm-sync` does)."""
    with engine.begin() as conn:
        set_active(conn, integration.id, active)


def webhook(integration: Integration, indexes: list[Any] | None = None, **extra: Any) -> dict:
    """A valid ALLIO webhook body for `integration`."""
    return {
        "uuid": integration.integration_uuid,
        "command": "RESERVE_ADD",
        "indexes": [111, 222] if indexes is None else indexes,
        **extra,
    }


def assert_error(resp: httpx.Response, status: int) -> dict:
    """A refusal: ``status`` with a JSON body whose `error` says what is wrong."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert isinstance(body["error"], str) and body["error"]
    return body


@contextlib.contextmanager
def sqlite_write_lock(database_url: str) -> Iterator[None]:
    """Hold SQLite's write lock from another connection (BEGIN EXCLUSIVE)."""
    with sqlite_held(make_url(database_url).database):
        yield
