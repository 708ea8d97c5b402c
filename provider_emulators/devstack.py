"""`make dev`: the whole demo stack on one machine, stopped together with Ctrl-C.

Starts every registered provider's emulator, the webhook receiver and `dg dev`
(Dagster webserver + daemon), makes sure each provider's demo integrations exist,
then sends a burst of demo webhooks so the Dagster UI shows finished runs and
filled assets within a minute. Everything talks over HTTP or the CLI.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from crm_sync.registry import layer_modules
from provider_emulators.demo import Demo

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", f"sqlite:///{ROOT / '.data' / 'crm.sqlite3'}")
    home = Path(env.setdefault("DAGSTER_HOME", str(ROOT / ".data" / "dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    return env


def _port(env: dict[str, str], name: str, default: int) -> int:
    return int(env.get(name, default))


def _crm_sync(env: dict[str, str]) -> Any:
    def run(*args: str, **extra_env: str) -> str:
        out = subprocess.run(
            [str(BIN / "crm-sync"), *args],
            env=env | extra_env,
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout

    return run


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


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    """Run the stack until Ctrl-C (or SIGTERM / SIGHUP)."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    env = _env()
    base_port = _port(env, "CRM_DEV_EMULATOR_PORT", 8090)
    receiver_port = _port(env, "CRM_DEV_RECEIVER_PORT", 8000)
    dagster_port = _port(env, "CRM_DEV_DAGSTER_PORT", 3000)
    env["RECEIVER_PUBLIC_BASE_URL"] = f"http://127.0.0.1:{receiver_port}"
    receiver = f"http://127.0.0.1:{receiver_port}"
    demos: list[tuple[Demo, str]] = []
    for i, module in enumerate(layer_modules("emulator").values()):
        demo: Demo = module.DEMO
        port = _port(env, f"CRM_DEV_{demo.provider.upper()}_PORT", base_port + i)
        demos.append((demo, f"http://127.0.0.1:{port}"))
    procs: list[subprocess.Popen] = []

    def start(*cmd: str, cwd: Path = ROOT) -> None:
        procs.append(subprocess.Popen(list(cmd), env=env, cwd=cwd, start_new_session=True))

    try:
        for demo, url in demos:
            port = url.rsplit(":", 1)[1]
            start(str(BIN / "crm-sync"), *demo.serve_args(int(port)), "--log-level", "warning")
        start(
            str(BIN / "uvicorn"),
            "webhook_receiver.app:app",
            "--port",
            str(receiver_port),
            "--log-level",
            "warning",
        )
        # From DAGSTER_HOME: Dagster warns about the repository's dagster.yaml in its cwd.
        start(
            str(BIN / "dg"),
            "dev",
            "-w",
            str(ROOT / "workspace.yaml"),
            "-p",
            str(dagster_port),
            cwd=Path(env["DAGSTER_HOME"]),
        )
        # A minute: a busy machine starts the emulators, receiver and Dagster at once.
        up = all(_wait_http(url + demo.health_path, 60) for demo, url in demos)
        if not (up and _wait_http(receiver + "/healthz", 60)):
            print("devstack: an emulator or the receiver did not come up", file=sys.stderr)
            return 1
        crm_sync = _crm_sync(env)
        integrations = [(demo, demo.ensure_integrations(crm_sync, url)) for demo, url in demos]
        if not _wait_http(f"http://127.0.0.1:{dagster_port}/server_info", 120):
            print("devstack: the Dagster webserver did not come up", file=sys.stderr)
            return 1
        print("sending demo webhooks:", flush=True)
        for demo, items in integrations:
            demo.send_webhooks(receiver, items)
        emulators = "\n".join(
            f"  {demo.provider} emulator".ljust(17) + f"{url}/_admin/requests"
            for demo, url in demos
        )
        print(
            f"\ncrm-sync demo is up:\n  Dagster UI     http://127.0.0.1:{dagster_port}"
            f"  (Runs; Assets → one group per provider)\n  receiver       {receiver}/healthz"
            f"\n{emulators}\nCtrl-C stops everything.",
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
    """SIGINT first (dg dev shuts down cleanly on it), then SIGTERM, then SIGKILL."""
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
