"""Central finite differences with dtype-aware steps and an error estimate.

The quantity estimated is always a *projected* derivative ``u^T J v`` of a forward
``f``: ``s(t) = <u, f(x + t v)>`` is a scalar function of ``t`` and

    D(h) = (s(h) - s(-h)) / (2 h)  ~  s'(0) = u^T J v,

two evaluations per direction whatever the size of ``x``.  With ``v`` a basis vector
``e_j`` this is column ``j`` of ``u^T J`` (the "full Jacobian" mode used for small
inputs); with random ``v`` it is a random projection (the mode for large inputs).

Step size.  The error of ``D(h)`` is a truncation term ``h^2 |s'''| / 6`` plus a
rounding term ``~ eps |s| / h``; their sum is smallest at ``h* = (3 eps |s| / |s'''|)^(1/3)``,
so the textbook choice is ``h = eps^(1/3) * max(1, |x|_inf)``: the cube root of machine
epsilon, scaled by the input's magnitude (an absolute step for inputs near 0).  That is
6.1e-6 in float64 and 4.9e-3 in float32, giving a relative error near ``eps^(2/3)``
(3.7e-11 and 2.4e-5).

Error estimate.  When a comparison is close, :func:`richardson` evaluates ``D(2h)`` as
well: ``D_R = (4 D(h) - D(2h)) / 3`` cancels the ``h^2`` term and ``|D(h) - D(2h)|``
estimates the error of ``D(h)`` (truncation and rounding noise alike).  This costs two
more evaluations and is only spent where it pays: on directions that would otherwise
fail.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

Arrays = Mapping[str, np.ndarray]
Forward = Callable[[dict[str, np.ndarray]], np.ndarray]


def machine_epsilon(dtype: str | np.dtype) -> float:
    """``eps`` of a floating dtype (2.2e-16 for float64, 1.2e-7 for float32)."""
    return float(np.finfo(np.dtype(dtype)).eps)


def step_size(dtype: str | np.dtype, inputs: Arrays) -> float:
    """``h = eps^(1/3) * max(1, max_i |x_i|)``: the central-difference optimum (module docstring)."""
    scale = max([1.0] + [float(np.max(np.abs(v))) for v in inputs.values() if v.size])
    return float(machine_epsilon(dtype) ** (1.0 / 3.0) * scale)


def perturbed(inputs: Arrays, direction: Arrays, t: float, dtype: str | np.dtype) -> dict[str, np.ndarray]:
    """``x + t v`` for the names in ``direction`` (others unchanged), cast to ``dtype``."""
    out = {k: np.asarray(v, dtype=dtype) for k, v in inputs.items()}
    # near float64's largest values x + t v overflows to inf: the forward's result says so (no
    # warning, which a test suite run with -W error would turn into an error of the oracle's)
    with np.errstate(over="ignore", invalid="ignore"):
        for k, v in direction.items():
            point = np.multiply(v, t, dtype=np.float64)  # one new array, then x added into it
            point += np.asarray(inputs[k], dtype=np.float64)
            out[k] = point.astype(dtype, copy=False)
    return out


def projected(f: Forward, inputs: Arrays, u: np.ndarray, direction: Arrays, t: float, dtype: str) -> float:
    """``s(t) = <u, f(x + t v)>`` accumulated in float64."""
    out = np.asarray(f(perturbed(inputs, direction, t, dtype)), dtype=np.float64)
    return float(np.sum(np.asarray(u, dtype=np.float64) * out))


def central_difference(
    f: Forward, inputs: Arrays, u: np.ndarray, direction: Arrays, h: float, dtype: str
) -> float:
    """``D(h) = (s(h) - s(-h)) / 2h ~ u^T J v``."""
    return (projected(f, inputs, u, direction, h, dtype) - projected(f, inputs, u, direction, -h, dtype)) / (
        2 * h
    )


@dataclass(frozen=True)
class Richardson:
    """An extrapolated derivative and an estimate of the error of the plain ``D(h)``."""

    value: float
    error: float


def richardson(
    f: Forward,
    inputs: Arrays,
    u: np.ndarray,
    direction: Arrays,
    h: float,
    dtype: str,
    d_h: float | None = None,
) -> Richardson:
    """``D_R = (4 D(h) - D(2h)) / 3`` with error estimate ``|D(h) - D(2h)|``."""
    d1 = central_difference(f, inputs, u, direction, h, dtype) if d_h is None else d_h
    d2 = central_difference(f, inputs, u, direction, 2 * h, dtype)
    return Richardson(value=(4 * d1 - d2) / 3, error=abs(d1 - d2))


def jacobian(f: Forward, inputs: Arrays, wrt: str, dtype: str = "float64") -> np.ndarray:
    """Full central-difference Jacobian ``J[i, j] = d f_i / d x_j`` of ``f`` w.r.t. ``inputs[wrt]``.

    ``2 n`` evaluations for ``n = inputs[wrt].size``: for small inputs and for tests.
    """
    x = inputs[wrt]
    h = step_size(dtype, inputs)
    cols = []
    for j in range(x.size):
        e = np.zeros(x.size)
        e[j] = 1.0
        d = {wrt: e.reshape(x.shape)}
        plus = np.asarray(f(perturbed(inputs, d, h, dtype)), dtype=np.float64).reshape(-1)
        minus = np.asarray(f(perturbed(inputs, d, -h, dtype)), dtype=np.float64).reshape(-1)
        cols.append((plus - minus) / (2 * h))
    return np.stack(cols, axis=1) if cols else np.zeros((0, 0))


def directions(
    rng: np.random.Generator, shapes: Mapping[str, tuple[int, ...]], count: int, full_max: int
) -> list[dict[str, np.ndarray]]:
    """Directions ``v`` over the inputs named in ``shapes``.

    When the inputs hold ``<= full_max`` elements in all: every basis vector (so the
    finite differences give all of ``u^T J``, element by element).  Otherwise ``count``
    random directions, uniform in ``[-1, 1]`` per element and normalised to unit 2-norm
    over all inputs together.  Any continuous distribution with independent elements
    detects an error vector ``e != 0`` with probability 1 (``<e, v> = 0`` is a hyperplane,
    a null set); the check needs that, not Gaussians, and uniform draws cost about a third
    of Gaussian ones.  Rademacher signs would not do: ``e = (1, -1)`` is missed half the time.
    """
    total = sum(int(np.prod(s)) for s in shapes.values())
    out: list[dict[str, np.ndarray]] = []
    if total <= full_max:
        for name, shape in shapes.items():
            size = int(np.prod(shape))
            for j in range(size):
                e = np.zeros(size)
                e[j] = 1.0
                d = {n: np.zeros(s) for n, s in shapes.items()}
                d[name] = e.reshape(shape)
                out.append(d)
        return out
    for _ in range(count):
        d = {n: rng.uniform(-1.0, 1.0, size=s) for n, s in shapes.items()}
        norm = float(np.sqrt(sum(float(np.sum(v * v)) for v in d.values())))
        out.append({n: v / norm for n, v in d.items()})
    return out


def is_basis(direction: Arrays) -> tuple[str, int] | None:
    """``(name, flat index)`` when ``direction`` is a basis vector, else ``None``."""
    # count_nonzero first: it allocates nothing, so a dense random direction is rejected
    # without building index arrays as large as the input.
    if sum(int(np.count_nonzero(v)) for v in direction.values()) != 1:
        return None
    name = next(n for n, v in direction.items() if np.count_nonzero(v))
    j = int(np.flatnonzero(direction[name])[0])
    return (name, j) if direction[name].reshape(-1)[j] == 1.0 else None
