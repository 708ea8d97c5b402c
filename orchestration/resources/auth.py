"""Provider auth as ``httpx.Auth``: a bearer token, or a token kept in the database.

`StoredTokenAuth` keeps one access token per integration in `provider_tokens`, shared
by every process and host. Renewing it — fetching a new token with a login (iiko's
`apiLogin`, valid an hour) or refreshing an OAuth 2 pair whose refresh token is
single-use (amoCRM) — happens under a compare-and-swap lease on that row: one process
renews and stores the new token before anyone uses it; the others wait for it instead
of renewing too. A 401 renews once and retries; a refused renewal is an auth error,
never a retry loop.

The renewal request goes through the client's transport, so it takes a quota slot
and is logged like any other call. Both tokens are stored encrypted
(crm_sync.encryption, `fernet:...`); a plaintext token from before is still read.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import Engine, and_, or_, select, update

from crm_schema.engine import dialect_insert
from crm_schema.tables import provider_tokens
from crm_schema.task_queue import as_utc, now_utc
from crm_sync import encryption
from orchestration.resources.errors import (
    ProviderAuthError,
    ProviderRateLimitedError,
    ProviderUnavailableError,
)


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer <token>`` on every request."""

    def __init__(self, token: str) -> None:
        self._value = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._value
        yield request


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


@dataclass(frozen=True)
class NewToken:
    """What a renewal returned."""

    access_token: str
    expires_in: float | None  # seconds
    refresh_token: str | None = None


class TokenStore:
    """One integration's token row, with a compare-and-swap renewal lease."""

    def __init__(self, engine: Engine, integration_id: int, name: str = "access") -> None:
        self.engine = engine
        self.integration_id = integration_id
        self.name = name
        t = provider_tokens.c
        self._row = and_(t.integration_id == integration_id, t.name == name)

    def get(self) -> StoredToken | None:
        """The stored token, if any."""
        t = provider_tokens.c
        with self.engine.connect() as conn:
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

    def seed(self, token: NewToken) -> StoredToken:
        """Store a token obtained outside a renewal (e.g. an OAuth code exchange)."""
        values = self._values(token)  # encrypted first: without a key nothing is written
        with self.engine.begin() as conn:
            self._ensure_row(conn)
            conn.execute(update(provider_tokens).where(self._row).values(**values))
        stored = self.get()
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


class StoredTokenAuth(httpx.Auth):
    """Base of auths whose token lives in `TokenStore` (see module docstring).

    Subclasses say how to renew: ``renew_request`` builds the request from the stored
    token, ``read_token`` reads the answer.
    """

    requires_response_body = True
    provider = "provider"

    def __init__(
        self,
        store: TokenStore,
        *,
        header: str = "Authorization",
        scheme: str = "Bearer",
        margin: timedelta = timedelta(seconds=60),
        lock_ttl: timedelta = timedelta(seconds=30),
        wait_seconds: float = 30.0,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.header = header
        self.scheme = scheme
        self.margin = margin
        self.lock_ttl = lock_ttl
        self.wait_seconds = wait_seconds
        self.on_refused = on_refused
        self.owner = uuid.uuid4().hex

    def renew_request(self, current: StoredToken | None) -> httpx.Request:
        """The request that yields a new token."""
        raise NotImplementedError

    def read_token(self, response: httpx.Response) -> NewToken:
        """The token in a successful renewal answer."""
        raise NotImplementedError

    def _authorize(self, request: httpx.Request, token: StoredToken) -> None:
        value = token.access_token or ""
        request.headers[self.header] = f"{self.scheme} {value}" if self.scheme else value

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.store.get()
        if token is None or not token.usable(self.margin):
            token = yield from self._renew(token)
        self._authorize(request, token)
        response = yield request
        if response.status_code == 401:
            token = yield from self._renew(token, rejected=True)
            self._authorize(request, token)
            yield request

    def _renew(
        self, seen: StoredToken | None, rejected: bool = False
    ) -> Generator[httpx.Request, httpx.Response, StoredToken]:
        """A usable token newer than ``seen``: renewed here, or by whoever holds the lease."""
        # A renewed token must be stored encrypted: check for a key before asking the
        # provider, so a single-use refresh token is never spent on a token we cannot keep.
        encryption.current_cipher()
        seen_version = seen.version if seen else -1
        deadline = time.monotonic() + self.wait_seconds
        while True:
            current = self.store.get()
            fresh = current is not None and current.version != seen_version
            if fresh and current is not None and current.usable(self.margin):
                return current  # renewed by another process meanwhile
            if not rejected and current is not None and current.usable(self.margin):
                return current
            if self.store.try_lock(self.owner, self.lock_ttl):
                break
            if time.monotonic() > deadline:
                raise ProviderUnavailableError(
                    "token renewal by another process did not finish in time",
                    provider=self.provider,
                )
            time.sleep(0.05)
        latest = self.store.get()
        if latest is not None and latest.version != seen_version and latest.usable(self.margin):
            self.store.unlock(self.owner)  # renewed between our look and our lock
            return latest
        try:
            response = yield self.renew_request(latest)
            self._check(response)
            token = self.read_token(response)
            return self.store.store(token)
        except BaseException:
            self.store.unlock(self.owner)
            raise

    def _check(self, response: httpx.Response) -> None:
        status = response.status_code
        if status < 300:
            return
        if status == 429:
            raise ProviderRateLimitedError(
                "rate limited (429) renewing the token", provider=self.provider, status_code=status
            )
        if status >= 500:
            raise ProviderUnavailableError(
                f"server error ({status}) renewing the token",
                provider=self.provider,
                status_code=status,
            )
        message = f"token renewal refused ({status}): needs re-authorization"
        if self.on_refused is not None:
            self.on_refused(message)
        raise ProviderAuthError(message, provider=self.provider, status_code=status)


class FetchedTokenAuth(StoredTokenAuth):
    """A token fetched with a login and cached for its lifetime (iiko's `access_token`).

    ``fetch`` builds the login request; ``read`` returns the token and its lifetime.
    """

    def __init__(
        self,
        store: TokenStore,
        fetch: Callable[[], httpx.Request],
        read: Callable[[httpx.Response], NewToken],
        **kwargs: object,
    ) -> None:
        super().__init__(store, **kwargs)  # type: ignore[arg-type]
        self._fetch = fetch
        self._read = read

    def renew_request(self, current: StoredToken | None) -> httpx.Request:
        return self._fetch()

    def read_token(self, response: httpx.Response) -> NewToken:
        return self._read(response)


class OAuth2RefreshAuth(StoredTokenAuth):
    """OAuth 2 with single-use refresh tokens (amoCRM): the new pair is stored before use.

    ``refresh`` builds the refresh request from the stored refresh token; ``read``
    returns the new pair. With no stored pair the integration needs authorizing.
    """

    def __init__(
        self,
        store: TokenStore,
        refresh: Callable[[str], httpx.Request],
        read: Callable[[httpx.Response], NewToken],
        **kwargs: object,
    ) -> None:
        super().__init__(store, **kwargs)  # type: ignore[arg-type]
        self._refresh = refresh
        self._read = read

    def renew_request(self, current: StoredToken | None) -> httpx.Request:
        if current is None or not current.refresh_token:
            message = "no OAuth tokens stored: the integration needs authorizing"
            if self.on_refused is not None:
                self.on_refused(message)
            raise ProviderAuthError(message, provider=self.provider)
        return self._refresh(current.refresh_token)

    def read_token(self, response: httpx.Response) -> NewToken:
        return self._read(response)
