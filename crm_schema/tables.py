"""SQLAlchemy Core table definitions shared by every provider: the core of the CRM schema.

Provider tables (inbox, tasks, entities) live in `crm_schema.providers.<name>` and
share this `metadata`; `load_provider_tables()` imports every registered one (Alembic
and the schema tests need the whole schema). Seed column names (`allio_tasks.external_ids`,
`status`, `entity`, ...) are kept as the requirement documents spell them.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)

# BIGINT ids on PostgreSQL, but INTEGER on SQLite so they stay rowid aliases.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)


def created_at_column() -> Column:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


# Task / raw-row status values from seed 000 section 3.2.
TASK_NEW, TASK_IN_PROGRESS, TASK_DONE, TASK_ERROR = 0, 1, 2, 3

integrations = Table(
    "integrations",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("provider", String(32), nullable=False),
    Column("name", String(200), nullable=False),
    Column("integration_uuid", String(64)),
    Column("webhook_key", String(64), nullable=False, unique=True),
    Column("webhook_secret", Text),
    Column("api_base_url", Text),
    Column("credentials", JSON, nullable=False, default=dict),
    Column("settings", JSON, nullable=False, default=dict),
    Column("is_active", Boolean, nullable=False, server_default="1", default=True),
    # Why the integration needs a person (a refused OAuth refresh: "needs
    # re-authorization", an IP block, a revoked API key); NULL when all is well.
    Column("attention", Text),
    Column("attention_at", DateTime(timezone=True)),
    created_at_column(),
    Column(
        "updated_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=func.now(),
        onupdate=func.now(),
    ),
    UniqueConstraint("provider", "integration_uuid", name="uq_integrations_provider_uuid"),
)


def task_table(name: str, inbox: Table, *extra: Column, metadata: MetaData = metadata) -> Table:
    """A provider's task table: the columns the generic task queue works on.

    Seed 000 names `external_ids`, `status`, `created_at`, `entity`; the rest serve
    the queue: one task per (inbox row, part), the `handler` that processes it (NULL:
    nothing does, so the task is created finished), bounded claims with a lease that a
    heartbeat extends, retries with backoff (`next_attempt_at`), runs that died while
    holding the task (`crashes`), and a reason for every end state (`error`, `outcome`).
    """
    return Table(
        name,
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("external_ids", Text, nullable=False),
        Column("status", SmallInteger, nullable=False, server_default="0", default=TASK_NEW),
        created_at_column(),
        Column("entity", String(32), nullable=False),
        Column("integration_id", BigId, ForeignKey("integrations.id"), nullable=False),
        Column("command", String(64), nullable=False),
        Column("webhook_id", BigId, ForeignKey(inbox.c.id)),
        Column("part", SmallInteger, nullable=False, server_default="0", default=0),
        Column("handler", String(32)),
        Column("attempts", Integer, nullable=False, server_default="0", default=0),
        Column("crashes", Integer, nullable=False, server_default="0", default=0),
        Column("error", Text),
        Column("outcome", Text),
        Column("claimed_at", DateTime(timezone=True)),
        Column("lease_expires_at", DateTime(timezone=True)),
        Column("next_attempt_at", DateTime(timezone=True)),
        Column("finished_at", DateTime(timezone=True)),
        Column("run_id", String(64)),
        Column("ids_count", Integer),
        Column("ids_missing", Integer),
        *extra,
        UniqueConstraint("webhook_id", "part", name=f"uq_{name}_webhook_part"),
        Index(f"ix_{name}_status_created", "status", "created_at"),
        Index(f"ix_{name}_integration_status", "integration_id", "status"),
        Index(f"ix_{name}_created", "created_at"),
        Index(f"ix_{name}_finished", "finished_at"),
    )


def inbox_unprocessed_index(inbox: Table) -> Index:
    """The sensor scans unprocessed rows, not `id > cursor`: ids are allocated before
    commit, so a lower id can become visible after a higher one."""
    return Index(
        f"ix_{inbox.name}_unprocessed",
        inbox.c.id,
        postgresql_where=inbox.c.processed_at.is_(None),
        sqlite_where=inbox.c.processed_at.is_(None),
    )


def entity_columns() -> list:
    """Columns every synced CRM entity shares (DESIGN.md, 'CRM entities')."""
    return [
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("integration_id", BigId, ForeignKey("integrations.id"), nullable=False),
        Column("external_id", String(64), nullable=False),
        Column("custom_fields", JSON, nullable=False, default=dict),
        Column("raw", JSON, nullable=False, default=dict),
        # The provider's own version of the record (its update time), compared as time
        # so an older snapshot never overwrites a newer one; always stored in UTC.
        Column("source_version", DateTime(timezone=True)),
        Column("deleted_at", DateTime(timezone=True)),
        Column("synced_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("source_task_id", BigId),
    ]


contacts = Table(
    "contacts",
    metadata,
    *entity_columns(),
    Column("source_entity", String(32)),
    # What the person is to the record that names them (ALLIO: a reserve's `client`, a
    # deal card's `buyer`): ids from different roles may come from different id spaces.
    Column("role", String(32), nullable=False, server_default="contact", default="contact"),
    Column("first_name", String(200)),
    Column("middle_name", String(200)),
    Column("last_name", String(200)),
    Column("phone", String(32)),
    Column("phone_raw", String(200)),
    Column("email", String(320)),
    UniqueConstraint(
        "integration_id", "role", "external_id", name="uq_contacts_integration_role_external"
    ),
)


api_call_log = Table(
    "api_call_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("provider", String(32), nullable=False),
    Column("integration_id", BigId),
    Column("method", String(10), nullable=False),
    Column("url", Text, nullable=False),
    Column("status_code", Integer),
    Column("duration_ms", Float),
    Column("attempt", Integer, nullable=False, server_default="1", default=1),
    Column("request_body", Text),
    Column("response_body", Text),
    Column("error", Text),
    Column("run_id", String(64)),
    created_at_column(),
    Index("ix_api_call_log_provider_created", "provider", "created_at"),
    Index("ix_api_call_log_run", "run_id"),
)

rate_limit_state = Table(
    "rate_limit_state",
    metadata,
    Column("key", String(200), primary_key=True),
    # GCRA theoretical arrival time, epoch seconds on the database clock.
    Column("tat", Float, nullable=False, server_default="0", default=0.0),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Provider access tokens shared by every process: a token fetched with a login (iiko)
# or an OAuth 2 pair whose refresh token is single-use (amoCRM). `lock_owner` /
# `lock_expires_at` form a compare-and-swap lease, so one process renews while the
# others wait for its result, without holding a transaction across the HTTP call.
provider_tokens = Table(
    "provider_tokens",
    metadata,
    Column("integration_id", BigId, ForeignKey("integrations.id"), primary_key=True),
    Column("name", String(32), primary_key=True),
    Column("access_token", Text),
    Column("refresh_token", Text),
    Column("expires_at", DateTime(timezone=True)),
    Column("version", Integer, nullable=False, server_default="0", default=0),
    Column("lock_owner", String(64)),
    Column("lock_expires_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Sync runs say they are alive here (every third of a lease), so a run whose process
# died without Dagster noticing (its host went away) is found and failed by the sensor.
run_heartbeats = Table(
    "run_heartbeats",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("provider", String(32), nullable=False),
    Column("beat_at", DateTime(timezone=True), nullable=False),
    # Where the run works (ops can find the process; tests kill it).
    Column("host", String(255)),
    Column("pid", Integer),
)


# Tokens of people and internal systems calling the operator API (`/api/v1/...`):
# only a SHA-256 of each token is kept (they are random, 256-bit), with who it is for.
operator_tokens = Table(
    "operator_tokens",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    created_at_column(),
    Column("last_used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
)


# How far each integration's inbox rows have been forwarded to its mirror (seed 002's
# traffic mirror, for every provider): rows after `last_id` are still to send, in order.
inbox_mirror_cursors = Table(
    "inbox_mirror_cursors",
    metadata,
    Column("integration_id", BigId, ForeignKey("integrations.id"), primary_key=True),
    Column("inbox", String(64), primary_key=True),
    Column("last_id", BigInteger, nullable=False, server_default="0", default=0),
    Column("error", Text),  # the last failure to reach the mirror (NULL: none)
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


def load_provider_tables() -> MetaData:
    """Import every registered provider's tables into `metadata`; returns it."""
    from crm_sync.registry import layer_modules

    layer_modules("schema")
    return metadata
