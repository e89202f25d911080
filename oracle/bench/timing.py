"""Timing one call: process CPU and wall seconds, median per call, the cold call apart."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Timing:
    """Per-call cost: median CPU and wall seconds, and the first (cold) call apart."""

    cpu_s: float
    wall_s: float
    first_cpu_s: float
    first_wall_s: float
    calls: int
    passed: bool


def time_calls(
    call: Callable[[], bool], repeats: int = 5, min_time_s: float = 0.02, budget_s: float = 30.0
) -> Timing:
    """Time ``call``: one cold call, then ``repeats`` batches of ``k`` calls (``k`` so that a
    batch takes >= ``min_time_s``), within ``budget_s``; the medians per call.

    A call that takes more than half the budget is not repeated: when the cold call
    already does, it is the measurement; otherwise one more call is.
    """
    c0, w0 = time.process_time(), time.perf_counter()
    passed = call()
    first_cpu, first_wall = time.process_time() - c0, time.perf_counter() - w0
    if first_cpu >= budget_s / 2:  # too slow to repeat: the cold call is the measurement
        return Timing(first_cpu, first_wall, first_cpu, first_wall, 1, bool(passed))
    c0, w0 = time.process_time(), time.perf_counter()
    passed = call() and passed
    one_cpu, one_wall = max(time.process_time() - c0, 1e-9), time.perf_counter() - w0
    cpu, wall, calls = [one_cpu], [one_wall], 2
    if one_cpu < budget_s / 2:
        per_batch = max(1, math.ceil(min_time_s / one_cpu))
        batches = max(1, min(repeats, int(budget_s // (one_cpu * per_batch))))
        cpu, wall = [], []
        for _ in range(batches):
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(per_batch):
                call()
            cpu.append((time.process_time() - c0) / per_batch)
            wall.append((time.perf_counter() - w0) / per_batch)
        calls += batches * per_batch
    return Timing(
        cpu_s=float(statistics.median(cpu)),
        wall_s=float(statistics.median(wall)),
        first_cpu_s=first_cpu,
        first_wall_s=first_wall,
        calls=calls,
        passed=bool(passed),
    )


def interleaved_ratio(
    call: Callable[[], object], base: Callable[[], object], rounds: int = 5, min_time_s: float = 0.02
) -> float:
    """Median over ``rounds`` of CPU(call) / CPU(base), the two timed back to back in each round
    (each over enough calls to last ``min_time_s``), so a change in the machine's load hits
    numerator and denominator alike."""

    def per_call(f: Callable[[], object]) -> float:
        c0 = time.process_time()
        f()
        one = max(time.process_time() - c0, 1e-9)
        k = max(1, math.ceil(min_time_s / one))
        c0 = time.process_time()
        for _ in range(k):
            f()
        return max(time.process_time() - c0, 1e-9) / k

    ratios = []
    for r in range(max(1, rounds)):
        if r % 2 == 0:
            a = per_call(call)
            b = per_call(base)
        else:
            b = per_call(base)
            a = per_call(call)
        ratios.append(a / b)
    return float(statistics.median(ratios))
