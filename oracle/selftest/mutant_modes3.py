"""Forward-mode and second-order mutants of the modes audit ("modes3"): framework bugs that
live in ``J v`` or ``H v`` only, as a framework team's real bugs look.

Three kinds:

- an op whose ``torch.autograd.Function`` forward and backward are right and whose ``jvp``
  staticmethod is wrong (or a JAX ``custom_jvp`` whose rule is wrong);
- an op whose value and gradient are right and whose second derivative is not: a backward
  written with a detached factor (PyTorch then differentiates it as a constant), a ``custom_jvp``
  rule with ``stop_gradient`` in it, or ``f(x) + <d, A d> / 2`` with ``d = x - sg(x)`` (value and
  gradient unchanged, Hessian ``+ A``);
- an adapter whose ``jvp``/``hvp`` plumbing is wrong (a tangent dropped, the batched call
  misaligned, a float32-only path).

Every factory takes the adapter name and returns an adapter; torch and jax are imported only
inside the factories.  :data:`MUTANTS` lists them with their target identity, dtype, mode and
the fault the oracle must report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradoracle.results import Fault
from gradoracle.selftest.mutant_frameworks import _bind, _jax_adapter, _torch_adapter, _torch_grads

# ======================================================================================
# PyTorch: an op as an autograd.Function with the framework's backward and a given jvp
# ======================================================================================

#: ``jvp(call, primals, tangents, params) -> J v``: primals and tangents by argument name
#: (a tangent is a zero tensor where the caller gave none).
JvpRule = Callable[[Callable[..., Any], dict[str, Any], dict[str, Any], dict[str, Any]], Any]


def _torch_jvp_op(op: str, arrays: tuple[str, ...], rule: JvpRule) -> type:
    """A ``TorchOps`` subclass whose ``op`` is the real op forward, the framework's own backward,
    and ``rule`` as its forward-mode rule (``autograd.Function.jvp``)."""
    import torch

    from gradoracle.adapters.torch_adapter import TorchOps

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        correct = getattr(TorchOps, op).__get__(self)
        named = _bind(correct, args, kwargs)
        present = [a for a in arrays if isinstance(named[a], torch.Tensor)]
        params = {k: v for k, v in named.items() if k not in present}

        def call(*ts: Any) -> Any:
            return correct(**params, **dict(zip(present, ts, strict=True)))

        class Wrapped(torch.autograd.Function):
            @staticmethod
            def forward(*ts: Any) -> Any:
                return call(*ts)

            @staticmethod
            def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
                ctx.save_for_backward(*inputs)
                ctx.save_for_forward(*inputs)

            @staticmethod
            def backward(ctx: Any, g: Any) -> Any:
                return tuple(_torch_grads(call, list(ctx.saved_tensors), g))

            @staticmethod
            def jvp(ctx: Any, *tangents: Any) -> Any:
                primals = dict(zip(present, ctx.saved_tensors, strict=True))
                tans = {
                    n: torch.zeros_like(primals[n]) if t is None else t
                    for n, t in zip(present, tangents, strict=True)
                }
                return rule(call, primals, tans, params)

        return Wrapped.apply(*(named[a] for a in present))

    return type(f"Torch_{op}_JvpMutant", (TorchOps,), {op: method})


def _torch_jvp_mutant(op: str, arrays: tuple[str, ...], rule: JvpRule) -> Callable[[str], Any]:
    def factory(name: str) -> Any:
        return _torch_adapter(name, _torch_jvp_op(op, arrays, rule))

    return factory


def _sig(x: Any) -> Any:
    import torch

    return torch.sigmoid(x)


# ---- the layers -------------------------------------------------------------------------


def _linear_bias_only(call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]) -> Any:
    """``J v = db`` (broadcast): the dX W^T and X dW^T terms dropped."""
    out = call(*p.values())
    return t["b"].expand_as(out) if "b" in t else out * 0


def _dense_no_dw(call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]) -> Any:
    """``J v = dX W + db``: the X dW term dropped (the weight held constant)."""
    jv = t["x"] @ p["w"]
    return jv + t["b"] if "b" in t else jv


def _conv_call(p: dict[str, Any], x: Any, k: Any, groups: int | None = None) -> Any:
    import warnings

    import torch.nn.functional as F

    conv = (F.conv1d, F.conv2d, F.conv3d)[x.ndim - 3]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*padding='same'.*", category=UserWarning)
        return conv(
            x,
            k,
            None,
            stride=tuple(p["stride"]),
            padding=p["padding"],
            dilation=tuple(p["dilation"]),
            groups=int(p["groups"]) if groups is None else groups,
        )


def _bias_tangent(t: dict[str, Any], out: Any) -> Any:
    if "b" not in t:
        return 0
    return t["b"].reshape(1, -1, *([1] * (out.ndim - 2)))


def _conv_groups_crossed(call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]) -> Any:
    """``J v = conv(dX, K') + conv(X, dK) + db`` where group ``g`` of ``K'`` is group ``G-1-g`` of ``K``
    (the dX term's filters split into groups in the wrong order)."""
    groups = int(params["groups"])
    k = p["k"]
    blocks = k.reshape(groups, k.shape[0] // groups, *k.shape[1:]).flip(0).reshape(k.shape)
    out = _conv_call(params, t["x"], blocks) + _conv_call(params, p["x"], t["k"])
    return out + _bias_tangent(t, out)


def _conv_kernel_tangent_flipped(
    call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]
) -> Any:
    """``J v = conv(dX, K) + conv(X, flip(dK)) + db``: the kernel tangent's taps reversed."""
    spatial = tuple(range(2, t["k"].ndim))
    out = _conv_call(params, t["x"], p["k"]) + _conv_call(params, p["x"], t["k"].flip(spatial))
    return out + _bias_tangent(t, out)


def _avg_pool_call(x: Any, params: dict[str, Any], **over: Any) -> Any:
    import torch.nn.functional as F

    kw = {
        "kernel_size": tuple(params["window"]),
        "stride": tuple(params["stride"]),
        "padding": tuple(params["padding"]),
        "ceil_mode": params["ceil_mode"],
        "count_include_pad": params["count_include_pad"],
    }
    kw.update(over)
    if x.ndim == 3:  # avg_pool1d has no divisor_override: a 2-D pool over a unit axis
        kw = {k: (*v, 1) if k in ("kernel_size", "stride") else v for k, v in kw.items()}
        kw["padding"] = (*kw["padding"], 0)
        return F.avg_pool2d(x[..., None], **kw)[..., 0]
    return (F.avg_pool2d, F.avg_pool3d)[x.ndim - 4](x, **kw)


def _avg_pool_ignores_count_include_pad(
    call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]
) -> Any:
    """``J v = AvgPool(dX)`` with count_include_pad left at its default (True)."""
    return _avg_pool_call(t["x"], params, count_include_pad=True)


def _avg_pool_full_window_divisor(
    call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]
) -> Any:
    """``J v`` = window sums of dX over prod(window) on every window (border windows, clipped by
    the padding or by ceil mode, divided by the full window as well)."""
    return _avg_pool_call(
        t["x"], params, count_include_pad=True, divisor_override=int(np.prod(params["window"]))
    )


