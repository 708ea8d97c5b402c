"""Provider-specific `crm-sync` commands: one module per provider, listed in its spec
(layer `cli`), each exposing its click commands as `CLI_COMMANDS`."""
