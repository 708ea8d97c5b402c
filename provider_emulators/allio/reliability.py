"""ALLIO's part of the reliability suite (`provider_emulators.reliability`).

How to serve the emulator and add an integration, what a valid webhook looks like and
which entities it names, a hypothesis strategy over the webhook body, the tables to
read back, and the answers earlier attacks established (the oracle).
"""

from __future__ import annotations

import json
import uuid as uuid_module
from collections.abc import Sequence
from typing import Any

import orjson

from provider_emulators.allio.app import COMMANDS
from provider_emulators.reliability.spec import Integration, ProviderReliability, Webhook

# Commands that make the sync fetch an entity, and which one.
_FETCHING = (
    ("RESERVE_ADD", "reserves"),
    ("DEALCARD_ADD", "dealcards"),
    ("RESERVE_MOD", "reserves"),
    ("DEALCARD_MOD", "dealcards"),
)
SQL_ISH = (
    "' OR 1=1 --",
    "'; DROP TABLE allio_webhook; --",
    '" OR ""="',
    "1; SELECT pg_sleep(10)",
    "RESERVE_ADD'); DELETE FROM integrations; --",
    "%00",
    "\\x00",
    "${jndi:ldap://x}",
    "{{7*7}}",
)
UNICODE = ("Менеджер", "\u202e\u0041", "\ufeff", "𝕬𝖑𝖑𝖎𝖔", "\u0000", "ǅ", "K", "ß", "\U0010ffff")


def _serve_args(port: int, token: str, quota: int) -> list[str]:
    return ["emulate", "allio", "--port", str(port), "--token", token, "--quota", str(quota),
            "--log-level", "warning"]  # fmt: skip


def _add_args(name: str, api_base_url: str) -> list[str]:
    return [
        "integrations", "add", "--provider", "allio", "--name", name,
        "--integration-uuid", str(uuid_module.uuid4()), "--api-base-url", api_base_url, "--json",
    ]  # fmt: skip


def _endpoint(integ: Integration) -> str:
    return f"/webhooks/allio/{integ.webhook_key}"


def _webhook(integ: Integration, n: int, ids: Sequence[int]) -> Webhook:
    command, table = _FETCHING[n % len(_FETCHING)]
    body = {"uuid": integ.data["integration_uuid"], "command": command, "indexes": list(ids)}
    return Webhook(_endpoint(integ), body, {table: tuple(str(i) for i in ids)})


def _payload_strategy(integ: Integration) -> Any:
    """JSON bodies: valid ones, each field wrong in every way, junk around them."""
    from hypothesis import strategies as st

    uuid = integ.data["integration_uuid"]
    text = st.text(st.characters(codec="utf-8"), max_size=40)
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
    json_values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=10,
    )
    strings = text | st.sampled_from(SQL_ISH + UNICODE)
    uuids = (
        st.just(uuid)
        | st.just(uuid.upper())
        | st.just(uuid + "\u0000")
        | st.uuids().map(str)
        | strings
        | json_values
    )
    commands = (
        st.sampled_from(COMMANDS)
        | st.from_regex(r"[A-Z][A-Z_]{0,70}", fullmatch=True)
        | strings
        | json_values
    )
    index_items = (
        st.integers(1, 10_000)
        | st.integers()
        | st.integers(1, 10**6).map(str)
        | st.sampled_from(["0", "-1", "１２", "1e3", "0x10", " 1", "9" * 30, "", "1\u0000"])
        | st.sampled_from([True, False, 1.5, None, 2**63, 2**64, -(2**63)])
        | json_values
    )
    index_lists = st.lists(st.integers(1, 10_000), min_size=1, max_size=8) | st.lists(
        index_items, max_size=8
    )
    indexes = (
        index_lists
        | index_lists.map(lambda ids: json.dumps(ids, ensure_ascii=False))
        | strings
        | json_values
    )
    fields = st.fixed_dictionaries(
        {},
        optional={
            "uuid": uuids,
            "command": commands,
            "indexes": indexes,
            "extra": json_values,
            "INDEXES": indexes,
        },
    )
    complete = st.fixed_dictionaries({"uuid": uuids, "command": commands, "indexes": indexes})
    return complete | fields | json_values | st.dictionaries(strings, json_values, max_size=6)


def _nested(depth: int) -> bytes:
    return (
        b'{"uuid": "%s", "command": "RESERVE_ADD", "indexes": [1, ' % b"%s"
        + (b"[" * depth + b"1" + b"]" * depth)
        + b"]}"
    )


def _oracle(integ: Integration) -> list[tuple[str, str, str, dict[str, str], bytes, Any]]:
    """Answers the issue established (issue 9, "Already found")."""
    uuid = integ.data["integration_uuid"].encode()
    good = orjson.dumps({"uuid": uuid.decode(), "command": "RESERVE_ADD", "indexes": [1, 2]})
    json_ct = {"Content-Type": "application/json"}
    cases: list[tuple[str, str, str, dict[str, str], bytes, Any]] = [
        ("valid webhook", "POST", "{path}", json_ct, good, 200),
        ("no Content-Type is read as JSON", "POST", "{path}", {}, good, 200),
        ("Content-Type application/+json", "POST", "{path}",
         {"Content-Type": "application/+json"}, good, 415),
        ("Content-Type text/plain", "POST", "{path}", {"Content-Type": "text/plain"}, good, 415),
        ("NUL byte in the webhook key", "POST", "/webhooks/allio/%00", json_ct, good, 404),
        ("NUL byte after the webhook key", "POST", "{path}%00", json_ct, good, 404),
        ("GET on the endpoint", "GET", "{path}", {}, b"", 405),
        # A careful client (Expect: 100-continue) always gets the 413; one that sends the
        # whole body may meet a reset instead (the fuzzer's "oversize" family).
        ("body over the limit", "POST", "{path}", {**json_ct, "Expect": "100-continue"},
         b" " * (1024 * 1024 + 1), 413),
    ]  # fmt: skip
    for depth in (255, 1000):
        body = _nested(depth).replace(b"%s", uuid)
        cases.append((f"indexes nested {depth} levels", "POST", "{path}", json_ct, body, 422))
    # Deeper than the JSON parser goes (1,024 levels): refused as not JSON, or as a field.
    body = _nested(10_000).replace(b"%s", uuid)
    cases.append(("indexes nested 10000 levels", "POST", "{path}", json_ct, body, (400, 422)))
    return cases


RELIABILITY = ProviderReliability(
    provider="allio",
    serve_args=_serve_args,
    quota_per_second=2,
    add_args=_add_args,
    token_env="CRM_SYNC_API_TOKEN",  # noqa: S106 - the variable's name, not a token
    webhook=_webhook,
    payload_strategy=_payload_strategy,
    endpoint=_endpoint,
    inbox_table="allio_webhook",
    task_table="allio_tasks",
    entity_tables={
        "reserves": ("integration_id", "external_id"),
        "dealcards": ("integration_id", "external_id"),
        "contacts": ("integration_id", "role", "external_id"),
    },
    api_paths=("/reserve/list", "/dealcard/list"),
    oracle=_oracle,
)
