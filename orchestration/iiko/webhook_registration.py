"""iiko webhook registration: `webhooks/update_settings` per organization, checked daily.

`register` tells iiko, for every organization of an integration, where to post
webhooks (`webHooksUri`), the authToken to send with them (the integration's
webhook token) and which events (`webHooksFilter`, the seed's set: every delivery
order status, every item status and errors; table orders; reserves; stop lists;
personal shifts). Each organization's outcome is one `webhook_configs` row:
`last_registration`, `registration_status` (registered | failed | drift),
`registration_error`, and the authToken sealed like credentials.

`check` reads `webhooks/settings` and compares it with what we want; on drift it
records `drift` and registers again (unless told only to look).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Engine, select, update

from crm_schema.engine import dialect_insert
from crm_schema.integrations import Integration
from crm_schema.providers.iiko import webhook_configs
from crm_schema.task_queue import now_utc
from crm_sync import encryption
from crm_sync.providers.iiko import ORDER_STATUSES as ORDER_STATUS_NAMES
from crm_sync.redaction import redact_body
from crm_sync.settings import get_settings
from orchestration.resources.errors import ProviderError

REGISTERED, FAILED, DRIFT = "registered", "failed", "drift"
ERROR_LIMIT = 1000

ORDER_STATUSES = list(ORDER_STATUS_NAMES)
ITEM_STATUSES = ["Added", "PrintedNotCooking", "CookingStarted", "CookingCompleted", "Served"]
TABLE_ORDER_STATUSES = ["New", "Bill", "Closed", "Deleted"]

# The seed's filters, in the spec's `WebHooksFilter` shape.
WEBHOOKS_FILTER: dict[str, Any] = {
    "deliveryOrderFilter": {
        "orderStatuses": ORDER_STATUSES,
        "itemStatuses": ITEM_STATUSES,
        "errors": True,
    },
    "tableOrderFilter": {
        "orderStatuses": TABLE_ORDER_STATUSES,
        "itemStatuses": ITEM_STATUSES,
        "errors": True,
    },
    "reserveFilter": {"updates": True, "errors": True},
    "stopListUpdateFilter": {"updates": True},
    "personalShiftFilter": {"updates": True},
}


class RegistrationError(ValueError):
    """An integration that cannot be registered as configured (clear message)."""


@dataclass(frozen=True)
class OrganizationResult:
    """What happened for one organization."""

    organization_id: str
    status: str  # registered | failed | drift (drift: seen, not re-registered)
    action: str  # register | re-register | check (drift seen, left) | unchanged
    webhook_url: str
    error: str | None = None
    differences: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe (no secrets: the authToken is never part of it)."""
        data = asdict(self)
        data["differences"] = list(self.differences)
        return data


def webhook_url_for(integration: Integration, url: str | None = None) -> str:
    """The URL iiko should post to: ``url``, else the integration's `webhook_url` setting,
    else CRM_SYNC_RECEIVER_PUBLIC_BASE_URL + its webhook path."""
    chosen = url or integration.settings.get("webhook_url")
    if chosen:
        return str(chosen)
    if not integration.webhook_path:
        raise RegistrationError(f"integration {integration.id} has no webhook path")
    return get_settings().receiver_public_base_url.rstrip("/") + integration.webhook_path


def wanted_settings(organization_id: str, url: str, auth_token: str) -> dict[str, Any]:
    """The `webhooks/update_settings` body for one organization."""
    return {
        "organizationId": organization_id,
        "webHooksUri": url,
        "authToken": auth_token,
        "webHooksFilter": WEBHOOKS_FILTER,
    }


def _normal(value: Any) -> Any:
    """A filter with unset parts dropped and lists sorted, to compare meaning not form."""
    if isinstance(value, dict):
        out = {k: _normal(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, False, [], {})}
    if isinstance(value, list):
        return sorted(_normal(v) for v in value)
    return value


