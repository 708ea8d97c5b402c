"""ALLIO task-queue checks, evaluated every 5 minutes (they turn red even when no run does)."""

from orchestration.allio.tasks import QUEUE, SYNC
from orchestration.core.checks import QueueChecksSpec, build_queue_checks
from orchestration.defs.allio.assets import DEALCARDS, RESERVES

QUEUE_CHECKS = QueueChecksSpec(
    provider="allio",
    queue=QUEUE,
    handler=SYNC,
    asset_keys={"reserve": RESERVES, "dealcard": DEALCARDS},
)
allio_queue_checks, allio_queue_health_sensor = build_queue_checks(QUEUE_CHECKS)
