"""The official iiko Cloud OpenAPI spec as JSON-schema validators (Draft 2020-12).

The spec (``../shared/provider_specs/iiko-cloud-openapi.json`` next to the repository,
or ``$CRM_SYNC_IIKO_OPENAPI``) is OpenAPI 3.0, whose schema dialect differs from JSON
Schema; it is converted once, lazily, into ``$defs`` of one Draft 2020-12 document:

- ``nullable: true`` also admits ``null``;
- inheritance (``allOf`` of a base plus own ``properties``, each with
  ``additionalProperties: false``) is flattened into one object with the properties of
  both — validated literally, no subtype could carry its own fields;
- a ``discriminator`` with a ``mapping`` dispatches on the property's value to the
  mapped subtype (an unmapped value is checked against the base alone);
- the spec's ``"type": "constant string 'X'"`` (webhook ``eventType``) is ``const X``;
- formats: ``uuid`` and the spec's ``yyyy-MM-dd HH:mm:ss.fff`` are checked.

``validate_request(path, body)`` / ``validate_response(path, body)`` return the
problems as readable strings (empty when valid); ``validate_webhook(event)`` checks one
webhook event against ``x-webhooks`` by its ``eventType``.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_ENV = "CRM_SYNC_IIKO_OPENAPI"
SPEC_FILE = "iiko-cloud-openapi.json"
API_PREFIX = "/api/1/"
DATE_TIME_FORMAT = "yyyy-MM-dd HH:mm:ss.fff"
_ROOT_URI = "urn:iiko-cloud-openapi"
_REF_PREFIX = "#/components/schemas/"
_CONSTANT = re.compile(r"^constant string '(.*)'$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}$")
# OpenAPI-only or documentation keywords that mean nothing to a JSON-schema validator.
_DROP = frozenset(
    {"nullable", "discriminator", "example", "description", "title", "deprecated", "xml"}
)
_WEBHOOK_PREFIX = "iikoTransport.PublicApi.Contracts.WebHooks."
_WEBHOOK_SUFFIX = "WebHookEventInfo"
_ERROR_RESPONSE = "iikoTransport.PublicApi.Contracts.Errors.ErrorResponse"


class SpecError(RuntimeError):
    """The spec file is missing or does not describe the requested path."""


def spec_path() -> Path:
    """Where the spec is read from: ``$CRM_SYNC_IIKO_OPENAPI`` or ``<repo>/../shared/...``."""
    override = os.environ.get(SPEC_ENV)
    if override:
        return Path(override)
    repo = Path(__file__).resolve().parents[2]
    return repo.parent / "shared" / "provider_specs" / SPEC_FILE


def is_date_time(value: object) -> bool:
    """Whether ``value`` is written ``yyyy-MM-dd HH:mm:ss.fff`` (non-strings pass)."""
    if not isinstance(value, str):
        return True
    if not _DATE_TIME.match(value):
        return False
    try:
        datetime.strptime(value, "%Y-%m-%d %H:%M:%S.%f")
    except ValueError:
        return False
    return True


FORMAT_CHECKER = FormatChecker(["uuid"])
FORMAT_CHECKER.checks(DATE_TIME_FORMAT)(is_date_time)


def _ref_name(ref: str) -> str:
    if not ref.startswith(_REF_PREFIX):
        raise SpecError(f"unsupported $ref {ref!r}")
    return ref[len(_REF_PREFIX) :]


def def_key(name: str) -> str:
    """The ``$defs`` key of a component: its name with URI-unsafe characters replaced."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


