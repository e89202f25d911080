"""The oracle's own forward: plain NumPy implementations of :mod:`gradoracle.ops`.

This namespace runs an identity's forward in NumPy (float64 for the reference, or the
dtype under test for the rounding-noise estimate).  It is forward-only: the oracle's
gradients come from the closed forms in :mod:`gradoracle.identities`, never from
differentiating this code.  Every function preserves its input's dtype.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from gradoracle import reference_layers as layers
from gradoracle.ops import ELU_ALPHA, LEAKY_RELU_SLOPE

_erf_ufunc = np.frompyfunc(math.erf, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    """``erf(x)`` elementwise, in the dtype of ``x`` (math.erf is correctly rounded to ~1 ulp)."""
    x = np.asarray(x)
    return np.asarray(_erf_ufunc(x), dtype=np.float64).astype(x.dtype, copy=False)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` evaluated without overflow for either sign of ``x``."""
    x = np.asarray(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def log_softmax(z: np.ndarray) -> np.ndarray:
    """``z - max z - log sum exp(z - max z)``."""
    shifted = z - np.max(z)
    return shifted - np.log(np.sum(np.exp(shifted)))


def correlate2d_valid(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Valid cross-correlation ``Z[u,v] = sum_{a,b} X[u+a, v+b] K[a,b]``.

    A direct sum by shifted slices, looping over whichever is smaller: the kernel's
    ``kh kw`` offsets (``Z += K[a,b] X[a:a+Ho, b:b+Wo]``, one vector operation each) or
    the ``Ho Wo`` output positions (``Z[u,v] = sum(X[u:u+kh, v:v+kw] * K)``, for a kernel
    larger than the output, as in the kernel gradient ``correlate(X, delta)``).  About 6x
    cheaper than ``einsum`` over a sliding-window view at 64x64, k = 3.
    """
    x, k = np.asarray(x), np.asarray(k)
    kh, kw = k.shape
    ho, wo = x.shape[0] - kh + 1, x.shape[1] - kw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"correlate2d_valid: kernel {k.shape} is larger than the input {x.shape}")
    out = np.zeros((ho, wo), dtype=np.result_type(x, k))
    if kh * kw <= ho * wo:
        for a in range(kh):
            for b in range(kw):
                out += k[a, b] * x[a : a + ho, b : b + wo]
    else:
        for u in range(ho):
            for v in range(wo):
                out[u, v] = np.sum(x[u : u + kh, v : v + kw] * k)
    return out


def pool_windows(x: np.ndarray, k: int, stride: int | None) -> np.ndarray:
    """The (Ho, Wo, k, k) windows of a k x k pool with ``stride`` (default k), floor mode."""
    s = k if stride is None else stride
    return sliding_window_view(x, (k, k))[::s, ::s]


class ReferenceOps:
    """Forward-only NumPy ops with the semantics documented in :mod:`gradoracle.ops`."""

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.matmul(a, b)

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b

    def relu(self, x: np.ndarray) -> np.ndarray:
        return np.where(x > 0, x, np.zeros_like(x))

    def leaky_relu(self, x: np.ndarray) -> np.ndarray:
        return np.where(x > 0, x, x * x.dtype.type(LEAKY_RELU_SLOPE))

    def sigmoid(self, x: np.ndarray) -> np.ndarray:
        return sigmoid(x)

    def tanh(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(x)

    def exp(self, x: np.ndarray) -> np.ndarray:
        return np.exp(x)

    def log(self, x: np.ndarray) -> np.ndarray:
        return np.log(x)

    def softplus(self, x: np.ndarray) -> np.ndarray:
        return np.logaddexp(np.zeros_like(x), x)

    def sin(self, x: np.ndarray) -> np.ndarray:
        return np.sin(x)

    def square(self, x: np.ndarray) -> np.ndarray:
        return x * x

    def abs(self, x: np.ndarray) -> np.ndarray:
        return np.abs(x)

    def elu(self, x: np.ndarray) -> np.ndarray:
        return np.where(x > 0, x, x.dtype.type(ELU_ALPHA) * np.expm1(np.minimum(x, 0)))

    def silu(self, x: np.ndarray) -> np.ndarray:
        return x * sigmoid(x)

    def gelu(self, x: np.ndarray) -> np.ndarray:
        half = x.dtype.type(0.5)
        return half * x * (1 + erf(x / x.dtype.type(math.sqrt(2.0))))

    def softmax_cross_entropy(self, logits: np.ndarray, target: np.ndarray) -> np.ndarray:
        return -np.sum(target * log_softmax(logits))

    def conv2d(self, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        return correlate2d_valid(x, k)

    def max_pool2d(self, x: np.ndarray, k: int, stride: int | None = None) -> np.ndarray:
        return pool_windows(x, k, stride).max(axis=(2, 3))

    def avg_pool2d(self, x: np.ndarray, k: int, stride: int | None = None) -> np.ndarray:
        return pool_windows(x, k, stride).mean(axis=(2, 3))

    def sum(self, x: np.ndarray) -> np.ndarray:
        return np.sum(x)

    def maximum_zero(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x, np.zeros_like(x))

    # ---- kinks (#13) ------------------------------------------------------------------

    def maximum(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``max(a, b)`` elementwise."""
        return np.maximum(a, b)

    def clamp(self, x: np.ndarray, lo: float, hi: float) -> np.ndarray:
        """``min(max(x, lo), hi)``."""
        return np.minimum(np.maximum(x, lo), hi)

    def clamp_min_zero(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x, 0, None)

    # ---- layers as frameworks ship them (gradoracle.reference_layers) ------------------

    def linear(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
        return layers.linear(x, w, b)

    def dense(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
        return layers.dense(x, w, b)

    def cross_entropy(
        self, logits: np.ndarray, target: np.ndarray, reduction: str = "mean", label_smoothing: float = 0.0
    ) -> np.ndarray:
        return layers.cross_entropy(logits, target, reduction, label_smoothing)

    def conv_nd(
        self,
        x: np.ndarray,
        k: np.ndarray,
        b: np.ndarray | None,
        stride: tuple[int, ...],
        padding: tuple[int, ...] | str,
        dilation: tuple[int, ...],
        groups: int,
    ) -> np.ndarray:
        return layers.conv_nd(x, k, b, stride, padding, dilation, groups)

    def max_pool_nd(
        self,
        x: np.ndarray,
        window: tuple[int, ...],
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        dilation: tuple[int, ...],
        ceil_mode: bool,
    ) -> np.ndarray:
        return layers.max_pool_nd(x, window, stride, padding, dilation, ceil_mode)

    def avg_pool_nd(
        self,
        x: np.ndarray,
        window: tuple[int, ...],
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> np.ndarray:
        return layers.avg_pool_nd(x, window, stride, padding, ceil_mode, count_include_pad)

    def global_avg_pool(self, x: np.ndarray) -> np.ndarray:
        return layers.global_avg_pool(x)


REFERENCE_OPS = ReferenceOps()
