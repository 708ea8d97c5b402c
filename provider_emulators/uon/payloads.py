"""Pydantic models of what the U-ON emulators read (API and admin bodies) and of what
the senders post (U-ON webhooks, telephony call events)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _as_text(value: Any) -> Any:
    """U-ON sends ids as numbers or strings alike: keep them as text."""
    if isinstance(value, bool):
        return value
    return str(value) if isinstance(value, int | float) else value


Text = Annotated[str, BeforeValidator(_as_text)]


class _Open(BaseModel):
    """Unknown fields are kept (U-ON objects have many more)."""

    model_config = ConfigDict(extra="allow")


class UserIn(_Open):
    """A client for ``POST /_admin/users`` (``u_id`` optional) or a PATCH of one."""

    u_id: Text | None = None


class RequestIn(_Open):
    """A travel request for ``POST /_admin/uon-requests``."""

    id: Text = Field(min_length=1)
    status: Text | None = None


class NotificationIn(_Open):
    """``notification/create``: a pop-up for a manager."""

    text: Text = Field(min_length=1)
    manager_id: Text = ""


# ---- what the senders post ----------------------------------------------------------------

# The Russian keys U-ON may use instead of the English ones.
RUSSIAN_KEYS = {
    "method": "метод",
    "phone": "телефон",
    "user_id": "ID пользователя",
    "client": "клиент",
    "client_id": "ID клиента",
    "request_id": "ID заявки",
}


class UonWebhook(BaseModel):
    """One U-ON webhook (``type_id`` 3/4/5 client, 1/2/16/17 request, 47 click-to-call)."""

    model_config = ConfigDict(extra="forbid")

    type_id: int | None = None
    client_id: Text | None = None
    request_id: Text | None = None
    lead_id: Text | None = None
    method: str | None = None
    user_id: Text | None = None
    phone: str | None = None
    uon_id: Text | None = None
    uon_subdomain: str | None = None
    datetime: str | None = None
    client: dict[str, Any] | None = None

    def fields(self, russian: bool = False) -> dict[str, Any]:
        """The set fields, keys in Russian where U-ON has a Russian name (``russian``)."""
        data = self.model_dump(exclude_none=True)
        if russian:
            data = {RUSSIAN_KEYS.get(k, k): v for k, v in data.items()}
        return data

    def flat(self, russian: bool = False) -> dict[str, str]:
        """As a query string or form sends it: ``client`` as a JSON string."""
        return {
            k: orjson.dumps(v).decode() if isinstance(v, dict) else str(v)
            for k, v in self.fields(russian).items()
        }


Event = Literal["start", "dial", "bridge", "hangup"]


class TelephonyEvent(BaseModel):
    """One call event as the telephony system posts it."""

    model_config = ConfigDict(extra="forbid")

    event: Event
    call_id: str = Field(min_length=1, max_length=128)
    direction: Literal["in", "out"] = "in"
    phone: str
    extension: str | None = None
    timestamp: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    duration: float | None = None
    status: Literal["answered", "missed", "busy", "failed"] | None = None
