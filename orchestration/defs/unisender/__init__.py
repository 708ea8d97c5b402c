"""Unisender in Dagster: amoCRM contacts exported to e-mail lists (seed 003)."""