class _Converter:
    """OpenAPI 3.0 component schemas → Draft 2020-12 ``$defs`` (see the module docstring)."""

    def __init__(self, schemas: dict[str, Any]) -> None:
        self.schemas = schemas
        self._flat: dict[str, dict[str, Any]] = {}

    def defs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, schema in self.schemas.items():
            key = def_key(name)
            if key in out:
                raise SpecError(f"two components share the key {key!r}")
            discriminator = schema.get("discriminator")
            if isinstance(discriminator, dict) and discriminator.get("mapping"):
                out[key] = self._dispatch(name, discriminator)
                out[f"{key}__base"] = self._flatten(name)
            else:
                out[key] = self._flatten(name)
        return out

    def _dispatch(self, name: str, discriminator: dict[str, Any]) -> dict[str, Any]:
        prop, mapping = discriminator["propertyName"], discriminator["mapping"]
        rules: list[dict[str, Any]] = [
            {
                "if": {"properties": {prop: {"const": value}}, "required": [prop]},
                "then": {"$ref": f"#/$defs/{def_key(_ref_name(target))}"},
            }
            for value, target in mapping.items()
        ]
        rules.append(
            {
                "if": {"properties": {prop: {"not": {"enum": list(mapping)}}}},
                "then": {"$ref": f"#/$defs/{def_key(name)}__base"},
            }
        )
        return {"type": "object", "required": [prop], "allOf": rules}

    def _flatten(self, name: str) -> dict[str, Any]:
        """The component with the properties of every base it inherits (no discriminator)."""
        if name in self._flat:
            return self._flat[name]
        schema = self.schemas[name]
        bases = [b for b in schema.get("allOf", []) if "$ref" in b and self._is_object(b["$ref"])]
        if not bases or not (schema.get("properties") or schema.get("type") == "object"):
            flat = self.convert(schema)
        else:
            properties: dict[str, Any] = {}
            required: list[str] = []
            for base in bases:
                inherited = self._flatten(_ref_name(base["$ref"]))
                properties.update(inherited.get("properties", {}))
                required += inherited.get("required", [])
            own = self.convert({k: v for k, v in schema.items() if k != "allOf"})
            properties.update(own.get("properties", {}))
            required += own.get("required", [])
            flat = {**own, "type": "object", "properties": properties}
            if required:
                flat["required"] = list(dict.fromkeys(required))
            rest = [b for b in schema["allOf"] if b not in bases]
            if rest:
                flat["allOf"] = [self.convert(b) for b in rest]
        self._flat[name] = flat
        return flat

    def _is_object(self, ref: str) -> bool:
        target = self.schemas.get(_ref_name(ref), {})
        return target.get("type") == "object" or "properties" in target

    def convert(self, node: Any) -> Any:
        """One OpenAPI schema (inline) → JSON Schema."""
        if isinstance(node, list):
            return [self.convert(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            out: dict[str, Any] = {"$ref": f"#/$defs/{def_key(_ref_name(node['$ref']))}"}
        else:
            out = {}
            for key, value in node.items():
                if key in _DROP or key.startswith("x-"):
                    continue
                if key == "properties":
                    out[key] = {p: self.convert(s) for p, s in value.items()}
                elif key in ("items", "additionalProperties", "not"):
                    out[key] = self.convert(value)
                elif key in ("allOf", "anyOf", "oneOf"):
                    out[key] = [self.convert(s) for s in value]
                elif key == "type" and isinstance(value, str) and _CONSTANT.match(value):
                    out["type"], out["const"] = "string", _CONSTANT.match(value).group(1)
                else:
                    out[key] = value
        if node.get("nullable") is True:
            return _nullable(out)
        return out


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if isinstance(kind, str) and "$ref" not in schema and "allOf" not in schema:
        widened = {**schema, "type": [kind, "null"]}
        if "enum" in widened:
            widened["enum"] = [*widened["enum"], None]
        return widened
    return {"anyOf": [{"type": "null"}, schema]}


class ApiSpec:
    """The loaded spec plus a cache of validators (thread-safe)."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        converter = _Converter(document.get("components", {}).get("schemas", {}))
        self._convert = converter.convert
        self._root = {"$id": _ROOT_URI, "$defs": converter.defs()}
        resource = Resource.from_contents(self._root, default_specification=DRAFT202012)
        self._registry: Registry = Registry().with_resource(_ROOT_URI, resource)
        self._validators: dict[tuple[str, str], Draft202012Validator] = {}
        self._lock = threading.Lock()

    @property
    def paths(self) -> dict[str, Any]:
        return self.document.get("paths", {})

    def _operation(self, path: str) -> dict[str, Any]:
        full = path if path.startswith("/") else API_PREFIX + path
        try:
            return self.paths[full]["post"]
        except KeyError:
            raise SpecError(f"the spec has no POST {full}") from None

    def _schema(self, kind: str, path: str) -> dict[str, Any]:
        if kind == "webhook":
            key = def_key(f"{_WEBHOOK_PREFIX}{path}{_WEBHOOK_SUFFIX}")
            if key not in self._root["$defs"]:
                raise SpecError(f"the spec has no webhook event {path!r}")
            return {"$ref": f"#/$defs/{key}"}
        op = self._operation(path)
        try:
            if kind == "request":
                raw = op["requestBody"]["content"]["application/json"]["schema"]
            elif kind == "error":
                raw = {"$ref": _REF_PREFIX + _ERROR_RESPONSE}
            else:
                raw = op["responses"]["200"]["content"]["application/json"]["schema"]
        except KeyError:
            raise SpecError(f"the spec has no JSON {kind} schema for {path}") from None
        return self._convert(raw)

    def validator(self, kind: str, path: str) -> Draft202012Validator:
        """The validator of ``kind`` ("request", "response", "error", "webhook") for ``path``."""
        key = (kind, path)
        with self._lock:
            found = self._validators.get(key)
        if found is not None:
            return found
        schema = {"$id": f"{_ROOT_URI}:{kind}:{path}", **self._schema(kind, path)}
        if "$ref" in schema:
            schema["$ref"] = _ROOT_URI + schema["$ref"]
        else:
            schema = {"$id": schema.pop("$id"), "allOf": [_rebase(schema)]}
        built = Draft202012Validator(schema, registry=self._registry, format_checker=FORMAT_CHECKER)
        with self._lock:
            self._validators[key] = built
        return built

    def errors(self, kind: str, path: str, body: Any) -> list[str]:
        found = sorted(
            self.validator(kind, path).iter_errors(body),
            key=lambda e: [str(p) for p in e.absolute_path],
        )
        return [describe(error) for error in found]


def _rebase(node: Any) -> Any:
    """Point local ``#/$defs/...`` refs of an inline schema at the shared document."""
    if isinstance(node, list):
        return [_rebase(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {
        k: (_ROOT_URI + v if k == "$ref" and v.startswith("#") else _rebase(v))
        for k, v in node.items()
    }


def _location(error: ValidationError) -> str:
    parts = ""
    for item in error.absolute_path:
        parts += f"[{item}]" if isinstance(item, int) else f".{item}" if parts else str(item)
    return parts or "body"


def describe(error: ValidationError) -> str:
    """``location: message``, using the closest alternative for ``anyOf`` (nullable) errors."""
    if error.context:
        alternatives = [e for e in error.context if e.validator_value != "null"]
        deepest = best_match(alternatives)
        if deepest is not None:
            error = deepest
    return f"{_location(error)}: {error.message}"


_loaded: ApiSpec | None = None
_load_lock = threading.Lock()


def load_spec(path: str | Path | None = None) -> ApiSpec:
    """The spec from ``path`` (default :func:`spec_path`); the default is loaded once."""
    global _loaded
    if path is not None:
        return _read(Path(path))
    with _load_lock:
        if _loaded is None:
            _loaded = _read(spec_path())
        return _loaded


@functools.lru_cache(maxsize=4)
def _read(path: Path) -> ApiSpec:
    try:
        document = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise SpecError(
            f"iiko OpenAPI spec not found at {path} (set {SPEC_ENV} to its location)"
        ) from None
    return ApiSpec(document)


def validate_request(path: str, body: Any) -> list[str]:
    """Problems of ``body`` as the request of ``POST path`` (``/api/1/x`` or ``x``)."""
    return load_spec().errors("request", path, body)


def validate_response(path: str, body: Any) -> list[str]:
    """Problems of ``body`` as the 200 answer of ``POST path``."""
    return load_spec().errors("response", path, body)


def validate_error(body: Any) -> list[str]:
    """Problems of ``body`` as iiko's error body (``ErrorResponse``)."""
    return load_spec().errors("error", "access_token", body)


def validate_webhook(event: Any) -> list[str]:
    """Problems of one webhook event against ``x-webhooks`` (chosen by its ``eventType``)."""
    event_type = event.get("eventType") if isinstance(event, dict) else None
    if not isinstance(event_type, str):
        return ["body: eventType must be a string"]
    try:
        return load_spec().errors("webhook", event_type, event)
    except SpecError:
        return [f"eventType: no webhook schema for {event_type!r}"]
