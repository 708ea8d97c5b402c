"""The `crm-sync` command line: database, integrations, secrets, emulators, health.

The CLI is the product's front door and drives every layer; no layer imports it.
"""

from __future__ import annotations

import click

from crm_sync.cli.db import db
from crm_sync.cli.integrations import integrations
from crm_sync.cli.operator_tokens import operator_tokens
from crm_sync.cli.replay import replay
from crm_sync.cli.secrets import secrets
from crm_sync.registry import layer_modules
from provider_emulators.cli import emulate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """crm-sync: keep the CRM database in step with ALLIO and other providers."""


main.add_command(db)
main.add_command(integrations)
main.add_command(secrets)
main.add_command(emulate)
main.add_command(operator_tokens)
main.add_command(replay)
# Each provider's own commands (`crm-sync iiko …`), from its `cli` module in the registry.
for _module in layer_modules("cli").values():
    for _command in _module.CLI_COMMANDS:
        main.add_command(_command)
