"""The real stack for the reliability suite: database, emulator, receiver, Dagster daemon.

Every process is a child in its own session (process group), logs to a file under the
run's work folder, and carries a marker in its environment, so `Stack.close()` can kill
each group and then any straggler that still carries the marker (a run worker the
daemon launched), never anything else. The CRM database is fresh per stack: a
PostgreSQL database created and dropped (`CREATE DATABASE` / `DROP ... WITH (FORCE)`),
or a SQLite file in the work folder; migrations and integrations go through the
`crm-sync` command line, like an operator would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from provider_emulators.reliability.spec import Integration, ProviderReliability
from provider_emulators.testing import free_port, fresh_postgres_database

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MARKER = "CRM_RELIABILITY_STACK"
DEFAULT_PG = "postgresql://root@127.0.0.1:5432/postgres"


def _driver_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed.render_as_string(hide_password=False)


class Database:
    """A fresh CRM database (migrated by `crm-sync db upgrade` once the stack has an env)."""

    def __init__(self, kind: str, url: str, drop: Any = None, password: str | None = None):
        self.kind = kind
        self.url = url
        self.password = password
        self._drop = drop
        self._engine: Engine | None = None

    @classmethod
    def postgres(cls, admin_url: str | None = None) -> Database:
        admin_url = admin_url or os.environ.get("TEST_DATABASE_URL") or DEFAULT_PG
        fresh, drop = fresh_postgres_database(admin_url, "crm_rel")

        parsed = make_url(fresh)
        password = parsed.password
        if password is None:
            # A password in the URL everyone uses (the server may ignore it under trust
            # auth): the secrets scan then proves it never reaches a log.
            password = f"rel-pw-{secrets.token_hex(12)}"
            parsed = parsed.set(password=password)
        url = parsed.render_as_string(hide_password=False)
        return cls("postgres", url, drop, str(password))

    @classmethod
    def sqlite(cls, folder: Path) -> Database:
        folder.mkdir(parents=True, exist_ok=True)
        return cls("sqlite", f"sqlite:///{folder / 'crm.sqlite3'}")

    @property
    def path(self) -> str:
        return str(make_url(self.url).database)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(_driver_url(self.url), pool_pre_ping=True)
        return self._engine

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def existing_ids(self, table: str, ids: list[int]) -> set[int]:
        found: set[int] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ", ".join(str(int(x)) for x in chunk)
            found.update(r[0] for r in self.rows(f"SELECT id FROM {table} WHERE id IN ({marks})"))
        return found

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self._drop is not None:
            self._drop()
            self._drop = None


@contextlib.contextmanager
def sqlite_held(path: str) -> Iterator[None]:
    """Another connection holds SQLite's write lock (BEGIN EXCLUSIVE) in the block."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


