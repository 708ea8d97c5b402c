"""The amoCRM emulator's mutable state: OAuth tokens, leads, contacts, the abuse guard.

Every method takes one lock, so the state is safe from the event loop and from test
threads alike.
"""

from __future__ import annotations

import copy
import hmac
import secrets
import threading
import time
from collections import deque
from contextvars import ContextVar
from typing import Any

from provider_emulators.amocrm import records
from provider_emulators.framework import SlidingWindowQuota

DEFAULT_CLIENT_ID = "demo-client-id"
DEFAULT_CLIENT_SECRET = "demo-client-secret"  # noqa: S105 - the emulator's documented demo secret
DEFAULT_REDIRECT_URI = "http://127.0.0.1:8000/oauth/amocrm/callback"
CODE_PREFIX = "code-"
FIRST_LEAD_ID = 30_000_000

# Set by the profile's quota key (the request's source IP) and by the guard (why a
# request was refused), read by the rejection response: the framework calls them in
# this order inside one request's task, so a context variable carries the answer.
CURRENT_IP: ContextVar[str] = ContextVar("amocrm_current_ip", default="unknown")
REFUSAL: ContextVar[str | None] = ContextVar("amocrm_refusal", default=None)


class AmocrmError(Exception):
    """An answer in amoCRM's problem+json shape."""

    def __init__(
        self, status: int, detail: str, *, title: str | None = None, extra: dict | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title
        self.extra = extra or {}


class OAuthError(AmocrmError):
    """An OAuth refusal (``OAuthProblemJson``, with a ``hint``)."""


class GuardedQuota(SlidingWindowQuota):
    """amoCRM's quota: ``limit`` requests per ``window`` s per key, plus the IP block.

    A source IP with more than ``block_after`` rejected requests within
    ``block_window`` seconds is blocked for ``block_seconds``: every request from it is
    refused (403) until then, and those refusals do not extend the block.
    """

    def __init__(
        self,
        limit: int,
        window: float = 1.0,
        *,
        block_after: int = 20,
        block_window: float = 10.0,
        block_seconds: float = 60.0,
    ) -> None:
        super().__init__(limit, window)
        self.block_after = block_after
        self.block_window = block_window
        self.block_seconds = block_seconds
        self._rejections: dict[str, deque[float]] = {}
        self._blocked: dict[str, float] = {}
        self._guard = threading.Lock()

    def acquire(self, key: str) -> tuple[bool, float, float]:
        ip = CURRENT_IP.get()
        with self._guard:
            mono = time.monotonic()
            until = self._blocked.get(ip)
            if until is not None and mono < until:
                REFUSAL.set("blocked")
                return False, mono, time.time()
            self._blocked.pop(ip, None)
        accepted, mono, wall = super().acquire(key)
        REFUSAL.set(None if accepted else "quota")
        if not accepted and self.block_after > 0:
            with self._guard:
                hits = self._rejections.setdefault(ip, deque())
                hits.append(mono)
                while hits and mono - hits[0] >= self.block_window:
                    hits.popleft()
                if len(hits) > self.block_after:
                    self._blocked[ip] = mono + self.block_seconds
                    hits.clear()
        return accepted, mono, wall

    def blocks(self) -> dict[str, float]:
        """{ip: seconds of block left}."""
        with self._guard:
            now = time.monotonic()
            return {ip: round(u - now, 3) for ip, u in self._blocked.items() if u > now}

    def clear_blocks(self) -> int:
        with self._guard:
            count = len(self._blocked)
            self._blocked.clear()
            self._rejections.clear()
            return count

    def reset(self) -> None:
        super().reset()
        self.clear_blocks()


class TokenBook:
    """OAuth 2 as amoCRM does it: codes → pairs, single-use refresh tokens, expiring access."""

    def __init__(
        self,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        redirect_uri: str = DEFAULT_REDIRECT_URI,
        token_ttl: float = 86_400,
        long_lived_token: str | None = None,
        single_use_codes: bool = False,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.token_ttl = token_ttl
        self.long_lived_token = long_lived_token
        self.single_use_codes = single_use_codes
        self._access: dict[str, float] = {}  # token -> monotonic expiry
        self._refresh: dict[str, bool] = {}  # token -> still usable
        self._used_codes: set[str] = set()
        self.counts = {"codes_exchanged": 0, "refreshes": 0, "refused": 0}
        self._lock = threading.Lock()

    def _refuse(self, status: int, hint: str, detail: str) -> OAuthError:
        self.counts["refused"] += 1
        return OAuthError(
            status,
            detail,
            title="Unauthorized" if status == 401 else "Bad Request",
            extra={"hint": hint, "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson"},
        )

    def _pair(self) -> dict[str, Any]:
        access, refresh = "at-" + secrets.token_hex(20), "rt-" + secrets.token_hex(20)
        self._access[access] = time.monotonic() + self.token_ttl
        self._refresh[refresh] = True
        ttl = int(self.token_ttl) if self.token_ttl >= 1 else 1
        return {
            "token_type": "Bearer",
            "expires_in": ttl,
            "access_token": access,
            "refresh_token": refresh,
        }

    def grant(self, form: dict[str, Any]) -> dict[str, Any]:
        """``POST /oauth2/access_token``: a new pair, or OAuthError."""
        with self._lock:
            missing = [
                k
                for k in ("client_id", "client_secret", "grant_type", "redirect_uri")
                if not isinstance(form.get(k), str) or not form.get(k)
            ]
            if missing:
                raise self._refuse(
                    400, f"Missing parameters: {', '.join(missing)}", "Invalid request"
                )
            secret_ok = hmac.compare_digest(
                str(form["client_secret"]).encode(), self.client_secret.encode()
            )
            if form["client_id"] != self.client_id or not secret_ok:
                raise self._refuse(401, "Client authentication failed", "Invalid client")
            if form["redirect_uri"] != self.redirect_uri:
                raise self._refuse(400, "Redirect URI mismatch", "Invalid redirect_uri")
            grant = form["grant_type"]
            if grant == "authorization_code":
                code = form.get("code")
                if not isinstance(code, str) or not code.startswith(CODE_PREFIX):
                    raise self._refuse(400, "Authorization code is invalid", "Invalid code")
                if self.single_use_codes and code in self._used_codes:
                    raise self._refuse(400, "Authorization code has been revoked", "Invalid code")
                self._used_codes.add(code)
                self.counts["codes_exchanged"] += 1
                return self._pair()
            if grant == "refresh_token":
                token = form.get("refresh_token")
                if not isinstance(token, str) or not self._refresh.get(token):
                    raise self._refuse(
                        401, "Token has been revoked", "Refresh token is invalid or already used"
                    )
                self._refresh[token] = False  # single-use
                self.counts["refreshes"] += 1
                return self._pair()
            raise self._refuse(400, "Unsupported grant type", "Invalid grant_type")

    def check(self, authorization: str | None) -> str:
        """The bearer token of a valid ``Authorization`` header, else AmocrmError 401."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AmocrmError(401, "Authorization header is missing", title="Unauthorized")
        if self.long_lived_token and hmac.compare_digest(
            token.encode(), self.long_lived_token.encode()
        ):
            return token
        with self._lock:
            expiry = self._access.get(token)
            if expiry is None:
                raise AmocrmError(401, "Access token is invalid", title="Unauthorized")
            if time.monotonic() >= expiry:
                raise AmocrmError(401, "Access token has expired", title="Unauthorized")
        return token

    def expire_all(self, revoke_refresh: bool = False) -> dict[str, int]:
        """Expire every access token (and, with ``revoke_refresh``, every refresh token)."""
        with self._lock:
            expired = len(self._access)
            self._access.clear()
            revoked = 0
            if revoke_refresh:
                revoked = sum(self._refresh.values())
                self._refresh = dict.fromkeys(self._refresh, False)
            return {"expired": expired, "revoked": revoked}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            return {
                **self.counts,
                "live_access_tokens": sum(1 for e in self._access.values() if e > now),
                "live_refresh_tokens": sum(self._refresh.values()),
                "token_ttl": self.token_ttl,
                "long_lived_token": self.long_lived_token is not None,
            }


def _merge_fields(
    stored: list[dict[str, Any]] | None, changes: list[dict[str, Any]] | None
) -> list[dict[str, Any]] | None:
    """amoCRM's PATCH: the listed fields are replaced (``values: null`` clears one)."""
    by_id = {f["field_id"]: f for f in stored or []}
    for change in changes or []:
        key = change.get("field_id") or change.get("field_code")
        if change.get("values") is None:
            by_id.pop(key, None)
            continue
        by_id[key] = {
            "field_id": change.get("field_id"),
            "field_name": f"Поле {key}",
            "field_code": change.get("field_code"),
            "field_type": "text",
            "values": copy.deepcopy(change["values"]),
        }
    return list(by_id.values()) or None


LEAD_SCALARS = ("name", "price", "status_id", "pipeline_id", "responsible_user_id")
LEAD_SCALARS += ("created_at", "updated_at", "closed_at", "loss_reason_id")


class LeadStore:
    """Leads by id. ``leads_exist``: any positive id not deleted springs into being on use."""

    def __init__(self, leads_exist: bool = False) -> None:
        self.leads_exist = leads_exist
        self._leads: dict[int, dict[str, Any]] = {}
        self._deleted: set[int] = set()
        self._next = FIRST_LEAD_ID
        self._lock = threading.Lock()

    def _find(self, lead_id: int) -> dict[str, Any] | None:
        lead = self._leads.get(lead_id)
        if lead is None and self.leads_exist and lead_id > 0 and lead_id not in self._deleted:
            lead = self._leads[lead_id] = records.make_lead(lead_id, now=int(time.time()))
        return lead

    def get(self, lead_id: int) -> dict[str, Any] | None:
        with self._lock:
            lead = self._find(lead_id)
            return copy.deepcopy(lead) if lead else None

    def exists(self, lead_id: int) -> bool:
        with self._lock:
            return self._find(lead_id) is not None

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(self._leads[i]) for i in sorted(self._leads)]

    def search(self, query: str | None, ids: list[int] | None) -> list[dict[str, Any]]:
        """Stored leads by id; ``query`` matches name, id or a field value (case-insensitive)."""
        with self._lock:
            if ids is not None:
                for lead_id in ids:
                    self._find(lead_id)
            found = []
            for lead_id in sorted(self._leads):
                lead = self._leads[lead_id]
                if ids is not None and lead_id not in ids:
                    continue
                if query and not _matches(lead, query):
                    continue
                found.append(copy.deepcopy(lead))
            return found

    def patch(self, lead_id: int, changes: dict[str, Any]) -> dict[str, Any] | None:
        """Apply one validated PATCH; None when the lead does not exist."""
        with self._lock:
            lead = self._find(lead_id)
            if lead is None:
                return None
            for key in LEAD_SCALARS:
                if key in changes:
                    lead[key] = changes[key]
            if "custom_fields_values" in changes:
                lead["custom_fields_values"] = _merge_fields(
                    lead["custom_fields_values"], changes["custom_fields_values"]
                )
            if "updated_at" not in changes:
                lead["updated_at"] = max(int(time.time()), lead["updated_at"])
            return copy.deepcopy(lead)

    def create(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Store a new lead (``spec`` may name its ``id``; otherwise the next free one)."""
        with self._lock:
            lead_id = spec.get("id")
            if lead_id is None:
                while self._next in self._leads:
                    self._next += 1
                lead_id = self._next
                self._next += 1
            lead = records.make_lead(
                lead_id,
                name=spec.get("name"),
                price=spec.get("price") or 0,
                pipeline_id=spec.get("pipeline_id"),
                status_id=spec.get("status_id"),
                now=int(time.time()),
            )
            lead["custom_fields_values"] = _merge_fields(None, spec.get("custom_fields_values"))
            self._leads[lead_id] = lead
            self._deleted.discard(lead_id)
            return copy.deepcopy(lead)

    def delete(self, lead_id: int) -> bool:
        with self._lock:
            self._deleted.add(lead_id)
            return self._leads.pop(lead_id, None) is not None

    def reset(self) -> int:
        with self._lock:
            count = len(self._leads)
            self._leads.clear()
            self._deleted.clear()
            self._next = FIRST_LEAD_ID
            return count


def _matches(item: dict[str, Any], query: str) -> bool:
    needle = query.casefold()
    texts = [str(item.get("id")), str(item.get("name") or "")]
    for field in item.get("custom_fields_values") or []:
        texts += [str(v.get("value")) for v in field.get("values") or []]
    return any(needle in text.casefold() for text in texts)


class ContactStore:
    """Every positive contact id exists (deterministic) unless deleted; overrides win."""

    def __init__(self) -> None:
        self._overrides: dict[int, dict[str, Any]] = {}
        self._deleted: set[int] = set()
        self._seen: set[int] = set()
        self._lock = threading.Lock()

    def get(self, contact_id: int, base_url: str = "") -> dict[str, Any] | None:
        with self._lock:
            if contact_id <= 0 or contact_id in self._deleted:
                return None
            self._seen.add(contact_id)
            return records.make_contact(
                contact_id, base_url=base_url, **self._overrides.get(contact_id, {})
            )

    def known_ids(self) -> list[int]:
        """Contacts listed without a filter: those used so far, not deleted."""
        with self._lock:
            return sorted(self._seen - self._deleted)

    def put(self, contact_id: int, override: dict[str, Any]) -> None:
        with self._lock:
            self._overrides[contact_id] = override
            self._deleted.discard(contact_id)
            self._seen.add(contact_id)

    def delete(self, contact_id: int) -> None:
        with self._lock:
            self._deleted.add(contact_id)

    def reset(self) -> int:
        with self._lock:
            count = len(self._overrides) + len(self._deleted)
            self._overrides.clear()
            self._deleted.clear()
            self._seen.clear()
            return count
