"""amoCRM OAuth 2 over real HTTP against the emulator: `integrations add` exchanging the
code at once (a refused code leaves nothing behind), long-lived tokens, the receiver's
`/oauth/amocrm/callback` with a hashed single-use state, eight processes refreshing at
once with exactly one refresh call, and a refused refresh that asks for
re-authorization (visible in `integrations list`) without a retry loop."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select, update
from starlette.applications import Starlette

from crm_schema.integrations import get_integration, list_integrations, rotate_secrets
from crm_schema.provider_tokens import STATE_NAME, TokenStore, consume_state, issue_state
from crm_schema.tables import provider_tokens
from crm_schema.task_queue import now_utc
from crm_sync.cli import main
from crm_sync.encryption import Cipher, current_cipher, generate_key
from orchestration.db import dispose_engines
from orchestration.defs.amocrm.resources import AmocrmResource, integration_attention
from orchestration.resources import ProviderAuthError
from provider_emulators.amocrm import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REDIRECT_URI,
    create_app,
)
from provider_emulators.testing import running_server
from tests.mp_workers import warm_pool
from webhook_receiver.app import Receiver
from webhook_receiver.config import ReceiverConfig
from webhook_receiver.providers.amocrm import oauth

LONG_LIVED = "llt-SECRET-0123456789abcdef0123"
PROCESSES = 8


@pytest.fixture(autouse=True)
def _dispose() -> Iterator[None]:
    yield
    dispose_engines()


@pytest.fixture
def emulator() -> Iterator[str]:
    with running_server(create_app(long_lived_token=LONG_LIVED)) as base:
        yield base


def run(database_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env={"DATABASE_URL": database_url})
    return result.exit_code, result.output


def add(database_url: str, base: str, *credential: str, secret: str = DEFAULT_CLIENT_SECRET):
    return run(
        database_url,
        "integrations",
        "add",
        "--provider",
        "amocrm",
        "--name",
        "Clinic",
        "--subdomain",
        "clinic",
        "--client-id",
        DEFAULT_CLIENT_ID,
        "--client-secret",
        secret,
        "--redirect-uri",
        DEFAULT_REDIRECT_URI,
        "--api-base-url",
        base,
        "--json",
        *credential,
    )


def count_rows(engine: Engine, table: str) -> int:
    # Not conftest's: spawned workers import this module, and conftest sets a new key.
    with engine.connect() as conn:
        return conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()


def admin(base: str, method: str, path: str, **kw: Any) -> Any:
    response = httpx.request(method, f"{base}/_admin{path}", timeout=10, **kw)
    response.raise_for_status()
    return response.json()


def token_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(select(provider_tokens)).all()


def resource(database_url: str) -> AmocrmResource:
    return AmocrmResource(database_url=database_url, backoff_initial_seconds=0.05)


def integration(engine: Engine, integration_id: int) -> Any:
    with engine.connect() as conn:
        return get_integration(conn, integration_id)


# ---- integrations add ----------------------------------------------------------------


def test_add_with_a_code_stores_the_pair_encrypted(emulator, engine, database_url) -> None:
    code, out = add(database_url, emulator, "--auth-code", "code-install-1", "--mock-lead-id")
    assert code == 0, out
    data = json.loads(out)
    assert data["attention"] is None and data["settings"]["mock_lead_id"] is True
    for secret in (DEFAULT_CLIENT_SECRET, "code-install-1"):
        assert secret not in out
    (row,) = token_rows(engine)
    assert row.name == "oauth" and row.integration_id == data["id"]
    assert row.access_token.startswith("fernet:") and row.refresh_token.startswith("fernet:")
    stored = TokenStore(engine, data["id"], "oauth").get()
    assert stored is not None and stored.access_token.startswith("at-")
    assert stored.expires_at is not None and stored.expires_at > now_utc() + timedelta(hours=23)
    assert admin(emulator, "GET", "/oauth")["codes_exchanged"] == 1
    # The code is never stored; the integration works with the pair.
    item = integration(engine, data["id"])
    assert "auth_code" not in item.credentials and "auth_code" not in item.settings
    with resource(database_url).client_for(item) as client:
        assert client.search_leads("nothing") == []


@pytest.mark.parametrize(
    ("credential", "secret", "why"),
    [
        (("--auth-code", "bad-code-1"), DEFAULT_CLIENT_SECRET, "Authorization code is invalid"),
        (("--auth-code", "code-ok-1"), "wrong-client-secret-123", "Client authentication"),
    ],
)
def test_a_refused_code_leaves_nothing_behind(
    emulator, engine, database_url, credential, secret, why
) -> None:
    code, out = add(database_url, emulator, *credential, secret=secret)
    assert code != 0
    assert "amoCRM authorization failed" in out and "nothing was added" in out and why in out
    for value in (secret, credential[1]):
        assert value not in out
    assert count_rows(engine, "integrations") == 0 and token_rows(engine) == []


def test_add_unreachable_amocrm_is_a_clear_error(engine, database_url) -> None:
    code, out = add(database_url, "http://127.0.0.1:9", "--auth-code", "code-x-1")
    assert code != 0 and "could not reach 127.0.0.1" in out and "code-x-1" not in out
    assert count_rows(engine, "integrations") == 0


def test_add_with_a_long_lived_token(emulator, engine, database_url) -> None:
    code, out = add(database_url, emulator, "--long-lived-token", LONG_LIVED)
    assert code == 0, out
    assert LONG_LIVED not in out and token_rows(engine) == []
    data = json.loads(out)
    item = integration(engine, data["id"])
    assert item.credentials["long_lived_token"] == LONG_LIVED
    with resource(database_url).client_for(item) as client:
        assert client.get_lead(1) is None
    code, out = add(database_url, emulator)  # neither credential
    assert code != 0 and "exactly one of --auth-code and --long-lived-token" in out
    code, out = add(
        database_url, emulator, "--auth-code", "code-1", "--long-lived-token", LONG_LIVED
    )
    assert code != 0 and "exactly one" in out and LONG_LIVED not in out


def test_update_keeps_attention_unless_cleared(emulator, engine, database_url) -> None:
    code, out = add(database_url, emulator, "--auth-code", "code-install-2")
    assert code == 0, out
    item_id = json.loads(out)["id"]
    from crm_schema.integrations import set_attention

    with engine.begin() as conn:
        set_attention(conn, item_id, "needs re-authorization: test")
    code, out = run(
        database_url, "integrations", "update", str(item_id), "--setting", "fields.mc.labs=42"
    )
    assert code == 0, out
    item = integration(engine, item_id)
    assert item.settings["fields"]["mc"]["labs"] == 42
    assert item.attention == "needs re-authorization: test"
    code, out = run(database_url, "integrations", "enable", str(item_id))
    assert code == 0 and "needs re-authorization: test" in out
    code, out = run(database_url, "integrations", "update", str(item_id), "--auth-code", "code-9")
    assert code != 0 and "only by `integrations add`" in out and "code-9" not in out
    code, out = run(database_url, "integrations", "update", str(item_id), "--clear-attention")
    assert code == 0, out
    assert integration(engine, item_id).attention is None


# ---- the receiver's callback ---------------------------------------------------------


@pytest.fixture
def callback(database_url) -> Iterator[str]:
    """The receiver's OAuth callback route on a real server."""
    receiver = Receiver(ReceiverConfig.load(database_url))
    app = Starlette(routes=oauth.routes(receiver))
    with running_server(app) as base:
        yield base
    for close in receiver.on_close:
        close()


