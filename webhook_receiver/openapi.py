"""The receiver's OpenAPI document (`GET /openapi.json`), built from pydantic models.

Each provider's receiver module lists its `OPERATIONS`; their request bodies are the
same pydantic models the handlers validate with, so the document cannot drift from
what the receiver accepts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"


class FieldProblem(BaseModel):
    """One field of a refused body and what is wrong with it."""

    field: str
    error: str


class ErrorBody(BaseModel):
    """Every refusal: what is wrong, and for validation errors each field."""

    error: str = Field(description="What is wrong, in words.")
    fields: list[FieldProblem] | None = Field(
        None, description="Validation errors only: every field found wrong."
    )


class Accepted(BaseModel):
    """The webhook is stored (committed) and will be processed."""

    status: str = Field(examples=["ok"])
    id: int = Field(description="Id of the stored inbox row.")


class Health(BaseModel):
    """`GET /healthz`: whether the database answers."""

    status: str = Field(examples=["ok"])


@dataclass(frozen=True)
class Operation:
    """One documented route: its body model, its answers and its path parameters."""

    path: str
    method: str
    summary: str
    ok: type[BaseModel]
    body: type[BaseModel] | None = None
    description: str = ""
    errors: Mapping[int, str] = field(default_factory=dict)
    path_params: Mapping[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    # Optional parameters: name → description.
    query_params: Mapping[str, str] = field(default_factory=dict)
    header_params: Mapping[str, str] = field(default_factory=dict)
    # Query or header parameters that must be given (path parameters always are).
    required_params: frozenset[str] = frozenset()
    # Query or header parameters that are not plain strings: name → JSON schema.
    param_schemas: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Request bodies in other media types than JSON (media type → model).
    other_bodies: Mapping[str, type[BaseModel]] = field(default_factory=dict)


HEALTH = Operation(
    path="/healthz",
    method="get",
    summary="Database reachable",
    ok=Health,
    errors={503: "The database does not answer."},
    tags=("receiver",),
)


def _param_schema(op: Operation, name: str) -> dict[str, Any]:
    if name in op.param_schemas:
        return dict(op.param_schemas[name])
    return {"type": "string"} | ({"minLength": 1} if name in op.required_params else {})


class _Components:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def ref(self, model: type[BaseModel]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template=REF)
        self.schemas.update(schema.pop("$defs", {}))
        self.schemas[model.__name__] = schema
        return {"$ref": REF.format(model=model.__name__)}


def _json(ref: dict[str, str]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": ref}}}


def openapi_document(
    operations: Iterable[Operation], *, title: str, version: str
) -> dict[str, Any]:
    """An OpenAPI 3.1 document for ``operations``."""
    components = _Components()
    error_ref = components.ref(ErrorBody)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        responses: dict[str, Any] = {"200": {"description": "OK", **_json(components.ref(op.ok))}}
        for status, text in sorted(op.errors.items()):
            responses[str(status)] = {"description": text, **_json(error_ref)}
        entry: dict[str, Any] = {
            "summary": op.summary,
            "operationId": f"{op.method}_{op.path.strip('/').replace('/', '_')}".replace(
                "{", ""
            ).replace("}", ""),
            "responses": responses,
        }
        if op.description:
            entry["description"] = op.description
        if op.tags:
            entry["tags"] = list(op.tags)
        parameters = [
            {
                "name": name,
                "in": where,
                "required": where == "path" or name in op.required_params,
                "description": text,
                "schema": dict(op.param_schemas.get(name) or {"type": "string"})
                | (
                    {"minLength": 1}
                    if name in op.required_params and name not in op.param_schemas
                    else {}
                ),
            }
            for where, params in (
                ("path", op.path_params),
                ("query", op.query_params),
                ("header", op.header_params),
            )
            for name, text in params.items()
        ]
        if parameters:
            entry["parameters"] = parameters
        content: dict[str, Any] = {}
        if op.body is not None:
            content = _json(components.ref(op.body))["content"]
        for media_type, model in op.other_bodies.items():
            content[media_type] = {"schema": components.ref(model)}
        if content:
            entry["requestBody"] = {"required": True, "content": content}
        paths.setdefault(op.path, {})[op.method] = entry
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": components.schemas},
    }
