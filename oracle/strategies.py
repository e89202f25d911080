"""Hypothesis strategies that draw identity inputs cheaply.

Drawing a large array element by element through Hypothesis is slow and its shrinking
rarely helps a gradient check.  Instead each strategy draws the *structure* (shapes,
pool size, a value scale, a target kind) and one 32-bit seed; the values come from
``numpy.random.default_rng(seed)``.  Shrinking still works where it is useful: shapes
shrink towards 1, the scale towards 1, the seed towards 0, so a failing example shrinks
to the smallest shape that still fails.

Inputs are kept a margin :data:`KINK_MARGIN` away from non-differentiable points (ReLU,
leaky ReLU, abs and ELU at 0, tied maxima in a max-pool window).  The margin is larger
than any perturbation finite differences make (see :mod:`oracle.finite_differences`:
the largest step is ``eps32**(1/3) * 2 ~ 1e-2`` per coordinate, for float32-only
adapters; float64 steps are ~1e-5), and the runner additionally verifies that no
finite-difference evaluation crosses a kink.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st

#: Distance kept between conformance inputs and any non-differentiable point.
KINK_MARGIN = 0.05

SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
SCALES = st.sampled_from([1.0, 0.5, 2.0])


@dataclass(frozen=True)
class Example:
    """One drawn input: float64 master arrays, hyperparameters, and a seed.

    ``seed`` determines the cotangent ``u`` and the finite-difference directions, so an
    example is fully reproducible from these three fields.
    """

    inputs: dict[str, np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in self.inputs.items())
        return f"Example({shapes}, params={self.params}, seed={self.seed})"


def rng_for(seed: int) -> np.random.Generator:
    """The generator that turns a drawn seed into values."""
    return np.random.default_rng(seed)


def uniform(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """Values uniform in ``[-scale, scale]``."""
    return rng.uniform(-scale, scale, size=shape)


def away_from_zero(
    rng: np.random.Generator, shape: tuple[int, ...], scale: float, margin: float = KINK_MARGIN
) -> np.ndarray:
    """Values with ``margin <= |x| <= margin + scale``, random sign."""
    magnitude = margin + rng.uniform(0.0, scale, size=shape)
    sign = np.where(rng.random(size=shape) < 0.5, -1.0, 1.0)
    return sign * magnitude


def positive(rng: np.random.Generator, shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
    """Values uniform in ``[low, high]`` (for log's domain)."""
    return rng.uniform(low, high, size=shape)


def target_vector(rng: np.random.Generator, m: int, soft: bool) -> np.ndarray:
    """A probability vector: one-hot, or soft with dyadic entries summing to exactly 1.

    Soft targets are multiples of 2**-16, so they and their sum are exact in float32 and
    float64 and the identity ``d/dz CE = softmax(z) - y`` (which uses ``sum y = 1``)
    holds exactly in every dtype.
    """
    y = np.zeros(m)
    if not soft:
        y[rng.integers(0, m)] = 1.0
        return y
    counts = rng.multinomial(2**16, rng.dirichlet(np.ones(m)))
    return counts / 2.0**16


def separate_window_maxima(x: np.ndarray, k: int, margin: float = KINK_MARGIN) -> np.ndarray:
    """Raise each k x k window's (stride k) maximum so it leads the runner-up by ``margin``."""
    x = x.copy()
    ho, wo = x.shape[0] // k, x.shape[1] // k
    if ho == 0 or wo == 0 or k == 1:
        return x
    core = x[: ho * k, : wo * k].reshape(ho, k, wo, k).transpose(0, 2, 1, 3).reshape(ho, wo, k * k)
    order = np.sort(core, axis=2)
    gap = order[:, :, -1] - order[:, :, -2]
    bump = np.maximum(margin - gap, 0.0)
    idx = np.argmax(core, axis=2)
    np.put_along_axis(core, idx[:, :, None], (order[:, :, -1] + bump)[:, :, None], axis=2)
    x[: ho * k, : wo * k] = core.reshape(ho, wo, k, k).transpose(0, 2, 1, 3).reshape(ho * k, wo * k)
    return x


def push_preactivation_from_kinks(
    z: np.ndarray, bias: np.ndarray, margin: float = 2 * KINK_MARGIN
) -> np.ndarray:
    """A new bias so that ``z - bias + new_bias`` keeps ``|.| >= margin`` elementwise."""
    shift = np.where(np.abs(z) < margin, np.where(z >= 0, margin - z, -margin - z), 0.0)
    return bias + shift


def dims(min_value: int = 1, max_value: int = 8) -> st.SearchStrategy[int]:
    """A dimension size; shrinks towards ``min_value``."""
    return st.integers(min_value=min_value, max_value=max_value)
