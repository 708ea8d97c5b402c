"""webhook_key → integration, kept in memory and refreshed in the background.

The CLI enables, disables and adds integrations directly in the database; a running
receiver sees the change at the next refresh (every `integrations_refresh_seconds`).
A failed refresh keeps the last good map. A key missing from the map gets one direct
lookup, rate-limited so that junk keys cannot hammer the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from ipaddress import IPv4Address, IPv6Address

from webhook_receiver.security import ip_allowed
from webhook_receiver.stores import IntegrationEntry, StoreUnavailable, WebhookStore

log = logging.getLogger(__name__)

_MAX_NEGATIVE_KEYS = 10_000


class TokenBucket:
    """`rate` events per second with bursts of `burst`."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._tokens, self._stamp = burst, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class IntegrationCache:
    """The in-memory map the hot path reads (see module docstring)."""

    def __init__(
        self, store: WebhookStore, refresh_seconds: float, lookups_per_second: float = 5.0
    ) -> None:
        self._store = store
        self._refresh_seconds = refresh_seconds
        self._map: dict[str, IntegrationEntry] = {}
        # provider -> its active entries, derived from the map when first asked for.
        self._active: dict[str, tuple[IntegrationEntry, ...]] = {}
        self._absent: set[str] = set()  # looked up since the last refresh, not found
        self._lookups = TokenBucket(lookups_per_second, max(1.0, 2 * lookups_per_second))
        self.loaded = False  # at least one refresh succeeded

    def get(self, webhook_key: str) -> IntegrationEntry | None:
        """The entry from the map (no I/O)."""
        return self._map.get(webhook_key)

    def active_entries(self, provider: str) -> tuple[IntegrationEntry, ...]:
        """Every active integration of ``provider`` in the map (no I/O), by id.

        For providers that identify an integration by a token rather than a URL key.
        """
        entries = self._active.get(provider)
        if entries is None:
            entries = tuple(
                sorted(
                    (e for e in self._map.values() if e.is_active and e.provider == provider),
                    key=lambda e: e.id,
                )
            )
            self._active[provider] = entries
        return entries

    def allowing(
        self, provider: str, address: IPv4Address | IPv6Address | None
    ) -> list[IntegrationEntry]:
        """The active integrations of ``provider`` whose `ip_allowlist` holds ``address``
        (no I/O), by id."""
        return [
            e
            for e in self.active_entries(provider)
            if e.ip_allowlist and ip_allowed(address, e.ip_allowlist)
        ]

    async def lookup(self, webhook_key: str) -> IntegrationEntry | None:
        """The map entry, else (rate-limited) one database lookup.

        Raises StoreUnavailable when the answer cannot be known: the map was never
        loaded, or the lookup failed.
        """
        entry = self._map.get(webhook_key)
        if entry is not None:
            return entry
        if webhook_key in self._absent:
            return None
        if not self._lookups.take():
            if not self.loaded:
                raise StoreUnavailable("integrations not loaded yet")
            return None
        entry = await self._store.find_integration(webhook_key)
        if entry is None:
            if len(self._absent) < _MAX_NEGATIVE_KEYS:
                self._absent.add(webhook_key)
        else:
            self._map[webhook_key] = entry
            self._active = {}
        return entry

    async def refresh(self) -> bool:
        """Reload the whole map; on failure keep the last good one. True on success."""
        try:
            fresh = await self._store.load_integrations()
        except StoreUnavailable:
            log.warning("integrations refresh failed; serving the last good map")
            return False
        self._map = fresh
        self._active = {}
        self._absent = set()
        if not self.loaded:
            log.info("integrations loaded: %d", len(fresh))
        self.loaded = True
        return True

    async def run(self) -> None:
        """Refresh forever (cancel to stop)."""
        while True:
            await asyncio.sleep(self._refresh_seconds)
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancel that
                # arrives as the refresh finishes, and the receiver's shutdown then waits
                # for this loop forever.
                async with asyncio.timeout(max(self._refresh_seconds, 5.0)):
                    await self.refresh()
            except TimeoutError:
                log.warning("integrations refresh timed out; serving the last good map")
            except Exception:  # never let the refresher die
                log.exception("integrations refresh crashed; serving the last good map")
