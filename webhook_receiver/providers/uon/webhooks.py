"""U-ON's webhooks and its click-to-call (seed 004).

Two routes take the same requests, by GET (a query string) or POST (a form or a JSON
object), with English or Russian keys (`.payloads`):

- `/webhooks/uon/{webhook_key}`: the key finds the integration;
- `/uon/webhook` (the seed's path): the integration whose `account_id` setting equals
  the `uon_id` / `account_id` sent, else whose `uon_subdomain` equals the one sent, else
  the only active U-ON integration (none: 404; several and no match: 409 naming the
  fields to send). It authenticates with the integration's webhook key as `?secret=` or
  an `X-Webhook-Secret` header — or, when the integration has an `ip_allowlist`, by the
  client's address alone.

An `ip_allowlist` binds both routes: another address is a 403 and nothing is written.
The client's address is the TCP peer's, or, when the peer is a trusted proxy
(`CRM_SYNC_TRUSTED_PROXIES`), what `X-Forwarded-For` says it saw.

By `type_id` (`method=call` without one is 47):

- 3 / 4 / 5 (client created / changed / deleted): a `uon_inbox` row (`external_id` the
  client id) and, in the same transaction, the cached lookups of that client's stored
  numbers and of the number sent are dropped: the next ring asks U-ON again;
- 1 / 2 / 16 / 17 (leads and requests): a row (`external_id` the lead or request id);
- 47 (click-to-call): a row, then the PBX is asked to ring the manager's extension and
  dial the client (`.originate`); the attempt is a `uon_originations` row either way;
  200 `{"ok": true}` or 502 `{"ok": false, "error"}` (bad input 422, no PBX 409);
- any other type: a row.

Every row is committed before the answer (`{"status": "OK", "ids"}`); a request that is
refused (4xx, JSON naming the problem) writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
from pydantic import ValidationError
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope

from crm_schema.providers.uon import uon_inbox
from crm_sync import encryption
from crm_sync.providers.uon import CLICK_TO_CALL_TYPE, CLIENT_TYPES, LEAD_TYPES, SPEC
from crm_sync.settings import get_settings
from webhook_receiver.openapi import Operation
from webhook_receiver.providers.uon import originate as pbx
from webhook_receiver.providers.uon.database import (
    Account,
    UonDatabase,
    insert_inbox,
    insert_origination,
    pbx_secret,
    shared,
    store_client_event,
)
from webhook_receiver.providers.uon.payloads import (
    FIELDS,
    SECRET_PARAM,
    Problems,
    UonAnswer,
    UonWebhook,
    UonWebhookForm,
    e164,
    problems_of,
    query_param_schemas,
    webhook_fields,
)
from webhook_receiver.responses import describe_json, error_body
from webhook_receiver.security import (
    client_ip,
    constant_time_equals,
    ip_allowed,
    is_form_content_type,
    is_json_content_type,
)
from webhook_receiver.stores import InboxRow, InboxTable, IntegrationEntry, StoreUnavailable
from webhook_receiver.webhooks import NO_HEADERS, STORE_ERRORS, Answer, WebhookHandler, answer

if TYPE_CHECKING:
    from ipaddress import IPv4Network, IPv6Network

    from webhook_receiver.app import Receiver
    from webhook_receiver.config import ReceiverConfig
    from webhook_receiver.integration_cache import IntegrationCache
    from webhook_receiver.stores import WebhookStore
    from webhook_receiver.webhooks import Deadlines

log = logging.getLogger(__name__)

PROVIDER = SPEC.name
SOURCE = "uon"
KEY_PATH = "/webhooks/uon/{webhook_key}"
SEED_PATH = "/uon/webhook"
SECRET_HEADER = b"x-webhook-secret"
INBOX = InboxTable(
    uon_inbox,
    ("integration_id", "source", "event", "external_id", "phone", "payload", "received_at"),
)
# parse_qsl's own bound (ValueError past it); U-ON sends a dozen fields.
MAX_FORM_FIELDS = 1000

FORBIDDEN = answer(403, "this source address is not in the integration's ip_allowlist")
SECRET_REQUIRED = answer(
    401,
    "a secret is required: the integration's webhook key as ?secret= or X-Webhook-Secret "
    "(or a source address in the integration's ip_allowlist)",
)
WRONG_SECRET = answer(401, "wrong secret")
NO_INTEGRATION = answer(404, "no active U-ON integration")
AMBIGUOUS = answer(
    409,
    "several active U-ON integrations and none matches: send uon_id (or account_id) equal "
    "to one integration's account_id setting, or uon_subdomain equal to its uon_subdomain",
)
NOT_HEAD = answer(405, "use GET or POST")


def _ok(ids: list[int]) -> Answer:
    return 200, b'{"status":"OK","ids":%s}' % orjson.dumps(ids), NO_HEADERS


def _json(status: int, body: dict[str, Any]) -> Answer:
    return status, orjson.dumps(body), NO_HEADERS


def _invalid(problems: Problems, *, call: bool = False) -> Answer:
    names = ", ".join(dict.fromkeys(p["field"] for p in problems[:10]))
    if call:  # click-to-call answers always say `ok`
        return _json(422, {"ok": False, "error": f"invalid {names}", "fields": problems})
    return 422, error_body(f"invalid {names}", problems), NO_HEADERS


def _call_error(status: int, message: str) -> Answer:
    return _json(status, {"ok": False, "error": message})


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return value
    return None


def _pairs(text: str) -> list[tuple[str, str]] | Answer:
    try:
        return parse_qsl(
            text,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except UnicodeDecodeError:
        return answer(400, "form fields are not UTF-8")
    except ValueError:
        return answer(413, f"more than {MAX_FORM_FIELDS} fields")


def query_pairs(scope: Scope) -> list[tuple[str, str]] | Answer:
    """The query string's fields (percent-decoded as UTF-8)."""
    query = scope.get("query_string", b"")
    if not query:
        return []
    try:
        text = query.decode("utf-8")
    except UnicodeDecodeError:
        return answer(400, "query string is not UTF-8")
    return _pairs(text)


