"""PyTorch and JAX mutants: one op of the real adapter swapped for a wrong backward.

A PyTorch mutant wraps one op in a ``torch.autograd.Function``, a JAX mutant in a
``jax.custom_vjp``.  torch and jax are imported only inside the factories, so importing this
module stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
    from torch.nn import grad as nn_grad

    from gradoracle.adapters.torch_adapter import TorchOps

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
    """A :class:`JaxAdapter` whose ops namespace is ``ops_factory()``, with the default jit
    policy, as a user's JAX-derived adapter runs (compiled functions are per adapter, so
    a mutant never reuses the correct adapter's compiled vjp nor leaves its own behind).
    """
    from functools import cached_property

    from gradoracle.adapters.jax_adapter import JaxAdapter

    class MutantJaxAdapter(JaxAdapter):
        @cached_property
        def ops(self) -> Any:
            return ops_factory()

    adapter = MutantJaxAdapter()
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
    from jax import lax

    from gradoracle.adapters.jax_adapter import JaxOps

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
# Forward-mode and second-order mutants (issue 15): one rule wrong, the others right
# ======================================================================================


def _torch_sigmoid_jvp_missing_one_minus(name: str) -> Any:
    """Forward mode ``J v = sigma(x) v`` (the ``(1 - sigma)`` dropped); reverse mode right."""
    import torch

    from gradoracle.adapters.torch_adapter import TorchOps

    class SigmoidJvpWrong(torch.autograd.Function):
        @staticmethod
        def forward(x: Any) -> Any:
            return torch.sigmoid(x)

        @staticmethod
        def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
            ctx.save_for_backward(output)
            ctx.save_for_forward(output)

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            (s,) = ctx.saved_tensors
            return g * s * (1 - s)

        @staticmethod
        def jvp(ctx: Any, t: Any) -> Any:
            (s,) = ctx.saved_tensors
            return t * s

    class Ops(TorchOps):
        def sigmoid(self, x: Any) -> Any:
            return SigmoidJvpWrong.apply(x)

    return _torch_adapter(name, Ops)


def _torch_conv_jvp_rot180(name: str) -> Any:
    """Forward mode correlates the input's tangent with rot180(K); reverse mode right."""
    import torch
    import torch.nn.functional as F
    from torch.nn import grad as nn_grad

    from gradoracle.adapters.torch_adapter import TorchOps

    def conv(x: Any, k: Any) -> Any:
        return F.conv2d(x[None, None], k[None, None])[0, 0]

    class ConvJvpRot(torch.autograd.Function):
        @staticmethod
        def forward(x: Any, k: Any) -> Any:
            return conv(x, k)

        @staticmethod
        def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
            x, k = inputs
            ctx.save_for_backward(x, k)
            ctx.save_for_forward(x, k)

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            x, k = ctx.saved_tensors
            gx = nn_grad.conv2d_input((1, 1, *x.shape), k[None, None], g[None, None])[0, 0]
            gk = nn_grad.conv2d_weight(x[None, None], (1, 1, *k.shape), g[None, None])[0, 0]
            return gx, gk

        @staticmethod
        def jvp(ctx: Any, tx: Any, tk: Any) -> Any:
            x, k = ctx.saved_tensors
            out = torch.zeros_like(conv(x, k))
            if tx is not None:
                out = out + conv(tx, torch.flip(k, (0, 1)))
            if tk is not None:
                out = out + conv(x, tk)
            return out

    class Ops(TorchOps):
        def conv2d(self, x: Any, k: Any) -> Any:
            return ConvJvpRot.apply(x, k)

    return _torch_adapter(name, Ops)


def _torch_tanh_backward_wrong_jvp_right(name: str) -> Any:
    """Reverse mode ``u (1 - tanh)`` (the square dropped); forward mode right."""
    import torch

    from gradoracle.adapters.torch_adapter import TorchOps

    class TanhBackwardWrong(torch.autograd.Function):
        @staticmethod
        def forward(x: Any) -> Any:
            return torch.tanh(x)

        @staticmethod
        def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
            ctx.save_for_backward(output)
            ctx.save_for_forward(output)

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            (t,) = ctx.saved_tensors
            return g * (1 - t)

        @staticmethod
        def jvp(ctx: Any, v: Any) -> Any:
            (t,) = ctx.saved_tensors
            return v * (1 - t * t)

    class Ops(TorchOps):
        def tanh(self, x: Any) -> Any:
            return TanhBackwardWrong.apply(x)

    return _torch_adapter(name, Ops)


