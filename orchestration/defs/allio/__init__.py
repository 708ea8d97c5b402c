"""ALLIO in Dagster: reserves, deal cards and contacts from ALLIO webhooks (seed 000)."""
