"""The traffic mirror's contract with each provider (seed 002's mirror, for every provider).

A provider's schema module offers `MIRROR_SOURCES`: one `MirrorSource` per inbox table,
naming the table, its receive-time column and how a stored row becomes the request the
provider sent (`MirrorRequest`). The generic forwarder (orchestration.core.mirror) and
`crm-sync replay` know nothing else about a provider.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table

from crm_schema.integrations import Integration

JSON_HEADERS: Mapping[str, str] = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class MirrorRequest:
    """One request as the provider sent it: `path` is relative to the mirror's base URL."""

    method: str
    path: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


# (the inbox row's columns by name, its integration) → the request.
BuildRequest = Callable[[Mapping[str, Any], Integration], MirrorRequest]


@dataclass(frozen=True)
class MirrorSource:
    """An inbox table whose rows are mirrored, and how each row is sent again."""

    inbox: Table  # must have `id` and `integration_id`
    received_at: str  # the column holding when the row was received
    build: BuildRequest

    @property
    def name(self) -> str:
        """The inbox table's name (the cursor's `inbox`)."""
        return self.inbox.name


def json_body(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON, as providers send it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
