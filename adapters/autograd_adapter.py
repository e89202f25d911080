"""A gradoracle adapter for HIPS autograd (https://github.com/HIPS/autograd): a shipped example.

This is the worked example of putting a framework outside the core under test: one class,
written only against the public protocol (:mod:`gradoracle.adapters.base`, :mod:`gradoracle.ops`),
as a third party would write it. It ships inside the package and is selectable by its short
name when autograd is installed (``pip install autograd``): ``gradoracle check --adapter autograd``
or ``pytest --gradoracle-adapter autograd``; copy this file to start an adapter of your own.

Every op of :mod:`gradoracle.ops` is written the way an autograd user writes it, with
``autograd.numpy`` / ``autograd.scipy.special``: ``np.maximum(x, 0)`` for ReLU,
``logsumexp`` for the cross-entropy, slicing + ``einsum`` for the convolution, and
gather + ``np.max`` / ``np.mean`` over the window axis for pooling.  Reverse mode is
``autograd.make_vjp`` on a dict of the differentiated inputs (autograd differentiates
through dict containers).  Forward evaluation calls the same ops on plain NumPy arrays.

Conventions autograd has at non-differentiable points (what the convention probes see):

- ``np.maximum(x, 0)`` (relu, maximum_zero): ``balanced_eq`` gives the gradient 1/2 at a tie, so
  relu'(0) = 0.5;
- ``np.max`` over a pooling window (``grad_chooser``): delta is *split evenly* among tied
  maxima (1/n each), neither first-index (PyTorch, JAX) nor every-maximum (the notes
  read literally);
- ``np.abs``: 0 at 0; ``np.clip(x, 0, inf)``: 0 at x = 0 (the bound blocks the gradient).

dtype: the adapter never casts.  float32 in, float32 out: every identity's float32
gradients come back float32 (the runner checks the dtype of every output and gradient;
see ``tests/test_autograd_example.py``).  No known deviations were needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np

from gradoracle.adapters.base import AdapterBase, ForwardFn, VJPResult
from gradoracle.ops import ELU_ALPHA, KINK_OPS, LEAKY_RELU_SLOPE, NOTES_OPS

_INV_SQRT2 = 1.0 / math.sqrt(2.0)


class AutogradOps:
    """The :mod:`gradoracle.ops` namespace in ``autograd.numpy``."""

    def __init__(self) -> None:
        import autograd.numpy as anp
        import autograd.scipy.special as special

        self.np = anp
        self.special = special

    # ---- linear and elementwise -----------------------------------------------------

    def matmul(self, a: Any, b: Any) -> Any:
        """``a @ b`` (``np.matmul``)."""
        return self.np.matmul(a, b)

    def add(self, a: Any, b: Any) -> Any:
        """``a + b``."""
        return a + b

    def relu(self, x: Any) -> Any:
        """``np.maximum(x, 0)``, as autograd's own examples write it."""
        return self.np.maximum(x, 0.0)

    def leaky_relu(self, x: Any) -> Any:
        """``np.where(x > 0, x, 0.01 x)``."""
        return self.np.where(x > 0, x, LEAKY_RELU_SLOPE * x)

    def sigmoid(self, x: Any) -> Any:
        """``scipy.special.expit`` (stable for both signs)."""
        return self.special.expit(x)

    def tanh(self, x: Any) -> Any:
        """``np.tanh``."""
        return self.np.tanh(x)

    def exp(self, x: Any) -> Any:
        """``np.exp``."""
        return self.np.exp(x)

    def log(self, x: Any) -> Any:
        """``np.log``."""
        return self.np.log(x)

    def softplus(self, x: Any) -> Any:
        """``np.logaddexp(0, x) = log(1 + exp(x))`` without overflow."""
        return self.np.logaddexp(0.0, x)

    def sin(self, x: Any) -> Any:
        """``np.sin``."""
        return self.np.sin(x)

    def square(self, x: Any) -> Any:
        """``np.square``."""
        return self.np.square(x)

    def abs(self, x: Any) -> Any:
        """``np.abs``."""
        return self.np.abs(x)

    def elu(self, x: Any) -> Any:
        """``x if x > 0 else expm1(x)``; expm1 sees ``where(x > 0, 0, x)`` so the unused branch cannot
        overflow.  (Not ``minimum(x, 0)``: autograd splits that tie at x = 0 and elu'(0) would come
        out 1/2, although ELU with alpha 1 is differentiable there with derivative 1.)"""
        safe = self.np.where(x > 0, 0.0, x)
        return self.np.where(x > 0, x, ELU_ALPHA * self.np.expm1(safe))

    def silu(self, x: Any) -> Any:
        """``x * expit(x)``."""
        return x * self.special.expit(x)

    def gelu(self, x: Any) -> Any:
        """``x/2 (1 + erf(x / sqrt 2))`` (exact erf form)."""
        return 0.5 * x * (1.0 + self.special.erf(x * _INV_SQRT2))

    def softmax_cross_entropy(self, logits: Any, target: Any) -> Any:
        """``-sum_k y_k (z_k - logsumexp(z))``."""
        return -self.np.sum(target * (logits - self.special.logsumexp(logits)))

    def sum(self, x: Any) -> Any:
        """``np.sum`` (0-D)."""
        return self.np.sum(x)

    def maximum_zero(self, x: Any) -> Any:
        """``np.maximum(x, 0)``."""
        return self.np.maximum(x, 0.0)

    def clamp_min_zero(self, x: Any) -> Any:
        """``np.clip(x, 0, inf)``."""
        return self.np.clip(x, 0.0, np.inf)

    # ---- kinks (#13) -----------------------------------------------------------------

    def maximum(self, a: Any, b: Any) -> Any:
        """``np.maximum(a, b)`` (``balanced_eq``: a tie splits the gradient 1/2 : 1/2)."""
        return self.np.maximum(a, b)

    def clamp(self, x: Any, lo: float, hi: float) -> Any:
        """``np.clip(x, lo, hi)`` (the gradient is 0 at a bound)."""
        return self.np.clip(x, lo, hi)

    # ---- convolution and pooling (gather windows with index arrays, then reduce) ------

    @staticmethod
    def _window_index(h: int, w: int, kh: int, kw: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
        """Row and column indices of shape (Ho, Wo, kh, kw) of every window (floor mode)."""
        ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
        rows = (np.arange(ho) * stride)[:, None, None, None] + np.arange(kh)[None, None, :, None]
        cols = (np.arange(wo) * stride)[None, :, None, None] + np.arange(kw)[None, None, None, :]
        return np.broadcast_to(rows, (ho, wo, kh, kw)), np.broadcast_to(cols, (ho, wo, kh, kw))

    def conv2d(self, x: Any, k: Any) -> Any:
        """Valid cross-correlation: gather the (Ho, Wo, kh, kw) patches, ``einsum`` with K."""
        (h, w), (kh, kw) = self.np.shape(x), self.np.shape(k)
        if kh > h or kw > w:
            raise ValueError(f"conv2d: kernel {kh}x{kw} larger than the {h}x{w} input")
        rows, cols = self._window_index(h, w, kh, kw, 1)
        return self.np.einsum("uvab,ab->uv", x[rows, cols], k)

    def _pool_windows(self, x: Any, k: int, stride: int | None) -> Any:
        s = k if stride is None else int(stride)
        h, w = self.np.shape(x)
        if k < 1 or s < 1 or k > h or k > w:
            raise ValueError(f"pooling: window {k} / stride {s} does not fit a {h}x{w} input")
        rows, cols = self._window_index(h, w, k, k, s)
        ho, wo = rows.shape[:2]
        return self.np.reshape(x[rows, cols], (ho, wo, k * k))

    def max_pool2d(self, x: Any, k: int, stride: int | None = None) -> Any:
        """``np.max`` over each gathered window."""
        return self.np.max(self._pool_windows(x, k, stride), axis=-1)

    def avg_pool2d(self, x: Any, k: int, stride: int | None = None) -> Any:
        """``np.mean`` over each gathered window."""
        return self.np.mean(self._pool_windows(x, k, stride), axis=-1)


class AutogradAdapter(AdapterBase):
    """HIPS autograd under test: ``make_vjp`` over a dict of the differentiated inputs."""

    name = "autograd"
    dtypes = ("float64", "float32")
    has_jvp = False

    def available(self) -> tuple[bool, str]:
        """``(True, "")`` when autograd imports."""
        try:
            import autograd  # noqa: F401
        except ImportError as exc:
            return False, f"autograd is not installed ({exc}); pip install autograd"
        return True, ""

    @cached_property
    def ops(self) -> AutogradOps:
        """The autograd.numpy ops namespace (imports autograd on first access)."""
        return AutogradOps()

    def supported_ops(self) -> frozenset[str]:
        """The notes' ops and the kink ops; the layer ops (:data:`gradoracle.ops.LAYER_OPS`) are not
        written for autograd, so the layer identities skip on it."""
        return frozenset(NOTES_OPS + KINK_OPS)

    def from_numpy(self, a: np.ndarray, dtype: str) -> np.ndarray:
        """A fresh NumPy array in ``dtype`` (autograd works on NumPy arrays)."""
        if dtype not in self.dtypes:
            raise ValueError(f"autograd adapter: unsupported dtype {dtype!r}; use one of {self.dtypes}")
        return np.array(a, dtype=dtype)

    def to_numpy(self, t: Any) -> np.ndarray:
        """A NumPy copy, in the dtype autograd produced (never cast)."""
        return np.array(t, copy=True)

    def forward(self, fn: ForwardFn, inputs: Mapping[str, np.ndarray], dtype: str) -> np.ndarray:
        """``fn(ops, inputs)`` on plain arrays (nothing traced)."""
        args = {k: self.from_numpy(v, dtype) for k, v in inputs.items()}
        return self.to_numpy(fn(self.ops, args))

    def vjp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangent: np.ndarray,
        dtype: str,
    ) -> VJPResult:
        """Output and ``u^T J`` per name in ``wrt`` via ``autograd.make_vjp``; other inputs constant."""
        from autograd import make_vjp

        unknown = [n for n in wrt if n not in inputs]
        if unknown:
            raise KeyError(f"autograd adapter: wrt names {unknown} are not inputs ({sorted(inputs)})")
        args = {k: self.from_numpy(v, dtype) for k, v in inputs.items()}
        diff = {n: args[n] for n in wrt}
        const = {k: v for k, v in args.items() if k not in diff}
        pullback, out = make_vjp(lambda d: fn(self.ops, {**const, **d}))(diff)
        output = self.to_numpy(out)
        if tuple(np.shape(cotangent)) != output.shape:
            raise ValueError(
                f"autograd adapter: cotangent shape {np.shape(cotangent)} != output {output.shape}"
            )
        grads = pullback(np.asarray(cotangent, dtype=output.dtype))
        return VJPResult(output=output, grads={n: self.to_numpy(grads[n]) for n in wrt})
