"""Senders: U-ON webhooks (GET query, form or JSON; English or Russian keys) and the
telephony system's call events (one event, or a whole call)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
import orjson

from provider_emulators.uon.payloads import TelephonyEvent, UonWebhook

Encoding = Literal["query", "form", "json"]
ENCODINGS: tuple[Encoding, ...] = ("query", "form", "json")
SECRET_HEADER = "X-Webhook-Secret"  # noqa: S105 - a header name
MAX_ANSWERS = 20  # answers kept in a summary


def _answer(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return resp.text[:200]


class _Tally:
    """Counts answers the way :mod:`provider_emulators.sender` summaries do."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.sent = 0
        self.statuses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.answers: list[Any] = []

    def send(self, client: httpx.Client, method: str, url: str, **kwargs: Any) -> None:
        self.sent += 1
        try:
            resp = client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            self.errors[type(exc).__name__] += 1
            return
        self.statuses[str(resp.status_code)] += 1
        if len(self.answers) < MAX_ANSWERS:
            self.answers.append(_answer(resp))

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "ok": sum(n for code, n in self.statuses.items() if code.startswith("2")),
            "statuses": dict(sorted(self.statuses.items())),
            "errors": dict(sorted(self.errors.items())),
            "elapsed_s": round(time.perf_counter() - self.started, 3),
            "answers": self.answers,
        }


def webhook_request(
    webhook: UonWebhook, encoding: Encoding = "json", *, russian: bool = False
) -> dict[str, Any]:
    """The ``httpx`` request arguments (method, params/content, headers) of one webhook."""
    if encoding == "query":
        return {"method": "GET", "params": webhook.flat(russian)}
    if encoding == "form":
        return {"method": "POST", "data": webhook.flat(russian)}
    return {
        "method": "POST",
        "content": orjson.dumps(webhook.fields(russian)),
        "headers": {"content-type": "application/json"},
    }


def send_uon_webhooks(
    url: str,
    webhooks: Iterable[UonWebhook],
    *,
    encoding: Encoding = "json",
    russian: bool = False,
    secret: str | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Send each webhook to ``url`` (``/webhooks/uon/{key}``, or ``/uon/webhook`` with
    ``secret`` in ``X-Webhook-Secret``); returns a summary with the first answers."""
    tally = _Tally()
    with httpx.Client(timeout=timeout) as client:
        for webhook in webhooks:
            args = webhook_request(webhook, encoding, russian=russian)
            headers = {**args.pop("headers", {}), **({SECRET_HEADER: secret} if secret else {})}
            tally.send(client, args.pop("method"), url, headers=headers, **args)
    return tally.summary()


CallOutcome = Literal["answered", "missed", "busy", "failed"]


def call_events(
    call_id: str,
    phone: str,
    *,
    direction: Literal["in", "out"] = "in",
    extension: str | None = "151",
    outcome: CallOutcome = "answered",
    talk_seconds: float = 42.0,
    started: datetime | None = None,
) -> list[TelephonyEvent]:
    """One whole call: start → dial → bridge (answered only) → hangup, a second apart."""
    at = started or datetime.now(UTC)
    kinds = ["start", "dial", "bridge", "hangup"] if outcome == "answered" else ["start", "dial"]
    events = [
        TelephonyEvent(
            event=kind,  # type: ignore[arg-type]
            call_id=call_id,
            direction=direction,
            phone=phone,
            extension=extension,
            timestamp=(at + timedelta(seconds=n)).isoformat(),
        )
        for n, kind in enumerate(kinds)
    ]
    if outcome != "answered":
        events.append(
            TelephonyEvent(
                event="hangup",
                call_id=call_id,
                direction=direction,
                phone=phone,
                extension=extension,
                timestamp=(at + timedelta(seconds=20)).isoformat(),
                duration=0,
                status=outcome,
            )  # fmt: skip
        )
    else:
        hangup = events[-1]
        hangup.timestamp = (at + timedelta(seconds=2 + talk_seconds)).isoformat()
        hangup.duration, hangup.status = talk_seconds, "answered"
    return events


def send_telephony(
    url: str,
    events: Sequence[TelephonyEvent],
    *,
    batch: bool = False,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """POST call events to ``url`` (``/webhooks/telephony/{key}``): one request per
    event, or all of them as one JSON array (``batch``)."""
    tally = _Tally()
    bodies = (
        [[e.model_dump(exclude_none=True) for e in events]]
        if batch
        else [e.model_dump(exclude_none=True) for e in events]
    )
    with httpx.Client(timeout=timeout) as client:
        for body in bodies:
            tally.send(
                client, "POST", url, content=orjson.dumps(body),
                headers={"content-type": "application/json"},
            )  # fmt: skip
    return tally.summary()


__all__ = [
    "ENCODINGS",
    "SECRET_HEADER",
    "call_events",
    "send_telephony",
    "send_uon_webhooks",
    "webhook_request",
]
