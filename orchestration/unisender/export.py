"""The Unisender export over an engine: one account's amoCRM contacts → importContacts.

For a Unisender account (integration) the contacts of its amoCRM integration
(settings ``amocrm_integration_id``; role ``contact``) are read in keyset chunks
(never all at once) together with their ``unisender_contacts`` row, and each is:

- without an e-mail → ``invalid`` with reason "no e-mail" (no call);
- deleted in amoCRM (``deleted_at``) after it was synced → sent again with the
  ``delete`` column set → ``removed``; deleted before it was ever synced → ``removed``
  without a call;
- new or changed (a hash of e-mail, name and list ids differs from the last one sent),
  or ``failed`` / ``pending`` / ``removed``-but-back → sent with ``importContacts``
  (``field_names`` email, Name, email_list_ids) in batches of at most 500; when the
  e-mail itself changed, the old address is removed from the lists;
- ``invalid`` by Unisender's verdict → sent again only when it changed or once
  ``retry_invalid_days`` passed.

Unisender's answer is recorded per contact: ``synced``, or ``invalid`` with the
message of its ``log`` entry. A batch Unisender refuses (``invalid_arg``) is
``failed`` with the message and the export goes on; refused credentials or errors
that outlived their retries fail the batch and stop the account (``ExportStats.error``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from crm_schema.engine import dialect_insert
from crm_schema.integrations import Integration
from crm_schema.providers.unisender import (
    SYNC_FAILED,
    SYNC_INVALID,
    SYNC_REMOVED,
    SYNC_SYNCED,
    unisender_contacts,
)
from crm_schema.tables import contacts
from crm_schema.task_queue import now_utc
from crm_sync.providers.unisender import IMPORT_BATCH
from orchestration.resources.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRequestError,
    ProviderResponseError,
)
from orchestration.unisender.client import DELETE_FIELD, IMPORT_FIELDS, UnisenderClient

NO_EMAIL = "no e-mail"
DELETED_REASON = "deleted in amoCRM"
READ_CHUNK = 1000

__all__ = [
    "NO_EMAIL",
    "ExportStats",
    "content_hash",
    "contact_name",
    "export_account",
]


@dataclass
class ExportStats:
    """What one account's export did (materialization metadata)."""

    contacts_seen: int = 0
    sent: int = 0  # contacts sent to be added or updated
    synced: int = 0
    invalid: int = 0  # Unisender's verdict, or no e-mail
    removed: int = 0
    failed: int = 0
    unchanged: int = 0
    calls: int = 0  # importContacts calls made (each may have been retried)
    error: str | None = None  # why the account stopped early
    auth_failed: bool = False

    def as_metadata(self) -> dict[str, Any]:
        """Plain values for Dagster metadata."""
        return {
            "sent": self.sent,
            "synced": self.synced,
            "invalid": self.invalid,
            "removed": self.removed,
            "failed": self.failed,
            "unchanged": self.unchanged,
            "calls": self.calls,
            "contacts_seen": self.contacts_seen,
            "error": self.error,
        }


@dataclass
class _Row:
    contact_id: int
    email: str
    name: str
    content_hash: str | None
    record: bool = True  # False: an old e-mail taken out of the lists, nothing to record


def contact_name(first: str | None, middle: str | None, last: str | None) -> str:
    """The Name sent to Unisender: the name parts that exist, in order."""
    return " ".join(p.strip() for p in (first, middle, last) if p and p.strip())


def content_hash(email: str, name: str, list_ids: Sequence[int]) -> str:
    """SHA-256 of what is sent for a contact (e-mail, name, list ids)."""
    text = "\x1f".join([email.strip().lower(), name, ",".join(map(str, sorted(list_ids)))])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass(frozen=True)
class _Contact:
    """One amoCRM contact with what was last exported of it (None: never)."""

    id: int
    email: str | None
    first_name: str | None
    middle_name: str | None
    last_name: str | None
    deleted_at: datetime | None
    status: str | None
    content_hash: str | None
    sent_email: str | None
    reason: str | None
    updated_at: datetime | None


