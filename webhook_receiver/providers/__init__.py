"""One module (or package) per provider: payload validation and the handlers of its
webhook routes.

Each module exposes `routes(receiver) -> list[BaseRoute]`; the app mounts the routes
of every provider in the registry (crm_sync.registry). A module may also offer operator
API routes (`operator_routes(api)` and its `OPERATOR_*` attributes; see
webhook_receiver.operator_api).
"""
