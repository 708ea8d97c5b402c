"""amoCRM's task sensors: amocrm_inbox rows → amocrm_tasks → `amocrm_sync` runs.

The generic sensor requests runs for one handler's due tasks, so there are two (RDESK
updates and contacts); both ingest the whole inbox (idempotent) and request the same
job, whose runs drain both handlers.
"""

from orchestration.amocrm.tasks import CONTACTS, QUEUE, RDESK, take_webhooks
from orchestration.core.sensors import TaskSensorSpec, build_task_sensor
from orchestration.defs.amocrm.jobs import amocrm_sync_job

amocrm_webhook_sensor = build_task_sensor(
    TaskSensorSpec(provider="amocrm", queue=QUEUE, handler=RDESK, take_webhooks=take_webhooks),
    amocrm_sync_job,
    name="amocrm_webhook_sensor",
    description=(
        "Every 5 s: turns new RDESK updates and amoCRM contact webhooks into tasks, hands "
        "back tasks of runs that died, and requests a sync run for each day with RDESK "
        "updates waiting."
    ),
)

amocrm_contacts_sensor = build_task_sensor(
    TaskSensorSpec(provider="amocrm", queue=QUEUE, handler=CONTACTS, take_webhooks=take_webhooks),
    amocrm_sync_job,
    name="amocrm_contacts_sensor",
    description=(
        "Every 5 s: as amocrm_webhook_sensor, for days with amoCRM contact tasks waiting."
    ),
)
