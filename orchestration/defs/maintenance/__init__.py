"""Housekeeping of the CRM database that belongs to no provider (call-log retention)."""
