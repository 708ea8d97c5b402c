"""U-ON customers and the shared phone cache, written by the receiver (live lookups,
webhooks) and by Dagster runs (batched enrichment, client refreshes) alike.

A U-ON user (`user/phone/{digits}`, `user/{id}`) becomes a `customers` row; a fresh
non-empty value overwrites the stored one, an empty or missing one never erases it (the
seed: "перезапись непустыми свежими значениями"). A lookup's answer is a *profile*:
name, U-ON id, status, active requests, manager. The cache holds one profile, or "no
such client", per (integration, E.164 phone) until it expires; an expired entry is still
read as the stale answer when U-ON cannot be reached in time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, or_, select

from crm_schema.engine import dialect_insert
from crm_schema.providers.uon import customers, uon_phone_cache, uon_requests
from crm_sync.phones import normalize_phone

# U-ON user fields → customers columns (phones are normalised separately).
_TEXT_FIELDS = {
    "first_name": "u_name",
    "last_name": "u_surname",
    "middle_name": "u_sname",
    "email": "u_email",
    "company": "u_company",
    "status": "u_status",
    "manager_id": "manager_id",
}
_MERGED = (
    "name",
    *_TEXT_FIELDS,
    "phone",
    "phone_raw",
    "phone_mobile",
)
# Request statuses that end a request: anything else is active.
CLOSED_STATUSES = frozenset({"closed", "cancelled", "canceled", "done", "lost", "archived"})


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def full_name(first: str | None, middle: str | None, last: str | None) -> str | None:
    """Surname, name, patronymic — the order U-ON shows them in."""
    parts = [p for p in (last, first, middle) if p]
    return " ".join(parts) or None


def customer_row(user: Mapping[str, Any], region: str) -> dict[str, Any] | None:
    """A U-ON user as `customers` columns (None without a `u_id`)."""
    external_id = _text(user.get("u_id") if "u_id" in user else user.get("id"))
    if external_id is None:
        return None
    row: dict[str, Any] = {"external_id": external_id}
    for column, field in _TEXT_FIELDS.items():
        row[column] = _text(user.get(field))
    row["name"] = full_name(row["first_name"], row["middle_name"], row["last_name"])
    raw_phone = _text(user.get("u_phone"))
    mobile = _text(user.get("u_phone_mobile"))
    row["phone_raw"] = raw_phone or mobile
    row["phone"] = normalize_phone(raw_phone, region) or normalize_phone(mobile, region)
    row["phone_mobile"] = normalize_phone(mobile, region)
    row["raw"] = dict(user)
    return row


def upsert_customers(
    conn: Connection,
    integration_id: int,
    users: Iterable[Mapping[str, Any]],
    region: str,
    now: datetime,
    *,
    task_id: int | None = None,
) -> list[dict[str, Any]]:
    """Store U-ON users; returns the customers as now stored (tombstones lifted)."""
    rows = [r for r in (customer_row(u, region) for u in users) if r is not None]
    if not rows:
        return []
    values = [
        dict(r, integration_id=integration_id, synced_at=now, deleted_at=None, custom_fields={})
        for r in rows
    ]
    for v in values:
        v["source_task_id"] = task_id
    stmt = dialect_insert(conn)(customers)
    table = customers.c
    # A fresh non-empty value wins; NULL leaves what was stored.
    merged = {c: func.coalesce(stmt.excluded[c], table[c]) for c in _MERGED}
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["integration_id", "external_id"],
            set_={
                **merged,
                "raw": stmt.excluded.raw,
                "synced_at": stmt.excluded.synced_at,
                "deleted_at": None,
                "source_task_id": stmt.excluded.source_task_id,
            },
        ),
        values,
    )
    return stored_customers(conn, integration_id, [r["external_id"] for r in rows])


def stored_customers(
    conn: Connection, integration_id: int, external_ids: Sequence[str]
) -> list[dict[str, Any]]:
    """The `customers` rows of these U-ON ids, in the order given."""
    found = {
        r["external_id"]: dict(r)
        for r in conn.execute(
            select(customers).where(
                customers.c.integration_id == integration_id,
                customers.c.external_id.in_(list(external_ids)),
            )
        ).mappings()
    }
    return [found[i] for i in external_ids if i in found]


def customers_by_phone(conn: Connection, integration_id: int, phone: str) -> list[dict[str, Any]]:
    """Live customers with this E.164 number (main or mobile), newest first."""
    return [
        dict(r)
        for r in conn.execute(
            select(customers)
            .where(
                customers.c.integration_id == integration_id,
                customers.c.deleted_at.is_(None),
                or_(customers.c.phone == phone, customers.c.phone_mobile == phone),
            )
            .order_by(customers.c.synced_at.desc(), customers.c.id.desc())
        ).mappings()
    ]


def active_requests(
    conn: Connection, integration_id: int, customer_ids: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """{U-ON client id: its open leads and requests} from `uon_requests`."""
    if not customer_ids:
        return {}
    rows = conn.execute(
        select(
            uon_requests.c.external_id,
            uon_requests.c.kind,
            uon_requests.c.status,
            uon_requests.c.manager_id,
            uon_requests.c.customer_external_id,
        )
        .where(
            uon_requests.c.integration_id == integration_id,
            uon_requests.c.customer_external_id.in_(list(customer_ids)),
            uon_requests.c.deleted_at.is_(None),
            or_(uon_requests.c.active.is_(None), uon_requests.c.active.is_(True)),
        )
        .order_by(uon_requests.c.external_id)
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r.customer_external_id, []).append(
            {"id": r.external_id, "kind": r.kind, "status": r.status, "manager_id": r.manager_id}
        )
    return out


def profile(customer: Mapping[str, Any], requests: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A lookup's answer for one customer."""
    return {
        "uon_id": customer["external_id"],
        "name": customer.get("name"),
        "first_name": customer.get("first_name"),
        "middle_name": customer.get("middle_name"),
        "last_name": customer.get("last_name"),
        "phone": customer.get("phone"),
        "email": customer.get("email"),
        "company": customer.get("company"),
        "status": customer.get("status"),
        "manager_id": customer.get("manager_id"),
        "active_requests": [dict(r) for r in requests],
    }


