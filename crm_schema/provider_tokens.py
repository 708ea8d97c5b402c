"""Provider tokens kept in `provider_tokens`, shared by every process and host.

`TokenStore` is one integration's token row (encrypted, crm_sync.encryption) with a
compare-and-swap renewal lease (orchestration.resources.auth renews under it); the
CLI and the receiver seed it after an OAuth code exchange. OAuth ``state`` values of
an authorization in progress live here too, stored only as a hash, single use, with
an expiry.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, and_, delete, or_, select, update

from crm_schema.engine import dialect_insert
from crm_schema.tables import provider_tokens
from crm_schema.task_queue import as_utc, now_utc
from crm_sync import encryption
from crm_sync.oauth import NewToken

__all__ = [
    "STATE_NAME",
    "NewToken",
    "StoredToken",
    "TokenStore",
    "consume_state",
    "issue_state",
]

STATE_NAME = "oauth_state"  # the provider_tokens row of a pending OAuth authorization
STATE_PREFIX = "sha256:"
STATE_TTL = timedelta(minutes=30)


@dataclass(frozen=True)
class StoredToken:
    """One row of `provider_tokens`."""

    access_token: str | None
    refresh_token: str | None
    expires_at: datetime | None
    version: int

    def usable(self, margin: timedelta) -> bool:
        """True when there is an access token that stays valid for ``margin``."""
        if not self.access_token:
            return False
        return self.expires_at is None or self.expires_at - margin > now_utc()


class TokenStore:
    """One integration's token row, with a compare-and-swap renewal lease."""

    def __init__(self, engine: Engine, integration_id: int, name: str = "access") -> None:
        self.engine = engine
        self.integration_id = integration_id
        self.name = name
        t = provider_tokens.c
        self._row = and_(t.integration_id == integration_id, t.name == name)

    def get(self, conn: Connection | None = None) -> StoredToken | None:
        """The stored token, if any (read on ``conn`` when given)."""
        if conn is None:
            with self.engine.connect() as own:
                return self.get(own)
        t = provider_tokens.c
        row = conn.execute(
            select(t.access_token, t.refresh_token, t.expires_at, t.version).where(self._row)
        ).first()
        if row is None:
            return None
        return StoredToken(
            self._open(row.access_token, "access_token"),
            self._open(row.refresh_token, "refresh_token"),
            as_utc(row.expires_at),
            row.version,
        )

    def _open(self, stored: str | None, column: str) -> str | None:
        if not stored:
            return stored
        what = f"the {self.name} {column} of integration {self.integration_id}"
        return encryption.decrypt(stored, what)

    def seed(self, token: NewToken, conn: Connection | None = None) -> StoredToken:
        """Store a token obtained outside a renewal (e.g. an OAuth code exchange).

        With ``conn`` it is written in the caller's transaction (e.g. together with the
        integration row it belongs to), else in its own.
        """
        values = self._values(token)  # encrypted first: without a key nothing is written
        if conn is None:
            with self.engine.begin() as own:
                return self.seed(token, own)
        self._ensure_row(conn)
        conn.execute(update(provider_tokens).where(self._row).values(**values))
        stored = self.get(conn)
        assert stored is not None
        return stored

    def try_lock(self, owner: str, ttl: timedelta) -> bool:
        """Take the renewal lease (compare-and-swap); False while another holds it."""
        t = provider_tokens.c
        now = now_utc()
        with self.engine.begin() as conn:
            self._ensure_row(conn)
            taken = conn.execute(
                update(provider_tokens)
                .where(self._row, or_(t.lock_owner.is_(None), t.lock_expires_at < now))
                .values(lock_owner=owner, lock_expires_at=now + ttl)
            ).rowcount
        return taken == 1

    def unlock(self, owner: str) -> None:
        """Give the lease up without a new token."""
        t = provider_tokens.c
        with self.engine.begin() as conn:
            conn.execute(
                update(provider_tokens)
                .where(self._row, t.lock_owner == owner)
                .values(lock_owner=None, lock_expires_at=None)
            )

    def store(self, token: NewToken) -> StoredToken:
        """Save a renewed token (before anyone uses it) and release the lease."""
        values = self._values(token)
        with self.engine.begin() as conn:
            conn.execute(
                update(provider_tokens)
                .where(self._row)
                .values(**values, lock_owner=None, lock_expires_at=None)
            )
        stored = self.get()
        assert stored is not None
        return stored

    def _values(self, token: NewToken) -> dict[str, object]:
        expires = now_utc() + timedelta(seconds=token.expires_in) if token.expires_in else None
        values: dict[str, object] = {
            "access_token": encryption.encrypt(token.access_token),
            "expires_at": expires,
            "version": provider_tokens.c.version + 1,
            "updated_at": now_utc(),
        }
        if token.refresh_token is not None:
            values["refresh_token"] = encryption.encrypt(token.refresh_token)
        return values

    def _ensure_row(self, conn) -> None:  # noqa: ANN001
        stmt = dialect_insert(conn)(provider_tokens).on_conflict_do_nothing(
            index_elements=["integration_id", "name"]
        )
        conn.execute(stmt, {"integration_id": self.integration_id, "name": self.name, "version": 0})


def _state_hash(state: str) -> str:
    return STATE_PREFIX + hashlib.sha256(state.encode("utf-8")).hexdigest()


def issue_state(engine: Engine, integration_id: int, ttl: timedelta = STATE_TTL) -> str:
    """A fresh random OAuth ``state`` for ``integration_id`` (replaces any pending one).

    Only its SHA-256 is stored, with an expiry; :func:`consume_state` takes it once.
    """
    state = secrets.token_urlsafe(32)
    t = provider_tokens.c
    row = and_(t.integration_id == integration_id, t.name == STATE_NAME)
    with engine.begin() as conn:
        conn.execute(
            dialect_insert(conn)(provider_tokens).on_conflict_do_nothing(
                index_elements=["integration_id", "name"]
            ),
            {"integration_id": integration_id, "name": STATE_NAME, "version": 0},
        )
        conn.execute(
            update(provider_tokens)
            .where(row)
            .values(
                access_token=_state_hash(state),
                refresh_token=None,
                expires_at=now_utc() + ttl,
                version=t.version + 1,
                updated_at=now_utc(),
            )
        )
    return state


def consume_state(engine: Engine, state: str) -> int | None:
    """The integration a valid ``state`` was issued for, taking it (single use); else None.

    Looked up by its hash (the state itself is never stored or compared as text);
    an expired state is deleted and refused.
    """
    if not state or len(state) > 512:
        return None
    wanted = _state_hash(state)
    t = provider_tokens.c
    with engine.begin() as conn:
        found = conn.execute(
            select(t.integration_id, t.access_token, t.expires_at).where(
                t.name == STATE_NAME, t.access_token == wanted
            )
        ).first()
        if found is None or not hmac.compare_digest(str(found.access_token), wanted):
            return None
        # Deleting by the hash makes it single use even when two callbacks race.
        taken = conn.execute(
            delete(provider_tokens).where(
                t.integration_id == found.integration_id,
                t.name == STATE_NAME,
                t.access_token == wanted,
            )
        ).rowcount
    expires = as_utc(found.expires_at)
    if taken != 1 or expires is None or expires <= now_utc():
        return None
    return int(found.integration_id)
