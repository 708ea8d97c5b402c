"""amoCRM API v4 client on the shared provider base.

Only amoCRM specifics live here: HAL lists (``_embedded``, ``_links.next``) where an
empty list is **204 No Content**, ``application/problem+json`` errors (400 with
``validation-errors``), ``limit`` ≤ 250, and amoCRM's quota behaviour: 429 comes
without ``Retry-After`` (the base pushes the account's shared limiter key, so every
process backs off), and repeated abuse is answered with **403** (the IP is blocked).
A 403 therefore stops this account's calls: the integration is marked for attention,
the shared key is pushed ``block_seconds`` ahead and a non-retryable
:class:`AmocrmBlockedError` is raised — the run fails loudly instead of hammering.

Auth (OAuth 2 with single-use refresh tokens, or a long-lived token) is wired by
``orchestration.defs.amocrm.resources``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from crm_sync.redaction import redact_body
from orchestration.resources.base import ProviderClient
from orchestration.resources.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRequestError,
    ProviderResponseError,
)

TOKEN_PATH = "/oauth2/access_token"  # noqa: S105 - a path, not a secret
LEADS_PATH = "/api/v4/leads"
CONTACTS_PATH = "/api/v4/contacts"
PAGE_LIMIT = 250  # amoCRM's maximum `limit`
MAX_PAGES = 10_000  # a guard against a `next` link that never ends
BLOCK_SECONDS = 600.0  # how long a 403 (IP blocked) keeps the account's calls off
BLOCKED_PREFIX = "amoCRM blocked this IP"
REAUTHORIZE_PREFIX = "needs re-authorization"


class AmocrmBlockedError(ProviderError):
    """amoCRM answered 403 (the IP is blocked after too many requests): never retried."""


def problem_text(body: Any) -> str | None:
    """``title: detail`` of a problem+json body, with its validation errors; else None."""
    if not isinstance(body, dict) or not any(k in body for k in ("title", "detail", "hint")):
        return None
    parts = [str(body[k]).strip() for k in ("title", "detail", "hint") if body.get(k)]
    text = ": ".join(p for p in parts if p) or "no detail"
    problems = []
    for group in body.get("validation-errors") or ():
        if not isinstance(group, dict):
            continue
        prefix = f"[{group['request_id']}] " if group.get("request_id") is not None else ""
        for error in group.get("errors") or ():
            if isinstance(error, dict):
                where = error.get("path") or "?"
                what = error.get("detail") or error.get("code") or "invalid"
                code = f" ({error['code']})" if error.get("code") and error.get("detail") else ""
                problems.append(f"{prefix}{where}: {what}{code}")
    if problems:
        text += "; validation errors: " + "; ".join(problems)
    return text


def _next_link(body: Any) -> str | None:
    links = body.get("_links") if isinstance(body, dict) else None
    nxt = links.get("next") if isinstance(links, dict) else None
    href = nxt.get("href") if isinstance(nxt, dict) else None
    return href if isinstance(href, str) and href else None


class AmocrmClient(ProviderClient):
    """One amoCRM account (``https://{subdomain}.amocrm.ru`` or an emulator's base URL).

    ``on_attention(reason)`` (set by the resource) records why the integration needs
    a person: an IP block, or credentials amoCRM no longer takes.
    """

    provider = "amocrm"

    def __init__(
        self,
        base_url: str,
        *,
        on_attention: Callable[[str], None] | None = None,
        on_recovered: Callable[[], None] | None = None,
        block_seconds: float = BLOCK_SECONDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(base_url, **kwargs)
        self.on_attention = on_attention
        # Called once, after the first call that works, when the integration was marked
        # (the block is over, or new credentials work): clears its attention.
        self.on_recovered = on_recovered
        self.block_seconds = block_seconds
        self.blocked: str | None = None  # set once amoCRM blocked us: later calls stop at once

    # -- generic ------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """As the base, but refused at once (no HTTP) after this client saw an IP block."""
        if self.blocked is not None:
            raise AmocrmBlockedError(self.blocked, provider=self.provider, status_code=403)
        result = super().request(method, path, **kwargs)
        if self.on_recovered is not None:
            recovered, self.on_recovered = self.on_recovered, None
            recovered()
        return result

    def pages(
        self,
        path: str,
        key: str,
        params: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every item of ``_embedded[key]`` over all HAL pages (``_links.next``).

        A 204 (amoCRM's empty list) ends the walk. The next link is followed on this
        client's base URL (its path and query only), so an absolute link naming
        another host never takes our token elsewhere. ``params`` may be pairs, for
        repeated keys such as ``filter[id][]``.
        """
        pairs = list(params.items() if isinstance(params, Mapping) else params or ())
        query: list[tuple[str, Any]] = pairs
        if not any(k == "limit" for k, _ in pairs):
            query = [("limit", PAGE_LIMIT), *pairs]
        current = path
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            body = self.request("GET", current, params=query)
            if body is None:
                return
            embedded = body.get("_embedded") if isinstance(body, dict) else None
            items = embedded.get(key) if isinstance(embedded, dict) else None
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise ProviderResponseError(
                    f"unexpected body: `_embedded.{key}` missing or not a list of objects",
                    provider=self.provider,
                )
            yield from items
            href = _next_link(body)
            if href is None or not items:
                return
            parts = urlsplit(href)
            if not parts.path or href in seen:
                return
            seen.add(href)
            current = parts.path
            query = parse_qsl(parts.query, keep_blank_values=True)
        raise ProviderResponseError(f"more than {MAX_PAGES} pages", provider=self.provider)

    # -- leads --------------------------------------------------------------------------

    def get_lead(self, lead_id: int | str) -> dict[str, Any] | None:
        """``GET /api/v4/leads/{id}``; None when amoCRM has no such lead (204 / 404)."""
        try:
            body = self.request("GET", f"{LEADS_PATH}/{int(lead_id)}")
        except ProviderRequestError as exc:
            if exc.status_code == 404:
                return None
            raise
        if body is not None and not isinstance(body, dict):
            raise ProviderResponseError(
                "unexpected body: want a lead object", provider=self.provider
            )
        return body

    def patch_lead(self, lead_id: int | str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """``PATCH /api/v4/leads/{id}`` with ``body`` (price, custom_fields_values, ...)."""
        answer = self.request("PATCH", f"{LEADS_PATH}/{int(lead_id)}", json=dict(body))
        return answer if isinstance(answer, dict) else None

    def search_leads(self, query: str) -> list[dict[str, Any]]:
        """Every lead amoCRM's full-text ``query`` finds (all pages; [] on 204)."""
        return list(self.pages(LEADS_PATH, "leads", {"query": query}))

    def create_lead(
        self, name: str, pipeline_id: int | None = None, status_id: int | None = None
    ) -> int:
        """``POST /api/v4/leads`` with one lead; its new id."""
        lead: dict[str, Any] = {"name": name}
        if pipeline_id is not None:
            lead["pipeline_id"] = int(pipeline_id)
        if status_id is not None:
            lead["status_id"] = int(status_id)
        body = self.request("POST", LEADS_PATH, json=[lead])
        try:
            return int(body["_embedded"]["leads"][0]["id"])
        except (KeyError, IndexError, TypeError, ValueError):
            raise ProviderResponseError(
                "unexpected body: no `_embedded.leads[0].id` in the created lead",
                provider=self.provider,
            ) from None

    # -- contacts -----------------------------------------------------------------------

    def contacts_by_ids(self, ids: Iterable[int | str]) -> list[dict[str, Any]]:
        """Contacts by id, ``filter[id][]`` with at most 250 ids a call (and all pages).

        Ids amoCRM does not know are absent from the answer.
        """
        wanted = list(dict.fromkeys(str(int(i)) for i in ids))
        self.stats.add(ids_requested=len(wanted))
        contacts: list[dict[str, Any]] = []
        for start in range(0, len(wanted), PAGE_LIMIT):
            batch = wanted[start : start + PAGE_LIMIT]
            params = [("filter[id][]", i) for i in batch]
            contacts.extend(self.pages(CONTACTS_PATH, "contacts", params))
        return contacts

    # -- errors -------------------------------------------------------------------------

    def _raise_for_status(self, response: httpx.Response) -> None:
        """problem+json into clear messages; a 403 is an IP block (see module docstring)."""
        status = response.status_code
        if status < 400 or status == 429 or status >= 500 or status == 408:
            super()._raise_for_status(response)
            return
        try:
            detail = problem_text(response.json())
        except ValueError:
            detail = None
        detail = self._clean(detail or response.text) or f"HTTP {status}"
        if status == 403:
            self.block(f"{BLOCKED_PREFIX} (403): {detail}")
        if status == 401:
            # The auth flow already refreshed once (or a long-lived token was refused).
            message = f"amoCRM refused the credentials (401): {detail}"
            if self.on_attention is not None:
                self.on_attention(f"{REAUTHORIZE_PREFIX}: {message}")
            raise ProviderAuthError(message, provider=self.provider, status_code=status)
        raise ProviderRequestError(
            f"request rejected ({status}): {detail}", provider=self.provider, status_code=status
        )

    def block(self, message: str) -> None:
        """Stop this account's calls: attention, the shared key pushed, a loud error."""
        self.blocked = message
        if self.throttle is not None:
            # Every process drawing on this account's key waits out the block.
            self.throttle.penalize(self.block_seconds)
        if self.on_attention is not None:
            self.on_attention(message)
        raise AmocrmBlockedError(message, provider=self.provider, status_code=403)

    def _clean(self, text: str | None) -> str:
        return redact_body(text or "", self._secrets, 500) or ""
