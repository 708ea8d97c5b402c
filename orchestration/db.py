"""One engine per (database URL, process), shared by every resource and client."""

from __future__ import annotations

import os
import threading

from sqlalchemy import Engine

from crm_schema.engine import make_engine
from crm_sync.settings import get_settings

_engines: dict[tuple[str, int], Engine] = {}
_lock = threading.Lock()


def shared_engine(database_url: str | None = None) -> Engine:
    """The process-wide engine for ``database_url`` (default: ``DATABASE_URL``)."""
    url = database_url or get_settings().database_url
    key = (url, os.getpid())
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = make_engine(url)
        return engine


def dispose_engines() -> None:
    """Close every shared engine of this process (tests, shutdown)."""
    with _lock:
        for (_, pid), engine in list(_engines.items()):
            if pid == os.getpid():
                engine.dispose()
        _engines.clear()