def _chunks(engine: Engine, integration: Integration, size: int) -> Iterator[list[Any]]:
    """The amoCRM contacts with their export row, ``size`` at a time (keyset by id).

    Two indexed reads a chunk — the contacts, then their export rows by id — rather than
    one outer join, which the planner may answer by scanning every export row each time.
    """
    c, u = contacts.c, unisender_contacts.c
    amocrm_id = int(integration.settings["amocrm_integration_id"])
    after = 0
    while True:
        with engine.connect() as conn:
            people = conn.execute(
                select(c.id, c.email, c.first_name, c.middle_name, c.last_name, c.deleted_at)
                .where(c.integration_id == amocrm_id, c.role == "contact", c.id > after)
                .order_by(c.id)
                .limit(size)
            ).all()
            if not people:
                return
            sent = {
                row.contact_id: row
                for row in conn.execute(
                    select(
                        u.contact_id, u.status, u.content_hash, u.email, u.reason, u.updated_at
                    ).where(
                        u.integration_id == integration.id,
                        u.contact_id.in_([p.id for p in people]),
                    )
                )
            }
        rows = []
        for p in people:
            e = sent.get(p.id)
            rows.append(
                _Contact(
                    p.id,
                    p.email,
                    p.first_name,
                    p.middle_name,
                    p.last_name,
                    p.deleted_at,
                    e.status if e else None,
                    e.content_hash if e else None,
                    e.email if e else None,
                    e.reason if e else None,
                    e.updated_at if e else None,
                )  # fmt: skip
            )
        yield rows
        after = rows[-1].id
        if len(rows) < size:
            return


