"""amoCRM webhooks: RDESK booking updates (seed 002) and amoCRM contact webhooks (seed 003).

RDESK ("Здравница") posts JSON arrays of updates, `booked` (sanatorium stays) and `mc`
(outpatient services), to either

- `POST /webhooks/rdesk/{webhook_key}/booked|mc`: the key in the URL finds the
  integration; or
- `POST /zdrav/booked|mc` (the seed's paths): the key in an `X-Webhook-Key` header or a
  `?key=` parameter; without a key, the TCP peer's address must be inside the
  `ip_allowlist` of exactly one active amoCRM integration (`X-Forwarded-For` is not
  trusted: anyone can send it).

The body must be a JSON array of JSON objects (400 otherwise, 422 naming each element
that is not an object; nothing written). Each element becomes one `amocrm_inbox` row
(`source` booked | mc, `external_id` the `lead_id` as sent, `rdesk_id` the element's
`id`, `payload` the element), all committed before the 200 `{"status": "ok", "ids"}`.
The elements' fields are not checked here: the sync validates each one and records its
errors on that element's task, so one bad element never costs the others their update.
The element models below document the shapes (PROVIDERS.md) in `/openapi.json`.

amoCRM posts contact webhooks to `POST /webhooks/amocrm/{webhook_key}` as
`application/x-www-form-urlencoded` with nested keys (`contacts[add][0][id]=111`,
`contacts[update][0][custom_fields][0][values][0][value]=…`, `account[subdomain]=…`);
a JSON object of the same nested shape is taken too. One row per contact per action
(`source` contacts, `action` add | update | delete | restore | …, `external_id` the
contact id, `payload` `{"contact": {…its fields…}, "account": {…}}`). A contact without
an id is a 422. Other entities (`leads[…]`, `companies[…]`, `tasks[…]`, …) are accepted
and ignored: 200, no row. This is the normal group-committed path, answered well within
the 2 s amoCRM allows.

The OAuth redirect (`GET /oauth/amocrm/callback`) is in `.oauth`; its route and
documentation are offered from here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import parse_qsl

import orjson
from pydantic import BaseModel, ConfigDict, Field, RootModel
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope

from crm_schema.providers.amocrm import amocrm_inbox
from crm_sync.providers.amocrm import RDESK_ENDPOINTS
from webhook_receiver.openapi import Operation
from webhook_receiver.providers.amocrm import oauth
from webhook_receiver.responses import describe_json, error_body
from webhook_receiver.security import (
    is_form_content_type,
    is_json_content_type,
    peer_ip,
)
from webhook_receiver.stores import InboxRow, InboxTable, IntegrationEntry
from webhook_receiver.webhooks import NO_HEADERS, Answer, WebhookHandler, answer

if TYPE_CHECKING:
    from webhook_receiver.app import Receiver
    from webhook_receiver.config import ReceiverConfig
    from webhook_receiver.integration_cache import IntegrationCache
    from webhook_receiver.stores import WebhookStore
    from webhook_receiver.webhooks import Deadlines

log = logging.getLogger(__name__)

PROVIDER = "amocrm"
INBOX = InboxTable(
    amocrm_inbox,
    ("integration_id", "source", "action", "external_id", "rdesk_id", "payload", "received_at"),
)
RDESK_KEY_PATH = "/webhooks/rdesk/{webhook_key}/"
SEED_PATH = "/zdrav/"
CONTACTS_PATH = "/webhooks/amocrm/{webhook_key}"
CONTACTS_SOURCE = "contacts"
KEY_HEADER = b"x-webhook-key"
KEY_PARAM = "key"
MAX_PROBLEMS = 50
# Form keys deeper than this are refused (amoCRM's go six levels deep).
MAX_FORM_DEPTH = 16
# parse_qsl's own bound (ValueError past it): the body size limit alone would allow ~500k.
MAX_FORM_FIELDS = 50_000
# `external_id` / `rdesk_id` are String(64); longer values stay in the payload only.
MAX_ID_CHARS = 64
_ACTION = re.compile(r"[a-z][a-z0-9_]{0,31}")
_CONTACT_ID = re.compile(r"[0-9]{1,19}")
_FORM_KEY = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")
_FORM_PART = re.compile(r"\[([^\[\]]*)\]")

MISSING_KEY = answer(
    401,
    "a webhook key is required: the X-Webhook-Key header or ?key= "
    "(or a source address in the integration's ip_allowlist)",
)
SHARED_ADDRESS = answer(
    409,
    "this source address is in the ip_allowlist of several amoCRM integrations: "
    "send the integration's key (X-Webhook-Key or ?key=)",
)

Problems = list[dict[str, str]]


# -- documented shapes (PROVIDERS.md, RDESK); the sync validates, the receiver only stores --


class _Element(BaseModel):
    # Lenient as documentation: RDESK may add keys, and they are stored as sent.
    model_config = ConfigDict(extra="allow")


class RdeskMoney(_Element):
    total: int = Field(description="The stay's total (the lead's price).", examples=[153887])
    paid: int = Field(description="Paid so far.", examples=[61361])


class RdeskBill(_Element):
    billNum: str | None = Field(None, examples=["77777"])
    billSum: str | None = Field(None, examples=["147966.3"])
    billPaidSum: str | None = Field(None, examples=["59000"])


class RdeskGuest(_Element):
    fio: str | None = None
    birthday: str | None = None
    stayCount: int | None = None
    roomCategory: str | None = None
    ageGroup: str | None = None
    cure: str | None = Field(None, description="Direction of treatment.")
    uid: str | None = None
    billNum: int | str | None = Field(None, description='Bill number; "" when none.')


class RdeskExtData(_Element):
    guests: list[RdeskGuest] = Field(default_factory=list)


class RdeskBooked(_Element):
    """One `booked` update: a sanatorium stay tied to an amoCRM lead."""

    model_config = ConfigDict(title="RdeskBooked")

    id: int = Field(description="RDESK's id of the update.", examples=[88888])
    lead_id: str = Field(description="The amoCRM lead id, as a string.", examples=["32129421"])
    status: Literal["booked", "checkin", "checkout", "cancel", "waiting"]
    bookedAt: datetime = Field(examples=["2022-09-05T11:22:33.000Z"])
    name: str
    phone: str | None = None
    email: str | None = None
    checkin: datetime | date = Field(examples=["2026-08-25"])
    checkout: datetime | date = Field(examples=["2026-09-05"])
    money: RdeskMoney
    docNum: int = Field(examples=[33333])
    billData: list[RdeskBill] = Field(default_factory=list)
    extData: RdeskExtData


class RdeskPaid(_Element):
    pay: bool | None = Field(None, description="Paid service (false: free of charge).")
    price: float | None = None
    paid: bool | None = None


class RdeskTreatment(RdeskPaid):
    item_id: int
    action: str = Field(description="The service's name.")
    status: Literal["set", "done", "cancel"]
    visit_date: datetime | None = None


class RdeskLab(RdeskPaid):
    lab_item_id: int
    lab: str = Field(description="The test's name.")
    status: Literal["set", "done", "cancel"]
    visit_date: datetime | None = None
    treatment_item_id: int | None = None


class RdeskPacket(RdeskPaid):
    packet_id: int
    packet: str
    treatments: list[RdeskTreatment] = Field(default_factory=list)


class RdeskComplex(RdeskPaid):
    complex_id: int
    complex: str
    treatments: list[RdeskTreatment] = Field(default_factory=list)
    labs: list[RdeskLab] = Field(default_factory=list)


class RdeskMc(_Element):
    """One `mc` update ("Медцентр"): outpatient services tied to an amoCRM lead."""

    model_config = ConfigDict(title="RdeskMc")

    id: int = Field(description="RDESK's id of the update.")
    lead_id: int = Field(description="The amoCRM lead id, as a number.", examples=[32129421])
    name: str
    createdAt: datetime
    birthday: datetime | date
    status: str
    phone: str | None = None
    email: str | None = None
    treatments: list[RdeskTreatment] = Field(default_factory=list)
    labs: list[RdeskLab] = Field(default_factory=list)
    packets: list[RdeskPacket] = Field(default_factory=list)
    complex: list[RdeskComplex] = Field(default_factory=list)


class RdeskBookedBody(RootModel[list[RdeskBooked]]):
    """A JSON array of booked updates (its fields are checked by the sync, per element)."""

    model_config = ConfigDict(title="RdeskBookedArray")


class RdeskMcBody(RootModel[list[RdeskMc]]):
    """A JSON array of mc updates (its fields are checked by the sync, per element)."""

    model_config = ConfigDict(title="RdeskMcArray")


class AmocrmContactWebhookForm(BaseModel):
    """amoCRM's form-encoded webhook: nested keys, one contact shown; others are taken
    (more contacts under `contacts[<action>][<i>][…]`, each with its `id`; other entities)."""

    model_config = ConfigDict(extra="allow", title="AmocrmContactWebhookForm")

    contact_id: str = Field(
        alias="contacts[add][0][id]",
        pattern=r"^[1-9][0-9]{0,17}$",
        description="A contact's id, under its action (add, update, delete, restore, …) "
        "and its index. Every contact needs one.",
        examples=["111"],
    )
    contact_name: str | None = Field(None, alias="contacts[add][0][name]")
    account_subdomain: str | None = Field(None, alias="account[subdomain]", examples=["clinic"])
    account_id: str | None = Field(None, alias="account[id]")


class AmocrmContact(BaseModel):
    """A contact in a webhook: its id and whatever fields amoCRM sent."""

    model_config = ConfigDict(extra="allow", title="AmocrmWebhookContact")

    id: (
        Annotated[int, Field(ge=1, le=10**17)]
        | Annotated[str, Field(pattern=r"^[1-9][0-9]{0,16}$")]
    ) = Field(description="The contact's id (digits).", examples=[111])


ActionName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class AmocrmContactWebhookJson(BaseModel):
    """The same webhook as a JSON object of the nested shape."""

    model_config = ConfigDict(extra="allow", title="AmocrmContactWebhookJson")

    contacts: dict[ActionName, list[AmocrmContact]] = Field(
        default_factory=dict, description="action → its contacts", examples=[{"add": [{"id": 1}]}]
    )
    account: dict[str, Any] = Field(default_factory=dict, examples=[{"subdomain": "clinic"}])


class AmocrmAccepted(BaseModel):
    """Every row is stored (committed)."""

    status: Literal["ok"] = "ok"
    ids: list[int] = Field(
        description="The `amocrm_inbox` rows written, in order (RDESK: one per element; "
        "contacts: one per contact and action; none for other entities).",
        examples=[[101, 102]],
    )


# -- parsing ----------------------------------------------------------------------------------


def column_id(value: object) -> str | None:
    """An id as its column holds it: a string as sent or an integer's digits; None for any
    other value, or one a column cannot hold (over 64 characters, NUL)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        # str() of a huge int is slow (and refused past 4,300 digits): bound it first.
        return str(value) if value.bit_length() <= 200 and len(str(value)) <= MAX_ID_CHARS else None
    if isinstance(value, str) and len(value) <= MAX_ID_CHARS and "\x00" not in value:
        return value
    return None


