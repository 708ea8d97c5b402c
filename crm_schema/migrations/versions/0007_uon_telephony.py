"""U-ON.Travel: its inbox and tasks, customers, the shared phone cache, calls, requests
and click-to-call originations

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "integration_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("external_id", sa.String(length=64), nullable=False),
        sa.Column("custom_fields", sa.JSON(), nullable=False),
        sa.Column("raw", sa.JSON(), nullable=False),
        sa.Column("source_version", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "synced_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column(
            "source_task_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("name", sa.String(length=600), nullable=True),
        sa.Column("first_name", sa.String(length=200), nullable=True),
        sa.Column("middle_name", sa.String(length=200), nullable=True),
        sa.Column("last_name", sa.String(length=200), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("phone_raw", sa.String(length=200), nullable=True),
        sa.Column("phone_mobile", sa.String(length=32), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("company", sa.String(length=300), nullable=True),
        sa.Column("status", sa.String(length=100), nullable=True),
        sa.Column("manager_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_customers_integration_id_integrations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customers")),
        sa.UniqueConstraint(
            "integration_id", "external_id", name="uq_customers_integration_external"
        ),
    )
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.create_index(
            "ix_customers_integration_phone", ["integration_id", "phone"], unique=False
        )
        batch_op.create_index(
            "ix_customers_integration_phone_mobile",
            ["integration_id", "phone_mobile"],
            unique=False,
        )

    op.create_table(
        "uon_calls",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "integration_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("call_id", sa.String(length=128), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=True),
        sa.Column("phone", sa.String(length=64), nullable=True),
        sa.Column("extension", sa.String(length=32), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("call_status", sa.String(length=32), nullable=True),
        sa.Column("customer_external_id", sa.String(length=64), nullable=True),
        sa.Column("log_status", sa.String(length=16), nullable=True),
        sa.Column("log_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("log_error", sa.Text(), nullable=True),
        sa.Column("uon_lead_id", sa.String(length=64), nullable=True),
        sa.Column("log_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "last_event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_uon_calls_integration_id_integrations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uon_calls")),
        sa.UniqueConstraint("integration_id", "call_id", name="uq_uon_calls_integration_call"),
    )
    with op.batch_alter_table("uon_calls", schema=None) as batch_op:
        batch_op.create_index("ix_uon_calls_log_status", ["log_status"], unique=False)

    op.create_table(
        "uon_inbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "integration_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=True),
        sa.Column("phone", sa.String(length=64), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_uon_inbox_integration_id_integrations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uon_inbox")),
    )
    with op.batch_alter_table("uon_inbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_uon_inbox_external", ["integration_id", "source", "external_id"], unique=False
        )
        batch_op.create_index(
            "ix_uon_inbox_unprocessed",
            ["id"],
            unique=False,
            postgresql_where=sa.text("processed_at IS NULL"),
            sqlite_where=sa.text("processed_at IS NULL"),
        )

    op.create_table(
        "uon_phone_cache",
        sa.Column(
            "integration_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("found", sa.Boolean(), nullable=False),
        sa.Column("profile", sa.JSON(), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_uon_phone_cache_integration_id_integrations"),
        ),
        sa.PrimaryKeyConstraint("integration_id", "phone", name=op.f("pk_uon_phone_cache")),
    )
    with op.batch_alter_table("uon_phone_cache", schema=None) as batch_op:
        batch_op.create_index("ix_uon_phone_cache_expires", ["expires_at"], unique=False)

    op.create_table(
        "uon_requests",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "integration_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("external_id", sa.String(length=64), nullable=False),
        sa.Column("custom_fields", sa.JSON(), nullable=False),
        sa.Column("raw", sa.JSON(), nullable=False),
        sa.Column("source_version", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "synced_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column(
            "source_task_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=100), nullable=True),
        sa.Column("customer_external_id", sa.String(length=64), nullable=True),
        sa.Column("manager_id", sa.String(length=32), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_uon_requests_integration_id_integrations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uon_requests")),
        sa.UniqueConstraint(
            "integration_id",
            "kind",
            "external_id",
            name="uq_uon_requests_integration_kind_external",
        ),
    )
    with op.batch_alter_table("uon_requests", schema=None) as batch_op:
        batch_op.create_index(
            "ix_uon_requests_customer", ["integration_id", "customer_external_id"], unique=False
        )

    op.create_table(
        "uon_originations",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "integration_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("inbox_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("manager_id", sa.String(length=32), nullable=True),
        sa.Column("extension", sa.String(length=32), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("pbx_status", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["inbox_id"], ["uon_inbox.id"], name=op.f("fk_uon_originations_inbox_id_uon_inbox")
        ),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_uon_originations_integration_id_integrations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uon_originations")),
    )
    op.create_table(
        "uon_tasks",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("external_ids", sa.Text(), nullable=False),
        sa.Column("status", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column("entity", sa.String(length=32), nullable=False),
        sa.Column(
            "integration_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("command", sa.String(length=64), nullable=False),
        sa.Column(
            "webhook_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("part", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("handler", sa.String(length=32), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("crashes", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("ids_count", sa.Integer(), nullable=True),
        sa.Column("ids_missing", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_uon_tasks_integration_id_integrations"),
        ),
        sa.ForeignKeyConstraint(
            ["webhook_id"], ["uon_inbox.id"], name=op.f("fk_uon_tasks_webhook_id_uon_inbox")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uon_tasks")),
        sa.UniqueConstraint("webhook_id", "part", name="uq_uon_tasks_webhook_part"),
    )
    with op.batch_alter_table("uon_tasks", schema=None) as batch_op:
        batch_op.create_index("ix_uon_tasks_created", ["created_at"], unique=False)
        batch_op.create_index("ix_uon_tasks_finished", ["finished_at"], unique=False)
        batch_op.create_index(
            "ix_uon_tasks_integration_status", ["integration_id", "status"], unique=False
        )
        batch_op.create_index("ix_uon_tasks_status_created", ["status", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("uon_tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_uon_tasks_status_created")
        batch_op.drop_index("ix_uon_tasks_integration_status")
        batch_op.drop_index("ix_uon_tasks_finished")
        batch_op.drop_index("ix_uon_tasks_created")

    op.drop_table("uon_tasks")
    op.drop_table("uon_originations")
    with op.batch_alter_table("uon_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_uon_requests_customer")

    op.drop_table("uon_requests")
    with op.batch_alter_table("uon_phone_cache", schema=None) as batch_op:
        batch_op.drop_index("ix_uon_phone_cache_expires")

    op.drop_table("uon_phone_cache")
    with op.batch_alter_table("uon_inbox", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_uon_inbox_unprocessed",
            postgresql_where=sa.text("processed_at IS NULL"),
            sqlite_where=sa.text("processed_at IS NULL"),
        )
        batch_op.drop_index("ix_uon_inbox_external")

    op.drop_table("uon_inbox")
    with op.batch_alter_table("uon_calls", schema=None) as batch_op:
        batch_op.drop_index("ix_uon_calls_log_status")

    op.drop_table("uon_calls")
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_index("ix_customers_integration_phone_mobile")
        batch_op.drop_index("ix_customers_integration_phone")

    op.drop_table("customers")