class _Export:
    def __init__(
        self,
        engine: Engine,
        integration: Integration,
        client: UnisenderClient,
        *,
        run_id: str | None,
        batch_size: int,
        now: datetime,
    ) -> None:
        settings = integration.settings
        self.engine = engine
        self.integration = integration
        self.client = client
        self.run_id = run_id
        self.batch_size = min(batch_size, IMPORT_BATCH)
        self.now = now
        self.list_ids = sorted(int(x) for x in settings.get("list_ids") or [])
        self.lists_text = ",".join(map(str, self.list_ids))
        retry_days = float(settings.get("retry_invalid_days", 7))
        self.retry_before = now - timedelta(days=retry_days)
        self.stats = ExportStats()
        self.upserts: list[_Row] = []
        self.deletes: list[_Row] = []
        self.stopped = False
        self._pending: list[Any] = []

    # -- decide ------------------------------------------------------------------------------

    def take(self, row: Any) -> None:
        self.stats.contacts_seen += 1
        status = row.status
        if row.deleted_at is not None:
            if status == SYNC_SYNCED and row.sent_email:
                self.deletes.append(_Row(row.id, row.sent_email, "", row.content_hash))
            elif status is not None and status != SYNC_REMOVED:
                self.record([row.id], SYNC_REMOVED, reason=DELETED_REASON, email=row.sent_email)
                self.stats.removed += 1
            return
        email = (row.email or "").strip()
        if not email:
            if not (status == SYNC_INVALID and row.reason == NO_EMAIL):
                self.record([row.id], SYNC_INVALID, reason=NO_EMAIL, email=None, count=False)
                self.stats.invalid += 1
            else:
                self.stats.unchanged += 1
            return
        name = contact_name(row.first_name, row.middle_name, row.last_name)
        digest = content_hash(email, name, self.list_ids)
        same = row.content_hash == digest
        if same and status == SYNC_SYNCED:
            self.stats.unchanged += 1
            return
        updated = _aware(row.updated_at)
        if same and status == SYNC_INVALID and updated is not None and updated > self.retry_before:
            self.stats.unchanged += 1
            return
        self.upserts.append(_Row(row.id, email, name, digest))
        old = (row.sent_email or "").strip()
        if status == SYNC_SYNCED and old and old.lower() != email.lower():
            # The e-mail changed: the old address leaves the lists.
            self.deletes.append(_Row(row.id, old, "", None, record=False))

    # -- send ----------------------------------------------------------------------------------

    def flush(self, *, force: bool = False) -> None:
        while not self.stopped and self.upserts and (force or len(self.upserts) >= self.batch_size):
            batch, self.upserts = self.upserts[: self.batch_size], self.upserts[self.batch_size :]
            self.send(batch, delete=False)
        while not self.stopped and self.deletes and (force or len(self.deletes) >= self.batch_size):
            batch, self.deletes = self.deletes[: self.batch_size], self.deletes[self.batch_size :]
            self.send(batch, delete=True)

    def send(self, batch: list[_Row], *, delete: bool) -> None:
        if delete:
            fields: tuple[str, ...] = (*IMPORT_FIELDS, DELETE_FIELD)
            data = [[r.email, r.name, self.lists_text, 1] for r in batch]
        else:
            fields = IMPORT_FIELDS
            data = [[r.email, r.name, self.lists_text] for r in batch]
            self.stats.sent += len(batch)
        self.stats.calls += 1
        kept = [r for r in batch if r.record]
        try:
            result = self.client.import_contacts(data, fields)
        except ProviderError as exc:
            self.fail(kept, str(exc), delete=delete)
            self.stats.failed += len(kept)
            if isinstance(exc, ProviderAuthError):
                self.stats.auth_failed = True
                self.stop(str(exc))
            elif not isinstance(exc, ProviderRequestError | ProviderResponseError) or (
                exc.retryable
            ):
                self.stop(str(exc))
            return
        invalid: dict[int, str] = {}
        for entry in result.get("log") or []:
            if not isinstance(entry, dict):
                continue
            try:
                index = int(entry.get("index"))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue
            if 0 <= index < len(batch):
                message = str(entry.get("message") or entry.get("code") or "invalid")
                invalid.setdefault(index, message)
        for i, row in enumerate(batch):
            if not row.record:
                continue
            if delete:
                self.record([row.contact_id], SYNC_REMOVED, reason=DELETED_REASON, email=row.email)
                self.stats.removed += 1
            elif i in invalid:
                self.record(
                    [row.contact_id],
                    SYNC_INVALID,
                    reason=invalid[i],
                    email=row.email,
                    digest=row.content_hash,
                )
                self.stats.invalid += 1
            else:
                self.record(
                    [row.contact_id],
                    SYNC_SYNCED,
                    reason=None,
                    email=row.email,
                    digest=row.content_hash,
                    synced=True,
                )
                self.stats.synced += 1

    def fail(self, batch: list[_Row], error: str, *, delete: bool) -> None:
        # A failed removal stays synced (it is tried again next run); its reason says why.
        status = SYNC_SYNCED if delete else SYNC_FAILED
        for row in batch:
            self.record(
                [row.contact_id],
                status,
                reason=error[:1000],
                email=row.email,
                digest=row.content_hash if delete else None,
                keep_hash=delete,
            )

    def stop(self, error: str) -> None:
        self.stopped = True
        self.stats.error = error

    # -- record -------------------------------------------------------------------------------

    def record(
        self,
        contact_ids: list[int],
        status: str,
        *,
        reason: str | None,
        email: str | None,
        digest: str | None = None,
        synced: bool = False,
        count: bool = True,
        keep_hash: bool = False,
    ) -> None:
        self._pending.append((contact_ids, status, reason, email, digest, synced, count, keep_hash))

    def write(self) -> None:
        """Write the recorded outcomes in one transaction (ON CONFLICT upserts, executemany)."""
        if not self._pending:
            return
        groups: dict[tuple[bool, bool, bool], list[dict[str, Any]]] = {}
        for ids, status, reason, email, digest, synced, count, keep_hash in self._pending:
            for contact_id in ids:
                values: dict[str, Any] = {
                    "integration_id": self.integration.id,
                    "contact_id": contact_id,
                    "email": email,
                    "list_ids": self.list_ids,
                    "status": status,
                    "reason": reason,
                    "run_id": self.run_id,
                    "updated_at": self.now,
                    "attempts": 1 if count else 0,
                }
                if not keep_hash:
                    values["content_hash"] = digest
                if synced:
                    values["synced_at"] = self.now
                groups.setdefault((count, keep_hash, synced), []).append(values)
        with self.engine.begin() as conn:
            insert = dialect_insert(conn)
            for (count, _keep, _synced), rows in groups.items():
                stmt = insert(unisender_contacts)
                update = {
                    k: stmt.excluded[k]
                    for k in rows[0]
                    if k not in ("integration_id", "contact_id", "attempts")
                }
                if count:
                    update["attempts"] = unisender_contacts.c.attempts + 1
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["integration_id", "contact_id"], set_=update
                    ),
                    rows,
                )
        self._pending = []


def export_account(
    engine: Engine,
    integration: Integration,
    client: UnisenderClient,
    *,
    run_id: str | None = None,
    batch_size: int = IMPORT_BATCH,
    read_chunk: int = READ_CHUNK,
    now: datetime | None = None,
) -> ExportStats:
    """Export one Unisender account's contacts; outcomes land in ``unisender_contacts``."""
    if not integration.settings.get("amocrm_integration_id"):
        raise ValueError(f"Unisender integration {integration.id} has no amocrm_integration_id")
    job = _Export(
        engine,
        integration,
        client,
        run_id=run_id,
        batch_size=batch_size,
        now=now or now_utc(),
    )
    for chunk in _chunks(engine, integration, read_chunk):
        for row in chunk:
            job.take(row)
        job.flush()
        job.write()
        if job.stopped:
            break
    if not job.stopped:
        job.flush(force=True)
    job.write()
    return job.stats
