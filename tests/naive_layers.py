"""The layer ops written as loops straight from their definitions in :mod:`gradoracle.ops`.

Independent of :mod:`gradoracle.reference_layers` and of the engine (element by element,
window by window), so a wrong op in any of them shows up against these.  Small shapes only.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    out = np.zeros((*x.shape[:-1], w.shape[0]))
    for idx in np.ndindex(*x.shape[:-1]):
        for o in range(w.shape[0]):
            bias = 0.0 if b is None else b[o]  # b None: a layer without bias
            out[(*idx, o)] = bias + sum(w[o, i] * x[(*idx, i)] for i in range(w.shape[1]))
    return out


def dense(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    return linear(x, w.T, b)


def cross_entropy(z: np.ndarray, t: np.ndarray, reduction: str, eps: float) -> np.ndarray:
    n, classes = z.shape
    total = 0.0
    for row in range(n):
        lse = math.log(sum(math.exp(v) for v in z[row]))
        for c in range(classes):
            base = (1.0 if int(t[row]) == c else 0.0) if t.ndim == 1 else float(t[row, c])
            total -= ((1 - eps) * base + eps / classes) * (z[row, c] - lse)
    return np.array(total / n if reduction == "mean" else total)


def conv(
    x: np.ndarray,
    k: np.ndarray,
    b: Any,
    stride: tuple[int, ...],
    padding: Any,
    dilation: tuple[int, ...],
    groups: int,
) -> np.ndarray:
    rank = x.ndim - 2
    kernel = k.shape[2:]
    if padding == "same":
        lo = [d * (m - 1) // 2 for d, m in zip(dilation, kernel, strict=True)]
        hi = [d * (m - 1) - a for d, m, a in zip(dilation, kernel, lo, strict=True)]
    else:
        lo = hi = list(padding)
    out_shape = [
        (x.shape[2 + i] + lo[i] + hi[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
        for i in range(rank)
    ]
    c_out, cg = k.shape[:2]
    og = c_out // groups
    out = np.zeros((x.shape[0], c_out, *out_shape))
    for n, o in itertools.product(range(x.shape[0]), range(c_out)):
        g = o // og
        for p in np.ndindex(*out_shape):
            acc = 0.0 if b is None else float(b[o])
            for c in range(cg):
                for a in np.ndindex(*kernel):
                    pos = [p[i] * stride[i] + a[i] * dilation[i] - lo[i] for i in range(rank)]
                    if all(0 <= pos[i] < x.shape[2 + i] for i in range(rank)):
                        acc += x[(n, g * cg + c, *pos)] * k[(o, c, *a)]
            out[(n, o, *p)] = acc
    return out


def _pool_len(n: int, w: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    span = n + 2 * p - d * (w - 1) - 1
    out = (math.ceil(span / s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


def pool(
    x: np.ndarray,
    kind: str,
    window: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    ceil_mode: bool,
    count_include_pad: bool = True,
) -> np.ndarray:
    rank = x.ndim - 2
    spatial = x.shape[2:]
    out_shape = [
        _pool_len(spatial[i], window[i], stride[i], padding[i], dilation[i], ceil_mode) for i in range(rank)
    ]
    out = np.zeros((*x.shape[:2], *out_shape))
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for p in np.ndindex(*out_shape):
            start = [p[i] * stride[i] - padding[i] for i in range(rank)]
            values = []
            for a in np.ndindex(*window):
                pos = [start[i] + a[i] * dilation[i] for i in range(rank)]
                if all(0 <= pos[i] < spatial[i] for i in range(rank)):
                    values.append(float(x[(n, c, *pos)]))
            if kind == "max":
                out[(n, c, *p)] = max(values)
                continue
            if count_include_pad:
                divisor = 1
                for i in range(rank):
                    divisor *= min(start[i] + window[i], spatial[i] + padding[i]) - start[i]
            else:
                divisor = len(values)
            out[(n, c, *p)] = math.fsum(values) / divisor
    return out


def global_avg(x: np.ndarray) -> np.ndarray:
    out = np.zeros(x.shape[:2])
    for n, c in np.ndindex(*x.shape[:2]):
        out[n, c] = math.fsum(x[n, c].reshape(-1)) / x[n, c].size
    return out
