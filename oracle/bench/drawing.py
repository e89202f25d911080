"""What values that shrink cost: the checks with shrinkable values against seed-drawn ones.

Since issue 12 the identity strategies draw their values through Hypothesis
(:class:`gradoracle.strategies.DrawnValues`: one ``binary`` choice per array, mapped onto a
simplicity-ordered grid) instead of from ``numpy.random.default_rng(seed)``, and the
runner rejects the examples Hypothesis fills with simplest choices
(:func:`gradoracle.runner.simplest_values_drawn`).  :func:`drawing_cost` runs the same
checks both ways, interleaved round by round in one process (so numerator and
denominator share the machine's moments), and reports the median of the per-round
ratios of process CPU time.

The default measures every identity on the NumPy engine, float64 and float32, 30
examples: the NumPy engine is the cheapest adapter, so the drawing's share of a check is
largest there, and the ratio bounds the default report's (whose PyTorch and JAX checks
cost more per example for the same drawing).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: The ratio the default report may not exceed (issue 12: at most 10% slower).
DRAWING_TARGET = 1.10


@dataclass
class DrawingCost:
    """Per-round CPU seconds of the same checks with seed-drawn and with shrinkable values."""

    identities: int
    adapters: tuple[str, ...]
    dtypes: tuple[str, ...]
    examples: int
    seed_drawn_s: list[float] = field(default_factory=list)
    shrinkable_s: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        """shrinkable / seed-drawn, round by round."""
        return [new / old for new, old in zip(self.shrinkable_s, self.seed_drawn_s, strict=True) if old > 0]

    @property
    def median_ratio(self) -> float:
        """The median of the per-round ratios."""
        return statistics.median(self.ratios) if self.ratios else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "identities": self.identities,
            "adapters": list(self.adapters),
            "dtypes": list(self.dtypes),
            "examples": self.examples,
            "seed_drawn_s": self.seed_drawn_s,
            "shrinkable_s": self.shrinkable_s,
            "ratios": self.ratios,
            "median_ratio": self.median_ratio,
            "target": DRAWING_TARGET,
        }


@contextlib.contextmanager
def seed_drawn_values() -> Iterator[None]:
    """The values as before issue 12: from ``default_rng(seed)``, no example rejected."""
    from gradoracle import runner, strategies

    def from_seed(draw: Any, seed: int) -> Any:
        return np.random.default_rng(seed)

    saved = strategies.values_for, runner.simplest_values_drawn
    strategies.values_for = from_seed
    runner.simplest_values_drawn = lambda: (False, False)
    try:
        yield
    finally:
        strategies.values_for, runner.simplest_values_drawn = saved


def drawing_cost(
    identities: Sequence[str] = (),
    adapters: Sequence[str] = ("numpy",),
    dtypes: Sequence[str] = ("float64", "float32"),
    examples: int = 30,
    rounds: int = 5,
) -> DrawingCost:
    """Time every identity x adapter x dtype check both ways, ``rounds`` times, interleaved.

    Round ``r`` uses seed ``r`` for both ways and alternates which way goes first.
    """
    from gradoracle.identities import select_identities
    from gradoracle.runner import CheckSettings, check

    names = [i.name for i in select_identities(list(identities))]
    settings = CheckSettings(examples=examples)
    cost = DrawingCost(len(names), tuple(adapters), tuple(dtypes), examples)

    def run(seed: int) -> float:
        start = time.process_time()
        for adapter in adapters:
            for dtype in dtypes:
                for name in names:
                    check(name, adapter, dtype, settings.with_(seed=seed))
        return time.process_time() - start

    run(0)  # warm-up: imports, compilations, caches
    for r in range(rounds):
        order = ("old", "new") if r % 2 == 0 else ("new", "old")
        times: dict[str, float] = {}
        for way in order:
            if way == "old":
                with seed_drawn_values():
                    times[way] = run(r + 1)
            else:
                times[way] = run(r + 1)
        cost.seed_drawn_s.append(times["old"])
        cost.shrinkable_s.append(times["new"])
    return cost
