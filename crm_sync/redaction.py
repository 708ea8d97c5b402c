"""Keep secrets out of output: the one place that masks tokens, URLs, bodies and log lines.

Used by the CLI (masked credentials), the provider clients (call log, httpx log
lines) and the receiver (webhook keys in access logs).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "****"
SECRET_PARAM = re.compile(
    r"(^|_|-)(api_?key|key|token|access_token|refresh_token|secret|password|passwd|"
    r"signature|sig|auth|apilogin)$",
    re.IGNORECASE,
)
_SECRET_JSON = re.compile(
    r'("(?:[\w-]*(?:token|api_?key|apiLogin|secret|password)[\w-]*)"\s*:\s*)"[^"]*"',
    re.IGNORECASE,
)
# A path separator as it can appear in a logged path: "/", a backslash, or either one
# percent-encoded (also twice: `%252F`).
_SEP = r"(?:/|\\|%(?:25)*(?:2f|5c))"
# `webhooks` as a path segment (any letter case, after and before any run of separators),
# then everything up to whitespace or a quote: the provider and the rest of the URL.
_WEBHOOK_PATH = re.compile(
    rf"((?:^|(?<=[\s\"'=(<])|{_SEP}+)webhooks{_SEP}+)([^\s\"'<>]*)", re.IGNORECASE
)
# A provider name (kept in the log): short, so a webhook key is never taken for one.
_PROVIDER = re.compile(r"[a-z][a-z0-9_]{0,19}(?![\w.~-])", re.IGNORECASE)
_LEADING_SEP = re.compile(_SEP, re.IGNORECASE)


def mask_secret(value: object) -> str:
    """A stored secret for display, keeping only enough to tell two apart."""
    text = "" if value is None else str(value)
    # Only long tokens show a tail: four characters of a short one give too much away.
    if len(text) < 16:
        return MASK
    return f"{MASK}{text[-4:]}"


def is_secret_param(name: str) -> bool:
    """True for query parameter names like ``api_key``, ``token``, ``key``, ``secret``."""
    return bool(SECRET_PARAM.search(name))


def mask_literals(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each (non-trivial) secret in ``text``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    return text


def mask_url(url: str, secrets: Iterable[str] = ()) -> str:
    """The URL with secret-looking query values and the given literal secrets masked."""
    url = mask_literals(url, secrets)
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = [
        (k, MASK if is_secret_param(k) else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(pairs, safe="*[]")))


def _mask_webhook_rest(match: re.Match[str]) -> str:
    prefix, rest = match.group(1), match.group(2)
    provider = _PROVIDER.match(rest)
    keep = provider.group(0) if provider else ""
    tail = rest[len(keep) :]
    if not tail:
        return prefix + keep
    if _LEADING_SEP.match(tail):
        return f"{prefix}{keep}/{MASK}"
    return f"{prefix}{keep}{tail[0] if tail[0] == '?' else ''}{MASK}"


def mask_webhook_path(path: str) -> str:
    """`/webhooks/allio/<key>` → `/webhooks/allio/****` (the key is the secret).

    Everything after the provider is masked — further segments, dot segments, query and
    fragment — whatever the letter case and however many slashes (or backslashes, or
    percent-encoded ones) separate the segments: `//WEBHOOKS/allio/x/../<key>?a=1` →
    `//WEBHOOKS/allio/****`. A first segment that does not look like a provider name is
    masked too (`/webhooks/<key>` → `/webhooks/****`).
    """
    return _WEBHOOK_PATH.sub(_mask_webhook_rest, path)


def redact_body(
    body: str | bytes | None, secrets: Iterable[str] = (), limit: int = 4096
) -> str | None:
    """A body safe to store: secrets and secret-named JSON fields masked, cut to ``limit``."""
    if body is None:
        return None
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = _SECRET_JSON.sub(rf'\1"{MASK}"', mask_literals(text, secrets))
    if len(text) > limit:
        text = f"{text[:limit]}…[{len(text) - limit} more chars]"
    return text


class UrlRedactionFilter(logging.Filter):
    """Masks URLs (query secrets, literal secrets, webhook keys) in a logger's records."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def _mask(self, value: str) -> str:
        try:
            value = mask_url(value, self.secrets)
        except ValueError:  # not a URL urlsplit accepts (e.g. a stray "[" in a netloc)
            value = mask_literals(value, self.secrets)
        return mask_webhook_path(value)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            record.args = tuple(self._mask(str(a)) if _is_text(a) else a for a in args)
        elif isinstance(record.msg, str):
            record.msg = self._mask(record.msg)
        return True


def _is_text(value: object) -> bool:
    return isinstance(value, str) or type(value).__name__ == "URL"


_filters: dict[str, UrlRedactionFilter] = {}


def install_log_redaction(logger_name: str, secrets: Iterable[str] = ()) -> None:
    """Mask URLs in ``logger_name``'s records (idempotent); ``secrets`` are masked too.

    Used for httpx's ``HTTP Request: POST <url>`` lines and uvicorn's access log.
    """
    flt = _filters.get(logger_name)
    if flt is None:
        flt = _filters[logger_name] = UrlRedactionFilter()
        logging.getLogger(logger_name).addFilter(flt)
    flt.secrets.update(s for s in secrets if s)


# Personal data in stored bodies (api_call_log): e-mail addresses anywhere; phone numbers
# under phone-like JSON keys or form fields (any spelling, even bare digits), and
# elsewhere when they cannot be an id or a time: a leading "+" or a "(code)" part.
PERSONAL_MASK = "***"
_EMAIL = re.compile(  # bounded parts: linear on long runs of word characters
    r"(?<![\w.%+-])[\w.%+-]{1,64}(?:@|%40)[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}"
)
_PERSONAL_KEY = r"[\w-]*(?:phone|mobile|e-?mail|msisdn)[\w-]*|tel|mail|contact_?number"
_PERSONAL_JSON = re.compile(
    rf'("(?:{_PERSONAL_KEY})"\s*:\s*)(?:"(?:[^"\\]|\\.)*"|[+\d][\d.eE+-]*)', re.IGNORECASE
)
_PERSONAL_FORM = re.compile(rf"((?:^|[?&])(?:{_PERSONAL_KEY})=)[^&#\s]*", re.IGNORECASE)
_PHONE = re.compile(
    r"(?<![\w.:/+-])(?:\+\d(?:[\s().-]*\d){9,14}|(?:\d[\s.-]?)?\(\d{2,5}\)(?:[\s.-]*\d){5,10})"
    r"(?![\w:/])"
)


def mask_personal_data(text: str | None) -> str | None:
    """``text`` (a request or response body, a URL) with phones and e-mails masked.

    For the call log of integrations that do not keep personal data (the default).
    JSON keys and form fields that name a phone or an e-mail lose their whole value;
    free text loses e-mail addresses and numbers that can only be phones.
    """
    if not text:
        return text
    text = _PERSONAL_JSON.sub(rf'\1"{PERSONAL_MASK}"', text)
    text = _PERSONAL_FORM.sub(rf"\1{PERSONAL_MASK}", text)
    text = _EMAIL.sub(PERSONAL_MASK, text)
    return _PHONE.sub(PERSONAL_MASK, text)
