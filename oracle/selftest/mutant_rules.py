"""NumPy-engine mutants: one :class:`gradoracle.adapters.numpy_engine.Rules` subclass per bug.

Each class breaks one backward (or, for a few, forward) rule of ``notes/gradient-notes.md``,
grouped by the notes' sections; :func:`_numpy` turns a class into a catalogue factory.  The
catalogue (:mod:`gradoracle.selftest.catalogue`) says what the oracle must report for each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from gradoracle.adapters.base import VJPResult
from gradoracle.adapters.numpy_engine import (
    NumpyEngineAdapter,
    Rules,
    Tensor,
    _correlate_valid,
    _pool_windows,
    _stable_sigmoid,
    _std_normal_cdf,
    _std_normal_pdf,
)


def _numpy(rules_cls: type[Rules]) -> Callable[[str], Any]:
    def factory(name: str) -> Any:
        return NumpyEngineAdapter(rules=rules_cls(), name=name)

    return factory


# ---- identities 1, 2, 5, 6: matmul -----------------------------------------------------


class WNotTransposed(Rules):
    """``z = W x``: dJ/dx = W' delta with W' = W.reshape(m, n) instead of W^T.

    For a square W that is W itself (the transpose forgotten); otherwise it is the
    reshape-for-transpose bug, which keeps the shape right and the values wrong.
    """

    def matmul_backward(
        self, delta: np.ndarray, a: np.ndarray, b: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if a.ndim == 2 and b.ndim == 1:
            n, m = a.shape
            return np.outer(delta, b), a.reshape(m, n) @ delta
        return super().matmul_backward(delta, a, b)


class OuterReversed(Rules):
    """``z = W x``: dJ/dW = (x delta^T).reshape(W.shape): the outer product reversed."""

    def matmul_backward(
        self, delta: np.ndarray, a: np.ndarray, b: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if a.ndim == 2 and b.ndim == 1:
            return np.outer(b, delta).reshape(a.shape), a.T @ delta
        return super().matmul_backward(delta, a, b)


class VecmatWNotTransposed(Rules):
    """``z = x W``: dJ/dx = delta W' with W' = W.reshape(m, n) instead of W^T."""

    def matmul_backward(
        self, delta: np.ndarray, a: np.ndarray, b: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if a.ndim == 1 and b.ndim == 2:
            n, m = b.shape
            return delta @ b.reshape(m, n), np.outer(a, delta)
        return super().matmul_backward(delta, a, b)


class VecmatOuterReversed(Rules):
    """``z = x W``: dJ/dW = (delta^T x).reshape(W.shape) instead of x^T delta."""

    def matmul_backward(
        self, delta: np.ndarray, a: np.ndarray, b: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if a.ndim == 1 and b.ndim == 2:
            return b @ delta, np.outer(delta, a).reshape(b.shape)
        return super().matmul_backward(delta, a, b)


class MatmulScaledPermille(Rules):
    """Every matmul gradient multiplied by 1 + 1e-3 (a detection-threshold case)."""

    def matmul_backward(
        self, delta: np.ndarray, a: np.ndarray, b: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        da, db = super().matmul_backward(delta, a, b)
        return da * (1.0 + 1e-3), db * (1.0 + 1e-3)


class MatmulOverwritesInput(Rules):
    """``z = W x``: W^T delta is written into the saved x buffer, then dJ/dW = delta x^T reads it.

    A memory-saving backward that reuses its input's storage: dJ/dx is right, dJ/dW
    becomes delta (W^T delta)^T.
    """

    def matmul_backward(
        self, delta: np.ndarray, a: np.ndarray, b: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if a.ndim == 2 and b.ndim == 1:
            b[...] = a.T @ delta  # in place: the saved input is gone
            return np.outer(delta, b), b.copy()
        return super().matmul_backward(delta, a, b)


# ---- identity 3: z = x -----------------------------------------------------------------


class PassThroughDroppedAdapter(NumpyEngineAdapter):
    """An output that *is* an input (``z = x``) gets a zero gradient instead of ``u``.

    The engine seeds the cotangent on recorded op outputs only, so a forward that
    returns an input unchanged is treated as "does not depend on it".
    """

    def vjp(
        self,
        fn: Any,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangent: np.ndarray,
        dtype: str,
    ) -> VJPResult:
        result = super().vjp(fn, inputs, wrt, cotangent, dtype)
        leaves = {n: Tensor(np.array(v, dtype=dtype), op=f"input:{n}") for n, v in inputs.items()}
        probe = fn(self.ops, leaves)
        if isinstance(probe, Tensor) and probe.op.startswith("input:"):
            return VJPResult(result.output, {n: np.zeros_like(g) for n, g in result.grads.items()})
        return result


def _pass_through_dropped(name: str) -> Any:
    return PassThroughDroppedAdapter(name=name)


# ---- identity 4: elementwise -----------------------------------------------------------


class ReluMaskMissing(Rules):
    """ReLU backward passes delta everywhere: the mask 1(x > 0) forgotten."""

    def relu_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return delta.copy()


class ReluMaskInverted(Rules):
    """ReLU backward with the mask inverted: delta * 1(x <= 0)."""

    def relu_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return delta * (x <= 0).astype(x.dtype)


class LeakyReluSlopeDropped(Rules):
    """leaky_relu' = 0 for x < 0 (the 0.01 slope dropped, as if it were ReLU)."""

    def leaky_relu_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return delta * (x > 0).astype(x.dtype)


