"""Provider-agnostic Dagster pieces: the sync engine, the task sensor, checks, run tags."""
