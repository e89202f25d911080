"""The bench's ops, sizes, tools and targets, and its cases (one op at one size).

Each :class:`BenchCase` has a deterministic float64 example (seed 0); :func:`perturb` and
:func:`noise_for` make the detection perturbation ``g + eps ||g||_2 n / ||n||_2``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gradoracle.identities import Identity, get_identity
from gradoracle.strategies import Example, push_preactivation_from_kinks, separate_window_maxima

#: The ops of the bench, in table order, and the identity each one checks.
OP_IDENTITY: dict[str, str] = {
    "linear": "matvec-weight-grad",
    "conv": "conv-input",
    "mlp": "mlp",
    "max-pool": "max-pool",
    "avg-pool": "avg-pool",
}
BENCH_OPS: tuple[str, ...] = tuple(OP_IDENTITY)
DEFAULT_SIZES: dict[str, tuple[int, ...]] = {
    "linear": (8, 32, 128, 512, 1024),
    "conv": (16, 32, 64, 128),
    "mlp": (8, 32, 128),
    "max-pool": (16, 32, 64, 128),
    "avg-pool": (16, 32, 64, 128),
}
QUICK_SIZES: dict[str, tuple[int, ...]] = {
    "linear": (8, 32),
    "conv": (16,),
    "mlp": (8,),
    "max-pool": (16,),
    "avg-pool": (16,),
}
CONV_K = 3
POOL_K = 2
MLP_CLASSES = 10

GRADORACLE_ADAPTERS: tuple[str, ...] = ("numpy", "torch", "jax")
#: Every tool, in column order: the gradoracle adapters, then the frameworks' own checkers.
REFERENCE_TOOLS: tuple[str, ...] = ("gradcheck", "gradcheck-fast", "check_grads")
#: The framework whose forward+backward is the unit of cost of each tool.
TOOL_FRAMEWORK: dict[str, str] = {
    "gradcheck": "torch",
    "gradcheck-fast": "torch",
    "check_grads": "jax",
}
FRAMEWORKS: tuple[str, ...] = ("numpy", "torch", "jax")
#: Relative gradient errors tried for detection power, largest first.
DETECTION_GRID: tuple[float, ...] = tuple(10.0 ** (-k) for k in range(1, 15))
#: The issue's target: one check at most this many forward+backwards at these cases.
TARGET_RATIO = 5.0
TARGET_CASES: tuple[tuple[str, int], ...] = (("linear", 128), ("conv", 64))
#: The issue's target for a new input shape in JAX, seconds.
TARGET_NEW_SHAPE_S = 0.005
#: Issue 16's targets for one check with its examples evaluated as a batch (the
#: ``gradoracle-batch[...]`` columns, cost per example): at most this many forward+backwards.
BATCH_TARGETS: dict[tuple[str, int], float] = {("conv", 64): 5.0, ("linear", 128): 10.0}
#: The frameworks issue 16's batched targets are set for.
BATCH_TARGET_FRAMEWORKS: tuple[str, ...] = ("torch", "jax")
#: Issue 16: the batched ratio at linear 1024 at most this multiple of the ratio at linear 8.
BATCH_GROWTH_SIZES: tuple[int, int] = (8, 1024)
BATCH_GROWTH = 2.0


class BenchError(ValueError):
    """A bench configuration that cannot run (unknown op or tool, bad size); says what fits."""


@dataclass(frozen=True)
class BenchCase:
    """One op at one size; its float64 example is deterministic (seed 0)."""

    op: str
    size: int

    def __post_init__(self) -> None:
        if self.op not in OP_IDENTITY:
            raise BenchError(f"unknown bench op {self.op!r}; choose from {', '.join(BENCH_OPS)}")
        smallest = {"conv": CONV_K, "max-pool": POOL_K, "avg-pool": POOL_K}.get(self.op, 1)
        if self.size < smallest:
            raise BenchError(f"{self.op} size {self.size} is too small: use a size >= {smallest}")

    @property
    def identity(self) -> Identity:
        """The catalogue identity this case checks."""
        return get_identity(OP_IDENTITY[self.op])

    @property
    def label(self) -> str:
        """What the case computes, e.g. ``linear W 128x128``."""
        n = self.size
        return {
            "linear": f"linear W {n}x{n}",
            "conv": f"conv {n}x{n} k={CONV_K}",
            "mlp": f"mlp {n}-{n}-{MLP_CLASSES}",
            "max-pool": f"max-pool {n}x{n} k={POOL_K}",
            "avg-pool": f"avg-pool {n}x{n} k={POOL_K}",
        }[self.op]

    def example(self) -> Example:
        """The inputs (float64), drawn from ``default_rng(size)`` like the identity's strategy."""
        n, rng = self.size, np.random.default_rng(self.size)
        if self.op == "linear":
            return Example({"W": rng.uniform(-1, 1, (n, n)), "x": rng.uniform(-1, 1, n)}, {}, 0)
        if self.op == "conv":
            return Example(
                {"X": rng.uniform(-1, 1, (n, n)), "K": rng.uniform(-1, 1, (CONV_K, CONV_K))}, {}, 0
            )
        if self.op == "mlp":
            x = rng.uniform(-1, 1, n)
            W1 = rng.uniform(-1, 1, (n, n)) / math.sqrt(n)
            b1 = push_preactivation_from_kinks(W1 @ x, rng.uniform(-0.5, 0.5, n))
            W2 = rng.uniform(-1, 1, (MLP_CLASSES, n)) / math.sqrt(n)
            y = np.zeros(MLP_CLASSES)
            y[int(rng.integers(0, MLP_CLASSES))] = 1.0
            inputs = {"x": x, "W1": W1, "b1": b1, "W2": W2, "b2": rng.uniform(-0.5, 0.5, MLP_CLASSES), "y": y}
            return Example(inputs, {"soft_target": False}, 0)
        X = rng.uniform(-1, 1, (n, n))
        if self.op == "max-pool":
            X = separate_window_maxima(X, POOL_K)
        return Example({"X": X}, {"k": POOL_K}, 0)

    @property
    def elements(self) -> int:
        """How many input elements the gradient is taken with respect to."""
        ex = self.example()
        return int(sum(ex.inputs[n].size for n in self.identity.wrt))