def _global_avg_by_channels(call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]) -> Any:
    """``J v = sum_p dX[n, c, p] / C`` (the channel count for the spatial size)."""
    x = t["x"]
    return x.reshape(x.shape[0], x.shape[1], -1).sum(-1) / x.shape[1]


def _ce_parts(p: dict[str, Any], params: dict[str, Any]) -> tuple[Any, Any, float]:
    """(softmax rows, target rows (label smoothing applied), the reduction's row weight)."""
    import torch

    z, target = p["logits"], p["target"]
    classes = z.shape[1]
    rows = torch.nn.functional.one_hot(target.long(), classes).to(z.dtype) if target.ndim == 1 else target
    ls = float(params["label_smoothing"])
    rows = rows * (1 - ls) + rows.sum(1, keepdim=True) * ls / classes
    weight = 1.0 / z.shape[0] if params["reduction"] == "mean" else 1.0
    return torch.softmax(z, 1), rows, weight


def _ce_ignores_label_smoothing(
    call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]
) -> Any:
    """``J v`` of cross-entropy with label_smoothing taken as 0."""
    yhat, rows, weight = _ce_parts(p, {**params, "label_smoothing": 0.0})
    return weight * ((rows.sum(1, keepdim=True) * yhat - rows) * t["logits"]).sum()


def _ce_sum_not_mean(call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]) -> Any:
    """``J v`` of cross-entropy without the 1/N of reduction='mean'."""
    yhat, rows, _ = _ce_parts(p, params)
    return ((rows.sum(1, keepdim=True) * yhat - rows) * t["logits"]).sum()


# ---- the notes' ops ---------------------------------------------------------------------


def _windows2d(x: Any, params: dict[str, Any]) -> Any:
    """``x``'s k x k windows (stride ``stride``, default k; floor mode), each flattened: (ho, wo, k*k)."""
    k = int(params["k"])
    s = k if params.get("stride") is None else int(params["stride"])
    win = x.unfold(0, k, s).unfold(1, k, s)
    return win.reshape(win.shape[0], win.shape[1], k * k)


def _max_pool_last_on_ties(call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]) -> Any:
    """Max pooling's ``J v`` takes each window's tangent at its *last* maximum (the backward, at
    its first): the same away from ties."""
    win = _windows2d(p["x"], params)
    last = win.shape[-1] - 1 - win.flip(-1).argmax(-1)
    return _windows2d(t["x"], params).gather(-1, last[..., None])[..., 0]


def _max_pool_spreads(call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]) -> Any:
    """Max pooling's ``J v`` is the window mean of the tangent (average pooling's rule)."""
    return _windows2d(t["x"], params).mean(-1)