def test_callback_exchanges_the_code_for_the_state(
    emulator, callback, engine, database_url
) -> None:
    code, out = add(database_url, emulator, "--long-lived-token", LONG_LIVED)
    code, out = add(database_url, emulator, "--auth-code", "code-install-3")
    item_id = json.loads(out)["id"]
    from crm_schema.integrations import set_attention

    with engine.begin() as conn:
        set_attention(conn, item_id, "needs re-authorization: refused")
    before = TokenStore(engine, item_id, "oauth").get()
    code, out = run(database_url, "amocrm", "auth-url", str(item_id), "--json")
    assert code == 0, out
    url = json.loads(out)["url"]
    query = parse_qs(urlsplit(url).query)
    assert query["client_id"] == [DEFAULT_CLIENT_ID] and query["mode"] == ["post_message"]
    state = query["state"][0]
    # Only the state's hash is stored.
    with engine.connect() as conn:
        stored = conn.execute(
            select(provider_tokens.c.access_token).where(provider_tokens.c.name == STATE_NAME)
        ).scalar_one()
    assert state not in stored and hashlib.sha256(state.encode()).hexdigest() in stored

    with httpx.Client(base_url=callback, timeout=10) as http:
        for params, status, why in (
            ({"code": "code-cb-1", "state": "not-a-state"}, 403, "unknown"),
            ({"code": "code-cb-1"}, 400, "required"),
            ({"error": "access_denied", "state": state}, 400, "declined"),
        ):
            bad = http.get(oauth.CALLBACK_PATH, params=params)
            assert bad.status_code == status and why in bad.json()["error"], bad.text
        assert TokenStore(engine, item_id, "oauth").get() == before  # nothing changed
        ok = http.get(oauth.CALLBACK_PATH, params={"code": "code-cb-1", "state": state})
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"status": "authorized", "integration_id": item_id}
        assert ok.headers["cache-control"] == "no-store"
        after = TokenStore(engine, item_id, "oauth").get()
        assert after is not None and before is not None and after.version > before.version
        assert integration(engine, item_id).attention is None
        again = http.get(oauth.CALLBACK_PATH, params={"code": "code-cb-2", "state": state})
        assert again.status_code == 403 and "already used" in again.json()["error"]
        # A code amoCRM refuses: 400 with its reason, the tokens untouched.
        code, out = run(database_url, "amocrm", "auth-url", str(item_id), "--json")
        state2 = parse_qs(urlsplit(json.loads(out)["url"]).query)["state"][0]
        refused = http.get(oauth.CALLBACK_PATH, params={"code": "nope-1", "state": state2})
        assert refused.status_code == 400 and "invalid" in refused.json()["error"]
        assert "nope-1" not in refused.text
        assert TokenStore(engine, item_id, "oauth").get() == after
    assert admin(emulator, "GET", "/oauth")["codes_exchanged"] == 2


