"""The operator API (`/api/v1/...`), for people and internal systems holding an
operator token (`Authorization: Bearer <token>`; `crm-sync operator-tokens create NAME`).

Not provider endpoints: they run on the receiver app, off the webhook hot path. The
generic part is the API call log (`monitoring`); each provider's receiver module
(crm_sync.registry) may add its own operator routes by offering:

- `operator_routes(api: OperatorApi) -> list[BaseRoute]`;
- `OPERATOR_OPERATIONS`: their `Operation`s, for the OpenAPI document;
- `OPERATOR_QUERY_PARAMS`: `{path: {name: description}}`, the query parameters each takes;
- `OPERATOR_REQUIRED_QUERY_PARAMS`: `{path: {name, ...}}`, those that are required;
- `OPERATOR_ACCEPTED_PATHS`: the idempotent command paths, answered 202 with the new
  command (200: a retry with the same `Idempotency-Key`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from starlette.routing import BaseRoute

from crm_sync.registry import layer_modules
from webhook_receiver.openapi import Operation
from webhook_receiver.operator_api import monitoring
from webhook_receiver.operator_api.common import OperatorApi

if TYPE_CHECKING:
    from webhook_receiver.app import Receiver

SECURITY_SCHEME = "operatorToken"


def parts() -> list[ModuleType]:
    """The modules that make up the operator API: every registered receiver module that
    offers operator routes, then the generic monitoring."""
    providers = [m for m in layer_modules("receiver").values() if hasattr(m, "operator_routes")]
    return [*providers, monitoring]


def operations() -> tuple[Operation, ...]:
    """Every operator operation, for the OpenAPI document."""
    return tuple(op for part in parts() for op in getattr(part, "OPERATOR_OPERATIONS", ()))


def routes(receiver: Receiver) -> list[BaseRoute]:
    """Every operator route; the API's engine is closed with the receiver."""
    api = OperatorApi(receiver)
    receiver.on_close.append(api.close)
    return [route for part in parts() for route in part.operator_routes(api)]


def _merged(attribute: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in parts():
        merged |= getattr(part, attribute, {})
    return merged


def document(doc: dict[str, Any]) -> dict[str, Any]:
    """Add to the receiver's OpenAPI document what `Operation` does not say: the bearer
    token, query parameters, and the 202 of the command routes."""
    doc["components"].setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An operator token (crm-sync operator-tokens create NAME).",
    }
    query_params: dict[str, Mapping[str, str]] = _merged("OPERATOR_QUERY_PARAMS")
    required: dict[str, Collection[str]] = _merged("OPERATOR_REQUIRED_QUERY_PARAMS")
    accepted = {path for part in parts() for path in getattr(part, "OPERATOR_ACCEPTED_PATHS", ())}
    for op in operations():
        entry = doc["paths"][op.path][op.method]
        entry["security"] = [{SECURITY_SCHEME: []}]
        params = query_params.get(op.path, {})
        if params:
            entry.setdefault("parameters", []).extend(
                {
                    "name": name,
                    "in": "query",
                    "required": name in required.get(op.path, ()),
                    "description": text,
                    "schema": {"type": "integer" if name != "provider" else "string"},
                }
                for name, text in params.items()
            )
        if op.path in accepted:
            entry.setdefault("parameters", []).append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "A retried request with the same key is carried out once.",
                    "schema": {"type": "string", "maxLength": 200},
                }
            )
            responses = entry["responses"]
            created = dict(responses["200"], description="Accepted: the pending command.")
            responses["200"] = dict(
                responses["200"], description="An idempotent retry: the existing command."
            )
            entry["responses"] = {"202": created, **responses}
    return doc
