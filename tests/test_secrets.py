"""Credentials and provider tokens encrypted at rest; the key, its absence, a wrong key,
`crm-sync secrets generate-key` and `rotate` (on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from sqlalchemy import Engine, text

from crm_schema.integrations import add_integration, get_integration, update_integration
from crm_sync import encryption
from crm_sync.cli import main
from crm_sync.settings import get_settings
from orchestration.resources.auth import NewToken, TokenStore
from tests.conftest import count_rows

TOKEN = "tok-SECRET-0123456789abcdef"
ACCESS = "access-SECRET-aaaa1111bbbb2222"
REFRESH = "refresh-SECRET-cccc3333dddd4444"
PLAIN = "plain-SECRET-0123456789"
UUID = "0b7d6c3e-1f2a-4b5c-9d8e-7f6a5b4c3d2e"
ROOT = Path(__file__).resolve().parent.parent
KEY_VARS = ("CRM_SYNC_SECRET_KEY", "CRM_SYNC_SECRET_KEY_FILE", "CRM_SYNC_NEW_SECRET_KEY")


@contextmanager
def keys(**env: str | None) -> Iterator[None]:
    """Run with these key variables (None: unset), then restore the test process's key."""
    saved = {name: os.environ.get(name) for name in KEY_VARS}
    for name in KEY_VARS:
        os.environ.pop(name, None)
    for name, value in env.items():
        if value is not None:
            os.environ[name] = value
    get_settings.cache_clear()
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value
        get_settings.cache_clear()


def cli(database_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args], env={"DATABASE_URL": database_url})
    return result.exit_code, result.output


def add(engine: Engine, token: str = TOKEN, uuid: str = UUID) -> int:
    with engine.begin() as conn:
        return add_integration(
            conn,
            provider="allio",
            name="estate",
            integration_uuid=uuid,
            api_base_url="http://127.0.0.1:9",
            credentials={"api_token": token},
        ).id


def raw_credentials(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT CAST(credentials AS TEXT) FROM integrations ORDER BY id")
        ).all()
    return [str(r[0]) for r in rows]


