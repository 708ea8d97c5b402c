"""Field types and helpers for provider setup and settings models (pydantic v2).

A provider's setup model declares what `crm-sync integrations add` asks for: each
field says where it is stored (an `integrations` column, `credentials` or
`settings`), whether it is a secret, and optionally its environment variable.
"""

from __future__ import annotations

import uuid
import zoneinfo
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError

# "none": used while adding (e.g. an OAuth code, exchanged at once), never stored.
Store = Literal[
    "integration_uuid", "api_base_url", "webhook_secret", "credentials", "settings", "none"
]
COLUMNS = ("integration_uuid", "api_base_url", "webhook_secret")


def _nonblank(value: str) -> str:
    if not value or not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


def _http_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http(s) URL such as https://api.example.com")
    return value.strip().rstrip("/")


def _uuid(value: str) -> str:
    try:
        uuid.UUID(value)
    except ValueError:
        raise ValueError(f"'{value}' is not a UUID") from None
    return value


def _time_zone(value: str) -> str:
    name = value.strip()
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"'{name}' is not an IANA time zone such as Europe/Moscow or UTC"
        ) from None
    return name


def _secret(value: SecretStr) -> SecretStr:
    _nonblank(value.get_secret_value())
    return SecretStr(value.get_secret_value().strip())


NonBlank = Annotated[str, AfterValidator(_nonblank)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
UuidText = Annotated[str, AfterValidator(_uuid)]
Secret = Annotated[SecretStr, AfterValidator(_secret)]
TimeZoneName = Annotated[str, AfterValidator(_time_zone)]


class ProviderSettings(BaseModel):
    """What every provider's integration settings share; a provider's model extends it."""

    model_config = ConfigDict(extra="forbid")

    # Off: phone numbers and e-mail addresses are masked in the stored call log
    # (api_call_log bodies, URLs, errors). On only where a contract allows keeping them.
    log_personal_data: bool = Field(
        False, description="Keep phones and e-mails in the call log (default: masked)."
    )
    # Seed 002's traffic mirror, for every provider: each stored inbox row is also sent,
    # in order, to this base URL (a test installation); its answers are ignored.
    mirror_url: HttpUrl | None = Field(
        None, description="Forward every received webhook to this base URL too."
    )


def setup_field(
    default: Any = ...,
    *,
    store: Store,
    help: str,  # noqa: A002 - the CLI's word for it
    secret: bool = False,
    env: str | None = None,
    key: str | None = None,
) -> Any:
    """A setup-model field: ``store`` says where the value goes (under ``key``, default
    the field's name, in `credentials` / `settings`), ``env`` may supply it."""
    return Field(
        default,
        description=help,
        json_schema_extra={"store": store, "secret": secret, "env": env, "key": key},
    )


def field_meta(model: type[BaseModel], name: str) -> dict[str, Any]:
    """The crm-sync metadata (store, secret, env) of one setup field."""
    extra = model.model_fields[name].json_schema_extra
    return dict(extra) if isinstance(extra, dict) else {}


@dataclass(frozen=True)
class Problem:
    """One validation error: which field, what kind, what is wrong (never the value)."""

    field: str
    kind: str
    message: str


def problems(exc: ValidationError) -> list[Problem]:
    """A pydantic error as problems, one per field."""
    found = []
    for error in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(p) for p in error["loc"]) or "value"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        found.append(Problem(field, error["type"], message))
    return found


def validation_message(exc: BaseException) -> str:
    """One line per problem, naming the field — never the value."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    return "; ".join(f"{p.field}: {p.message}" for p in problems(exc))


def split_setup(setup: BaseModel) -> dict[str, Any]:
    """A validated setup model → keyword arguments of `add_integration`."""
    out: dict[str, Any] = {"credentials": {}, "settings": {}}
    for name in type(setup).model_fields:
        value = getattr(setup, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        meta = field_meta(type(setup), name)
        store = meta.get("store", "settings")
        if store == "none" or value is None:
            continue
        if store in COLUMNS:
            out[store] = value
        else:
            out[store][meta.get("key") or name] = value
    return out
