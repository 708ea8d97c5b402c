"""Everything an iiko emulator remembers: tokens, orders, commands, wallets, webhook settings.

All methods are synchronous and take one lock, so the ASGI handlers (one event loop)
and tests reading the state directly see consistent data. Errors a caller of the Cloud
API would get are raised as :class:`IikoError` (HTTP status, description, code).
"""

from __future__ import annotations

import copy
import hmac
import secrets
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from provider_emulators.iiko import records
from provider_emulators.iiko.records import FINAL_STATUSES, fmt_time, kopecks, money, utc_now

MAX_ORDER_IDS = 200
MAX_COMMANDS = 100_000
COMMAND_PATHS = (
    "deliveries/update_order_delivery_status",
    "deliveries/update_order_courier",
    "deliveries/change_payments",
    "deliveries/cancel",
    "deliveries/close",
)


class IikoError(Exception):
    """An error answer: ``{"correlationId", "errorDescription", "error"}`` with ``status``."""

    def __init__(self, status: int, description: str, code: str | None = None) -> None:
        super().__init__(description)
        self.status, self.description, self.code = status, description, code


class CommandFailed(Exception):
    """A command that iiko accepted but cannot carry out (its status becomes Error)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Command:
    """One command (``deliveries/...``) and its outcome as ``commands/status`` reports it."""

    correlation_id: str
    organization_id: str
    path: str
    body: dict[str, Any]
    created: float  # monotonic
    received_at: float  # unix time
    due: float  # monotonic: when it settles
    state: str = "InProgress"
    exception: dict[str, Any] | None = None
    settled_at: float | None = None

    @property
    def order_id(self) -> str | None:
        return self.body.get("orderId")

    def status_body(self) -> dict[str, Any]:
        if self.state != "Error":
            return {"state": self.state}
        message = (self.exception or {}).get("message")
        return {"state": "Error", "exception": self.exception, "errorReason": message}

    def summary(self) -> dict[str, Any]:
        return {
            "correlationId": self.correlation_id,
            "organizationId": self.organization_id,
            "path": self.path,
            "orderId": self.order_id,
            "body": self.body,
            "state": self.state,
            "exception": self.exception,
            "receivedAt": self.received_at,
            "settledAt": self.settled_at,
        }


@dataclass
class Hold:
    transaction_id: str
    organization_id: str
    customer_id: str
    wallet_id: str
    amount: int  # kopecks
    active: bool = True


@dataclass
class Push:
    """Webhook events to post after a change (when change pushes are on)."""

    url: str
    token: str | None
    events: list[dict[str, Any]] = field(default_factory=list)


class IikoState:
    """The emulator's memory (see the module docstring)."""

    def __init__(
        self,
        api_login: str,
        token_ttl: float,
        command_delay: float,
        webhook_url: str | None = None,
        auth_token: str | None = None,
        organizations: Iterable[str] | None = None,
        push_changes: bool = False,
        api_login_name: str = "crm-sync",
    ) -> None:
        self.api_login = api_login
        self.token_ttl = token_ttl
        self.command_delay = command_delay
        self.default_webhook = (webhook_url, auth_token) if webhook_url else None
        self.organizations = frozenset(organizations) if organizations else None
        self.push_changes = push_changes
        self.api_login_name = api_login_name
        self.lock = threading.RLock()
        self.tokens: dict[str, float] = {}
        self.orders: dict[str, dict[str, Any] | None] = {}
        self.order_revision: dict[str, int] = {}
        self.revision = 0
        self.failing: set[str] = set()
        self.commands: dict[str, Command] = {}
        self.wallets: dict[tuple[str, str], int] = {}
        self.holds: dict[str, Hold] = {}
        self.webhooks: dict[str, dict[str, Any]] = {}

    # ---- auth ---------------------------------------------------------------------------

    def issue_token(self, api_login: str) -> str:
        if not hmac.compare_digest(api_login.encode(), self.api_login.encode()):
            raise IikoError(401, "Login is not authorized: unknown apiLogin", "Unauthorized")
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self.lock:
            self.tokens = {t: exp for t, exp in self.tokens.items() if exp > now}
            self.tokens[token] = now + self.token_ttl
        return token

    def check_token(self, authorization: str | None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise IikoError(
                401, "Authorization header with a Bearer token is required", "Unauthorized"
            )
        with self.lock:
            expires = self.tokens.get(token.strip())
        if expires is None:
            raise IikoError(401, "Token is invalid", "Unauthorized")
        if expires <= time.monotonic():
            raise IikoError(401, "Token has expired", "Unauthorized")

    def expire_tokens(self) -> int:
        with self.lock:
            count = len(self.tokens)
            self.tokens.clear()
        return count

    def check_organization(self, organization_id: str) -> None:
        if self.organizations is not None and organization_id not in self.organizations:
            raise IikoError(
                400,
                f"Organization {organization_id} is not available to this apiLogin",
                "OrganizationUnregistered",
            )

    # ---- orders -------------------------------------------------------------------------

    def _current(self, order_id: str, organization_id: str) -> dict[str, Any] | None:
        """The order as it is now (stored or generated), or None when it is not there."""
        if order_id in self.orders:
            info = self.orders[order_id]
            if info is None or info["organizationId"] != organization_id:
                return None
            return info
        return records.make_order(order_id, organization_id)

    def get_order(self, order_id: str, organization_id: str) -> dict[str, Any] | None:
        with self.lock:
            found = self._current(order_id, organization_id)
            return copy.deepcopy(found) if found is not None else None

    def stored_order(self, order_id: str) -> dict[str, Any] | None:
        """An order the admin API or a command stored (None: generated only, or removed)."""
        with self.lock:
            found = self.orders.get(order_id)
            return copy.deepcopy(found) if found is not None else None

    def _store(self, info: dict[str, Any]) -> None:
        """Keep ``info`` as changed now: a newer ``timestamp`` and the next revision."""
        info["timestamp"] = max(records.now_ms(), int(info.get("timestamp", 0)) + 1)
        self.revision += 1
        self.orders[info["id"]] = info
        self.order_revision[info["id"]] = self.revision

    def orders_by_id(self, organization_id: str, order_ids: list[str]) -> list[dict[str, Any]]:
        if len(order_ids) > MAX_ORDER_IDS:
            raise IikoError(
                400,
                f"Too many orderIds: {len(order_ids)} (at most {MAX_ORDER_IDS} per call)",
                "Incorrect",
            )
        with self.lock:
            found = [self._current(i, organization_id) for i in dict.fromkeys(order_ids)]
            return [copy.deepcopy(info) for info in found if info is not None]

    def orders_by_date(
        self,
        organization_ids: list[str],
        date_from: datetime,
        date_to: datetime | None,
        statuses: list[str] | None,
        courier_ids: list[str] | None,
        source_keys: list[str] | None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """(max revision, [{organizationId, orders}]) of stored orders delivered in the range."""
        out: dict[str, list[dict[str, Any]]] = {org: [] for org in organization_ids}
        with self.lock:
            for info in self.orders.values():
                if info is None or info["organizationId"] not in out:
                    continue
                order = info.get("order") or {}
                when = records.parse_time(order["completeBefore"])
                if when < date_from or (date_to is not None and when > date_to):
                    continue
                if statuses and order.get("status") not in statuses:
                    continue
                courier = ((order.get("courierInfo") or {}).get("courier") or {}).get("id")
                if courier_ids and courier not in courier_ids:
                    continue
                if source_keys and order.get("sourceKey") not in source_keys:
                    continue
                out[info["organizationId"]].append(copy.deepcopy(info))
            revision = self.revision
        return revision, [{"organizationId": org, "orders": found} for org, found in out.items()]

    def orders_by_revision(
        self, organization_ids: list[str], start_revision: int
    ) -> tuple[int, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {org: [] for org in organization_ids}
        with self.lock:
            for order_id, revision in self.order_revision.items():
                info = self.orders.get(order_id)
                if revision > start_revision and info and info["organizationId"] in out:
                    out[info["organizationId"]].append(copy.deepcopy(info))
            revision = self.revision
        return revision, [{"organizationId": org, "orders": found} for org, found in out.items()]

    def put_orders(
        self, organization_id: str, specs: list[dict[str, Any]], day: date | None
    ) -> list[tuple[dict[str, Any], bool]]:
        """Create or change orders from admin specs; returns [(order, created)] (removed: skipped).

        A spec: ``id`` (new uuid when absent), ``status``, ``sum``, ``number``,
        ``external_number``, ``phone``, ``courier_id`` / ``courier_name``,
        ``complete_before``, ``problem``, ``creation_status``, ``error_message``,
        ``fail_commands``, ``remove``. An order not stored yet starts as generated: on
        ``day`` when given, else — with an ``id`` — as ``deliveries/by_id`` already
        answered it, else (a new id) today.
        """
        out = []
        with self.lock:
            for spec in specs:
                order_id = str(spec.get("id") or records.new_order_id())
                if spec.get("remove"):
                    self.orders[order_id] = None
                    self.revision += 1
                    self.order_revision.pop(order_id, None)
                    continue
                existing = self.orders.get(order_id)
                created = existing is None
                info = (
                    copy.deepcopy(existing)
                    if existing
                    else records.make_order(
                        order_id,
                        organization_id,
                        day=day or (None if spec.get("id") else utc_now().date()),
                        status=spec.get("status"),
                    )
                )
                info["organizationId"] = organization_id
                _apply_spec(info, spec)
                if spec.get("fail_commands") is not None:
                    (self.failing.add if spec["fail_commands"] else self.failing.discard)(order_id)
                self._store(info)
                out.append((copy.deepcopy(info), created))
        return out

    def remove_order(self, order_id: str) -> None:
        with self.lock:
            self.orders[order_id] = None
            self.order_revision.pop(order_id, None)
            self.revision += 1

    def reset_orders(self) -> int:
        with self.lock:
            count = len(self.orders)
            self.orders.clear()
            self.order_revision.clear()
            self.failing.clear()
            return count

    def list_orders(self) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(i) for i in self.orders.values() if i is not None]

    # ---- commands -----------------------------------------------------------------------

    def add_command(self, path: str, body: dict[str, Any]) -> str:
        now = time.monotonic()
        command = Command(
            correlation_id=str(uuid.uuid4()),
            organization_id=body["organizationId"],
            path=path,
            body=copy.deepcopy(body),
            created=now,
            received_at=time.time(),
            due=now + self.command_delay,
        )
        with self.lock:
            if len(self.commands) >= MAX_COMMANDS:
                self.commands.pop(next(iter(self.commands)))
            self.commands[command.correlation_id] = command
        return command.correlation_id

    def settle_due(self) -> list[Push]:
        """Carry out every command whose delay has passed (in arrival order)."""
        pushes: list[Push] = []
        now = time.monotonic()
        with self.lock:
            for command in self.commands.values():
                if command.state != "InProgress" or command.due > now:
                    continue
                try:
                    info = self._execute(command)
                except CommandFailed as exc:
                    command.state = "Error"
                    command.exception = {"code": exc.code, "message": exc.message}
                else:
                    command.state = "Success"
                    push = self._push_for(info)
                    if push is not None:
                        pushes.append(push)
                command.settled_at = time.time()
        return pushes

    def command_status(self, organization_id: str, correlation_id: str) -> dict[str, Any]:
        with self.lock:
            command = self.commands.get(correlation_id)
            if command is None or command.organization_id != organization_id:
                raise IikoError(
                    400,
                    f"Operation {correlation_id} not found in organization {organization_id}",
                    "Incorrect",
                )
            return command.status_body()

    def list_commands(self) -> list[dict[str, Any]]:
        with self.lock:
            return [c.summary() for c in self.commands.values()]

    def clear_commands(self) -> int:
        with self.lock:
            count = len(self.commands)
            self.commands.clear()
            return count

    def _execute(self, command: Command) -> dict[str, Any]:
        body, order_id = command.body, command.order_id or ""
        info = self._current(order_id, command.organization_id)
        if info is None:
            raise CommandFailed("OrderNotFound", f"Order {order_id} not found")
        if order_id in self.failing or records.is_failing(order_id):
            raise CommandFailed(
                "Common",
                f"Order {order_id} cannot be changed right now (the terminal rejected the command)",
            )
        info = copy.deepcopy(info)
        order = info["order"]
        status = order["status"]
        if status in FINAL_STATUSES:
            raise CommandFailed(
                "WrongDeliveryStatus", f"Order {order_id} is {status}; it cannot be changed"
            )
        now = utc_now()
        if command.path == "deliveries/update_order_delivery_status":
            records.set_status(info, body["deliveryStatus"], now)
        elif command.path == "deliveries/update_order_courier":
            order["courierInfo"] = {
                "courier": records.employee(body["employeeId"]),
                "isCourierSelectedManually": True,
            }
        elif command.path == "deliveries/change_payments":
            order["payments"] = [
                records.payment_item(
                    p["paymentTypeKind"],
                    p["sum"],
                    p["paymentTypeId"],
                    bool(p.get("isProcessedExternally")),
                )
                for p in body["payments"]
            ]
        elif command.path == "deliveries/cancel":
            cause_id = body.get("cancelCauseId")
            order["status"] = "Cancelled"
            order["cancelInfo"] = {
                "whenCancelled": fmt_time(now),
                "cause": {
                    "id": cause_id or records.stable_id("cancel-cause", "api"),
                    "name": "Отмена через API",
                },
                "comment": body.get("cancelComment"),
            }
        elif command.path == "deliveries/close":
            records.set_status(info, "Closed", now)
        self._store(info)
        return info

    def _push_for(self, info: dict[str, Any]) -> Push | None:
        if not self.push_changes:
            return None
        target = self.webhook_target(info["organizationId"])
        if target is None:
            return None
        return Push(target[0], target[1], [records.cloud_event(info)])

    # ---- webhook settings ---------------------------------------------------------------

    def webhook_settings(self, organization_id: str) -> dict[str, Any]:
        with self.lock:
            stored = self.webhooks.get(organization_id)
        if stored is None and self.default_webhook is not None:
            stored = {
                "webHooksUri": self.default_webhook[0],
                "authToken": self.default_webhook[1],
                "webHooksFilter": None,
            }
        stored = stored or {"webHooksUri": None, "authToken": None, "webHooksFilter": None}
        return {"apiLoginName": self.api_login_name, **copy.deepcopy(stored)}

    def update_webhook_settings(self, body: dict[str, Any]) -> None:
        with self.lock:
            self.webhooks[body["organizationId"]] = {
                "webHooksUri": body["webHooksUri"],
                "authToken": body.get("authToken"),
                "webHooksFilter": copy.deepcopy(body.get("webHooksFilter")),
            }

    def webhook_target(self, organization_id: str) -> tuple[str, str | None] | None:
        """(url, authToken) webhooks of an organization go to, if any is configured."""
        settings = self.webhook_settings(organization_id)
        if not settings["webHooksUri"]:
            return None
        return settings["webHooksUri"], settings["authToken"]

    def all_webhook_settings(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self.webhooks)

    # ---- loyalty ------------------------------------------------------------------------

    def _balance(self, customer_id: str, wallet: str) -> int:
        key = (customer_id, wallet)
        if key not in self.wallets:
            self.wallets[key] = records.initial_balance(customer_id, wallet)
        return self.wallets[key]

    def _held(self, customer_id: str, wallet: str) -> int:
        return sum(
            h.amount
            for h in self.holds.values()
            if h.active and h.customer_id == customer_id and h.wallet_id == wallet
        )

    def customer_info(self, kind: str, value: str) -> dict[str, Any]:
        customer_id = records.customer_id_for(kind, value)
        try:
            uuid.UUID(customer_id)
        except ValueError:
            raise IikoError(400, f"Customer id {value!r} is not a uuid", "Incorrect") from None
        with self.lock:
            self._balance(customer_id, records.wallet_id(customer_id))
            balances = {w: amount for (c, w), amount in self.wallets.items() if c == customer_id}
        return records.customer(customer_id, balances, (kind, value))

    def _wallet_args(self, body: dict[str, Any]) -> tuple[str, str, int]:
        customer_id, wallet, amount = body.get("customerId"), body.get("walletId"), body.get("sum")
        missing = [
            k
            for k, v in (("customerId", customer_id), ("walletId", wallet), ("sum", amount))
            if v is None
        ]
        if missing:
            raise IikoError(400, f"Required: {', '.join(missing)}", "Incorrect")
        value = kopecks(amount)
        if value <= 0:
            raise IikoError(400, "sum must be greater than 0", "Incorrect")
        return customer_id, wallet, value

    def topup(self, body: dict[str, Any]) -> None:
        customer_id, wallet, amount = self._wallet_args(body)
        with self.lock:
            self.wallets[(customer_id, wallet)] = self._balance(customer_id, wallet) + amount

    def chargeoff(self, body: dict[str, Any]) -> None:
        customer_id, wallet, amount = self._wallet_args(body)
        with self.lock:
            balance = self._balance(customer_id, wallet)
            available = balance - self._held(customer_id, wallet)
            if amount > available:
                raise IikoError(
                    400,
                    f"Not enough money in the wallet: {money(available)} "
                    f"available, {money(amount)} requested",
                    "Incorrect",
                )
            self.wallets[(customer_id, wallet)] = balance - amount

    def hold(self, body: dict[str, Any]) -> str:
        customer_id, wallet, amount = self._wallet_args(body)
        transaction_id = body.get("transactionId") or str(uuid.uuid4())
        with self.lock:
            if transaction_id in self.holds:
                raise IikoError(400, f"Transaction {transaction_id} already exists", "Incorrect")
            available = self._balance(customer_id, wallet) - self._held(customer_id, wallet)
            if amount > available:
                raise IikoError(
                    400,
                    f"Not enough money to hold: {money(available)} "
                    f"available, {money(amount)} requested",
                    "Incorrect",
                )
            self.holds[transaction_id] = Hold(
                transaction_id, body["organizationId"], customer_id, wallet, amount
            )
        return transaction_id

    def cancel_hold(self, body: dict[str, Any]) -> None:
        with self.lock:
            hold = self.holds.get(body["transactionId"])
            if hold is None or hold.organization_id != body["organizationId"]:
                raise IikoError(400, f"Hold {body['transactionId']} not found", "Incorrect")
            if not hold.active:
                raise IikoError(
                    400, f"Hold {body['transactionId']} is already cancelled", "Incorrect"
                )
            hold.active = False

    def loyalty_snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "wallets": [
                    {
                        "customerId": c,
                        "walletId": w,
                        "balance": money(amount),
                        "held": money(self._held(c, w)),
                    }
                    for (c, w), amount in self.wallets.items()
                ],
                "holds": [
                    {
                        "transactionId": h.transaction_id,
                        "organizationId": h.organization_id,
                        "customerId": h.customer_id,
                        "walletId": h.wallet_id,
                        "sum": money(h.amount),
                        "active": h.active,
                    }
                    for h in self.holds.values()
                ],
            }


def _apply_spec(info: dict[str, Any], spec: dict[str, Any]) -> None:
    """Admin changes to one order (see :meth:`IikoState.put_orders`)."""
    order = info["order"]
    now = utc_now()
    if spec.get("status") and spec["status"] != order["status"]:
        if spec["status"] == "Cancelled":
            order["status"] = "Cancelled"
            order["cancelInfo"] = order.get("cancelInfo") or {
                "whenCancelled": fmt_time(now),
                "cause": {"id": records.stable_id("cancel-cause", "admin"), "name": "Отмена"},
                "comment": None,
            }
        else:
            records.set_status(info, spec["status"], now)
    if spec.get("sum") is not None:
        amount = money(kopecks(spec["sum"]))
        order["sum"] = amount
        if len(order.get("payments") or []) == 1:
            order["payments"][0]["sum"] = amount
    if spec.get("number") is not None:
        order["number"] = spec["number"]
    if spec.get("external_number") is not None:
        info["externalNumber"] = spec["external_number"]
    if spec.get("phone") is not None:
        order["phone"] = spec["phone"]
    if spec.get("courier_id") is not None:
        courier = records.employee(str(spec["courier_id"]))
        if spec.get("courier_name"):
            courier["name"] = spec["courier_name"]
        order["courierInfo"] = {"courier": courier, "isCourierSelectedManually": True}
    if spec.get("complete_before") is not None:
        order["completeBefore"] = spec["complete_before"]
    if spec.get("problem") is not None:
        order["problem"] = (
            {"hasProblem": True, "description": spec["problem"]} if spec["problem"] else None
        )
    if spec.get("creation_status") is not None:
        info["creationStatus"] = spec["creation_status"]
        if spec["creation_status"] == "Error":
            info["errorInfo"] = {
                "code": "Common",
                "message": spec.get("error_message") or "Order creation failed",
                "description": None,
                "additionalData": None,
            }
        else:
            info["errorInfo"] = None
