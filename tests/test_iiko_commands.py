"""iiko command outbox: pending rows → the iiko emulator over HTTP → succeeded / failed.

Real parts: the iiko emulator served by uvicorn, SQLite and PostgreSQL, the
rate-limited client with its stored access token, a Dagster instance for the job.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from dagster import DagsterInstance, build_sensor_context
from sqlalchemy import Engine, insert, select, update

from crm_schema.engine import make_engine
from crm_schema.integrations import Integration, add_integration
from crm_schema.providers import iiko_commands as cmds
from crm_schema.providers.iiko import iiko_commands, orders
from crm_sync.cli import main
from orchestration.definitions import build_definitions
from orchestration.defs.iiko.commands import iiko_command_sensor
from orchestration.defs.iiko.resources import IikoResource
from orchestration.iiko.commands import SenderOptions, claim, send_commands
from orchestration.resources.database import CrmDatabase
from provider_emulators.iiko import create_app, records
from provider_emulators.testing import running_server
from tests.conftest import output_metadata

API_LOGIN = "cmd-api-login-0123456789"
WEBHOOK_TOKEN = "cmd-webhook-token-"  # + a suffix per integration (tokens are unique)
ORG = "7bc05553-4b68-44e8-b7bc-37be63c6d9e9"
COMMAND_DELAY = 0.3
FAST = {"poll_interval_seconds": 0.1, "time_budget_seconds": 8.0}


@pytest.fixture(scope="module")
def emulator() -> Iterator[tuple[Any, str]]:
    app = create_app(api_login=API_LOGIN, command_delay=COMMAND_DELAY)
    with running_server(app) as url:
        yield app, url


@pytest.fixture
def api(emulator: tuple[Any, str]) -> Iterator[str]:
    _app, url = emulator
    httpx.delete(url + "/_admin/requests")
    httpx.delete(url + "/_admin/faults")
    yield url
    httpx.delete(url + "/_admin/faults")


@pytest.fixture
def crm(database_url: str) -> Iterator[tuple[str, Engine]]:
    engine = make_engine(database_url)
    yield database_url, engine
    engine.dispose()


def add_iiko(engine: Engine, base_url: str, **settings: Any) -> Integration:
    with engine.begin() as conn:
        return add_integration(
            conn,
            provider="iiko",
            name=f"iiko-{uuid.uuid4().hex[:6]}",
            integration_uuid=None,
            api_base_url=base_url,
            credentials={"api_login": API_LOGIN},
            settings={"organization_ids": [ORG], **settings},
            webhook_secret=WEBHOOK_TOKEN + uuid.uuid4().hex,
        )


def live_order_id() -> str:
    """An order id the emulator generates in a status iiko still lets commands change."""
    while True:
        order_id = str(uuid.uuid4())
        status = records.make_order(order_id, ORG)["order"]["status"]
        if status not in records.FINAL_STATUSES and not records.is_failing(order_id):
            return order_id


def add_order(engine: Engine, integ: Integration, iiko_id: str | None = None, **values: Any) -> int:
    iiko_id = iiko_id or live_order_id()
    with engine.begin() as conn:
        return conn.execute(
            insert(orders)
            .values(
                integration_id=integ.id,
                external_id=iiko_id,
                iiko_order_id=iiko_id,
                organization_id=ORG,
                status=values.pop("status", "CookingStarted"),
                custom_fields={},
                raw={},
                **values,
            )
            .returning(orders.c.id)
        ).scalar_one()


def new_command(
    engine: Engine,
    integ: Integration,
    kind: str,
    body: dict[str, Any],
    order_id: int | None = None,
    key: str | None = None,
) -> tuple[int, bool]:
    with engine.begin() as conn:
        order = cmds.find_order_by_id(conn, order_id) if order_id is not None else None
        row, created = cmds.create_command(
            conn,
            integration_id=integ.id,
            kind=kind,
            order=order,
            body=body,
            idempotency_key=key,
            created_by="test",
        )
    return row.id, created


def sender(url: str, **options: Any) -> Any:
    resource = IikoResource(database_url=url, max_attempts=1)
    opts = SenderOptions(
        run_id=options.pop("run_id", f"t-{uuid.uuid4().hex[:8]}"), **(FAST | options)
    )
    return lambda engine: send_commands(engine, resource.client_for, opts)


def row(engine: Engine, command_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(iiko_commands).where(iiko_commands.c.id == command_id)).one()


def order_row(engine: Engine, order_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(orders).where(orders.c.id == order_id)).one()


def calls(api: str, suffix: str) -> list[dict[str, Any]]:
    return [c for c in httpx.get(api + "/_admin/requests").json() if c["path"].endswith(suffix)]


def test_update_status_goes_sent_in_progress_then_succeeded(crm, api) -> None:
    url, engine = crm
    integ = add_iiko(engine, api)
    order_id = add_order(engine, integ)
    command_id, _ = new_command(engine, integ, "update-status", {"status": "OnWay"}, order_id)
    assert row(engine, command_id).status == "pending"

    # A pass shorter than iiko's processing leaves the row sent and InProgress.
    first = sender(url, time_budget_seconds=0.05)(engine)
    sent = row(engine, command_id)
    assert (first.sent, sent.status, sent.provider_status) == (1, "sent", "InProgress")
    assert sent.correlation_id and sent.sent_at is not None
    assert order_row(engine, order_id).status == "CookingStarted"

    report = sender(url)(engine)
    done = row(engine, command_id)
    assert (done.status, done.provider_status, done.error) == ("succeeded", "Success", None)
    assert done.finished_at is not None and done.lease_expires_at is None
    assert report.succeeded == 1 and report.sent == 0 and report.in_progress == 0
    assert order_row(engine, order_id).status == "OnWay"
    [sent_call] = calls(api, "/deliveries/update_order_delivery_status")
    assert sent_call["status"] == 200
    # Followed to Success through commands/status (how often depends on how fast the
    # machine is against iiko's processing time: the first short pass may not poll).
    assert len(calls(api, "/commands/status")) >= 1


def test_courier_then_cancel_in_order_and_order_updated(crm, api) -> None:
    url, engine = crm
    integ = add_iiko(engine, api)
    order_id = add_order(engine, integ)
    courier = str(uuid.uuid4())
    first, _ = new_command(
        engine, integ, "assign-courier", {"courier_id": courier, "courier_name": "Пётр"}, order_id
    )
    second, _ = new_command(engine, integ, "cancel", {"cancel_reason": "Клиент"}, order_id)
    report = sender(url)(engine)
    assert report.succeeded == 2 and report.failed == 0
    got = order_row(engine, order_id)
    assert (got.courier_id, got.courier_name, got.status) == (courier, "Пётр", "Cancelled")
    # One order's commands go one after the other: the cancel waited for the courier.
    assert row(engine, first).finished_at <= row(engine, second).sent_at
    [cancel] = calls(api, "/deliveries/cancel")
    assert cancel["status"] == 200


def test_impossible_command_fails_with_iikos_reason(crm, api) -> None:
    url, engine = crm
    integ = add_iiko(engine, api)
    dead = str(uuid.uuid4())[:-4] + "dead"  # the emulator fails every command on it
    order_id = add_order(engine, integ, dead)
    command_id, _ = new_command(engine, integ, "update-status", {"status": "Delivered"}, order_id)
    report = sender(url)(engine)
    failed = row(engine, command_id)
    assert (failed.status, failed.provider_status) == ("failed", "Error")
    assert (
        failed.error
        == f"Order {dead} cannot be changed right now (the terminal rejected the command)"
    )
    assert failed.result["state"] == "Error"
    assert report.failed == 1
    assert order_row(engine, order_id).status == "CookingStarted"


def test_command_for_a_missing_order_fails_clearly_and_sends_nothing(crm, api) -> None:
    url, engine = crm
    integ = add_iiko(engine, api)
    order_id = add_order(engine, integ)
    command_id, _ = new_command(engine, integ, "update-status", {"status": "OnWay"}, order_id)
    with engine.begin() as conn:
        conn.execute(update(iiko_commands).values(order_id=None))
    sender(url)(engine)
    failed = row(engine, command_id)
    assert failed.status == "failed"
    assert "names no order" in failed.error and "nothing was sent" in failed.error
    assert calls(api, "/deliveries/update_order_delivery_status") == []


def test_loyalty_topup_hold_cancel_hold_chargeoff(crm, api) -> None:
    url, engine = crm
    integ = add_iiko(engine, api)
    customer = str(uuid.uuid4())

    def run(kind: str, body: dict[str, Any]) -> Any:
        command_id, _ = new_command(engine, integ, kind, body)
        sender(url)(engine)
        done = row(engine, command_id)
        assert done.status == "succeeded", done.error
        assert done.finished_at is not None and done.correlation_id is None  # no status polls
        return done

    info = run("loyalty-customer-info", {"customer_id": customer}).result
    assert info["id"] == customer
    wallet = info["walletBalances"][0]["id"]
    balance = info["walletBalances"][0]["balance"]
    money = {"customer_id": customer, "wallet_id": wallet}
    run("loyalty-topup", money | {"amount": 200, "comment": "Бонусы за заказ"})
    hold = run("loyalty-hold", money | {"amount": 100.5, "comment": "Холд"})
    transaction = hold.result["transactionId"]
    assert transaction
    run("loyalty-cancel-hold", {"transaction_id": transaction})
    run("loyalty-chargeoff", money | {"amount": 50})
    after = run("loyalty-customer-info", {"customer_id": customer}).result
    assert after["walletBalances"][0]["balance"] == pytest.approx(balance + 150)
    for path in ("/wallet/topup", "/wallet/hold", "/wallet/cancel_hold", "/wallet/chargeoff"):
        assert [c["status"] for c in calls(api, path)] == [200]

    # iiko's 400 (a hold cancelled twice) fails the row with iiko's description.
    again, _ = new_command(engine, integ, "loyalty-cancel-hold", {"transaction_id": transaction})
    sender(url)(engine)
    refused = row(engine, again)
    assert refused.status == "failed"
    assert refused.error == (
        f"iiko refused the command: iiko: request rejected (400): Hold {transaction} "
        "is already cancelled (Incorrect)"
    )


def test_payment_change_and_close(crm, api) -> None:
    url, engine = crm
    integ = add_iiko(engine, api)
    order_id = add_order(engine, integ)
    card = str(uuid.uuid4())
    payments = {"payments": [{"paymentTypeKind": "Card", "sum": 1200.5, "paymentTypeId": card}]}
    paid, _ = new_command(engine, integ, "update-payment", payments, order_id)
    closed, _ = new_command(engine, integ, "update-status", {"status": "Closed"}, order_id)
    sender(url)(engine)
    assert (row(engine, paid).status, row(engine, closed).status) == ("succeeded", "succeeded")
    assert order_row(engine, order_id).status == "Closed"
    [change] = calls(api, "/deliveries/change_payments")
    [close] = calls(api, "/deliveries/close")
    assert change["status"] == close["status"] == 200
    at_iiko = {c["correlationId"]: c for c in httpx.get(api + "/_admin/commands").json()}
    sent = at_iiko[row(engine, paid).correlation_id]
    assert sent["state"] == "Success" and sent["body"]["payments"] == payments["payments"]


def test_repeated_idempotency_key_sends_once(crm, api) -> None:
    url, engine = crm
    integ = add_iiko(engine, api)
    order_id = add_order(engine, integ)
    body = {"status": "Delivered"}
    first, created = new_command(engine, integ, "update-status", body, order_id, key="k-1")
    again, created_again = new_command(engine, integ, "update-status", body, order_id, key="k-1")
    assert (first, created, created_again) == (again, True, False)
    sender(url)(engine)
    new_command(engine, integ, "update-status", body, order_id, key="k-1")
    sender(url)(engine)
    assert row(engine, first).status == "succeeded"
    assert len(calls(api, "/deliveries/update_order_delivery_status")) == 1


def test_a_crashed_claim_comes_back_after_its_lease(crm, api) -> None:
    url, engine = crm
    integ = add_iiko(engine, api)
    order_id = add_order(engine, integ)
    command_id, _ = new_command(engine, integ, "update-status", {"status": "Waiting"}, order_id)
    dead = SenderOptions(run_id="dead-run", lease=timedelta(seconds=0.6))
    with engine.begin() as conn:
        [claimed] = claim(conn, dead)
    assert claimed.id == command_id  # …and the run dies here, holding it

    early = sender(url, time_budget_seconds=0.2)(engine)
    assert early.sent == 0 and row(engine, command_id).run_id == "dead-run"
    time.sleep(0.7)
    late = sender(url)(engine)
    assert late.sent == 1 and row(engine, command_id).status == "succeeded"


def test_an_interrupted_send_is_never_repeated_blindly(crm, api) -> None:
    url, engine = crm
    integ = add_iiko(engine, api)
    order_id = add_order(engine, integ)
    status_id, _ = new_command(engine, integ, "update-status", {"status": "OnWay"}, order_id)
    topup_id, _ = new_command(
        engine,
        integ,
        "loyalty-topup",
        {"customer_id": str(uuid.uuid4()), "wallet_id": str(uuid.uuid4()), "amount": 50},
    )
    landed_order = live_order_id()
    landed_id, _ = new_command(
        engine, integ, "cancel", {"cancel_reason": "Дубль"}, add_order(engine, integ, landed_order)
    )
    # This cancel reached iiko before its run died.
    with IikoResource(database_url=url).client_for(integ) as client:
        body = {"organizationId": ORG, "orderId": landed_order, "cancelComment": "Дубль"}
        client.call("deliveries/cancel", body)
        time.sleep(COMMAND_DELAY + 0.05)
    # A run marked them all as being sent, then died before it could record the answers.
    with engine.begin() as conn:
        conn.execute(update(iiko_commands).values(sent_at=iiko_commands.c.created_at))
    sender(url)(engine)
    # An absolute state change is sent again; money is not.
    assert row(engine, status_id).status == "succeeded"
    # iiko refuses the repeated cancel (the order is Cancelled): the first one landed.
    landed = row(engine, landed_id)
    assert (landed.status, landed.provider_status) == ("succeeded", "Error")
    assert landed.result["already_applied"] is True
    topup = row(engine, topup_id)
    assert topup.status == "failed" and topup.error.startswith("outcome unknown")
    assert calls(api, "/wallet/topup") == []


def test_no_final_state_within_the_timeout_fails(crm, api) -> None:
    url, engine = crm
    integ = add_iiko(engine, api, command_timeout_seconds=0.05)
    order_id = add_order(engine, integ)
    command_id, _ = new_command(engine, integ, "update-status", {"status": "OnWay"}, order_id)
    sender(url)(engine)
    failed = row(engine, command_id)
    assert failed.status == "failed"
    assert failed.error == "no final state from iiko within 0.05 s"


def test_retryable_errors_back_off_and_keep_the_row_pending(crm, api) -> None:
    url, engine = crm
    integ = add_iiko(engine, api)
    order_id = add_order(engine, integ)
    command_id, _ = new_command(engine, integ, "update-status", {"status": "OnWay"}, order_id)
    httpx.put(api + "/_admin/faults", json={"error_rate": 1.0})
    report = sender(url, time_budget_seconds=1.0)(engine)
    waiting = row(engine, command_id)
    assert (waiting.status, waiting.attempts, waiting.sent_at) == ("pending", 1, None)
    assert waiting.next_attempt_at is not None and waiting.error.startswith("will retry")
    assert report.retrying == 1 and report.pending == 1
    # Once iiko is back and the backoff has passed, it goes through.
    httpx.delete(api + "/_admin/faults")
    with engine.begin() as conn:
        conn.execute(update(iiko_commands).values(next_attempt_at=None))
    sender(url)(engine)
    done = row(engine, command_id)
    assert (done.status, done.attempts, done.error) == ("succeeded", 2, None)


def test_sensor_requests_a_run_and_the_job_sends(crm, api) -> None:
    url, engine = crm
    integ = add_iiko(engine, api)
    order_id = add_order(engine, integ)
    command_id, _ = new_command(engine, integ, "update-status", {"status": "Delivered"}, order_id)
    defs = build_definitions(url)
    with DagsterInstance.ephemeral() as instance:
        context = build_sensor_context(
            instance=instance, resources={"crm_db": CrmDatabase(database_url=url)}
        )
        # A run that failed holding the row: the sensor hands it back at once.
        job = defs.resolve_job_def("iiko_commands")
        dead = instance.create_run_for_job(job_def=job)
        with engine.begin() as conn:
            claim(conn, SenderOptions(run_id=dead.run_id, lease=timedelta(minutes=10)))
        assert "no iiko commands due" in str(iiko_command_sensor(context).skip_message)
        instance.report_run_failed(dead)
        request = iiko_command_sensor(context)
        assert request.run_key.startswith(f"iiko-commands:{command_id}:")
        result = job.execute_in_process(
            instance=instance,
            tags=request.tags,
            run_config={"ops": {"iiko_commands_op": {"config": FAST}}},
        )
        assert result.success
        meta = output_metadata(result)
        assert (meta["sent"], meta["succeeded"], meta["failed"]) == (1, 1, 0)
        assert meta["still_in_progress"] == 0
        after = iiko_command_sensor(context)
        assert "no iiko commands due" in str(after.skip_message)
    assert order_row(engine, order_id).status == "Delivered"


def test_cli_command_and_status_without_secrets(crm, api) -> None:
    url, engine = crm
    integ = add_iiko(engine, api)
    order_id = add_order(engine, integ)
    runner = CliRunner()
    base = ["--database-url", url]
    args = ["iiko", "command", str(integ.id), "update-status", "--order", str(order_id)]
    once = ["--status", "Delivered", "--idempotency-key", "c1", "--json"]
    first = runner.invoke(main, [*args, *once, *base])
    assert first.exit_code == 0, first.output
    queued = json.loads(first.output)
    assert (queued["status"], queued["created"], queued["kind"]) == (
        "pending",
        True,
        "update-status",
    )

    again = ["--body", '{"status": "Delivered"}', "--idempotency-key", "c1", "--wait", "--json"]
    waited = runner.invoke(main, [*args, *again, *base])
    assert waited.exit_code == 0, waited.output
    done = json.loads(waited.output)
    assert (done["id"], done["status"], done["created"]) == (queued["id"], "succeeded", False)

    shown = runner.invoke(main, ["iiko", "command-status", str(queued["id"]), "--json", *base])
    assert json.loads(shown.output)["provider_status"] == "Success"

    bad = runner.invoke(main, [*args, "--status", "Cooking", *base])
    assert bad.exit_code != 0 and "nothing was written" in bad.output
    info = ["iiko", "command", str(integ.id), "customer-info", "--phone", "+79990001122"]
    loyalty = runner.invoke(main, [*info, "--wait", "--json", *base])
    assert loyalty.exit_code == 0, loyalty.output
    assert json.loads(loyalty.output)["result"]["phone"] == "+79990001122"
    for out in (first.output, waited.output, shown.output, bad.output, loyalty.output):
        assert API_LOGIN not in out and WEBHOOK_TOKEN not in out
