"""A database engine made on first use and disposed with the receiver.

The routes off the hot path (operator API, OAuth callback, U-ON's own writes) each keep
one: nothing connects until a request needs it, and shutdown releases the pool.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy import Engine


class LazyEngine:
    """``make()`` on first use (once, whatever the threads), ``close()`` at shutdown."""

    def __init__(self, make: Callable[[], Engine]) -> None:
        self._make = make
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """The engine, made now if this is the first use."""
        with self._lock:
            if self._engine is None:
                self._engine = self._make()
            return self._engine

    def close(self) -> None:
        """Release the engine's connections (a later use makes a new one)."""
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None
