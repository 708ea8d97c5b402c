"""iiko in Dagster: delivery orders from webhooks and the Cloud API (seed 001)."""
