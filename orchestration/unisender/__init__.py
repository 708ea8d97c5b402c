"""Unisender export: amoCRM contacts sent to an account's e-mail lists (seed 003)."""