def plan_cases(
    ops: Sequence[str] | None = None, sizes: Mapping[str, Sequence[int]] | None = None, quick: bool = False
) -> list[BenchCase]:
    """The cases to run: ``ops`` (default all) at ``sizes`` (default :data:`DEFAULT_SIZES`)."""
    table = dict(QUICK_SIZES if quick else DEFAULT_SIZES)
    for op, values in (sizes or {}).items():
        if op not in OP_IDENTITY:
            raise BenchError(f"--size names unknown op {op!r}; choose from {', '.join(BENCH_OPS)}")
        table[op] = tuple(values)
    chosen = list(ops) if ops else list(BENCH_OPS)
    for op in chosen:
        if op not in OP_IDENTITY:
            raise BenchError(f"unknown bench op {op!r}; choose from {', '.join(BENCH_OPS)}")
    return [BenchCase(op, n) for op in chosen for n in sorted(set(table[op]))]


def noise_for(case: BenchCase) -> dict[str, np.ndarray]:
    """The Gaussian directions ``n`` of the detection perturbation (seed 0), per input."""
    rng = np.random.default_rng(0)
    ex = case.example()
    return {n: rng.standard_normal(ex.inputs[n].shape) for n in case.identity.wrt}


def perturb(g: np.ndarray, eps: float, noise: np.ndarray) -> np.ndarray:
    """``g + eps ||g||_2 n / ||n||_2``, in float64, back in ``g``'s dtype; ``g`` itself for eps 0."""
    g64 = np.asarray(g, dtype=np.float64)
    nn = float(np.linalg.norm(noise))
    if eps == 0 or nn == 0:
        return np.array(g, copy=True)
    return (g64 + (eps * float(np.linalg.norm(g64)) / nn) * noise).astype(np.asarray(g).dtype)


def cotangent_for(case: BenchCase, out_shape: tuple[int, ...]) -> np.ndarray:
    """The cotangent ``u`` the plain forward+backward baselines pull back (seed 1)."""
    return np.random.default_rng(1).uniform(-1.0, 1.0, size=out_shape)
