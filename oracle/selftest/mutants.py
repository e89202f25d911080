"""The mutant catalogue: deliberately wrong adapters that ``gradoracle selftest`` must kill.

A test oracle is worth what it catches.  Each :class:`Mutant` is one realistic gradient
bug: a named, documented variant of an adapter whose backward (or, for a few, forward)
breaks one rule of ``notes/gradient-notes.md``.  It carries

- ``targets``: the identities it must be caught on (where the broken rule is exercised);
- ``expected_fault``: the localisation the runner must report (:class:`gradoracle.results.Fault`):
  ``BACKWARD`` for a wrong backward rule, ``FORWARD`` for a forward that computes another
  function (its backward consistent with it), ``ADAPTER`` for a rule whose gradient has
  the wrong shape (the engine refuses it);
- ``dtypes``: where the bug exists (the float16-accumulation bug is float32-only);
- a factory building the adapter.

Most mutants are :class:`gradoracle.adapters.numpy_engine.Rules` subclasses run by the in-house
engine; some wrap one op of the PyTorch adapter in a ``torch.autograd.Function`` with a
wrong backward, or one op of the JAX adapter in a ``jax.custom_vjp``.  torch and jax are
imported only inside the factories, so importing this module stays light.

Loading by spec string (for repro snippets, ``--jobs`` workers and ``gradoracle check``)::

    load_adapter("gradoracle.selftest.mutants:MutantAdapter?name=relu-mask-missing")

:data:`CONTROLS` holds negative controls that are *not* bugs (a correct engine under a
mutant's name); they are left out of the default catalogue and must *survive*.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
)
from gradoracle.results import Fault

__all__ = [
    "CATALOGUE",
    "CONTROLS",
    "Mutant",
    "MutantAdapter",
    "UnknownMutantError",
    "all_mutants",
    "get_mutant",
    "mutant_spec",
]

BOTH: tuple[str, ...] = ("float64", "float32")
SPEC_PREFIX = "gradoracle.selftest.mutants:MutantAdapter?name="


class UnknownMutantError(KeyError):
    """A mutant name that is not in the catalogue; the message suggests close names."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Mutant:
    """One deliberately wrong adapter and what the oracle must say about it."""

    name: str
    description: str
    rule: str  # the notes' rule it breaks (a ``notes:`` source label)
    targets: tuple[str, ...]
    expected_fault: Fault
    framework: str  # "numpy", "torch" or "jax"
    factory: Callable[[str], Any]
    dtypes: tuple[str, ...] = BOTH
    control: bool = False  # a negative control: not a bug, must survive

    @property
    def adapter_name(self) -> str:
        """The adapter name the mutant reports (``mutant:<name>``)."""
        return f"mutant:{self.name}"

    @property
    def spec(self) -> str:
        """The ``load_adapter`` spec string of this mutant."""
        return mutant_spec(self.name)

    def build(self) -> Any:
        """A fresh adapter instance (imports torch/jax for those mutants)."""
        return self.factory(self.adapter_name)

    def available(self) -> tuple[bool, str]:
        """Whether the mutant's framework is installed (numpy mutants always are)."""
        if self.framework == "numpy":
            return True, ""
        import importlib.util

        if importlib.util.find_spec(self.framework) is None:
            return False, f"{self.framework} is not installed"
        return True, ""


def mutant_spec(name: str) -> str:
    """``gradoracle.selftest.mutants:MutantAdapter?name=<name>``: the spec ``load_adapter`` understands."""
    return SPEC_PREFIX + name


# ======================================================================================
# NumPy-engine mutants: one Rules subclass per bug
# ======================================================================================


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


class CorrectRules(Rules):
    """Negative control: the engine's own rules, unchanged."""


# ======================================================================================
# PyTorch mutants: one op swapped for a torch.autograd.Function with a wrong backward
# ======================================================================================