def rdesk_elements(payload: Any) -> list[dict[str, Any]] | Answer:
    """The elements of a parsed RDESK body, or the refusal (400 not an array, 422 naming
    each element that is not an object)."""
    if not isinstance(payload, list):
        return answer(400, f"body must be a JSON array of objects, not {describe_json(payload)}")
    problems: Problems = []
    for index, element in enumerate(payload):
        if not isinstance(element, dict):
            problems.append(
                {"field": f"[{index}]", "error": f"must be an object, not {describe_json(element)}"}
            )
            if len(problems) >= MAX_PROBLEMS:
                break
    if problems:
        names = ", ".join(p["field"] for p in problems[:10])
        return (
            422,
            error_body(f"array elements that are not objects: {names}", problems),
            NO_HEADERS,
        )
    return payload


def form_key_path(key: str) -> list[str]:
    """`contacts[add][0][id]` → `["contacts", "add", "0", "id"]`; a key that is not of
    that form is one plain name."""
    match = _FORM_KEY.fullmatch(key)
    if match is None:
        return [key]
    return [match.group(1), *_FORM_PART.findall(match.group(2))]


class FormShapeError(ValueError):
    """Form keys that cannot make one nested structure."""

    def __init__(self, key: str, error: str) -> None:
        super().__init__(error)
        self.key, self.error = key, error


