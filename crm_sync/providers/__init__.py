"""One module per provider: its `ProviderSpec` (registered in crm_sync.registry)."""
