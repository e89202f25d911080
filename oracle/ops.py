"""The ops namespace every identity's forward is written against.

An identity's forward is written once, as ``forward(ops, inputs, params)``, and every
adapter supplies an ``ops`` object implementing the methods below with its own framework
(PyTorch functions, ``jax.numpy``/``lax``, the NumPy tape, or plain NumPy for the oracle's
reference forward).  All array arguments are the framework's own array type; every
method returns one.  Shapes are those of the notes: vectors are 1-D, matrices and
feature maps 2-D, losses 0-D scalars.

Semantics (exact, so that every framework computes the same function):

==================== ================================================================
op                   meaning
==================== ================================================================
matmul(a, b)         ``a @ b`` for (n,m)@(m,), (n,)@(n,m) and (n,m)@(m,p)
add(a, b)            elementwise ``a + b`` (same shapes; the bias add)
relu(x)              ``max(0, x)``
leaky_relu(x)        ``x if x > 0 else 0.01 * x``  (negative slope 0.01)
sigmoid(x)           ``1 / (1 + exp(-x))``
tanh(x)              ``tanh(x)``
exp(x), log(x)       natural exponential and logarithm
softplus(x)          ``log(1 + exp(x))``
sin(x)               ``sin(x)``
square(x)            ``x * x``
abs(x)               ``|x|``
elu(x)               ``x if x > 0 else exp(x) - 1``  (alpha 1)
silu(x)              ``x * sigmoid(x)``
gelu(x)              ``x * Phi(x) = x/2 * (1 + erf(x / sqrt 2))``  (exact erf form)
softmax_cross_entropy(z, y)
                     ``-sum_k y_k log softmax(z)_k`` for 1-D logits ``z`` and a
                     probability vector ``y`` (one-hot or soft), computed stably
conv2d(x, k)         valid 2-D cross-correlation:
                     ``Z[u,v] = sum_{a,b} X[u+a, v+b] K[a,b]``, shape (H-kh+1, W-kw+1)
max_pool2d(x, k, s)  max over k x k windows with stride ``s`` (default ``k``), floor mode
avg_pool2d(x, k, s)  mean over k x k windows with stride ``s`` (default ``k``), floor mode
sum(x)               sum of all elements, a 0-D scalar
maximum_zero(x)      ``maximum(x, 0)`` spelled the framework's way (convention probes)
clamp_min_zero(x)    ``clamp(x, min=0)`` spelled the framework's way (convention probes)
-- kinks (#13) ------ ----------------------------------------------------------------
maximum(a, b)        elementwise ``max(a, b)`` of two arrays of one shape (the framework's
                     own two-argument maximum); generalised gradient at a tie ``a = b``:
                     ``{(t, 1 - t): t in [0, 1]}``
clamp(x, lo, hi)     ``min(max(x, lo), hi)`` for Python floats ``lo < hi``; generalised
                     gradient at ``x = lo`` and at ``x = hi``: ``[0, 1]``
==================== ================================================================

The layers as frameworks ship them (batches, channels, strides, padding, dilation,
groups; :data:`LAYER_OPS`).  Hyper-parameters are Python ints, tuples of ints (one per
spatial axis), strings and bools; feature maps are channels-first ``(N, C, *spatial)``
with 1, 2 or 3 spatial axes.  The semantics are PyTorch's (``F.linear``,
``F.cross_entropy``, ``F.conv{1,2,3}d``, ``F.max_pool{1,2,3}d``, ``F.avg_pool{1,2,3}d``);
an adapter whose framework lacks a knob (JAX has no ``ceil_mode``) spells it with explicit
padding, and the convention probes report what the framework's own spelling does.

======================================= ===================================================
op                                      meaning
======================================= ===================================================
linear(x, w, b)                         ``x @ w^T + b``: x (..., in), w (out, in), b (out,)
                                        or None (no bias: ``x @ w^T``, ``bias=False``)
                                        (PyTorch's layout, ``F.linear``)
dense(x, w, b)                          ``x @ w + b``: x (..., in), w (in, out), b (out,)
                                        or None (no bias: ``x @ w``, ``use_bias=False``)
                                        (JAX/Flax's layout, ``nn.Dense``)
cross_entropy(z, t, reduction,          ``l_n = -sum_c t~_nc log softmax(z_n)_c`` over logits
label_smoothing)                        z (N, C); t is (N,) class indices (exact integers
                                        stored as floats) or (N, C) class probabilities;
                                        ``t~ = (1 - eps) t + eps / C`` (indices one-hot
                                        first); ``reduction`` "mean" (``sum_n l_n / N``)
                                        or "sum"
conv_nd(x, k, b, stride, padding,       ``Z[n,o,p] = b[o] + sum_{c,a} Xpad[n, g Cg + c,
dilation, groups)                       p s + a d] K[o,c,a]`` (cross-correlation), x (N,
                                        C_in, *S), k (C_out, C_in/groups, *k), b (C_out,)
                                        or None, o in group g = o // (C_out/groups);
                                        ``padding`` a tuple (zeros on both sides) or "same"
                                        (stride 1; total d (k-1), ``total // 2`` before);
                                        output ``floor((S + 2p - d(k-1) - 1)/s) + 1``
max_pool_nd(x, window, stride,          max over windows ``p s - pad + a d`` (a < window),
padding, dilation, ceil_mode)           padding -inf; output ``floor`` (``ceil`` in
                                        ceil mode, dropping a last window that would start
                                        in the right padding) of ``(S + 2 pad - d(w-1) -
                                        1)/s`` plus 1
avg_pool_nd(x, window, stride,          sum over windows ``p s - pad + a`` divided by the
padding, ceil_mode, count_include_pad)  window clipped to the padded input (``[-pad, S +
                                        pad)``) when ``count_include_pad``, else by the
                                        count of its input elements (PyTorch's divisors)
global_avg_pool(x)                      mean over every spatial axis: (N, C, *S) -> (N, C)
======================================= ===================================================
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

#: Ops added for the kink probes (#13), kept in one block: two-argument maximum and clamp.
KINK_OPS: tuple[str, ...] = ("maximum", "clamp")

#: The ops of the notes' textbook identities.
NOTES_OPS: tuple[str, ...] = (
    "matmul",
    "add",
    "relu",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "exp",
    "log",
    "softplus",
    "sin",
    "square",
    "abs",
    "elu",
    "silu",
    "gelu",
    "softmax_cross_entropy",
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "sum",
    "maximum_zero",
    "clamp_min_zero",
)

# ---------------------------------------------------------------- layers as frameworks ship them

#: The layer ops (batches, channels, strides, padding, dilation, groups).
LAYER_OPS: tuple[str, ...] = (
    "linear",
    "dense",
    "cross_entropy",
    "conv_nd",
    "max_pool_nd",
    "avg_pool_nd",
    "global_avg_pool",
)

#: Every op name an ops namespace may implement; identities declare which they use.
ALL_OPS: tuple[str, ...] = NOTES_OPS + KINK_OPS + LAYER_OPS

#: The elementwise functions of notes identity 4.
ELEMENTWISE_OPS: tuple[str, ...] = (
    "relu",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "exp",
    "log",
    "softplus",
    "sin",
    "square",
    "abs",
    "elu",
    "silu",
    "gelu",
)

LEAKY_RELU_SLOPE = 0.01
ELU_ALPHA = 1.0


@runtime_checkable
class Ops(Protocol):
    """The namespace an identity's forward calls (see the module docstring for semantics)."""

    def matmul(self, a: Any, b: Any) -> Any: ...
    def add(self, a: Any, b: Any) -> Any: ...
    def relu(self, x: Any) -> Any: ...
    def leaky_relu(self, x: Any) -> Any: ...
    def sigmoid(self, x: Any) -> Any: ...
    def tanh(self, x: Any) -> Any: ...
    def exp(self, x: Any) -> Any: ...
    def log(self, x: Any) -> Any: ...
    def softplus(self, x: Any) -> Any: ...
    def sin(self, x: Any) -> Any: ...
    def square(self, x: Any) -> Any: ...
    def abs(self, x: Any) -> Any: ...
    def elu(self, x: Any) -> Any: ...
    def silu(self, x: Any) -> Any: ...
    def gelu(self, x: Any) -> Any: ...
    def softmax_cross_entropy(self, logits: Any, target: Any) -> Any: ...
    def conv2d(self, x: Any, k: Any) -> Any: ...
    def max_pool2d(self, x: Any, k: int, stride: int | None = None) -> Any: ...
    def avg_pool2d(self, x: Any, k: int, stride: int | None = None) -> Any: ...
    def sum(self, x: Any) -> Any: ...
    def maximum_zero(self, x: Any) -> Any: ...
    def clamp_min_zero(self, x: Any) -> Any: ...
    # ---- layers as frameworks ship them (LAYER_OPS)
    def linear(self, x: Any, w: Any, b: Any) -> Any: ...
    def dense(self, x: Any, w: Any, b: Any) -> Any: ...
    def cross_entropy(self, logits: Any, target: Any, reduction: str, label_smoothing: float) -> Any: ...
    def conv_nd(
        self,
        x: Any,
        k: Any,
        b: Any,
        stride: tuple[int, ...],
        padding: tuple[int, ...] | str,
        dilation: tuple[int, ...],
        groups: int,
    ) -> Any: ...
    def max_pool_nd(
        self,
        x: Any,
        window: tuple[int, ...],
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        dilation: tuple[int, ...],
        ceil_mode: bool,
    ) -> Any: ...
    def avg_pool_nd(
        self,
        x: Any,
        window: tuple[int, ...],
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> Any: ...
    def global_avg_pool(self, x: Any) -> Any: ...
    # ---- kinks (#13)
    def maximum(self, a: Any, b: Any) -> Any: ...
    def clamp(self, x: Any, lo: float, hi: float) -> Any: ...