def _next_index(node: dict[str, Any]) -> str:
    index = len(node)
    while str(index) in node:
        index += 1
    return str(index)


def _listify(node: Any) -> Any:
    """Dicts keyed exactly "0".."n-1" become lists (the form's arrays), all the way down."""
    if not isinstance(node, dict):
        return node
    items = {k: _listify(v) for k, v in node.items()}
    if items and all(str(i) in items for i in range(len(items))):
        return [items[str(i)] for i in range(len(items))]
    return items


def nest_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Form fields with PHP-style bracket keys → the nested structure they describe.

    Arrays come out as lists; `a[]` appends; a repeated key keeps its last value. A key
    that is both a value and a container (`a=1&a[b]=2`), or deeper than MAX_FORM_DEPTH,
    raises FormShapeError.
    """
    root: dict[str, Any] = {}
    for key, value in pairs:
        path = form_key_path(key)
        if len(path) > MAX_FORM_DEPTH:
            raise FormShapeError(key, f"nested deeper than {MAX_FORM_DEPTH} levels")
        node = root
        for part in path[:-1]:
            name = part or _next_index(node)
            child = node.get(name)
            if child is None:
                child = node[name] = {}
            elif not isinstance(child, dict):
                raise FormShapeError(key, "is both a value and a group of fields")
            node = child
        name = path[-1] or _next_index(node)
        if isinstance(node.get(name), dict):
            raise FormShapeError(key, "is both a value and a group of fields")
        node[name] = value
    # The top level stays an object (entity names), whatever its keys.
    return {name: _listify(value) for name, value in root.items()}


def contact_id(value: object) -> str | None:
    """A contact id: a positive integer, or a string of its digits; normalised."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and _CONTACT_ID.fullmatch(value.strip()):
        value = int(value.strip())
    # JSON has one number type: 111.0 is the integer 111 (a JSON-schema "integer" too).
    if isinstance(value, float) and value.is_integer() and 0 < value < 2**63:
        value = int(value)
    if isinstance(value, int) and 0 < value < 2**63:
        return str(value)
    return None


