"""crm-sync's front door: settings, the provider registry, redaction and the CLI.

`settings`, `registry`, `providers` and `redaction` are shared by every layer and
import none of them; `crm_sync.cli` drives every layer and is imported by none.
"""
