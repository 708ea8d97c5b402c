"""What U-ON and the telephony system send, as pydantic models, and how a body becomes them.

U-ON posts its webhooks as a query string, a form or a JSON object, with English or
Russian keys (the seed: `метод`, `телефон`, `ID пользователя`, …). `webhook_fields` maps
the keys it knows to one canonical name each (case and spacing ignored) and `UonWebhook`
validates them; the request as received stays beside them as `raw`. The telephony
system posts one call event or an array of them (`TelephonyEvent`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    create_model,
    model_validator,
)

from crm_sync.phones import normalize_phone
from crm_sync.providers.uon import CLICK_TO_CALL_TYPE

Problems = list[dict[str, str]]
MAX_PROBLEMS = 50
# The parameter that carries the webhook secret: never stored with the request.
SECRET_PARAM = "secret"  # noqa: S105 - a parameter name, not a secret

# Russian keys the seed names → the canonical field (keys compared case-insensitively,
# with surrounding and repeated whitespace ignored).
RUSSIAN_KEYS = {
    "метод": "method",
    "телефон": "phone",
    "id пользователя": "user_id",
    "клиент": "client",
    "id клиента": "client_id",
    "id заявки": "request_id",
}
FIELDS = (
    "uon_id",
    "account_id",
    "uon_subdomain",
    "datetime",
    "type_id",
    "client_id",
    "request_id",
    "lead_id",
    "user_id",
    "phone",
    "method",
    "client",
)
_CANONICAL = {name: name for name in FIELDS} | RUSSIAN_KEYS


def canonical_key(key: str) -> str | None:
    """The field a sent key names (`" ID  Пользователя "` → `user_id`), or None."""
    return _CANONICAL.get(" ".join(key.split()).casefold())


def _blank_is_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value.strip() if isinstance(value, str) else value


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL: refused here (422), not by the database (500).
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a string or a number, not a boolean")
    return value


def _client(value: Any) -> Any:
    """`client`: a JSON object, or a JSON object sent as a string (form fields)."""
    value = _blank_is_none(value)
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise ValueError("must be a JSON object (or a string holding one)") from None
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object (or a string holding one)")
    return value


# No NUL in the documented pattern either, so generated examples are ones we accept.
NO_NUL = r"^[^\x00]*$"
Text = Annotated[
    str,
    BeforeValidator(_no_bool),
    BeforeValidator(_blank_is_none),
    StringConstraints(max_length=64),
    AfterValidator(_no_nul),
    WithJsonSchema({"type": "string", "maxLength": 64, "pattern": NO_NUL}),
]
Id = Annotated[
    str,
    BeforeValidator(_no_bool),
    BeforeValidator(_blank_is_none),
    StringConstraints(pattern=r"^[0-9A-Za-z_.:-]{1,64}$"),
    WithJsonSchema({"type": "string", "pattern": r"^[0-9A-Za-z_.:-]{1,64}$"}),
]
Method = Annotated[
    str,
    BeforeValidator(_blank_is_none),
    StringConstraints(max_length=32, to_lower=True),
    AfterValidator(_no_nul),
    WithJsonSchema({"type": "string", "maxLength": 32, "pattern": NO_NUL}),
]
TypeId = Annotated[
    int,
    BeforeValidator(_no_bool),
    BeforeValidator(_blank_is_none),
    Field(ge=0, le=1_000_000),
    WithJsonSchema({"type": "integer", "minimum": 0, "maximum": 1_000_000}),
]


def _document_type_id_required(schema: dict[str, Any]) -> None:
    """type_id is documented as required and never null: U-ON always sends it, except
    with `method=call` (its click-to-call button), which the receiver takes as 47."""
    prop = schema["properties"]["type_id"]
    choices = [c for c in prop.pop("anyOf", []) if c.get("type") != "null"]
    if choices:
        prop.update(choices[0])
    prop.pop("default", None)
    schema["required"] = ["type_id"]


class UonWebhook(BaseModel):
    """A U-ON webhook (a query string, a form or a JSON object). Russian keys are taken
    too: `метод` (method), `телефон` (phone), `ID пользователя` (user_id), `клиент`
    (client), `ID клиента` (client_id), `ID заявки` (request_id); keys are matched
    without regard to case or spacing. Other keys are kept with the request as sent."""

    # type_id is documented as required: U-ON always sends it, except with `method=call`
    # (its click-to-call button), which is taken as 47.
    model_config = ConfigDict(
        extra="allow",
        coerce_numbers_to_str=True,
        title="UonWebhook",
        json_schema_extra=lambda schema: _document_type_id_required(schema),
    )

    type_id: TypeId | None = Field(
        None,
        description="U-ON's event type: 3/4/5 client created/changed/deleted, 1/2/16/17 "
        "leads and requests, 47 click-to-call (also `method=call` without a type_id); "
        "others are stored.",
        examples=[4],
    )
    method: Method | None = Field(None, description="`call`: click-to-call.", examples=["call"])
    uon_id: Text | None = Field(None, description="The U-ON account id.", examples=["67054"])
    account_id: Text | None = Field(None, description="The U-ON account id (as uon_id).")
    uon_subdomain: Text | None = Field(None, description="The U-ON subdomain.")
    datetime: Text | None = Field(None, description="When U-ON sent it, as sent.")
    client_id: Id | None = Field(None, description="The U-ON client id (`ID клиента`).")
    request_id: Id | None = Field(None, description="The U-ON request id (`ID заявки`).")
    lead_id: Id | None = Field(None, description="The U-ON lead id.")
    user_id: Id | None = Field(
        None, description="The U-ON manager (`ID пользователя`): click-to-call.", examples=["2"]
    )
    phone: Text | None = Field(
        None,
        description="A phone number (`телефон`), `+` optional: read as E.164.",
        examples=["375296254070"],
    )
    client: Annotated[dict[str, Any] | None, BeforeValidator(_client)] = Field(
        None, description="The client (`клиент`): a JSON object, or a string holding one."
    )

    @model_validator(mode="before")
    @classmethod
    def _blank_fields_are_absent(cls, data: Any) -> Any:
        # `method=&user_id=` in a query string: nothing sent, not a wrong value.
        if isinstance(data, dict):
            return {k: None if isinstance(v, str) and not v.strip() else v for k, v in data.items()}
        return data

    @property
    def event_type(self) -> int | None:
        """The type_id; `method=call` without one is a click-to-call."""
        if self.type_id is not None:
            return self.type_id
        return CLICK_TO_CALL_TYPE if self.method == "call" else None


# The seed's form (`method=call&user_id=2&phone=375296254070&uon_id=67054`): the same
# fields as UonWebhook, `client` as JSON text (Russian keys taken too).
UonWebhookForm = create_model(
    "UonWebhookForm",
    __config__=ConfigDict(
        extra="allow", json_schema_extra=lambda schema: _document_type_id_required(schema)
    ),
    **{
        name: (field.annotation, field)
        for name, field in UonWebhook.model_fields.items()
        if name != "client"
    },
)


def query_param_schemas() -> dict[str, dict[str, Any]]:
    """The JSON schema of each UonWebhook field sent as a query parameter (not `client`)."""
    properties = UonWebhook.model_json_schema()["properties"]
    out = {}
    for name in FIELDS:
        if name == "client":
            continue
        prop = properties[name]
        choices = [c for c in prop.get("anyOf", [prop]) if c.get("type") != "null"]
        out[name] = dict(choices[0])
    return out


def _loc(prefix: str, loc: tuple[int | str, ...], names: Mapping[str, str]) -> str:
    text = prefix
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = names.get(part, part)
            text += f".{name}" if text else name
    return text or "body"


def problems_of(
    exc: ValidationError, prefix: str = "", names: Mapping[str, str] | None = None
) -> Problems:
    """Each field a ValidationError names, once, with its message; ``names`` gives the key
    a field was sent as (a Russian one, say)."""
    out: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        out.setdefault(_loc(prefix, error["loc"], names or {}), error["msg"])
    return [{"field": f, "error": m} for f, m in list(out.items())[:MAX_PROBLEMS]]


def webhook_fields(
    pairs: Iterable[tuple[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]] | Problems:
    """A request's keys and values → (raw, canonical fields, field → key as sent), or the
    problems (a field sent twice under different keys with different values).

    ``raw`` keeps every key as sent except the secret; a repeated key keeps its last
    value (as a form does)."""
    raw: dict[str, Any] = {}
    for key, value in pairs:
        if key.strip().casefold() == SECRET_PARAM:
            continue
        raw[key] = value
    fields: dict[str, Any] = {}
    names: dict[str, str] = {}
    problems: Problems = []
    for key, value in raw.items():
        name = canonical_key(key)
        if name is None:
            continue
        if name in fields and fields[name] != value:
            if _blank_is_none(fields[name]) is None:
                pass  # an empty spelling gives way to a filled one
            elif _blank_is_none(value) is None:
                continue
            else:
                problems.append(
                    {"field": key, "error": f"{names[name]!r} gives {name} another value"}
                )
                continue
        fields[name], names[name] = value, key
    return problems or (raw, fields, names)


def e164(raw: str | None, region: str) -> str | None:
    """A number as E.164: read in ``region``, else (digits only, as U-ON sends them
    without the `+`) as an international number."""
    if not raw:
        return None
    found = normalize_phone(raw, region)
    if found is None:
        digits = raw.strip()
        if digits.isdigit() and 8 <= len(digits) <= 15:
            found = normalize_phone("+" + digits, region)
    return found


# -- telephony ----------------------------------------------------------------------------

_DIRECTIONS = {
    "in": "in",
    "incoming": "in",
    "inbound": "in",
    "out": "out",
    "outgoing": "out",
    "outbound": "out",
}


def _direction(value: Any) -> Any:
    if isinstance(value, str):
        return _DIRECTIONS.get(value.strip().lower(), value)
    return value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


ISO_TIME = (
    r"^(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])?$"
)
_EPOCH_TEXT = re.compile(r"^[0-9]{1,12}(\.[0-9]{1,9})?$")


def _timestamp(value: Any) -> Any:
    """ISO 8601 (naive = UTC) or epoch seconds (a number, or a string of one)."""
    if isinstance(value, bool):
        raise ValueError("must be ISO 8601 or epoch seconds")
    if isinstance(value, str) and _EPOCH_TEXT.match(value.strip()):
        value = float(value.strip())
    if isinstance(value, int | float):
        if not math.isfinite(value) or not 0 <= value < 253402300800:
            raise ValueError("epoch seconds out of range")
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        if len(value) > 64:
            raise ValueError("must be ISO 8601 or epoch seconds")
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("must be ISO 8601 or epoch seconds") from None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return value


Timestamp = Annotated[
    datetime,
    BeforeValidator(_timestamp),
    WithJsonSchema(
        {
            # The documented shape is a safe subset of what is read (any ISO 8601).
            "anyOf": [
                {"type": "string", "pattern": ISO_TIME},
                {"type": "number", "minimum": 0, "maximum": 253402300799},
            ],
            "description": "ISO 8601 (without a zone: UTC) or epoch seconds.",
            "examples": ["2026-11-30T10:15:00Z", 1795947300],
        }
    ),
]
CallText = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_no_nul)]
# Documented as: something besides whitespace, no NUL (what the validators accept).
NON_BLANK = r"^[^\x00]*[^\s\x00][^\x00]*$"


def _text_schema(max_length: int, *, required: bool = False) -> WithJsonSchema:
    if required:
        return WithJsonSchema(
            {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": NON_BLANK}
        )
    return WithJsonSchema({"type": "string", "maxLength": max_length, "pattern": NO_NUL})


class TelephonyEvent(BaseModel):
    """One call event from the telephony system; other keys are kept as sent."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True, title="TelephonyEvent")

    event: Annotated[Literal["start", "dial", "bridge", "hangup"], BeforeValidator(_lower)] = Field(
        examples=["hangup"]
    )
    call_id: Annotated[
        CallText, StringConstraints(min_length=1, max_length=128), _text_schema(128, required=True)
    ] = Field(examples=["1732958100.42"])
    direction: Annotated[Literal["in", "out"], BeforeValidator(_direction)] = Field(
        description="in | out (incoming / outgoing taken too).", examples=["in"]
    )
    phone: Annotated[
        CallText, StringConstraints(min_length=1, max_length=64), _text_schema(64, required=True)
    ] = Field(description="The other party's number.", examples=["+375296254070"])
    extension: Annotated[CallText, StringConstraints(max_length=32), _text_schema(32)] | None = (
        Field(None, examples=["151"])
    )
    timestamp: Timestamp | None = None
    duration: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        None, description="Seconds (hangup).", examples=[42]
    )
    status: (
        Annotated[CallText, StringConstraints(max_length=32, to_lower=True), _text_schema(32)]
        | None
    ) = Field(
        None, description="At hangup: answered | missed | busy | failed.", examples=["answered"]
    )

    def normalised(self, region: str) -> dict[str, Any]:
        """The fields as stored next to `raw` (phone in E.164 where it parses)."""
        out: dict[str, Any] = {
            "event": self.event,
            "call_id": self.call_id,
            "direction": self.direction,
            "phone": self.phone,
            "e164": e164(self.phone, region),
        }
        if self.extension:
            out["extension"] = self.extension
        if self.timestamp is not None:
            out["timestamp"] = self.timestamp.isoformat()
        if self.duration is not None:
            out["duration"] = self.duration
        if self.status:
            out["status"] = self.status
        return out


class TelephonyBody(RootModel[TelephonyEvent | list[TelephonyEvent]]):
    """One TelephonyEvent, or a JSON array of them."""

    model_config = ConfigDict(title="TelephonyEvents")


class Stored(BaseModel):
    """Every row is stored (committed)."""

    status: Literal["OK"] = "OK"
    ids: list[int] = Field(description="The `uon_inbox` rows written.", examples=[[101]])


class Originated(BaseModel):
    """Click-to-call: whether the PBX took the call (200 ok true; 502 ok false with the
    reason). The request and the attempt are stored either way."""

    ok: bool
    error: str | None = Field(None, description="Why the PBX did not take the call.")
    ids: list[int] = Field(default_factory=list, description="The `uon_inbox` row.")
    origination_id: int | None = Field(None, description="The `uon_originations` row.")


class UonAnswer(RootModel[Stored | Originated]):
    """`{"status": "OK", "ids"}` for a stored webhook; `{"ok": …}` for click-to-call."""

    model_config = ConfigDict(title="UonWebhookAnswer")