def _items(group: Any) -> Iterable[tuple[Any, Any]] | None:
    if isinstance(group, list):
        return enumerate(group)
    if isinstance(group, dict):
        return group.items()
    return None


def webhook_contacts(webhook: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]] | Problems:
    """`(action, contact id, contact)` for every contact of a webhook, in order, or every
    problem found (a problems list is never empty). Other entities are left alone."""
    contacts = webhook.get(CONTACTS_SOURCE)
    if contacts is None:
        return []
    if not isinstance(contacts, dict):
        return [{"field": CONTACTS_SOURCE, "error": "must group contacts by action"}]
    found: list[tuple[str, str, dict[str, Any]]] = []
    problems: Problems = []
    for action, group in contacts.items():
        where = f"{CONTACTS_SOURCE}[{action}]"
        if not _ACTION.fullmatch(action):
            continue  # not an amoCRM action: ignored, like entities other than contacts
        items = _items(group)
        if items is None:
            problems.append({"field": where, "error": "must be a list of contacts"})
            continue
        for index, contact in items:
            at = f"{where}[{index}]"
            if not isinstance(contact, dict):
                problems.append({"field": at, "error": "must be a contact (its fields)"})
            elif (cid := contact_id(contact.get("id"))) is None:
                error = (
                    "required" if contact.get("id") in (None, "") else "must be a positive integer"
                )
                problems.append({"field": f"{at}[id]", "error": error})
            else:
                found.append((action, cid, contact))
            if len(problems) >= MAX_PROBLEMS:
                return problems
    return problems or found