def profiles_for(
    conn: Connection, integration_id: int, stored: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Profiles of stored customers, with their active requests."""
    ids = [c["external_id"] for c in stored]
    requests = active_requests(conn, integration_id, ids)
    return [profile(c, requests.get(c["external_id"], [])) for c in stored]


def cache_profile(profiles: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """What the cache holds for a number: the first client's profile, with every client
    under `customers` when there are several (None: no such client)."""
    if not profiles:
        return None
    cached = dict(profiles[0])
    if len(profiles) > 1:
        cached["customers"] = [dict(p) for p in profiles]
    return cached


def cached_profiles(
    cached: Mapping[str, Any] | None,
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(the client, every client) of a cached profile — `cache_profile` read back."""
    if cached is None:
        return None, []
    first = {k: v for k, v in cached.items() if k != "customers"}
    return first, [dict(p) for p in cached.get("customers") or [first]]


@dataclass(frozen=True)
class CacheEntry:
    """One cached lookup: ``profile`` is None for "no such client"."""

    phone: str
    found: bool
    profile: dict[str, Any] | None
    fetched_at: datetime
    expires_at: datetime

    def fresh(self, now: datetime) -> bool:
        """Still within its TTL."""
        return _aware(self.expires_at) > now


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def read_cache(conn: Connection, integration_id: int, phone: str) -> CacheEntry | None:
    """The cached lookup of a number, fresh or stale (None when never looked up)."""
    row = conn.execute(
        select(uon_phone_cache).where(
            uon_phone_cache.c.integration_id == integration_id,
            uon_phone_cache.c.phone == phone,
        )
    ).first()
    if row is None:
        return None
    return CacheEntry(
        phone=row.phone,
        found=bool(row.found),
        profile=row.profile,
        fetched_at=_aware(row.fetched_at),
        expires_at=_aware(row.expires_at),
    )


def write_cache(
    conn: Connection,
    integration_id: int,
    phone: str,
    found_profile: Mapping[str, Any] | None,
    now: datetime,
    ttl_seconds: float,
) -> CacheEntry:
    """Cache a lookup's answer (a profile, or None for "no such client")."""
    entry = CacheEntry(
        phone=phone,
        found=found_profile is not None,
        profile=dict(found_profile) if found_profile is not None else None,
        fetched_at=now,
        expires_at=now + timedelta(seconds=ttl_seconds),
    )
    values = {
        "integration_id": integration_id,
        "phone": phone,
        "found": entry.found,
        "profile": entry.profile,
        "fetched_at": now,
        "expires_at": entry.expires_at,
    }
    stmt = dialect_insert(conn)(uon_phone_cache)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["integration_id", "phone"],
            set_={k: stmt.excluded[k] for k in ("found", "profile", "fetched_at", "expires_at")},
            # A slower writer never replaces a newer answer.
            where=uon_phone_cache.c.fetched_at <= stmt.excluded.fetched_at,
        ),
        values,
    )
    return entry