def _torch_relu_second_derivative_one(name: str) -> Any:
    """``relu(x) + (x - sg(x))^2 / 2``: value and first derivative right, ``f'' = 1`` instead of 0."""
    from gradoracle.adapters.torch_adapter import TorchOps

    class Ops(TorchOps):
        def relu(self, x: Any) -> Any:
            d = x - x.detach()
            return self._torch.relu(x) + 0.5 * d * d

    return _torch_adapter(name, Ops)


def _torch_softmax_ce_hessian_missing_outer(name: str) -> Any:
    """Cross-entropy whose gradient is right (``yhat - y``) but whose Hessian is ``diag(yhat)``:
    ``sum(y) (sum exp(z - sg(L)) - 1 + sg(L)) - y.z`` with ``L = logsumexp(z)`` (the
    ``- yhat yhat^T`` term of the double backward missing)."""
    from gradoracle.adapters.torch_adapter import TorchOps

    class Ops(TorchOps):
        def softmax_cross_entropy(self, logits: Any, target: Any) -> Any:
            torch = self._torch
            lse = torch.logsumexp(logits, 0).detach()
            return target.sum() * (torch.exp(logits - lse).sum() - 1 + lse) - (target * logits).sum()

    return _torch_adapter(name, Ops)


def _jax_relu_second_derivative_one(name: str) -> Any:
    """``relu(x) + (x - stop_gradient(x))^2 / 2``: ``f'' = 1`` instead of 0, first order right."""
    from gradoracle.adapters.jax_adapter import JaxOps

    class Ops(JaxOps):
        def relu(self, x: Any) -> Any:
            d = x - self._lax.stop_gradient(x)
            return self._jax.nn.relu(x) + 0.5 * d * d

    return _jax_adapter(name, Ops)


def _jax_softmax_ce_hessian_missing_outer(name: str) -> Any:
    """The JAX twin of :func:`_torch_softmax_ce_hessian_missing_outer`."""
    from gradoracle.adapters.jax_adapter import JaxOps

    class Ops(JaxOps):
        def softmax_cross_entropy(self, logits: Any, target: Any) -> Any:
            jnp = self._jnp
            lse = self._lax.stop_gradient(self._jax.nn.logsumexp(logits))
            return jnp.sum(target) * (jnp.sum(jnp.exp(logits - lse)) - 1 + lse) - jnp.sum(target * logits)

    return _jax_adapter(name, Ops)


# ======================================================================================
# Forward-mode and second-order mutants on the layer identities (issue 15, second round)
# ======================================================================================


def _torch_recomputed_backward(op: Callable[..., Any], tensors: Any, g: Any) -> Any:
    """The true reverse rule of ``op`` at ``tensors``: PyTorch's own, recomputed (first order)."""
    import torch

    with torch.enable_grad():
        xs = [t.detach().requires_grad_() for t in tensors]
        return torch.autograd.grad(op(*xs), xs, g)


def _torch_conv_layer_jvp_missing_bias_tangent(name: str) -> Any:
    """``F.conv{1,2,3}d`` whose forward-mode rule is ``conv(dX, K) + conv(X, dK)``: the bias
    tangent ``db`` is dropped; value and reverse mode right."""
    import torch

    from gradoracle.adapters.torch_adapter import TorchOps

    base = TorchOps()

    class ConvJvpNoBias(torch.autograd.Function):
        @staticmethod
        def forward(x: Any, k: Any, b: Any, geometry: Any) -> Any:
            return base.conv_nd(x, k, b, *geometry)

        @staticmethod
        def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
            x, k, b, geometry = inputs
            ctx.geometry = geometry
            ctx.save_for_backward(x, k, b)
            ctx.save_for_forward(x, k, b)

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            x, k, b = ctx.saved_tensors
            op = lambda x_, k_, b_: base.conv_nd(x_, k_, b_, *ctx.geometry)  # noqa: E731
            return (*_torch_recomputed_backward(op, (x, k, b), g), None)

        @staticmethod
        def jvp(ctx: Any, tx: Any, tk: Any, tb: Any, _: Any) -> Any:
            x, k, b = ctx.saved_tensors
            out = torch.zeros_like(base.conv_nd(x, k, b, *ctx.geometry))
            if tx is not None:
                out = out + base.conv_nd(tx, k, None, *ctx.geometry)
            if tk is not None:
                out = out + base.conv_nd(x, tk, None, *ctx.geometry)
            return out  # the bug: + tb (broadcast over batch and space) missing

    class Ops(TorchOps):
        def conv_nd(self, x: Any, k: Any, b: Any, *geometry: Any) -> Any:
            if b is None:
                return base.conv_nd(x, k, b, *geometry)
            return ConvJvpNoBias.apply(x, k, b, tuple(geometry))

    return _torch_adapter(name, Ops)