def body_pairs(body: bytes, content_type: bytes | None) -> list[tuple[str, Any]] | Answer:
    """A POST body's fields: a JSON object or a form (415 for other content types; without
    one, a body starting with `{` is read as JSON, anything else as a form)."""
    as_json = is_json_content_type(content_type)
    if content_type is not None and not as_json and not is_form_content_type(content_type):
        return answer(415, "Content-Type must be application/x-www-form-urlencoded or JSON")
    if content_type is None:
        as_json = body.lstrip()[:1] in (b"{", b"[")
    if not body.strip():
        return []
    if as_json:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return answer(400, "body is not valid JSON")
        if not isinstance(payload, dict):
            return answer(400, f"body must be a JSON object, not {describe_json(payload)}")
        return list(payload.items())
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return answer(400, "form body is not UTF-8")
    return _pairs(text)


def request_secret(scope: Scope, query: list[tuple[str, str]]) -> str | None | Answer:
    """The secret sent as `?secret=` or `X-Webhook-Secret` (None: neither); 401 when they
    differ."""
    found = {
        value.decode("latin-1").strip() for name, value in scope["headers"] if name == SECRET_HEADER
    }
    found.update(v.strip() for k, v in query if k.strip().casefold() == SECRET_PARAM)
    found.discard("")
    if len(found) > 1:
        return answer(401, "?secret= and X-Webhook-Secret differ")
    return found.pop() if found else None


def resolve_account(
    accounts: list[Account], fields: dict[str, Any], secret: str | None
) -> Account | Answer:
    """The seed path's integration: by account id, else subdomain, else the only one.

    When several match (or none of several), a secret that is one of their webhook keys
    picks it (every candidate compared, in constant time)."""
    if not accounts:
        return NO_INTEGRATION

    def text(name: str) -> str | None:
        value = fields.get(name)
        if value is None or isinstance(value, bool | dict | list):
            return None
        return str(value).strip() or None

    ids = {v for v in (text("uon_id"), text("account_id")) if v}
    matched = [a for a in accounts if a.settings.account_id and a.settings.account_id in ids]
    subdomain = text("uon_subdomain")
    if not matched and subdomain:
        wanted = subdomain.casefold()
        matched = [
            a
            for a in accounts
            if a.settings.uon_subdomain and a.settings.uon_subdomain.casefold() == wanted
        ]
    if not matched:
        matched = accounts
    if len(matched) == 1:
        return matched[0]
    if secret is not None:
        picked = None
        for account in matched:  # no early exit
            if constant_time_equals(secret, account.webhook_key):
                picked = account
        if picked is not None:
            return picked
    return AMBIGUOUS


