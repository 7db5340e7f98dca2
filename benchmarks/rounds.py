"""Timing cases in alternating rounds, and comparing them within each round.

Every round runs every case once, so a slow spell on a noisy machine hits
all of them alike. A comparison takes its ratio inside each
round and reports the median ratio with its min and max over the rounds.
"""

from __future__ import annotations

import gc
import os
import random
import statistics
import time
from collections.abc import Callable
from typing import Literal

import attrs

#: ``run(count)`` does ``count`` units of work and returns the seconds they took.
Run = Callable[[int], float]
Prepare = Callable[[], Run]


def ready(run: Run) -> Prepare:
    """A ``prepare`` for a case whose state is built once and kept for every round."""
    return lambda: run


@attrs.frozen(kw_only=True)
class Case:
    """One workload. ``prepare()`` builds its fresh state (untimed) for a round."""

    name: str
    unit: str
    count: int
    prepare: Prepare
    note: str = ""


@attrs.frozen(kw_only=True)
class Comparison:
    """``ours`` against ``reference``, as a ratio taken within each round.

    ``throughput`` and ``speedup`` are the reference's time per unit over
    ours (higher is better; a speedup of 2 means twice as fast). ``flat`` is
    our time per unit over the reference's (the same case on a bigger
    database), which should stay near 1. ``ceiling`` is the best throughput
    ratio any implementation could reach when ``ours`` is a cost it must pay
    on top of the reference: reference / (reference + ours).
    """

    label: str
    ours: str
    reference: str
    kind: Literal["throughput", "speedup", "flat", "ceiling"]
    low: float | None = None
    high: float | None = None

    def ratio(self, ours: float, reference: float) -> float:
        if self.kind == "flat":
            return ours / reference
        if self.kind == "ceiling":
            return reference / (reference + ours)
        return reference / ours

    def met(self, ratio: float) -> bool | None:
        if self.low is None and self.high is None:
            return None
        return (self.low is None or ratio >= self.low) and (self.high is None or ratio <= self.high)

    @property
    def target(self) -> str:
        if self.kind == "flat":
            return f"{self.low:.2f}-{self.high:.2f}" if self.low and self.high else "-"
        return f">= {self.low:.2f}x" if self.low else "-"


@attrs.frozen
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))


@attrs.frozen(kw_only=True)
class Timed:
    """The seconds per unit of one case, one sample per round."""

    case: Case
    per_unit: list[float]

    @property
    def spread(self) -> Spread:
        return Spread.of(self.per_unit)


@attrs.frozen(kw_only=True)
class Compared:
    comparison: Comparison
    ratios: list[float]

    @property
    def spread(self) -> Spread:
        return Spread.of(self.ratios)

    @property
    def met(self) -> bool | None:
        return self.comparison.met(self.spread.median)


def settle(sync: bool = True) -> None:
    """Let the kernel write back the last case's pages (0.1-0.2 s), and collect the last
    case's young garbage, before the next case is timed. (A full collection would
    rescan every imported library, 0.15 s each time once the peers are loaded.)"""
    if sync and hasattr(os, "sync"):
        os.sync()
    gc.collect(1)


def run_rounds(
    cases: list[Case],
    rounds: int,
    progress: Callable[[str], None] | None = None,
    *,
    sync: bool = True,
) -> dict[str, Timed]:
    """Run every case once per round, alternating, and return its samples.

    The order is shuffled in every round (with a fixed seed): a case runs
    measurably slower right after some others, so no case keeps one place.
    """
    samples: dict[str, list[float]] = {case.name: [] for case in cases}
    rng = random.Random(20261122)
    for r in range(rounds):
        for case in rng.sample(cases, len(cases)):
            if progress:
                progress(f"round {r + 1}/{rounds}: {case.name}")
            run = case.prepare()
            settle(sync)
            samples[case.name].append(run(case.count) / case.count)
    return {case.name: Timed(case=case, per_unit=samples[case.name]) for case in cases}


def compare(timed: dict[str, Timed], comparisons: list[Comparison]) -> list[Compared]:
    """Each comparison whose two cases ran, with its ratio in every round."""
    done = []
    for c in comparisons:
        if c.ours in timed and c.reference in timed:
            pairs = zip(timed[c.ours].per_unit, timed[c.reference].per_unit, strict=True)
            done.append(Compared(comparison=c, ratios=[c.ratio(o, r) for o, r in pairs]))
    return done


def elapsed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started