class TcpProxy:
    """A TCP relay (asyncio in its own thread); `cut()` drops every connection and the
    listener, as a database that went away; `restore()` listens again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def url_for(self, database_url: str) -> str:
        url = make_url(database_url).set(host="127.0.0.1", port=self.port)
        return url.render_as_string(hide_password=False)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(15)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))

    async def _start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> TcpProxy:
        self._run(self._start())
        return self

    def cut(self) -> None:
        self._run(self._stop())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def wait_http(url: str, seconds: float, ok: Any = lambda r: r.status_code < 500) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if ok(httpx.get(url, timeout=2)):
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _sockets(pid: int) -> int:
    try:
        links = [os.readlink(p) for p in (Path("/proc") / str(pid) / "fd").iterdir()]
    except OSError:
        return 0
    return sum(1 for link in links if link.startswith("socket:"))


def _marked(marker: str) -> list[int]:
    """Live processes whose environment carries ``MARKER=marker`` (ours, by construction)."""
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


class Stack:
    """Emulator, receiver (2 workers) and Dagster daemon on one fresh database."""

    def __init__(
        self,
        spec: ProviderReliability,
        database: Database,
        workdir: Path,
        *,
        lease_seconds: float = 20.0,
        receiver_workers: int = 2,
    ) -> None:
        self.spec = spec
        self.db = database
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.dagster_home = workdir / "dagster_home"
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / "dagster.yaml", self.dagster_home / "dagster.yaml")
        self.marker = uuid.uuid4().hex
        self.api_token = f"rel-token-{secrets.token_hex(16)}"
        self.receiver_workers = receiver_workers
        self.env = dict(os.environ)
        for name in ("DAGSTER_PG_URL", "CRM_SYNC_RATE_LIMITS", "RECEIVER_MAX_BODY_BYTES"):
            self.env.pop(name, None)
        self.env.update(
            {
                MARKER: self.marker,
                "DATABASE_URL": database.url,
                "DAGSTER_HOME": str(self.dagster_home),
                "CRM_SYNC_TASK_LEASE_SECONDS": str(lease_seconds),
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.secret_key = _fernet_key()
        if self.secret_key and "CRM_SYNC_SECRET_KEY" not in os.environ:
            self.env["CRM_SYNC_SECRET_KEY"] = self.secret_key
        else:
            self.secret_key = os.environ.get("CRM_SYNC_SECRET_KEY")
        self.procs: dict[str, subprocess.Popen] = {}
        self.proxy: TcpProxy | None = None
        self.emulator_port = free_port()
        self.emulator = f"http://127.0.0.1:{self.emulator_port}"
        self.receiver_port = free_port()
        self.receiver = f"http://127.0.0.1:{self.receiver_port}"
        self.integrations: list[Integration] = []
        self.daemon_starts = 0

    # -- processes ------------------------------------------------------------------------

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        out = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        self.procs[name] = subprocess.Popen(
            cmd, env=env or self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        out.close()

    def _stop(self, name: str, sig: int = signal.SIGTERM, grace: float = 20.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        for s, wait in ((sig, grace), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, s)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait)
        # The group may outlive its leader (a run worker): kill what is left of it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def crm_sync(self, *args: str, log: str = "cli", **extra_env: str) -> str:
        """Run `crm-sync`; its stdout and stderr are appended to logs/<log>.log."""
        out = subprocess.run(
            [str(BIN / "crm-sync"), *args],
            env=self.env | extra_env, cwd=ROOT, capture_output=True, text=True, check=False,
        )  # fmt: skip
        with open(self.logs / f"{log}.log", "a") as fh:
            fh.write(f"$ crm-sync {' '.join(args)}\n{out.stdout}{out.stderr}\n")
        if out.returncode != 0:
            raise RuntimeError(f"crm-sync {args[0]} {args[1]} failed: {out.stderr.strip()}")
        return out.stdout

    def start(self) -> Stack:
        self.crm_sync("db", "upgrade")
        receiver_url = self.db.url
        if self.db.kind == "postgres":
            url = make_url(self.db.url)
            self.proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).restore()
            receiver_url = self.proxy.url_for(self.db.url)
        self._spawn(
            "emulator",
            [str(BIN / "crm-sync"), *self.spec.serve_args(
                self.emulator_port, self.api_token, self.spec.quota_per_second)],
        )  # fmt: skip
        self._spawn(
            "receiver",
            [
                str(BIN / "uvicorn"), "webhook_receiver.app:app", "--host", "127.0.0.1",
                "--port", str(self.receiver_port), "--workers", str(self.receiver_workers),
                "--log-level", "info",
            ],
            self.env | {"DATABASE_URL": receiver_url},
        )  # fmt: skip
        if not wait_http(self.emulator + "/_admin/health", 60):
            raise RuntimeError(f"{self.spec.provider} emulator did not come up")
        if not self.wait_receiver(60):
            raise RuntimeError("receiver did not come up")
        return self

    def wait_receiver(self, seconds: float) -> bool:
        """True once the receiver answers health checks (several in a row: every worker)."""
        deadline = time.monotonic() + seconds
        ok = 0
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.receiver + "/healthz", timeout=3).status_code == 200:
                    ok += 1
                    if ok >= 4 * self.receiver_workers:
                        return True
                    continue
            except httpx.HTTPError:
                pass
            ok = 0
            time.sleep(0.2)
        return False

    def start_daemon(self) -> None:
        self.daemon_starts += 1
        self._spawn(
            f"daemon-{self.daemon_starts}",
            [str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
        )
        self.procs["daemon"] = self.procs.pop(f"daemon-{self.daemon_starts}")

    def stop_daemon(self) -> None:
        self._stop("daemon", signal.SIGTERM, 30.0)

    def receiver_workers_pids(self) -> list[int]:
        master = self.procs["receiver"].pid
        return [
            pid
            for pid in _children(master)
            if "resource_tracker" not in _cmdline(pid) and "spawn" in _cmdline(pid)
        ]

    def busiest_receiver_worker(self) -> tuple[int, int] | None:
        """(pid, open sockets) of the receiver worker holding the most connections."""
        found = [(_sockets(pid), pid) for pid in self.receiver_workers_pids()]
        if not found:
            return None
        sockets, pid = max(found)
        return pid, sockets

    def close(self) -> None:
        for name in list(self.procs):
            self._stop(name, signal.SIGINT if name == "receiver" else signal.SIGTERM)
        for pid in _marked(self.marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proxy is not None:
            self.proxy.close()
            self.proxy = None

    # -- integrations and the emulator ----------------------------------------------------

    def add_integration(self, name: str) -> Integration:
        out = self.crm_sync(
            *self.spec.add_args(name, self.emulator),
            log="cli-add",
            **{self.spec.token_env: self.api_token, **self.spec.add_env(name)},
        )
        data = json.loads(out)
        integ = Integration(
            id=int(data["id"]), name=name, webhook_key=data["webhook_key"],
            webhook_path=data["webhook_path"], data=data, api_token=self.api_token,
        )  # fmt: skip
        self.integrations.append(integ)
        return integ

    def add_integrations(self, names: list[str]) -> list[Integration]:
        """Add several at once (the CLI in parallel), then wait until the receiver has them."""
        if not names:
            return []
        with ThreadPoolExecutor(4) as pool:
            added = list(pool.map(self.add_integration, names))
        self.wait_integrations_loaded()
        return added

    def disable(self, integ: Integration) -> None:
        self.crm_sync("integrations", "disable", str(integ.id))

    def show_integrations(self, everyone: bool = True) -> None:
        """What an operator runs (output kept for the secrets scan)."""
        self.crm_sync("integrations", "list", "--json")
        if not everyone:
            self.crm_sync("integrations", "show", str(self.integrations[0].id))
            return
        self.crm_sync("integrations", "list")
        for integ in self.integrations:
            self.crm_sync("integrations", "show", str(integ.id))
            self.crm_sync("integrations", "show", str(integ.id), "--json")

    def wait_integrations_loaded(self) -> None:
        """The receiver re-reads integrations every 2 s."""
        time.sleep(2.5)

    def faults(self, faults: dict[str, Any] | None) -> None:
        if faults is None:
            httpx.delete(self.emulator + "/_admin/faults", timeout=10).raise_for_status()
        else:
            httpx.put(self.emulator + "/_admin/faults", json=faults, timeout=10).raise_for_status()

    def emulator_requests(self, since: float) -> list[dict[str, Any]]:
        resp = httpx.get(self.emulator + "/_admin/requests", params={"since": since}, timeout=30)
        resp.raise_for_status()
        paths = self.spec.api_paths
        # A path or anything under it (`/api/v4/leads` covers `/api/v4/leads/123`).
        return [
            e
            for e in resp.json()
            if any(e["path"] == p or e["path"].startswith(p + "/") for p in paths)
        ]

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fernet_key() -> str | None:
    try:
        from cryptography.fernet import Fernet
    except ImportError:
        return None
    return Fernet.generate_key().decode()


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
