"""Dagster definitions, one folder per provider, loaded with `load_from_defs_folder`.

Each provider folder has `assets.py`, `jobs.py`, `sensors.py`, `schedules.py`,
`checks.py` and `resources.py`; its pure sync logic lives in `orchestration/<provider>/`.
`maintenance/` holds what belongs to no provider (call-log retention).
Resources are not module-level objects here (they need the database URL): each
`resources.py` offers `build_resources(database_url)` and `orchestration.definitions`
binds them.
"""
