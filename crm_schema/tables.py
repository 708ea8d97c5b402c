"""SQLAlchemy Core table definitions: the single source of the CRM schema.

Seed column names (`allio_webhook.external_ids_array`, `allio_tasks.external_ids`,
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


def _now() -> Column:
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
    _now(),
    Column(
        "updated_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=func.now(),
        onupdate=func.now(),
    ),
    UniqueConstraint("provider", "integration_uuid", name="uq_integrations_provider_uuid"),
)

allio_webhook = Table(
    "allio_webhook",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("integration_uuid", String(64), nullable=False),
    Column("command", String(64), nullable=False),
    Column("external_ids_array", Text, nullable=False),
    _now(),
    Column("integration_id", BigId, ForeignKey("integrations.id"), nullable=False),
    Column("processed_at", DateTime(timezone=True)),
)
# The sensor scans unprocessed rows, not `id > cursor`: ids are allocated before
# commit, so a lower id can become visible after a higher one.
Index(
    "ix_allio_webhook_unprocessed",
    allio_webhook.c.id,
    postgresql_where=allio_webhook.c.processed_at.is_(None),
    sqlite_where=allio_webhook.c.processed_at.is_(None),
)

allio_tasks = Table(
    "allio_tasks",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("external_ids", Text, nullable=False),
    Column("status", SmallInteger, nullable=False, server_default="0", default=TASK_NEW),
    _now(),
    Column("entity", String(32), nullable=False),
    Column("integration_id", BigId, ForeignKey("integrations.id"), nullable=False),
    Column("command", String(64), nullable=False),
    Column("webhook_id", BigId, ForeignKey("allio_webhook.id"), unique=True),
    Column("attempts", Integer, nullable=False, server_default="0", default=0),
    Column("error", Text),
    Column("claimed_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("run_id", String(64)),
    Index("ix_allio_tasks_status_created", "status", "created_at"),
    Index("ix_allio_tasks_integration_status", "integration_id", "status"),
    Index("ix_allio_tasks_created", "created_at"),
)


def _entity_columns() -> list:
    """Columns every synced CRM entity shares (DESIGN.md, 'CRM entities')."""
    return [
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("integration_id", BigId, ForeignKey("integrations.id"), nullable=False),
        Column("external_id", String(64), nullable=False),
        Column("custom_fields", JSON, nullable=False, default=dict),
        Column("raw", JSON, nullable=False, default=dict),
        Column("source_version", String(64)),
        Column("deleted_at", DateTime(timezone=True)),
        Column("synced_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("source_task_id", BigId),
    ]


contacts = Table(
    "contacts",
    metadata,
    *_entity_columns(),
    Column("source_entity", String(32)),
    Column("first_name", String(200)),
    Column("middle_name", String(200)),
    Column("last_name", String(200)),
    Column("phone", String(32)),
    Column("phone_raw", String(200)),
    Column("email", String(320)),
    UniqueConstraint("integration_id", "external_id", name="uq_contacts_integration_external"),
)


def _allio_deal_columns() -> list:
    """Typed columns of the seed's reserve / deal-card mapping."""
    return [
        # Seed mapping: CRM created_at <- ALLIO `till`.
        Column("created_at", DateTime(timezone=True)),
        Column("status", String(64)),
        Column("type", String(64)),
        Column("space_id", String(64)),
        Column("manager_id", String(64)),
        Column("manager_fullname", String(300)),
        Column("manager_city", String(200)),
        Column("manager_is_agency", Boolean),
        Column("comment", Text),
        Column("contact_id", BigId, ForeignKey("contacts.id")),
    ]


reserves = Table(
    "reserves",
    metadata,
    *_entity_columns(),
    *_allio_deal_columns(),
    UniqueConstraint("integration_id", "external_id", name="uq_reserves_integration_external"),
)

dealcards = Table(
    "dealcards",
    metadata,
    *_entity_columns(),
    *_allio_deal_columns(),
    UniqueConstraint("integration_id", "external_id", name="uq_dealcards_integration_external"),
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
    _now(),
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
