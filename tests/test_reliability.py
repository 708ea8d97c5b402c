"""The reliability suite of issue 9 in small sizes (`make bench-reliability --quick`).

One real stack per database (receiver with 2 workers, the provider's emulator, the
Dagster daemon launching real runs), every registered provider's reliability part,
one test per scenario row: its verdict must be PASS, and a FAIL prints the reasons.
PostgreSQL runs every scenario; SQLite the receiver-side ones (bad input, its own kind
of outage, a killed worker) and the secrets scan, to stay within CI's two minutes
(`python bench/reliability.py --quick --database sqlite` runs all of them there).
"""

from __future__ import annotations

from typing import Any

import pytest

from provider_emulators.reliability import registered
from provider_emulators.reliability.report import Row
from provider_emulators.reliability.scenarios import QUICK
from provider_emulators.reliability.suite import run_suite
from tests.conftest import pg_admin_url

pytestmark = pytest.mark.slow

SCENARIOS = {
    "postgres": ("1", "1b", "2", "3", "4", "5", "6", "7"),
    "sqlite": ("1", "2", "3", "7"),
}
PREFIX = {"1": "1. ", "1b": "1b. ", "2": "2. ", "3": "3. ", "4": "4. ", "5": "5. ", "6": "6. ",
          "7": "7. "}  # fmt: skip
_RESULTS: dict[tuple[str, str], list[Row]] = {}


def _rows(provider: str, database: str) -> list[Row]:
    """The suite runs once per (provider, database); every test reads its rows."""
    key = (provider, database)
    if key not in _RESULTS:
        admin = None
        if database == "postgres":
            admin = pg_admin_url()
            if admin is None:
                pytest.skip("TEST_DATABASE_URL not set: PostgreSQL half skipped (CI runs it)")
        _RESULTS[key] = run_suite([provider], [database], QUICK, only=set(SCENARIOS[database]),
                                  admin_url=admin, log=lambda _m: None)  # fmt: skip
    return _RESULTS[key]


def _params(provider: str) -> list[Any]:
    out = []
    for database, keys in SCENARIOS.items():
        marks = [pytest.mark.postgres] if database == "postgres" else []
        for key in keys:
            out.append(pytest.param(database, key, marks=marks, id=f"{database}-{key}"))
    return out


def _check(provider: str, database: str, scenario: str) -> None:
    rows = _rows(provider, database)
    stack_failure = [r for r in rows if r.scenario == "stack"]
    assert not stack_failure, stack_failure[0].reasons
    found = [r for r in rows if r.scenario.startswith(PREFIX[scenario])]
    assert found, f"scenario {scenario} produced no row: {[r.scenario for r in rows]}"
    row = found[0]
    assert row.verdict == "PASS", "\n".join(row.reasons)


def _provider_class(provider: str) -> type:
    """A test class per provider: `make test` runs test classes on separate workers
    (`--dist loadscope`), so the providers' stacks run side by side."""

    @pytest.mark.timeout(300)
    @pytest.mark.parametrize(("database", "scenario"), _params(provider))
    def test_scenario_verdict_is_pass(self: Any, database: str, scenario: str) -> None:
        _check(provider, database, scenario)

    name = f"TestReliability{provider.title()}"
    return type(name, (), {"test_scenario_verdict_is_pass": test_scenario_verdict_is_pass})


for _provider in registered():
    _cls = _provider_class(_provider)
    globals()[_cls.__name__] = _cls
