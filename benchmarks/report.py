"""The bench's results: a rich table for people, JSON for the record."""

from __future__ import annotations

import contextlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .rounds import Compared, Timed


@attrs.frozen(kw_only=True)
class Report:
    rounds: int
    quick: bool
    timed: dict[str, Timed]
    compared: list[Compared]
    skipped: list[str]
    facts: dict[str, str]
    seconds: float
    #: What the write cases ran on.
    store: str = "SQLite"


_PACKAGES = ("anchorline", "pluggy", "attrs", "cattrs", "qdrant-client", "openai-agents",
             "langchain-community", "sqlalchemy")  # fmt: skip


def _cpu() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    import apsw

    versions = {}
    for name in _PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu(),
        "cpus": os.cpu_count(),
        "sqlite": apsw.sqlite_lib_version(),
        "apsw": apsw.apsw_version(),
        "packages": versions,
    }


def _time(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:,.2f} ms"
    return f"{seconds * 1e6:,.1f} µs"


def _rate(seconds: float) -> str:
    rate = 1 / seconds
    return f"{rate / 1000:,.1f} k/s" if rate >= 10_000 else f"{rate:,.0f}/s"


def print_report(report: Report, console: Console) -> None:
    """Print the report as tables. Names, versions and error texts from the machine and the
    peers go in as rich Text: never read as markup, so ``[bench]`` shows as it is."""
    m = machine()
    console.print(
        Text(
            f"{m['cpus']} x {m['cpu']}, Python {m['python']}, SQLite {m['sqlite']};"
            f" {report.seconds:.0f} s"
        )
    )
    title = f"Anchorline bench on {report.store}: {report.rounds} alternating rounds"
    cases = Table(title=Text(title))
    for column in ("case", "unit", "median", "min-max", "rate"):
        cases.add_column(column, justify="left" if column in ("case", "unit") else "right")
    for name, timed in report.timed.items():
        s = timed.spread
        cases.add_row(Text(name), Text(timed.case.unit), _time(s.median),
                      f"{_time(s.low)} - {_time(s.high)}", _rate(s.median))  # fmt: skip
    console.print(cases)
    ratios = Table(title="ratios, taken within each round (median, min-max)")
    for column in ("comparison", "kind", "ratio", "min-max", "target", "met"):
        ratios.add_column(column, justify="left" if column in ("comparison", "kind") else "right")
    for c in report.compared:
        s = c.spread
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[c.met]
        ratios.add_row(Text(c.comparison.label), Text(c.comparison.kind), f"{s.median:.2f}x",
                       f"{s.low:.2f}-{s.high:.2f}", Text(c.comparison.target), met)  # fmt: skip
    console.print(ratios)
    for peer, fact in report.facts.items():
        console.print(Text(f"{peer} ran with {fact}"))
    for line in report.skipped:
        console.print(Text.assemble(("skipped", "yellow"), f" {line}"))
    console.print(
        "throughput: the reference's time per unit over ours (above 1 is faster than it);"
        " speedup: a peer's over ours; flat: a bigger database's time over the smallest's;"
        " ceiling: the best throughput ratio any implementation of the contract could reach."
    )


def as_json(report: Report) -> dict[str, Any]:
    return {
        "machine": machine(),
        "rounds": report.rounds,
        "quick": report.quick,
        "store": report.store,
        "seconds": round(report.seconds, 1),
        "cases": {
            name: {
                "unit": t.case.unit,
                "count_per_round": t.case.count,
                "note": t.case.note,
                "seconds_per_unit": attrs.asdict(t.spread),
                "samples": t.per_unit,
            }
            for name, t in report.timed.items()
        },
        "comparisons": [
            {
                "label": c.comparison.label,
                "ours": c.comparison.ours,
                "reference": c.comparison.reference,
                "kind": c.comparison.kind,
                "ratio": attrs.asdict(c.spread),
                "ratios": c.ratios,
                "target": c.comparison.target,
                "met": c.met,
            }
            for c in report.compared
        ],
        "peer_settings": report.facts,
        "skipped": report.skipped,
    }


def write_json(report: Report, path: Path) -> None:
    path.write_text(json.dumps(as_json(report), indent=2) + "\n")
