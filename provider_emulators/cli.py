"""``crm-sync emulate …``: every registered provider's emulator and webhook sender.

Each provider's emulator package lists its click commands in `CLI_COMMANDS`
(`crm-sync emulate <provider>` serves its API; `<provider>-webhooks` sends webhooks).
"""

from __future__ import annotations

import click

from crm_sync.registry import layer_modules


@click.group()
def emulate() -> None:
    """Local provider emulators (quota, faults, request log) and webhook senders."""


for _module in layer_modules("emulator").values():
    for _command in _module.CLI_COMMANDS:
        emulate.add_command(_command)