def test_states_expire_and_are_single_use(engine, emulator, database_url) -> None:
    code, out = add(database_url, emulator, "--auth-code", "code-install-4")
    item_id = json.loads(out)["id"]
    state = issue_state(engine, item_id, timedelta(minutes=5))
    with engine.begin() as conn:
        conn.execute(
            update(provider_tokens)
            .where(provider_tokens.c.name == STATE_NAME)
            .values(expires_at=now_utc() - timedelta(seconds=1))
        )
    assert consume_state(engine, state) is None  # expired (and gone)
    state = issue_state(engine, item_id)
    newer = issue_state(engine, item_id)  # a fresh URL replaces the last one
    assert consume_state(engine, state) is None
    assert consume_state(engine, newer) == item_id and consume_state(engine, newer) is None
    code, out = run(database_url, "amocrm", "auth-url", "999")
    assert code != 0 and "no integration with id 999" in out


def test_authorize_by_hand_and_secret_rotation_skips_states(emulator, engine, database_url) -> None:
    code, out = add(database_url, emulator, "--auth-code", "code-install-5")
    item_id = json.loads(out)["id"]
    state = issue_state(engine, item_id)
    code, out = run(database_url, "amocrm", "authorize", str(item_id), "--auth-code", "code-h-1")
    assert code == 0 and "authorized" in out and "code-h-1" not in out
    code, out = run(database_url, "amocrm", "authorize", str(item_id), "--auth-code", "x-bad")
    assert code != 0 and "refused (400)" in out and "x-bad" not in out
    # Rotating the encryption key re-seals the tokens but leaves a pending state's hash.
    with engine.begin() as conn:
        counts = rotate_secrets(conn, current_cipher(), Cipher([generate_key()]))
    assert counts.tokens == 2  # the oauth pair, not the state
    assert consume_state(engine, state) == item_id


# ---- refresh under load ----------------------------------------------------------------


def refresh_worker(args: dict[str, Any]) -> dict[str, Any]:
    """One process: a lead through AmocrmResource (the token shared in the database)."""
    import logging

    from crm_schema.engine import make_engine
    from crm_schema.integrations import get_integration
    from orchestration.defs.amocrm.resources import AmocrmResource

    logging.getLogger("orchestration").setLevel(logging.ERROR)
    engine = make_engine(args["database_url"])
    with engine.connect() as conn:
        item = get_integration(conn, args["integration_id"])
    engine.dispose()
    amo = AmocrmResource(database_url=args["database_url"], backoff_initial_seconds=0.05)
    time.sleep(max(0.0, args["start_at"] - time.time()))
    with amo.client_for(item) as client:
        lead = client.get_lead(args["lead_id"])
    return {"lead": lead["id"] if lead else None, "done_at": time.time()}