class SigmoidMissingOneMinus(Rules):
    """sigmoid' = s instead of s (1 - s)."""

    def sigmoid_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return delta * z


class TanhNotSquared(Rules):
    """tanh' = 1 - tanh instead of 1 - tanh^2."""

    def tanh_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return delta * (1.0 - z)


class ExpDerivativeFromInput(Rules):
    """exp' computed from the cached input instead of the output: delta * x."""

    def exp_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return delta * x


class LogReciprocalForgotten(Rules):
    """log' = x instead of 1 / x."""

    def log_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return delta * x


class SoftplusSigmoidSign(Rules):
    """softplus' = sigmoid(-x) instead of sigmoid(x) (a sign slip inside the sigmoid)."""

    def softplus_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return delta * _stable_sigmoid(-x)


class SinDerivativeSign(Rules):
    """sin' = -cos instead of cos."""

    def sin_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return delta * -np.cos(x)


class SquareFactorTwoMissing(Rules):
    """(x^2)' = x instead of 2x."""

    def square_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return delta * x


class AbsSignLost(Rules):
    """|x|' = 1 instead of sign(x)."""

    def abs_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return delta.copy()


class EluUsesOutput(Rules):
    """elu' for x < 0 taken as the output exp(x) - 1 instead of exp(x) (= output + 1)."""

    def elu_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return delta * np.where(x > 0, 1.0, z).astype(x.dtype)


class SiluProductRuleDropped(Rules):
    """silu' = sigmoid(x): the x s (1 - s) term of the product rule dropped."""

    def silu_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return delta * _stable_sigmoid(x)


_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


class GeluTanhApproximation(Rules):
    """GELU backward is the derivative of the tanh approximation, the forward is exact (erf).

    d/dx [x/2 (1 + tanh(c (x + a x^3)))] = (1 + t)/2 + x/2 (1 - t^2) c (1 + 3 a x^2).
    """

    def gelu_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        t = np.tanh(_GELU_C * (x + _GELU_A * x**3))
        d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _GELU_C * (1.0 + 3.0 * _GELU_A * x * x)
        return delta * d.astype(x.dtype)


# ---- MLP: softmax cross-entropy and the bias -------------------------------------------


