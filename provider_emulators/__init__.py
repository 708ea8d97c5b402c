"""Local stand-ins for provider APIs (quota, faults, request log, webhook senders)."""
