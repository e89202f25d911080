"""The in-house NumPy reverse-mode backprop engine (adapter name ``numpy``).

A minimal tape: every op returns a :class:`Tensor` that holds its value, the tensors it
was computed from (``parents``) and a closure that sends a cotangent back to them.
:func:`backprop` walks the tape in reverse topological order and accumulates
``u^T J`` into every input that requires a gradient (an input used twice receives the sum
of both contributions).  Forward-only evaluation (``adapter.forward``, called many
times by finite differences) records nothing: no input requires a gradient, so each op
returns a bare constant tensor.

The gradients come only from chaining the per-op rules of ``notes/gradient-notes.md``;
this module never imports the oracle's identities or reference gradients.  Every op's
forward and its backward rule sit next to each other as two methods of :class:`Rules`:

============================  =========================================================
rule                          formula (``delta`` = dJ/dz, the upstream cotangent)
============================  =========================================================
matmul, ``z = W x``           dJ/dW = delta x^T (outer product), dJ/dx = W^T delta
matmul, ``z = x W``           dJ/dW = x^T delta (outer product), dJ/dx = delta W^T
matmul, ``Z = A B``           dJ/dA = delta B^T, dJ/dB = A^T delta
add (bias)                    pass-through: dJ/da = dJ/db = delta (identity 3, J = I)
elementwise ``z = f(x)``      J = diag(f'(x)), so dJ/dx = delta * f'(x) (identity 4)
relu                          mask: delta * 1(x > 0)
softmax cross-entropy         dJ/dz = (yhat - y) * delta, dJ/dy = -log(yhat) * delta
conv2d filter                 dJ/dK = X (valid correlation) delta
conv2d input                  dJ/dX = pad(delta, k-1) (valid correlation) rot180(K)
max pool                      router: delta goes to the argmax cached in the forward
avg pool                      spread: delta / k^2 to every pixel of the window
sum                           broadcast: dJ/dx = delta * ones_like(x)
============================  =========================================================

Conventions at non-differentiable points (what the convention probes will report):
relu'(0) = 0, leaky_relu'(0) = 0.01, abs'(0) = sign(0) = 0, ``maximum_zero`` splits the
gradient 1/2 at x = 0 (like ``torch.maximum`` and ``jax.lax.max``), ``clamp_min_zero``
passes it, 1(x >= 0) (like ``torch.clamp_min``); ``maximum(a, b)`` splits a tie 1/2 : 1/2 and
``clamp(x, lo, hi)`` passes the gradient at either bound.  Max-pool ties go to the *first*
maximal pixel in row-major order within the window (``np.argmax``), as in PyTorch and
JAX.  Overlapping windows (stride < k) accumulate; pixels left over at the bottom/right
edge in floor mode get gradient 0.

dtype: every rule computes in the dtype of its inputs (float32 in, float32 arithmetic,
float32 out).  Constants are Python floats, which never upcast an array (weak scalars,
NEP 50; value-based casting before NumPy 2); the one non-NumPy kernel, ``math.erf``
for gelu, is evaluated in double and rounded back to the input dtype.

Writing a mutant (a deliberately wrong engine, for testing the oracle)
----------------------------------------------------------------------
Subclass :class:`Rules`, override the rule(s) to break, and pass an instance::

    class TransposeForgotten(Rules):
        def matmul_backward(self, delta, a, b):
            da, db = super().matmul_backward(delta, a, b)
            return da, (a @ delta if a.ndim == 2 and b.ndim == 1 else db)  # W delta, not W^T delta

    adapter = NumpyEngineAdapter(rules=TransposeForgotten(), name="numpy-mutant-transpose")

Forward methods (``*_forward``) can be overridden the same way, for mutants whose
forward computes another function.  The composite rules have finer hooks too:
``conv2d_backward`` calls ``conv2d_filter_grad`` and ``conv2d_input_grad``, and
``max_pool2d_forward`` takes its router from ``max_pool2d_argmax``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from gradoracle.adapters.base import SUPPORTED_DTYPES, AdapterBase, ForwardFn, VJPResult
from gradoracle.ops import ALL_OPS, ELU_ALPHA, LEAKY_RELU_SLOPE

__all__ = [
    "GradientShapeError",
    "NumpyEngineAdapter",
    "Rules",
    "TapeOps",
    "Tensor",
    "backprop",
]

#: A node's backward closure: upstream cotangent -> one cotangent per parent (None = none).
BackwardFn = Callable[[np.ndarray], Sequence[np.ndarray | None]]

_erf = np.frompyfunc(math.erf, 1, 1)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class GradientShapeError(ValueError):
    """A backward rule returned a gradient whose shape differs from its input's."""


# --------------------------------------------------------------------------------------
# The tape
# --------------------------------------------------------------------------------------


class Tensor:
    """A value on the tape: ``value``, its ``parents`` and the ``backward`` closure.

    Leaves have no parents.  ``requires_grad`` is true for inputs we differentiate
    with respect to and for every tensor computed from one; only those are recorded.
    """

    __slots__ = ("backward", "op", "parents", "requires_grad", "value")

    def __init__(
        self,
        value: np.ndarray,
        parents: tuple[Tensor, ...] = (),
        backward: BackwardFn | None = None,
        op: str = "leaf",
        requires_grad: bool = False,
    ) -> None:
        self.value = value
        self.parents = parents
        self.backward = backward
        self.op = op
        self.requires_grad = requires_grad

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the value."""
        return tuple(self.value.shape)

    @property
    def ndim(self) -> int:
        """Number of dimensions of the value."""
        return int(self.value.ndim)

    @property
    def dtype(self) -> np.dtype[Any]:
        """dtype of the value."""
        return self.value.dtype

    def __repr__(self) -> str:
        flag = ", requires_grad" if self.requires_grad else ""
        return f"Tensor(op={self.op!r}, shape={self.shape}, dtype={self.dtype}{flag})"


def _topological_order(root: Tensor) -> list[Tensor]:
    """Tensors that require a gradient reachable from ``root``, parents before children."""
    order: list[Tensor] = []
    visited: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        stack.extend((p, False) for p in node.parents if p.requires_grad and id(p) not in visited)
    return order


def backprop(output: Tensor, cotangent: np.ndarray) -> dict[int, np.ndarray]:
    """Reverse sweep: ``u^T J`` for every tensor on the tape, keyed by ``id(tensor)``.

    Chain rule, node by node in reverse topological order: each node's accumulated
    cotangent goes through its backward rule and is *summed* into its parents'.
    """
    grads: dict[int, np.ndarray] = {id(output): cotangent}
    if not output.requires_grad:
        return grads
    for node in reversed(_topological_order(output)):
        upstream = grads.get(id(node))
        if upstream is None or node.backward is None:
            continue
        parent_grads = node.backward(upstream)
        for parent, grad in zip(node.parents, parent_grads, strict=True):
            if grad is None or not parent.requires_grad:
                continue
            grad = np.asarray(grad)
            if grad.shape != parent.value.shape:
                raise GradientShapeError(
                    f"backward rule of {node.op!r} returned a gradient of shape {grad.shape} "
                    f"for an input of shape {parent.value.shape}"
                )
            previous = grads.get(id(parent))
            grads[id(parent)] = grad if previous is None else previous + grad
    return grads


# --------------------------------------------------------------------------------------
# Helpers shared by the rules
# --------------------------------------------------------------------------------------


def _stable_sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` without overflow: uses ``e = exp(-|x|)`` on both sides."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _std_normal_cdf(x: np.ndarray) -> np.ndarray:
    """``Phi(x) = (1 + erf(x / sqrt 2)) / 2`` in the dtype of ``x``."""
    erf = np.asarray(_erf(x * _INV_SQRT2), dtype=x.dtype)
    return 0.5 * (1.0 + erf)


def _std_normal_pdf(x: np.ndarray) -> np.ndarray:
    """``phi(x) = exp(-x^2 / 2) / sqrt(2 pi)`` in the dtype of ``x``."""
    return np.exp(-0.5 * x * x) * _INV_SQRT_2PI


def _correlate_valid(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Valid 2-D cross-correlation ``Z[u,v] = sum_{a,b} x[u+a, v+b] k[a,b]`` (vectorised)."""
    windows = sliding_window_view(x, k.shape)  # (Ho, Wo, kh, kw), a view
    return np.einsum("uvab,ab->uv", windows, k)