def differences(current: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """What iiko's `webhooks/settings` lacks of ``wanted`` (names only: no secrets)."""
    found = []
    if (current.get("webHooksUri") or "") != wanted["webHooksUri"]:
        found.append("webHooksUri")
    if (current.get("authToken") or "") != wanted["authToken"]:
        found.append("authToken")
    have = _normal(current.get("webHooksFilter") or {})
    want = _normal(wanted["webHooksFilter"])
    for key in sorted(set(have) | set(want)):
        if have.get(key) != want.get(key):
            found.append(f"webHooksFilter.{key}")
    return found


def _token(integration: Integration) -> str:
    token = integration.webhook_secret or ""
    if not token:
        raise RegistrationError(
            f"integration {integration.id} has no webhook token (authToken): set it with "
            "`crm-sync integrations update ID --webhook-token T`"
        )
    return token


def _record(
    engine: Engine,
    integration: Integration,
    organization_id: str,
    url: str,
    token: str,
    *,
    status: str,
    error: str | None,
    registered: bool = False,
) -> None:
    now = now_utc()
    values: dict[str, Any] = {
        "webhook_url": url,
        "registration_status": status,
        "registration_error": error,
        "last_checked_at": now,
        "updated_at": now,
        "is_active": True,
    }
    if registered:
        values |= {
            "last_registration": now,
            "auth_token": encryption.encrypt(token),
            "webhooks_filter": WEBHOOKS_FILTER,
        }
    with engine.begin() as conn:
        insert = dialect_insert(conn)(webhook_configs).values(
            integration_id=integration.id, organization_id=organization_id, **values
        )
        conn.execute(
            insert.on_conflict_do_update(
                index_elements=["integration_id", "organization_id"], set_=values
            )
        )


def _clean(text: str, token: str) -> str:
    return redact_body(text, [token], ERROR_LIMIT) or ""


def _organizations(integration: Integration) -> list[str]:
    orgs = [str(o) for o in integration.settings.get("organization_ids") or []]
    if not orgs:
        raise RegistrationError(f"integration {integration.id} has no organization_ids")
    return orgs


def register(
    engine: Engine, integration: Integration, client: Any, *, url: str | None = None
) -> list[OrganizationResult]:
    """`webhooks/update_settings` for every organization; each outcome recorded."""
    token = _token(integration)
    target = webhook_url_for(integration, url)
    results = []
    for org in _organizations(integration):
        results.append(_register_one(engine, integration, client, org, target, token))
    return results


def _register_one(
    engine: Engine,
    integration: Integration,
    client: Any,
    org: str,
    url: str,
    token: str,
    action: str = "register",
    diffs: tuple[str, ...] = (),
) -> OrganizationResult:
    try:
        client.call("webhooks/update_settings", wanted_settings(org, url, token))
    except ProviderError as exc:
        error = _clean(f"webhooks/update_settings failed: {exc}", token)
        _record(engine, integration, org, url, token, status=FAILED, error=error)
        return OrganizationResult(org, FAILED, action, url, error, diffs)
    _record(engine, integration, org, url, token, status=REGISTERED, error=None, registered=True)
    return OrganizationResult(org, REGISTERED, action, url, None, diffs)


def check(
    engine: Engine,
    integration: Integration,
    client: Any,
    *,
    url: str | None = None,
    fix: bool = True,
) -> list[OrganizationResult]:
    """Compare `webhooks/settings` with what we want; re-register on drift when ``fix``."""
    token = _token(integration)
    target = webhook_url_for(integration, url)
    results = []
    for org in _organizations(integration):
        wanted = wanted_settings(org, target, token)
        try:
            current = client.call("webhooks/settings", {"organizationId": org})
        except ProviderError as exc:
            error = _clean(f"webhooks/settings failed: {exc}", token)
            _record(
                engine,
                integration,
                org,
                target,
                token,
                status=FAILED,
                error=error,
                registered=False,
            )
            results.append(OrganizationResult(org, FAILED, "check", target, error))
            continue
        diffs = tuple(differences(current, wanted))
        if not diffs:
            _mark_checked(engine, integration, org, target, token)
            results.append(OrganizationResult(org, REGISTERED, "unchanged", target))
            continue
        error = "iiko's webhook settings differ in: " + ", ".join(diffs)
        _record(
            engine, integration, org, target, token, status=DRIFT, error=error, registered=False
        )
        if not fix:
            results.append(OrganizationResult(org, DRIFT, "check", target, error, diffs))
            continue
        results.append(
            _register_one(engine, integration, client, org, target, token, "re-register", diffs)
        )
    return results


def _mark_checked(engine: Engine, integration: Integration, org: str, url: str, token: str) -> None:
    """Settings match: keep the row, or create it (registered outside crm-sync)."""
    c = webhook_configs.c
    now = now_utc()
    with engine.begin() as conn:
        changed = conn.execute(
            update(webhook_configs)
            .where(c.integration_id == integration.id, c.organization_id == org)
            .values(
                registration_status=REGISTERED,
                registration_error=None,
                last_checked_at=now,
                updated_at=now,
            )
        ).rowcount
    if not changed:
        _record(
            engine, integration, org, url, token, status=REGISTERED, error=None, registered=True
        )


def configs(engine: Engine, integration_id: int) -> list[dict[str, Any]]:
    """The integration's `webhook_configs` rows, JSON-safe, the authToken left out."""
    c = webhook_configs.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(webhook_configs)
            .where(c.integration_id == integration_id)
            .order_by(c.organization_id)
        ).all()
    out = []
    for row in rows:
        data = {k: v for k, v in row._mapping.items() if k != "auth_token"}
        out.append({k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in data.items()})
    return out


def failures(results: list[OrganizationResult]) -> list[OrganizationResult]:
    """The organizations whose registration failed."""
    return [r for r in results if r.status == FAILED]
