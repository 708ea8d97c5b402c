"""Unisender emulator state: API keys, mailing lists and their contacts, the two quotas."""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from provider_emulators.framework import SlidingWindowQuota

DEFAULT_API_KEY = "demo-unisender-key"
DEFAULT_LISTS = (1, 2)
DEFAULT_QUOTA_PER_MINUTE = 1200
IMPORT_LIMIT = 500

# Set by the quota key function (the TCP peer) and by the quota (why it refused).
CURRENT_IP: ContextVar[str] = ContextVar("unisender_current_ip", default="unknown")
REFUSAL: ContextVar[str | None] = ContextVar("unisender_refusal", default=None)

# Deliberately simple: one @, no spaces, a dotted domain with a 2+ letter TLD.
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@([A-Za-z0-9-]+\.)+[A-Za-z]{2,}$")


def valid_email(email: str) -> bool:
    """Whether Unisender would accept ``email`` (format and length only)."""
    if len(email) > 254 or ".." in email:
        return False
    local, _, domain = email.partition("@")
    if not local or len(local) > 64 or local.startswith(".") or local.endswith("."):
        return False
    return bool(_EMAIL.match(email)) and not domain.startswith("-")


def mask(key: str) -> str:
    """An API key as admin answers show it (never in full)."""
    return key[:4] + "…" if len(key) > 8 else "…"


class UnisenderError(Exception):
    """An API error answered as HTTP 200 ``{"error": message, "code": code}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class DualQuota(SlidingWindowQuota):
    """``limit`` calls per ``window`` s per API key AND ``ip_limit`` per source IP.

    A call is admitted only when both windows have room and then counts in both;
    a refused call counts in neither. :data:`REFUSAL` names the exhausted budget.
    """

    def __init__(self, limit: int, ip_limit: int, window: float = 60.0) -> None:
        super().__init__(limit, window)
        if ip_limit < 1:
            raise ValueError("ip_limit must be >= 1")
        self.ip_limit = ip_limit
        self._ip_hits: dict[str, deque[float]] = {}

    def acquire(self, key: str) -> tuple[bool, float, float]:
        ip = CURRENT_IP.get()
        with self._lock:
            mono, wall = time.monotonic(), time.time()
            key_hits = self._hits.setdefault(key, deque())
            ip_hits = self._ip_hits.setdefault(ip, deque())
            for hits in (key_hits, ip_hits):
                while hits and mono - hits[0] >= self.window:
                    hits.popleft()
            if len(key_hits) >= self.limit:
                REFUSAL.set("api_key")
                return False, mono, wall
            if len(ip_hits) >= self.ip_limit:
                REFUSAL.set("ip")
                return False, mono, wall
            key_hits.append(mono)
            ip_hits.append(mono)
            REFUSAL.set(None)
            return True, mono, wall

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()
            self._ip_hits.clear()


@dataclass
class Contact:
    """One e-mail address in the account: its fields and list memberships."""

    person_id: int
    email: str
    fields: dict[str, str] = field(default_factory=dict)
    lists: set[int] = field(default_factory=set)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {
            "person_id": self.person_id,
            "email": self.email,
            "name": self.fields.get("Name"),
            "fields": dict(self.fields),
            "list_ids": sorted(self.lists),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass
class ImportResult:
    """``importContacts``' answer."""

    total: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    new_emails: int = 0
    invalid: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "inserted": self.inserted,
            "updated": self.updated,
            "deleted": self.deleted,
            "new_emails": self.new_emails,
            "invalid": self.invalid,
            "log": self.log,
        }