def _torch_adapter(name: str, ops_factory: Callable[[], Any]) -> Any:
    """A :class:`TorchAdapter` whose ops namespace is ``ops_factory()``."""
    from functools import cached_property

    from gradoracle.adapters.torch_adapter import TorchAdapter

    class MutantTorchAdapter(TorchAdapter):
        @cached_property
        def ops(self) -> Any:
            return ops_factory()

    adapter = MutantTorchAdapter()
    adapter.name = name
    return adapter


def _torch_relu_mask_inverted(name: str) -> Any:
    import torch
    from gradoracle.adapters.torch_adapter import TorchOps

    class ReluInverted(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any) -> Any:
            ctx.save_for_backward(x)
            return torch.relu(x)

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            (x,) = ctx.saved_tensors
            return g * (x <= 0).to(g.dtype)

    class Ops(TorchOps):
        def relu(self, x: Any) -> Any:
            return ReluInverted.apply(x)

    return _torch_adapter(name, Ops)


def _torch_conv_input_no_rot180(name: str) -> Any:
    import torch
    import torch.nn.functional as F
    from gradoracle.adapters.torch_adapter import TorchOps
    from torch.nn import grad as nn_grad

    class ConvNoRot(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any, k: Any) -> Any:
            ctx.save_for_backward(x, k)
            return F.conv2d(x[None, None], k[None, None])[0, 0]

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            x, k = ctx.saved_tensors
            g4 = g[None, None]
            # conv_transpose2d(g, K) is the full correlation with rot180(K); flipping K first
            # cancels the rotation: the bug.
            gx = F.conv_transpose2d(g4, k.flip(0, 1)[None, None])[0, 0]
            gk = nn_grad.conv2d_weight(x[None, None], (1, 1, *k.shape), g4)[0, 0]
            return gx, gk

    class Ops(TorchOps):
        def conv2d(self, x: Any, k: Any) -> Any:
            return ConvNoRot.apply(x, k)

    return _torch_adapter(name, Ops)


def _torch_softmax_ce_forgot_y(name: str) -> Any:
    import torch
    import torch.nn.functional as F
    from gradoracle.adapters.torch_adapter import TorchOps

    class CEForgotY(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, z: Any, y: Any) -> Any:
            logp = F.log_softmax(z, dim=0)
            ctx.save_for_backward(logp)
            return -(y * logp).sum()

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            (logp,) = ctx.saved_tensors
            return logp.exp() * g, -logp * g

    class Ops(TorchOps):
        def softmax_cross_entropy(self, logits: Any, target: Any) -> Any:
            return CEForgotY.apply(logits, target)

    return _torch_adapter(name, Ops)


# ======================================================================================
# JAX mutants: one op swapped for a jax.custom_vjp with a wrong backward
# ======================================================================================


def _jax_adapter(name: str, ops_factory: Callable[[], Any]) -> Any:
    """A :class:`JaxAdapter` (eager: ``jit="never"``) whose ops namespace is ``ops_factory()``.

    Eager, because the runner builds a fresh forward closure per example, so ``jit="auto"``
    would compile once per example; the mutant's arithmetic is the same either way.
    """
    from functools import cached_property

    from gradoracle.adapters.jax_adapter import JaxAdapter

    class MutantJaxAdapter(JaxAdapter):
        @cached_property
        def ops(self) -> Any:
            return ops_factory()

    adapter = MutantJaxAdapter(jit="never")
    adapter.name = name
    return adapter


def _jax_sigmoid_missing_one_minus(name: str) -> Any:
    import jax
    from gradoracle.adapters.jax_adapter import JaxOps

    @jax.custom_vjp
    def sigmoid(x: Any) -> Any:
        return jax.nn.sigmoid(x)

    def fwd(x: Any) -> tuple[Any, Any]:
        s = jax.nn.sigmoid(x)
        return s, s

    def bwd(s: Any, g: Any) -> tuple[Any]:
        return (g * s,)

    sigmoid.defvjp(fwd, bwd)

    class Ops(JaxOps):
        def sigmoid(self, x: Any) -> Any:
            return sigmoid(x)

    return _jax_adapter(name, Ops)


