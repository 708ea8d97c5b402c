"""The traffic mirror (seed 002's nginx mirror, done durably, for every provider).

An integration may name a `mirror_url` (a test installation). Every inbox row stored
for it is sent there again as the request its provider made — in id order, at least
once — by `forward_pending`, which the `inbox_mirror` job runs; the receiver is never
involved, so the provider's 200 never waits for the mirror. `replay` re-sends the rows
received in a time range on demand (`crm-sync replay`).

What a provider's request looked like is the provider's knowledge: each schema module
offers `MIRROR_SOURCES` (crm_schema.mirror); this module only walks them.

Delivery rules:
- any HTTP answer (2xx, 4xx, 5xx) counts as delivered: the mirror's answers are
  ignored and the cursor (`inbox_mirror_cursors.last_id`) moves on;
- a connection error or timeout stops that integration's pass and records `error` on
  its cursor; the next pass sends the same row again (at least once, in order);
- a row is only sent once every lower id of its table is settled (committed or never
  to be): ids are allocated before COMMIT, so a row committed late can carry a lower
  id than one already visible. A row older than `SETTLE_SECONDS` has only settled ids
  below it; above the newest such row, rows are sent while their ids run without a gap.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy import Connection, Engine, func, select, update

from crm_schema.engine import dialect_insert
from crm_schema.integrations import Integration
from crm_schema.mirror import MirrorRequest, MirrorSource
from crm_schema.tables import inbox_mirror_cursors, integrations
from crm_sync.redaction import mask_literals, mask_url
from crm_sync.registry import get_provider, layer_modules

log = logging.getLogger(__name__)

T = TypeVar("T")
# Longer than a receiver request can hold an id uncommitted (its commit timeout, 8 s,
# plus the statement timeout, 5 s), with room for clock skew between hosts.
SETTLE_SECONDS = 30.0
# Rows above the newest settled one looked at for a run without gaps (recent traffic).
RECENT_SCAN = 10_000
DEFAULT_BATCH = 200
# A pass stops after this long (the cursor is saved; the next pass carries on), so a
# slow mirror never holds an integration's cursor for long.
DEFAULT_PASS_SECONDS = 20.0
DEFAULT_TIMEOUT = httpx.Timeout(5.0, connect=2.0)
# Names the inbox row a request comes from, so a mirror can drop the repeats that
# at-least-once delivery allows.
ROW_HEADER = "X-Mirror-Row"
REPLAY_HEADER = "X-Mirror-Replay"
MAX_ERROR_CHARS = 500


# -- what is mirrored -------------------------------------------------------------------


def mirror_sources(provider: str | None = None) -> dict[str, tuple[MirrorSource, ...]]:
    """{provider: its inbox tables and request builders} (providers offering none left out)."""
    found = {}
    for name, module in layer_modules("schema").items():
        sources = tuple(getattr(module, "MIRROR_SOURCES", ()))
        if sources and (provider is None or name == provider):
            found[name] = sources
    return found


def _integration(row: Any) -> Integration:
    # Credentials are not needed to rebuild a request: left closed.
    return Integration(
        id=row.id,
        provider=row.provider,
        name=row.name,
        integration_uuid=row.integration_uuid,
        webhook_key=row.webhook_key,
        api_base_url=row.api_base_url,
        settings=dict(row.settings or {}),
        is_active=bool(row.is_active),
        credentials={},
        webhook_secret=row.webhook_secret,
    )


def load_integrations(
    conn: Connection, provider: str | None = None, integration_id: int | None = None
) -> list[Integration]:
    """Integrations (of ``provider`` / the one ``integration_id``), by id, credentials closed."""
    i = integrations.c
    query = select(
        i.id,
        i.provider,
        i.name,
        i.integration_uuid,
        i.webhook_key,
        i.api_base_url,
        i.settings,
        i.is_active,
        i.webhook_secret,
    ).order_by(i.id)
    if provider is not None:
        query = query.where(i.provider == provider)
    if integration_id is not None:
        query = query.where(i.id == integration_id)
    return [_integration(row) for row in conn.execute(query)]


def mirror_url_of(integration: Integration) -> str | None:
    """The integration's `mirror_url` setting (None: not mirrored)."""
    url = integration.settings.get("mirror_url")
    return url if isinstance(url, str) and url else None