@pytest.mark.slow
def test_eight_processes_refreshing_at_once_make_one_refresh_call(
    emulator, engine, database_url
) -> None:
    code, out = add(database_url, emulator, "--auth-code", "code-install-6")
    item_id = json.loads(out)["id"]
    (lead_id,) = admin(emulator, "POST", "/leads", json={"names": ["ID_1"]})["ids"]
    first = TokenStore(engine, item_id, "oauth").get()
    assert first is not None
    # The access token is dead in amoCRM too: every process must refresh (or wait).
    admin(emulator, "DELETE", "/tokens")
    with engine.begin() as conn:
        conn.execute(update(provider_tokens).values(expires_at=now_utc() - timedelta(minutes=1)))
    admin(emulator, "DELETE", "/requests")
    with warm_pool(PROCESSES) as pool:
        start_at = time.time() + 0.5
        jobs = [
            {"database_url": database_url, "integration_id": item_id, "lead_id": lead_id,
             "start_at": start_at}
            for _ in range(PROCESSES)
        ]  # fmt: skip
        results = pool.map(refresh_worker, jobs)
    seconds = max(r["done_at"] for r in results) - start_at
    counts = admin(emulator, "GET", "/oauth")
    requests = admin(emulator, "GET", "/requests")
    refresh_calls = sum(1 for r in requests if r["path"] == "/oauth2/access_token")
    print(
        f"\nconcurrent refresh: {PROCESSES} processes, {refresh_calls} refresh call(s), "
        f"all done in {seconds:.2f} s"
    )
    assert refresh_calls == 1 and counts["refreshes"] == 1 and counts["refused"] == 0
    assert all(r["lead"] == lead_id for r in results)
    new = TokenStore(engine, item_id, "oauth").get()
    assert new is not None and new.access_token != first.access_token
    # Every process carried on with the one new token (the emulator keys its quota on it).
    new_key = hashlib.sha256(f"token:{new.access_token}".encode()).hexdigest()[:12]
    api = [r for r in requests if r["path"].startswith("/api/v4/leads")]
    assert len(api) == PROCESSES and {r["quota_key"] for r in api} == {new_key}
    assert all(r["status"] == 200 for r in api)


def test_401_refreshes_once_and_a_refused_refresh_asks_for_reauthorization(
    emulator, engine, database_url
) -> None:
    code, out = add(database_url, emulator, "--auth-code", "code-install-7")
    item_id = json.loads(out)["id"]
    item = integration(engine, item_id)
    # amoCRM forgot the access token: 401 → one refresh → the retry succeeds.
    admin(emulator, "DELETE", "/tokens")
    with resource(database_url).client_for(item) as client:
        assert client.get_lead(1) is None
    assert admin(emulator, "GET", "/oauth")["refreshes"] == 1
    # Now the refresh token is revoked too: one refused refresh, no loop.
    admin(emulator, "DELETE", "/tokens", params={"refresh": "1"})
    admin(emulator, "DELETE", "/requests")
    with resource(database_url).client_for(item) as client:
        with pytest.raises(ProviderAuthError) as refused:
            client.get_lead(1)
        assert "needs re-authorization" in str(refused.value)
    requests = admin(emulator, "GET", "/requests")
    assert [r["path"] for r in requests] == ["/api/v4/leads/1", "/oauth2/access_token"]
    attention = integration_attention(engine, item_id)
    assert attention is not None and attention.startswith("needs re-authorization")
    assert f"auth-url {item_id}" in attention
    code, out = run(database_url, "integrations", "list")
    assert code == 0 and "needs re-authorization" in out and "attention" in out.splitlines()[0]
    code, out = run(database_url, "integrations", "show", str(item_id))
    assert "attention: needs re-authorization" in out
    with engine.connect() as conn:
        (listed,) = list_integrations(conn)
    assert listed.attention == attention
    # Re-authorized by hand: attention cleared, calls work again.
    code, out = run(database_url, "amocrm", "authorize", str(item_id), "--auth-code", "code-r-1")
    assert code == 0, out
    item = integration(engine, item_id)
    assert item.attention is None
    with resource(database_url).client_for(item) as client:
        assert client.get_lead(1) is None


def test_the_receiver_serves_the_callback(database_url, engine) -> None:
    from tests.receiver_fixtures import serve_receiver

    with serve_receiver(database_url) as base, httpx.Client(base_url=base, timeout=10) as http:
        bad = http.get(oauth.CALLBACK_PATH, params={"code": "code-1", "state": "forged"})
        assert bad.status_code == 403 and "unknown" in bad.json()["error"]
        assert oauth.CALLBACK_PATH in http.get("/openapi.json").json()["paths"]
