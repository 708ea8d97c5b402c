"""Dagster assets, one module per provider."""
