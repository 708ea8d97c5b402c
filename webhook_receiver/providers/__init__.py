"""One module per provider: payload validation and the handlers of its webhook routes.

Each module exposes `routes(receiver) -> list[BaseRoute]`; the app mounts the routes
of every provider in the registry (crm_sync.registry).
"""