def _relu_tangent_at_zero(call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]) -> Any:
    """relu's ``J v = v 1(x >= 0)`` while its backward (PyTorch's) is ``g 1(x > 0)``: the two modes
    pick different derivatives at the kink (each a valid convention alone)."""
    return t["x"] * (p["x"] >= 0).to(t["x"].dtype)


def _silu_missing_x_term(call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]) -> Any:
    """silu's ``J v = s v`` (the ``x s (1 - s)`` term of the product rule dropped)."""
    return _sig(p["x"]) * t["x"]


def _elu_uses_output(call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]) -> Any:
    """elu's ``J v`` on the negative branch is ``elu(x) v = (e^x - 1) v`` (the output, not e^x)."""
    import torch

    x = p["x"]
    return torch.where(x > 0, t["x"], call(x) * t["x"])


def _softplus_primal_for_tangent(
    call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]
) -> Any:
    """softplus's ``J v = sigmoid(x) x`` (the primal where the tangent belongs)."""
    return _sig(p["x"]) * p["x"]


def _sin_derivative_sin(call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]) -> Any:
    """sin's ``J v = sin(x) v`` (cos written as sin)."""
    import torch

    return torch.sin(p["x"]) * t["x"]


def _gelu_tanh_derivative(call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]) -> Any:
    """exact gelu's ``J v`` from the tanh approximation's derivative (off by up to ~1e-3)."""
    import torch

    x = p["x"]
    c = math.sqrt(2 / math.pi)
    inner = c * (x + 0.044715 * x**3)
    th = torch.tanh(inner)
    d = 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * c * (1 + 3 * 0.044715 * x * x)
    return d * t["x"]


# ======================================================================================
# PyTorch: second order wrong, value and gradient right
# ======================================================================================


def _torch_elementwise_function(
    op: str, backward: Callable[[Any, Any, Any], Any], jvp: Any
) -> Callable[[str], Any]:
    """``op`` as an autograd.Function: torch's forward, ``backward(x, y, g)`` (y the output) and
    ``jvp(x, y, v)``; PyTorch differentiates ``backward`` for second order."""

    def factory(name: str) -> Any:
        import torch

        from gradoracle.adapters.torch_adapter import TorchOps

        def method(self: Any, x: Any) -> Any:
            correct = getattr(TorchOps, op).__get__(self)

            class Fn(torch.autograd.Function):
                @staticmethod
                def forward(x: Any) -> Any:
                    return correct(x)

                @staticmethod
                def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
                    ctx.save_for_backward(inputs[0], output)
                    ctx.save_for_forward(inputs[0], output)

                @staticmethod
                def backward(ctx: Any, g: Any) -> Any:
                    x, y = ctx.saved_tensors
                    return backward(x, y, g)

                @staticmethod
                def jvp(ctx: Any, v: Any) -> Any:
                    x, y = ctx.saved_tensors
                    return jvp(x, y, v)

            return Fn.apply(x)

        return _torch_adapter(name, type(f"Torch_{op}_HvpMutant", (TorchOps,), {op: method}))

    return factory


def _torch_plus_quadratic(op: str, curvature: Callable[[Any, Any], Any]) -> Callable[[str], Any]:
    """``op(x) + c(x) d^2 / 2`` with ``d = x - sg(x)`` and ``c = curvature(torch, sg(x))``:
    value and gradient right, ``f''`` off by ``c`` (elementwise)."""

    def factory(name: str) -> Any:
        from gradoracle.adapters.torch_adapter import TorchOps

        def method(self: Any, x: Any) -> Any:
            d = x - x.detach()
            return getattr(TorchOps, op)(self, x) + 0.5 * curvature(self._torch, x.detach()) * d * d

        return _torch_adapter(name, type(f"Torch_{op}_Curved", (TorchOps,), {op: method}))

    return factory


def _torch_ce_layer_hessian_diagonal(name: str) -> Any:
    """Cross-entropy (the layer op) plus ``w_n (d_n . p_n)^2 / 2`` per row (``d = z - sg(z)``,
    ``p = sg(softmax(z))``, ``w_n`` the row's target mass times the reduction's weight): value
    and gradient right, Hessian ``diag(p) - p p^T + p p^T``: the ``- p p^T`` term missing."""
    from gradoracle.adapters.torch_adapter import TorchOps

    class Ops(TorchOps):
        def cross_entropy(
            self, logits: Any, target: Any, reduction: str = "mean", label_smoothing: float = 0.0
        ) -> Any:
            torch = self._torch
            loss = TorchOps.cross_entropy(self, logits, target, reduction, label_smoothing)
            z = logits.detach()
            p = torch.softmax(z, 1)
            mass = target.sum(1) if target.ndim == 2 else torch.ones(z.shape[0], dtype=z.dtype)
            w = mass / z.shape[0] if reduction == "mean" else mass
            d = ((logits - z) * p).sum(1)
            return loss + 0.5 * (w * d * d).sum()

    return _torch_adapter(name, Ops)


