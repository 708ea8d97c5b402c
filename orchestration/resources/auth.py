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
from datetime import timedelta

import httpx

from crm_schema.provider_tokens import NewToken, StoredToken, TokenStore
from crm_sync import encryption
from orchestration.resources.errors import (
    ProviderAuthError,
    ProviderRateLimitedError,
    ProviderUnavailableError,
)

# The token row and its values live in crm_schema (the CLI and receiver seed it too).
__all__ = [
    "BearerAuth",
    "FetchedTokenAuth",
    "NewToken",
    "OAuth2RefreshAuth",
    "StoredToken",
    "StoredTokenAuth",
    "TokenStore",
]


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer <token>`` on every request."""

    def __init__(self, token: str) -> None:
        self._value = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._value
        yield request


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
