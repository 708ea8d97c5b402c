"""Request hygiene: constant-time compare, key and content-type checks, size-limited body reader.

Webhook keys are kept out of access logs by crm_sync.redaction (installed at startup).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from starlette.types import Receive, Scope


class BodyTooLarge(Exception):
    """The request body is over the configured limit."""


class BadContentLength(Exception):
    """The Content-Length header is not a non-negative integer."""


class ClientGone(Exception):
    """The client disconnected before sending the whole body."""


def constant_time_equals(given: str, expected: str | None) -> bool:
    """Compare two secrets without leaking where they differ (None never matches)."""
    if expected is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


# What `crm_schema.integrations.new_webhook_key` (secrets.token_urlsafe) can produce, with
# room to spare. Anything else is not a key: 404 before any cache or database lookup (a
# NUL, for one, is refused by PostgreSQL as text and would read as an outage).
MAX_WEBHOOK_KEY_LENGTH = 128
_WEBHOOK_KEY = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_WEBHOOK_KEY_LENGTH}}}")

# `application/json`, or `application/<subtype>+json` (RFC 6839 suffix) where the subtype
# is an RFC 6838 restricted-name: it starts with a letter or digit, so `application/+json`
# is refused. Matched on the lower-cased media type, parameters cut off.
_JSON_MEDIA_TYPE = re.compile(rb"application/(?:json|[a-z0-9][a-z0-9!#$&^_.+-]{0,126}\+json)")
_OWS = b" \t"


def is_webhook_key(value: str) -> bool:
    """True for a string that can be a webhook key: `[A-Za-z0-9_-]{1,128}`."""
    return _WEBHOOK_KEY.fullmatch(value) is not None


def is_json_content_type(value: str | bytes | None) -> bool:
    """True for `application/json` and `application/<subtype>+json`, with any parameters
    (e.g. `; charset=utf-8`), in any letter case; False for everything else."""
    if not value:
        return False
    if isinstance(value, str):
        try:
            value = value.encode("latin-1")
        except UnicodeEncodeError:
            return False
    if value == b"application/json":  # the common case, no parsing
        return True
    media_type = value.split(b";", 1)[0].strip(_OWS).lower()
    return _JSON_MEDIA_TYPE.fullmatch(media_type) is not None


def media_type(value: bytes | None) -> bytes:
    """A Content-Type's media type, lower-cased, parameters cut off (b"" when absent)."""
    if not value:
        return b""
    return value.split(b";", 1)[0].strip(_OWS).lower()


def is_form_content_type(value: bytes | None) -> bool:
    """True for `application/x-www-form-urlencoded` with any parameters, in any case."""
    return media_type(value) == b"application/x-www-form-urlencoded"


def peer_ip(scope: Scope) -> IPv4Address | IPv6Address | None:
    """The TCP peer's address (None when unknown). Headers such as `X-Forwarded-For` are
    never looked at: anyone can send them. An IPv4-mapped IPv6 address is its IPv4 one."""
    client = scope.get("client")
    if not client:
        return None
    try:
        address = ip_address(client[0])
    except ValueError:  # e.g. a unix socket's path
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _address(text: str) -> IPv4Address | IPv6Address | None:
    """One `X-Forwarded-For` entry as an address: bare, `[v6]`, `[v6]:port` or `v4:port`."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port (a bare IPv6 has several colons)
        text = text.partition(":")[0]
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_ip(
    scope: Scope, trusted_proxies: Iterable[IPv4Network | IPv6Network] = ()
) -> IPv4Address | IPv6Address | None:
    """The client's address: the TCP peer, unless the peer is a trusted proxy.

    Behind a trusted proxy the `X-Forwarded-For` chain is read from the right, skipping
    the trusted proxies: the first other address is the client (what the outermost
    trusted proxy saw). Entries further left were written by the client itself and are
    never believed. An entry that is not an address makes the client unknown (None:
    inside no allowlist); a chain of trusted proxies only gives its leftmost one.
    """
    peer = peer_ip(scope)
    trusted = tuple(trusted_proxies)
    if peer is None or not trusted or not ip_allowed(peer, trusted):
        return peer
    entries: list[str] = []
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":  # repeated headers form one list, in order
            entries.extend(value.decode("latin-1").split(","))
    client = peer
    for entry in reversed(entries):
        address = _address(entry)
        if address is None:
            return None
        client = address
        if not ip_allowed(address, trusted):
            break
    return client


def ip_allowed(
    address: IPv4Address | IPv6Address | None, networks: Iterable[IPv4Network | IPv6Network]
) -> bool:
    """Whether ``address`` is inside one of ``networks`` (an unknown address never is)."""
    return address is not None and any(address in network for network in networks)


def parse_content_length(value: bytes | None) -> int | None:
    """The declared body length (None when absent); BadContentLength when malformed."""
    if value is None:
        return None
    if not value.isdigit():
        raise BadContentLength
    return int(value)


async def read_body_limited(receive: Receive, limit: int, declared: int | None) -> bytes:
    """The whole body from an ASGI `receive`, never reading past `limit` bytes.

    A declared Content-Length over the limit is refused before any byte is read;
    a chunked body is read chunk by chunk and abandoned as soon as it passes the limit.
    """
    if declared is not None and declared > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)