def display_url(url: str) -> str:
    """A mirror URL safe to print: no user info, secret-looking query values masked."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return mask_url(urlunsplit(parts._replace(netloc=host, fragment="")))


def target_url(base: str, request: MirrorRequest) -> str:
    """The request's path under the mirror's base URL (which may carry a path prefix)."""
    return base.rstrip("/") + request.path


# -- settled ids ------------------------------------------------------------------------


def settled_horizon(conn: Connection, source: MirrorSource, now: datetime) -> int:
    """The highest id of ``source``'s inbox below which no row can still appear.

    ``now`` must be taken before this runs (a row committed since is then seen).
    """
    table = source.inbox
    received = table.c[source.received_at]
    cut = now - timedelta(seconds=SETTLE_SECONDS)
    # The newest row received before the cut: every id below it is settled.
    settled = conn.execute(
        select(table.c.id).where(received < cut).order_by(table.c.id.desc()).limit(1)
    ).scalar()
    horizon = int(settled or 0)
    recent = conn.execute(
        select(table.c.id).where(table.c.id > horizon).order_by(table.c.id).limit(RECENT_SCAN)
    ).scalars()
    for row_id in recent:
        if row_id != horizon + 1:
            break  # a gap: an id that may still commit
        horizon = row_id
    return horizon


# -- the cursor -------------------------------------------------------------------------

Run = Callable[[Callable[[Connection], T]], T]


def _ensure_cursor(engine: Engine, integration_id: int, inbox: str) -> None:
    with engine.begin() as conn:
        insert = dialect_insert(conn)(inbox_mirror_cursors)
        conn.execute(
            insert.values(
                integration_id=integration_id, inbox=inbox, last_id=0
            ).on_conflict_do_nothing()
        )


@contextmanager
def _cursor_session(engine: Engine, integration_id: int, inbox: str) -> Iterator[Run | None]:
    """Runs statements for one integration's pass; None when another pass holds it.

    PostgreSQL: one transaction holds the cursor row (FOR UPDATE SKIP LOCKED) for the
    whole pass, so two passes never send the same rows at once; a pass that dies
    rolls its progress back and the rows go again (at least once). SQLite: short
    transactions only — a write transaction held across HTTP calls would stall the
    receiver — and passes are kept apart by the sensor (one run at a time).
    """
    _ensure_cursor(engine, integration_id, inbox)
    if engine.dialect.name != "postgresql":

        def run_short(fn: Callable[[Connection], T]) -> T:
            with engine.begin() as conn:
                return fn(conn)

        yield run_short
        return
    c = inbox_mirror_cursors.c
    with engine.connect() as conn, conn.begin():
        held = conn.execute(
            select(c.last_id)
            .where(c.integration_id == integration_id, c.inbox == inbox)
            .with_for_update(skip_locked=True)
        ).first()
        if held is None:
            yield None
            return

        def run_held(fn: Callable[[Connection], T]) -> T:
            return fn(conn)

        yield run_held


def _read_cursor(conn: Connection, integration_id: int, inbox: str) -> int:
    c = inbox_mirror_cursors.c
    value = conn.execute(
        select(c.last_id).where(c.integration_id == integration_id, c.inbox == inbox)
    ).scalar()
    return int(value or 0)


def _save_cursor(
    conn: Connection, integration_id: int, inbox: str, last_id: int, error: str | None
) -> None:
    c = inbox_mirror_cursors.c
    conn.execute(
        update(inbox_mirror_cursors)
        .where(c.integration_id == integration_id, c.inbox == inbox)
        .values(last_id=last_id, error=error, updated_at=datetime.now(UTC))
    )


# -- sending ----------------------------------------------------------------------------


def new_client(timeout: httpx.Timeout | float = DEFAULT_TIMEOUT) -> httpx.Client:
    """The HTTP client passes use: short timeouts, no redirects, no env proxies."""
    return httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False)


def describe_error(exc: BaseException, integration: Integration) -> str:
    """A failure to reach the mirror, with the integration's secrets masked."""
    secrets = [integration.webhook_key, integration.webhook_secret or ""]
    text = mask_literals(f"{type(exc).__name__}: {exc}".strip(), secrets)
    return text[:MAX_ERROR_CHARS]


def send(
    client: httpx.Client,
    base_url: str,
    request: MirrorRequest,
    row_tag: str,
    extra_headers: Mapping[str, str] | None = None,
) -> int:
    """Send one request; its HTTP status (the answer itself is ignored).

    Raises httpx.TransportError when the mirror could not be reached or timed out.
    """
    headers = {**request.headers, ROW_HEADER: row_tag, **(extra_headers or {})}
    response = client.request(
        request.method, target_url(base_url, request), content=request.body, headers=headers
    )
    return response.status_code


