"""`make dev`: the whole demo stack on one machine, stopped together with Ctrl-C.

Starts the ALLIO emulator, the webhook receiver and `dagster dev` (webserver +
daemon), makes sure two demo integrations exist, then sends a burst of demo
webhooks so the Dagster UI shows finished runs and filled assets within a minute.
Everything talks over HTTP or the CLI; nothing here imports the other layers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from provider_emulators.allio import DEFAULT_TOKEN, send_webhooks

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEMO_TOKEN = DEFAULT_TOKEN
DEMO_INTEGRATIONS = (
    ("Demo estate (delete control)", "6f1c2a7e-0d4b-4f3a-9a51-1c0f5e2b7d10", True),
    ("Demo estate 2", "2b9e4d61-5a7c-4e8f-b3d2-8c6a1f0e9d23", False),
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", f"sqlite:///{ROOT / '.data' / 'crm.sqlite3'}")
    home = Path(env.setdefault("DAGSTER_HOME", str(ROOT / ".data" / "dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    return env


def _port(env: dict[str, str], name: str, default: int) -> int:
    return int(env.get(name, default))


def _crm_sync(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [str(BIN / "crm-sync"), *args], env=env, check=True, capture_output=True, text=True
    )
    return out.stdout


def ensure_demo_integrations(env: dict[str, str], api_base_url: str) -> list[dict]:
    """The demo integrations, created on first start (the API token is the emulator's)."""
    existing = {
        i["integration_uuid"]: i
        for i in json.loads(_crm_sync(env, "integrations", "list", "--json"))
    }
    found = []
    for name, uuid, delete_control in DEMO_INTEGRATIONS:
        if uuid not in existing:
            args = ["integrations", "add", "--provider", "allio", "--name", name]
            args += ["--integration-uuid", uuid, "--api-base-url", api_base_url, "--json"]
            args += ["--delete-control"] if delete_control else []
            env_with_token = env | {"CRM_SYNC_API_TOKEN": DEMO_TOKEN}
            existing[uuid] = json.loads(_crm_sync(env_with_token, *args))
        found.append(existing[uuid])
    return found


def _wait_http(url: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def send_demo_burst(receiver: str, integrations: list[dict]) -> None:
    """A mix of commands and overlapping ids for every demo integration."""
    plan = [
        ("RESERVE_ADD", lambda n: [100 + n, 200 + n % 7]),
        ("RESERVE_MOD", lambda n: [100 + n % 10]),
        ("DEALCARD_ADD", lambda n: [500 + n, 600 + n % 5, 700 + n % 3]),
        ("DEALCARD_MOD", lambda n: [500 + n % 4]),
    ]
    for item in integrations:
        for command, ids in plan:
            summary = send_webhooks(
                receiver + item["webhook_path"],
                item["integration_uuid"],
                command,
                ids,
                count=10,
                concurrency=5,
            )
            print(f"  {item['name']}: {command} ×10 → {summary['statuses']}", flush=True)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    """Run the stack until Ctrl-C (or SIGTERM / SIGHUP)."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    env = _env()
    emulator_port = _port(env, "CRM_DEV_EMULATOR_PORT", 8090)
    receiver_port = _port(env, "CRM_DEV_RECEIVER_PORT", 8000)
    dagster_port = _port(env, "CRM_DEV_DAGSTER_PORT", 3000)
    env["RECEIVER_PUBLIC_BASE_URL"] = f"http://127.0.0.1:{receiver_port}"
    emulator = f"http://127.0.0.1:{emulator_port}"
    receiver = f"http://127.0.0.1:{receiver_port}"
    procs: list[subprocess.Popen] = []

    def start(*cmd: str) -> None:
        procs.append(subprocess.Popen(list(cmd), env=env, cwd=ROOT, start_new_session=True))

    try:
        start(
            str(BIN / "crm-sync"),
            "emulate",
            "allio",
            "--port",
            str(emulator_port),
            "--token",
            DEMO_TOKEN,
            "--log-level",
            "warning",
        )
        start(
            str(BIN / "uvicorn"),
            "webhook_receiver.app:app",
            "--port",
            str(receiver_port),
            "--log-level",
            "warning",
        )
        start(
            str(BIN / "dagster"), "dev", "-w", str(ROOT / "workspace.yaml"), "-p", str(dagster_port)
        )
        if not (
            _wait_http(emulator + "/_admin/health", 30) and _wait_http(receiver + "/healthz", 30)
        ):
            print("devstack: the emulator or the receiver did not come up", file=sys.stderr)
            return 1
        integrations = ensure_demo_integrations(env, emulator)
        if not _wait_http(f"http://127.0.0.1:{dagster_port}/server_info", 120):
            print("devstack: the Dagster webserver did not come up", file=sys.stderr)
            return 1
        print("sending demo webhooks:", flush=True)
        send_demo_burst(receiver, integrations)
        print(
            f"\ncrm-sync demo is up:\n  Dagster UI     http://127.0.0.1:{dagster_port}"
            f"  (Runs, Assets → allio)\n  receiver       {receiver}/healthz"
            f"\n  ALLIO emulator {emulator}/_admin/requests\nCtrl-C stops everything.",
            flush=True,
        )
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        print("devstack: a component exited; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(procs)


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGINT first (dagster dev shuts down cleanly on it), then SIGTERM, then SIGKILL."""
    for sig, grace in ((signal.SIGINT, 10), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        alive = [p for p in procs if p.poll() is None]
        if not alive:
            return
        for proc in alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(p.poll() is None for p in alive):
            time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
