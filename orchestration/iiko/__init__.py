"""iiko sync: the Cloud API client, order mapping, webhook tasks and the order sync."""