def _jax_avg_pool_divided_by_k(name: str) -> Any:
    from functools import partial

    import jax
    import jax.numpy as jnp
    from gradoracle.adapters.jax_adapter import JaxOps
    from jax import lax

    @partial(jax.custom_vjp, nondiff_argnums=(1, 2))
    def avg_pool(x: Any, k: int, s: int) -> Any:
        return lax.reduce_window(x, 0.0, lax.add, (k, k), (s, s), "VALID") / (k * k)

    def fwd(x: Any, k: int, s: int) -> tuple[Any, Any]:
        return avg_pool(x, k, s), x

    def bwd(k: int, s: int, x: Any, g: Any) -> tuple[Any]:
        ho, wo = g.shape
        share = g / k  # the bug: k, not k^2
        grad = jnp.zeros_like(x)
        for a in range(k):
            for b in range(k):
                grad = grad.at[a : a + s * (ho - 1) + 1 : s, b : b + s * (wo - 1) + 1 : s].add(share)
        return (grad,)

    avg_pool.defvjp(fwd, bwd)

    class Ops(JaxOps):
        def avg_pool2d(self, x: Any, k: int, stride: int | None = None) -> Any:
            return avg_pool(x, int(k), int(k if stride is None else stride))

    return _jax_adapter(name, Ops)


def _jax_matmul_outer_reversed(name: str) -> Any:
    import jax
    import jax.numpy as jnp
    from gradoracle.adapters.jax_adapter import JaxOps

    @jax.custom_vjp
    def matmul(a: Any, b: Any) -> Any:
        return jnp.matmul(a, b)

    def fwd(a: Any, b: Any) -> tuple[Any, Any]:
        return jnp.matmul(a, b), (a, b)

    def bwd(res: Any, g: Any) -> tuple[Any, Any]:
        a, b = res
        if a.ndim == 2 and b.ndim == 1:
            return jnp.outer(b, g).reshape(a.shape), a.T @ g  # the bug: x delta^T
        if a.ndim == 1 and b.ndim == 2:
            return b @ g, jnp.outer(a, g)
        return g @ b.T, a.T @ g

    matmul.defvjp(fwd, bwd)

    class Ops(JaxOps):
        def matmul(self, a: Any, b: Any) -> Any:
            return matmul(a, b)

    return _jax_adapter(name, Ops)


# ======================================================================================
# The catalogue
# ======================================================================================

B, F_, A = Fault.BACKWARD, Fault.FORWARD, Fault.ADAPTER
MLP_CE = ("mlp-a-logits", "mlp-b-output-params", "mlp-c-hidden-activation", "mlp")

