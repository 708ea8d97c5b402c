"""U-ON.Travel in Dagster: the client, the task handler, the call log (seed 004)."""
