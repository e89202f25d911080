"""Hypothesis strategies for the layer identities: hyper-parameters drawn with the shapes.

Every hyper-parameter comes from a small menu whose first entry is the simplest value
(``stride=1``, ``padding=0``, ``dilation=1``, ``groups=1``, ``N=1``, ``ceil_mode=False``,
``reduction="mean"``, ``label_smoothing=0``), so Hypothesis shrinks a failure to the
simplest configuration that still fails, and each example is kept valid by construction
(the spatial size is drawn *after* the kernel, stride, padding and dilation, as the
smallest size that fits plus a drawn extra).  Channel counts of 16-64, the sizes real
models run on accelerators, are drawn in about one example in :data:`LARGE_ONE_IN` (the
default test run stays fast); ``GRADORACLE_LARGE_SHAPES=1`` draws them in every example
(a GPU run's profile).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from hypothesis import strategies as st

from gradoracle import strategies as S

#: About one example in this many draws the accelerator-sized shapes (channels 16-64).
LARGE_ONE_IN = 12
#: The environment variable that makes every example accelerator-sized.
LARGE_ENV = "GRADORACLE_LARGE_SHAPES"

#: Leading batch shapes of a linear layer's input: one row first, then several, two batch axes.
BATCH_SHAPES: tuple[tuple[int, ...], ...] = ((1,), (2,), (3,), (2, 3), (5,), (2, 1, 3))
#: Batch sizes N of the layers (the first is the simplest; N > 1 shows a missing batch sum).
BATCH_SIZES: tuple[int, ...] = (1, 2, 3, 4)
#: (in, out) widths of an accelerator-sized linear layer.
LARGE_WIDTHS: tuple[tuple[int, int], ...] = ((16, 32), (64, 16), (32, 64))
#: (inputs n, hidden h, classes m) of an accelerator-sized MLP.
LARGE_MLP: tuple[tuple[int, int, int], ...] = ((16, 32, 10), (64, 32, 16), (32, 64, 10))
#: (groups, C_in, C_out) of an accelerator-sized convolution: dense, grouped, depthwise.
LARGE_CONV_CHANNELS: tuple[tuple[int, int, int], ...] = ((1, 16, 32), (4, 32, 16), (16, 16, 16), (64, 64, 64))


@st.composite
def large(draw: st.DrawFn) -> bool:
    """True in about one example in :data:`LARGE_ONE_IN` (always under ``GRADORACLE_LARGE_SHAPES=1``)."""
    if os.environ.get(LARGE_ENV, "") not in ("", "0"):
        return True
    return bool(draw(st.integers(0, LARGE_ONE_IN - 1)) == LARGE_ONE_IN - 1)


def per_axis(menu: tuple[Any, ...], rank: int) -> st.SearchStrategy[tuple[Any, ...]]:
    """One menu entry per spatial axis (rectangular kernels, strides, ...)."""
    return st.tuples(*(st.sampled_from(menu) for _ in range(rank)))


def bias_between_kinks(z: np.ndarray, b: np.ndarray, margin: float) -> np.ndarray:
    """A bias with ``|z[n, j] + b[j]| >= margin`` for every row n: ``b`` itself when it is far
    enough from every ``-z[n, j]``, else the middle of the gap between the ``-z[:, j]`` nearest to
    it that is wide enough, else above them all (the unit is on for the whole batch)."""
    out = np.array(b, dtype=float)
    for j in range(z.shape[1]):
        kinks = np.sort(-z[:, j])
        if np.all(np.abs(kinks - out[j]) >= margin):
            continue
        candidates = [kinks[0] - margin, kinks[-1] + margin]
        gaps = np.diff(kinks)
        candidates += [
            float((lo + hi) / 2)
            for lo, hi, g in zip(kinks[:-1], kinks[1:], gaps, strict=True)
            if g >= 2 * margin
        ]
        out[j] = min(candidates, key=lambda c: abs(c - out[j]))
    return out


def distinct_values(rng: S.ValueSource, shape: tuple[int, ...], gap: float) -> np.ndarray:
    """Values that differ pairwise by at least ``gap`` (a shuffled ladder centred on 0), so every
    pooling window, overlapping or not, has one maximum ahead of its runner-up by ``gap``."""
    size = int(np.prod(shape))
    ladder = (np.arange(size) - (size - 1) / 2) * gap
    return rng.permutation(ladder).reshape(shape) + rng.uniform(0, gap / 4)


def uniform(
    draw: st.DrawFn, seed: int, shapes: dict[str, tuple[int, ...]], scale: float
) -> dict[str, np.ndarray]:
    """Named arrays uniform in ``[-scale, scale]``, drawn through Hypothesis (they shrink) with ``seed``."""
    rng = S.values_for(draw, seed)
    return {name: S.uniform(rng, shape, scale) for name, shape in shapes.items()}
