"""U-ON.Travel's API client: ``{api_base_url}/{api_key}/{endpoint}.json``.

The API key travels in the path, so it is a literal secret of the client: the
transport masks it in every ``api_call_log`` row and error message. U-ON answers
every call with a ``result`` mirroring the HTTP status:

- 404 means "nothing there" (no client with this number, no such request, a page
  past the end): the read methods return None or an empty list, never raise;
- 429 comes without ``Retry-After``: the base raises
  :class:`ProviderRateLimitedError`, pushes the key's shared limiter forward (every
  process backs off) and retries with exponential backoff;
- 401/403 (a wrong key) are never retried.

Writes are form posts. ``create_lead`` is sent at most once per call of it: it is
retried only after a 429 (U-ON refused it, nothing was created), never after a
timeout or a 5xx, whose outcome is unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from crm_sync.providers.uon import PAGE_SIZE
from orchestration.resources.base import ProviderClient
from orchestration.resources.errors import (
    ProviderRateLimitedError,
    ProviderRequestError,
    ProviderResponseError,
)

PROVIDER = "uon"
MAX_PAGES = 10_000  # a guard against an API that never ends a listing

__all__ = ["MAX_PAGES", "PROVIDER", "UonClient", "digits_of"]


def digits_of(phone: str) -> str:
    """The digits of a number, as U-ON's ``user/phone/{digits}`` wants them."""
    return "".join(ch for ch in str(phone) if ch.isdigit())


def _items(body: Any, key: str) -> list[dict[str, Any]]:
    """``body[key]`` as a list of objects (one object, or none, tolerated)."""
    if not isinstance(body, Mapping):
        return []
    found = body.get(key)
    if isinstance(found, Mapping):
        found = [found]
    if not isinstance(found, list):
        return []
    return [dict(item) for item in found if isinstance(item, Mapping)]


class UonClient(ProviderClient):
    """One U-ON account (API key)."""

    provider = PROVIDER

    def __init__(self, base_url: str, *, api_key: str, **kwargs: Any) -> None:
        if not api_key:
            raise ValueError("a U-ON API key is required")
        secrets = [api_key, quote(api_key, safe=""), *kwargs.pop("secrets", ())]
        super().__init__(base_url, secrets=secrets, **kwargs)
        self._key_path = "/" + quote(api_key, safe="")

    # -- generic ------------------------------------------------------------------------

    def path(self, endpoint: str) -> str:
        """The path of an endpoint: ``user/phone/375…`` → ``/{key}/user/phone/375….json``."""
        return f"{self._key_path}/{endpoint.strip('/')}.json"

    def get(self, endpoint: str) -> dict[str, Any] | None:
        """GET an endpoint; None when U-ON answers 404 (nothing there)."""
        try:
            body = self.request("GET", self.path(endpoint))
        except ProviderRequestError as exc:
            if exc.status_code == 404:
                return None
            raise
        return body

    def post(self, endpoint: str, form: Mapping[str, Any]) -> dict[str, Any]:
        """POST a form (values None are left out); the answer."""
        data = {k: str(v) for k, v in form.items() if v is not None}
        return self.request("POST", self.path(endpoint), data=data)

    def parse_response(self, response: httpx.Response) -> Any:
        """The JSON object; a ``result`` of 429 inside an HTTP 200 counts as rate limited."""
        body = self.decode_json(response)
        if not isinstance(body, dict):
            raise ProviderResponseError(
                "body is not a JSON object", provider=PROVIDER, retryable=True
            )
        if str(body.get("result", "")) == "429":
            raise ProviderRateLimitedError(
                "rate limited (result 429)", provider=PROVIDER, status_code=response.status_code
            )
        return body

    # -- reads --------------------------------------------------------------------------

    def users_by_phone(self, phone: str) -> list[dict[str, Any]]:
        """The clients with this number (``user/phone/{digits}``); [] when none."""
        digits = digits_of(phone)
        if not digits:
            return []
        return _items(self.get(f"user/phone/{digits}"), "users")

    def user(self, user_id: str | int) -> dict[str, Any] | None:
        """One client (``user/{id}``); None when U-ON has none."""
        found = _items(self.get(f"user/{quote(str(user_id), safe='')}"), "user")
        return found[0] if found else None

    def request_by_id(self, request_id: str | int) -> dict[str, Any] | None:
        """One request (``request/{id}``); None when U-ON has none."""
        found = _items(self.get(f"request/{quote(str(request_id), safe='')}"), "request")
        return found[0] if found else None

    def lead(self, lead_id: str | int) -> dict[str, Any] | None:
        """One lead (``lead/{id}``); None when U-ON has none."""
        found = _items(self.get(f"lead/{quote(str(lead_id), safe='')}"), "lead")
        return found[0] if found else None

    def requests_pages(self, date_from: str, date_to: str) -> Iterator[list[dict[str, Any]]]:
        """Pages of ``requests/{from}/{to}/{page}`` (100 a page) until a short page or a 404."""
        for page in range(1, MAX_PAGES + 1):
            items = _items(self.get(f"requests/{date_from}/{date_to}/{page}"), "requests")
            if items:
                yield items
            if len(items) < PAGE_SIZE:
                return
        raise ProviderResponseError(f"more than {MAX_PAGES} pages", provider=PROVIDER)

    def ping(self) -> list[dict[str, Any]]:
        """``countries``: a cheap call that needs a working key."""
        return _items(self.get("countries"), "countries")

    # -- writes -------------------------------------------------------------------------

    def create_lead(self, form: Mapping[str, Any]) -> str:
        """``lead/create`` (retried after a 429 only); the new lead's id."""
        body = self._once(lambda: self.post("lead/create", form))
        lead_id = body.get("id") if isinstance(body, dict) else None
        if lead_id is None or str(lead_id).strip() == "":
            raise ProviderResponseError(
                "lead/create answered without an id", provider=PROVIDER, retryable=False
            )
        return str(lead_id)

    def notify(self, manager_id: str | int, text: str) -> dict[str, Any]:
        """``notification/create``: a notification to a U-ON manager."""
        return self._once(
            lambda: self.post("notification/create", {"manager_id": manager_id, "text": text})
        )

    def _once(self, send: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Send a write once: only a 429 (refused, nothing done) is tried again."""
        attempts, saved = 0, self.max_attempts
        while True:
            attempts += 1
            self.max_attempts = 1  # the base must not repeat it after a timeout or a 5xx
            try:
                return send()
            except ProviderRateLimitedError as exc:
                if attempts >= saved:
                    exc.attempts = attempts
                    raise
                self.stats.add(retries=1)
                self._sleep(exc.retry_after or min(30.0, 0.5 * 2 ** (attempts - 1)))
            finally:
                self.max_attempts = saved
