"""Click-to-call: ask the PBX to ring a manager's extension and dial the client.

The URL comes from the integration's `pbx_originate_url` template (default
`{pbx}/api/makecallexternal?code={ext}&phone={e164}&clientId={secret}`); every value but
`{pbx}` is URL-encoded. The PBX secret is in that URL, so the URL is never logged, stored
or answered: errors say what happened in words of their own, with the secret masked
out of anything the PBX said.
"""

from __future__ import annotations

import logging
import string
import time
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import orjson

from crm_sync.redaction import install_log_redaction, mask_literals
from webhook_receiver.providers.uon.database import Account

log = logging.getLogger(__name__)

# The PBX answers at once (it only queues the call); U-ON's user is waiting.
TIMEOUT_SECONDS = 3.0
MAX_ERROR_CHARS = 200
# The settings a click-to-call depends on.
CALL_SETTINGS = frozenset({"user_extensions", "default_region", "pbx_url", "pbx_originate_url"})


class NotConfigured(Exception):
    """The integration cannot originate: what is missing (a 409)."""


@dataclass(frozen=True)
class Call:
    """What to originate: the manager, their extension and the client's E.164 number."""

    manager: str
    extension: str
    e164: str


@dataclass(frozen=True)
class Outcome:
    """The PBX's answer: ok, or why not (never naming the secret)."""

    ok: bool
    error: str | None
    status: int | None
    duration_ms: float


def template_names(template: str) -> set[str]:
    """The placeholders a template names."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def needs_secret(account: Account) -> bool:
    """Whether the account's template puts the PBX secret in the URL."""
    return "secret" in template_names(account.settings.pbx_originate_url)


def check_settings(account: Account) -> None:
    """NotConfigured when a setting a click-to-call needs is stored invalid."""
    broken = sorted(account.invalid & CALL_SETTINGS)
    if broken:
        raise NotConfigured(f"the integration's settings are invalid: {', '.join(broken)}")


def originate_url(account: Account, call: Call, secret: str | None) -> str:
    """The originate URL (NotConfigured when the template needs what is not set)."""
    check_settings(account)
    settings = account.settings
    names = template_names(settings.pbx_originate_url)
    if "pbx" in names and not settings.pbx_url:
        raise NotConfigured("no PBX configured: set the integration's pbx_url")
    if "secret" in names and not secret:
        raise NotConfigured("no PBX secret configured: set the integration's pbx_secret")

    def enc(value: str) -> str:
        return quote(value, safe="")

    return settings.pbx_originate_url.format(
        pbx=(settings.pbx_url or "").rstrip("/"),
        ext=enc(call.extension),
        e164=enc(call.e164),
        phone=enc(call.e164),
        digits=enc(call.e164.lstrip("+")),
        manager=enc(call.manager),
        secret=enc(secret or ""),
    )


def _secrets(secret: str | None) -> list[str]:
    return [s for s in (secret, quote(secret or "", safe="")) if s]


def _said(response: httpx.Response, secret: str | None) -> str | None:
    """What the PBX said went wrong (`error` / `message` of a JSON answer), masked."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    said = body.get("error") or body.get("message")
    if not isinstance(said, str) or not said.strip():
        return None
    return mask_literals(said.strip(), _secrets(secret))[:MAX_ERROR_CHARS]


def _refused(body: bytes) -> bool:
    """A 2xx answer that still says no: `{"ok": false}` (or a `result` that is not 200)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(parsed, dict):
        return False
    if parsed.get("ok") is False or parsed.get("success") is False:
        return True
    result = parsed.get("result")
    return isinstance(result, int) and not isinstance(result, bool) and result >= 400


async def originate(url: str, secret: str | None, timeout: float | None = None) -> Outcome:
    """GET the originate URL once (no retry: a retried originate may ring twice)."""
    # httpx logs each request's URL: the secret must not reach that line.
    install_log_redaction("httpx", _secrets(secret))
    seconds = TIMEOUT_SECONDS if timeout is None else timeout
    started = time.perf_counter()
    status: int | None = None
    try:
        async with httpx.AsyncClient(timeout=seconds, follow_redirects=False) as client:
            response = await client.get(url)
        status = response.status_code
        if 200 <= status < 300 and not _refused(response.content):
            error = None
        else:
            said = _said(response, secret)
            error = f"the PBX answered HTTP {status}" + (f": {said}" if said else "")
    except httpx.TimeoutException:
        error = f"the PBX did not answer within {seconds:g} s"
    except httpx.HTTPError as exc:
        # The exception's text may hold the URL (and so the secret): only its kind is told.
        error = f"the PBX could not be reached ({type(exc).__name__})"
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    return Outcome(error is None, error, status, duration_ms)