class UonWebhookHandler(WebhookHandler):
    """Both U-ON routes (see the module docstring)."""

    provider = PROVIDER

    def __init__(
        self,
        config: ReceiverConfig,
        cache: IntegrationCache,
        store: WebhookStore,
        deadlines: Deadlines | None = None,
        *,
        db: UonDatabase,
        trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = (),
    ) -> None:
        super().__init__(config, cache, store, deadlines)
        self.db = db
        self.trusted_proxies = trusted_proxies

    async def handle(self, scope: Scope, receive: Receive) -> Answer:
        """(status, JSON body, extra headers) for one U-ON request."""
        received_at = datetime.now(UTC)
        if scope["method"] not in ("GET", "POST"):
            return NOT_HEAD
        key = scope.get("path_params", {}).get("webhook_key")
        entry: IntegrationEntry | Answer | None = None
        if key is not None:
            entry = self.cached_integration(key) or await self.integration(key)
            if not isinstance(entry, IntegrationEntry):
                return entry
            if entry.ip_allowlist and not self.allowed(scope, entry.ip_allowlist):
                return FORBIDDEN
        query = query_pairs(scope)
        if isinstance(query, tuple):
            return query
        pairs: list[tuple[str, Any]] = list(query)
        if scope["method"] == "POST":
            body = await self.read_body(scope, receive, json_required=False)
            if isinstance(body, tuple):
                return body
            found = body_pairs(body, _header(scope, b"content-type"))
            if isinstance(found, tuple):
                return found
            pairs += found
        parsed = webhook_fields(pairs)
        if isinstance(parsed, list):
            return _invalid(parsed)
        raw, fields, names = parsed
        try:
            if isinstance(entry, IntegrationEntry):
                account = await self.db.account(entry.id)
                if account is None:
                    return answer(404, "no active integration for this webhook URL")
            else:
                found_account = await self.seed_account(scope, query, fields)
                if isinstance(found_account, tuple):
                    return found_account
                account = found_account
        except StoreUnavailable:
            return self.unavailable()
        try:
            webhook = UonWebhook.model_validate(fields)
        except ValidationError as exc:
            return _invalid(problems_of(exc, names=names))
        return await self.route(account, webhook, raw, received_at)

    def allowed(self, scope: Scope, allowlist: tuple[IPv4Network | IPv6Network, ...]) -> bool:
        """Whether the client's address is in ``allowlist``."""
        return ip_allowed(client_ip(scope, self.trusted_proxies), allowlist)

    async def seed_account(
        self, scope: Scope, query: list[tuple[str, str]], fields: dict[str, Any]
    ) -> Account | Answer:
        """`/uon/webhook`: the integration the fields name, authenticated."""
        secret = request_secret(scope, query)
        if isinstance(secret, tuple):
            return secret
        accounts = list((await self.db.accounts()).values())
        account = resolve_account(accounts, fields, secret)
        if isinstance(account, tuple):
            return account
        if account.allowlist:
            if not self.allowed(scope, account.allowlist):
                return FORBIDDEN
            if secret is None:
                return account
        if secret is None:
            return SECRET_REQUIRED
        if not constant_time_equals(secret, account.webhook_key):
            return WRONG_SECRET
        return account

    async def route(
        self, account: Account, webhook: UonWebhook, raw: dict[str, Any], received_at: datetime
    ) -> Answer:
        """Store the webhook as its type asks (and originate a click-to-call)."""
        event = webhook.event_type
        if event is None:
            return _invalid([{"field": "type_id", "error": "required (or method=call)"}])
        number = e164(webhook.phone, account.region)
        normalised = webhook.model_dump(include=set(FIELDS), exclude_none=True)
        normalised["type_id"] = event
        if number:
            normalised["e164"] = number
        payload = {"raw": raw, **normalised}
        try:
            payload_text = orjson.dumps(payload).decode()
        except orjson.JSONEncodeError:  # nested deeper than orjson writes
            return answer(422, "the request is nested too deeply to store")
        values = {
            "integration_id": account.id,
            "source": SOURCE,
            "event": str(event),
            "external_id": None,
            "phone": number or webhook.phone,
            "payload": payload,
            "received_at": received_at,
        }
        if event == CLICK_TO_CALL_TYPE:
            return await self.click_to_call(account, webhook, number, values)
        # An event without the id it should name is still stored (nothing U-ON sends is
        # lost); its task ends with the reason, visible in the UI.
        if event in CLIENT_TYPES and webhook.client_id is not None:
            values["external_id"] = webhook.client_id
            return await self.client_event(values, webhook.client_id, number)
        if event in CLIENT_TYPES and number is not None:
            return await self.client_event(values, None, number)
        if event in LEAD_TYPES:
            first, second = (
                (webhook.lead_id, webhook.request_id)
                if event == 1
                else (webhook.request_id, webhook.lead_id)
            )
            values["external_id"] = first or second
        else:
            values["external_id"] = webhook.client_id or webhook.request_id or webhook.lead_id
        row = InboxRow(
            INBOX, (*[values[c] for c in INBOX.columns[:-2]], payload_text, received_at), account.id
        )
        try:
            row_id = await self.store_row(row)
        except STORE_ERRORS as exc:
            return self.store_failed(exc)
        return _ok([row_id])

    async def client_event(
        self, values: dict[str, Any], client_id: str | None, number: str | None
    ) -> Answer:
        """A client webhook: its row and the cache drop, one transaction."""
        try:
            row_id, dropped = await self.db.transaction(
                lambda conn: store_client_event(conn, values, client_id, [number])
            )
        except StoreUnavailable:
            return self.unavailable()
        if dropped:
            log.info(
                "U-ON client %s changed (integration %s): %d cached lookup(s) dropped",
                client_id,
                values["integration_id"],
                dropped,
            )
        return _ok([row_id])

    async def click_to_call(
        self,
        account: Account,
        webhook: UonWebhook,
        number: str | None,
        values: dict[str, Any],
    ) -> Answer:
        """Validate, store the request, ask the PBX, store the attempt, answer."""
        try:
            pbx.check_settings(account)
        except pbx.NotConfigured as exc:
            return _call_error(409, str(exc))
        problems: Problems = []
        extension = None
        if webhook.user_id is None:
            problems.append({"field": "user_id", "error": "required: the U-ON manager"})
        else:
            extension = account.settings.user_extensions.get(webhook.user_id)
            if extension is None:
                problems.append(
                    {
                        "field": "user_id",
                        "error": f"no extension for U-ON manager {webhook.user_id}: add it "
                        "to the integration's user_extensions",
                    }
                )
        if webhook.phone is None:
            problems.append({"field": "phone", "error": "required: the client's number"})
        elif number is None:
            problems.append({"field": "phone", "error": "not a valid phone number"})
        if problems:
            return _invalid(problems, call=True)
        assert webhook.user_id is not None and extension is not None and number is not None
        call = pbx.Call(webhook.user_id, extension, number)
        try:
            secret = None
            if pbx.needs_secret(account):
                secret = await self.db.transaction(lambda conn: pbx_secret(conn, account.id))
            url = pbx.originate_url(account, call, secret)
            values["external_id"] = webhook.client_id
            inbox_id = await self.db.transaction(lambda conn: insert_inbox(conn, values))
        except pbx.NotConfigured as exc:
            return _call_error(409, str(exc))
        except encryption.EncryptionError:
            log.error("U-ON click-to-call: the PBX secret cannot be decrypted")
            return _call_error(503, "the PBX secret cannot be read: check the encryption key")
        except StoreUnavailable:
            return _call_error(503, "database unavailable")
        outcome = await pbx.originate(url, secret)
        record = {
            "integration_id": account.id,
            "inbox_id": inbox_id,
            "manager_id": call.manager,
            "extension": call.extension,
            "phone": call.e164,
            "ok": outcome.ok,
            "error": outcome.error,
            "pbx_status": outcome.status,
            "duration_ms": outcome.duration_ms,
        }
        log.info(
            "U-ON click-to-call (integration %s): manager %s, extension %s: %s",
            account.id,
            call.manager,
            call.extension,
            "placed" if outcome.ok else outcome.error,
        )
        try:
            origination_id = await self.db.transaction(
                lambda conn: insert_origination(conn, record)
            )
        except StoreUnavailable:
            # The PBX has been asked: a retry could ring twice, so no Retry-After.
            return _json(
                500,
                {
                    "ok": outcome.ok,
                    "error": "the PBX was asked, but its answer could not be stored "
                    "(database unavailable)",
                    "ids": [inbox_id],
                },
            )
        body: dict[str, Any] = {"ok": outcome.ok}
        if not outcome.ok:
            body["error"] = outcome.error
        body |= {"ids": [inbox_id], "origination_id": origination_id}
        return _json(200 if outcome.ok else 502, body)


