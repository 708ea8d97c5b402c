"""Operator tokens: stored hashed, verified by hash, revoked; `crm-sync operator-tokens`."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select, update

from crm_schema import operator_tokens as tokens
from crm_schema.tables import operator_tokens as table
from crm_sync.cli import main


def run(database_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args], env={"DATABASE_URL": database_url})
    return result.exit_code, result.output


def stored(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(table.c.name, table.c.token_hash))]


def test_create_verify_revoke(engine: Engine) -> None:
    with engine.begin() as conn:
        record, token = tokens.create(conn, "  ops-desk ")
    assert record.name == "ops-desk" and record.active and record.last_used_at is None
    assert token.startswith("crmop_") and len(token) >= 6 + 43
    # Only the SHA-256 is kept.
    assert stored(engine) == [("ops-desk", hashlib.sha256(token.encode()).hexdigest())]

    with engine.begin() as conn:
        assert tokens.verify(conn, token) == "ops-desk"
        first_use = tokens.get(conn, "ops-desk").last_used_at
        assert first_use is not None
        # Within a minute the stamp is not rewritten (no write per request) ...
        assert tokens.verify(conn, token) == "ops-desk"
        assert tokens.get(conn, "ops-desk").last_used_at == first_use
        # ... after a minute it is.
        old = datetime.now(UTC) - timedelta(minutes=2)
        conn.execute(update(table).values(last_used_at=old))
        assert tokens.verify(conn, token) == "ops-desk"
        assert tokens.get(conn, "ops-desk").last_used_at > first_use - timedelta(seconds=1)
        for wrong in ("", token[:-1], token + "x", "crmop_", "x" * 1000):
            assert tokens.verify(conn, wrong) is None

    with engine.begin() as conn:
        with pytest.raises(tokens.OperatorTokenError, match="already exists"):
            tokens.create(conn, "ops-desk")
        for bad in ("", "   ", "x" * 101, "tab\there"):
            with pytest.raises(tokens.OperatorTokenError):
                tokens.create(conn, bad)
        assert tokens.revoke(conn, "ops-desk").revoked_at is not None
        assert tokens.verify(conn, token) is None
        assert not tokens.revoke(conn, "ops-desk").active  # revoking twice is fine
        with pytest.raises(tokens.OperatorTokenError, match="no operator token"):
            tokens.revoke(conn, "nobody")
        # A revoked name can be given a new token; the old one stays dead.
        record, again = tokens.create(conn, "ops-desk")
        assert record.active and again != token
        assert tokens.verify(conn, again) == "ops-desk"
        assert tokens.verify(conn, token) is None
        assert [t.name for t in tokens.list_tokens(conn)] == ["ops-desk"]


def test_cli_prints_the_token_once_and_never_again(database_url: str, engine: Engine) -> None:
    code, out = run(database_url, "operator-tokens", "create", "crm-ui", "--json")
    assert code == 0, out
    created = json.loads(out)
    token = created["token"]
    assert created["name"] == "crm-ui" and created["active"] is True
    with engine.begin() as conn:
        assert tokens.verify(conn, token) == "crm-ui"

    code, out = run(database_url, "operator-tokens", "create", "robot")
    assert code == 0, out
    plain = out.strip().splitlines()[-1]
    assert plain.startswith("crmop_") and "shown only this once" in out

    code, out = run(database_url, "operator-tokens", "create", "robot")
    assert code != 0 and "already exists" in out

    code, out = run(database_url, "operator-tokens", "list", "--json")
    assert code == 0, out
    listed = json.loads(out)
    assert [t["name"] for t in listed] == ["crm-ui", "robot"]
    assert token not in out and plain not in out
    assert not any("token" in t or "token_hash" in t for t in listed)
    code, out = run(database_url, "operator-tokens", "list")
    assert code == 0 and "crm-ui" in out and "active" in out and token not in out

    code, out = run(database_url, "operator-tokens", "revoke", "crm-ui")
    assert code == 0 and "revoked" in out and token not in out
    code, out = run(database_url, "operator-tokens", "revoke", "nobody")
    assert code != 0 and "no operator token" in out
    with engine.begin() as conn:
        assert tokens.verify(conn, token) is None
        assert tokens.verify(conn, plain) == "robot"
    code, out = run(database_url, "operator-tokens", "list", "--json")
    assert [t["active"] for t in json.loads(out)] == [False, True]