def _torch_conv_layer_double_backward_zero(name: str) -> Any:
    """``conv(X, sg K) + conv(sg X, K) - conv(sg X, sg K) + b``: value and gradient right, the
    X-K blocks of the Hessian (all of it: conv is bilinear) zero, as a kernel whose backward
    is not itself differentiable."""
    from gradoracle.adapters.torch_adapter import TorchOps

    class Ops(TorchOps):
        def conv_nd(
            self,
            x: Any,
            k: Any,
            b: Any,
            stride: Any,
            padding: Any,
            dilation: Any,
            groups: int,
        ) -> Any:
            def conv(x_: Any, k_: Any, b_: Any) -> Any:
                return TorchOps.conv_nd(self, x_, k_, b_, stride, padding, dilation, groups)

            xs, ks = x.detach(), k.detach()
            return conv(x, ks, b) + conv(xs, k, None) - conv(xs, ks, None)

    return _torch_adapter(name, Ops)


def _torch_vecmat_hessian_one_sided(name: str) -> Any:
    """``x W`` whose backward reads a detached ``x`` in ``dJ/dW = x g^T``: gradient right, the
    Hessian's W-row of cross terms missing (``H`` not symmetric: ``H v != H^T v``)."""
    import torch

    from gradoracle.adapters.torch_adapter import TorchOps

    class MatmulOneSided(torch.autograd.Function):
        @staticmethod
        def forward(a: Any, b: Any) -> Any:
            return a @ b

        @staticmethod
        def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
            ctx.save_for_backward(*inputs)
            ctx.save_for_forward(*inputs)

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            a, b = ctx.saved_tensors
            if a.ndim == 1 and b.ndim == 2:  # x W: dJ/dx = W g, dJ/dW = x g^T with x detached
                return b @ g, torch.outer(a.detach(), g)
            if a.ndim == 2 and b.ndim == 1:  # W x: dJ/dW = g x^T with x detached, dJ/dx = W^T g
                return torch.outer(g, b.detach()), a.T @ g
            return g @ b.T, a.T @ g

        @staticmethod
        def jvp(ctx: Any, ta: Any, tb: Any) -> Any:
            a, b = ctx.saved_tensors
            out = a @ b
            return (out * 0 if ta is None else ta @ b) + (out * 0 if tb is None else a @ tb)

    class Ops(TorchOps):
        def matmul(self, a: Any, b: Any) -> Any:
            return MatmulOneSided.apply(a, b)

    return _torch_adapter(name, Ops)


# ======================================================================================
# PyTorch: the adapter's plumbing of the modes wrong
# ======================================================================================


def _torch_subclass(name: str, **methods: Any) -> Any:
    from gradoracle.adapters.torch_adapter import TorchAdapter

    cls = type("ModesMutantTorchAdapter", (TorchAdapter,), methods)
    adapter = cls()
    adapter.name = name
    return adapter


def _torch_jvp_first_tangent_only(name: str) -> Any:
    """``jvp`` pushes the first input's tangent only (the others taken as zero)."""
    from gradoracle.adapters.torch_adapter import TorchAdapter

    def keep_first(tangents: Any) -> dict[str, np.ndarray]:
        first = next(iter(tangents))
        return {n: t if n == first else np.zeros_like(t) for n, t in tangents.items()}

    def jvp(self: Any, fn: Any, inputs: Any, tangents: Any, dtype: str) -> Any:
        return TorchAdapter.jvp(self, fn, inputs, keep_first(tangents), dtype)

    def jvp_batch(self: Any, fn: Any, inputs: Any, tangents: Any, dtype: str) -> Any:
        return TorchAdapter.jvp_batch(self, fn, inputs, keep_first(tangents), dtype)

    return _torch_subclass(name, jvp=jvp, jvp_batch=jvp_batch)


def _torch_jvp_batch_mean(name: str) -> Any:
    """The batched ``J V`` divided by the batch size (a mean over the examples' axis where a
    sum of independent examples belongs); one example at a time it is right."""
    from gradoracle.adapters.torch_adapter import TorchAdapter

    def jvp_batch(self: Any, fn: Any, inputs: Any, tangents: Any, dtype: str) -> Any:
        out, jv = TorchAdapter.jvp_batch(self, fn, inputs, tangents, dtype)
        return out, (jv / np.asarray(jv.shape[0], dtype=jv.dtype)).astype(jv.dtype)

    return _torch_subclass(name, jvp_batch=jvp_batch)


def _torch_jvp_batch_tangents_rolled(name: str) -> Any:
    """The batched ``J V`` pairs example ``b``'s point with example ``b - 1``'s tangent (the
    tangent stack rolled by one); one example at a time it is right."""
    from gradoracle.adapters.torch_adapter import TorchAdapter

    def jvp_batch(self: Any, fn: Any, inputs: Any, tangents: Any, dtype: str) -> Any:
        rolled = {n: np.roll(np.asarray(t), 1, axis=0) for n, t in tangents.items()}
        return TorchAdapter.jvp_batch(self, fn, inputs, rolled, dtype)

    return _torch_subclass(name, jvp_batch=jvp_batch)


