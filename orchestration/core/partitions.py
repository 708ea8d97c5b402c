"""Daily partitions shared by every provider (UTC days, today included)."""

from __future__ import annotations

from datetime import date

from dagster import DailyPartitionsDefinition

PARTITIONS_START = "2025-01-01"

# end_offset=1 adds today's partition, which live runs fill as webhooks arrive.
daily_partitions = DailyPartitionsDefinition(
    start_date=PARTITIONS_START, timezone="UTC", end_offset=1, fmt="%Y-%m-%d"
)


def partition_day(partition_key: str) -> date:
    """The UTC day a partition key names."""
    return date.fromisoformat(partition_key)
