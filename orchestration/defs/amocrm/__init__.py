"""amoCRM in Dagster: RDESK lead updates and amoCRM contacts (seeds 002, 003)."""
