"""Run tags crm-sync reads and writes (the UI shows and filters by them)."""

from __future__ import annotations

from collections.abc import Mapping

MODE = "crm/mode"  # live | reconcile | backfill
INTEGRATION = "crm/integration"  # narrows a run to integration ids ("3" or "3,5")
LIVE_SYNC = "crm/live-sync"  # concurrency key: one live run per provider
BATCH_SYNC = "crm/batch-sync"  # concurrency key for reconcile / backfill runs
BACKFILL = "dagster/backfill"


class RunTagError(ValueError):
    """A crm/* run tag that cannot be understood."""


def run_mode(tags: Mapping[str, str]) -> str:
    """The sync mode of a run; backfills and manual launches re-sync their day."""
    if BACKFILL in tags:
        return "backfill"
    mode = tags.get(MODE, "backfill")
    if mode not in ("live", "reconcile", "backfill"):
        raise RunTagError(f"{MODE} must be live, reconcile or backfill, not '{mode}'")
    return mode


def integration_filter(tags: Mapping[str, str]) -> set[int] | None:
    """Integration ids from the `crm/integration` tag (None = all integrations)."""
    raw = tags.get(INTEGRATION)
    if raw is None or not raw.strip():
        return None
    try:
        return {int(part) for part in raw.split(",") if part.strip()}
    except ValueError:
        raise RunTagError(f"{INTEGRATION} must be integration ids like '3' or '3,5'") from None


def sync_tags(provider: str, mode: str) -> dict[str, str]:
    """Tags for a run crm-sync launches itself."""
    key = LIVE_SYNC if mode == "live" else BATCH_SYNC
    return {MODE: mode, key: provider}
