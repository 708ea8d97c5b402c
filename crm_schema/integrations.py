"""Integration records: create, list, look up, update and toggle connected accounts."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from crm_schema.tables import integrations
from crm_sync.redaction import mask_secret
from crm_sync.registry import PROVIDERS, UnknownProvider, get_provider


class IntegrationError(ValueError):
    """A request about integrations that cannot be carried out (clear message)."""


@dataclass(frozen=True)
class Integration:
    """One connected provider account. `repr` never shows secrets."""

    id: int
    provider: str
    name: str
    integration_uuid: str | None
    webhook_key: str
    api_base_url: str | None
    settings: dict[str, Any]
    is_active: bool
    credentials: dict[str, Any]
    webhook_secret: str | None = None

    @property
    def webhook_paths(self) -> list[str]:
        """Every receiver path this integration's provider posts to."""
        spec = PROVIDERS.get(self.provider)
        paths = spec.webhook_paths if spec else ()
        return [p.format(webhook_key=self.webhook_key) for p in paths]

    @property
    def webhook_path(self) -> str:
        """The main webhook path ('' for a provider that sends none)."""
        paths = self.webhook_paths
        return paths[0] if paths else ""

    def __repr__(self) -> str:
        return f"Integration(id={self.id}, provider={self.provider!r}, name={self.name!r})"

    def public_dict(self) -> dict[str, Any]:
        """JSON-safe view with every secret masked."""
        return {
            "id": self.id,
            "provider": self.provider,
            "name": self.name,
            "integration_uuid": self.integration_uuid,
            "webhook_key": self.webhook_key,
            "webhook_path": self.webhook_path,
            "api_base_url": self.api_base_url,
            "credentials": {k: mask_secret(v) for k, v in self.credentials.items()},
            "webhook_secret": mask_secret(self.webhook_secret) if self.webhook_secret else None,
            "settings": self.settings,
            "is_active": self.is_active,
        }


def new_webhook_key() -> str:
    """A random URL-safe webhook key with 192 bits of entropy."""
    return secrets.token_urlsafe(24)


def _row_to_integration(row: Any) -> Integration:
    return Integration(
        id=row.id,
        provider=row.provider,
        name=row.name,
        integration_uuid=row.integration_uuid,
        webhook_key=row.webhook_key,
        api_base_url=row.api_base_url,
        settings=dict(row.settings or {}),
        is_active=bool(row.is_active),
        credentials=dict(row.credentials or {}),
        webhook_secret=row.webhook_secret,
    )


def add_integration(
    conn: Connection,
    *,
    provider: str,
    name: str,
    integration_uuid: str | None,
    api_base_url: str | None,
    credentials: dict[str, Any],
    settings: dict[str, Any] | None = None,
    webhook_secret: str | None = None,
) -> Integration:
    """Insert an integration with a fresh webhook key; duplicate uuids are refused."""
    try:
        get_provider(provider)
    except UnknownProvider as exc:
        raise IntegrationError(str(exc)) from None
    if integration_uuid is not None:
        dup = conn.execute(
            select(integrations.c.id).where(
                integrations.c.provider == provider,
                integrations.c.integration_uuid == integration_uuid,
            )
        ).first()
        if dup is not None:
            raise IntegrationError(
                f"{provider} integration with uuid {integration_uuid} already exists (id {dup.id})"
            )
    try:
        new_id = conn.execute(
            insert(integrations)
            .values(
                provider=provider,
                name=name,
                integration_uuid=integration_uuid,
                webhook_key=new_webhook_key(),
                api_base_url=api_base_url,
                webhook_secret=webhook_secret,
                credentials=credentials,
                settings=settings or {},
                is_active=True,
            )
            .returning(integrations.c.id)
        ).scalar_one()
    except IntegrityError as exc:  # a concurrent add won the race
        raise IntegrationError(
            f"{provider} integration with uuid {integration_uuid} already exists"
        ) from exc
    return get_integration(conn, new_id)


def get_integration(conn: Connection, integration_id: int) -> Integration:
    """The integration with this id, or IntegrationError."""
    row = conn.execute(select(integrations).where(integrations.c.id == integration_id)).first()
    if row is None:
        raise IntegrationError(f"no integration with id {integration_id}")
    return _row_to_integration(row)


def list_integrations(
    conn: Connection, provider: str | None = None, active_only: bool = False
) -> list[Integration]:
    """All integrations, optionally of one provider / only active ones, by id."""
    query = select(integrations).order_by(integrations.c.id)
    if provider is not None:
        query = query.where(integrations.c.provider == provider)
    if active_only:
        query = query.where(integrations.c.is_active.is_(True))
    return [_row_to_integration(r) for r in conn.execute(query)]


def set_active(conn: Connection, integration_id: int, active: bool) -> Integration:
    """Enable or disable an integration."""
    result = conn.execute(
        update(integrations).where(integrations.c.id == integration_id).values(is_active=active)
    )
    if result.rowcount == 0:
        raise IntegrationError(f"no integration with id {integration_id}")
    return get_integration(conn, integration_id)


def update_integration(
    conn: Connection,
    integration_id: int,
    *,
    name: str | None = None,
    api_base_url: str | None = None,
    credentials: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> Integration:
    """Change an integration; `credentials` entries replace the stored ones by key,
    `settings` replaces the settings (validate them first)."""
    values: dict[str, Any] = {}
    if name is not None:
        values["name"] = name
    if api_base_url is not None:
        values["api_base_url"] = api_base_url
    if credentials:
        values["credentials"] = get_integration(conn, integration_id).credentials | credentials
    if settings is not None:
        values["settings"] = settings
    if not values:
        return get_integration(conn, integration_id)
    result = conn.execute(
        update(integrations).where(integrations.c.id == integration_id).values(**values)
    )
    if result.rowcount == 0:
        raise IntegrationError(f"no integration with id {integration_id}")
    return get_integration(conn, integration_id)
