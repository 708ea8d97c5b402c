"""One module per provider: its inbox, task and entity tables (on the shared metadata)."""
