"""Unisender: the export state of each amoCRM contact per account

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "unisender_contacts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "integration_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("list_ids", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name=op.f("fk_unisender_contacts_contact_id_contacts")
        ),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_unisender_contacts_integration_id_integrations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_unisender_contacts")),
        sa.UniqueConstraint(
            "integration_id", "contact_id", name="uq_unisender_contacts_integration_contact"
        ),
    )
    with op.batch_alter_table("unisender_contacts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_unisender_contacts_status", ["integration_id", "status"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("unisender_contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_unisender_contacts_status")

    op.drop_table("unisender_contacts")
