"""A provider is a set of files plus one registry line: generic code never names one, the
layers import one way, and a provider plugged in from outside works end to end."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from crm_schema.integrations import add_integration
from crm_sync import registry
from orchestration.core.sync_engine import SyncEngine, SyncOptions
from tests import demo_provider as demo
from tests.receiver_fixtures import serve_receiver

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("crm_sync", "crm_schema", "webhook_receiver", "orchestration", "provider_emulators")
# Where each provider's own files live, per layer.
PROVIDER_DIRS = (
    "crm_sync/providers",
    "crm_sync/cli/providers",
    "crm_schema/providers",
    "crm_schema/migrations/versions",
    "webhook_receiver/providers",
    "orchestration/defs",
    "provider_emulators",
)


def _code_names(path: Path) -> set[str]:
    """Identifiers and string constants in the code (docstrings and comments aside)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.alias):
            names.add(node.name)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            names.add(node.value)
    return names


def _generic_files() -> list[Path]:
    files = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            provider_file = any(
                rel.startswith(f"{d}/") and (d != "provider_emulators" or rel.count("/") > 1)
                for d in PROVIDER_DIRS
            )
            own_folder = any(rel.startswith(f"orchestration/{p}/") for p in registry.PROVIDERS)
            if not provider_file and not own_folder and rel != "crm_sync/registry.py":
                files.append(path)
    return files


def test_generic_code_never_names_a_provider() -> None:
    files = _generic_files()
    assert len(files) > 30
    offenders = {
        f.relative_to(ROOT).as_posix(): sorted(n for n in _code_names(f) if name in n.lower())
        for f in files
        for name in registry.PROVIDERS
        if any(name in n.lower() for n in _code_names(f))
    }
    assert offenders == {}


def test_the_registry_names_each_provider_on_one_line() -> None:
    source = (ROOT / "crm_sync/registry.py").read_text().splitlines()
    for name in registry.PROVIDERS:
        assert sum(name in line.lower() for line in source) <= 2  # import + tuple entry


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("crm_schema", {"webhook_receiver", "orchestration", "provider_emulators"}),
        ("webhook_receiver", {"orchestration", "provider_emulators"}),
        ("orchestration", {"webhook_receiver", "provider_emulators"}),
        ("provider_emulators", {"webhook_receiver", "orchestration", "crm_schema"}),
    ],
)
def test_imports_run_one_way(package: str, forbidden: set[str]) -> None:
    bad = {
        p.relative_to(ROOT).as_posix(): sorted(_imports(p) & forbidden)
        for p in (ROOT / package).rglob("*.py")
        if _imports(p) & forbidden
    }
    assert bad == {}


def test_the_front_door_package_imports_no_layer_except_its_cli() -> None:
    layers = {"crm_schema", "webhook_receiver", "orchestration", "provider_emulators"}
    for path in (ROOT / "crm_sync").rglob("*.py"):
        if "cli" not in path.relative_to(ROOT).parts:
            assert not _imports(path) & layers, path


@pytest.fixture
def demo_registered(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    monkeypatch.setitem(registry.PROVIDERS, "demo", demo.SPEC)
    return demo.SPEC


def test_a_provider_plugged_in_by_a_registry_line_works_end_to_end(
    demo_registered, database_url: str, engine
) -> None:
    demo.metadata.create_all(engine, tables=[demo.demo_inbox, demo.demo_tasks])
    with engine.begin() as conn:
        integ = add_integration(
            conn,
            provider="demo",
            name="demo",
            integration_uuid=None,
            api_base_url="http://demo.invalid",
            credentials={"api_key": "k" * 20},
        )
    assert integ.webhook_path == f"/webhooks/demo/{integ.webhook_key}"
    # The receiver mounts its route from the registry and stores into its inbox.
    with serve_receiver(database_url) as base:
        for ids in ([1, 2, 3], [3, 4]):
            resp = httpx.post(base + integ.webhook_path, json={"ids": ids}, timeout=10)
            assert resp.status_code == 200, resp.text
        assert httpx.post(base + integ.webhook_path, json={}, timeout=10).status_code == 422
    # The generic queue and sync engine drain it: ids merged, batched by its size.
    handler = demo.DemoSyncHandler()
    calls: list[list[str]] = []

    def client(ids: list[str]) -> list[dict]:
        calls.append(ids)
        return [{"id": int(i)} for i in ids if i != "4"]

    opts = SyncOptions(day=datetime.now(UTC).date(), run_id="demo-run", provider="demo")
    stats = SyncEngine(
        engine, demo.QUEUE, handler, lambda _id: client, lambda: {integ.id}, opts
    ).run()
    assert sorted(handler.stored) == ["1", "2", "3"]
    assert sorted(i for c in calls for i in c) == ["1", "2", "3", "4"]
    assert all(len(c) <= demo.DemoSyncHandler.batch_size for c in calls)
    assert stats.entities["item"].missing == 1
    with engine.connect() as conn:
        rows = conn.execute(select(demo.demo_tasks.c.status, demo.demo_tasks.c.outcome)).all()
    assert sorted(rows) == [(2, "synced 1, 1 not found"), (2, "synced 3")]
