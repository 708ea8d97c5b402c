"""amoCRM and RDESK: inbox, tasks, leads, mock leads; integrations.attention; inbox mirror cursors

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "amocrm_inbox",
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
        sa.Column("action", sa.String(length=32), nullable=True),
        sa.Column("external_id", sa.String(length=64), nullable=True),
        sa.Column("rdesk_id", sa.String(length=64), nullable=True),
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
            name=op.f("fk_amocrm_inbox_integration_id_integrations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_amocrm_inbox")),
    )
    with op.batch_alter_table("amocrm_inbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_amocrm_inbox_lead", ["integration_id", "source", "external_id"], unique=False
        )
        batch_op.create_index(
            "ix_amocrm_inbox_unprocessed",
            ["id"],
            unique=False,
            postgresql_where=sa.text("processed_at IS NULL"),
            sqlite_where=sa.text("processed_at IS NULL"),
        )

    op.create_table(
        "amocrm_mock_leads",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "integration_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("rdesk_lead_id", sa.String(length=64), nullable=False),
        sa.Column("lead_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_amocrm_mock_leads_integration_id_integrations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_amocrm_mock_leads")),
        sa.UniqueConstraint(
            "integration_id", "rdesk_lead_id", name="uq_amocrm_mock_leads_integration_rdesk"
        ),
    )
    op.create_table(
        "inbox_mirror_cursors",
        sa.Column(
            "integration_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("inbox", sa.String(length=64), nullable=False),
        sa.Column("last_id", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_inbox_mirror_cursors_integration_id_integrations"),
        ),
        sa.PrimaryKeyConstraint("integration_id", "inbox", name=op.f("pk_inbox_mirror_cursors")),
    )
    op.create_table(
        "leads",
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
        sa.Column("name", sa.String(length=500), nullable=True),
        sa.Column("price", sa.BigInteger(), nullable=True),
        sa.Column("pipeline_id", sa.BigInteger(), nullable=True),
        sa.Column("status_id", sa.BigInteger(), nullable=True),
        sa.Column("rdesk_lead_id", sa.String(length=64), nullable=True),
        sa.Column(
            "last_update_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_leads_integration_id_integrations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leads")),
        sa.UniqueConstraint("integration_id", "external_id", name="uq_leads_integration_external"),
    )
    op.create_table(
        "amocrm_tasks",
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
            name=op.f("fk_amocrm_tasks_integration_id_integrations"),
        ),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["amocrm_inbox.id"],
            name=op.f("fk_amocrm_tasks_webhook_id_amocrm_inbox"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_amocrm_tasks")),
        sa.UniqueConstraint("webhook_id", "part", name="uq_amocrm_tasks_webhook_part"),
    )
    with op.batch_alter_table("amocrm_tasks", schema=None) as batch_op:
        batch_op.create_index("ix_amocrm_tasks_created", ["created_at"], unique=False)
        batch_op.create_index("ix_amocrm_tasks_finished", ["finished_at"], unique=False)
        batch_op.create_index(
            "ix_amocrm_tasks_integration_status", ["integration_id", "status"], unique=False
        )
        batch_op.create_index(
            "ix_amocrm_tasks_status_created", ["status", "created_at"], unique=False
        )

    # Plain ALTER TABLE (SQLite >= 3.35 adds and drops columns in place): a batch copy of
    # `integrations` would drop the table every other one references.
    op.add_column("integrations", sa.Column("attention", sa.Text(), nullable=True))
    op.add_column("integrations", sa.Column("attention_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("integrations", "attention_at")
    op.drop_column("integrations", "attention")

    with op.batch_alter_table("amocrm_tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_amocrm_tasks_status_created")
        batch_op.drop_index("ix_amocrm_tasks_integration_status")
        batch_op.drop_index("ix_amocrm_tasks_finished")
        batch_op.drop_index("ix_amocrm_tasks_created")

    op.drop_table("amocrm_tasks")
    op.drop_table("leads")
    op.drop_table("inbox_mirror_cursors")
    op.drop_table("amocrm_mock_leads")
    with op.batch_alter_table("amocrm_inbox", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_amocrm_inbox_unprocessed",
            postgresql_where=sa.text("processed_at IS NULL"),
            sqlite_where=sa.text("processed_at IS NULL"),
        )
        batch_op.drop_index("ix_amocrm_inbox_lead")

    op.drop_table("amocrm_inbox")
