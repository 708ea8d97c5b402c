"""ALLIO sync: mapping, task processing and delete control."""
