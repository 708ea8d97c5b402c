"""The traffic mirror: stored webhooks of every provider reach an integration's mirror_url
in order, at least once, whatever it answers; `crm-sync replay` re-sends a time range."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from click.testing import CliRunner
from dagster import DagsterInstance, RunRequest, SkipReason, build_sensor_context
from sqlalchemy import Engine, insert, select, update
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crm_schema.integrations import Integration, add_integration, update_integration
from crm_schema.providers.allio import allio_webhook
from crm_schema.providers.amocrm import amocrm_inbox
from crm_schema.providers.iiko import webhook_events
from crm_schema.tables import inbox_mirror_cursors
from crm_sync.cli import main
from orchestration.core import mirror
from orchestration.defs.maintenance.mirror import inbox_mirror, inbox_mirror_sensor
from orchestration.resources.database import CrmDatabase
from provider_emulators.testing import ServerThread
from tests.conftest import output_metadata
from tests.receiver_fixtures import serve_receiver

ALLIO_UUID = "0b7d6c3e-1f2a-4b5c-9d8e-7f6a5b4c3d2e"
IIKO_TOKEN = "iiko-mirror-token-0123456789"


# -- a mirror that records what it gets ---------------------------------------------------


@dataclass
class Recorder:
    """A stand-in test installation: records every request, answers `status`."""

    status: int = 200
    seen: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def record(request: Request) -> Response:
            self.seen.append(
                {
                    "method": request.method,
                    "path": request.url.path,
                    "headers": dict(request.headers),
                    "body": await request.body(),
                }
            )
            return Response(b"mirror says no" if self.status >= 400 else b"{}", self.status)

        return Starlette(routes=[Route("/{path:path}", record, methods=["POST", "PUT"])])

    def rows(self) -> list[str]:
        return [r["headers"]["x-mirror-row"] for r in self.seen]


@pytest.fixture
def recorder() -> Iterator[tuple[Recorder, ServerThread]]:
    rec = Recorder()
    server = ServerThread(rec.app())
    server.start()
    yield rec, server
    server.stop()


# -- integrations and rows ------------------------------------------------------------------


def _add(engine: Engine, provider: str, name: str, mirror_url: str | None, **extra: Any):
    settings = {"mirror_url": mirror_url} if mirror_url else {}
    if provider == "amocrm":
        settings |= {"subdomain": "clinic", "client_id": "cid", "redirect_uri": "http://x.test/cb"}
    with engine.begin() as conn:
        return add_integration(
            conn,
            provider=provider,
            name=name,
            integration_uuid=extra.get("uuid"),
            api_base_url="http://provider.invalid",
            credentials={"token": "never-sent-anywhere-0123"},
            settings=settings,
            webhook_secret=extra.get("secret"),
        )


def _set_mirror(engine: Engine, integ: Integration, url: str | None) -> None:
    settings = dict(integ.settings)
    if url:
        settings["mirror_url"] = url
    else:
        settings.pop("mirror_url", None)
    with engine.begin() as conn:
        update_integration(conn, integ.id, settings=settings)


def _insert(engine: Engine, table: Any, **values: Any) -> int:
    with engine.begin() as conn:
        return conn.execute(insert(table).values(**values).returning(table.c.id)).scalar_one()


def _allio_row(engine: Engine, integ: Integration, command: str, ids: list[int], **kw) -> int:
    return _insert(
        engine,
        allio_webhook,
        integration_id=integ.id,
        integration_uuid=ALLIO_UUID,
        command=command,
        external_ids_array=json.dumps(ids),
        **kw,
    )


def _cursor(engine: Engine, integ: Integration, inbox: str) -> tuple[int, str | None] | None:
    c = inbox_mirror_cursors.c
    with engine.connect() as conn:
        row = conn.execute(
            select(c.last_id, c.error).where(c.integration_id == integ.id, c.inbox == inbox)
        ).first()
    return None if row is None else (row.last_id, row.error)


def _run_job(url: str, instance: DagsterInstance | None = None) -> dict[str, Any]:
    result = inbox_mirror.execute_in_process(
        instance=instance or DagsterInstance.ephemeral(),
        resources={"crm_db": CrmDatabase(database_url=url)},
    )
    assert result.success
    return output_metadata(result)


def _tick(url: str, instance: DagsterInstance) -> RunRequest | SkipReason:
    context = build_sensor_context(
        instance=instance, resources={"crm_db": CrmDatabase(database_url=url)}
    )
    return inbox_mirror_sensor(context)


# -- tests ----------------------------------------------------------------------------------


def test_every_provider_is_mirrored_in_order_as_it_was_posted(database_url, engine, recorder):
    rec, server = recorder
    base = server.base_url + "/install"  # a mirror base with a path prefix
    allio = _add(engine, "allio", "allio-m", base, uuid=ALLIO_UUID)
    iiko = _add(engine, "iiko", "iiko-m", base, secret=IIKO_TOKEN)
    amo = _add(engine, "amocrm", "amo-m", base)
    quiet = _add(engine, "allio", "allio-quiet", None, uuid="1b7d6c3e-1f2a-4b5c-9d8e-7f6a5b4c3d2e")

    # ALLIO and iiko through the real receiver, exactly as the providers post.
    cloud = [
        {
            "eventType": "DeliveryOrderUpdate",
            "eventTime": "2026-11-30 06:00:00.123",
            "organizationId": "org-1",
            "correlationId": "corr-1",
            "eventInfo": {"id": "ord-1", "externalNumber": "ext-1", "order": {"sum": 10}},
        },
        {
            "eventType": "StopListUpdate",
            "eventTime": "2026-11-30 06:00:01.000",
            "organizationId": "org-1",
            "correlationId": "corr-2",
            "eventInfo": {"terminalGroupsStopListsUpdates": []},
        },
    ]
    soi = {"type": "CREATE", "orderExternalId": "ext-2", "iikoOrderDetails": {"iikoOrderId": "o2"}}
    auth = {"Authorization": IIKO_TOKEN}
    with (
        serve_receiver(database_url) as receiver,
        httpx.Client(base_url=receiver, timeout=10) as http,
    ):
        reserve = {"uuid": ALLIO_UUID, "command": "RESERVE_ADD", "indexes": [111, "222"]}
        card = {"uuid": ALLIO_UUID, "command": "DEALCARD_MOD", "indexes": "[5]"}
        other = {"uuid": quiet.integration_uuid, "command": "RESERVE_ADD", "indexes": [9]}
        sent = [
            http.post(allio.webhook_path, json=reserve),
            http.post(iiko.webhook_path, json=cloud, headers=auth),
            http.post(iiko.webhook_path, json=soi, headers=auth),
            http.post(iiko.webhook_path, content=b"not json \xff", headers=auth),
            http.post(iiko.webhook_path, content=b"plain {", headers=auth),
            http.post(allio.webhook_path, json=card),
            http.post(quiet.webhook_path, json=other),
        ]
    assert [r.status_code for r in sent] == [200] * len(sent), [r.text for r in sent]
    # amoCRM rows as its receiver stores them (one per RDESK element / per contact).
    booked = {"id": 7, "lead_id": "23392663", "status": "booked", "money": {"total": 5, "paid": 1}}
    mc = {"id": 8, "lead_id": 42, "name": "Иванов", "treatments": [{"item_id": 1, "pay": True}]}
    contact = {
        "contact": {
            "id": "111",
            "name": "Анна",
            "custom_fields": [{"id": "5", "code": "PHONE", "values": [{"value": "+7 900"}]}],
        },
        "account": {"subdomain": "clinic", "id": "29"},
    }
    amo_rows = [
        _insert(engine, amocrm_inbox, integration_id=amo.id, source=source, payload=payload, **kw)
        for source, payload, kw in (
            ("booked", booked, {"external_id": "23392663", "rdesk_id": "7"}),
            ("mc", mc, {"external_id": "42", "rdesk_id": "8"}),
            ("contacts", contact, {"external_id": "111", "action": "add"}),
        )
    ]

    meta = _run_job(database_url)

    assert meta["forwarded"] == 2 + 5 + 3 and meta["errors"] == 0 and meta["lag"] == 0
    by_path: dict[str, list[dict]] = {}
    for req in rec.seen:
        by_path.setdefault(req["path"], []).append(req)
    assert f"/install/webhooks/allio/{quiet.webhook_key}" not in by_path  # no mirror_url
    allio_seen = by_path[f"/install/webhooks/allio/{allio.webhook_key}"]
    assert [json.loads(r["body"]) for r in allio_seen] == [
        {"uuid": ALLIO_UUID, "command": "RESERVE_ADD", "indexes": [111, 222]},
        {"uuid": ALLIO_UUID, "command": "DEALCARD_MOD", "indexes": [5]},
    ]
    iiko_seen = by_path[f"/install/webhooks/iiko/{iiko.webhook_key}"]
    assert [r["body"] for r in iiko_seen[3:]] == [b"not json \xff", b"plain {"]
    assert [json.loads(r["body"]) for r in iiko_seen[:3]] == [[cloud[0]], [cloud[1]], soi]
    assert {r["headers"]["authorization"] for r in iiko_seen} == {IIKO_TOKEN}
    amo_seen = [r for r in rec.seen if r["headers"]["x-mirror-row"].startswith("amocrm_inbox:")]
    assert [r["path"] for r in amo_seen] == [
        f"/install/webhooks/rdesk/{amo.webhook_key}/booked",
        f"/install/webhooks/rdesk/{amo.webhook_key}/mc",
        f"/install/webhooks/amocrm/{amo.webhook_key}",
    ]
    assert [json.loads(r["body"]) for r in amo_seen[:2]] == [[booked], [mc]]
    assert amo_seen[2]["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qsl(amo_seen[2]["body"].decode()) == [
        ("contacts[add][0][id]", "111"),
        ("contacts[add][0][name]", "Анна"),
        ("contacts[add][0][custom_fields][0][id]", "5"),
        ("contacts[add][0][custom_fields][0][code]", "PHONE"),
        ("contacts[add][0][custom_fields][0][values][0][value]", "+7 900"),
        ("account[subdomain]", "clinic"),
        ("account[id]", "29"),
    ]
    # In id order per integration; nothing is sent twice by a second pass.
    for prefix in ("allio_webhook:", "webhook_events:", "amocrm_inbox:"):
        ids = [int(r.split(":")[1]) for r in rec.rows() if r.startswith(prefix)]
        assert ids == sorted(ids)
    assert _cursor(engine, amo, "amocrm_inbox") == (amo_rows[-1], None)
    assert _cursor(engine, quiet, "allio_webhook") is None
    count = len(rec.seen)
    assert _run_job(database_url)["forwarded"] == 0
    assert len(rec.seen) == count


def test_answers_are_ignored_and_a_mirror_down_is_retried_in_order(database_url, engine, recorder):
    rec, server = recorder
    integ = _add(engine, "allio", "allio-m", server.base_url, uuid=ALLIO_UUID)
    rec.status = 500
    first = _allio_row(engine, integ, "RESERVE_ADD", [1])
    reports = mirror.forward_pending(engine)
    assert [(r.forwarded, dict(r.statuses), r.error) for r in reports] == [(1, {500: 1}, None)]
    assert _cursor(engine, integ, "allio_webhook") == (first, None)

    port = server.port
    server.stop()  # the mirror goes away
    rows = [_allio_row(engine, integ, "RESERVE_MOD", [n]) for n in (2, 3, 4)]
    (down,) = mirror.forward_pending(engine)
    assert down.forwarded == 0 and "Connect" in (down.error or "")
    assert integ.webhook_key not in down.error
    last_id, error = _cursor(engine, integ, "allio_webhook")
    assert last_id == first and error == down.error
    assert down.lag == 3

    rec.status = 202
    back = ServerThread(rec.app(), port=port)  # the mirror is back on the same address
    back.start()
    try:
        (report,) = mirror.forward_pending(engine, batch=2)  # bounded: two per pass
        assert report.forwarded == 2 and report.lag == 1
        (report,) = mirror.forward_pending(engine, batch=2)
        assert report.forwarded == 1 and report.lag == 0 and report.error is None
    finally:
        back.stop()
    assert rec.rows() == [f"allio_webhook:{i}" for i in [first, *rows]]
    assert [json.loads(r["body"])["indexes"] for r in rec.seen] == [[1], [2], [3], [4]]
    assert _cursor(engine, integ, "allio_webhook") == (rows[-1], None)


def test_a_row_above_an_id_gap_waits_until_the_gap_is_settled(engine, recorder):
    rec, server = recorder
    integ = _add(engine, "allio", "allio-m", server.base_url, uuid=ALLIO_UUID)
    first = _allio_row(engine, integ, "RESERVE_ADD", [1])
    # An id skipped: a lower id may still be committed by a transaction in flight.
    late = _allio_row(engine, integ, "RESERVE_ADD", [3], id=first + 2)
    (report,) = mirror.forward_pending(engine)
    assert report.forwarded == 1 and report.lag == 1
    assert rec.rows() == [f"allio_webhook:{first}"]
    # Once the row above the gap is older than any transaction can live, the gap is final.
    old = datetime.now(UTC) - timedelta(seconds=mirror.SETTLE_SECONDS + 5)
    with engine.begin() as conn:
        conn.execute(update(allio_webhook).where(allio_webhook.c.id == late).values(created_at=old))
    (report,) = mirror.forward_pending(engine)
    assert report.forwarded == 1 and report.lag == 0
    assert rec.rows() == [f"allio_webhook:{first}", f"allio_webhook:{late}"]


def test_the_sensor_requests_a_run_only_when_rows_wait(database_url, engine, recorder):
    _rec, server = recorder
    instance = DagsterInstance.ephemeral()
    integ = _add(engine, "allio", "allio-m", None, uuid=ALLIO_UUID)
    _allio_row(engine, integ, "RESERVE_ADD", [1])
    assert isinstance(_tick(database_url, instance), SkipReason)  # no mirror_url
    _set_mirror(engine, integ, server.base_url)
    request = _tick(database_url, instance)
    assert isinstance(request, RunRequest) and request.tags["crm/mirror"] == str(integ.id)
    meta = _run_job(database_url, instance)
    report = meta[f"integration_{integ.id}_allio_webhook"]
    assert report["forwarded"] == 1 and report["lag"] == 0 and report["error"] is None
    assert isinstance(_tick(database_url, instance), SkipReason)  # all forwarded
    _allio_row(engine, integ, "RESERVE_MOD", [1])
    assert isinstance(_tick(database_url, instance), RunRequest)


def _cli(database_url: str, *args: str) -> Any:
    result = CliRunner().invoke(main, ["replay", "--database-url", database_url, *args])
    return result


def test_replay_resends_a_time_range_to_a_url_or_the_mirror(database_url, engine, recorder):
    rec, server = recorder
    secret = "iiko-replay-secret-0123456789"
    a = _add(engine, "iiko", "iiko-a", None, secret=secret)
    b = _add(engine, "iiko", "iiko-b", None, secret=secret + "-b")
    t0 = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)

    def event(integ: Integration, n: int, minutes: int) -> int:
        return _insert(
            engine,
            webhook_events,
            integration_id=integ.id,
            event_type="DeliveryOrderUpdate",
            payload={"eventType": "DeliveryOrderUpdate", "n": n},
            received_at=t0 + timedelta(minutes=minutes),
        )

    rows_a = [event(a, 1, 0), event(a, 2, 5), event(a, 3, 10), event(a, 4, 30)]
    event(b, 5, 6)
    raw = _insert(
        engine,
        webhook_events,
        integration_id=a.id,
        raw_body="base64:" + base64.b64encode(b"\x00\xff").decode(),
        received_at=t0 + timedelta(minutes=7),
    )
    window = ["--provider", "iiko", "--from", "2026-11-30T06:00:00Z", "--to", "2026-11-30T06:10"]

    # To --to-url, one integration: rows in [from, to), in id order.
    target = server.base_url + "/replayed"
    out = _cli(database_url, *window, "--integration", str(a.id), "--to-url", target, "--json")
    assert out.exit_code == 0, out.output
    body = json.loads(out.output)
    assert (body["rows"], body["sent"], body["ok"]) == (3, 3, True)
    assert rec.rows() == [f"webhook_events:{i}" for i in (rows_a[0], rows_a[1], raw)]
    assert rec.seen[-1]["body"] == b"\x00\xff"
    assert {r["headers"]["x-mirror-replay"] for r in rec.seen} == {"1"}
    assert secret not in out.output and a.webhook_key not in out.output

    # Without --to-url: each integration's mirror_url; one without it is only counted.
    rec.seen.clear()
    rec.status = 503
    _set_mirror(engine, b, server.base_url)
    out = _cli(database_url, *window)
    assert out.exit_code == 0, out.output
    assert "not sent (no mirror_url" in out.output and "sent 1 of 4 rows" in out.output
    assert [r["path"] for r in rec.seen] == [f"/webhooks/iiko/{b.webhook_key}"]
    assert b.webhook_key not in out.output and secret not in out.output
    # Replays never move the forwarder's cursors.
    assert _cursor(engine, b, "webhook_events") is None

    # Nothing in range; a bad --to-url; --to before --from.
    out = _cli(database_url, "--provider", "amocrm", "--from", "2020-01-01", "--to", "2020-01-02")
    assert out.exit_code == 0 and "nothing to send" in out.output
    out = _cli(database_url, *window, "--to-url", "ftp://x.example")
    assert out.exit_code == 2 and "http(s)" in out.output
    out = _cli(database_url, "--provider", "iiko", "--from", "2026-11-30", "--to", "2026-11-29")
    assert out.exit_code == 2 and "after --from" in out.output

    # The target down: stops, says why (URL credentials never shown), exits non-zero.
    port = server.port
    server.stop()
    out = _cli(database_url, *window, "--to-url", f"http://user:pw-9876@127.0.0.1:{port}/x")
    assert out.exit_code == 1 and "stopped:" in out.output, out.output
    assert "pw-9876" not in out.output and "127.0.0.1" in out.output


def test_one_pass_at_a_time_per_integration_and_no_run_beside_a_live_one(
    database_url, engine, recorder
):
    rec, server = recorder
    integ = _add(engine, "allio", "allio-m", server.base_url, uuid=ALLIO_UUID)
    _allio_row(engine, integ, "RESERVE_ADD", [1])
    instance = DagsterInstance.ephemeral()
    # A run already queued: the sensor waits for it instead of stacking another.
    instance.create_run_for_job(inbox_mirror)
    skipped = _tick(database_url, instance)
    assert isinstance(skipped, SkipReason) and "forwarding" in (skipped.skip_message or "")
    if engine.dialect.name != "postgresql":
        return  # SQLite: passes are kept apart by the sensor alone
    # PostgreSQL: a pass holds the cursor row; a second pass meanwhile leaves it alone.
    mirror.forward_pending(engine)  # creates the cursor
    _allio_row(engine, integ, "RESERVE_MOD", [1])
    c = inbox_mirror_cursors.c
    with engine.connect() as held, held.begin():
        held.execute(select(c.last_id).where(c.integration_id == integ.id).with_for_update())
        (busy,) = mirror.forward_pending(engine)
    assert busy.busy and busy.forwarded == 0
    (report,) = mirror.forward_pending(engine)
    assert report.forwarded == 1 and len(rec.seen) == 2


def test_uon_rows_are_mirrored_with_the_keys_they_were_sent_with(database_url, engine, recorder):
    rec, server = recorder
    base = server.base_url + "/install"
    with engine.begin() as conn:
        uon = add_integration(
            conn,
            provider="uon",
            name="uon-m",
            integration_uuid=None,
            api_base_url="http://provider.invalid",
            credentials={"api_key": "never-sent-anywhere-0123"},
            settings={"mirror_url": base},
        )
    event = {"event": "start", "call_id": "c-1", "direction": "in", "phone": "375296254070"}
    form = {"type_id": "4", "ID клиента": "1001", "uon_id": "67054"}
    with (
        serve_receiver(database_url) as receiver,
        httpx.Client(base_url=receiver, timeout=10) as http,
    ):
        sent = [
            http.post(f"/webhooks/telephony/{uon.webhook_key}", json=event),
            http.post(f"/webhooks/uon/{uon.webhook_key}", data=form),
        ]
    assert [r.status_code for r in sent] == [200, 200], [r.text for r in sent]

    assert _run_job(database_url)["forwarded"] == 2
    telephony, webhook = rec.seen
    assert telephony["path"] == f"/install/webhooks/telephony/{uon.webhook_key}"
    assert json.loads(telephony["body"]) == event
    assert webhook["path"] == f"/install/webhooks/uon/{uon.webhook_key}"
    assert webhook["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert dict(parse_qsl(webhook["body"].decode())) == form
