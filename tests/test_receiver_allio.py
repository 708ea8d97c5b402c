"""ALLIO webhooks through a real receiver (uvicorn), on SQLite and PostgreSQL.

Every case checks the `allio_webhook` row count: an error never writes a row.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select, text

from crm_schema.providers.allio import allio_webhook
from crm_sync.settings import get_settings
from tests.conftest import count_rows
from tests.receiver_fixtures import add_allio, assert_error, serve_receiver, toggle, webhook
from webhook_receiver.app import create_app

ROWS = "allio_webhook"


def rows(engine) -> list:  # noqa: ANN001
    with engine.connect() as conn:
        return conn.execute(select(allio_webhook).order_by(allio_webhook.c.id)).all()


def test_valid_webhook_is_stored_before_200(database_url: str, engine) -> None:
    integ = add_allio(engine)
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        before = datetime.now(UTC)
        resp = client.post(integ.webhook_path, json=webhook(integ, [111, "222", 333]))
        after = datetime.now(UTC)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["status"] == "ok" and isinstance(body["id"], int)
        # The 200 came after the commit: the row is visible to another connection now.
        stored = rows(engine)
        assert count_rows(engine, ROWS) == 1
        row = stored[0]
        assert row.id == body["id"]
        assert row.integration_id == integ.id
        assert row.integration_uuid == integ.integration_uuid
        assert row.command == "RESERVE_ADD"
        assert row.external_ids_array == "[111,222,333]"
        assert row.processed_at is None
        created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
        assert before - timedelta(milliseconds=1) <= created <= after + timedelta(milliseconds=1)

        # JSON with a charset, application/*+json and unknown commands are accepted too.
        for content_type in ("application/json; charset=utf-8", "application/vnd.allio+json"):
            resp = client.post(
                integ.webhook_path,
                content=b'{"uuid": "%s", "command": "SOMETHING_NEW", "indexes": [5]}'
                % integ.integration_uuid.encode(),
                headers={"content-type": content_type},
            )
            assert resp.status_code == 200, resp.text
        assert count_rows(engine, ROWS) == 3
        assert [r.command for r in rows(engine)][1:] == ["SOMETHING_NEW", "SOMETHING_NEW"]


def test_sub_second_created_at(database_url: str, engine) -> None:
    integ = add_allio(engine)
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        for _ in range(3):
            assert client.post(integ.webhook_path, json=webhook(integ)).status_code == 200
    stamps = [r.created_at for r in rows(engine)]
    assert count_rows(engine, ROWS) == 3
    assert any(s.microsecond for s in stamps)  # not truncated to seconds
    assert stamps == sorted(stamps)


def test_unknown_and_disabled_keys_404(database_url: str, engine) -> None:
    integ = add_allio(engine)
    other = add_allio(engine, "disabled", "uuid-disabled")
    toggle(engine, other, False)
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        assert_error(client.post("/webhooks/allio/no-such-key", json=webhook(integ)), 404)
        assert_error(client.post(other.webhook_path, json=webhook(other)), 404)
        assert_error(client.get(integ.webhook_path), 405)
        assert_error(client.get("/nowhere"), 404)
    assert count_rows(engine, ROWS) == 0


def test_wrong_uuid_403_and_no_secret_in_logs(
    database_url: str, engine, caplog: pytest.LogCaptureFixture
) -> None:
    integ = add_allio(engine)
    other = add_allio(engine, "other", "uuid-other")
    caplog.set_level(logging.DEBUG)
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        # Another integration's uuid, a prefix of the right one, an empty one.
        for uuid in (other.integration_uuid, integ.integration_uuid[:-1], "", "é" * 8):
            body = assert_error(
                client.post(integ.webhook_path, json=webhook(integ, uuid=uuid)), 403
            )
            assert "uuid" in body["error"]
    assert count_rows(engine, ROWS) == 0
    # The receiver's own records and uvicorn's (the HTTP client logs URLs; it is not ours).
    logged = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith(("webhook_receiver", "uvicorn"))
    )
    assert f"integration {integ.id}" in logged
    assert integ.webhook_key not in logged
    assert integ.integration_uuid not in logged


def test_body_not_json_or_not_object_400(database_url: str, engine) -> None:
    integ = add_allio(engine)
    bodies = [b"{not json", b"", b'"just a string"', b"[1, 2]", b"null", b"\xff\xfe"]
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        for content in bodies:
            resp = client.post(
                integ.webhook_path, content=content, headers={"content-type": "application/json"}
            )
            assert_error(resp, 400)
    assert count_rows(engine, ROWS) == 0


# (payload, fields reported as bad); "uuid" is filled in with the right one unless listed.
INVALID = [
    ({}, {"uuid", "command", "indexes"}),
    (
        {"uuid": 5, "command": "reserve_add", "indexes": [1, True]},
        {"uuid", "command", "indexes"},
    ),
    ({"uuid": None, "command": 7, "indexes": "111"}, {"uuid", "command", "indexes"}),
    ({"command": "RESERVE_ADD", "indexes": []}, {"uuid", "indexes"}),
    ({"command": "A" * 65, "indexes": [0]}, {"command", "indexes"}),
    ({"command": "RESERVE_ADD\n", "indexes": [1.5]}, {"command", "indexes"}),
    ({"command": "1RESERVE", "indexes": ["12a"]}, {"command", "indexes"}),
    ({"command": "", "indexes": [-3]}, {"command", "indexes"}),
    ({"command": "RESERVE_ADD", "indexes": "[1, 2"}, {"indexes"}),  # a string, not JSON
    ({"command": "RESERVE_ADD", "indexes": '{"a": 1}'}, {"indexes"}),  # JSON, not a list
    ({"command": "RESERVE_ADD", "indexes": '"[1]"'}, {"indexes"}),  # a list twice quoted
    ({"command": "RESERVE_ADD", "indexes": "[]"}, {"indexes"}),
    ({"command": "RESERVE_ADD", "indexes": ""}, {"indexes"}),
    ({"command": "RESERVE_ADD", "indexes": "[1, 0]"}, {"indexes"}),  # then the list rules
    ({"command": "reserve_add", "indexes": '["12a"]'}, {"command", "indexes"}),
    ({"command": "RESERVE_ADD", "indexes": [2**63]}, {"indexes"}),
    ({"command": "RESERVE_ADD", "indexes": [{"id": 1}]}, {"indexes"}),
    ({"command": "RESERVE_ADD", "indexes": ["٣"]}, {"indexes"}),  # non-ASCII digit
]


def test_invalid_fields_422_lists_every_one(database_url: str, engine) -> None:
    integ = add_allio(engine)
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        for payload, bad in INVALID:
            if "uuid" not in bad:
                payload = {"uuid": integ.integration_uuid, **payload}
            body = assert_error(client.post(integ.webhook_path, json=payload), 422)
            assert {f["field"] for f in body["fields"]} == bad, payload
            assert all(f["error"] for f in body["fields"])
            assert all(name in body["error"] for name in bad)
            assert count_rows(engine, ROWS) == 0


def test_more_than_1000_ids_accepted_all_kept(database_url: str, engine) -> None:
    integ = add_allio(engine)
    indexes = [str(i) if i % 2 else i for i in range(1, 2501)]
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        resp = client.post(integ.webhook_path, json=webhook(integ, indexes))
        assert resp.status_code == 200, resp.text
    assert count_rows(engine, ROWS) == 1
    assert rows(engine)[0].external_ids_array == "[" + ",".join(map(str, range(1, 2501))) + "]"


def test_ids_are_bounded_only_by_the_body_limit(database_url: str, engine) -> None:
    integ = add_allio(engine)
    limit = 16 * 1024
    head = b'{"uuid": "%s", "command": "RESERVE_MOD", "indexes": [' % (
        integ.integration_uuid.encode()
    )
    ids = b",".join(b"%d" % i for i in range(1, 3001))  # ~14 KB: 3,000 ids
    body = head + ids + b"]}"
    exact = body + b" " * (limit - len(body))  # trailing whitespace is valid JSON
    assert len(exact) == limit
    headers = {"content-type": "application/json"}
    with (
        serve_receiver(database_url, max_body_bytes=limit) as base,
        httpx.Client(base_url=base) as client,
    ):
        over = assert_error(
            client.post(integ.webhook_path, content=exact + b" ", headers=headers), 413
        )
        assert str(limit) in over["error"]
        assert count_rows(engine, ROWS) == 0
        resp = client.post(integ.webhook_path, content=exact, headers=headers)
        assert resp.status_code == 200, resp.text
    assert count_rows(engine, ROWS) == 1
    assert rows(engine)[0].external_ids_array == "[" + ids.decode() + "]"


def test_indexes_as_a_json_string_accepted(database_url: str, engine) -> None:
    integ = add_allio(engine)
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        for indexes, stored in (
            ("[111,222]", "[111,222]"),
            (' [ 5, "6" ,7 ] ', "[5,6,7]"),
            ("[" + ",".join(map(str, range(1, 1502))) + "]", None),
        ):
            resp = client.post(integ.webhook_path, json=webhook(integ, indexes))
            assert resp.status_code == 200, resp.text
            row = rows(engine)[-1]
            assert row.id == resp.json()["id"]
            expected = stored or "[" + ",".join(map(str, range(1, 1502))) + "]"
            assert row.external_ids_array == expected
    assert count_rows(engine, ROWS) == 3


def test_json_without_content_type_accepted(database_url: str, engine) -> None:
    integ = add_allio(engine)
    good = httpx.Request("POST", "http://x", json=webhook(integ)).content
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        resp = client.post(integ.webhook_path, content=good)
        assert "content-type" not in resp.request.headers
        assert resp.status_code == 200, resp.text
        assert count_rows(engine, ROWS) == 1
        assert rows(engine)[0].external_ids_array == "[111,222]"
        # Without a Content-Type the body still has to be JSON.
        for content in (b"uuid=x&command=RESERVE_ADD", b""):
            resp = client.post(integ.webhook_path, content=content)
            assert "content-type" not in resp.request.headers
            assert_error(resp, 400)
    assert count_rows(engine, ROWS) == 1


def test_content_type_not_json_415(database_url: str, engine) -> None:
    integ = add_allio(engine)
    good = httpx.Request("POST", "http://x", json=webhook(integ)).content
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        for content_type in (
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/xml",
            "application/jsonx",
            "",  # present but naming no media type
        ):
            headers = {"content-type": content_type}
            assert_error(client.post(integ.webhook_path, content=good, headers=headers), 415)
            assert count_rows(engine, ROWS) == 0


def test_uuid_compare_ignores_letter_case(database_url: str, engine) -> None:
    lower = add_allio(engine, "lower", "0f8fad5b-d9cb-469f-a165-70867728950e")
    upper = add_allio(engine, "upper", "7C9E6679-7425-40DE-944B-E07FC1F90AE7")
    sent = ["0F8FAD5B-D9CB-469F-A165-70867728950E", "7c9e6679-7425-40De-944b-e07fc1f90ae7"]
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        for integ, uuid in zip((lower, upper), sent, strict=True):
            resp = client.post(integ.webhook_path, json=webhook(integ, uuid=uuid))
            assert resp.status_code == 200, resp.text
        # Case is all that is forgiven: other characters still have to match exactly.
        for integ, uuid in (
            (lower, "0f8fad5b-d9cb-469f-a165-70867728950f"),
            (lower, "0f8fad5b d9cb-469f-a165-70867728950e"),
            (upper, upper.integration_uuid.replace("E", "\u0130")),
            (lower, " 0f8fad5b-d9cb-469f-a165-70867728950e"),
        ):
            body = assert_error(
                client.post(integ.webhook_path, json=webhook(integ, uuid=uuid)), 403
            )
            assert "uuid" in body["error"]
    # The row keeps the uuid as the webhook sent it.
    assert [(r.integration_id, r.integration_uuid) for r in rows(engine)] == [
        (lower.id, sent[0]),
        (upper.id, sent[1]),
    ]


def test_case_folding_is_ascii_only(database_url: str, engine) -> None:
    integ = add_allio(engine, "kelvin", "uuid-k-0001")
    with serve_receiver(database_url) as base, httpx.Client(base_url=base) as client:
        # KELVIN SIGN lower-cases to "k" in Unicode; it must not stand in for a "k".
        resp = client.post(integ.webhook_path, json=webhook(integ, uuid="uuid-\u212a-0001"))
        assert_error(resp, 403)
        resp = client.post(integ.webhook_path, json=webhook(integ, uuid="UUID-K-0001"))
        assert resp.status_code == 200, resp.text
    assert [r.integration_uuid for r in rows(engine)] == ["UUID-K-0001"]


def test_default_body_limit_from_settings() -> None:
    receiver = create_app("sqlite:///unused.sqlite3").state.receiver
    assert receiver.config.max_body_bytes == get_settings().receiver_max_body_bytes == 1024 * 1024


def _raw_exchange(base: str, request: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes on a new connection and read the answer (headers and body)."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_body_over_limit_413(database_url: str, engine) -> None:
    integ = add_allio(engine)
    limit = 1024
    big = webhook(integ, list(range(1, 400)))  # ~2 KB
    with serve_receiver(database_url, max_body_bytes=limit) as base:
        with httpx.Client(base_url=base) as client:
            # Declared by Content-Length.
            body = assert_error(client.post(integ.webhook_path, json=big), 413)
            assert str(limit) in body["error"]

            # Chunked (no Content-Length): cut off while streaming.
            def chunks():
                yield b'{"uuid": "%s", "command": "RESERVE_ADD", "indexes": [1' % (
                    integ.integration_uuid.encode()
                )
                for _ in range(300):
                    yield b", 12345"
                yield b"]}"

            resp = client.post(
                integ.webhook_path, content=chunks(), headers={"content-type": "application/json"}
            )
            assert "content-length" not in resp.request.headers
            assert_error(resp, 413)
            # Just under the limit still works.
            assert client.post(integ.webhook_path, json=webhook(integ)).status_code == 200

        path = integ.webhook_path.encode()
        # A huge Content-Length is refused from the headers alone: no body is ever sent.
        answer = _raw_exchange(
            base,
            b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 1000000000\r\n\r\n" % path,
        )
        assert answer.startswith(b"HTTP/1.1 413"), answer
        # A chunked body that never ends is refused once it passes the limit.
        answer = _raw_exchange(
            base,
            b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
            % path
            + b"200\r\n"
            + b"1" * 512
            + b"\r\n" * 1
            + (b"200\r\n" + b"1" * 512 + b"\r\n") * 2,
        )
        assert answer.startswith(b"HTTP/1.1 413"), answer
    assert count_rows(engine, ROWS) == 1


def test_200_concurrent_posts_all_stored_once(database_url: str, engine) -> None:
    integ = add_allio(engine)

    async def post_all(base: str) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
            return await asyncio.gather(
                *(client.post(integ.webhook_path, json=webhook(integ, [i])) for i in range(1, 201))
            )

    with serve_receiver(database_url) as base:
        responses = asyncio.run(post_all(base))
    assert [r.status_code for r in responses] == [200] * 200
    ids = [r.json()["id"] for r in responses]
    assert len(set(ids)) == 200
    assert count_rows(engine, ROWS) == 200
    # Each answer names the row holding that request's own indexes.
    by_id = {r.id: r.external_ids_array for r in rows(engine)}
    assert {by_id[row_id] for row_id in ids} == {f"[{i}]" for i in range(1, 201)}
    assert all(by_id[row_id] == f"[{i}]" for i, row_id in enumerate(ids, start=1))


def test_a_row_the_database_refuses_fails_alone(database_url: str, engine) -> None:
    good = add_allio(engine, "good", "uuid-good")
    gone = add_allio(engine, "gone", "uuid-gone")
    with serve_receiver(database_url, integrations_refresh_seconds=60) as base:
        # Deleted behind the receiver's back: its cached entry now violates the foreign key.
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM integrations WHERE id = :id"), {"id": gone.id})

        async def post_mixed() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                return await asyncio.gather(
                    *(
                        client.post(integ.webhook_path, json=webhook(integ, [i]))
                        for i in range(1, 11)
                        for integ in (good, gone)
                    )
                )

        responses = asyncio.run(post_mixed())
    statuses = [r.status_code for r in responses]
    assert statuses == [200, 500] * 10
    assert all(r.json()["error"] for r in responses[1::2])
    assert count_rows(engine, ROWS) == 10
    assert {r.integration_id for r in rows(engine)} == {good.id}