class SoftmaxCEForgotY(Rules):
    """delta2 = yhat: the "- y" of yhat - y forgotten."""

    def softmax_cross_entropy_backward(
        self, delta: np.ndarray, z: np.ndarray, y: np.ndarray, cache: tuple[np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        yhat, log_yhat = cache
        return yhat * delta, -log_yhat * delta


class SoftmaxCESignFlipped(Rules):
    """delta2 = y - yhat: the sign of the softmax/cross-entropy gradient flipped."""

    def softmax_cross_entropy_backward(
        self, delta: np.ndarray, z: np.ndarray, y: np.ndarray, cache: tuple[np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        yhat, log_yhat = cache
        return (y - yhat) * delta, -log_yhat * delta


class CrossEntropyMeanOverClasses(Rules):
    """FORWARD bug: J = -mean_k y_k log yhat_k (mean over classes, not the sum).

    The backward is consistent with it ((yhat - y) / m), so only the forward is wrong.
    """

    def softmax_cross_entropy_forward(
        self, z: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        loss, cache = super().softmax_cross_entropy_forward(z, y)
        return np.asarray(loss / z.shape[0]), cache

    def softmax_cross_entropy_backward(
        self, delta: np.ndarray, z: np.ndarray, y: np.ndarray, cache: tuple[np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        dz, dy = super().softmax_cross_entropy_backward(delta, z, y, cache)
        m = z.shape[0]
        return dz / m, dy / m


class BiasGradSummed(Rules):
    """Bias gradient reduced over the wrong axis: dJ/db = sum(delta) in every entry."""

    def add_backward(self, delta: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        da, db = super().add_backward(delta, a, b)
        return da, np.full_like(db, np.sum(db))


# ---- conv --------------------------------------------------------------------------------


class ConvFilterDeltaFlipped(Rules):
    """dJ/dK = X * rot180(delta) instead of X * delta."""

    def conv2d_filter_grad(self, delta: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        return _correlate_valid(x, delta[::-1, ::-1])


class ConvInputNoRot180(Rules):
    """dJ/dX = pad(delta, k-1) * K: the rot180 of the kernel forgotten."""

    def conv2d_input_grad(self, delta: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        kh, kw = k.shape
        padded = np.pad(delta, ((kh - 1, kh - 1), (kw - 1, kw - 1)))
        return _correlate_valid(padded, k)


class ConvInputPadShifted(Rules):
    """delta padded by k-2 before and k after (not k-1 on both sides): dJ/dX shifted one pixel."""

    def conv2d_input_grad(self, delta: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        kh, kw = k.shape
        if kh < 2 or kw < 2:
            return super().conv2d_input_grad(delta, x, k)
        padded = np.pad(delta, ((kh - 2, kh), (kw - 2, kw)))
        return _correlate_valid(padded, k[::-1, ::-1])


class ConvInputPadKMinus2(Rules):
    """delta padded by k-2 on both sides: dJ/dX comes out two pixels short (wrong shape)."""

    def conv2d_input_grad(self, delta: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        kh, kw = k.shape
        padded = np.pad(delta, ((kh - 2, kh - 2), (kw - 2, kw - 2)))
        return _correlate_valid(padded, k[::-1, ::-1])


class ConvFilterFloat16Accumulation(Rules):
    """float32 filter gradient computed and accumulated in float16 (float64 untouched)."""

    def conv2d_filter_grad(self, delta: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        if x.dtype != np.float32:
            return super().conv2d_filter_grad(delta, x, k)
        half = _correlate_valid(x.astype(np.float16), delta.astype(np.float16))
        return np.asarray(half, dtype=np.float32)


class TrueConvolution(Rules):
    """FORWARD bug: a true convolution (kernel flipped) instead of a cross-correlation.

    Backward consistent with it: dJ/dK = rot180(X * delta), dJ/dX = pad(delta) * K.
    """

    def conv2d_forward(self, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        return super().conv2d_forward(x, k[::-1, ::-1])

    def conv2d_filter_grad(self, delta: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        return _correlate_valid(x, delta)[::-1, ::-1].copy()

    def conv2d_input_grad(self, delta: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        kh, kw = k.shape
        padded = np.pad(delta, ((kh - 1, kh - 1), (kw - 1, kw - 1)))
        return _correlate_valid(padded, k)


# ---- pooling -------------------------------------------------------------------------------


def _route_to_offset(delta: np.ndarray, x: np.ndarray, k: int, stride: int, a: int, b: int) -> np.ndarray:
    """delta_uv sent to pixel (u s + a, v s + b) of every window."""
    ho, wo = delta.shape
    grad = np.zeros_like(x)
    rows = np.arange(ho)[:, None] * stride + a
    cols = np.arange(wo)[None, :] * stride + b
    np.add.at(grad, (np.broadcast_to(rows, (ho, wo)), np.broadcast_to(cols, (ho, wo))), delta)
    return grad


class MaxPoolRouteLast(Rules):
    """Max-pool router sends delta to the last (bottom-right) pixel of each window."""

    def max_pool2d_backward(
        self, delta: np.ndarray, x: np.ndarray, k: int, stride: int, argmax: tuple[np.ndarray, np.ndarray]
    ) -> np.ndarray:
        return _route_to_offset(delta, x, k, stride, k - 1, k - 1)


class MaxPoolRouteCorner(Rules):
    """Max-pool router sends delta to a fixed corner (top-left) of each window."""

    def max_pool2d_backward(
        self, delta: np.ndarray, x: np.ndarray, k: int, stride: int, argmax: tuple[np.ndarray, np.ndarray]
    ) -> np.ndarray:
        return _route_to_offset(delta, x, k, stride, 0, 0)


class MaxPoolRouteAll(Rules):
    """Max-pool router sends delta to every pixel of the window (an average-pool spread without 1/k^2)."""

    def max_pool2d_backward(
        self, delta: np.ndarray, x: np.ndarray, k: int, stride: int, argmax: tuple[np.ndarray, np.ndarray]
    ) -> np.ndarray:
        grad = np.zeros_like(x)
        for a in range(k):
            for b in range(k):
                grad += _route_to_offset(delta, x, k, stride, a, b)
        return grad


class AvgPoolDividedByK(Rules):
    """Average-pool spread delta / k instead of delta / k^2."""

    def avg_pool2d_backward(self, delta: np.ndarray, x: np.ndarray, k: int, stride: int) -> np.ndarray:
        return super().avg_pool2d_backward(delta, x, k, stride) * float(k)


class AvgPoolNotDivided(Rules):
    """Average-pool spread delta undivided (the 1/k^2 forgotten)."""

    def avg_pool2d_backward(self, delta: np.ndarray, x: np.ndarray, k: int, stride: int) -> np.ndarray:
        return super().avg_pool2d_backward(delta, x, k, stride) * float(k * k)


class SumPoolForward(Rules):
    """FORWARD bug: the average pool computes the window *sum*; its backward spreads delta undivided."""

    def avg_pool2d_forward(self, x: np.ndarray, k: int, stride: int) -> np.ndarray:
        return np.asarray(_pool_windows(x, k, stride).sum(axis=(2, 3)))

    def avg_pool2d_backward(self, delta: np.ndarray, x: np.ndarray, k: int, stride: int) -> np.ndarray:
        return super().avg_pool2d_backward(delta, x, k, stride) * float(k * k)


# ---- kinks (#13): values outside the generalised gradient, rules off near a kink -------


class ReluDerivativeTwoAtZero(Rules):
    """relu'(0) = 2: outside the generalised gradient [0, 1] at the kink (right elsewhere)."""

    def relu_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return delta * np.where(x > 0, 1.0, np.where(x == 0, 2.0, 0.0)).astype(x.dtype)


class LeakyReluZeroAtZero(Rules):
    """leaky_relu'(0) = 0 (MyGrad's): outside [0.01, 1]; right away from 0."""

    def leaky_relu_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        slope = np.where(x > 0, 1.0, np.where(x == 0, 0.0, 0.01))
        return delta * slope.astype(x.dtype)


class MaximumTieGivesZero(Rules):
    """maximum(a, b) at a = b gives 0 to both arguments (MyGrad's): d/dx max(x, x) = 0."""

    def maximum_backward(
        self, delta: np.ndarray, a: np.ndarray, b: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        return delta * (a > b).astype(delta.dtype), delta * (b > a).astype(delta.dtype)


class ReluThresholdMilli(Rules):
    """ReLU's rule written ``x > 1e-3`` instead of ``x > 0``: relu' = 0 on (0, 1e-3]."""

    def relu_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return delta * (x > 1e-3).astype(x.dtype)


class EluVanishesNearZero(Rules):
    """elu' = 0 on (-1e-3, 1e-3) (tinygrad's ELU near 0), where ELU is smooth with elu' ~ 1."""

    def elu_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        g = super().elu_backward(delta, x, z)
        return np.where(np.abs(x) < 1e-3, np.zeros((), dtype=g.dtype), g)


class CorrectRules(Rules):
    """Negative control: the engine's own rules, unchanged."""


# ======================================================================================
# Layers as frameworks ship them: bugs that show under one hyper-parameter only
# ======================================================================================


class LinearBiasGradFirstRow(Rules):
    """N > 1: Z = X W^T + b with dJ/db = delta of the first batch row (not summed over the batch)."""

    def linear_backward(
        self, delta: np.ndarray, x: np.ndarray, w: np.ndarray, b: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dx, dw, _ = super().linear_backward(delta, x, w, b)
        return dx, dw, delta.reshape(-1, w.shape[0])[0].copy()


class DenseWeightGradFirstRow(Rules):
    """N > 1: Z = X W + b with dJ/dW = x_1^T delta_1 (the first row only, not X^T delta)."""

    def dense_backward(
        self, delta: np.ndarray, x: np.ndarray, w: np.ndarray, b: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dx, _, db = super().dense_backward(delta, x, w, b)
        d2, x2 = delta.reshape(-1, w.shape[1]), x.reshape(-1, w.shape[0])
        return dx, np.outer(x2[0], d2[0]), db


class CrossEntropyMeanMissingOneOverN(Rules):
    """reduction='mean', N > 1: dJ/dz = yhat - t~ per row, the 1/N of the mean forgotten."""

    def cross_entropy_backward(
        self,
        delta: np.ndarray,
        z: np.ndarray,
        target: np.ndarray,
        label_smoothing: float,
        cache: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray | None]:
        log_yhat, smooth, r = cache
        return super().cross_entropy_backward(
            delta, z, target, label_smoothing, (log_yhat, smooth, np.ones_like(r))
        )


class CrossEntropySmoothingIgnored(Rules):
    """label_smoothing > 0: the backward uses the unsmoothed target (yhat - t, not yhat - t~)."""

    def cross_entropy_backward(
        self,
        delta: np.ndarray,
        z: np.ndarray,
        target: np.ndarray,
        label_smoothing: float,
        cache: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray | None]:
        log_yhat, smooth, r = cache
        if label_smoothing:
            raw = (smooth - label_smoothing / z.shape[1]) / (1 - label_smoothing)
            smooth = raw.astype(z.dtype)
        return super().cross_entropy_backward(delta, z, target, label_smoothing, (log_yhat, smooth, r))


class ConvInputStrideNotDilated(Rules):
    """stride > 1: the transposed convolution for dJ/dX skips dilating delta by the stride."""

    def conv_nd_input_grad(
        self,
        delta: np.ndarray,
        x: np.ndarray,
        k: np.ndarray,
        stride: tuple[int, ...],
        pads: tuple[tuple[int, int], ...],
        dilation: tuple[int, ...],
        groups: int,
    ) -> np.ndarray:
        grad = super().conv_nd_input_grad(delta, x, k, (1,) * len(stride), pads, dilation, groups)
        return grad


class ConvFilterStrideNotDilated(Rules):
    """stride > 1: dJ/dK correlates the padded input with delta *not* dilated by the stride."""

    def conv_nd_filter_grad(
        self,
        delta: np.ndarray,
        x: np.ndarray,
        k: np.ndarray,
        stride: tuple[int, ...],
        pads: tuple[tuple[int, int], ...],
        dilation: tuple[int, ...],
        groups: int,
    ) -> np.ndarray:
        return super().conv_nd_filter_grad(delta, x, k, (1,) * len(stride), pads, dilation, groups)


class ConvFilterDilationIgnored(Rules):
    """dilation > 1: dJ/dK samples the correlation at every offset a instead of a d."""

    def conv_nd_filter_grad(
        self,
        delta: np.ndarray,
        x: np.ndarray,
        k: np.ndarray,
        stride: tuple[int, ...],
        pads: tuple[tuple[int, int], ...],
        dilation: tuple[int, ...],
        groups: int,
    ) -> np.ndarray:
        return super().conv_nd_filter_grad(delta, x, k, stride, pads, (1,) * len(dilation), groups)


class ConvInputCroppedAtWrongBorder(Rules):
    """padding > 0: the transposed convolution is cropped at the far border (the padding's
    rows/columns taken from the start instead of split between both borders)."""

    def conv_nd_input_grad(
        self,
        delta: np.ndarray,
        x: np.ndarray,
        k: np.ndarray,
        stride: tuple[int, ...],
        pads: tuple[tuple[int, int], ...],
        dilation: tuple[int, ...],
        groups: int,
    ) -> np.ndarray:
        padded = np.pad(x, ((0, 0), (0, 0), *pads))
        grad = super().conv_nd_input_grad(
            delta, padded, k, stride, tuple((0, 0) for _ in pads), dilation, groups
        )
        # rows [0, S) of the padded gradient instead of [lo, lo + S): shifted by the leading padding
        index = tuple(slice(0, n) for n in x.shape[2:])
        return np.ascontiguousarray(grad[(slice(None), slice(None), *index)])


class ConvFilterGroupsCrossed(Rules):
    """groups > 1: dJ/dK pairs each group's delta with the input channels of the mirrored group."""

    def conv_nd_filter_grad(
        self,
        delta: np.ndarray,
        x: np.ndarray,
        k: np.ndarray,
        stride: tuple[int, ...],
        pads: tuple[tuple[int, int], ...],
        dilation: tuple[int, ...],
        groups: int,
    ) -> np.ndarray:
        n, c_in = x.shape[:2]
        cg = c_in // groups
        mirrored = x.reshape(n, groups, cg, *x.shape[2:])[:, ::-1].reshape(x.shape)
        return super().conv_nd_filter_grad(delta, mirrored, k, stride, pads, dilation, groups)


class ConvBiasGradFirstSample(Rules):
    """N > 1: dJ/db = delta of the first sample summed over space (not over the batch too)."""

    def conv_nd_bias_grad(self, delta: np.ndarray) -> np.ndarray:
        return delta[0].sum(axis=tuple(range(1, delta.ndim - 1)))


class MaxPoolOverlapOverwrites(Rules):
    """stride < window: overlapping windows sharing a maximum overwrite each other's delta
    (``grad[argmax] = delta``) instead of accumulating."""

    def max_pool_nd_backward(
        self,
        delta: np.ndarray,
        x: np.ndarray,
        padding: tuple[int, ...],
        cache: tuple[np.ndarray, tuple[int, ...]],
    ) -> np.ndarray:
        where, padded_shape = cache
        grad = np.zeros(int(np.prod(padded_shape)), dtype=delta.dtype)
        grad[where.reshape(-1)] = delta.reshape(-1)
        grad = grad.reshape(padded_shape)
        inner = tuple(slice(p, p + n) for p, n in zip(padding, x.shape[2:], strict=True))
        return np.ascontiguousarray(grad[(slice(None), slice(None), *inner)])


class MaxPoolPaddingNotCropped(Rules):
    """padding > 0: the routed gradient is cropped from the padded map's origin (shifted by the padding)."""

    def max_pool_nd_backward(
        self,
        delta: np.ndarray,
        x: np.ndarray,
        padding: tuple[int, ...],
        cache: tuple[np.ndarray, tuple[int, ...]],
    ) -> np.ndarray:
        grad = super().max_pool_nd_backward(delta, x, (0,) * len(padding), cache)
        return grad


def _full_window_count(count: np.ndarray, window: tuple[int, ...]) -> np.ndarray:
    return np.full_like(count, float(np.prod(window)))


class AvgPoolCeilDivisorFullWindow(Rules):
    """ceil_mode: the backward divides a partial (overhanging) window by the full window size;
    the forward keeps PyTorch's clipped divisor."""

    def avg_pool_nd_forward(
        self,
        x: np.ndarray,
        window: tuple[int, ...],
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> tuple[np.ndarray, tuple[list[np.ndarray], np.ndarray, tuple[int, ...]]]:
        z, (positions, count, shape) = super().avg_pool_nd_forward(
            x, window, stride, padding, ceil_mode, count_include_pad
        )
        if ceil_mode and count_include_pad:
            count = _full_window_count(count, window)
        return z, (positions, count, shape)


class AvgPoolPadCountedWhenExcluded(Rules):
    """padding > 0, count_include_pad=False: the backward still divides by the padded window."""

    def avg_pool_nd_forward(
        self,
        x: np.ndarray,
        window: tuple[int, ...],
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> tuple[np.ndarray, tuple[list[np.ndarray], np.ndarray, tuple[int, ...]]]:
        z, _ = super().avg_pool_nd_forward(x, window, stride, padding, ceil_mode, count_include_pad)
        _, cache = super().avg_pool_nd_forward(x, window, stride, padding, ceil_mode, True)
        return z, cache


class AvgPoolFlaxCeilDivisor(Rules):
    """FORWARD (a convention, as Flax's avg_pool): in ceil mode every window, partial or not,
    is divided by the full window size, forward and backward alike."""

    def avg_pool_nd_forward(
        self,
        x: np.ndarray,
        window: tuple[int, ...],
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> tuple[np.ndarray, tuple[list[np.ndarray], np.ndarray, tuple[int, ...]]]:
        z, (positions, count, shape) = super().avg_pool_nd_forward(
            x, window, stride, padding, ceil_mode, count_include_pad
        )
        if ceil_mode and count_include_pad:
            full = _full_window_count(count, window)
            z = z * (count / full).astype(z.dtype)
            count = full
        return z, (positions, count, shape)


class GlobalAvgPoolLastAxisOnly(Rules):
    """2-D/3-D maps: global average pooling's backward divides by the last axis' size, not prod(S)."""

    def global_avg_pool_backward(self, delta: np.ndarray, x: np.ndarray) -> np.ndarray:
        return super().global_avg_pool_backward(delta, x) * float(np.prod(x.shape[2:-1]))


# ---- the tails of the smooth elementwise functions (second audit) ------------------------


class SoftplusLinearAboveFive(Rules):
    """softplus' = 1 for x > 5 (a linear-tail threshold of 5 in the backward; the forward exact):
    off by 1 - sigma(x), up to 6.7e-3, only in the tail past the bulk of the draws."""

    def softplus_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return delta * np.where(x > 5, 1.0, _stable_sigmoid(x)).astype(x.dtype)


class TanhDerivativeZeroBeyondThree(Rules):
    """tanh' = 0 for |x| > 3 (a saturated branch cut too early; tanh'(3) = 9.9e-3)."""

    def tanh_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return np.where(np.abs(x) > 3, 0.0, delta * (1.0 - z * z)).astype(delta.dtype)


class GeluZeroBelowMinusThree(Rules):
    """gelu' = 0 for x < -3 (an approximation's clamp; gelu'(-3) = -1.2e-2)."""

    def gelu_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        g = super().gelu_backward(delta, x, z)
        return np.where(x < -3, 0.0, g).astype(g.dtype)


# ---- unstable backward passes at the tails (overflow / underflow of the textbook forms) -----
#
# Right in the bulk, wrong where an intermediate leaves the dtype's range: float32's exp
# overflows past 88.7 (e^2x past 44.4), float64's past 709.8, so these break in float32 only
# within the draws (|x| <= 100).  Each computes in the input's dtype, as a framework kernel would.


def _quiet(fn: Callable[[], np.ndarray]) -> np.ndarray:
    """``fn()`` with NumPy's overflow/invalid warnings silenced (the bug is the inf/NaN itself)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        return fn()


class SigmoidUnstableOverflow(Rules):
    """sigmoid'(x) = e^-x / (1 + e^-x)^2: inf / inf = NaN once e^-x overflows (x < -88.7 in
    float32), 0 instead of e^x past x < -44.4 (the square overflows; invisible at that size)."""

    def sigmoid_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        def grad() -> np.ndarray:
            e = np.exp(-x)
            return np.asarray(delta * (e / ((1 + e) * (1 + e))), dtype=x.dtype)

        return _quiet(grad)


class SoftplusUnstableOverflow(Rules):
    """softplus'(x) = e^x / (1 + e^x): inf / inf = NaN once e^x overflows (x > 88.7 in float32)."""

    def softplus_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        def grad() -> np.ndarray:
            e = np.exp(x)
            return np.asarray(delta * (e / (1 + e)), dtype=x.dtype)

        return _quiet(grad)


class TanhUnstableOverflow(Rules):
    """tanh'(x) = 4 e^2x / (1 + e^2x)^2: inf / inf = NaN once e^2x overflows (x > 44.4 in float32).

    (The form ``4 / (e^x + e^-x)^2`` only rounds to 0 where tanh' < 1.2e-38 in float32: not a
    wrong gradient at any tolerance, so not a mutant.)"""

    def tanh_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        def grad() -> np.ndarray:
            e = np.exp(2 * x)
            return np.asarray(delta * (4 * e / ((1 + e) * (1 + e))), dtype=x.dtype)

        return _quiet(grad)


class SiluUnstableSigmoid(Rules):
    """silu'(x) = s (1 + x (1 - s)) with s = e^x / (1 + e^x): NaN once e^x overflows (x > 88.7 in
    float32)."""

    def silu_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        def grad() -> np.ndarray:
            e = np.exp(x)
            s = e / (1 + e)
            return np.asarray(delta * (s * (1 + x * (1 - s))), dtype=x.dtype)

        return _quiet(grad)


class GeluCachedPhiRatio(Rules):
    """gelu'(x) = Phi(x) (1 + x phi(x) / Phi(x)) (the forward's cached Phi reused): Phi = (1 +
    erf(x / sqrt 2)) / 2 underflows to 0 for x < -5.4 in float32 (-8.3 in float64), where
    x phi(x) / 0 = -inf and 0 * -inf = NaN; right wherever Phi(x) > 0."""

    def gelu_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        def grad() -> np.ndarray:
            cdf = _std_normal_cdf(x)
            return np.asarray(delta * (cdf * (1 + x * _std_normal_pdf(x) / cdf)), dtype=x.dtype)

        return _quiet(grad)


def _softmax_without_max(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """``exp(z) / sum exp(z)`` in the dtype of ``z``, no max subtracted: inf / inf = NaN once a
    logit passes 88.7 in float32, 0 / 0 once every logit of a row is below -103.9."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        e = np.exp(z)
        return np.asarray(e / e.sum(axis=axis, keepdims=True), dtype=z.dtype)


class SoftmaxCEWithoutMaxSubtraction(Rules):
    """softmax cross-entropy: the forward stable (max-shifted), the backward recomputes
    yhat = exp(z) / sum exp(z) without the max: NaN for logits past 88.7 in float32."""

    def softmax_cross_entropy_backward(
        self, delta: np.ndarray, z: np.ndarray, y: np.ndarray, cache: tuple[np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        _, log_yhat = cache
        return (_softmax_without_max(z) - y) * delta, -log_yhat * delta


class CrossEntropyWithoutMaxSubtraction(Rules):
    """batched cross-entropy: the backward's softmax per row without the max (forward stable):
    NaN for logits past 88.7 in float32."""

    def cross_entropy_backward(
        self,
        delta: np.ndarray,
        z: np.ndarray,
        target: np.ndarray,
        label_smoothing: float,
        cache: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray | None]:
        _, smooth, r = cache
        with np.errstate(divide="ignore", invalid="ignore"):
            unstable_log = np.log(_softmax_without_max(z, axis=1)).astype(z.dtype)
        return super().cross_entropy_backward(delta, z, target, label_smoothing, (unstable_log, smooth, r))