def _torch_max_pool_layer_jvp_routes_the_minimum(name: str) -> Any:
    """``F.max_pool{1,2,3}d`` whose forward-mode rule takes each window's tangent at its
    *minimum* instead of its maximum (the router pointed at the wrong element); value and
    reverse mode right."""
    import torch

    from gradoracle.adapters.torch_adapter import TorchOps

    base = TorchOps()

    def pool(x: Any, geometry: Any, indices: bool = False) -> Any:
        window, stride, padding, dilation, ceil_mode = geometry
        f = (base._F.max_pool1d, base._F.max_pool2d, base._F.max_pool3d)[x.ndim - 3]
        return f(x, window, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=indices)

    class MaxPoolJvpMin(torch.autograd.Function):
        @staticmethod
        def forward(x: Any, geometry: Any) -> Any:
            return pool(x, geometry)

        @staticmethod
        def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
            x, geometry = inputs
            ctx.geometry = geometry
            ctx.save_for_backward(x)
            ctx.save_for_forward(x)

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            (x,) = ctx.saved_tensors
            return (*_torch_recomputed_backward(lambda x_: pool(x_, ctx.geometry), (x,), g), None)

        @staticmethod
        def jvp(ctx: Any, tx: Any, _: Any) -> Any:
            (x,) = ctx.saved_tensors
            _, where = pool(-x, ctx.geometry, indices=True)  # the bug: argmin, not argmax
            return tx.flatten(2).gather(2, where.flatten(2)).reshape(where.shape)

    class Ops(TorchOps):
        def max_pool_nd(
            self, x: Any, window: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool
        ) -> Any:
            geometry = (tuple(window), tuple(stride), tuple(padding), tuple(dilation), bool(ceil_mode))
            return MaxPoolJvpMin.apply(x, geometry)

    return _torch_adapter(name, Ops)


def _torch_cross_entropy_hessian_missing_mean(name: str) -> Any:
    """``F.cross_entropy`` with ``reduction='mean'`` whose value and gradient are right but whose
    Hessian is the ``sum`` one (the ``1/N`` missing in the double backward): ``L + (N - 1) (L -
    L(sg z) - <g, z - sg z>)`` with ``g = (softmax(sg z) - t~) / N`` (zero value and gradient at
    the point, ``(N - 1)`` times L's Hessian)."""
    from gradoracle.adapters.torch_adapter import TorchOps

    class Ops(TorchOps):
        def cross_entropy(
            self, logits: Any, target: Any, reduction: str = "mean", label_smoothing: float = 0.0
        ) -> Any:
            loss = super().cross_entropy(logits, target, reduction, label_smoothing)
            n, classes = logits.shape[0], logits.shape[-1]
            if reduction != "mean" or n == 1:
                return loss
            torch, F = self._torch, self._F
            z0 = logits.detach()
            t = F.one_hot(target.long(), classes).to(logits.dtype) if target.ndim == 1 else target
            t = (1 - label_smoothing) * t + label_smoothing / classes
            g = (torch.softmax(z0, -1) * t.sum(-1, keepdim=True) - t) / n
            taylor = super().cross_entropy(z0, target, reduction, label_smoothing) + (g * (logits - z0)).sum()
            return loss + (n - 1) * (loss - taylor)

    return _torch_adapter(name, Ops)


def _jax_cross_entropy_hessian_missing_mean(name: str) -> Any:
    """The JAX twin of :func:`_torch_cross_entropy_hessian_missing_mean`."""
    from gradoracle.adapters.jax_adapter import JaxOps

    class Ops(JaxOps):
        def cross_entropy(
            self, logits: Any, target: Any, reduction: str = "mean", label_smoothing: float = 0.0
        ) -> Any:
            loss = super().cross_entropy(logits, target, reduction, label_smoothing)
            n, classes = logits.shape[0], logits.shape[-1]
            if reduction != "mean" or n == 1:
                return loss
            jax, jnp = self._jax, self._jnp
            z0 = self._lax.stop_gradient(logits)
            t = (
                jax.nn.one_hot(target.astype(jnp.int32), classes, dtype=logits.dtype)
                if target.ndim == 1
                else target
            )
            t = (1 - label_smoothing) * t + label_smoothing / classes
            g = (jax.nn.softmax(z0, axis=-1) * t.sum(-1, keepdims=True) - t) / n
            taylor = super().cross_entropy(z0, target, reduction, label_smoothing) + jnp.sum(
                g * (logits - z0)
            )
            return loss + (n - 1) * (loss - taylor)

    return _jax_adapter(name, Ops)
