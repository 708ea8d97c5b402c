"""The U-ON emulator's account: clients, leads, travel requests and notifications.

Clients, leads and requests named by an even id (clients also by an even phone number)
exist by default (:mod:`provider_emulators.uon.clients`); odd ones do not. What the API
or the admin routes create, change or delete overrides that default.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from provider_emulators.uon.clients import (
    default_client,
    default_request,
    digits_of,
    known,
    phones_of,
)

DEFAULT_API_KEY = "demo-uon-api-key"
DEFAULT_QUOTA = 10  # requests per second per API key, as U-ON allows
PAGE_SIZE = 100


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _text_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A form or JSON body with its values as U-ON keeps them (text, ``None`` → "")."""
    return {str(k): "" if v is None else v for k, v in fields.items()}


class Agency:
    """One emulated U-ON account (every accepted API key sees the same data)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.users: dict[str, dict[str, Any]] = {}
        self.deleted: set[str] = set()
        self.leads: dict[str, dict[str, Any]] = {}
        self.requests: dict[str, dict[str, Any]] = {}
        self.notifications: list[dict[str, Any]] = []
        self._user_ids = itertools.count(900_000_000, 2)  # even: the rule holds for them too
        self._lead_ids = itertools.count(5_000, 2)

    # ---- clients --------------------------------------------------------------------

    def user(self, user_id: str) -> dict[str, Any] | None:
        """The client with this id, or None."""
        with self._lock:
            return self._user(user_id)

    def _user(self, user_id: str) -> dict[str, Any] | None:
        if user_id in self.users:
            return dict(self.users[user_id])
        if user_id in self.deleted or not user_id.isdigit() or not known(user_id):
            return None
        return default_client(user_id)

    def users_by_phone(self, raw_phone: str) -> list[dict[str, Any]]:
        """Every client with this number (digits compared), default one first."""
        digits = digits_of(raw_phone)
        if not digits:
            return []
        with self._lock:
            found = [dict(u) for u in self.users.values() if digits in phones_of(u)]
            if known(digits) and digits not in self.users and digits not in self.deleted:
                found.insert(0, default_client(digits))
            return found

    def changed_users(self) -> list[dict[str, Any]]:
        """Clients created or changed through the API or the admin routes."""
        with self._lock:
            return [dict(u) for u in self.users.values()]

    def create_user(self, fields: Mapping[str, Any]) -> str:
        """``user/create``: a new client (even id); returns its id."""
        with self._lock:
            user_id = str(next(self._user_ids))
            self.users[user_id] = {**_text_fields(fields), "u_id": user_id}
            return user_id

    def put_user(self, user: Mapping[str, Any]) -> dict[str, Any]:
        """Admin: add or replace a client (``u_id`` given or a new one)."""
        with self._lock:
            user_id = str(user.get("u_id") or next(self._user_ids))
            self.users[user_id] = {**_text_fields(user), "u_id": user_id}
            self.deleted.discard(user_id)
            return dict(self.users[user_id])

    def patch_user(self, user_id: str, changes: Mapping[str, Any]) -> dict[str, Any] | None:
        """Admin: change some fields of an existing client; None when there is none."""
        with self._lock:
            current = self._user(user_id)
            if current is None:
                return None
            self.users[user_id] = {**current, **_text_fields(changes), "u_id": user_id}
            return dict(self.users[user_id])

    def delete_user(self, user_id: str) -> bool:
        """Admin: the client is gone (``user/{id}`` 404, not found by phone)."""
        with self._lock:
            existed = self._user(user_id) is not None
            self.users.pop(user_id, None)
            self.deleted.add(user_id)
            return existed

    # ---- leads ----------------------------------------------------------------------

    def create_lead(self, fields: Mapping[str, Any]) -> int:
        """``lead/create``: store a lead (the call log); returns its id."""
        clean = _text_fields(fields)
        with self._lock:
            lead_id = next(self._lead_ids)
            self.leads[str(lead_id)] = {
                **clean,
                "id": lead_id,
                "client_id": str(clean.get("u_id") or ""),
                "status": "new",
                "manager_id": str(clean.get("manager_id") or ""),
                "source": str(clean.get("source") or ""),
                "note": str(clean.get("note") or ""),
                "dat": _now(),
            }
            return lead_id

    def lead(self, lead_id: str) -> dict[str, Any] | None:
        """A created lead, else the default one for an even id, else None."""
        with self._lock:
            if lead_id in self.leads:
                return dict(self.leads[lead_id])
        if lead_id.isdigit() and known(lead_id):
            return {**default_request(lead_id), "id": int(lead_id), "status": "new", "note": ""}
        return None

    def all_leads(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(v) for v in self.leads.values()]

    # ---- travel requests ------------------------------------------------------------

    def seed_requests(self, items: Iterable[Mapping[str, Any]]) -> list[str]:
        """Admin: add or replace requests (``id`` required); returns their ids."""
        ids = []
        with self._lock:
            for item in items:
                request_id = str(item["id"])
                self.requests[request_id] = {"dat": _now(), **dict(item), "id": request_id}
                ids.append(request_id)
        return ids

    def request(self, request_id: str) -> dict[str, Any] | None:
        """A seeded request, else the default one for an even id, else None."""
        with self._lock:
            if request_id in self.requests:
                return dict(self.requests[request_id])
        if request_id.isdigit() and known(request_id):
            return default_request(request_id)
        return None

    def requests_page(self, first: date, last: date, page: int) -> list[dict[str, Any]]:
        """Page ``page`` (from 1) of the seeded requests created (``dat``) in the range."""
        with self._lock:
            items = [dict(r) for r in self.requests.values() if _in_range(r, first, last)]
        items.sort(key=lambda r: (len(r["id"]), r["id"]))
        start = (page - 1) * PAGE_SIZE
        return items[start : start + PAGE_SIZE]

    def all_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(v) for v in self.requests.values()]

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # ---- notifications --------------------------------------------------------------

    def notify(self, text: str, manager_id: str) -> None:
        with self._lock:
            self.notifications.append({"text": text, "manager_id": manager_id, "time": time.time()})

    def all_notifications(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.notifications)

    def clear_notifications(self) -> None:
        with self._lock:
            self.notifications.clear()

    def reset(self) -> None:
        """Admin: forget everything created, changed or deleted."""
        with self._lock:
            self.users.clear()
            self.deleted.clear()
            self.leads.clear()
            self.requests.clear()
            self.notifications.clear()


def _in_range(item: Mapping[str, Any], first: date, last: date) -> bool:
    try:
        created = date.fromisoformat(str(item.get("dat", ""))[:10])
    except ValueError:
        return False
    return first <= created <= last
