"""Alembic environment: runs against the engine crm_schema.engine builds."""

from __future__ import annotations

from alembic import context

from crm_schema.engine import make_engine
from crm_schema.tables import load_provider_tables

config = context.config


def run_migrations() -> None:
    """Migrate online; the URL comes from the Alembic config or DATABASE_URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or None)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


def _run(connection) -> None:  # noqa: ANN001
    context.configure(
        connection=connection,
        target_metadata=load_provider_tables(),
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
