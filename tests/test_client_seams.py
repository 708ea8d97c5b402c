"""The provider client's seams for the providers to come, over real HTTP: form and query
bodies, per-request headers, empty answers, errors inside a 200, and auth as httpx.Auth
(bearer, a login token cached for its lifetime, OAuth 2 with single-use refresh tokens
shared by many processes)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select, update

from crm_schema.tables import api_call_log, provider_tokens
from crm_schema.task_queue import now_utc
from crm_sync.ratelimit import LocalRateLimiter, RatePolicy, Throttle
from orchestration.db import dispose_engines
from orchestration.resources import (
    ProviderAuthError,
    ProviderClient,
    ProviderRateLimitedError,
    ProviderRequestError,
)
from orchestration.resources.auth import (
    BearerAuth,
    FetchedTokenAuth,
    NewToken,
    OAuth2RefreshAuth,
    TokenStore,
)
from orchestration.resources.calllog import CallLog
from provider_emulators.testing import running_server
from tests.allio_fixtures import add_allio
from tests.mp_workers import oauth_worker, warm_pool
from tests.token_server import LOGIN, TokenServer


@pytest.fixture
def server() -> Iterator[tuple[TokenServer, str]]:
    api = TokenServer()
    with running_server(api.app) as base:
        yield api, base


@pytest.fixture(autouse=True)
def _dispose() -> Iterator[None]:
    yield
    dispose_engines()


class EnvelopeClient(ProviderClient):
    """Errors inside HTTP 200, the way Unisender reports them."""

    provider = "mail"

    def parse_response(self, response: httpx.Response) -> Any:
        body = super().parse_response(response)
        code = body.get("code") if isinstance(body, dict) else None
        if code == "retry_later":
            raise ProviderRateLimitedError("retry_later", provider=self.provider, retry_after=0.2)
        if code == "invalid_arg":
            raise ProviderRequestError("invalid_arg", provider=self.provider)
        return body


def _logged(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(select(api_call_log).order_by(api_call_log.c.id)).all()


def test_form_and_query_bodies_and_per_request_headers(server) -> None:
    _, base = server
    with ProviderClient(base) as client:
        body = client.request(
            "POST",
            "/echo",
            data={"field_names[0]": "email", "data[0][0]": "a@b.c"},
            params={"format": "json"},
            headers={"X-Req": "one"},
        )
        assert body["form"] == {"field_names[0]": "email", "data[0][0]": "a@b.c"}
        assert body["query"] == {"format": "json"}
        assert body["content_type"] == "application/x-www-form-urlencoded"
        assert body["x_req"] == "one"
        assert client.request("GET", "/echo", params={"phone": "375291234567"})["x_req"] is None
        with pytest.raises(ValueError, match="one of json, data or content"):
            client.request("POST", "/echo", json={}, data={"a": 1})


def test_204_and_empty_bodies_mean_nothing_not_an_error(server) -> None:
    _, base = server
    with ProviderClient(base, max_attempts=1) as client:
        assert client.request("POST", "/nothing") is None
        assert client.request("DELETE", "/nothing") is None
        assert client.request("GET", "/empty") is None


def test_errors_inside_a_200_back_off_everyone_or_fail_at_once(server, engine) -> None:
    api, base = server
    limiter = LocalRateLimiter()
    throttle = Throttle.single(limiter, "mail:ip:default", RatePolicy(rate=100))
    api.envelope_errors = ["retry_later"]
    with EnvelopeClient(
        base, throttle=throttle, call_log=CallLog(engine), backoff_initial_seconds=0.01
    ) as client:
        before = time.monotonic()
        assert client.request("GET", "/envelope") == {"result": {"ok": True}}
        assert time.monotonic() - before >= 0.2  # waited the error's retry-after
        assert limiter.reserve("mail:ip:default", 0.01).slot >= time.time() - 0.05
        api.envelope_errors = ["invalid_arg"]
        with pytest.raises(ProviderRequestError) as err:
            client.request("GET", "/envelope")
        assert err.value.attempts == 1  # never retried
    rows = _logged(engine)
    # The wire said 200; the call log says why each was still a failure.
    assert [(r.status_code, r.error) for r in rows] == [
        (200, "mail: retry_later"),
        (200, None),
        (200, "mail: invalid_arg"),
    ]


def test_bearer_auth_sets_the_header_and_the_log_never_shows_it(server, engine) -> None:
    api, base = server
    token = api.issue_pair()["access_token"]
    with ProviderClient(
        base, auth=BearerAuth(token), call_log=CallLog(engine), secrets=[token]
    ) as client:
        assert client.request("GET", "/api") == {"token": token}
    assert token not in repr([tuple(r) for r in _logged(engine)])


def _login_auth(engine: Engine, integration_id: int, base: str) -> FetchedTokenAuth:
    return FetchedTokenAuth(
        TokenStore(engine, integration_id, "access"),
        fetch=lambda: httpx.Request("POST", f"{base}/login", json={"apiLogin": LOGIN}),
        read=lambda r: NewToken(r.json()["token"], 3600),
    )


def test_a_login_token_is_fetched_once_shared_and_renewed_on_401(server, engine) -> None:
    api, base = server
    integ = add_allio(engine, base)
    log = CallLog(engine)
    with ProviderClient(
        base, auth=_login_auth(engine, integ.id, base), call_log=log, secrets=[LOGIN]
    ) as first:
        token = first.request("GET", "/api")["token"]
        assert first.request("GET", "/api")["token"] == token
    # Another client (another process) finds the cached token in the database.
    with ProviderClient(base, auth=_login_auth(engine, integ.id, base)) as second:
        assert second.request("GET", "/api")["token"] == token
    assert api.login_calls == 1
    # The provider revokes it: one 401, one new login, the call goes through.
    api.valid_access.clear()
    with ProviderClient(base, auth=_login_auth(engine, integ.id, base), call_log=log) as third:
        renewed = third.request("GET", "/api")["token"]
    assert renewed != token and api.login_calls == 2
    # Near its end of life a token is renewed before use.
    with engine.begin() as conn:
        conn.execute(update(provider_tokens).values(expires_at=now_utc()))
    with ProviderClient(base, auth=_login_auth(engine, integ.id, base)) as fourth:
        assert fourth.request("GET", "/api")["token"] not in (token, renewed)
    assert api.login_calls == 3
    rows = _logged(engine)
    assert [r.url.rsplit("/", 1)[-1] for r in rows][:3] == ["login", "api", "api"]
    assert all(LOGIN not in repr(tuple(r)) for r in rows)
    assert all(token not in repr(tuple(r)) for r in rows)


def _oauth(engine: Engine, integration_id: int, base: str, refused: list[str]) -> OAuth2RefreshAuth:
    def read(response: httpx.Response) -> NewToken:
        body = response.json()
        return NewToken(body["access_token"], body["expires_in"], body["refresh_token"])

    return OAuth2RefreshAuth(
        TokenStore(engine, integration_id, "oauth"),
        refresh=lambda rt: httpx.Request("POST", f"{base}/oauth/token", json={"refresh_token": rt}),
        read=read,
        on_refused=refused.append,
    )


def test_oauth_401_refreshes_once_and_a_refused_refresh_asks_for_reauthorization(
    server, engine
) -> None:
    api, base = server
    integ = add_allio(engine, base)
    store = TokenStore(engine, integ.id, "oauth")
    pair = api.issue_pair()
    store.seed(NewToken(pair["access_token"], 3600, pair["refresh_token"]))
    refused: list[str] = []
    api.valid_access.clear()  # the access token was revoked
    with ProviderClient(base, auth=_oauth(engine, integ.id, base, refused)) as client:
        token = client.request("GET", "/api")["token"]
    assert token != pair["access_token"] and api.refresh_calls == 1
    stored = store.get()
    assert stored is not None and stored.access_token == token
    assert stored.refresh_token not in (None, pair["refresh_token"])  # the new pair is kept
    # The refresh token is refused (revoked in amoCRM): an auth error, no retry loop.
    api.valid_access.clear()
    api.refuse_refresh = True
    with (
        ProviderClient(base, auth=_oauth(engine, integ.id, base, refused)) as client,
        pytest.raises(ProviderAuthError, match="needs re-authorization"),
    ):
        client.request("GET", "/api")
    assert api.refresh_calls == 2 and len(refused) == 1


@pytest.mark.slow
def test_many_processes_refreshing_at_once_make_one_refresh_call(
    server, engine, database_url
) -> None:
    api, base = server
    integ = add_allio(engine, base)
    pair = api.issue_pair()
    store = TokenStore(engine, integ.id, "oauth")
    store.seed(NewToken(pair["access_token"], 3600, pair["refresh_token"]))
    with engine.begin() as conn:  # expired: every process wants to refresh
        conn.execute(update(provider_tokens).values(expires_at=now_utc() - timedelta(days=1)))
    with warm_pool(4) as pool:
        start_at = time.time() + 0.5
        jobs = [
            {"database_url": database_url, "integration_id": integ.id, "base_url": base,
             "start_at": start_at}
            for _ in range(4)
        ]  # fmt: skip
        results = pool.map(oauth_worker, jobs)
    assert api.refresh_calls == 1
    tokens = {r["token"] for r in results}
    assert len(tokens) == 1 and store.get().access_token in tokens  # type: ignore[union-attr]