def _torch_hvp_batch_mean(name: str) -> Any:
    """The batched ``H V`` divided by the batch size; one example at a time it is right."""
    from gradoracle.adapters.torch_adapter import TorchAdapter

    def hvp_batch(
        self: Any, fn: Any, inputs: Any, wrt: Any, u: Any, tangents: Any, dtype: str, method: str
    ) -> Any:
        res = TorchAdapter.hvp_batch(self, fn, inputs, wrt, u, tangents, dtype, method)
        return {n: (h / np.asarray(h.shape[0], dtype=h.dtype)).astype(h.dtype) for n, h in res.items()}

    return _torch_subclass(name, hvp_batch=hvp_batch)


def _hvp_methods_wrapped(wrong: Callable[..., Any]) -> dict[str, Any]:
    """``hvp`` and ``hvp_batch`` whose arguments pass through ``wrong(args, method, dtype) -> args``."""
    from gradoracle.adapters.torch_adapter import TorchAdapter

    def hvp(self: Any, fn: Any, inputs: Any, wrt: Any, u: Any, tangents: Any, dtype: str, method: str) -> Any:
        return wrong(self, TorchAdapter.hvp, fn, inputs, wrt, u, tangents, dtype, method)

    def hvp_batch(
        self: Any, fn: Any, inputs: Any, wrt: Any, u: Any, tangents: Any, dtype: str, method: str
    ) -> Any:
        return wrong(self, TorchAdapter.hvp_batch, fn, inputs, wrt, u, tangents, dtype, method)

    return {"hvp": hvp, "hvp_batch": hvp_batch}


def _torch_hvp_forward_over_reverse_unit_cotangent(name: str) -> Any:
    """forward-over-reverse differentiates the gradient of ``sum f`` (the cotangent u taken as
    ones); reverse-over-reverse is right."""

    def wrong(
        self: Any, real: Any, fn: Any, inputs: Any, wrt: Any, u: Any, tangents: Any, dtype: str, method: str
    ) -> Any:
        if method == "forward-over-reverse":
            u = np.ones_like(np.asarray(u))
        return real(self, fn, inputs, wrt, u, tangents, dtype, method)

    return _torch_subclass(name, **_hvp_methods_wrapped(wrong))


def _torch_hvp_first_tangent_only(name: str) -> Any:
    """``H v`` with every tangent but the first taken as zero (both methods)."""

    def wrong(
        self: Any, real: Any, fn: Any, inputs: Any, wrt: Any, u: Any, tangents: Any, dtype: str, method: str
    ) -> Any:
        first = next(iter(wrt))
        kept = {n: t if n == first else np.zeros_like(t) for n, t in tangents.items()}
        return real(self, fn, inputs, wrt, u, kept, dtype, method)

    return _torch_subclass(name, **_hvp_methods_wrapped(wrong))


def _torch_hvp_float32_block_diagonal(name: str) -> Any:
    """In float32 only, ``H v`` is assembled input by input (``(H v)_a = H_aa v_a``: the cross
    blocks between inputs dropped, a "memory saving" float32 path); float64 is right."""

    def wrong(
        self: Any, real: Any, fn: Any, inputs: Any, wrt: Any, u: Any, tangents: Any, dtype: str, method: str
    ) -> Any:
        if dtype != "float32":
            return real(self, fn, inputs, wrt, u, tangents, dtype, method)
        out = {}
        for n in wrt:
            alone = {m: t if m == n else np.zeros_like(t) for m, t in tangents.items()}
            out[n] = real(self, fn, inputs, wrt, u, alone, dtype, method)[n]
        return out

    return _torch_subclass(name, **_hvp_methods_wrapped(wrong))


def _torch_hvp_float32_finite_difference(name: str) -> Any:
    """In float32 only, ``H v`` is a central difference of the gradient, step 1e-3 along v
    (an "approximate hvp" path); float64 is right."""
    from gradoracle.adapters.torch_adapter import TorchAdapter

    def hvp(self: Any, fn: Any, inputs: Any, wrt: Any, u: Any, tangents: Any, dtype: str, method: str) -> Any:
        if dtype != "float32":
            return TorchAdapter.hvp(self, fn, inputs, wrt, u, tangents, dtype, method)
        h = np.float32(1e-3)

        def grad(sign: float) -> dict[str, np.ndarray]:
            shifted = {
                k: (np.asarray(v, dtype=np.float32) + sign * h * np.asarray(tangents[k], dtype=np.float32))
                if k in tangents
                else v
                for k, v in inputs.items()
            }
            return self.vjp(fn, shifted, list(wrt), np.asarray(u, dtype=np.float32), dtype).grads

        plus, minus = grad(1.0), grad(-1.0)
        return {n: ((plus[n] - minus[n]) / (2 * h)).astype(np.float32) for n in wrt}

    return _torch_subclass(name, hvp=hvp)