class Account:
    """Keys, lists and contacts (one shared account: every valid key sees the same lists)."""

    def __init__(
        self, api_keys: Iterable[str], denied_keys: Iterable[str], lists: Iterable[Any]
    ) -> None:
        self._lock = threading.Lock()
        self.api_keys: set[str] = set()
        self.denied_keys: set[str] = set()
        self.set_keys(api_keys, denied_keys)
        self.lists: dict[int, str] = {}
        self.contacts: dict[str, Contact] = {}
        self.set_lists(lists)
        self._person_ids = 0
        self.retry_later = 0
        self.retry_later_until = 0.0

    # ---- configuration ------------------------------------------------------------

    def set_keys(self, api_keys: Iterable[str], denied_keys: Iterable[str] = ()) -> None:
        keys, denied = set(api_keys), set(denied_keys)
        if any(not isinstance(k, str) or not k for k in keys | denied):
            raise ValueError("API keys must be non-empty strings")
        with self._lock:
            self.api_keys, self.denied_keys = keys, denied

    def set_lists(self, lists: Iterable[Any]) -> None:
        """Replace the lists: ids, or ``{"id", "title"}``; contacts leave removed lists."""
        parsed: dict[int, str] = {}
        for item in lists:
            if isinstance(item, dict):
                list_id, title = item.get("id"), item.get("title")
            else:
                list_id, title = item, None
            if isinstance(list_id, bool) or not isinstance(list_id, int) or list_id < 1:
                raise ValueError("list ids must be positive integers")
            parsed[list_id] = str(title) if title else f"List {list_id}"
        with self._lock:
            self.lists = parsed
            for contact in self.contacts.values():
                contact.lists &= parsed.keys()

    def keys_snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "api_keys": sorted(mask(k) for k in self.api_keys),
                "denied": sorted(mask(k) for k in self.denied_keys),
            }

    def take_retry_later(self) -> bool:
        """Whether this call is answered ``retry_later`` (the admin switch)."""
        with self._lock:
            if self.retry_later > 0:
                self.retry_later -= 1
                return True
            return time.monotonic() < self.retry_later_until

    # ---- API ----------------------------------------------------------------------

    def check_key(self, key: str | None) -> None:
        if key and key in self.denied_keys:
            raise UnisenderError("access_denied", "Access denied for this API key")
        if not key or key not in self.api_keys:
            raise UnisenderError("invalid_api_key", "Invalid API key")

    def get_lists(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"id": i, "title": t} for i, t in sorted(self.lists.items())]

    def create_list(self, title: str) -> int:
        if not title:
            raise UnisenderError("invalid_arg", "title is required")
        with self._lock:
            if title in self.lists.values():
                raise UnisenderError("invalid_arg", f"A list titled {title!r} already exists")
            list_id = max(self.lists, default=0) + 1
            self.lists[list_id] = title
            return list_id

    def list_ids(self, raw: str, name: str) -> list[int]:
        """Parse comma-separated list ids; each must exist (else ``invalid_arg``)."""
        ids: list[int] = []
        for part in raw.split(","):
            part = part.strip()
            if not part:
                continue
            if not part.isdigit():
                raise UnisenderError("invalid_arg", f"{name}: {part!r} is not a list id")
            ids.append(int(part))
        missing = [i for i in ids if i not in self.lists]
        if missing:
            raise UnisenderError(
                "invalid_arg", f"{name}: lists not found: {', '.join(map(str, missing))}"
            )
        return ids

    def _contact(self, email: str) -> tuple[Contact, bool]:
        key = email.lower()
        existing = self.contacts.get(key)
        if existing is not None:
            return existing, False
        self._person_ids += 1
        contact = Contact(self._person_ids, email)
        self.contacts[key] = contact
        return contact, True

    def import_contacts(
        self, field_names: list[str], rows: list[list[str]], overwrite_lists: bool = False
    ) -> ImportResult:
        """Apply validated rows (``field_names`` already checked to hold ``email``)."""
        lowered = [n.lower() for n in field_names]
        email_at = lowered.index("email")
        lists_at = lowered.index("email_list_ids") if "email_list_ids" in lowered else None
        delete_at = lowered.index("delete") if "delete" in lowered else None
        plain = [
            (i, n)
            for i, n in enumerate(field_names)
            if lowered[i] not in ("email", "email_list_ids", "delete")
        ]
        # List ids are checked for the whole call first: an unknown list fails the call.
        row_lists = [
            self.list_ids(row[lists_at], "email_list_ids") if lists_at is not None else []
            for row in rows
        ]
        result = ImportResult(total=len(rows))
        now = time.time()
        with self._lock:
            for index, row in enumerate(rows):
                email = row[email_at].strip()
                if not email or not valid_email(email):
                    result.invalid += 1
                    message = "E-mail is empty" if not email else f"Invalid e-mail: {email}"
                    result.log.append({"index": index, "code": "invalid_email", "message": message})
                    continue
                if delete_at is not None and row[delete_at].strip() == "1":
                    contact = self.contacts.get(email.lower())
                    if contact is not None:
                        if row_lists[index]:
                            contact.lists -= set(row_lists[index])
                        else:
                            contact.lists.clear()
                        if not contact.lists:
                            del self.contacts[email.lower()]
                        result.deleted += 1
                    continue
                contact, new = self._contact(email)
                for i, name in plain:
                    if row[i] != "":
                        contact.fields[name] = row[i]
                if overwrite_lists:
                    contact.lists = set(row_lists[index])
                else:
                    contact.lists |= set(row_lists[index])
                contact.updated_at = now
                if new:
                    result.inserted += 1
                    result.new_emails += 1
                else:
                    result.updated += 1
        return result

    def subscribe(self, list_ids: list[int], fields: dict[str, str]) -> int:
        email = fields.get("email", "").strip()
        if not email:
            raise UnisenderError("invalid_arg", "fields[email] is required")
        if not valid_email(email):
            raise UnisenderError("invalid_arg", f"Invalid e-mail: {email}")
        with self._lock:
            contact, _ = self._contact(email)
            contact.fields.update({k: v for k, v in fields.items() if k != "email"})
            contact.lists |= set(list_ids)
            contact.updated_at = time.time()
            return contact.person_id

    # ---- admin views ----------------------------------------------------------------

    def lists_snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            counts = {i: 0 for i in self.lists}
            for contact in self.contacts.values():
                for i in contact.lists:
                    counts[i] = counts.get(i, 0) + 1
            return [
                {"id": i, "title": t, "contacts": counts[i]} for i, t in sorted(self.lists.items())
            ]

    def list_contacts(self, list_id: int) -> list[dict[str, Any]] | None:
        with self._lock:
            if list_id not in self.lists:
                return None
            return [c.as_dict() for c in self.contacts.values() if list_id in c.lists]

    def all_contacts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [c.as_dict() for c in self.contacts.values()]

    def clear_contacts(self) -> int:
        with self._lock:
            count = len(self.contacts)
            self.contacts.clear()
            return count