_ENTRIES: tuple[Mutant, ...] = (
    # identities 1, 2, 5, 6
    Mutant(
        "matvec-w-not-transposed",
        "z = W x: dJ/dx = W delta (W.reshape(m, n) for non-square W) instead of W^T delta",
        "notes:identity-1",
        ("matvec-jacobian", "matvec-weight-grad", "mlp-c-hidden-activation", "mlp"),
        B,
        "numpy",
        _numpy(WNotTransposed),
    ),
    Mutant(
        "vecmat-w-not-transposed",
        "z = x W: dJ/dx = delta W (reshaped) instead of delta W^T",
        "notes:identity-2",
        ("vecmat-jacobian", "vecmat-weight-grad"),
        B,
        "numpy",
        _numpy(VecmatWNotTransposed),
    ),
    Mutant(
        "identity-pass-through-dropped",
        "z = x: an output that is an input unchanged gets gradient 0 instead of u (J = 0, not I)",
        "notes:identity-3",
        ("identity-jacobian",),
        B,
        "numpy",
        _pass_through_dropped,
    ),
    Mutant(
        "matvec-outer-reversed",
        "z = W x: dJ/dW = (x delta^T) reshaped to W's shape instead of delta x^T",
        "notes:identity-5",
        ("matvec-weight-grad", "mlp-b-output-params", "mlp-e-hidden-params", "mlp"),
        B,
        "numpy",
        _numpy(OuterReversed),
    ),
    Mutant(
        "vecmat-outer-reversed",
        "z = x W: dJ/dW = (delta^T x) reshaped instead of x^T delta",
        "notes:identity-6",
        ("vecmat-weight-grad",),
        B,
        "numpy",
        _numpy(VecmatOuterReversed),
    ),
    Mutant(
        "matmul-scaled-1e-3",
        "every matmul gradient multiplied by 1 + 1e-3 (a detection-threshold case)",
        "notes:identity-5",
        ("matvec-jacobian", "vecmat-jacobian", "matvec-weight-grad", "vecmat-weight-grad", "mlp"),
        B,
        "numpy",
        _numpy(MatmulScaledPermille),
    ),
    Mutant(
        "matmul-backward-overwrites-input",
        "z = W x: the backward writes W^T delta into the saved x in place, then dJ/dW = delta x^T reads it",
        "notes:identity-5",
        ("matvec-weight-grad", "mlp-b-output-params", "mlp"),
        B,
        "numpy",
        _numpy(MatmulOverwritesInput),
    ),
    # identity 4
    Mutant(
        "relu-mask-missing",
        "ReLU backward passes delta unmasked (1(x > 0) forgotten)",
        "notes:identity-4",
        ("elementwise-relu", "mlp-d-relu-mask", "mlp"),
        B,
        "numpy",
        _numpy(ReluMaskMissing),
    ),
    Mutant(
        "relu-mask-inverted",
        "ReLU backward masks with 1(x <= 0) instead of 1(x > 0)",
        "notes:identity-4",
        ("elementwise-relu", "mlp-d-relu-mask", "mlp-e-hidden-params", "mlp"),
        B,
        "numpy",
        _numpy(ReluMaskInverted),
    ),
    Mutant(
        "leaky-relu-slope-dropped",
        "leaky_relu' = 0 for x < 0 (the 0.01 slope dropped)",
        "notes:identity-4",
        ("elementwise-leaky-relu",),
        B,
        "numpy",
        _numpy(LeakyReluSlopeDropped),
    ),
    Mutant(
        "sigmoid-missing-one-minus",
        "sigmoid' = s instead of s (1 - s)",
        "notes:identity-4",
        ("elementwise-sigmoid",),
        B,
        "numpy",
        _numpy(SigmoidMissingOneMinus),
    ),
    Mutant(
        "tanh-not-squared",
        "tanh' = 1 - tanh instead of 1 - tanh^2",
        "notes:identity-4",
        ("elementwise-tanh",),
        B,
        "numpy",
        _numpy(TanhNotSquared),
    ),
    Mutant(
        "exp-derivative-from-input",
        "exp' computed as x (the cached input) instead of exp(x) (the output)",
        "notes:identity-4",
        ("elementwise-exp",),
        B,
        "numpy",
        _numpy(ExpDerivativeFromInput),
    ),
    Mutant(
        "log-reciprocal-forgotten",
        "log' = x instead of 1 / x",
        "notes:identity-4",
        ("elementwise-log",),
        B,
        "numpy",
        _numpy(LogReciprocalForgotten),
    ),
    Mutant(
        "softplus-sigmoid-sign",
        "softplus' = sigmoid(-x) instead of sigmoid(x)",
        "notes:identity-4",
        ("elementwise-softplus",),
        B,
        "numpy",
        _numpy(SoftplusSigmoidSign),
    ),
    Mutant(
        "sin-derivative-sign",
        "sin' = -cos instead of cos",
        "notes:identity-4",
        ("elementwise-sin",),
        B,
        "numpy",
        _numpy(SinDerivativeSign),
    ),
    Mutant(
        "square-factor-two-missing",
        "(x^2)' = x instead of 2 x",
        "notes:identity-4",
        ("elementwise-square",),
        B,
        "numpy",
        _numpy(SquareFactorTwoMissing),
    ),
    Mutant(
        "abs-sign-lost",
        "|x|' = 1 instead of sign(x)",
        "notes:identity-4",
        ("elementwise-abs",),
        B,
        "numpy",
        _numpy(AbsSignLost),
    ),
    Mutant(
        "elu-uses-output",
        "elu' for x < 0 = exp(x) - 1 (the output) instead of exp(x)",
        "notes:identity-4",
        ("elementwise-elu",),
        B,
        "numpy",
        _numpy(EluUsesOutput),
    ),
    Mutant(
        "silu-product-rule-dropped",
        "silu' = sigmoid(x): the x s (1 - s) term of the product rule dropped",
        "notes:identity-4",
        ("elementwise-silu",),
        B,
        "numpy",
        _numpy(SiluProductRuleDropped),
    ),
    Mutant(
        "gelu-tanh-approximation",
        "GELU backward is the tanh approximation's derivative while the forward is the exact erf form",
        "notes:identity-4",
        ("elementwise-gelu",),
        B,
        "numpy",
        _numpy(GeluTanhApproximation),
    ),
    # MLP
    Mutant(
        "softmax-ce-forgot-y",
        "delta2 = yhat (the - y of yhat - y forgotten)",
        "notes:mlp",
        MLP_CE,
        B,
        "numpy",
        _numpy(SoftmaxCEForgotY),
    ),
    Mutant(
        "softmax-ce-sign-flipped",
        "delta2 = y - yhat (sign flipped)",
        "notes:mlp",
        MLP_CE,
        B,
        "numpy",
        _numpy(SoftmaxCESignFlipped),
    ),
    Mutant(
        "bias-grad-summed",
        "dJ/db = sum(delta) in every entry (reduced over the wrong axis) instead of delta",
        "notes:mlp",
        ("mlp-b-output-params", "mlp-e-hidden-params", "mlp"),
        B,
        "numpy",
        _numpy(BiasGradSummed),
    ),
    Mutant(
        "cross-entropy-mean-over-classes",
        "FORWARD: J = -mean_k y_k log yhat_k (mean, not sum), with the consistent backward (yhat - y)/m",
        "notes:mlp",
        ("mlp-a-logits", "mlp"),
        F_,
        "numpy",
        _numpy(CrossEntropyMeanOverClasses),
    ),
    # conv
    Mutant(
        "conv-filter-delta-flipped",
        "dJ/dK = X * rot180(delta) instead of X * delta",
        "notes:conv-filter",
        ("conv-filter",),
        B,
        "numpy",
        _numpy(ConvFilterDeltaFlipped),
    ),
    Mutant(
        "conv-filter-float16-accumulation",
        "float32 dJ/dK computed and accumulated in float16",
        "notes:conv-filter",
        ("conv-filter",),
        B,
        "numpy",
        _numpy(ConvFilterFloat16Accumulation),
        dtypes=("float32",),
    ),
    Mutant(
        "conv-input-no-rot180",
        "dJ/dX = pad(delta, k-1) * K: the rot180 of the kernel forgotten",
        "notes:conv-input",
        ("conv-input",),
        B,
        "numpy",
        _numpy(ConvInputNoRot180),
    ),
    Mutant(
        "conv-input-pad-shifted",
        "delta padded by k-2 before and k after instead of k-1 on both sides (dJ/dX shifted a pixel)",
        "notes:conv-input",
        ("conv-input",),
        B,
        "numpy",
        _numpy(ConvInputPadShifted),
    ),
    Mutant(
        "conv-input-pad-k-minus-2",
        "delta padded by k-2 on both sides: dJ/dX has the wrong shape (the engine rejects it: ADAPTER)",
        "notes:conv-input",
        ("conv-input",),
        A,
        "numpy",
        _numpy(ConvInputPadKMinus2),
    ),
    Mutant(
        "conv-true-convolution",
        "FORWARD: a true convolution (kernel flipped) instead of a cross-correlation, backward consistent",
        "notes:conv-filter",
        ("conv-filter", "conv-input"),
        F_,
        "numpy",
        _numpy(TrueConvolution),
    ),
    # pooling
    Mutant(
        "max-pool-route-last",
        "max-pool router sends delta to the last (bottom-right) pixel of every window",
        "notes:max-pool",
        ("max-pool",),
        B,
        "numpy",
        _numpy(MaxPoolRouteLast),
    ),
    Mutant(
        "max-pool-route-corner",
        "max-pool router sends delta to a fixed corner (top-left) of every window",
        "notes:max-pool",
        ("max-pool",),
        B,
        "numpy",
        _numpy(MaxPoolRouteCorner),
    ),
    Mutant(
        "max-pool-route-all",
        "max-pool router sends delta to every pixel of the window",
        "notes:max-pool",
        ("max-pool",),
        B,
        "numpy",
        _numpy(MaxPoolRouteAll),
    ),
    Mutant(
        "avg-pool-divided-by-k",
        "average-pool backward spreads delta / k instead of delta / k^2",
        "notes:avg-pool",
        ("avg-pool",),
        B,
        "numpy",
        _numpy(AvgPoolDividedByK),
    ),
    Mutant(
        "avg-pool-not-divided",
        "average-pool backward spreads delta undivided (1/k^2 forgotten)",
        "notes:avg-pool",
        ("avg-pool",),
        B,
        "numpy",
        _numpy(AvgPoolNotDivided),
    ),
    Mutant(
        "avg-pool-forward-sum",
        "FORWARD: the average pool computes the window sum; its backward spreads delta undivided",
        "notes:avg-pool",
        ("avg-pool",),
        F_,
        "numpy",
        _numpy(SumPoolForward),
    ),
    # PyTorch wrappers
    Mutant(
        "torch-relu-mask-inverted",
        "PyTorch: torch.relu swapped for an autograd.Function whose backward masks with 1(x <= 0)",
        "notes:mlp",
        ("elementwise-relu", "mlp-d-relu-mask", "mlp"),
        B,
        "torch",
        _torch_relu_mask_inverted,
    ),
    Mutant(
        "torch-conv-input-no-rot180",
        "PyTorch: F.conv2d swapped for an autograd.Function whose input gradient skips rot180(K)",
        "notes:conv-input",
        ("conv-input",),
        B,
        "torch",
        _torch_conv_input_no_rot180,
    ),
    Mutant(
        "torch-softmax-ce-forgot-y",
        "PyTorch: F.cross_entropy swapped for an autograd.Function whose backward returns yhat",
        "notes:mlp",
        ("mlp-a-logits", "mlp"),
        B,
        "torch",
        _torch_softmax_ce_forgot_y,
    ),
    # JAX wrappers
    Mutant(
        "jax-sigmoid-missing-one-minus",
        "JAX: jax.nn.sigmoid swapped for a custom_vjp whose backward is g * s (1 - s missing)",
        "notes:identity-4",
        ("elementwise-sigmoid",),
        B,
        "jax",
        _jax_sigmoid_missing_one_minus,
    ),
    Mutant(
        "jax-avg-pool-divided-by-k",
        "JAX: the average pool swapped for a custom_vjp that spreads g / k instead of g / k^2",
        "notes:avg-pool",
        ("avg-pool",),
        B,
        "jax",
        _jax_avg_pool_divided_by_k,
    ),
    Mutant(
        "jax-matmul-outer-reversed",
        "JAX: jnp.matmul swapped for a custom_vjp whose dJ/dW for W x is (x g^T) reshaped",
        "notes:identity-5",
        ("matvec-weight-grad", "mlp-b-output-params"),
        B,
        "jax",
        _jax_matmul_outer_reversed,
    ),
)