# -- routes and their documentation -------------------------------------------------------

_FIELD_HELP = {
    name: (field.description or name)
    for name, field in UonWebhook.model_fields.items()
    if name in FIELDS and name != "client"
}
_ERRORS = {
    400: "A body or query that is not UTF-8, not JSON, or not a JSON object.",
    404: "Unknown or disabled webhook key.",
    413: "Body over the size limit.",
    415: "A Content-Type that is neither a form nor JSON.",
    422: "Fields of the wrong shape, each named (the key as sent); a click-to-call "
    "without a known manager or a valid number. Nothing stored.",
    403: "The integration has an ip_allowlist and the client's address is not in it.",
    409: "Click-to-call: the PBX is not configured (pbx_url, pbx_secret).",
    502: 'Click-to-call: the PBX did not take the call (`{"ok": false, "error"}`); the '
    "request and the attempt are stored.",
    503: "The database could not commit in time; retry after Retry-After.",
}
_SEED_ERRORS = _ERRORS | {
    401: "No secret (and no ip_allowlist), a wrong one, or ?secret= and the header differ.",
    404: "No active U-ON integration.",
    409: "Several active U-ON integrations and none matched (send uon_id / account_id or "
    "uon_subdomain); or, for click-to-call, no PBX configured.",
}
_DESCRIPTION = (
    "A U-ON webhook by type_id: 3/4/5 (client created/changed/deleted: stored, the "
    "client's cached lookups dropped), 1/2/16/17 (leads and requests), 47 or "
    "`method=call` (click-to-call: the PBX is asked to ring the manager's extension), "
    "others stored. Keys may be Russian (`метод`, `телефон`, `ID пользователя`, `клиент`, "
    "`ID клиента`, `ID заявки`). One `uon_inbox` row, committed before the answer."
)
_SEED_DESCRIPTION = _DESCRIPTION + (
    " The integration: the one whose account_id equals uon_id / account_id, else whose "
    "uon_subdomain equals the one sent, else the only active U-ON integration. "
    "Authenticated by its webhook key as ?secret= or X-Webhook-Secret, or (when it has an "
    "ip_allowlist) by the client's address."
)


