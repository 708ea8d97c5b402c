"""U-ON's task sensor: uon_inbox rows → uon_tasks → `uon_sync` runs."""

from orchestration.core.sensors import TaskSensorSpec, build_task_sensor
from orchestration.defs.uon.jobs import uon_sync_job
from orchestration.uon.tasks import QUEUE, SYNC, take_webhooks

uon_inbox_sensor = build_task_sensor(
    TaskSensorSpec(provider="uon", queue=QUEUE, handler=SYNC, take_webhooks=take_webhooks),
    uon_sync_job,
    name="uon_inbox_sensor",
    description=(
        "Every 5 s: turns new U-ON webhooks and telephony call events into tasks, hands "
        "back tasks of runs that died, and requests a sync run for each day with work "
        "waiting."
    ),
)