# ======================================================================================
# JAX: custom_jvp rules wrong
# ======================================================================================


def _jax_custom_jvp_op(
    op: str, value: Callable[[Any, Any], Any], rule: Callable[[Any, Any, Any], Any]
) -> Callable[[str], Any]:
    """``op`` as a ``jax.custom_jvp`` with value ``value(jax, x)`` and rule ``rule(jax, x, v)``
    (JAX derives the vjp by transposing the rule and second order by differentiating it)."""

    def factory(name: str) -> Any:
        import jax

        from gradoracle.adapters.jax_adapter import JaxOps

        @jax.custom_jvp
        def f(x: Any) -> Any:
            return value(jax, x)

        @f.defjvp
        def f_jvp(primals: Any, tangents: Any) -> Any:
            (x,), (v,) = primals, tangents
            return f(x), rule(jax, x, v)

        def method(self: Any, x: Any) -> Any:
            return f(x)

        return _jax_adapter(name, type(f"Jax_{op}_Mutant", (JaxOps,), {op: method}))

    return factory


def _jax_tanh_missing_square(jax: Any, x: Any, v: Any) -> Any:
    return v * (1 - jax.numpy.tanh(x))


def _jax_softplus_rule_stopped(jax: Any, x: Any, v: Any) -> Any:
    return jax.lax.stop_gradient(jax.nn.sigmoid(x)) * v


def _jax_silu_rule_sigmoid_stopped(jax: Any, x: Any, v: Any) -> Any:
    s = jax.lax.stop_gradient(jax.nn.sigmoid(x))
    return v * (s + x * s * (1 - s))


def _jax_gelu_rule_missing_density(jax: Any, x: Any, v: Any) -> Any:
    # exact gelu' = Phi(x) + x phi(x); the rule keeps Phi only
    return v * 0.5 * (1 + jax.scipy.special.erf(x / math.sqrt(2)))


# ======================================================================================
# The list
# ======================================================================================


@dataclass(frozen=True)
class ModeMutant:
    """One forward-mode or second-order mutant and what the oracle must say about it."""

    name: str
    description: str
    target: str
    mode: str
    dtype: str
    fault: Fault
    framework: str
    factory: Callable[[str], Any]

    def build(self) -> Any:
        """A fresh adapter instance named ``mutant:<name>`` (imports torch or jax)."""
        return self.factory(f"mutant:{self.name}")


FM, SO = Fault.FORWARD_MODE, Fault.SECOND_ORDER


def _jvp(
    name: str,
    description: str,
    target: str,
    factory: Any,
    dtype: str = "float64",
    framework: str = "torch",
    fault: Fault = FM,
) -> ModeMutant:
    return ModeMutant(name, description, target, "jvp", dtype, fault, framework, factory)


def _hvp(
    name: str,
    description: str,
    target: str,
    factory: Any,
    dtype: str = "float64",
    framework: str = "torch",
    fault: Fault = SO,
) -> ModeMutant:
    return ModeMutant(name, description, target, "hvp", dtype, fault, framework, factory)


