"""generic task queue (parts, handlers, lease, retries, crashes, outcomes); provider tokens;
run heartbeats

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 23:40:00
"""

from __future__ import annotations

import json
from datetime import timedelta

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _new_columns() -> list[sa.Column]:
    return [
        sa.Column("part", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("handler", sa.String(length=32), nullable=True),
        sa.Column("crashes", sa.Integer(), server_default="0", nullable=False),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ids_count", sa.Integer(), nullable=True),
        sa.Column("ids_missing", sa.Integer(), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "run_heartbeats",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_heartbeats")),
    )
    op.create_table(
        "provider_tokens",
        sa.Column(
            "integration_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("access_token", sa.Text(), nullable=True),
        sa.Column("refresh_token", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lock_owner", sa.String(length=64), nullable=True),
        sa.Column("lock_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_provider_tokens_integration_id_integrations"),
        ),
        sa.PrimaryKeyConstraint("integration_id", "name", name=op.f("pk_provider_tokens")),
    )
    with op.batch_alter_table("allio_tasks", schema=None) as batch_op:
        for column in _new_columns():
            batch_op.add_column(column)
        batch_op.drop_constraint("uq_allio_tasks_webhook_id", type_="unique")
        batch_op.create_unique_constraint("uq_allio_tasks_webhook_part", ["webhook_id", "part"])
        batch_op.create_index("ix_allio_tasks_finished", ["finished_at"], unique=False)

    tasks = sa.table(
        "allio_tasks",
        sa.column("id", sa.Integer),
        sa.column("entity", sa.String),
        sa.column("command", sa.String),
        sa.column("status", sa.SmallInteger),
        sa.column("handler", sa.String),
        sa.column("error", sa.Text),
        sa.column("external_ids", sa.Text),
        sa.column("ids_count", sa.Integer),
        sa.column("claimed_at", sa.DateTime(timezone=True)),
        sa.column("lease_expires_at", sa.DateTime(timezone=True)),
        sa.column("finished_at", sa.DateTime(timezone=True)),
    )
    conn = op.get_bind()
    is_del = tasks.c.command.like("%\\_DEL", escape="\\")
    syncable = tasks.c.entity.in_(["reserve", "dealcard"])
    conn.execute(sa.update(tasks).where(syncable, is_del).values(handler="delete"))
    conn.execute(sa.update(tasks).where(syncable, sa.not_(is_del)).values(handler="sync"))
    # Tasks no handler processes used to wait at 0 forever; they end now, with the reason.
    for row in conn.execute(
        sa.select(tasks.c.id, tasks.c.command).where(tasks.c.handler.is_(None))
    ).all():
        conn.execute(
            sa.update(tasks)
            .where(tasks.c.id == row.id, tasks.c.status.in_([0, 1]))
            .values(
                status=3,
                error=f"unknown command {row.command}",
                finished_at=sa.func.current_timestamp(),
            )
        )
    # Open tasks get their id count; those in progress keep the old 10-minute lease.
    for row in conn.execute(
        sa.select(tasks.c.id, tasks.c.claimed_at, tasks.c.external_ids).where(
            tasks.c.status.in_([0, 1])
        )
    ).all():
        try:
            count = len(json.loads(row.external_ids))
        except (TypeError, ValueError):
            count = 0
        values: dict[str, object] = {"ids_count": count}
        if row.claimed_at is not None:
            values["lease_expires_at"] = row.claimed_at + timedelta(minutes=10)
        conn.execute(sa.update(tasks).where(tasks.c.id == row.id).values(**values))


def downgrade() -> None:
    op.drop_table("provider_tokens")
    op.drop_table("run_heartbeats")
    with op.batch_alter_table("allio_tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_allio_tasks_finished")
        batch_op.drop_constraint("uq_allio_tasks_webhook_part", type_="unique")
        batch_op.create_unique_constraint("uq_allio_tasks_webhook_id", ["webhook_id"])
        for column in reversed(_new_columns()):
            batch_op.drop_column(column.name)
