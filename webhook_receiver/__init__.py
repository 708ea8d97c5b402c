"""The webhook receiver: a thin Starlette app that validates provider webhooks and
stores them as raw rows (group-committed), answering 200 only after the commit.

`webhook_receiver.app:app` is the ASGI app; `create_app()` builds one for tests.
"""
