"""U-ON task-queue checks, evaluated every 5 minutes (they turn red even when no run does)."""

from orchestration.core.checks import QueueChecksSpec, build_queue_checks
from orchestration.defs.uon.assets import CALLS, CUSTOMERS, REQUESTS
from orchestration.uon.tasks import CALL, CUSTOMER, QUEUE, REQUEST, SYNC

QUEUE_CHECKS = QueueChecksSpec(
    provider="uon",
    queue=QUEUE,
    handler=SYNC,
    asset_keys={CALL: CALLS, CUSTOMER: CUSTOMERS, REQUEST: REQUESTS},
)
uon_queue_checks, uon_queue_health_sensor = build_queue_checks(QUEUE_CHECKS)
