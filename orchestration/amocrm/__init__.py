"""amoCRM sync: the API v4 client, RDESK lead updates and contacts."""
