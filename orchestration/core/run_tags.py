"""Run tags crm-sync reads and writes (the UI shows and filters by them)."""

from __future__ import annotations

from collections.abc import Mapping

MODE = "crm/mode"  # live | reconcile | backfill
INTEGRATION = "crm/integration"  # narrows a run to integration ids ("3" or "3,5")
LIVE_SYNC = "crm/live-sync"  # concurrency key: one live run for today per provider
BATCH_SYNC = "crm/batch-sync"  # concurrency key: other days, reconciles, backfills
SYNC_KEY = "crm/sync-key"  # the sensor's request key; a failed run's key gets a retry suffix
PROVIDER = "crm/provider"
BACKFILL = "dagster/backfill"
PARTITION = "dagster/partition"


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


def sync_tags(provider: str, mode: str, *, today: bool = True) -> dict[str, str]:
    """Tags for a run crm-sync launches itself.

    Only today's live run holds the provider's live slot; runs for other days share
    the batch slots, so a day left behind never waits for today's run to end.
    """
    key = LIVE_SYNC if mode == "live" and today else BATCH_SYNC
    return {MODE: mode, key: provider, PROVIDER: provider}


def lane_for(mode: str, *, today: bool) -> str:
    """The rate-limit lane of a run: only today's live run takes the full quota."""
    if mode == "live":
        return "live" if today else "reconcile"
    return mode