def _operations() -> tuple[Operation, ...]:
    ops = []
    for path, description, errors in (
        (KEY_PATH, _DESCRIPTION, _ERRORS),
        (SEED_PATH, _SEED_DESCRIPTION, _SEED_ERRORS),
    ):
        seed = path == SEED_PATH
        common: dict[str, Any] = {
            "path": path,
            "description": description,
            "ok": UonAnswer,
            "errors": errors,
            "tags": (PROVIDER,),
        }
        if not seed:
            common["path_params"] = {"webhook_key": "The U-ON integration's webhook key."}
        else:
            common["header_params"] = {"X-Webhook-Secret": "The integration's webhook key."}
        secret_param = {SECRET_PARAM: "The integration's webhook key."} if seed else {}
        where = "the gateway's path" if seed else "one integration"
        ops.append(
            Operation(
                method="get",
                summary=f"A U-ON webhook as a query string ({where})",
                query_params=_FIELD_HELP | secret_param,
                param_schemas=query_param_schemas(),
                required_params=frozenset({"type_id"}),
                **common,
            )
        )
        ops.append(
            Operation(
                method="post",
                summary=f"A U-ON webhook as a form or JSON ({where})",
                body=UonWebhook,
                other_bodies={"application/x-www-form-urlencoded": UonWebhookForm},
                query_params=secret_param,
                **common,
            )
        )
    return tuple(ops)


WEBHOOK_OPERATIONS = _operations()


def _factory(db: UonDatabase) -> Callable[[Receiver], UonWebhookHandler]:
    def build(r: Receiver) -> UonWebhookHandler:
        trusted = tuple(get_settings().trusted_proxies)
        return UonWebhookHandler(
            r.config, r.cache, r.store, r.deadlines, db=db, trusted_proxies=trusted
        )

    return build


def webhook_routes(receiver: Receiver) -> list[BaseRoute]:
    """`/webhooks/uon/{webhook_key}` and `/uon/webhook`, GET and POST."""
    endpoint = receiver.endpoint(_factory(shared(receiver)))
    return [
        Route(KEY_PATH, endpoint, methods=["GET", "POST"]),
        Route(SEED_PATH, endpoint, methods=["GET", "POST"]),
    ]