@dataclass
class PassReport:
    """One integration's forwarding pass over one inbox."""

    integration_id: int
    provider: str
    inbox: str
    forwarded: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    skipped_rows: list[int] = field(default_factory=list)  # rows no request could be built for
    error: str | None = None
    busy: bool = False  # another pass holds this cursor
    last_id: int = 0
    lag: int = 0  # rows still waiting after the pass
    lag_seconds: float | None = None  # age of the oldest row still waiting

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe view (no secrets: the target URL is not included)."""
        return {
            "integration_id": self.integration_id,
            "provider": self.provider,
            "inbox": self.inbox,
            "forwarded": self.forwarded,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "skipped_rows": self.skipped_rows,
            "error": self.error,
            "busy": self.busy,
            "last_id": self.last_id,
            "lag": self.lag,
            "lag_seconds": self.lag_seconds,
        }


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _lag(
    conn: Connection, source: MirrorSource, integration_id: int, last_id: int, now: datetime
) -> tuple[int, float | None]:
    table = source.inbox
    received = table.c[source.received_at]
    waiting, oldest = conn.execute(
        select(func.count(), func.min(received)).where(
            table.c.integration_id == integration_id, table.c.id > last_id
        )
    ).one()
    age = None if oldest is None else max(0.0, (now - _as_utc(oldest)).total_seconds())
    return int(waiting), age


def forward_integration(
    engine: Engine,
    source: MirrorSource,
    integration: Integration,
    client: httpx.Client,
    *,
    horizon: int,
    batch: int = DEFAULT_BATCH,
    max_seconds: float = DEFAULT_PASS_SECONDS,
) -> PassReport:
    """Send ``integration``'s rows after its cursor (up to ``horizon``), in id order."""
    report = PassReport(integration.id, integration.provider, source.name)
    base = mirror_url_of(integration)
    if base is None:
        return report
    table = source.inbox
    deadline = time.monotonic() + max_seconds
    with _cursor_session(engine, integration.id, source.name) as run:
        if run is None:
            report.busy = True
            return report
        last_id = run(lambda conn: _read_cursor(conn, integration.id, source.name))
        rows = run(
            lambda conn: (
                conn.execute(
                    select(table)
                    .where(
                        table.c.integration_id == integration.id,
                        table.c.id > last_id,
                        table.c.id <= horizon,
                    )
                    .order_by(table.c.id)
                    .limit(batch)
                )
                .mappings()
                .all()
            )
        )
        errors: list[str] = []
        for row in rows:
            if time.monotonic() > deadline:
                break
            try:
                request = source.build(row, integration)
            except Exception as exc:  # a stored row that cannot be rebuilt: never stall on it
                log.warning("mirror: %s row %s cannot be rebuilt: %s", source.name, row["id"], exc)
                report.skipped_rows.append(row["id"])
                errors.append(
                    f"row {row['id']} cannot be rebuilt: {describe_error(exc, integration)}"
                )
                last_id = row["id"]
                continue
            try:
                status = send(client, base, request, f"{source.name}:{row['id']}")
            except httpx.TransportError as exc:
                report.error = describe_error(exc, integration)
                break
            report.statuses[status] += 1
            report.forwarded += 1
            last_id = row["id"]
        if report.error is None and errors:
            report.error = "; ".join(errors)[:MAX_ERROR_CHARS]
        run(lambda conn: _save_cursor(conn, integration.id, source.name, last_id, report.error))
        report.last_id = last_id
        now = datetime.now(UTC)
        report.lag, report.lag_seconds = run(
            lambda conn: _lag(conn, source, integration.id, last_id, now)
        )
    if report.error:
        log.warning(
            "mirror: integration %s (%s) stopped at row %s: %s",
            integration.id,
            source.name,
            last_id,
            report.error,
        )
    return report


def forward_pending(
    engine: Engine,
    *,
    client: httpx.Client | None = None,
    batch: int = DEFAULT_BATCH,
    max_seconds: float = DEFAULT_PASS_SECONDS,
) -> list[PassReport]:
    """One pass: every integration with a `mirror_url`, every inbox of its provider."""
    own = client is None
    http = client or new_client()
    reports = []
    try:
        for provider, sources in mirror_sources().items():
            with engine.begin() as conn:
                targets = [i for i in load_integrations(conn, provider) if mirror_url_of(i)]
            for source in sources:
                if not targets:
                    continue
                now = datetime.now(UTC)
                with engine.begin() as conn:
                    horizon = settled_horizon(conn, source, now)
                for integration in targets:
                    reports.append(
                        forward_integration(
                            engine,
                            source,
                            integration,
                            http,
                            horizon=horizon,
                            batch=batch,
                            max_seconds=max_seconds,
                        )
                    )
    finally:
        if own:
            http.close()
    return reports


