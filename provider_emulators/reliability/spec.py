"""What the reliability suite needs to know about one provider (plain data and callables).

A provider exposes one :class:`ProviderReliability` as ``RELIABILITY`` from its emulator
package; the suite finds it through ``layer_modules("emulator")`` and runs every
scenario against it, so a new provider adds its rows by registering, not by copying
scenarios. Nothing here imports a layer: the suite talks to the running stack over
HTTP, the ``crm-sync`` command line and plain SQL on the table names given here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Integration:
    """One integration as ``crm-sync integrations add --json`` printed it."""

    id: int
    name: str
    webhook_key: str
    webhook_path: str
    data: Mapping[str, Any]
    api_token: str


@dataclass(frozen=True)
class Webhook:
    """One webhook to send: the path, the JSON body, and the entities it names."""

    path: str
    body: Any
    # {entity table: external ids this webhook makes the sync fetch and store}
    entities: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Headers the provider sends with it (e.g. iiko's authToken).
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderReliability:
    """A provider's part of the reliability suite."""

    provider: str
    # `crm-sync` arguments that serve the emulator on (port, api token, quota per second).
    serve_args: Callable[[int, str, int], list[str]]
    # The provider's quota as its emulator enforces it (accepted requests/s per key).
    quota_per_second: int
    # `crm-sync integrations add` arguments for (name, emulator base URL); the API token
    # goes in the environment variable `token_env` (never on the command line).
    add_args: Callable[[str, str], list[str]]
    token_env: str
    # A valid webhook for an integration: (integration, n, ids) → Webhook. `n` varies the
    # kind (command / entity), `ids` are the external ids it names.
    webhook: Callable[[Integration, int, Sequence[int]], Webhook]
    # hypothesis strategy of JSON bodies for the endpoint: valid ones and every kind of
    # wrong field, type, nesting and string (imported lazily: hypothesis is a dev tool).
    payload_strategy: Callable[[Integration], Any]
    # The webhook endpoint of an integration (what the fuzzer attacks).
    endpoint: Callable[[Integration], str]
    # Raw inbox table (`id`, `integration_id`) and task table (generic task queue columns).
    inbox_table: str
    task_table: str
    # {entity table: the columns that make one entity (unique together)}.
    entity_tables: Mapping[str, tuple[str, ...]]
    # Emulator paths that are the provider's API (counted against the quota), each with
    # everything under it.
    api_paths: tuple[str, ...]
    # Cases with a known right answer (found by earlier attacks): (name, method, path
    # template with {path}, headers, body, expected status or tuple of statuses).
    oracle: Callable[[Integration], list[tuple[str, str, str, dict[str, str], bytes, Any]]] = (
        lambda _i: []
    )
    # The receiver's body limit (RECEIVER_MAX_BODY_BYTES) for the oversize requests.
    max_body_bytes: int = 1024 * 1024
    # More secrets for `integrations add`, by environment variable, per integration name
    # (iiko's webhook authToken: unique per integration, never on the command line).
    add_env: Callable[[str], Mapping[str, str]] = lambda _name: {}
    # Headers that authenticate a request to the endpoint (iiko's authToken), sent with
    # every fuzzed request so the attacks reach past authentication.
    auth_headers: Callable[[Integration], Mapping[str, str]] = lambda _i: {}
