"""`anchorline bench --index`: Qdrant Edge against qdrant-client's local mode, opt-in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anchorline.bench import QUICK
from anchorline.bench.index import LocalMode, build_edge, build_local_mode
from anchorline.cli import main
from anchorline.memory.index.embedders import HashingEmbedder


def test_bench_index_times_both_indexes_and_compares_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--index", "--quick", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for what in ("index search @ 1k", "index filtered search @ 1k", "index reopen @ 1k",
                 "index catch-up of 500 adds"):  # fmt: skip
        for side in ("Qdrant Edge", "local mode"):
            samples = report["cases"][f"{what}: {side}"]["samples"]
            assert len(samples) == QUICK.rounds and all(s > 0 for s in samples), what
        compared = {c["label"]: c for c in report["comparisons"]}
        assert compared[f"{what}: Qdrant Edge vs local mode"]["ratio"]["median"] > 0
    assert not [name for name in report["cases"] if not name.startswith("index ")]
    printed = capsys.readouterr().out
    assert "Qdrant Edge" in printed and "local mode" in printed


def test_the_quick_bench_leaves_the_index_cases_out() -> None:
    assert not QUICK.index  # --quick alone (what CI runs) never builds 50k-point folders


def test_both_sides_of_the_index_bench_hold_the_same_points_and_find_the_same(
    tmp_path: Path,
) -> None:
    vectors = HashingEmbedder().embed([f"note {i} about flight {i % 7}" for i in range(300)])
    edge = build_edge(tmp_path / "edge", vectors)
    build_local_mode(tmp_path / "local", vectors)
    local = LocalMode(tmp_path / "local")
    try:
        assert edge.count() == local.open() == 300
        query = vectors[42]
        ours = [m for m, _ in edge.search(query, limit=10)]
        theirs = [p.payload["message_id"] for p in
                  local.client.query_points("bench", query=query, limit=10).points]  # fmt: skip
        assert ours[0] == theirs[0] == "m42"  # the rest tie on score, in any order
        assert local.search(query, "c1") == 10 == len(edge.search(query, conversation_id="c1"))
    finally:
        local.close()
        edge.close()
