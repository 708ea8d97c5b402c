"""Scenario 1's bad input: hypothesis over the provider's payload model and raw bytes.

`cases()` draws requests in families (payload model, raw bytes, content types, paths,
methods, nesting, oversize bodies, lying Content-Length) and adds the provider's oracle
cases (known right answers). `judge()` says what is wrong with one answer.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from provider_emulators.reliability.rawhttp import Response
from provider_emulators.reliability.spec import Integration, ProviderReliability

CONTENT_TYPES = (
    None, "application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
    "text/plain", "text/json", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", "application/+json", "application/vnd.api+json",
    "application/json-patch+json", "application/jsonx", "json", "", "*/*",
    "application/json; charset=latin-1", "application/xml", "application/json\u0000",
    "application/json, text/plain", "; application/json",
)  # fmt: skip
METHODS = ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "PROPFIND", "FOO")
BAD_BYTES = (b"\x00", b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\\")
# Families and their share of the generated requests.
SHARES = {
    "payload": 0.45, "raw bytes": 0.2, "content type": 0.1, "path": 0.12, "method": 0.05,
    "string fields": 0.08,
}  # fmt: skip


@dataclass
class Case:
    """One request to send."""

    family: str
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    content_length: str | bool | None = True
    half_close: bool = False
    expect: tuple[int, ...] = ()  # the known right answers (oracle)
    name: str = ""
    uses_key: bool = True  # addressed to the integration under test
    extra: dict[str, Any] = field(default_factory=dict)


def draw(strategy: Any, count: int, seed: int) -> list[Any]:
    """``count`` examples of a hypothesis strategy (generation only, reproducible)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    out: list[Any] = []

    @hypothesis_seed(seed)
    @settings(
        max_examples=count, database=None, deadline=None, phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(strategy)
    def collect(value: Any) -> None:
        out.append(value)

    collect()
    return out


def to_json(value: Any) -> bytes:
    """JSON bytes as a sloppy sender would write them (big ints, Infinity and all)."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _raw_strategy(valid: bytes) -> Any:
    from hypothesis import strategies as st

    n = len(valid)

    def insert(args: tuple[int, bytes]) -> bytes:
        at, junk = args
        return valid[:at] + junk + valid[at:]

    def flip(args: tuple[int, int]) -> bytes:
        at, byte = args
        return valid[:at] + bytes([byte]) + valid[at + 1 :]

    return st.one_of(
        st.binary(max_size=300),
        st.integers(0, n - 1).map(lambda i: valid[:i]),  # truncated JSON
        st.tuples(st.integers(0, n), st.sampled_from(BAD_BYTES)).map(insert),
        st.tuples(st.integers(0, n - 1), st.integers(0, 255)).map(flip),
        st.text(max_size=100).map(lambda t: t.encode("utf-16")),
        st.just(valid.decode().encode("utf-16")),
        st.just(b"\xef\xbb\xbf" + valid),  # a BOM
        st.just(valid + b"\x00"),
        st.just(valid + b" trailing"),
        st.just(b""),
    )


def _path_variants(path: str, key: str) -> list[str]:
    """The real endpoint spelled the ways that routed around the access-log masking."""
    head = path[: path.rindex(key)]
    return [
        "/" + path, path.upper(), path + "/", head + "x/../" + key, head + "./" + key,
        head.rstrip("/") + "//" + key, path + "?key=" + key, head + quote(key, safe=""),
        head + key.upper(), path + "#frag", head + "%2e%2e/" + key,
    ]  # fmt: skip


def cases(spec: ProviderReliability, integ: Integration, total: int, seed: int) -> list[Case]:
    """About ``total`` requests against ``integ``'s endpoint (at least the oracle)."""
    from hypothesis import strategies as st

    rng = random.Random(seed)
    path = spec.endpoint(integ)
    key = integ.webhook_key
    valid_body = to_json(spec.webhook(integ, 0, [1, 2, 3]).body)
    auth = list(spec.auth_headers(integ).items())
    json_ct = [("Content-Type", "application/json"), *auth]
    out: list[Case] = []
    n = {family: max(1, int(total * share)) for family, share in SHARES.items()}

    for value in draw(spec.payload_strategy(integ), n["payload"], seed):
        out.append(Case("payload", "POST", path, json_ct, to_json(value)))
    for body in draw(_raw_strategy(valid_body), n["raw bytes"], seed + 1):
        out.append(Case("raw bytes", "POST", path, list(json_ct), body))
    ctypes = st.sampled_from(CONTENT_TYPES) | st.text(
        st.characters(min_codepoint=32, max_codepoint=126), max_size=40
    )
    for ctype in draw(ctypes, n["content type"], seed + 2):
        headers = list(auth) if ctype is None else [("Content-Type", ctype), *auth]
        out.append(Case("content type", "POST", path, headers, valid_body))
    # Fields full of SQL-ish, unicode and NUL strings inside an otherwise valid body.
    strings = st.text(st.characters(codec="utf-8"), min_size=1, max_size=200)
    base = spec.webhook(integ, 0, [1]).body
    for value in draw(strings, n["string fields"], seed + 3):
        if isinstance(base, dict):
            field_name = rng.choice(sorted(base))
            body = to_json({**base, field_name: value})
        else:
            body = to_json(value)
        out.append(Case("string fields", "POST", path, json_ct, body))
    junk_keys = st.text(max_size=60).map(lambda t: quote(t, safe="")) | st.integers(1, 20_000).map(
        lambda size: "k" * size
    )
    head = path[: path.rindex(key)]
    for junk in draw(junk_keys, n["path"], seed + 4):
        out.append(Case("path", "POST", head + junk, json_ct, valid_body, uses_key=False))
    for variant in _path_variants(path, key):
        out.append(Case("path variant", "POST", variant, json_ct, valid_body))
    methods = st.tuples(st.sampled_from(METHODS), st.binary(max_size=64))
    for method, junk in draw(methods, n["method"], seed + 5):
        body = valid_body if method in ("PUT", "PATCH") else junk
        out.append(Case("method", method, path, json_ct if body else list(auth), body))
    out.extend(_fixed_cases(spec, integ, path, valid_body))
    rng.shuffle(out)
    return out


def _fixed_cases(
    spec: ProviderReliability, integ: Integration, path: str, valid_body: bytes
) -> list[Case]:
    json_ct = [("Content-Type", "application/json"), *spec.auth_headers(integ).items()]
    limit = spec.max_body_bytes
    out = [
        Case("oversize", "POST", path, json_ct, b"[" + b"1," * (limit // 2) + b"1]"),
        Case("oversize", "POST", path, json_ct, b" " * (limit + 1)),
        Case("oversize", "POST", path, json_ct, b"x" * (4 * limit)),
        # Over the limit in chunks: no Content-Length to refuse it by.
        Case("oversize", "POST", path, json_ct + [("Transfer-Encoding", "chunked")],
             _chunked(b" " * (limit + 10)), content_length=None, half_close=True),
    ]  # fmt: skip
    for depth in (64, 254, 255, 256, 1024, 100_000):
        nested = b"[" * depth + b"1" + b"]" * depth
        out.append(Case("nesting", "POST", path, json_ct, nested))
        out.append(Case("nesting", "POST", path, json_ct, b'{"a": ' + nested + b"}"))
    # Lying Content-Length (raw socket; the client half-closes after the body).
    n = len(valid_body)
    for claim in (str(n + 10), str(n * 100), str(max(0, n - 5)), "0", "-1", "abc", "1e3",
                  "99999999999999999999", f"{n}, {n}", " " + str(n), str(limit + 1)):  # fmt: skip
        # The client half-closes only when the server would otherwise wait for more.
        short = claim.strip().isdigit() and int(claim) <= n
        out.append(Case("content-length", "POST", path, json_ct, valid_body, content_length=claim,
                        half_close=not short, name=f"Content-Length: {claim}"))  # fmt: skip
    out.append(Case("content-length", "POST", path, json_ct + [("Content-Length", str(n + 1))],
                    valid_body, half_close=True, name="two Content-Length headers"))  # fmt: skip
    out.append(Case("content-length", "POST", path, json_ct + [("Transfer-Encoding", "chunked")],
                    valid_body, half_close=True, name="Content-Length and chunked"))  # fmt: skip
    for name, method, template, headers, body, status in spec.oracle(integ):
        target = template.replace("{path}", path)
        expect = status if isinstance(status, tuple) else (status,)
        out.append(Case("oracle", method, target, list(headers.items()), body, expect=expect,
                        name=name, uses_key=integ.webhook_key in target))  # fmt: skip
    return out


def _chunked(body: bytes, size: int = 65536) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
             for i in range(0, len(body), size)]  # fmt: skip
    return b"".join(parts) + b"0\r\n\r\n"


def judge(case: Case, resp: Response) -> str | None:
    """What is wrong with this answer, or None."""
    if resp.status is None:
        # Only a lying or missing Content-Length may end without an answer.
        # (and an over-limit body may meet a reset: the server answered 413 and closed
        # while the client was still sending; uvicorn does no lingering close).
        if case.family in ("content-length", "oversize") or case.content_length is None:
            return None
        return f"no answer ({resp.error})"
    if case.expect and resp.status not in case.expect:
        want = " or ".join(str(s) for s in case.expect)
        return f"{case.name}: expected {want}, got {resp.status} {_snippet(resp)}"
    if resp.status >= 500:
        return f"{resp.status} {_snippet(resp)}"
    rejected = resp.status >= 400 and case.method != "HEAD" and not resp.server_level
    if rejected and resp.json_error() is None:
        return f"{resp.status} without a JSON error: {_snippet(resp)}"
    return None


def _snippet(resp: Response) -> str:
    return resp.body[:80].decode("utf-8", "replace")


Judge = Callable[[Case, Response], str | None]