_CONTROL_ENTRIES: tuple[Mutant, ...] = (
    Mutant(
        "control-correct-numpy",
        "negative control: the unmodified NumPy engine under a mutant's name (must survive)",
        "notes:identity-4",
        ("elementwise-sigmoid", "mlp", "conv-input", "max-pool"),
        B,
        "numpy",
        _numpy(CorrectRules),
        control=True,
    ),
)

#: Every mutant of the default catalogue, by name.
CATALOGUE: dict[str, Mutant] = {m.name: m for m in _ENTRIES}
#: Negative controls (correct adapters under a mutant's name), selectable by name only.
CONTROLS: dict[str, Mutant] = {m.name: m for m in _CONTROL_ENTRIES}


def all_mutants() -> list[Mutant]:
    """The default catalogue (controls excluded), in catalogue order."""
    return list(CATALOGUE.values())


def get_mutant(name: str) -> Mutant:
    """The mutant (or control) called ``name``; suggests close names when unknown."""
    if name in CATALOGUE:
        return CATALOGUE[name]
    if name in CONTROLS:
        return CONTROLS[name]
    known = [*CATALOGUE, *CONTROLS]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownMutantError(
        f"unknown mutant {name!r}.{hint} Run 'gradoracle selftest --list-mutants' for the catalogue."
    )


