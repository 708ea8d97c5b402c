"""Operator tokens: who may call the operator API (`Authorization: Bearer <token>`).

A token is `crmop_` + 256 random bits; only its SHA-256 (hex) is stored, so a leaked
database gives no usable token, and a lookup by hash is safe against timing (the
attacker does not control the hash). `verify` stamps `last_used_at` at most once a
minute, so a busy caller does not write on every request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from crm_schema.tables import operator_tokens

TOKEN_PREFIX = "crmop_"  # noqa: S105 - a prefix, not a secret
MAX_NAME_LENGTH = 100
LAST_USED_RESOLUTION = timedelta(minutes=1)


class OperatorTokenError(ValueError):
    """A token request that cannot be carried out (clear message, never a token)."""


@dataclass(frozen=True)
class OperatorToken:
    """One token's record (never the token itself)."""

    id: int
    name: str
    created_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public_dict(self) -> dict[str, Any]:
        """JSON-safe view (timestamps as ISO 8601)."""
        return {
            "id": self.id,
            "name": self.name,
            "active": self.active,
            "created_at": _iso(self.created_at),
            "last_used_at": _iso(self.last_used_at),
            "revoked_at": _iso(self.revoked_at),
        }


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite gives naive UTC
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def hash_token(token: str) -> str:
    """The stored form of a token: SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh plaintext token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _check_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise OperatorTokenError("a token name must not be blank")
    if len(name) > MAX_NAME_LENGTH:
        raise OperatorTokenError(f"a token name has at most {MAX_NAME_LENGTH} characters")
    if not name.isprintable():
        raise OperatorTokenError("a token name must be printable text")
    return name


def _row(row: Any) -> OperatorToken:
    return OperatorToken(row.id, row.name, row.created_at, row.last_used_at, row.revoked_at)


def get(conn: Connection, name: str) -> OperatorToken | None:
    """The token record named ``name`` (revoked or not)."""
    row = conn.execute(select(operator_tokens).where(operator_tokens.c.name == name)).first()
    return None if row is None else _row(row)


def create(conn: Connection, name: str) -> tuple[OperatorToken, str]:
    """A new token for ``name``: (its record, the plaintext token — shown once, never stored).

    A name in use by an active token is refused; a revoked token's name is reused (the
    new token replaces the revoked one).
    """
    name = _check_name(name)
    token = new_token()
    now = datetime.now(UTC)
    existing = get(conn, name)
    if existing is not None and existing.active:
        raise OperatorTokenError(f"an operator token named {name!r} already exists")
    values = {"token_hash": hash_token(token), "created_at": now}
    try:
        if existing is not None:
            conn.execute(
                update(operator_tokens)
                .where(
                    operator_tokens.c.id == existing.id, operator_tokens.c.revoked_at.is_not(None)
                )
                .values(**values, last_used_at=None, revoked_at=None)
            )
        else:
            with conn.begin_nested():
                conn.execute(insert(operator_tokens).values(name=name, **values))
    except IntegrityError:  # a concurrent create of the same name won
        raise OperatorTokenError(f"an operator token named {name!r} already exists") from None
    record = get(conn, name)
    assert record is not None
    return record, token


def list_tokens(conn: Connection) -> list[OperatorToken]:
    """Every token record, by name."""
    rows = conn.execute(select(operator_tokens).order_by(operator_tokens.c.name))
    return [_row(r) for r in rows]


def revoke(conn: Connection, name: str) -> OperatorToken:
    """Revoke the token named ``name`` (a revoked one stays revoked); its record after."""
    record = get(conn, name)
    if record is None:
        raise OperatorTokenError(f"no operator token named {name!r}")
    if record.active:
        conn.execute(
            update(operator_tokens)
            .where(operator_tokens.c.id == record.id)
            .values(revoked_at=datetime.now(UTC))
        )
        record = get(conn, name)
        assert record is not None
    return record


def verify(conn: Connection, token: str) -> str | None:
    """The name behind an active ``token``, or None; stamps `last_used_at` (once a minute)."""
    if not token or len(token) > 512:
        return None
    c = operator_tokens.c
    row = conn.execute(
        select(c.id, c.name, c.last_used_at).where(
            c.token_hash == hash_token(token), c.revoked_at.is_(None)
        )
    ).first()
    if row is None:
        return None
    now = datetime.now(UTC)
    last = row.last_used_at
    if last is not None and last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    if last is None or now - last >= LAST_USED_RESOLUTION:
        conn.execute(update(operator_tokens).where(c.id == row.id).values(last_used_at=now))
    return row.name