def _ok(ids: list[int]) -> Answer:
    return 200, b'{"status":"ok","ids":%s}' % orjson.dumps(ids), NO_HEADERS


def _content_type(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value
    return None


# -- handlers ---------------------------------------------------------------------------------


class RdeskHandler(WebhookHandler):
    """One RDESK endpoint (booked or mc), on the key route or the seed's path."""

    provider = PROVIDER

    def __init__(
        self,
        config: ReceiverConfig,
        cache: IntegrationCache,
        store: WebhookStore,
        deadlines: Deadlines | None = None,
        *,
        source: str,
    ) -> None:
        super().__init__(config, cache, store, deadlines)
        self.source = source

    async def handle(self, scope: Scope, receive: Receive) -> Answer:
        """(status, JSON body, extra headers) for one RDESK request."""
        received_at = datetime.now(UTC)
        key = scope.get("path_params", {}).get("webhook_key")
        if key is not None:
            entry = self.cached_integration(key) or await self.integration(key)
        else:
            entry = await self.seed_integration(scope)
        if not isinstance(entry, IntegrationEntry):
            return entry
        body = await self.read_body(scope, receive)
        if isinstance(body, tuple):
            return body
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return answer(400, "body is not valid JSON")
        elements = rdesk_elements(payload)
        if isinstance(elements, tuple):
            return elements
        rows = []
        for index, element in enumerate(elements):
            try:
                text = orjson.dumps(element).decode()
            except orjson.JSONEncodeError:  # nested deeper than orjson writes (254 levels)
                return answer(422, f"element [{index}] is nested too deeply to store")
            values = (
                entry.id,
                self.source,
                None,
                column_id(element.get("lead_id")),
                column_id(element.get("id")),
                text,
                received_at,
            )
            rows.append(InboxRow(INBOX, values, entry.id))
        ids = await self.store_rows(rows)
        return ids if isinstance(ids, tuple) else _ok(ids)

    async def seed_integration(self, scope: Scope) -> IntegrationEntry | Answer:
        """`/zdrav/*`: the integration of the key sent (header or query), else the one
        whose `ip_allowlist` holds the TCP peer's address."""
        key = request_key(scope)
        if isinstance(key, tuple):
            return key
        if key is not None:
            return self.cached_integration(key) or await self.integration(key)
        if not self.cache.loaded:
            return self.unavailable("integrations not loaded yet")
        found = self.cache.allowing(PROVIDER, peer_ip(scope))
        if not found:
            return MISSING_KEY
        if len(found) > 1:
            ids = ", ".join(str(e.id) for e in found)
            log.warning("RDESK source address allowed by integrations %s: refused", ids)
            return SHARED_ADDRESS
        return found[0]


def request_key(scope: Scope) -> str | None | Answer:
    """The webhook key of an `X-Webhook-Key` header or a `?key=` parameter (None: neither);
    401 when they name different keys (which one authenticates is unknown)."""
    keys = {
        value.decode("latin-1").strip() for name, value in scope["headers"] if name == KEY_HEADER
    }
    query = scope.get("query_string", b"")
    if query:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        keys.update(value.strip() for name, value in pairs if name == KEY_PARAM)
    if not keys:
        return None
    if len(keys) > 1:
        return answer(401, "X-Webhook-Key and ?key= name different keys")
    return keys.pop()


class ContactsHandler(WebhookHandler):
    """`POST /webhooks/amocrm/{webhook_key}`: one row per contact per action."""

    provider = PROVIDER

    async def handle(self, scope: Scope, receive: Receive) -> Answer:
        """(status, JSON body, extra headers) for one amoCRM webhook."""
        received_at = datetime.now(UTC)
        key = scope["path_params"]["webhook_key"]
        entry = self.cached_integration(key) or await self.integration(key)
        if not isinstance(entry, IntegrationEntry):
            return entry
        content_type = _content_type(scope)
        as_json = is_json_content_type(content_type)
        if content_type is not None and not as_json and not is_form_content_type(content_type):
            return answer(415, "Content-Type must be application/x-www-form-urlencoded (or JSON)")
        body = await self.read_body(scope, receive, json_required=False)
        if isinstance(body, tuple):
            return body
        webhook = parse_json_webhook(body) if as_json else parse_form_webhook(body)
        if isinstance(webhook, tuple):
            return webhook
        contacts = webhook_contacts(webhook)
        if contacts and isinstance(contacts[0], dict):
            problems: Problems = contacts  # type: ignore[assignment]
            names = ", ".join(dict.fromkeys(p["field"] for p in problems[:10]))
            return 422, error_body(f"invalid contacts: {names}", problems), NO_HEADERS
        account = webhook.get("account")
        account = account if isinstance(account, dict) else {}
        rows = []
        for action, cid, contact in contacts:  # type: ignore[misc]
            try:
                text = orjson.dumps({"contact": contact, "account": account}).decode()
            except orjson.JSONEncodeError:
                return answer(422, f"contact {cid} is nested too deeply to store")
            values = (entry.id, CONTACTS_SOURCE, action, cid, None, text, received_at)
            rows.append(InboxRow(INBOX, values, entry.id))
        ids = await self.store_rows(rows)
        return ids if isinstance(ids, tuple) else _ok(ids)


def parse_form_webhook(body: bytes) -> dict[str, Any] | Answer:
    """A form-encoded body → its nested structure, or the refusal."""
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except UnicodeDecodeError:
        return answer(400, "form body is not UTF-8")
    except ValueError:
        return answer(413, f"form has more than {MAX_FORM_FIELDS} fields")
    try:
        return nest_form(pairs)
    except FormShapeError as exc:
        field = exc.key if len(exc.key) <= 200 else exc.key[:200] + "…"
        fields = [{"field": field, "error": exc.error}]
        return 422, error_body(f"invalid form key: {exc.error}", fields), NO_HEADERS


def parse_json_webhook(body: bytes) -> dict[str, Any] | Answer:
    """A JSON body (the nested shape as an object), or the refusal."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return answer(400, "body is not valid JSON")
    if not isinstance(payload, dict):
        return answer(400, f"body must be a JSON object, not {describe_json(payload)}")
    return payload


# -- routes and their documentation -----------------------------------------------------------

_STORE_ERRORS = {
    413: "Body over the size limit.",
    503: "The database could not commit in time; retry after Retry-After.",
}
_RDESK_ERRORS = {
    400: "Not JSON, or not a JSON array (or an invalid Content-Length).",
    404: "Unknown or disabled webhook key.",
    415: "A Content-Type that is not JSON (none at all is read as JSON).",
    422: "Array elements that are not objects, each named by index; nothing stored.",
    **_STORE_ERRORS,
}
_RDESK_DESCRIPTION = (
    "A JSON array of RDESK updates. One `amocrm_inbox` row per element (its fields are "
    "validated by the sync, which records each element's errors on its task), all "
    'committed before the 200 `{"status": "ok", "ids": [...]}`; an empty array stores '
    "nothing."
)
_BODIES: dict[str, type[BaseModel]] = {"booked": RdeskBookedBody, "mc": RdeskMcBody}


def _rdesk_operations() -> list[Operation]:
    ops = []
    for source in RDESK_ENDPOINTS:
        ops.append(
            Operation(
                path=f"{RDESK_KEY_PATH}{source}",
                method="post",
                summary=f"RDESK {source} updates for one integration",
                description=_RDESK_DESCRIPTION,
                body=_BODIES[source],
                ok=AmocrmAccepted,
                errors=_RDESK_ERRORS,
                path_params={"webhook_key": "The amoCRM integration's webhook key."},
                tags=("rdesk",),
            )
        )
        ops.append(
            Operation(
                path=f"{SEED_PATH}{source}",
                method="post",
                summary=f"RDESK {source} updates (the gateway's path)",
                description=_RDESK_DESCRIPTION
                + " The integration is the one whose webhook key is sent (X-Webhook-Key or "
                "?key=); without a key, the one active amoCRM integration whose ip_allowlist "
                "holds the connection's source address (X-Forwarded-For is not trusted).",
                body=_BODIES[source],
                ok=AmocrmAccepted,
                errors=_RDESK_ERRORS
                | {
                    400: _RDESK_ERRORS[400] + " Or X-Webhook-Key and ?key= differ.",
                    401: "No key, and no integration allows the source address.",
                    404: "Unknown or disabled webhook key.",
                    409: "The source address is allowed by several integrations.",
                },
                query_params={KEY_PARAM: "The integration's webhook key."},
                header_params={"X-Webhook-Key": "The integration's webhook key."},
                tags=("rdesk",),
            )
        )
    return ops


OPERATIONS: tuple[Operation, ...] = (
    *_rdesk_operations(),
    *oauth.OPERATIONS,
    Operation(
        path=CONTACTS_PATH,
        method="post",
        summary="An amoCRM webhook: contacts are stored, then synced",
        description="`application/x-www-form-urlencoded` with nested keys "
        "(`contacts[add][0][id]=111&account[subdomain]=clinic`), or a JSON object of that "
        "shape. One `amocrm_inbox` row per contact per action (add, update, delete, "
        "restore, …), committed before the 200; other entities (leads, companies, tasks, "
        "…) are accepted and ignored (200, no row).",
        body=AmocrmContactWebhookJson,
        other_bodies={"application/x-www-form-urlencoded": AmocrmContactWebhookForm},
        ok=AmocrmAccepted,
        errors={
            400: "A body that is not UTF-8 form data (or not a JSON object).",
            404: "Unknown or disabled webhook key.",
            415: "A Content-Type that is neither form data nor JSON.",
            422: "A contact without an id (or keys that do not nest), each named.",
            **_STORE_ERRORS,
        },
        path_params={"webhook_key": "The amoCRM integration's webhook key."},
        tags=(PROVIDER,),
    ),
)


def _rdesk_factory(source: str) -> Callable[[Receiver], RdeskHandler]:
    return lambda r: RdeskHandler(r.config, r.cache, r.store, r.deadlines, source=source)


def routes(receiver: Receiver) -> list[BaseRoute]:
    """The RDESK routes (key in the path, and the seed's), the contact webhook route and
    the OAuth callback (`.oauth`)."""
    out: list[BaseRoute] = []
    for source in RDESK_ENDPOINTS:
        endpoint = receiver.endpoint(_rdesk_factory(source))
        out.append(Route(f"{RDESK_KEY_PATH}{source}", endpoint, methods=["POST"]))
        out.append(Route(f"{SEED_PATH}{source}", endpoint, methods=["POST"]))
    contacts = receiver.endpoint(lambda r: ContactsHandler(r.config, r.cache, r.store, r.deadlines))
    out.append(Route(CONTACTS_PATH, contacts, methods=["POST"]))
    return out + oauth.routes(receiver)