def cache_users(
    conn: Connection,
    integration_id: int,
    phone: str,
    users: Iterable[Mapping[str, Any]],
    *,
    region: str,
    now: datetime,
    ttl_seconds: float,
    negative_ttl_seconds: float,
    task_id: int | None = None,
) -> tuple[CacheEntry, list[dict[str, Any]]]:
    """U-ON's answer for a number kept: its users in `customers`, their profile (or "no
    such client", for the negative TTL) in the cache. Returns (entry, profiles)."""
    stored = upsert_customers(conn, integration_id, users, region, now, task_id=task_id)
    profiles = profiles_for(conn, integration_id, stored)
    ttl = ttl_seconds if profiles else negative_ttl_seconds
    return write_cache(conn, integration_id, phone, cache_profile(profiles), now, ttl), profiles


def drop_cached(conn: Connection, integration_id: int, phones: Iterable[str | None]) -> int:
    """Forget the cached lookups of these numbers; returns how many were dropped."""
    wanted = sorted({p for p in phones if p})
    if not wanted:
        return 0
    return conn.execute(
        delete(uon_phone_cache).where(
            uon_phone_cache.c.integration_id == integration_id,
            uon_phone_cache.c.phone.in_(wanted),
        )
    ).rowcount


def customer_phones(conn: Connection, integration_id: int, external_ids: Iterable[str]) -> set[str]:
    """Every stored E.164 number of these U-ON clients (to drop their cache entries)."""
    ids = list(external_ids)
    if not ids:
        return set()
    rows = conn.execute(
        select(customers.c.phone, customers.c.phone_mobile).where(
            customers.c.integration_id == integration_id, customers.c.external_id.in_(ids)
        )
    )
    return {p for r in rows for p in (r.phone, r.phone_mobile) if p}


def purge_expired_cache(conn: Connection, older_than: datetime) -> int:
    """Delete cache rows that expired before ``older_than`` (kept a while as stale answers)."""
    return conn.execute(
        delete(uon_phone_cache).where(uon_phone_cache.c.expires_at < older_than)
    ).rowcount


__all__ = [
    "CLOSED_STATUSES",
    "CacheEntry",
    "active_requests",
    "cache_profile",
    "cache_users",
    "cached_profiles",
    "customer_phones",
    "customer_row",
    "customers_by_phone",
    "drop_cached",
    "full_name",
    "profile",
    "profiles_for",
    "purge_expired_cache",
    "read_cache",
    "stored_customers",
    "upsert_customers",
    "users_in",
    "write_cache",
]


def users_in(body: Any) -> list[dict[str, Any]]:
    """The users of a U-ON answer: `{"users": [...]}` (by phone) or `{"user": [...]}` (by
    id, a list or one object); anything else holds none."""
    if not isinstance(body, Mapping):
        return []
    found = body.get("users", body.get("user"))
    if isinstance(found, Mapping):
        found = [found]
    if not isinstance(found, list):
        return []
    return [dict(u) for u in found if isinstance(u, Mapping)]
