"""U-ON.Travel in Dagster (seed 004): clients, calls and requests from webhooks and call
events, the call log to U-ON, the daily requests reconcile and cache purge."""