class MutantAdapter:
    """``load_adapter`` entry for mutants: ``gradoracle.selftest.mutants:MutantAdapter?name=<mutant>``.

    Delegates every member of the adapter protocol to the mutant's real adapter.
    """

    name: str = "mutant"

    def __init__(self, name: str) -> None:
        self.mutant = get_mutant(name)
        self.inner = self.mutant.build()
        self.name = self.inner.name

    @property
    def dtypes(self) -> tuple[str, ...]:
        """The real adapter's dtypes."""
        return tuple(self.inner.dtypes)

    @property
    def has_jvp(self) -> bool:
        """Whether the real adapter has forward mode."""
        return bool(self.inner.has_jvp)

    @property
    def ops(self) -> Any:
        """The real adapter's (mutated) ops namespace."""
        return self.inner.ops

    def available(self) -> tuple[bool, str]:
        """The real adapter's availability."""
        ok, why = self.inner.available()
        return bool(ok), str(why)

    def supported_ops(self) -> frozenset[str]:
        """The real adapter's ops."""
        return frozenset(self.inner.supported_ops())

    def from_numpy(self, a: np.ndarray, dtype: str) -> Any:
        """Delegated."""
        return self.inner.from_numpy(a, dtype)

    def to_numpy(self, t: Any) -> np.ndarray:
        """Delegated."""
        return np.asarray(self.inner.to_numpy(t))

    def forward(self, fn: Any, inputs: Mapping[str, np.ndarray], dtype: str) -> np.ndarray:
        """Delegated."""
        return np.asarray(self.inner.forward(fn, inputs, dtype))

    def vjp(
        self, fn: Any, inputs: Mapping[str, np.ndarray], wrt: Sequence[str], cotangent: np.ndarray, dtype: str
    ) -> Any:
        """Delegated."""
        return self.inner.vjp(fn, inputs, wrt, cotangent, dtype)

    def jvp(
        self, fn: Any, inputs: Mapping[str, np.ndarray], tangents: Mapping[str, np.ndarray], dtype: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Delegated."""
        out, jv = self.inner.jvp(fn, inputs, tangents, dtype)
        return np.asarray(out), np.asarray(jv)

    def __repr__(self) -> str:
        return f"<MutantAdapter {self.mutant.name!r}>"
