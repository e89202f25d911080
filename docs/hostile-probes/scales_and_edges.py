"""Session 17's probes: a gradient element wrong beside far larger ones, and inputs a step from
the edge of the function's domain.  Run: ``python docs/hostile-probes/scales_and_edges.py``.

1. Mixed scales.  ``x`` holds standard-normal values and one element of +-1e2, +-1e4 or +-1e6;
   the backward is correct (x1.0: a failure is a false failure) or wrong by 1.5x / 1.01x in the
   element of smallest ``|x|`` (there, a pass is a missed bug).  Ten inputs per cell, basis
   directions (2-12 elements) and random projections (13-59 elements) apart.
2. Scales and edges.  Inputs of 1e-10 to 30 and ``log`` / ``sqrt`` a step (6e-6) or less from 0,
   each correct and wrong by 1.5x / 1.01x in a random element, eight inputs per cell.

Prints one line per cell: false failures of the correct backward, misses of the wrong ones.
"""

from __future__ import annotations

import warnings

import numpy as np

import gradoracle
from gradoracle.results import GradientMismatch

warnings.simplefilter("ignore")

MIXED = {
    "square": (lambda x: x**2, lambda x: 2 * x),
    "cube": (lambda x: x**3 / 3, lambda x: x**2),
    "x|x|": (lambda x: x * np.abs(x), lambda x: 2 * np.abs(x)),
    "sin": (np.sin, np.cos),
}

EDGES = {
    "tanh(1e6 x), x ~ 1e-7": (lambda x: np.tanh(1e6 * x), lambda x: 1e6 * (1 - np.tanh(1e6 * x) ** 2), 1e-7),
    "x^2, x ~ 1e-10": (lambda x: x**2, lambda x: 2 * x, 1e-10),
    "sin(1e4 x), x ~ 1e-3": (lambda x: np.sin(1e4 * x), lambda x: 1e4 * np.cos(1e4 * x), 1e-3),
    "exp, x ~ 30 (outputs e^-90..e^90)": (np.exp, np.exp, 30.0),
    "log, x in [1e-6, 4e-6]": (np.log, lambda x: 1 / x, 1e-6),
    "sqrt, x in [1e-8, 4e-8]": (np.sqrt, lambda x: 0.5 / np.sqrt(x), 1e-8),
}


def _verdicts(f, df, xs, wrong_at) -> list[int]:  # type: ignore[no-untyped-def]
    """[false failures at x1.0, misses at x1.5, misses at x1.01] over the inputs ``xs``."""
    counts = []
    for factor in (1.0, 1.5, 1.01):
        bad = 0
        for seed, x in enumerate(xs):
            i = wrong_at(x, seed)

            def vjp(u, x, i=i, factor=factor):  # type: ignore[no-untyped-def]
                g = np.array(u * df(x), dtype=np.float64)
                g[i] *= factor
                return g

            try:
                gradoracle.check_gradients_at(f, {"x": x}, vjp=vjp, seed=seed)
                bad += factor != 1.0
            except GradientMismatch:
                bad += factor == 1.0
        counts.append(bad)
    return counts


def mixed_scales() -> None:
    for label, (low, high) in (("basis", (2, 13)), ("projections", (13, 60))):
        for big in (1e2, 1e4, 1e6):
            rng = np.random.default_rng(0)
            xs = []
            for _ in range(10):
                x = rng.normal(size=int(rng.integers(low, high)))
                x[int(rng.integers(x.size))] = big * rng.choice([1, -1])
                xs.append(x)
            cells = []
            for name, (f, df) in MIXED.items():
                ff, m15, m101 = _verdicts(f, df, xs, lambda x, seed: int(np.argmin(np.abs(x))))
                cells.append(f"{name} {ff}/{m15}/{m101}")
            print(f"mixed {label:11s} beside {big:.0e}: " + "  ".join(cells), flush=True)


def _random_element(x: np.ndarray, seed: int) -> int:
    return int(np.random.default_rng(seed).integers(x.size))


def scales_and_edges() -> None:
    for name, (f, df, scale) in EDGES.items():
        for k in (5, 40):
            xs = []
            for t in range(8):
                rng = np.random.default_rng(t)
                x = rng.normal(size=k) * scale
                if name.startswith(("log", "sqrt")):
                    x = scale + np.abs(x)
                xs.append(x)
            ff, m15, m101 = _verdicts(f, df, xs, _random_element)
            print(f"edges {name:34s} k={k:2d}: {ff}/{m15}/{m101}", flush=True)


if __name__ == "__main__":
    print(f"gradoracle at {gradoracle.__file__}")
    print("cells: false failures of the correct backward / misses at 1.5x / at 1.01x (of 10; edges: of 8)")
    mixed_scales()
    scales_and_edges()