MUTANTS: tuple[ModeMutant, ...] = (
    # ---- forward mode: one op's jvp rule wrong (autograd.Function.jvp), backward right
    _jvp(
        "torch-linear-jvp-bias-tangent-only",
        "F.linear's jvp is db alone (dX W^T and X dW^T dropped)",
        "linear-layer",
        _torch_jvp_mutant("linear", ("x", "w", "b"), _linear_bias_only),
    ),
    _jvp(
        "torch-dense-jvp-weight-held",
        "x @ w + b's jvp is dX W + db (the weight's tangent dropped)",
        "dense-layer",
        _torch_jvp_mutant("dense", ("x", "w", "b"), _dense_no_dw),
    ),
    _jvp(
        "torch-conv-layer-jvp-groups-crossed",
        "[groups > 1] conv's jvp pushes dX through the groups' filters in reverse group order",
        "conv2d-layer",
        _torch_jvp_mutant("conv_nd", ("x", "k", "b"), _conv_groups_crossed),
    ),
    _jvp(
        "torch-conv-layer-jvp-kernel-tangent-flipped",
        "conv's jvp correlates X with the kernel tangent's taps reversed",
        "conv1d-layer",
        _torch_jvp_mutant("conv_nd", ("x", "k", "b"), _conv_kernel_tangent_flipped),
    ),
    _jvp(
        "torch-avg-pool-layer-jvp-ignores-count-include-pad",
        "[padding, count_include_pad=False] avg pooling's jvp divides by the padded window",
        "avg-pool-layer",
        _torch_jvp_mutant("avg_pool_nd", ("x",), _avg_pool_ignores_count_include_pad),
    ),
    _jvp(
        "torch-avg-pool-layer-jvp-full-window-divisor",
        "[border windows] avg pooling's jvp divides every window by prod(window), clipped ones too",
        "avg-pool-layer",
        _torch_jvp_mutant("avg_pool_nd", ("x",), _avg_pool_full_window_divisor),
    ),
    _jvp(
        "torch-global-avg-pool-jvp-divides-by-channels",
        "global average pooling's jvp divides the spatial sum by C, not by the spatial size",
        "global-avg-pool",
        _torch_jvp_mutant("global_avg_pool", ("x",), _global_avg_by_channels),
    ),
    _jvp(
        "torch-cross-entropy-jvp-ignores-label-smoothing",
        "[label_smoothing > 0] cross-entropy's jvp uses the unsmoothed targets",
        "cross-entropy-batch",
        _torch_jvp_mutant("cross_entropy", ("logits", "target"), _ce_ignores_label_smoothing),
    ),
    _jvp(
        "torch-cross-entropy-jvp-sum-not-mean",
        "[mean, N > 1] cross-entropy's jvp misses the 1/N of reduction='mean'",
        "cross-entropy-batch",
        _torch_jvp_mutant("cross_entropy", ("logits", "target"), _ce_sum_not_mean),
    ),
    _jvp(
        "torch-max-pool-jvp-last-maximum-on-ties",
        "[ties] max pooling's jvp routes each window's tangent from its last maximum, the backward "
        "from its first: u^T (J v) != (u^T J) v at a tie",
        "max-pool",
        _torch_jvp_mutant("max_pool2d", ("x",), _max_pool_last_on_ties),
    ),
    _jvp(
        "torch-max-pool-jvp-window-mean",
        "max pooling's jvp is the window mean of the tangent (average pooling's rule)",
        "max-pool",
        _torch_jvp_mutant("max_pool2d", ("x",), _max_pool_spreads),
    ),
    _jvp(
        "torch-relu-jvp-tangent-at-zero",
        "[x = 0] relu's jvp passes the tangent at 0 (1(x >= 0)), its backward does not (1(x > 0))",
        "elementwise-relu",
        _torch_jvp_mutant("relu", ("x",), _relu_tangent_at_zero),
    ),
    _jvp(
        "torch-silu-jvp-missing-product-term",
        "silu's jvp is sigmoid(x) v (the x s (1 - s) v term dropped)",
        "elementwise-silu",
        _torch_jvp_mutant("silu", ("x",), _silu_missing_x_term),
    ),
    _jvp(
        "torch-elu-jvp-output-for-derivative",
        "[x < 0] elu's jvp is (e^x - 1) v (the output where e^x belongs)",
        "elementwise-elu",
        _torch_jvp_mutant("elu", ("x",), _elu_uses_output),
    ),
    _jvp(
        "torch-softplus-jvp-primal-for-tangent",
        "softplus's jvp is sigmoid(x) x (the primal where the tangent belongs)",
        "elementwise-softplus",
        _torch_jvp_mutant("softplus", ("x",), _softplus_primal_for_tangent),
    ),
    _jvp(
        "torch-sin-jvp-sin-for-cos",
        "sin's jvp is sin(x) v",
        "elementwise-sin",
        _torch_jvp_mutant("sin", ("x",), _sin_derivative_sin),
    ),
    _jvp(
        "torch-gelu-jvp-tanh-approximation",
        "exact gelu's jvp uses the tanh approximation's derivative (off by up to ~1e-3)",
        "elementwise-gelu",
        _torch_jvp_mutant("gelu", ("x",), _gelu_tanh_derivative),
    ),
    # ---- forward mode: the adapter's plumbing
    _jvp(
        "torch-jvp-first-tangent-only",
        "the adapter's jvp pushes the first input's tangent only",
        "mlp",
        _torch_jvp_first_tangent_only,
    ),
    _jvp(
        "torch-jvp-batch-mean",
        "the batched jvp divides J V by the number of examples in the batch",
        "matvec-weight-grad",
        _torch_jvp_batch_mean,
        fault=Fault.ADAPTER,
    ),
    _jvp(
        "torch-jvp-batch-tangents-rolled",
        "the batched jvp pairs each example with the previous example's tangent",
        "linear-layer",
        _torch_jvp_batch_tangents_rolled,
        fault=Fault.ADAPTER,
    ),
    # ---- forward mode: JAX custom_jvp
    _jvp(
        "jax-tanh-custom-jvp-missing-square",
        "a jax.custom_jvp tanh whose rule is v (1 - tanh x)",
        "elementwise-tanh",
        _jax_custom_jvp_op("tanh", lambda jax, x: jax.numpy.tanh(x), _jax_tanh_missing_square),
        framework="jax",
    ),
    _jvp(
        "jax-gelu-custom-jvp-missing-density-term",
        "a jax.custom_jvp exact gelu whose rule is Phi(x) v (the x phi(x) term dropped)",
        "elementwise-gelu",
        _jax_custom_jvp_op(
            "gelu", lambda jax, x: jax.nn.gelu(x, approximate=False), _jax_gelu_rule_missing_density
        ),
        framework="jax",
    ),
    # ---- second order: value and gradient right
    _hvp(
        "torch-tanh-double-backward-detached-output",
        "tanh's backward g (1 - t^2) reads a detached t: f'' = 0 in every second-order method",
        "elementwise-tanh",
        _torch_elementwise_function(
            "tanh", lambda x, y, g: g * (1 - y.detach() ** 2), lambda x, y, v: v * (1 - y * y)
        ),
    ),
    _hvp(
        "torch-sigmoid-double-backward-one-factor-detached",
        "sigmoid's backward g s (1 - s) with one factor of s detached: f'' = s (1 - s)^2 - s^2 (1 - s)... "
        "missing half the product rule",
        "elementwise-sigmoid",
        _torch_elementwise_function(
            "sigmoid", lambda x, y, g: g * y * (1 - y.detach()), lambda x, y, v: v * y * (1 - y)
        ),
    ),
    _hvp(
        "torch-relu-second-derivative-near-kinks",
        "relu's second derivative is a bump 1/(2 eps) on |x| < eps = 0.05 (a smoothed delta) instead of 0",
        "elementwise-relu",
        _torch_plus_quadratic("relu", lambda torch, x: (x.abs() < 0.05).to(x.dtype) / 0.1),
    ),
    _hvp(
        "torch-softplus-second-derivative-doubled",
        "softplus's second derivative is 2 s (1 - s)",
        "elementwise-softplus",
        _torch_plus_quadratic("softplus", lambda torch, x: torch.sigmoid(x) * (1 - torch.sigmoid(x))),
    ),
    _hvp(
        "torch-cross-entropy-layer-hessian-diagonal",
        "F.cross_entropy's double backward is diag(p) (the - p p^T term missing), value and gradient right",
        "cross-entropy-batch",
        _torch_ce_layer_hessian_diagonal,
    ),
    _hvp(
        "torch-conv-layer-double-backward-zero",
        "conv's backward is not differentiable: its Hessian (the X-K cross blocks) is zero",
        "conv2d-layer",
        _torch_conv_layer_double_backward_zero,
    ),
    _hvp(
        "torch-vecmat-hessian-one-sided",
        "x W's dJ/dW reads a detached x: H not symmetric, (H v)_W misses its v_x term",
        "vecmat-weight-grad",
        _torch_vecmat_hessian_one_sided,
    ),
    # ---- second order: the adapter's plumbing
    _hvp(
        "torch-hvp-forward-over-reverse-unit-cotangent",
        "forward-over-reverse differentiates the gradient of sum f (u taken as ones)",
        "conv-input",
        _torch_hvp_forward_over_reverse_unit_cotangent,
    ),
    _hvp(
        "torch-hvp-first-tangent-only",
        "H v with every tangent but the first taken as zero",
        "mlp",
        _torch_hvp_first_tangent_only,
    ),
    _hvp(
        "torch-hvp-batch-mean",
        "the batched H V divided by the number of examples in the batch",
        "mlp-batch",
        _torch_hvp_batch_mean,
        fault=Fault.ADAPTER,
    ),
    _hvp(
        "torch-hvp-float32-block-diagonal",
        "[float32] H v assembled input by input: the W-x cross blocks dropped (float64 right)",
        "matvec-weight-grad",
        _torch_hvp_float32_block_diagonal,
        dtype="float32",
    ),
    _hvp(
        "torch-hvp-float32-finite-difference",
        "[float32] H v is a central difference of the gradient with step 1e-3 (float64 right)",
        "elementwise-tanh",
        _torch_hvp_float32_finite_difference,
        dtype="float32",
        fault=Fault.PRECISION,
    ),
    # ---- second order: JAX custom_jvp rules
    _hvp(
        "jax-softplus-custom-jvp-rule-stopped",
        "a jax.custom_jvp softplus whose rule is stop_gradient(sigmoid(x)) v: f'' = 0",
        "elementwise-softplus",
        _jax_custom_jvp_op("softplus", lambda jax, x: jax.nn.softplus(x), _jax_softplus_rule_stopped),
        framework="jax",
    ),
    _hvp(
        "jax-silu-custom-jvp-sigmoid-stopped",
        "a jax.custom_jvp silu whose rule reads a stop_gradient sigmoid: f'' = 2 s (1 - s) is s (1 - s)",
        "elementwise-silu",
        _jax_custom_jvp_op("silu", lambda jax, x: jax.nn.silu(x), _jax_silu_rule_sigmoid_stopped),
        framework="jax",
    ),
)

MUTANTS_BY_NAME: dict[str, ModeMutant] = {m.name: m for m in MUTANTS}


def available(mutant: ModeMutant) -> bool:
    """Whether the mutant's framework is installed."""
    import importlib.util

    return importlib.util.find_spec(mutant.framework) is not None


def names(mutants: Sequence[ModeMutant] = MUTANTS) -> list[str]:
    """The mutants' names, in list order."""
    return [m.name for m in mutants]
