"""iiko's webhook sensor: webhook_events rows → iiko_tasks → sync runs."""

from orchestration.core.sensors import TaskSensorSpec, build_task_sensor
from orchestration.defs.iiko.jobs import iiko_sync_job
from orchestration.iiko.tasks import QUEUE, SYNC, take_webhooks

iiko_webhook_sensor = build_task_sensor(
    TaskSensorSpec(provider="iiko", queue=QUEUE, handler=SYNC, take_webhooks=take_webhooks),
    iiko_sync_job,
    name="iiko_webhook_sensor",
    description=(
        "Every 5 s: turns new iiko webhook events into tasks, hands back tasks of runs "
        "that died, and requests a sync run for each day with work waiting."
    ),
)
