"""Timing helpers: interleaved repetitions and medians, so ratios hold on a noisy machine."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Row:
    case: str
    baseline: str
    ours: str
    baseline_value: float
    ours_value: float
    unit: str
    ratio: float  # > 1 means ours is better, as the target states it
    target: str
    met: bool
    note: str = ""


def interleaved_samples(baseline: Callable[[], object], ours: Callable[[], object], repeats: int,
                        setup: Callable[[], object] | None = None) -> tuple[list[float], list[float]]:
    """Seconds of each repetition of each side, run alternately (A B A B ...) so drift hits both."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(repeats):
        for side, out in ((baseline, a), (ours, b)):
            if setup is not None:
                setup()
            t0 = time.perf_counter()
            side()
            out.append(time.perf_counter() - t0)
    return a, b


def interleaved(baseline: Callable[[], object], ours: Callable[[], object], repeats: int,
                setup: Callable[[], object] | None = None) -> tuple[float, float]:
    """Median seconds of each side, run alternately."""
    a, b = interleaved_samples(baseline, ours, repeats, setup)
    return statistics.median(a), statistics.median(b)
