"""Probe: functions that vary on scale 1, at large arguments (sin, cos at 1e3..1e12).

Run: python docs/hostile-probes/large_arguments.py   (about 40 s on 2 cores)

Prints, for a correct backward and for wrong ones, how many checks fail:

- single inputs, log-uniform in [1e3, 1e12] (48 draws);
- functions that vary faster than their argument's scale: sin(1/x) at 1e-3..1e-2 and cos(x^2)
  at 1e2..1e4 (10 inputs of 3 elements, correct and 1.01x off);
- 10 random inputs of 3, 20 and 200 elements up to 1e12 (basis directions and projections),
  correct and with one element 1.01x off;
- ``check_gradients`` with Hypothesis drawing ``st.floats(-1e12, 1e12)`` lists, sin and cos,
  correct / 1.5x / 1.0001x, 4 seeds each;
- torch's autodiff of ``torch.sin`` (reverse mode and forward mode) at 1e4..1e11, 8 inputs;
- the same against the catalogue's closed form (``identity="elementwise-sin"``) in reverse mode,
  forward mode and second order, 8 inputs of 3 elements per range (1e3..1e13), with the faults.

A false failure is a failing check of a correct backward; a catch, a failing check of a wrong one.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import gradoracle
from gradoracle.results import GradientMismatch


def fails(fn, inputs, **kw) -> bool:
    try:
        gradoracle.check_gradients_at(fn, inputs, **kw)
    except GradientMismatch:
        return True
    return False


def scaled(df, factor: float = 1.0, index: int | None = None):
    def vjp(ct, x):
        g = ct * df(x)
        if index is None:
            g = g * factor
        else:
            g[index] *= factor
        return {"x": g}

    return vjp


def main() -> None:
    print("gradoracle at", gradoracle.__file__)
    rng = np.random.default_rng(0)
    xs = [3883652.0, 1e7 + 0.3, 123456.7, 4.4e5, 1e9, 2.2e12, 5e3, 7.7e4]
    xs += list(10 ** rng.uniform(3, 12, 40))
    bad = sum(fails(np.sin, {"x": np.array([x])}, vjp=scaled(np.cos)) for x in xs)
    print(f"single inputs in [1e3, 1e12]: {bad} of {len(xs)} false failures (sin)")

    rng = np.random.default_rng(1)
    for n in (3, 20, 200):
        bad = caught = 0
        for _ in range(10):
            x = rng.uniform(-1, 1, n) * 10 ** rng.uniform(4, 12, n)
            bad += fails(np.sin, {"x": x}, vjp=scaled(np.cos))
            caught += fails(np.sin, {"x": x}, vjp=scaled(np.cos, 1.01, n // 2))
        print(f"{n:3d} elements up to 1e12: false failures {bad}/10, one 1.01x off caught {caught}/10")

    fast = {
        "sin(1/x), x in [1e-3, 1e-2]": (lambda x: np.sin(1 / x), lambda x: -np.cos(1 / x) / x**2, (-3, -2)),
        "cos(x^2), x in [1e2, 1e4]": (lambda x: np.cos(x**2), lambda x: -2 * x * np.sin(x**2), (2, 4)),
    }
    for name, (f, df, (lo, hi)) in fast.items():
        rng = np.random.default_rng(0)
        bad = caught = 0
        for _ in range(10):
            x = 10 ** rng.uniform(lo, hi, 3)
            bad += fails(f, {"x": x}, vjp=scaled(df))
            caught += fails(f, {"x": x}, vjp=scaled(df, 1.01))
        print(f"{name}: false failures {bad}/10, 1.01x caught {caught}/10")

    strategy = {"x": st.lists(st.floats(-1e12, 1e12), min_size=1, max_size=14).map(np.array)}
    for name, f, df in (("sin", np.sin, np.cos), ("cos", np.cos, lambda x: -np.sin(x))):
        cells = []
        for factor in (1.0, 1.5, 1.0001):
            failed = 0
            for seed in range(4):
                try:
                    gradoracle.check_gradients(f, strategy, vjp=scaled(df, factor), seed=seed, examples=60)
                except GradientMismatch:
                    failed += 1
            cells.append(f"{factor}x: {failed}/4 fail")
        print(f"check_gradients {name}, floats in [-1e12, 1e12]: " + ", ".join(cells))

    try:
        import torch
    except ImportError:
        print("torch not installed: the torch rows are skipped")
        return
    rng = np.random.default_rng(2)
    for mode in ("vjp", "jvp"):
        bad = 0
        for _ in range(8):
            x = rng.uniform(-1, 1, 3) * 10 ** rng.uniform(4, 11, 3)
            bad += fails(torch.sin, {"x": x}, mode=mode, framework="torch")
        print(f"torch.sin at 1e4..1e11, mode {mode}: {bad}/8 false failures")
    for lo, hi in ((3, 5), (5, 7), (7, 9), (9, 11), (11, 13)):
        rng = np.random.default_rng(2)
        cells = []
        for mode in ("vjp", "jvp", "hvp"):
            faults = []
            for _ in range(8):
                x = rng.uniform(-1, 1, 3) * 10 ** rng.uniform(lo, hi, 3)
                try:
                    gradoracle.check_gradients_at(
                        torch.sin, {"x": x}, mode=mode, framework="torch", identity="elementwise-sin"
                    )
                except GradientMismatch as e:
                    faults.append(str(e.fault))
            cells.append(f"{mode} {len(faults)}/8 {sorted(set(faults))}")
        print(f"torch.sin, identity elementwise-sin, 1e{lo}..1e{hi}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
