"""OAuth 2 authorization-code exchange (RFC 6749 §4.1.3), for any provider.

The provider's module says where its token endpoint is and which fields it wants;
this module posts the exchange with httpx and reads the standard answer
(``access_token``, ``refresh_token``, ``expires_in``). Errors never carry the code,
the client secret or a token: only the status and the provider's error words.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from crm_sync.redaction import redact_body


@dataclass(frozen=True)
class NewToken:
    """A token a provider just issued: from a code exchange, a refresh or a login."""

    access_token: str
    expires_in: float | None  # seconds
    refresh_token: str | None = None


class OAuthError(Exception):
    """The exchange failed; ``refused`` when the provider said no (bad code, secret, URI)."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code

    @property
    def refused(self) -> bool:
        """True for a 4xx answer other than 429: asking again with the same input won't help."""
        return (
            self.status_code is not None
            and 400 <= self.status_code < 500
            and (self.status_code != 429)
        )


def read_token(response: httpx.Response) -> NewToken:
    """The token pair in a successful token-endpoint answer, or :class:`OAuthError`."""
    try:
        body = response.json()
    except ValueError:
        body = None
    access = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(access, str) or not access:
        raise OAuthError(
            "the token endpoint's answer has no access_token", status_code=response.status_code
        )
    refresh = body.get("refresh_token")
    expires = body.get("expires_in")
    try:
        expires_in = float(expires) if expires is not None else None
    except (TypeError, ValueError):
        expires_in = None
    return NewToken(access, expires_in, refresh if isinstance(refresh, str) and refresh else None)


def error_words(response: httpx.Response, secrets: tuple[str, ...] = ()) -> str:
    """The provider's reason for a refusal (``error``/``hint``/``detail``...), secrets masked."""
    try:
        body = response.json()
    except ValueError:
        body = None
    words: list[str] = []
    if isinstance(body, dict):
        for key in ("error", "error_description", "title", "detail", "hint", "message"):
            value = body.get(key)
            if isinstance(value, str | int) and str(value).strip():
                words.append(str(value).strip())
    text = "; ".join(dict.fromkeys(words)) or response.text
    return redact_body(text, secrets, 300) or f"HTTP {response.status_code}"


def exchange_code(
    token_url: str,
    *,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    code: str,
    extra: Mapping[str, Any] | None = None,
    form: bool = False,
    timeout_seconds: float = 15.0,
    transport: httpx.BaseTransport | None = None,
) -> NewToken:
    """Trade an authorization ``code`` for a token pair at ``token_url``.

    The fields go as JSON (``form=True``: form-encoded). Raises :class:`OAuthError`
    with a message free of secrets when the endpoint is unreachable or says no.
    """
    fields: dict[str, Any] = {
        "grant_type": "authorization_code",
        "client_id": client_id,
        "client_secret": client_secret,
        "redirect_uri": redirect_uri,
        "code": code,
        **dict(extra or {}),
    }
    secrets = tuple(s for s in (client_secret, code) if s)
    headers = {"Accept": "application/json"}
    if form:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        content = urlencode(fields).encode()
    else:
        headers["Content-Type"] = "application/json"
        content = httpx.Request("POST", token_url, json=fields).content
    try:
        with httpx.Client(timeout=timeout_seconds, transport=transport) as http:
            response = http.post(token_url, content=content, headers=headers)
    except httpx.HTTPError as exc:
        host = httpx.URL(token_url).host
        raise OAuthError(f"could not reach {host} ({type(exc).__name__})") from None
    if response.status_code >= 300:
        raise OAuthError(
            f"the code exchange was refused ({response.status_code}): "
            f"{error_words(response, secrets)}",
            status_code=response.status_code,
        )
    return read_token(response)
