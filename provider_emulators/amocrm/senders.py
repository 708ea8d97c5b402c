"""Senders: amoCRM contact webhooks (form-encoded) and RDESK ``booked`` / ``mc`` arrays."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from provider_emulators.amocrm import records
from provider_emulators.sender import post_form_async, post_json_async

WEBHOOK_KEY_HEADER = "X-Webhook-Key"


def contact_webhook_forms(
    count: int,
    action: str = "add",
    *,
    start_id: int = 1,
    contact_ids: Sequence[int] | None = None,
    per_webhook: int = 1,
    subdomain: str = records.DEFAULT_SUBDOMAIN,
) -> Iterator[dict[str, str]]:
    """``count`` webhooks of ``per_webhook`` contacts each (ids from ``start_id``, or
    ``contact_ids`` cycled)."""
    if count < 0 or per_webhook < 1:
        raise ValueError("count must be >= 0 and per_webhook >= 1")
    n = 0
    for _ in range(count):
        if contact_ids:
            ids = [contact_ids[(n + k) % len(contact_ids)] for k in range(per_webhook)]
        else:
            ids = [start_id + n + k for k in range(per_webhook)]
        n += per_webhook
        yield records.contact_webhook_form(ids, action, subdomain=subdomain)


async def send_contact_webhooks_async(
    url: str,
    count: int = 1,
    action: str = "add",
    *,
    start_id: int = 1,
    contact_ids: Sequence[int] | None = None,
    per_webhook: int = 1,
    subdomain: str = records.DEFAULT_SUBDOMAIN,
    concurrency: int = 1,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Post ``count`` amoCRM contact webhooks to ``url`` (the secret lives in the URL).

    Returns the summary of :func:`provider_emulators.sender.post_bodies_async`.
    """
    forms = contact_webhook_forms(
        count,
        action,
        start_id=start_id,
        contact_ids=contact_ids,
        per_webhook=per_webhook,
        subdomain=subdomain,
    )
    return await post_form_async(url, forms, concurrency=concurrency, timeout=timeout)


def send_contact_webhooks(url: str, count: int = 1, action: str = "add", **kwargs: Any) -> dict:
    """Blocking :func:`send_contact_webhooks_async` (not inside a running event loop)."""
    return asyncio.run(send_contact_webhooks_async(url, count, action, **kwargs))


def rdesk_batches(
    endpoint: Literal["booked", "mc"],
    count: int,
    *,
    lead_id: int | str | None = None,
    start_id: int = 1,
    batch_size: int = 1,
) -> Iterator[list[dict[str, Any]]]:
    """``count`` RDESK elements (see :func:`records.rdesk_updates`) in arrays of
    ``batch_size``."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    items = records.rdesk_updates(endpoint, count, lead_id=lead_id, start_id=start_id)
    for n in range(0, len(items), batch_size):
        yield items[n : n + batch_size]


async def send_rdesk_async(
    url: str,
    endpoint: Literal["booked", "mc"],
    count: int = 1,
    *,
    lead_id: int | str | None = None,
    start_id: int = 1,
    batch_size: int = 1,
    key: str | None = None,
    concurrency: int = 1,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Post ``count`` RDESK updates to ``url`` as JSON arrays of ``batch_size`` elements.

    ``key`` goes in ``X-Webhook-Key`` (for ``/zdrav/booked|mc``); the summary as
    :func:`provider_emulators.sender.post_json_async`.
    """
    batches = rdesk_batches(
        endpoint, count, lead_id=lead_id, start_id=start_id, batch_size=batch_size
    )
    headers = {WEBHOOK_KEY_HEADER: key} if key else None
    return await post_json_async(
        url, batches, concurrency=concurrency, timeout=timeout, headers=headers
    )


def send_rdesk(
    url: str, endpoint: Literal["booked", "mc"], count: int = 1, **kwargs: Any
) -> dict[str, Any]:
    """Blocking :func:`send_rdesk_async` (not inside a running event loop)."""
    return asyncio.run(send_rdesk_async(url, endpoint, count, **kwargs))
