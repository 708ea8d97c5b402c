"""Integration records: create, list, look up, update and toggle connected accounts.

Every value of `credentials` is stored encrypted (``{"api_token": "fernet:..."}``,
crm_sync.encryption): the keys stay readable, callers see plaintext in
`Integration.credentials`. `webhook_secret` stays plaintext (the receiver compares it).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from crm_schema.provider_tokens import STATE_NAME
from crm_schema.tables import integrations, provider_tokens
from crm_schema.task_queue import as_utc, now_utc
from crm_sync import encryption
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
    # Why a person is needed ("needs re-authorization: ...", "... blocked this IP: ...").
    attention: str | None = None
    attention_at: datetime | None = None

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

    def masked_webhook(self, text: str) -> str:
        """``text`` with the webhook key masked like every other secret."""
        return text.replace(self.webhook_key, mask_secret(self.webhook_key))

    def public_dict(self, reveal_webhook: bool = False) -> dict[str, Any]:
        """JSON-safe view with every secret masked (the webhook key too, unless revealed)."""
        show = (lambda text: text) if reveal_webhook else self.masked_webhook
        return {
            "id": self.id,
            "provider": self.provider,
            "name": self.name,
            "integration_uuid": self.integration_uuid,
            "webhook_key": show(self.webhook_key),
            "webhook_path": show(self.webhook_path),
            "api_base_url": self.api_base_url,
            "credentials": {k: mask_secret(v) for k, v in self.credentials.items()},
            "webhook_secret": mask_secret(self.webhook_secret) if self.webhook_secret else None,
            "settings": self.settings,
            "is_active": self.is_active,
            "attention": self.attention,
            "attention_at": self.attention_at.isoformat() if self.attention_at else None,
        }


def new_webhook_key() -> str:
    """A random URL-safe webhook key with 192 bits of entropy."""
    return secrets.token_urlsafe(24)


def _what(integration_id: int | None) -> str:
    return f"the credentials of integration {integration_id}" if integration_id else "credentials"


def seal_credentials(
    credentials: Mapping[str, Any], cipher: encryption.Cipher | None = None
) -> dict[str, str]:
    """Each value encrypted (as JSON, so any type round-trips); the keys stay readable.

    Without a configured key this raises SecretKeyError before anything is written.
    """
    seal = cipher.encrypt if cipher is not None else encryption.encrypt
    return {
        name: seal(json.dumps(value, ensure_ascii=False)) for name, value in credentials.items()
    }


def open_credentials(
    stored: Mapping[str, Any] | None,
    integration_id: int | None,
    cipher: encryption.Cipher | None = None,
) -> dict[str, Any]:
    """Stored credentials in plaintext; a value written before encryption is read as is."""
    out: dict[str, Any] = {}
    what = _what(integration_id)
    for name, value in (stored or {}).items():
        if not encryption.is_encrypted(value):
            out[name] = value
            continue
        text = cipher.decrypt(value, what) if cipher else encryption.decrypt(value, what)
        try:
            out[name] = json.loads(text)
        except ValueError:
            out[name] = text
    return out


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
        credentials=open_credentials(row.credentials, row.id),
        webhook_secret=row.webhook_secret,
        attention=row.attention,
        attention_at=as_utc(row.attention_at),
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
    sealed = seal_credentials(credentials)  # no key: refused here, before any write
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
    if webhook_secret is not None:
        # A provider that finds the integration by its secret (iiko's authToken on the
        # shared endpoint) needs each secret to name one integration. Never echo it.
        taken = conn.execute(
            select(integrations.c.id).where(
                integrations.c.provider == provider,
                integrations.c.webhook_secret == webhook_secret,
            )
        ).first()
        if taken is not None:
            raise IntegrationError(
                f"another {provider} integration (id {taken.id}) already uses this webhook token"
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
                credentials=sealed,
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
        merged = get_integration(conn, integration_id).credentials | credentials
        values["credentials"] = seal_credentials(merged)
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


def set_attention(conn: Connection, integration_id: int, reason: str) -> None:
    """Record why the integration needs a person (shown by `integrations list`/`show`).

    ``reason`` must be free of secrets; the first one stays until cleared, with its
    time, unless the reason changes.
    """
    reason = reason.strip()[:1000] or "needs attention"
    conn.execute(
        update(integrations)
        .where(
            integrations.c.id == integration_id,
            (integrations.c.attention.is_(None)) | (integrations.c.attention != reason),
        )
        .values(attention=reason, attention_at=now_utc())
    )


def clear_attention(conn: Connection, integration_id: int) -> None:
    """The integration is fine again (e.g. re-authorized)."""
    conn.execute(
        update(integrations)
        .where(integrations.c.id == integration_id, integrations.c.attention.is_not(None))
        .values(attention=None, attention_at=None)
    )


def integration_attention(engine: Engine, integration_id: int) -> str | None:
    """Why the integration needs a person, or None (for asset checks and sensors)."""
    with engine.connect() as conn:
        return conn.execute(
            select(integrations.c.attention).where(integrations.c.id == integration_id)
        ).scalar_one_or_none()


@dataclass(frozen=True)
class RotationCounts:
    """What `rotate_secrets` re-encrypted (counts only)."""

    integrations: int = 0
    credentials: int = 0
    plaintext_credentials: int = 0
    tokens: int = 0
    plaintext_tokens: int = 0


def rotate_secrets(
    conn: Connection, read: encryption.Cipher, write: encryption.Cipher
) -> RotationCounts:
    """Re-encrypt every credential and provider token with ``write`` (call in one transaction).

    ``read`` decrypts what is stored (plaintext from before encryption is taken as is);
    a value it cannot decrypt raises DecryptError naming the integration, and the
    caller's transaction then writes nothing. Rows are locked (PostgreSQL) so a token
    renewed meanwhile is never overwritten with its predecessor.
    """
    n_integrations = n_credentials = n_plain = 0
    rows = conn.execute(
        select(integrations.c.id, integrations.c.credentials)
        .order_by(integrations.c.id)
        .with_for_update()
    ).all()
    for row in rows:
        stored = dict(row.credentials or {})
        if not stored:
            continue
        plain = open_credentials(stored, row.id, cipher=read)
        n_plain += sum(1 for v in stored.values() if not encryption.is_encrypted(v))
        conn.execute(
            update(integrations)
            .where(integrations.c.id == row.id)
            .values(credentials=seal_credentials(plain, cipher=write))
        )
        n_integrations += 1
        n_credentials += len(stored)
    n_tokens = n_plain_tokens = 0
    t = provider_tokens.c
    token_rows = conn.execute(
        select(t.integration_id, t.name, t.access_token, t.refresh_token, t.version)
        .where(t.name != STATE_NAME)  # pending OAuth states are hashes, not secrets to seal
        .order_by(t.integration_id, t.name)
        .with_for_update()
    ).all()
    for row in token_rows:
        values: dict[str, str] = {}
        for column in ("access_token", "refresh_token"):
            stored_value = getattr(row, column)
            if not stored_value:
                continue
            what = f"the {row.name} {column} of integration {row.integration_id}"
            values[column] = write.encrypt(read.decrypt(stored_value, what))
            n_tokens += 1
            n_plain_tokens += not encryption.is_encrypted(stored_value)
        if values:
            # The version guard: a token renewed since we read it is not overwritten.
            done = conn.execute(
                update(provider_tokens)
                .where(
                    t.integration_id == row.integration_id,
                    t.name == row.name,
                    t.version == row.version,
                )
                .values(**values)
            ).rowcount
            if done != 1:
                raise IntegrationError(
                    f"the {row.name} token of integration {row.integration_id} changed during "
                    "the rotation: nothing was written, run it again"
                )
    return RotationCounts(n_integrations, n_credentials, n_plain, n_tokens, n_plain_tokens)