def raw_tokens(engine: Engine) -> list[tuple[str | None, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT access_token, refresh_token FROM provider_tokens ORDER BY integration_id")
        ).all()
    return [(r[0], r[1]) for r in rows]


def test_credentials_are_encrypted_at_rest_and_read_back_in_plaintext(engine: Engine) -> None:
    ident = add(engine)
    [stored] = raw_credentials(engine)
    assert TOKEN not in stored
    assert '"api_token"' in stored and "fernet:" in stored  # the keys stay readable
    with engine.begin() as conn:
        assert get_integration(conn, ident).credentials == {"api_token": TOKEN}
        new = "rotated-SECRET-abcdef0123456789"
        item = update_integration(conn, ident, credentials={"api_token": new})
    assert item.credentials == {"api_token": new}
    [stored] = raw_credentials(engine)
    assert new not in stored and TOKEN not in stored


def test_provider_tokens_are_encrypted_at_rest(engine: Engine) -> None:
    ident = add(engine)
    store = TokenStore(engine, ident, "oauth")
    stored = store.seed(NewToken(ACCESS, 3600, REFRESH))
    assert (stored.access_token, stored.refresh_token) == (ACCESS, REFRESH)
    [(access, refresh)] = raw_tokens(engine)
    assert access and refresh and access.startswith("fernet:") and refresh.startswith("fernet:")
    assert ACCESS not in access + refresh and REFRESH not in access + refresh
    # A token renewal stores the new one encrypted too.
    store.store(NewToken("access-SECRET-renewed-5555", 60))
    [(access, refresh)] = raw_tokens(engine)
    assert "renewed" not in access and store.get().access_token == "access-SECRET-renewed-5555"  # type: ignore[union-attr]
    assert store.get().refresh_token == REFRESH  # type: ignore[union-attr]


def test_no_key_refuses_to_write_a_credential_and_says_how_to_make_one(
    database_url: str, engine: Engine
) -> None:
    with keys():
        code, out = cli(
            database_url, "integrations", "add", "--provider", "allio", "--name", "n",
            "--integration-uuid", UUID, "--api-base-url", "http://x", "--api-token", TOKEN,
        )  # fmt: skip
        assert code == 1
        assert "CRM_SYNC_SECRET_KEY" in out and "crm-sync secrets generate-key" in out
        assert TOKEN not in out
        assert count_rows(engine, "integrations") == 0
    ident = add(engine)  # with the key
    before = raw_credentials(engine)
    with keys():
        code, out = cli(database_url, "integrations", "update", str(ident), "--api-token", "x" * 20)
        assert code == 1 and "crm-sync secrets generate-key" in out and "x" * 20 not in out
        with pytest.raises(encryption.SecretKeyError, match="CRM_SYNC_SECRET_KEY"):
            TokenStore(engine, ident, "oauth").seed(NewToken(ACCESS, 60))
    assert raw_credentials(engine) == before
    assert count_rows(engine, "provider_tokens") == 0


def test_values_written_before_encryption_are_still_read(engine: Engine) -> None:
    ident = add(engine)
    with engine.begin() as conn:  # as a database from before this change holds them
        conn.execute(
            text("UPDATE integrations SET credentials = :c"), {"c": '{"api_token": "plain"}'}
        )
        conn.execute(
            text("INSERT INTO provider_tokens (integration_id, name, access_token, refresh_token, "
                 "version) VALUES (:i, 'oauth', 'plain-access', 'plain-refresh', 1)"),
            {"i": ident},
        )  # fmt: skip
    with keys():  # plaintext needs no key
        with engine.connect() as conn:
            assert get_integration(conn, ident).credentials == {"api_token": "plain"}
        token = TokenStore(engine, ident, "oauth").get()
        assert token is not None and token.access_token == "plain-access"


def test_a_wrong_key_names_the_integration_never_the_value(
    database_url: str, engine: Engine
) -> None:
    ident = add(engine)
    TokenStore(engine, ident, "oauth").seed(NewToken(ACCESS, 3600, REFRESH))
    with keys(CRM_SYNC_SECRET_KEY=Fernet.generate_key().decode()):
        code, out = cli(database_url, "integrations", "show", str(ident))
        assert code == 1
        assert f"cannot decrypt the credentials of integration {ident}" in out
        assert "CRM_SYNC_SECRET_KEY" in out and TOKEN not in out
        with pytest.raises(encryption.DecryptError) as err:
            TokenStore(engine, ident, "oauth").get()
        assert f"integration {ident}" in str(err.value)
        assert ACCESS not in str(err.value) and REFRESH not in str(err.value)


def test_a_malformed_or_unreadable_key_is_named_without_its_text(tmp_path: Path) -> None:
    bad = "not-a-key-SECRET-0123456789"
    with keys(CRM_SYNC_SECRET_KEY=f"{Fernet.generate_key().decode()},{bad}"):
        with pytest.raises(encryption.SecretKeyError) as err:
            encryption.encrypt("x")
        assert "key 2 of 2 is not a Fernet key" in str(err.value) and bad not in str(err.value)
    missing = tmp_path / "nope.key"
    with (
        keys(CRM_SYNC_SECRET_KEY_FILE=str(missing)),
        pytest.raises(encryption.SecretKeyError) as err,
    ):
        encryption.encrypt("x")
    assert str(missing) in str(err.value) and "CRM_SYNC_SECRET_KEY_FILE" in str(err.value)


def test_the_key_file_is_used_when_the_variable_is_unset(engine: Engine, tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    path = tmp_path / "secret.key"
    path.write_text(key + "\n")
    with keys(CRM_SYNC_SECRET_KEY_FILE=str(path)):
        ident = add(engine)
    with keys(CRM_SYNC_SECRET_KEY=key), engine.connect() as conn:
        assert get_integration(conn, ident).credentials == {"api_token": TOKEN}


def test_several_keys_the_first_encrypts_all_decrypt(engine: Engine) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with keys(CRM_SYNC_SECRET_KEY=old):
        first = add(engine)
    with keys(CRM_SYNC_SECRET_KEY=f"{new},{old}"):
        second = add(engine, uuid="00000000-0000-4000-8000-000000000002")
        with engine.connect() as conn:
            assert get_integration(conn, first).credentials["api_token"] == TOKEN
    with keys(CRM_SYNC_SECRET_KEY=new), engine.connect() as conn:
        assert get_integration(conn, second).credentials["api_token"] == TOKEN


def test_generate_key_prints_a_usable_key() -> None:
    result = CliRunner().invoke(main, ["secrets", "generate-key"])
    assert result.exit_code == 0
    key = result.output.strip()
    Fernet(key)  # a valid Fernet key
    assert key != CliRunner().invoke(main, ["secrets", "generate-key"]).output.strip()


def test_rotate_reencrypts_every_credential_and_token_and_prints_counts_only(
    database_url: str, engine: Engine
) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with keys(CRM_SYNC_SECRET_KEY=old):
        first = add(engine)
        second = add(engine, "tok-SECOND-9876543210fedcba", "00000000-0000-4000-8000-000000000002")
        TokenStore(engine, first, "oauth").seed(NewToken(ACCESS, 3600, REFRESH))
    third = add(engine, uuid="00000000-0000-4000-8000-000000000003")
    with engine.begin() as conn:  # the third as written before encryption: plaintext
        conn.execute(
            text("UPDATE integrations SET credentials = :c WHERE id = :i"),
            {"c": json.dumps({"api_token": PLAIN}), "i": third},
        )
    before = raw_credentials(engine)
    with keys(CRM_SYNC_SECRET_KEY=old, CRM_SYNC_NEW_SECRET_KEY=new):
        code, out = cli(database_url, "secrets", "rotate")
    assert code == 0, out
    assert "3 credential values of 3 integrations (1 were plaintext)" in out
    assert "2 provider tokens (0 were plaintext)" in out
    for secret in (TOKEN, ACCESS, REFRESH, old, new, "plain-SECRET"):
        assert secret not in out
    after = raw_credentials(engine)
    assert all("fernet:" in c and "SECRET" not in c for c in after) and after != before
    # Only the new key reads them now.
    with keys(CRM_SYNC_SECRET_KEY=new):
        with engine.connect() as conn:
            assert get_integration(conn, first).credentials["api_token"] == TOKEN
            assert get_integration(conn, third).credentials["api_token"] == PLAIN
        token = TokenStore(engine, first, "oauth").get()
        assert token is not None and (token.access_token, token.refresh_token) == (ACCESS, REFRESH)
    with (
        keys(CRM_SYNC_SECRET_KEY=old),
        engine.connect() as conn,
        pytest.raises(encryption.DecryptError, match=f"integration {second}"),
    ):
        get_integration(conn, second)


def test_rotate_with_an_unreadable_value_writes_nothing(database_url: str, engine: Engine) -> None:
    stranger = Fernet.generate_key().decode()
    with keys(CRM_SYNC_SECRET_KEY=stranger):
        lost = add(engine)
    add(engine, uuid="00000000-0000-4000-8000-000000000002")  # readable with the test key
    before = raw_credentials(engine)
    new = Fernet.generate_key().decode()
    code, out = cli(database_url, "secrets", "rotate", "--new-key", new)
    assert code == 1
    assert f"integration {lost}" in out and "nothing was re-encrypted" in out
    assert raw_credentials(engine) == before
    code, out = cli(database_url, "secrets", "rotate", "--new-key", "not-a-key")
    assert code == 2 and "is not a Fernet key" in out and "not-a-key" not in out.split(":", 1)[-1]


def test_subprocesses_inherit_the_test_key(database_url: str, engine: Engine) -> None:
    """conftest sets CRM_SYNC_SECRET_KEY in os.environ: the CLI run as a process reads it."""
    add(engine)
    env = dict(os.environ, DATABASE_URL=database_url)
    out = subprocess.run(
        [str(Path(sys.executable).parent / "crm-sync"), "integrations", "list", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert '"api_token": "****cdef"' in out.stdout and TOKEN not in out.stdout
