"""iiko task-queue checks, evaluated every 5 minutes (they turn red even when no run does)."""

from orchestration.core.checks import QueueChecksSpec, build_queue_checks
from orchestration.defs.iiko.assets import ORDERS
from orchestration.iiko.tasks import ORDER, QUEUE, SYNC

QUEUE_CHECKS = QueueChecksSpec(
    provider="iiko", queue=QUEUE, handler=SYNC, asset_keys={ORDER: ORDERS}
)
iiko_queue_checks, iiko_queue_health_sensor = build_queue_checks(QUEUE_CHECKS)
