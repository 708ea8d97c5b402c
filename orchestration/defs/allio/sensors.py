"""ALLIO's webhook sensor: allio_webhook rows → allio_tasks → sync runs."""

from orchestration.allio.tasks import QUEUE, SYNC, take_webhooks
from orchestration.core.sensors import TaskSensorSpec, build_task_sensor
from orchestration.defs.allio.jobs import allio_sync_job

allio_webhook_sensor = build_task_sensor(
    TaskSensorSpec(provider="allio", queue=QUEUE, handler=SYNC, take_webhooks=take_webhooks),
    allio_sync_job,
    name="allio_webhook_sensor",
    description=(
        "Every 5 s: turns new ALLIO webhooks into tasks, hands back tasks of runs that "
        "died, and requests a sync run for each day with work waiting."
    ),
)