def waiting(engine: Engine) -> dict[int, int]:
    """{integration id: 1 when it has a settled row after its cursor} (mirrored ones only).

    What the sensor asks each tick: cheap (one EXISTS per integration and inbox).
    """
    found: dict[int, int] = {}
    c = inbox_mirror_cursors.c
    for provider, sources in mirror_sources().items():
        with engine.begin() as conn:
            targets = [i for i in load_integrations(conn, provider) if mirror_url_of(i)]
            if not targets:
                continue
            for source in sources:
                table = source.inbox
                horizon = settled_horizon(conn, source, datetime.now(UTC))
                for integration in targets:
                    last_id = conn.execute(
                        select(c.last_id).where(
                            c.integration_id == integration.id, c.inbox == source.name
                        )
                    ).scalar()
                    row = conn.execute(
                        select(table.c.id)
                        .where(
                            table.c.integration_id == integration.id,
                            table.c.id > int(last_id or 0),
                            table.c.id <= horizon,
                        )
                        .limit(1)
                    ).first()
                    if row is not None:
                        found[integration.id] = found.get(integration.id, 0) + 1
    return found


# -- replay -----------------------------------------------------------------------------


@dataclass
class ReplayReport:
    """What `replay` did for one integration."""

    integration_id: int
    name: str
    target: str | None  # display form (no user info, secrets masked); None: no mirror
    rows: int = 0  # rows in the range
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    skipped_rows: list[int] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe view."""
        return {
            "integration_id": self.integration_id,
            "name": self.name,
            "target": self.target,
            "rows": self.rows,
            "sent": self.sent,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "skipped_rows": self.skipped_rows,
            "error": self.error,
        }


def replay(
    engine: Engine,
    provider: str,
    start: datetime,
    end: datetime,
    *,
    integration_id: int | None = None,
    to_url: str | None = None,
    client: httpx.Client | None = None,
    page: int = 500,
) -> list[ReplayReport]:
    """Re-send ``provider``'s rows received in [start, end), in id order, per integration,
    to ``to_url`` or else each integration's `mirror_url`. Cursors are left alone.

    Raises ValueError for an unknown provider, one without an inbox, or an integration
    that is not the provider's.
    """
    spec = get_provider(provider)
    sources = mirror_sources(spec.name).get(spec.name)
    if not sources:
        raise ValueError(f"provider '{spec.name}' keeps no inbox to replay")
    with engine.begin() as conn:
        targets = load_integrations(conn, spec.name, integration_id)
    if integration_id is not None and not targets:
        raise ValueError(f"no {spec.name} integration with id {integration_id}")
    own = client is None
    http = client or new_client()
    reports = []
    try:
        for integration in targets:
            base = to_url or mirror_url_of(integration)
            report = ReplayReport(
                integration.id, integration.name, display_url(base) if base else None
            )
            reports.append(report)
            for source in sources:
                if report.error:
                    break
                _replay_source(engine, source, integration, base, start, end, http, report, page)
    finally:
        if own:
            http.close()
    return reports


def _replay_source(
    engine: Engine,
    source: MirrorSource,
    integration: Integration,
    base: str | None,
    start: datetime,
    end: datetime,
    client: httpx.Client,
    report: ReplayReport,
    page: int,
) -> None:
    table = source.inbox
    received = table.c[source.received_at]
    in_range = (table.c.integration_id == integration.id, received >= start, received < end)
    after = 0
    while True:
        with engine.begin() as conn:
            rows = (
                conn.execute(
                    select(table)
                    .where(*in_range, table.c.id > after)
                    .order_by(table.c.id)
                    .limit(page)
                )
                .mappings()
                .all()
            )
        if not rows:
            return
        report.rows += len(rows)
        after = rows[-1]["id"]
        if base is None:
            continue  # counted only: nowhere to send
        for row in rows:
            try:
                request = source.build(row, integration)
            except Exception:
                report.skipped_rows.append(row["id"])
                continue
            try:
                status = send(
                    client, base, request, f"{source.name}:{row['id']}", {REPLAY_HEADER: "1"}
                )
            except httpx.TransportError as exc:
                report.error = describe_error(exc, integration)
                return
            report.statuses[status] += 1
            report.sent += 1
