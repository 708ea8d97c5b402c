"""One table row per scenario, printed as Markdown like the other benches and saved as JSON."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """The outcome of one scenario for one provider on one database."""

    scenario: str
    provider: str
    database: str
    load: str = "–"
    faults: str = "–"
    acked: int | None = None
    rows: int | None = None
    tasks: str = "–"
    duplicates: int | None = None
    over_quota: int | None = None
    secrets: int | None = None
    verdict: str = "PASS"
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        self.verdict = "FAIL"
        self.reasons.append(reason)

    def check(self, ok: bool, reason: str) -> None:
        if not ok:
            self.fail(reason)

    @property
    def passed(self) -> bool:
        return self.verdict == "PASS"


def _cell(value: Any) -> str:
    return "–" if value is None else str(value)


HEADER = (
    "| scenario | provider | database | load | faults | webhooks acked | rows "
    "| tasks done / failed | duplicates | over quota | secrets found | verdict |"
)


def table(rows: list[Row]) -> str:
    lines = [HEADER, "|---|---|---|---|---|--:|--:|---|--:|--:|--:|:-:|"]
    for r in rows:
        lines.append(
            f"| {r.scenario} | {r.provider} | {r.database} | {r.load} | {r.faults} "
            f"| {_cell(r.acked)} | {_cell(r.rows)} | {r.tasks} | {_cell(r.duplicates)} "
            f"| {_cell(r.over_quota)} | {_cell(r.secrets)} | {r.verdict} |"
        )
    return "\n".join(lines)


def failures(rows: list[Row]) -> str:
    out = []
    for r in rows:
        for reason in r.reasons:
            out.append(f"- {r.scenario} ({r.provider}, {r.database}): {reason}")
    return "\n".join(out)


def write_json(rows: list[Row], path: Path, settings: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "reliability",
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": settings,
        "rows": [asdict(r) for r in rows],
        "all_pass": all(r.passed for r in rows),
    }
    path.write_text(json.dumps(payload, indent=2, default=str, ensure_ascii=False) + "\n")