def _check_pool_args(x: np.ndarray, k: int, stride: int | None) -> int:
    if x.ndim != 2:
        raise ValueError(f"pooling expects a 2-D feature map, got shape {x.shape}")
    s = k if stride is None else int(stride)
    if k < 1 or s < 1:
        raise ValueError(f"pool size and stride must be >= 1, got k={k}, stride={s}")
    if k > min(x.shape):
        raise ValueError(f"pool size {k} exceeds the feature map {x.shape}")
    return s


def _pool_windows(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """All k x k windows with stride ``s`` in floor mode: shape (Ho, Wo, k, k)."""
    return sliding_window_view(x, (k, k))[::s, ::s]


# ---- layer geometry (the engine's own; PyTorch's definitions) ---------------------------


def _per_axis(value: Any, rank: int, what: str) -> tuple[int, ...]:
    """One int per spatial axis (an int repeats)."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * rank
    out = tuple(int(v) for v in value)
    if len(out) != rank:
        raise ValueError(f"{what} {out} has {len(out)} entries for {rank} spatial axes")
    return out


def _ix(*parts: Any) -> tuple[Any, ...]:
    """``parts`` as an index tuple (slices, ints, ``Ellipsis``)."""
    return parts


def _dilate(a: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Insert ``f - 1`` zeros between neighbours along each trailing axis (delta dilated by the stride)."""
    rank = len(factors)
    lead = a.shape[: a.ndim - rank]
    shape = lead + tuple((n - 1) * f + 1 for n, f in zip(a.shape[a.ndim - rank :], factors, strict=True))
    out = np.zeros(shape, dtype=a.dtype)
    out[_ix(Ellipsis, *(slice(None, None, f) for f in factors))] = a
    return out


def _correlate_channels(x: np.ndarray, k: np.ndarray, dilation: Sequence[int], groups: int) -> np.ndarray:
    """Valid, stride-1 grouped cross-correlation with a dilated kernel.

    ``x`` (N, G*Cg, *S), ``k`` (G*Og, Cg, *K) -> (N, G*Og, *(S - d (K - 1)))::

        out[n, o, p] = sum_{c, a} x[n, g Cg + c, p + a d] k[o, c, a]
    """
    rank = k.ndim - 2
    n = x.shape[0]
    c_out, cg = k.shape[:2]
    og = c_out // groups
    out_shape = tuple(x.shape[2 + i] - dilation[i] * (k.shape[2 + i] - 1) for i in range(rank))
    xg = x.reshape(n, groups, cg, *x.shape[2:])
    kg = k.reshape(groups, og, cg, *k.shape[2:])
    out = np.zeros((n, groups, og, *out_shape), dtype=np.result_type(x, k))
    for offset in itertools.product(*(range(m) for m in k.shape[2:])):
        window = tuple(slice(a * d, a * d + m) for a, d, m in zip(offset, dilation, out_shape, strict=True))
        out += np.einsum(
            "ngc...,goc->ngo...",
            xg[(slice(None), slice(None), slice(None), *window)],
            kg[_ix(Ellipsis, *offset)],
        )
    return out.reshape(n, c_out, *out_shape)


def _pool_window_index(
    spatial: Sequence[int],
    window: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    ceil_mode: bool,
) -> tuple[list[np.ndarray], tuple[int, ...], list[int]]:
    """Per axis, the padded positions of every window ``(O, w)``, the output shape and the right pads.

    Output length ``floor((S + 2p - d (w - 1) - 1) / s) + 1`` (``ceil`` in ceil mode, one
    less when the last window would start inside the right padding).
    """
    positions, out, right = [], [], []
    for n, w, s, p, d in zip(spatial, window, stride, padding, dilation, strict=True):
        span = n + 2 * p - d * (w - 1) - 1
        if span < 0:
            raise ValueError(f"pool window {w} (dilation {d}) does not fit an axis of {n} padded by {p}")
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= n + p:
            o -= 1
        pos = np.arange(o)[:, None] * s + np.arange(w)[None, :] * d  # in padded coordinates
        positions.append(pos)
        out.append(o)
        right.append(max(0, int(pos.max()) + 1 - (n + 2 * p)) + p)
    return positions, tuple(out), right


def _gather_windows(xp: np.ndarray, positions: Sequence[np.ndarray]) -> np.ndarray:
    """``xp[n, c, pos_0[o_0, a_0], pos_1[o_1, a_1], ...]`` as (N, C, O_0, .., O_r-1, w_0 * .. * w_r-1)."""
    rank = len(positions)
    index: list[Any] = [slice(None), slice(None)]
    for i, pos in enumerate(positions):
        shape = [1] * (2 * rank)
        shape[i], shape[rank + i] = pos.shape
        index.append(pos.reshape(shape))
    g = xp[tuple(index)]  # (N, C, O..., w...)
    return g.reshape(*g.shape[: 2 + rank], -1)


# --------------------------------------------------------------------------------------
# The rules: each op's forward next to its backward rule
# --------------------------------------------------------------------------------------


class Rules:
    """Forward computations and backward rules of every op, one pair of methods per op.

    Elementwise backward rules have the signature ``f_backward(delta, x, z)`` with ``z =
    f(x)`` and return ``delta * f'(x)`` (notes identity 4: the Jacobian is
    ``diag(f'(x))``).  Subclass and override any method to build a mutant engine.
    """

    # ---- matmul (notes identities 1, 2, 5, 6) ------------------------------------------

    def matmul_forward(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a @ b`` for (n,m)@(m,), (n,)@(n,m), (n,m)@(m,p) (and (n,)@(n,))."""
        return np.asarray(a @ b)

    def matmul_backward(
        self, delta: np.ndarray, a: np.ndarray, b: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Outer products and transposes.

        ``z = W x``: dJ/dW = delta x^T, dJ/dx = W^T delta (identities 5 and 1).
        ``z = x W``: dJ/dx = delta W^T, dJ/dW = x^T delta (identities 2 and 6).
        ``Z = A B``: dJ/dA = delta B^T, dJ/dB = A^T delta.
        """
        if a.ndim == 2 and b.ndim == 1:
            return np.outer(delta, b), a.T @ delta
        if a.ndim == 1 and b.ndim == 2:
            return b @ delta, np.outer(a, delta)
        if a.ndim == 2 and b.ndim == 2:
            return delta @ b.T, a.T @ delta
        if a.ndim == 1 and b.ndim == 1:
            return delta * b, delta * a
        raise ValueError(f"matmul of shapes {a.shape} and {b.shape} is not supported")

    # ---- add (the bias) ----------------------------------------------------------------

    def add_forward(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a + b`` (elementwise; same shapes)."""
        return np.asarray(a + b)

    def add_backward(self, delta: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pass-through: dJ/da = dJ/db = delta (dJ/db_2 = delta_2 in the notes' MLP).

        If an operand was broadcast, its gradient is ``delta`` summed over the
        broadcast axes.
        """
        return _sum_to_shape(delta, a.shape), _sum_to_shape(delta, b.shape)

    # ---- elementwise (notes identity 4: dJ/dx = delta * f'(x)) -------------------------

    def relu_forward(self, x: np.ndarray) -> np.ndarray:
        """``max(0, x)``."""
        return np.maximum(x, 0)

    def relu_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """ReLU mask: ``delta * 1(x > 0)`` (relu'(0) = 0)."""
        return delta * (x > 0).astype(x.dtype)

    def leaky_relu_forward(self, x: np.ndarray) -> np.ndarray:
        """``x if x > 0 else 0.01 x``."""
        return np.where(x > 0, x, LEAKY_RELU_SLOPE * x)

    def leaky_relu_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``delta * (1 if x > 0 else 0.01)`` (leaky_relu'(0) = 0.01)."""
        return delta * np.where(x > 0, 1.0, LEAKY_RELU_SLOPE).astype(x.dtype)

    def sigmoid_forward(self, x: np.ndarray) -> np.ndarray:
        """``s(x) = 1 / (1 + exp(-x))`` (stable for large |x|)."""
        return _stable_sigmoid(x)

    def sigmoid_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``delta * s (1 - s)`` with ``s = z`` cached from the forward."""
        return delta * z * (1.0 - z)

    def tanh_forward(self, x: np.ndarray) -> np.ndarray:
        """``tanh(x)``."""
        return np.tanh(x)

    def tanh_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``delta * (1 - tanh^2 x)`` with ``tanh x = z``."""
        return delta * (1.0 - z * z)

    def exp_forward(self, x: np.ndarray) -> np.ndarray:
        """``exp(x)``."""
        return np.exp(x)

    def exp_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``delta * exp(x)`` (= ``delta * z``)."""
        return delta * z

    def log_forward(self, x: np.ndarray) -> np.ndarray:
        """``log(x)``."""
        return np.log(x)

    def log_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``delta / x``."""
        return delta / x

    def softplus_forward(self, x: np.ndarray) -> np.ndarray:
        """``log(1 + exp(x))``, computed stably as ``max(x, 0) + log1p(exp(-|x|))``."""
        return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))

    def softplus_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``delta * sigmoid(x)`` (softplus' = sigmoid)."""
        return delta * _stable_sigmoid(x)

    def sin_forward(self, x: np.ndarray) -> np.ndarray:
        """``sin(x)``."""
        return np.sin(x)

    def sin_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``delta * cos(x)``."""
        return delta * np.cos(x)

    def square_forward(self, x: np.ndarray) -> np.ndarray:
        """``x * x``."""
        return x * x

    def square_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``delta * 2x``."""
        return delta * (2.0 * x)

    def abs_forward(self, x: np.ndarray) -> np.ndarray:
        """``|x|``."""
        return np.abs(x)

    def abs_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``delta * sign(x)`` (abs'(0) = 0)."""
        return delta * np.sign(x)

    def elu_forward(self, x: np.ndarray) -> np.ndarray:
        """``x if x > 0 else alpha (exp(x) - 1)``, alpha = 1."""
        return np.where(x > 0, x, ELU_ALPHA * np.expm1(np.minimum(x, 0)))

    def elu_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``delta * (1 if x > 0 else alpha exp(x))``."""
        return delta * np.where(x > 0, 1.0, ELU_ALPHA * np.exp(np.minimum(x, 0))).astype(x.dtype)

    def silu_forward(self, x: np.ndarray) -> np.ndarray:
        """``x * s(x)``."""
        return x * _stable_sigmoid(x)

    def silu_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``delta * (s + x s (1 - s))`` with ``s = sigmoid(x)``."""
        s = _stable_sigmoid(x)
        return delta * (s + x * s * (1.0 - s))

    def gelu_forward(self, x: np.ndarray) -> np.ndarray:
        """``x * Phi(x) = x/2 (1 + erf(x / sqrt 2))`` (exact erf form)."""
        return x * _std_normal_cdf(x)

    def gelu_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``delta * (Phi(x) + x phi(x))``, phi the standard normal density."""
        return delta * (_std_normal_cdf(x) + x * _std_normal_pdf(x))

    def maximum_zero_forward(self, x: np.ndarray) -> np.ndarray:
        """``maximum(x, 0)``."""
        return np.maximum(x, 0)

    def maximum_zero_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``delta * (1 if x > 0, 1/2 if x == 0, else 0)`` (a tie splits the gradient)."""
        return delta * np.where(x > 0, 1.0, np.where(x == 0, 0.5, 0.0)).astype(x.dtype)

    def clamp_min_zero_forward(self, x: np.ndarray) -> np.ndarray:
        """``clamp(x, min=0)``."""
        return np.maximum(x, 0)

    def clamp_min_zero_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``delta * 1(x >= 0)`` (the bound passes the gradient, like ``torch.clamp_min``)."""
        return delta * (x >= 0).astype(x.dtype)

    # ---- kinks (#13): two-argument maximum and clamp ------------------------------------

    def maximum_forward(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``max(a, b)`` elementwise."""
        return np.maximum(a, b)

    def maximum_backward(
        self, delta: np.ndarray, a: np.ndarray, b: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(delta * w, delta * (1 - w))`` with ``w = 1 if a > b, 1/2 if a = b, else 0``.

        A tie splits the gradient evenly (like ``torch.maximum`` and ``jax.numpy.maximum``):
        ``(1/2, 1/2)`` lies in the generalised gradient ``{(t, 1 - t): t in [0, 1]}``.
        """
        w = np.where(a > b, 1.0, np.where(a == b, 0.5, 0.0)).astype(delta.dtype)
        return delta * w, delta * (1.0 - w)

    def clamp_forward(self, x: np.ndarray, lo: float, hi: float) -> np.ndarray:
        """``min(max(x, lo), hi)``."""
        return np.minimum(np.maximum(x, lo), hi)

    def clamp_backward(self, delta: np.ndarray, x: np.ndarray, lo: float, hi: float) -> np.ndarray:
        """``delta * 1(lo <= x <= hi)`` (a bound passes the gradient, like ``torch.clamp``)."""
        return delta * ((x >= lo) & (x <= hi)).astype(delta.dtype)

    # ---- softmax cross-entropy (notes MLP, step A) -------------------------------------

    def softmax_cross_entropy_forward(
        self, z: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """``J = -sum_k y_k log softmax(z)_k`` via a max-shifted log-sum-exp.

        Returns ``J`` (0-D) and the cache ``(yhat, log yhat)``.
        """
        if z.ndim != 1 or y.shape != z.shape:
            raise ValueError(f"softmax_cross_entropy expects 1-D logits and target, got {z.shape}, {y.shape}")
        shifted = z - np.max(z)
        log_yhat = shifted - np.log(np.sum(np.exp(shifted)))
        loss = np.asarray(-np.sum(y * log_yhat))
        return loss, (np.exp(log_yhat), log_yhat)

    def softmax_cross_entropy_backward(
        self,
        delta: np.ndarray,
        z: np.ndarray,
        y: np.ndarray,
        cache: tuple[np.ndarray, np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray]:
        """dJ/dz = (yhat - y) * delta; dJ/dy = -log(yhat) * delta.

        The notes' ``delta_2 = yhat - y`` is exact for soft targets too, *assuming* the
        target sums to 1: in general dJ/dz = yhat * sum(y) - y.
        """
        yhat, log_yhat = cache
        return (yhat - y) * delta, -log_yhat * delta

    # ---- conv2d (notes CNN example) ----------------------------------------------------

    def conv2d_forward(self, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Valid cross-correlation ``Z[u,v] = sum_{a,b} X[u+a, v+b] K[a,b]``."""
        if x.ndim != 2 or k.ndim != 2 or k.shape[0] > x.shape[0] or k.shape[1] > x.shape[1]:
            raise ValueError(f"conv2d expects a 2-D input and a smaller 2-D kernel, got {x.shape}, {k.shape}")
        return _correlate_valid(x, k)

    def conv2d_filter_grad(self, delta: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        """dJ/dK = X * delta: valid correlation of the input with delta, shape (kh, kw)."""
        return _correlate_valid(x, delta)

    def conv2d_input_grad(self, delta: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        """dJ/dX = delta * rot180(K): full correlation (delta padded by k-1) with rot180(K)."""
        kh, kw = k.shape
        padded = np.pad(delta, ((kh - 1, kh - 1), (kw - 1, kw - 1)))
        return _correlate_valid(padded, k[::-1, ::-1])

    def conv2d_backward(
        self, delta: np.ndarray, x: np.ndarray, k: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(dJ/dX, dJ/dK) = (delta * rot180(K), X * delta)."""
        return self.conv2d_input_grad(delta, x, k), self.conv2d_filter_grad(delta, x, k)

    # ---- pooling (notes CNN example, section 3) ----------------------------------------

    def max_pool2d_argmax(self, x: np.ndarray, k: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
        """Router indices: absolute (row, col) of each window's maximum, shape (Ho, Wo) each.

        Tie convention: the first maximal pixel in row-major order within the window
        (``np.argmax`` over the flattened window), as in PyTorch and JAX.
        """
        windows = _pool_windows(x, k, stride)
        ho, wo = windows.shape[:2]
        flat_index = np.argmax(windows.reshape(ho, wo, k * k), axis=-1)
        rows = np.arange(ho)[:, None] * stride + flat_index // k
        cols = np.arange(wo)[None, :] * stride + flat_index % k
        return rows, cols

    def max_pool2d_forward(
        self, x: np.ndarray, k: int, stride: int
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """``Z[u,v] = max(window_uv)``; returns Z and the argmax indices cached for the router."""
        rows, cols = self.max_pool2d_argmax(x, k, stride)
        return x[rows, cols], (rows, cols)

    def max_pool2d_backward(
        self, delta: np.ndarray, x: np.ndarray, k: int, stride: int, argmax: tuple[np.ndarray, np.ndarray]
    ) -> np.ndarray:
        """Router: dJ/dx_ij = sum of delta_uv over windows whose cached argmax is (i, j), else 0."""
        rows, cols = argmax
        grad = np.zeros_like(x)
        np.add.at(grad, (rows, cols), delta)
        return grad

    def avg_pool2d_forward(self, x: np.ndarray, k: int, stride: int) -> np.ndarray:
        """``Z[u,v] = (1/k^2) sum window_uv`` (floor mode)."""
        return _pool_windows(x, k, stride).sum(axis=(2, 3)) / (k * k)

    def avg_pool2d_backward(self, delta: np.ndarray, x: np.ndarray, k: int, stride: int) -> np.ndarray:
        """Spread: dJ/dx_ij = sum over windows uv containing (i, j) of delta_uv / k^2.

        Loops over the k^2 kernel offsets only; leftover edge pixels get 0.
        """
        grad = np.zeros_like(x)
        share = delta / (k * k)
        ho, wo = delta.shape
        for a in range(k):
            for b in range(k):
                grad[a : a + stride * (ho - 1) + 1 : stride, b : b + stride * (wo - 1) + 1 : stride] += share
        return grad

    # ---- sum -------------------------------------------------------------------------

    def sum_forward(self, x: np.ndarray) -> np.ndarray:
        """``sum_i x_i`` as a 0-D scalar."""
        return np.asarray(np.sum(x))

    def sum_backward(self, delta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``dJ/dx = delta * ones_like(x)`` (the Jacobian is a row of ones)."""
        return np.broadcast_to(delta, x.shape).copy()

    # ==== layers as frameworks ship them (gradoracle.ops.LAYER_OPS) =======================

    # ---- linear layers: Z = X W^T + b (PyTorch) and Z = X W + b (JAX/Flax) --------------

    def linear_forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
        """``Z = X W^T + b`` (``X W^T`` when b is None), X (..., in), W (out, in)."""
        z = x @ w.T
        return np.asarray(z if b is None else z + b)

    def linear_backward(
        self, delta: np.ndarray, x: np.ndarray, w: np.ndarray, b: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Identity 5 row by row, summed over the batch rows.

        dJ/dX = delta W; dJ/dW = sum_rows delta_r x_r^T = delta^T X (rows flattened);
        dJ/db = sum_rows delta_r (the tape drops it for a layer without bias, b None).
        """
        d2, x2 = delta.reshape(-1, w.shape[0]), x.reshape(-1, w.shape[1])
        return delta @ w, d2.T @ x2, d2.sum(axis=0)

    def dense_forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
        """``Z = X W + b`` (``X W`` when b is None), X (..., in), W (in, out)."""
        z = x @ w
        return np.asarray(z if b is None else z + b)

    def dense_backward(
        self, delta: np.ndarray, x: np.ndarray, w: np.ndarray, b: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Identity 6 row by row: dJ/dX = delta W^T; dJ/dW = X^T delta; dJ/db = sum_rows delta_r."""
        d2, x2 = delta.reshape(-1, w.shape[1]), x.reshape(-1, w.shape[0])
        return delta @ w.T, x2.T @ d2, d2.sum(axis=0)

    # ---- batched softmax cross-entropy (the MLP's loss with a batch) --------------------

    def cross_entropy_forward(
        self, z: np.ndarray, target: np.ndarray, reduction: str, label_smoothing: float
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``J = r sum_n -sum_c t~_nc log softmax(z_n)_c``; cache ``(log yhat, t~, r)``.

        ``t~ = (1 - eps) onehot(t) + eps / C`` (or ``(1 - eps) t + eps / C`` for probability
        targets); ``r = 1/N`` for ``mean``, 1 for ``sum``.
        """
        if z.ndim != 2:
            raise ValueError(f"cross_entropy expects (N, C) logits, got {z.shape}")
        n, classes = z.shape
        if target.shape == (n,):
            smooth = np.zeros_like(z)
            smooth[np.arange(n), target.astype(np.int64)] = 1
        elif target.shape == z.shape:
            smooth = target.astype(z.dtype)
        else:
            raise ValueError(f"cross_entropy target {target.shape} fits neither (N,) nor {z.shape}")
        if label_smoothing:
            smooth = smooth * (1 - label_smoothing) + label_smoothing / classes
        if reduction not in ("mean", "sum"):
            raise ValueError(f"cross_entropy reduction {reduction!r}; use mean or sum")
        r = np.asarray(1.0 / n if reduction == "mean" else 1.0, dtype=z.dtype)
        shifted = z - z.max(axis=1, keepdims=True)
        log_yhat = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        per_row = -(smooth * log_yhat).sum(axis=1)
        loss = per_row.sum() / n if reduction == "mean" else per_row.sum()
        return np.asarray(loss, dtype=z.dtype), (log_yhat, smooth, r)

    def cross_entropy_backward(
        self,
        delta: np.ndarray,
        z: np.ndarray,
        target: np.ndarray,
        label_smoothing: float,
        cache: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Step A per row, scaled by the reduction: dJ/dz_n = r (yhat_n sum_c t~_nc - t~_n) delta.

        dJ/dt (probability targets only) = -r (1 - eps) log yhat delta; class indices get none.
        """
        log_yhat, smooth, r = cache
        yhat = np.exp(log_yhat)
        dz = (yhat * smooth.sum(axis=1, keepdims=True) - smooth) * (delta * r)
        if target.ndim == 1:
            return dz, None
        return dz, -log_yhat * (delta * r * (1 - label_smoothing))

    # ---- n-d convolution (N, C, *S), groups, stride, padding, dilation, bias ------------

    def conv_nd_forward(
        self,
        x: np.ndarray,
        k: np.ndarray,
        b: np.ndarray | None,
        stride: tuple[int, ...],
        pads: tuple[tuple[int, int], ...],
        dilation: tuple[int, ...],
        groups: int,
    ) -> np.ndarray:
        """``Z = (Xpad (*) K)`` sampled every ``s``, plus b: the stride-1 correlation, subsampled."""
        xp = np.pad(x, ((0, 0), (0, 0), *pads))
        full = _correlate_channels(xp, k, dilation, groups)
        z = full[(slice(None), slice(None), *(slice(None, None, st) for st in stride))]
        if b is not None:
            z = z + b.reshape((1, -1) + (1,) * len(stride))
        return np.ascontiguousarray(z)

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
        """dJ/dX: the transposed convolution.

        delta dilated by the stride, padded by ``d (k - 1)`` on both sides, correlated with
        rot180(K) (dilated by d, input and output channels swapped within each group),
        zero-extended over the padded input's rows no window reached (floor mode), and
        cropped by the padding.
        """
        rank = len(stride)
        c_out, cg = k.shape[:2]
        og = c_out // groups
        spread = _dilate(delta, stride)
        halo = [d * (m - 1) for d, m in zip(dilation, k.shape[2:], strict=True)]
        spread = np.pad(spread, ((0, 0), (0, 0), *((h, h) for h in halo)))
        flipped = k[(slice(None), slice(None), *(slice(None, None, -1) for _ in range(rank)))]
        swapped = (
            flipped.reshape(groups, og, cg, *k.shape[2:])
            .swapaxes(1, 2)
            .reshape(groups * cg, og, *k.shape[2:])
        )
        grad_padded = _correlate_channels(spread, swapped, dilation, groups)
        padded_shape = [n + lo + hi for n, (lo, hi) in zip(x.shape[2:], pads, strict=True)]
        extend = [(0, full - got) for full, got in zip(padded_shape, grad_padded.shape[2:], strict=True)]
        grad_padded = np.pad(grad_padded, ((0, 0), (0, 0), *extend))
        crop = tuple(slice(lo, lo + n) for n, (lo, _) in zip(x.shape[2:], pads, strict=True))
        return np.ascontiguousarray(grad_padded[(slice(None), slice(None), *crop)])

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
        """dJ/dK: the padded input correlated with delta dilated by the stride, sampled every d.

        ``dJ/dK[o, c, a] = sum_{n, q} Xpad[n, g Cg + c, a d + q] dil_s(delta)[n, o, q]``.
        """
        n = x.shape[0]
        c_out, cg = k.shape[:2]
        og = c_out // groups
        xp = np.pad(x, ((0, 0), (0, 0), *pads))
        spread = _dilate(delta, stride)
        span = spread.shape[2:]
        xg = xp.reshape(n, groups, cg, *xp.shape[2:])
        dg = spread.reshape(n, groups, og, *span)
        grad = np.zeros((groups, og, cg, *k.shape[2:]), dtype=np.result_type(x, delta))
        for offset in itertools.product(*(range(m) for m in k.shape[2:])):
            window = tuple(slice(a * d, a * d + m) for a, d, m in zip(offset, dilation, span, strict=True))
            sample = xg[(slice(None), slice(None), slice(None), *window)]
            flat = sample.reshape(n, groups, cg, -1)
            grad[_ix(Ellipsis, *offset)] = np.einsum("ngcq,ngoq->goc", flat, dg.reshape(n, groups, og, -1))
        return grad.reshape(k.shape)

    def conv_nd_bias_grad(self, delta: np.ndarray) -> np.ndarray:
        """dJ/db = delta summed over the batch and every spatial position."""
        return delta.sum(axis=(0, *range(2, delta.ndim)))

    def conv_nd_backward(
        self,
        delta: np.ndarray,
        x: np.ndarray,
        k: np.ndarray,
        stride: tuple[int, ...],
        pads: tuple[tuple[int, int], ...],
        dilation: tuple[int, ...],
        groups: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(dJ/dX, dJ/dK, dJ/db)."""
        return (
            self.conv_nd_input_grad(delta, x, k, stride, pads, dilation, groups),
            self.conv_nd_filter_grad(delta, x, k, stride, pads, dilation, groups),
            self.conv_nd_bias_grad(delta),
        )

    # ---- n-d pooling (N, C, *S): windows, stride, padding, dilation, ceil mode ----------

    def max_pool_nd_forward(
        self,
        x: np.ndarray,
        window: tuple[int, ...],
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        dilation: tuple[int, ...],
        ceil_mode: bool,
    ) -> tuple[np.ndarray, tuple[np.ndarray, tuple[int, ...]]]:
        """``Z = max over each window`` (padding -inf); caches the flat padded index of each argmax.

        Ties go to the first maximum of the window in row-major order (``np.argmax``).
        """
        positions, _, right = _pool_window_index(x.shape[2:], window, stride, padding, dilation, ceil_mode)
        xp = np.pad(x, ((0, 0), (0, 0), *zip(padding, right, strict=True)), constant_values=-np.inf)
        idx = np.arange(xp.size).reshape(xp.shape)
        windows = _gather_windows(xp, positions)
        first = np.argmax(windows, axis=-1)[..., None]
        z = np.take_along_axis(windows, first, axis=-1)[..., 0]
        where = np.take_along_axis(_gather_windows(idx, positions), first, axis=-1)[..., 0]
        return z, (where, xp.shape)

    def max_pool_nd_backward(
        self,
        delta: np.ndarray,
        x: np.ndarray,
        padding: tuple[int, ...],
        cache: tuple[np.ndarray, tuple[int, ...]],
    ) -> np.ndarray:
        """Router: every window sends its delta to its cached argmax; overlapping windows accumulate."""
        where, padded_shape = cache
        grad = np.zeros(int(np.prod(padded_shape)), dtype=delta.dtype)
        np.add.at(grad, where.reshape(-1), delta.reshape(-1))
        grad = grad.reshape(padded_shape)
        inner = tuple(slice(p, p + n) for p, n in zip(padding, x.shape[2:], strict=True))
        return np.ascontiguousarray(grad[(slice(None), slice(None), *inner)])

    def avg_pool_nd_forward(
        self,
        x: np.ndarray,
        window: tuple[int, ...],
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> tuple[np.ndarray, tuple[list[np.ndarray], np.ndarray, tuple[int, ...]]]:
        """``Z = (window sum) / count``; count = ones over the padded input (``count_include_pad``)
        or over the input only, summed over the window (the ceil-mode overhang never counts)."""
        ones_d = (1,) * len(window)
        positions, _, right = _pool_window_index(x.shape[2:], window, stride, padding, ones_d, ceil_mode)
        pads = tuple(zip(padding, right, strict=True))
        xp = np.pad(x, ((0, 0), (0, 0), *pads))
        mask = np.pad(np.ones(x.shape[2:], dtype=x.dtype), pads)
        if count_include_pad:
            span = tuple(slice(0, n + 2 * p) for n, p in zip(x.shape[2:], padding, strict=True))
            mask[span] = 1
        count = _gather_windows(mask[None, None], positions).sum(axis=-1)[0, 0]
        z = _gather_windows(xp, positions).sum(axis=-1) / count
        return z, (positions, count, xp.shape)

    def avg_pool_nd_backward(
        self,
        delta: np.ndarray,
        x: np.ndarray,
        padding: tuple[int, ...],
        cache: tuple[list[np.ndarray], np.ndarray, tuple[int, ...]],
    ) -> np.ndarray:
        """Spread: every window adds delta / count to each of its elements; padding is dropped."""
        positions, count, padded_shape = cache
        idx = np.arange(int(np.prod(padded_shape))).reshape(padded_shape)
        where = _gather_windows(idx, positions)
        share = np.broadcast_to((delta / count)[..., None], where.shape)
        grad = np.zeros(idx.size, dtype=delta.dtype)
        np.add.at(grad, where.reshape(-1), share.reshape(-1))
        inner = tuple(slice(p, p + n) for p, n in zip(padding, x.shape[2:], strict=True))
        return np.ascontiguousarray(grad.reshape(padded_shape)[(slice(None), slice(None), *inner)])

    def global_avg_pool_forward(self, x: np.ndarray) -> np.ndarray:
        """``Z[n, c] = mean over every spatial position``."""
        return np.asarray(x.reshape(x.shape[0], x.shape[1], -1).mean(axis=-1))

    def global_avg_pool_backward(self, delta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Spread over the whole map: dJ/dx[n, c, p] = delta[n, c] / prod(S)."""
        count = int(np.prod(x.shape[2:]))
        return np.ascontiguousarray(
            np.broadcast_to((delta / count).reshape(delta.shape + (1,) * (x.ndim - 2)), x.shape)
        )


def _sum_to_shape(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` over the axes along which an operand of ``shape`` was broadcast."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(extra))) if extra > 0 else grad
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=axes, keepdims=True) if axes else grad


# --------------------------------------------------------------------------------------
# The ops namespace: glue between the rules and the tape
# --------------------------------------------------------------------------------------


class TapeOps:
    """The ``ops`` namespace of :mod:`gradoracle.ops`, recording onto the tape via ``rules``.

    An op is recorded (parents and backward closure kept) only when one of its inputs
    requires a gradient; otherwise it returns a constant tensor.
    """

    def __init__(self, rules: Rules) -> None:
        self.rules = rules

    # ---- plumbing --------------------------------------------------------------------

    @staticmethod
    def lift(x: Any, like: Tensor | None = None) -> Tensor:
        """``x`` as a tensor; a non-tensor becomes a constant in ``like``'s dtype."""
        if isinstance(x, Tensor):
            return x
        dtype = like.dtype if like is not None else None
        return Tensor(np.asarray(x, dtype=dtype))

    @staticmethod
    def _record(op: str, value: np.ndarray, parents: tuple[Tensor, ...], backward: BackwardFn) -> Tensor:
        if any(p.requires_grad for p in parents):
            return Tensor(value, parents, backward, op, requires_grad=True)
        return Tensor(value, op=op)

    def _binary(self, a: Any, b: Any) -> tuple[Tensor, Tensor]:
        ta = a if isinstance(a, Tensor) else None
        tb = b if isinstance(b, Tensor) else None
        return self.lift(a, tb), self.lift(b, ta)

    def _elementwise(self, name: str, x: Any) -> Tensor:
        """``z = f(x)`` with backward ``delta * f'(x)`` from ``rules.<name>_backward``."""
        t = self.lift(x)
        forward = getattr(self.rules, f"{name}_forward")
        backward = getattr(self.rules, f"{name}_backward")
        z = forward(t.value)
        return self._record(name, z, (t,), lambda d: (backward(d, t.value, z),))

    # ---- linear ----------------------------------------------------------------------

    def matmul(self, a: Any, b: Any) -> Tensor:
        """``a @ b``; backward: outer products and transposes."""
        ta, tb = self._binary(a, b)
        z = self.rules.matmul_forward(ta.value, tb.value)
        return self._record(
            "matmul", z, (ta, tb), lambda d: self.rules.matmul_backward(d, ta.value, tb.value)
        )

    def add(self, a: Any, b: Any) -> Tensor:
        """``a + b``; backward: pass-through."""
        ta, tb = self._binary(a, b)
        z = self.rules.add_forward(ta.value, tb.value)
        return self._record("add", z, (ta, tb), lambda d: self.rules.add_backward(d, ta.value, tb.value))

    # ---- elementwise -----------------------------------------------------------------

    def relu(self, x: Any) -> Tensor:
        """``max(0, x)``."""
        return self._elementwise("relu", x)

    def leaky_relu(self, x: Any) -> Tensor:
        """``x if x > 0 else 0.01 x``."""
        return self._elementwise("leaky_relu", x)

    def sigmoid(self, x: Any) -> Tensor:
        """``1 / (1 + exp(-x))``."""
        return self._elementwise("sigmoid", x)

    def tanh(self, x: Any) -> Tensor:
        """``tanh(x)``."""
        return self._elementwise("tanh", x)

    def exp(self, x: Any) -> Tensor:
        """``exp(x)``."""
        return self._elementwise("exp", x)

    def log(self, x: Any) -> Tensor:
        """``log(x)``."""
        return self._elementwise("log", x)

    def softplus(self, x: Any) -> Tensor:
        """``log(1 + exp(x))``."""
        return self._elementwise("softplus", x)

    def sin(self, x: Any) -> Tensor:
        """``sin(x)``."""
        return self._elementwise("sin", x)

    def square(self, x: Any) -> Tensor:
        """``x * x``."""
        return self._elementwise("square", x)

    def abs(self, x: Any) -> Tensor:
        """``|x|``."""
        return self._elementwise("abs", x)

    def elu(self, x: Any) -> Tensor:
        """``x if x > 0 else exp(x) - 1``."""
        return self._elementwise("elu", x)

    def silu(self, x: Any) -> Tensor:
        """``x * sigmoid(x)``."""
        return self._elementwise("silu", x)

    def gelu(self, x: Any) -> Tensor:
        """``x * Phi(x)``."""
        return self._elementwise("gelu", x)

    def maximum_zero(self, x: Any) -> Tensor:
        """``maximum(x, 0)``."""
        return self._elementwise("maximum_zero", x)

    def clamp_min_zero(self, x: Any) -> Tensor:
        """``clamp(x, min=0)``."""
        return self._elementwise("clamp_min_zero", x)

    # ---- kinks (#13) -----------------------------------------------------------------

    def maximum(self, a: Any, b: Any) -> Tensor:
        """``max(a, b)``; backward: delta to the larger argument, split at a tie."""
        ta, tb = self._binary(a, b)
        z = self.rules.maximum_forward(ta.value, tb.value)
        return self._record(
            "maximum", z, (ta, tb), lambda d: self.rules.maximum_backward(d, ta.value, tb.value)
        )

    def clamp(self, x: Any, lo: float, hi: float) -> Tensor:
        """``min(max(x, lo), hi)``; backward: delta where ``lo <= x <= hi``."""
        t = self.lift(x)
        lo, hi = float(lo), float(hi)
        z = self.rules.clamp_forward(t.value, lo, hi)
        return self._record("clamp", z, (t,), lambda d: (self.rules.clamp_backward(d, t.value, lo, hi),))

    # ---- losses and reductions -------------------------------------------------------

    def softmax_cross_entropy(self, logits: Any, target: Any) -> Tensor:
        """``-sum_k y_k log softmax(z)_k``; backward: ``(yhat - y) * delta``."""
        tz, ty = self._binary(logits, target)
        loss, cache = self.rules.softmax_cross_entropy_forward(tz.value, ty.value)
        return self._record(
            "softmax_cross_entropy",
            loss,
            (tz, ty),
            lambda d: self.rules.softmax_cross_entropy_backward(d, tz.value, ty.value, cache),
        )

    def sum(self, x: Any) -> Tensor:
        """Sum of all elements (0-D); backward: broadcast."""
        t = self.lift(x)
        z = self.rules.sum_forward(t.value)
        return self._record("sum", z, (t,), lambda d: (self.rules.sum_backward(d, t.value),))

    # ---- convolution and pooling -----------------------------------------------------

    def conv2d(self, x: Any, k: Any) -> Tensor:
        """Valid cross-correlation; backward: ``delta * rot180(K)`` and ``X * delta``."""
        tx, tk = self._binary(x, k)
        z = self.rules.conv2d_forward(tx.value, tk.value)
        return self._record(
            "conv2d", z, (tx, tk), lambda d: self.rules.conv2d_backward(d, tx.value, tk.value)
        )

    def max_pool2d(self, x: Any, k: int, stride: int | None = None) -> Tensor:
        """k x k max pool (floor mode); backward: the argmax router."""
        t = self.lift(x)
        s = _check_pool_args(t.value, k, stride)
        z, argmax = self.rules.max_pool2d_forward(t.value, k, s)
        return self._record(
            "max_pool2d",
            z,
            (t,),
            lambda d: (self.rules.max_pool2d_backward(d, t.value, k, s, argmax),),
        )

    def avg_pool2d(self, x: Any, k: int, stride: int | None = None) -> Tensor:
        """k x k average pool (floor mode); backward: delta / k^2 spread over the window."""
        t = self.lift(x)
        s = _check_pool_args(t.value, k, stride)
        z = self.rules.avg_pool2d_forward(t.value, k, s)
        return self._record(
            "avg_pool2d", z, (t,), lambda d: (self.rules.avg_pool2d_backward(d, t.value, k, s),)
        )

    # ---- layers as frameworks ship them (gradoracle.ops.LAYER_OPS) ----------------------

    def _layer(self, op: str, parents: Sequence[Any], value: np.ndarray, backward: BackwardFn) -> Tensor:
        return self._record(op, value, tuple(parents), backward)

    def _with_bias(self, parents: list[Tensor], b: Any) -> tuple[list[Tensor], np.ndarray | None]:
        """A layer's parents with its bias ``b`` lifted and appended, and the bias's value; b None
        (a layer without bias): the parents as given and None."""
        if b is None:
            return parents, None
        tb = self.lift(b, parents[0])
        return [*parents, tb], tb.value

    def _affine(self, op: str, x: Any, w: Any, b: Any) -> Tensor:
        """``linear`` or ``dense`` through ``rules.<op>_forward`` / ``_backward``; b None: no bias
        term and no bias gradient (a layer without bias)."""
        tx, tw = self._binary(x, w)
        parents, bias = self._with_bias([tx, tw], b)
        z = getattr(self.rules, f"{op}_forward")(tx.value, tw.value, bias)
        backward_rule = getattr(self.rules, f"{op}_backward")

        def backward(d: np.ndarray) -> Sequence[np.ndarray | None]:
            grads = backward_rule(d, tx.value, tw.value, bias)
            return grads if bias is not None else grads[:2]

        return self._layer(op, parents, z, backward)

    def linear(self, x: Any, w: Any, b: Any) -> Tensor:
        """``X W^T + b`` (b None: ``X W^T``); backward: identity 5 summed over the batch rows."""
        return self._affine("linear", x, w, b)

    def dense(self, x: Any, w: Any, b: Any) -> Tensor:
        """``X W + b`` (b None: ``X W``); backward: identity 6 summed over the batch rows."""
        return self._affine("dense", x, w, b)

    def cross_entropy(
        self, logits: Any, target: Any, reduction: str = "mean", label_smoothing: float = 0.0
    ) -> Tensor:
        """Batched softmax cross-entropy (PyTorch's ``F.cross_entropy``)."""
        tz, ty = self._binary(logits, target)
        loss, cache = self.rules.cross_entropy_forward(tz.value, ty.value, reduction, float(label_smoothing))
        return self._layer(
            "cross_entropy",
            (tz, ty),
            loss,
            lambda d: self.rules.cross_entropy_backward(d, tz.value, ty.value, float(label_smoothing), cache),
        )

    def conv_nd(
        self,
        x: Any,
        k: Any,
        b: Any,
        stride: tuple[int, ...],
        padding: tuple[int, ...] | str,
        dilation: tuple[int, ...],
        groups: int,
    ) -> Tensor:
        """n-d grouped convolution; backward: transposed convolution, correlation with delta, sum."""
        tx, tk = self._binary(x, k)
        if tx.ndim < 3 or tk.ndim != tx.ndim:
            raise ValueError(
                f"conv_nd expects x (N, C, *S) and k (O, C/groups, *K); got {tx.shape}, {tk.shape}"
            )
        rank = tx.ndim - 2
        st, dil = _per_axis(stride, rank, "stride"), _per_axis(dilation, rank, "dilation")
        groups = int(groups)
        if tx.shape[1] != tk.shape[1] * groups or tk.shape[0] % groups:
            raise ValueError(
                f"conv_nd: {tx.shape[1]} input channels, kernel {tk.shape}, groups {groups} do not fit"
            )
        if isinstance(padding, str):
            if padding != "same":
                raise ValueError(f"conv_nd padding {padding!r}: use 'same' or one int per axis")
            total = [d * (m - 1) for d, m in zip(dil, tk.shape[2:], strict=True)]
            pads = tuple((t // 2, t - t // 2) for t in total)
        else:
            pads = tuple((p, p) for p in _per_axis(padding, rank, "padding"))
        parents, bias = self._with_bias([tx, tk], b)
        z = self.rules.conv_nd_forward(tx.value, tk.value, bias, st, pads, dil, groups)

        def backward(d: np.ndarray) -> Sequence[np.ndarray | None]:
            grads = self.rules.conv_nd_backward(d, tx.value, tk.value, st, pads, dil, groups)
            return grads if bias is not None else grads[:2]

        return self._layer("conv_nd", parents, z, backward)

    def max_pool_nd(
        self,
        x: Any,
        window: tuple[int, ...],
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        dilation: tuple[int, ...],
        ceil_mode: bool,
    ) -> Tensor:
        """n-d max pool; backward: the argmax router (overlapping windows accumulate)."""
        t = self.lift(x)
        rank = t.ndim - 2
        w, st = _per_axis(window, rank, "window"), _per_axis(stride, rank, "stride")
        p, dil = _per_axis(padding, rank, "padding"), _per_axis(dilation, rank, "dilation")
        z, cache = self.rules.max_pool_nd_forward(t.value, w, st, p, dil, bool(ceil_mode))
        return self._layer(
            "max_pool_nd", (t,), z, lambda d: (self.rules.max_pool_nd_backward(d, t.value, p, cache),)
        )

    def avg_pool_nd(
        self,
        x: Any,
        window: tuple[int, ...],
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> Tensor:
        """n-d average pool; backward: delta / count spread over each window."""
        t = self.lift(x)
        rank = t.ndim - 2
        w, st, p = (
            _per_axis(v, rank, n) for v, n in ((window, "window"), (stride, "stride"), (padding, "padding"))
        )
        z, cache = self.rules.avg_pool_nd_forward(t.value, w, st, p, bool(ceil_mode), bool(count_include_pad))
        return self._layer(
            "avg_pool_nd", (t,), z, lambda d: (self.rules.avg_pool_nd_backward(d, t.value, p, cache),)
        )

    def global_avg_pool(self, x: Any) -> Tensor:
        """Mean over every spatial axis; backward: delta / prod(S) everywhere."""
        t = self.lift(x)
        z = self.rules.global_avg_pool_forward(t.value)
        return self._layer(
            "global_avg_pool", (t,), z, lambda d: (self.rules.global_avg_pool_backward(d, t.value),)
        )


# --------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------


class NumpyEngineAdapter(AdapterBase):
    """The in-house NumPy backprop engine as a gradoracle adapter.

    ``NumpyEngineAdapter(rules=MyRules(), name="numpy-mutant-x")`` runs the same tape
    with other rules (see the module docstring).
    """

    dtypes: tuple[str, ...] = SUPPORTED_DTYPES
    has_jvp: bool = False

    def __init__(self, rules: Rules | None = None, name: str = "numpy") -> None:
        self.rules: Rules = rules if rules is not None else Rules()
        self.name = name
        self._ops = TapeOps(self.rules)

    def available(self) -> tuple[bool, str]:
        """Always available: the engine needs only NumPy."""
        return True, ""

    def supported_ops(self) -> frozenset[str]:
        """Every op of :data:`gradoracle.ops.ALL_OPS`."""
        return frozenset(ALL_OPS)

    @property
    def ops(self) -> TapeOps:
        """The tape ops namespace."""
        return self._ops

    def _dtype(self, dtype: str) -> np.dtype[Any]:
        if dtype not in self.dtypes:
            raise ValueError(f"adapter {self.name!r} supports dtypes {self.dtypes}, not {dtype!r}")
        return np.dtype(dtype)

    def from_numpy(self, a: np.ndarray, dtype: str) -> Tensor:
        """A constant leaf holding a copy of ``a`` in ``dtype``."""
        return Tensor(np.array(a, dtype=self._dtype(dtype)))

    def to_numpy(self, t: Any) -> np.ndarray:
        """The value of a tensor (or array-like) as a fresh NumPy array."""
        value = t.value if isinstance(t, Tensor) else t
        return np.array(value)

    def forward(self, fn: ForwardFn, inputs: Mapping[str, np.ndarray], dtype: str) -> np.ndarray:
        """``fn(ops, inputs)`` with nothing recorded on the tape."""
        args = {name: self.from_numpy(value, dtype) for name, value in inputs.items()}
        return self.to_numpy(fn(self.ops, args))

    def vjp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangent: np.ndarray,
        dtype: str,
    ) -> VJPResult:
        """The output of ``fn`` and ``u^T J`` for each input in ``wrt`` (``u = cotangent``).

        Inputs outside ``wrt`` are constants.  An input the output does not depend on
        gets a zero gradient; if ``fn`` returns an input unchanged its gradient is ``u``.
        """
        dt = self._dtype(dtype)
        unknown = [name for name in wrt if name not in inputs]
        if unknown:
            raise KeyError(f"wrt names {unknown} are not inputs (inputs: {sorted(inputs)})")
        wanted = set(wrt)
        leaves = {
            name: Tensor(np.array(value, dtype=dt), op=f"input:{name}", requires_grad=name in wanted)
            for name, value in inputs.items()
        }
        output = self.ops.lift(fn(self.ops, leaves))
        u = np.asarray(cotangent, dtype=dt)
        if u.shape != output.value.shape:
            raise ValueError(f"cotangent shape {u.shape} differs from the output shape {output.value.shape}")
        node_grads = backprop(output, u)
        # No cast: a rule that leaves the input dtype shows up in the result.
        grads = {
            name: np.array(node_grads.get(id(leaves[name]), np.zeros_like(leaves[name].value)))
            for name in wrt
        }
        return VJPResult(output=np.array(output.value), grads=grads)
