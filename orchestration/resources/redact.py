"""Keep secrets out of the call log and the logs: mask URLs, bodies and httpx's log lines."""

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
    """The URL with secret-looking query values and configured path secrets masked."""
    url = mask_literals(url, secrets)
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = [
        (k, MASK if is_secret_param(k) else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(pairs, safe="*[]")))


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


class _HttpxUrlFilter(logging.Filter):
    """Mask query secrets and registered path secrets in httpx's ``HTTP Request`` lines."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(
                mask_url(str(a), self.secrets) if _looks_like_url(a) else a for a in record.args
            )
        return True


def _looks_like_url(value: object) -> bool:
    return str(value).startswith(("http://", "https://"))


_httpx_filter = _HttpxUrlFilter()


def install_httpx_log_redaction(path_secrets: Iterable[str] = ()) -> None:
    """Attach the URL-masking filter to the ``httpx`` logger (idempotent).

    ``path_secrets`` (keys that providers put in the URL path) are masked too.
    """
    _httpx_filter.secrets.update(s for s in path_secrets if s)
    logger = logging.getLogger("httpx")
    if _httpx_filter not in logger.filters:
        logger.addFilter(_httpx_filter)
