"""`crm-sync` CLI: migrations, integrations, clear errors, secrets never printed."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from crm_schema.integrations import list_integrations
from crm_sync.cli import main
from tests.conftest import count_rows

TOKEN = "tok-SECRET-0123456789abcdef"
UUID = "0b7d6c3e-1f2a-4b5c-9d8e-7f6a5b4c3d2e"


def run(database_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args], env={"DATABASE_URL": database_url})
    return result.exit_code, result.output


def add(database_url: str, *extra: str, uuid: str = UUID) -> tuple[int, str]:
    return run(
        database_url,
        "integrations",
        "add",
        "--provider",
        "allio",
        "--name",
        "Demo estate",
        "--integration-uuid",
        uuid,
        "--api-base-url",
        "http://127.0.0.1:9/",
        "--api-token",
        TOKEN,
        *extra,
    )


def test_db_upgrade_creates_sqlite_file(tmp_path) -> None:
    path = tmp_path / "sub" / "crm.sqlite3"
    code, out = run(f"sqlite:///{path}", "db", "upgrade")
    assert code == 0, out
    assert path.exists()
    code, out = run(f"sqlite:///{path}", "integrations", "list")
    assert code == 0 and "no integrations" in out


def test_add_json_and_lifecycle(database_url: str, engine) -> None:
    code, out = add(database_url, "--json", "--delete-control")
    assert code == 0, out
    data = json.loads(out)
    assert data["provider"] == "allio"
    assert data["webhook_path"] == f"/webhooks/allio/{data['webhook_key']}"
    # token_urlsafe(24): 32 characters of base64 = 192 random bits
    assert len(data["webhook_key"]) >= 22
    assert data["settings"]["delete_control"] is True
    assert TOKEN not in out
    assert count_rows(engine, "integrations") == 1

    code, out = run(database_url, "integrations", "list", "--json")
    assert code == 0 and TOKEN not in out
    [listed] = json.loads(out)
    assert listed["id"] == data["id"] and listed["is_active"] is True

    code, out = run(database_url, "integrations", "disable", str(data["id"]))
    assert code == 0 and "disabled" in out
    code, out = run(database_url, "integrations", "show", str(data["id"]), "--json")
    assert json.loads(out)["is_active"] is False and TOKEN not in out
    code, out = run(database_url, "integrations", "enable", str(data["id"]))
    code, out = run(database_url, "integrations", "show", str(data["id"]))
    assert code == 0 and "is_active: True" in out and TOKEN not in out


def test_plain_add_prints_webhook_url(database_url: str, engine) -> None:
    code, out = add(database_url)
    assert code == 0, out
    assert "/webhooks/allio/" in out and TOKEN not in out
    with engine.connect() as conn:
        [item] = list_integrations(conn)
    # The provider needs the whole URL: `add` is where it is shown in full.
    assert f"webhook URL: http://127.0.0.1:8000/webhooks/allio/{item.webhook_key}" in out


def test_list_and_show_mask_the_webhook_key_unless_revealed(database_url: str) -> None:
    code, out = add(database_url, "--json")
    assert code == 0, out
    added = json.loads(out)
    key, ident = added["webhook_key"], str(added["id"])
    assert added["webhook_url"].endswith(f"/webhooks/allio/{key}")
    masked = f"****{key[-4:]}"

    code, out = run(database_url, "integrations", "list")
    assert code == 0 and key not in out and f"/webhooks/allio/{masked}" in out
    code, out = run(database_url, "integrations", "list", "--json")
    assert code == 0 and key not in out and TOKEN not in out
    [listed] = json.loads(out)
    assert listed["webhook_key"] == masked
    assert listed["webhook_path"] == f"/webhooks/allio/{masked}"
    assert listed["webhook_url"] == f"http://127.0.0.1:8000/webhooks/allio/{masked}"

    for args in ([], ["--json"]):
        code, out = run(database_url, "integrations", "show", ident, *args)
        assert code == 0 and key not in out and masked in out and TOKEN not in out
    code, out = run(database_url, "integrations", "show", ident, "--reveal-webhook-url")
    assert code == 0 and f"webhook_url: http://127.0.0.1:8000/webhooks/allio/{key}" in out
    assert TOKEN not in out  # only the webhook URL is revealed
    code, out = run(database_url, "integrations", "show", ident, "--json", "--reveal-webhook-url")
    shown = json.loads(out)
    assert (shown["webhook_key"], shown["webhook_url"]) == (key, added["webhook_url"])
    assert shown["credentials"] == {"api_token": f"****{TOKEN[-4:]}"}
    code, out = run(database_url, "integrations", "update", ident, "--name", "x", "--json")
    assert code == 0 and key not in out


def test_webhook_keys_are_unique(database_url: str) -> None:
    keys = set()
    for i in range(5):
        code, out = add(database_url, "--json", uuid=f"00000000-0000-4000-8000-00000000000{i}")
        assert code == 0, out
        keys.add(json.loads(out)["webhook_key"])
    assert len(keys) == 5


def test_duplicate_uuid_refused(database_url: str, engine) -> None:
    assert add(database_url)[0] == 0
    code, out = add(database_url)
    assert code != 0
    assert "already exists" in out and TOKEN not in out
    assert count_rows(engine, "integrations") == 1


@pytest.mark.parametrize(
    "args,message",
    [
        (["--provider", "nope"], "Invalid value for '--provider'"),
        (["--integration-uuid", "not-a-uuid"], "is not a UUID"),
        (["--api-base-url", "ftp://x"], "http(s) URL"),
        (["--name", "  "], "must not be empty"),
        (["--api-token", ""], "must not be empty"),
    ],
)
def test_add_bad_input(database_url: str, engine, args: list[str], message: str) -> None:
    base = {
        "--provider": "allio",
        "--name": "n",
        "--integration-uuid": UUID,
        "--api-base-url": "http://x",
        "--api-token": TOKEN,
    }
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    flat = [x for kv in base.items() for x in kv]
    code, out = run(database_url, "integrations", "add", *flat)
    assert code != 0
    assert message in out
    assert TOKEN not in out
    assert count_rows(engine, "integrations") == 0


@pytest.mark.parametrize("command", ["show", "disable", "enable"])
def test_unknown_id(database_url: str, command: str) -> None:
    code, out = run(database_url, "integrations", command, "42")
    assert code == 1 and "no integration with id 42" in out


def test_bad_id_type(database_url: str) -> None:
    code, out = run(database_url, "integrations", "show", "abc")
    assert code == 2 and "not a valid integer" in out


def test_unmigrated_database_is_explained(tmp_path) -> None:
    code, out = run(f"sqlite:///{tmp_path / 'new.sqlite3'}", "integrations", "list")
    assert code == 1 and "crm-sync db upgrade" in out


def test_unsupported_url() -> None:
    code, out = run("mysql://u:pw@h/db", "integrations", "list")
    assert code == 1 and "unsupported database" in out and "pw" not in out


def test_unreachable_postgres_hides_password() -> None:
    code, out = run("postgresql://u:hunter2pass@127.0.0.1:1/db", "integrations", "list")
    assert code == 1
    assert "cannot use the database" in out and "hunter2pass" not in out


def test_missing_provider_field_is_named(database_url: str, engine) -> None:
    code, out = run(
        database_url, "integrations", "add", "--provider", "allio", "--name", "n",
        "--integration-uuid", UUID, "--api-base-url", "http://x",
    )  # fmt: skip
    assert code != 0 and "Missing option '--api-token'" in out
    assert count_rows(engine, "integrations") == 0


def test_update_changes_settings_and_credentials_validated(database_url: str, engine) -> None:
    code, out = add(database_url, "--json")
    assert code == 0, out
    item = json.loads(out)
    ident = str(item["id"])
    code, out = run(
        database_url, "integrations", "update", ident, "--setting", "delete_control=true",
        "--setting", "rate_limit.rate=0.5", "--name", "Renamed", "--json",
    )  # fmt: skip
    assert code == 0, out
    updated = json.loads(out)
    assert updated["settings"] == {
        "delete_control": True,
        "timezone": "Europe/Moscow",  # ALLIO's default zone, stored at add
        "rate_limit": {"rate": 0.5},
    }
    assert updated["name"] == "Renamed"
    new_token = "rotated-SECRET-abcdef0123456789"
    code, out = run(database_url, "integrations", "update", ident, "--api-token", new_token)
    assert code == 0 and new_token not in out and TOKEN not in out
    with engine.connect() as conn:
        from crm_schema.integrations import get_integration

        stored = get_integration(conn, int(ident))
    assert stored.credentials == {"api_token": new_token}
    assert stored.settings["delete_control"] is True  # untouched by the token change
    # Bad input: named, nothing written.
    for args, message in (
        (["--setting", "bogus=1"], "bogus: unknown setting"),
        (["--setting", "rate_limit.rate=-1"], "rate_limit.rate"),
        (["--setting", "noequals"], "is not KEY=VALUE"),
        (["--api-base-url", "ftp://x"], "http(s) URL"),
        (["--timezone", "Mars/Olympus"], "'Mars/Olympus' is not an IANA time zone"),
        (["--delete-control", "maybe"], "'maybe' is not on or off"),
        (["--setting", "delete_floor=-1"], "delete_floor"),
    ):
        code, out = run(database_url, "integrations", "update", ident, *args)
        assert code != 0 and message in out, (args, out)
    with engine.connect() as conn:
        assert get_integration(conn, int(ident)).settings == stored.settings
    code, out = run(database_url, "integrations", "update", "99", "--name", "x")
    assert code == 1 and "no integration with id 99" in out


def test_update_delete_control_on_off_and_timezone(database_url: str, engine) -> None:
    """`--delete-control on|off` switches the sweep; `--timezone` sets the zone of `till`."""
    code, out = add(database_url, "--json", "--timezone", "Asia/Yekaterinburg")
    assert code == 0, out
    item = json.loads(out)
    assert item["settings"]["timezone"] == "Asia/Yekaterinburg"
    assert item["settings"]["delete_control"] is False
    ident = str(item["id"])
    for word, expected in (("on", True), ("off", False), ("ON", True)):
        code, out = run(
            database_url, "integrations", "update", ident, "--delete-control", word, "--json"
        )
        assert code == 0, out
        assert json.loads(out)["settings"]["delete_control"] is expected
    code, out = run(database_url, "integrations", "update", ident, "--timezone", "UTC", "--json")
    assert code == 0, out
    settings = json.loads(out)["settings"]
    assert settings["timezone"] == "UTC" and settings["delete_control"] is True
