"""Blind "grader's mutants" (round 5): framework bugs written before reading the existing mutant
lists or the layer strategies, each wrong in one configuration or one mode only.

Three kinds, a third each:

- reverse mode (``vjp``): one op of the PyTorch (or JAX) adapter wrapped in an
  ``autograd.Function`` (``jax.custom_vjp``) whose forward is the real op and whose backward is
  the framework's own except in one configuration (``padding="same"`` with an odd total, groups,
  a 3-d bias, batch size 1, a square weight, two batch axes, ceil mode, ...);
- forward mode (``jvp``): an ``autograd.Function`` with the framework's own forward and backward
  and a ``jvp`` rule that is wrong in one configuration;
- second order (``hvp``): the real op plus a term that is 0 with a zero gradient and a non-zero
  Hessian (``d = x - sg(x)``): a double backward that is right to first order and wrong in one
  configuration.

Every factory takes the adapter name and returns an adapter; torch and jax are imported only
inside the factories.  Each mutant's description is ``[configuration] what is wrong``.
:data:`MUTANTS` holds the records (:class:`gradoracle.selftest.mutant_modes3.ModeMutant`, whose
``mode`` is ``vjp`` here too); :data:`EXPECTED_SURVIVORS` the ones that survive on purpose.
These mutants are not in the selftest catalogue.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from gradoracle.results import Fault
from gradoracle.selftest.mutant_frameworks import (
    _bind,
    _jax_adapter,
    _torch_adapter,
    _torch_grads,
    _torch_layer_adapter,
)
from gradoracle.selftest.mutant_modes3 import ModeMutant, _torch_jvp_op

BW, FM, SO = Fault.BACKWARD, Fault.FORWARD_MODE, Fault.SECOND_ORDER

#: ``bug(call, saved, params, g) -> {name: gradient}`` for the tensors present (``call`` takes
#: them positionally in ``saved``'s order; ``params`` are the op's other arguments).
VjpBug = Callable[[Callable[..., Any], dict[str, Any], dict[str, Any], Any], dict[str, Any]]


# ======================================================================================
# helpers
# ======================================================================================


def _correct(call: Callable[..., Any], saved: dict[str, Any], g: Any) -> dict[str, Any]:
    """The framework's own ``g^T J`` for every saved tensor."""
    return dict(zip(saved, _torch_grads(call, list(saved.values()), g), strict=True))


def _grads_of(fn: Callable[..., Any], saved: dict[str, Any], g: Any) -> dict[str, Any]:
    """``g^T d fn / d saved`` of another function ``fn(**saved)`` (a wrong backward's formula)."""
    names = list(saved)
    return dict(
        zip(
            names,
            _torch_grads(lambda *ts: fn(**dict(zip(names, ts, strict=True))), list(saved.values()), g),
            strict=True,
        )
    )


def _torch_vjp_mutant(op: str, arrays: tuple[str, ...], bug: VjpBug) -> Callable[[str], Any]:
    """A PyTorch adapter whose ``op`` has the real forward and ``bug`` as its backward
    (:func:`gradoracle.selftest.mutant_frameworks._torch_layer_adapter`, the gradients by name)."""

    def by_name(call: Any, saved: dict[str, Any], params: dict[str, Any], g: Any) -> list[Any]:
        grads = bug(call, saved, params, g)
        return [grads[n] for n in saved]  # saved holds the tensor arguments in their order

    return lambda name: _torch_layer_adapter(name, op, arrays, by_name)


def _torch_jvp_mutant(op: str, arrays: tuple[str, ...], rule: Any) -> Callable[[str], Any]:
    def factory(name: str) -> Any:
        return _torch_adapter(name, _torch_jvp_op(op, arrays, rule))

    return factory


def _torch_hessian_mutant(op: str, extra: Callable[..., Any]) -> Callable[[str], Any]:
    """A PyTorch adapter whose ``op`` returns the real op plus ``extra(super_op, **args)``: a term
    that is 0 with a zero gradient (it is built from ``d = x - x.detach()``), or ``None``."""

    def factory(name: str) -> Any:
        from gradoracle.adapters.torch_adapter import TorchOps

        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            correct = getattr(TorchOps, op).__get__(self)
            named = _bind(correct, args, kwargs)
            out = correct(**named)
            term = extra(self, correct, **named)
            return out if term is None else out + term

        return _torch_adapter(name, type(f"Blind_{op}_Hvp", (TorchOps,), {op: method}))

    return factory


def _d(t: Any) -> Any:
    """``t - sg(t)``: 0 with derivative 1 (a Hessian term's carrier)."""
    return t - t.detach()


def _same_totals(k: Any, dilation: tuple[int, ...]) -> list[int]:
    return [d * (n - 1) for n, d in zip(k.shape[2:], dilation, strict=True)]


def _conv_same_swapped(x: Any, k: Any, b: Any, dilation: tuple[int, ...], groups: int) -> Any:
    """A stride-1 "same" convolution with the odd element of the padding put *before*."""
    import torch.nn.functional as F

    pads: list[int] = []
    for total in reversed(_same_totals(k, dilation)):
        pads += [total - total // 2, total // 2]
    conv = (F.conv1d, F.conv2d, F.conv3d)[x.ndim - 3]
    return conv(F.pad(x, pads), k, b, dilation=tuple(dilation), groups=groups)


def _odd_same(params: dict[str, Any], k: Any) -> bool:
    return params["padding"] == "same" and any(t % 2 for t in _same_totals(k, params["dilation"]))


def _conv(x: Any, k: Any, b: Any, params: dict[str, Any], **over: Any) -> Any:
    import warnings

    import torch.nn.functional as F

    p = {**params, **over}
    conv = (F.conv1d, F.conv2d, F.conv3d)[x.ndim - 3]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*padding='same'.*", category=UserWarning)
        return conv(
            x,
            k,
            b,
            stride=tuple(p["stride"]),
            padding=p["padding"],
            dilation=tuple(p["dilation"]),
            groups=p["groups"],
        )


def _bias_shape(b: Any, ndim: int) -> Any:
    return b.reshape((1, -1) + (1,) * (ndim - 2))


# ======================================================================================
# reverse mode (vjp) on the layer forms
# ======================================================================================


def _conv_same_swapped_input(call: Any, s: dict[str, Any], params: dict[str, Any], g: Any) -> dict[str, Any]:
    """[conv, padding="same" with an odd d(k-1)] the input gradient puts the extra padding
    element before instead of after (the transposed convolution cropped one element off)."""
    grads = _correct(call, s, g)
    if _odd_same(params, s["k"]):
        grads["x"] = _grads_of(
            lambda x: _conv_same_swapped(x, s["k"], None, params["dilation"], params["groups"]),
            {"x": s["x"]},
            g,
        )["x"]
    return grads


def _conv_filter_grad_group0_input(
    call: Any, s: dict[str, Any], params: dict[str, Any], g: Any
) -> dict[str, Any]:
    """[conv, groups > 1] the filter gradient of every group correlates delta with group 0's
    input channels (the group offset into X dropped)."""
    grads = _correct(call, s, g)
    groups = params["groups"]
    if groups > 1:
        x = s["x"]
        cg = x.shape[1] // groups
        x0 = x[:, :cg].repeat((1, groups) + (1,) * (x.ndim - 2))
        grads["k"] = _grads_of(lambda k: _conv(x0, k, None, params), {"k": s["k"]}, g)["k"]
    return grads


def _conv3d_bias_last_axis_first(
    call: Any, s: dict[str, Any], params: dict[str, Any], g: Any
) -> dict[str, Any]:
    """[conv3d with bias] the bias gradient sums batch and the first two spatial axes but takes
    only position 0 of the last axis (the reduction list of the 2-d kernel reused)."""
    grads = _correct(call, s, g)
    if "b" in s and g.ndim == 5:
        grads["b"] = g[..., 0].sum(dim=(0, 2, 3))
    return grads


def _conv_depthwise_input_flipped(
    call: Any, s: dict[str, Any], params: dict[str, Any], g: Any
) -> dict[str, Any]:
    """[depthwise conv: groups == C_in > 1, kernel wider than 1] the input gradient uses the
    kernel rot180'd twice (a convolution instead of a correlation in the depthwise fast path)."""
    grads = _correct(call, s, g)
    x, k = s["x"], s["k"]
    if params["groups"] > 1 and params["groups"] == x.shape[1]:
        flipped = k.flip(list(range(2, k.ndim))).detach()
        grads["x"] = _grads_of(lambda x: _conv(x, flipped, None, params), {"x": x}, g)["x"]
    return grads


def _conv_batch1_drops_last_channel(
    call: Any, s: dict[str, Any], params: dict[str, Any], g: Any
) -> dict[str, Any]:
    """[conv, N = 1, C_out > 1] the squeezed batch-1 path of the input gradient loops over
    C_out - 1 output channels (the last one's contribution missing)."""
    grads = _correct(call, s, g)
    if g.shape[0] == 1 and g.shape[1] > 1:
        g2 = g.clone()
        g2[:, -1] = 0
        grads["x"] = _grads_of(lambda x: call(x, *[s[n] for n in s if n != "x"]), {"x": s["x"]}, g2)["x"]
    return grads


def _linear_square_weight_transposed(
    call: Any, s: dict[str, Any], params: dict[str, Any], g: Any
) -> dict[str, Any]:
    """[linear, in == out] the weight gradient is returned transposed (``X^T delta`` instead of
    ``delta^T X``: the shapes agree only for a square weight)."""
    grads = _correct(call, s, g)
    w = s["w"]
    if w.shape[0] == w.shape[1]:
        grads["w"] = grads["w"].T.contiguous()
    return grads


def _linear_two_batch_axes_first_slice(
    call: Any, s: dict[str, Any], params: dict[str, Any], g: Any
) -> dict[str, Any]:
    """[linear, X with two batch axes (B, T, in)] the weight gradient sums over T for the first B
    only (``delta[0]^T X[0]``: a flatten that dropped the leading axis)."""
    grads = _correct(call, s, g)
    x = s["x"]
    if x.ndim == 3 and x.shape[0] > 1:
        grads["w"] = g[0].T @ x[0]
    return grads


def _dense_bias_mean_two_axes(call: Any, s: dict[str, Any], params: dict[str, Any], g: Any) -> dict[str, Any]:
    """[dense with bias, X with two batch axes] the bias gradient is summed over the last batch
    axis and averaged over the first (a mean over the wrong axis)."""
    grads = _correct(call, s, g)
    if "b" in s and g.ndim == 3:
        grads["b"] = g.sum(dim=1).mean(dim=0)
    return grads


def _max_pool_ceil_last_window_dropped(
    call: Any, s: dict[str, Any], params: dict[str, Any], g: Any
) -> dict[str, Any]:
    """[max pool, ceil_mode with a partial last window on the last axis] that window's delta is
    never routed (the backward's loop runs over the floor-mode output length)."""
    x = s["x"]
    n = x.shape[-1]
    w, st, p, d = (params[key][-1] for key in ("window", "stride", "padding", "dilation"))
    floor_len = (n + 2 * p - d * (w - 1) - 1) // st + 1
    if params["ceil_mode"] and g.shape[-1] > floor_len:
        g = g.clone()
        g[..., floor_len:] = 0
    return _correct(call, s, g)


def _max_pool_ties_to_all(call: Any, s: dict[str, Any], params: dict[str, Any], g: Any) -> dict[str, Any]:
    """[max pool (notes), a window with tied maxima] delta is routed to every tied maximum (a
    mask ``x == max`` instead of the argmax), so a tie's weights sum to more than one."""
    import torch.nn.functional as F

    x = s["x"]
    k = params["k"]
    stride = k if params.get("stride") is None else params["stride"]
    if stride != k:
        return _correct(call, s, g)
    m = F.max_pool2d(x[None, None], k, stride=k)[0, 0]
    up = m.repeat_interleave(k, 0).repeat_interleave(k, 1)
    gu = g.repeat_interleave(k, 0).repeat_interleave(k, 1)
    out = x.new_zeros(x.shape)
    h, w = up.shape
    out[:h, :w] = gu * (x[:h, :w] == up).to(x.dtype)
    return {"x": out}


def _avg_pool_include_pad_ignored(
    call: Any, s: dict[str, Any], params: dict[str, Any], g: Any
) -> dict[str, Any]:
    """[avg pool, padding > 0, count_include_pad=True] the backward divides by the count of input
    elements (the count_include_pad=False divisor): forward and backward disagree at the borders."""
    if params["count_include_pad"] and any(params["padding"]):
        alt = {**params, "count_include_pad": False}
        import torch.nn.functional as F

        x = s["x"]
        pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[x.ndim - 3]
        return _grads_of(
            lambda x: pool(
                x,
                tuple(alt["window"]),
                tuple(alt["stride"]),
                tuple(alt["padding"]),
                ceil_mode=alt["ceil_mode"],
                count_include_pad=False,
            ),
            {"x": x},
            g,
        )
    return _correct(call, s, g)


def _ce_soft_targets_smoothing_ignored(
    call: Any, s: dict[str, Any], params: dict[str, Any], g: Any
) -> dict[str, Any]:
    """[cross-entropy, probability targets (N, C), label smoothing > 0] the backward uses the raw
    targets (smoothing applied on the class-index path only)."""
    if s["target"].ndim == 2 and params["label_smoothing"] > 0:
        grads = _correct(call, s, g)
        import torch.nn.functional as F

        t = s["target"]
        grads["logits"] = _grads_of(
            lambda logits: F.cross_entropy(logits, t, reduction=params["reduction"]),
            {"logits": s["logits"]},
            g,
        )["logits"]
        return grads
    return _correct(call, s, g)


def _ce_sum_divided_by_n(call: Any, s: dict[str, Any], params: dict[str, Any], g: Any) -> dict[str, Any]:
    """[cross-entropy, reduction="sum", N > 1] the backward divides by N (the mean path's scale
    reused for sum)."""
    grads = _correct(call, s, g)
    if params["reduction"] == "sum" and s["logits"].shape[0] > 1:
        grads["logits"] = grads["logits"] / s["logits"].shape[0]
    return grads


def _global_avg_3d_wrong_axis(call: Any, s: dict[str, Any], params: dict[str, Any], g: Any) -> dict[str, Any]:
    """[global average pool, 3 spatial axes with S1 != S2] the divisor is S0 S1 S1 (the axis
    index repeated), right whenever the last two axes are equal."""
    grads = _correct(call, s, g)
    x = s["x"]
    if x.ndim == 5:
        s0, s1, s2 = x.shape[2:]
        grads["x"] = grads["x"] * (s0 * s1 * s2) / (s0 * s1 * s1)
    return grads


def _jax_conv_bias_batch1(name: str) -> Any:
    """JAX [conv with bias, N > 1] the bias cotangent sums space but takes batch row 0 times N
    (a broadcast sum short-cut that assumed identical rows)."""
    import jax
    import jax.numpy as jnp

    from gradoracle.adapters.jax_adapter import JaxOps

    class Ops(JaxOps):
        def conv_nd(
            self, x: Any, k: Any, b: Any, stride: Any, padding: Any, dilation: Any, groups: int
        ) -> Any:
            correct = JaxOps.conv_nd.__get__(self)
            if b is None:
                return correct(x, k, b, stride, padding, dilation, groups)

            @jax.custom_vjp
            def f(x: Any, k: Any, b: Any) -> Any:
                return correct(x, k, b, stride, padding, dilation, groups)

            def fwd(x: Any, k: Any, b: Any) -> Any:
                return f(x, k, b), (x, k, b)

            def bwd(res: Any, gz: Any) -> Any:
                x, k, b = res
                _, pull = jax.vjp(
                    lambda x, k, b: correct(x, k, b, stride, padding, dilation, groups), x, k, b
                )
                gx, gk, gb = pull(gz)
                if gz.shape[0] > 1:
                    gb = gz.shape[0] * jnp.sum(gz[0], axis=tuple(range(1, gz.ndim - 1)))
                return gx, gk, gb

            f.defvjp(fwd, bwd)
            return f(x, k, b)

    return _jax_adapter(name, Ops)


# ======================================================================================
# forward mode (jvp)
# ======================================================================================


def _conv_terms(p: dict[str, Any], t: dict[str, Any], params: dict[str, Any], x_term: Any = None) -> Any:
    """``conv(vX, K) + conv(X, vK) + vb`` (``x_term`` replaces the first)."""
    jv = _conv(t["x"], p["k"], None, params) if x_term is None else x_term
    jv = jv + _conv(p["x"], t["k"], None, params)
    if "b" in t:
        jv = jv + _bias_shape(t["b"], jv.ndim)
    return jv


def _conv_jvp_same_swapped(call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]) -> Any:
    """[conv, padding="same" with an odd d(k-1)] the input tangent's term pads the extra element
    before instead of after (reverse mode is right)."""
    x_term = None
    if _odd_same(params, p["k"]):
        x_term = _conv_same_swapped(t["x"], p["k"], None, params["dilation"], params["groups"])
    return _conv_terms(p, t, params, x_term)


def _conv_jvp_kernel_dilation_ignored(
    call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]
) -> Any:
    """[conv, dilation > 1, no "same"] the kernel tangent's term ``conv(X, vK)`` is computed
    undilated and cropped to the output's shape."""
    if isinstance(params["padding"], str) or all(d == 1 for d in params["dilation"]):
        return _conv_terms(p, t, params)
    x_term = _conv(t["x"], p["k"], None, params)
    k_term = _conv(p["x"], t["k"], None, params, dilation=(1,) * len(params["dilation"]))
    k_term = k_term[(slice(None), slice(None), *(slice(0, n) for n in x_term.shape[2:]))]
    jv = x_term + k_term
    if "b" in t:
        jv = jv + _bias_shape(t["b"], jv.ndim)
    return jv


def _conv_jvp_bias_first_sample(
    call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]
) -> Any:
    """[conv with bias, N > 1] the bias tangent is added to sample 0 only."""
    jv = _conv_terms({**p}, {k: v for k, v in t.items() if k != "b"}, params)
    if "b" in t:
        jv = jv.clone()
        jv[0] = jv[0] + _bias_shape(t["b"], jv.ndim)[0]
    return jv


def _linear_jvp_square_weight_transposed(
    call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]
) -> Any:
    """[linear, in == out] the weight tangent's term is ``X vW`` instead of ``X vW^T``."""
    w, vw = p["w"], t["w"]
    wt = vw if w.shape[0] == w.shape[1] else vw.T
    jv = t["x"] @ w.T + p["x"] @ wt
    return jv + t["b"] if "b" in t else jv


def _dense_jvp_two_axes_first_row(
    call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]
) -> Any:
    """[dense, X with two batch axes (B, T, in), T > 1] the input tangent's term uses row 0 of
    the second batch axis for every row (a broadcast of the wrong slice)."""
    vx = t["x"]
    if vx.ndim == 3 and vx.shape[1] > 1:
        vx = vx[:, :1].expand_as(vx)
    jv = vx @ p["w"] + p["x"] @ t["w"]
    return jv + t["b"] if "b" in t else jv


def _ce_grad(logits: Any, target: Any, params: dict[str, Any], **over: Any) -> Any:
    """``dJ/dlogits = r (softmax(Z) - T~)`` of PyTorch's cross-entropy with ``params`` (``over``
    replacing some), written out (no autograd inside a ``jvp`` rule)."""
    import torch

    q = {**params, **over}
    n, c = logits.shape
    t = torch.nn.functional.one_hot(target.long(), c).to(logits.dtype) if target.ndim == 1 else target
    eps = q["label_smoothing"]
    smoothed = (1 - eps) * t + eps / c
    r = 1 / n if q["reduction"] == "mean" else 1.0
    return r * (torch.softmax(logits, dim=-1) * smoothed.sum(-1, keepdim=True) - smoothed)


def _ce_target_term(p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]) -> Any:
    """The target tangent's term (probability targets only; index targets are constant)."""
    import torch

    target = p["target"]
    if target.ndim != 2:
        return 0.0
    eps = params["label_smoothing"]
    logp = torch.log_softmax(p["logits"], dim=-1)
    per_row = -((1 - eps) * t["target"] * logp).sum(-1)
    return per_row.mean() if params["reduction"] == "mean" else per_row.sum()


def _ce_jvp_smoothing_twice(call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]) -> Any:
    """[cross-entropy, label smoothing > 0] the tangent rule smooths the already smoothed target
    again (``eps' = 1 - (1 - eps)^2``)."""
    eps = params["label_smoothing"]
    eps2 = 1 - (1 - eps) ** 2 if eps > 0 else 0.0
    gz = _ce_grad(p["logits"], p["target"], params, label_smoothing=eps2)
    return (gz * t["logits"]).sum() + _ce_target_term(p, t, params)


def _ce_jvp_mean_over_classes(call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]) -> Any:
    """[cross-entropy, reduction="mean", N != C] the tangent is divided by the class count C
    instead of the batch size N."""
    gz = _ce_grad(p["logits"], p["target"], params)
    jv = (gz * t["logits"]).sum() + _ce_target_term(p, t, params)
    n, c = p["logits"].shape
    return jv * n / c if params["reduction"] == "mean" else jv


def _max_pool_indices(x: Any, params: dict[str, Any]) -> Any:
    import torch.nn.functional as F

    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[x.ndim - 3]
    _, idx = pool(
        x,
        tuple(params["window"]),
        tuple(params["stride"]),
        tuple(params["padding"]),
        tuple(params["dilation"]),
        ceil_mode=params["ceil_mode"],
        return_indices=True,
    )
    return idx


def _max_pool_jvp_padding_shift(
    call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]
) -> Any:
    """[max pool, padding > 0 on the last axis] the tangent is gathered at the argmax shifted by
    the padding along the last axis (padded coordinates used as input coordinates)."""
    x, v = p["x"], t["x"]
    idx = _max_pool_indices(x, params)
    pad = params["padding"][-1]
    last = x.shape[-1]
    if pad:
        col = idx % last
        idx = idx - col + (col + pad).clamp(max=last - 1)
    flat = v.flatten(2).gather(2, idx.flatten(2))
    return flat.reshape(idx.shape)


def _avg_pool_jvp_ceil_full_divisor(
    call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]
) -> Any:
    """[avg pool, ceil_mode] the tangent of every window is divided by the full window size
    (the clipped divisor of a partial last window ignored)."""
    import torch.nn.functional as F

    v = t["x"]
    window, stride, padding = tuple(params["window"]), tuple(params["stride"]), tuple(params["padding"])
    if not params["ceil_mode"]:
        return call(v)
    full = math.prod(window)
    if v.ndim == 3:  # avg_pool1d has no divisor_override: a 2-d pool over a trailing axis of 1
        out = F.avg_pool2d(
            v[..., None], (*window, 1), (*stride, 1), (*padding, 0), True, params["count_include_pad"], full
        )
        return out[..., 0]
    pool = F.avg_pool2d if v.ndim == 4 else F.avg_pool3d
    return pool(v, window, stride, padding, True, params["count_include_pad"], full)


def _abs_jvp_sign_dropped(call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]) -> Any:
    """[abs, x < 0] the tangent is passed through unsigned (``v`` instead of ``-v``)."""
    x = p["x"]
    return t["x"] * (x != 0).to(x.dtype)


def _sigmoid_jvp_stable_branch(
    call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]
) -> Any:
    """[sigmoid, x < 0] the numerically stable branch computes ``e / (1 + e)`` (``e = exp(x)``)
    without the second ``(1 + e)``: sigma(x) instead of sigma(x)(1 - sigma(x))."""
    import torch

    x = p["x"]
    s = torch.sigmoid(x)
    e = torch.exp(torch.clamp(x, max=0))
    return t["x"] * torch.where(x < 0, e / (1 + e), s * (1 - s))


def _softplus_jvp_float32_threshold(
    call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]
) -> Any:
    """[softplus, float32, 10 < x] the float32 kernel's linear tail starts at 10 (a half-precision
    threshold): derivative 1 where sigma(x) is 1 - 4.5e-5 at 10."""
    import torch

    x = p["x"]
    s = torch.sigmoid(x)
    if x.dtype == torch.float32:
        s = torch.where(x > 10, torch.ones_like(s), s)
    return t["x"] * s


def _matvec_jvp_square_transposed(
    call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]
) -> Any:
    """[matvec W x with a square W] the weight tangent's term is ``vW^T x``."""
    a, b = p["a"], p["b"]
    va, vb = t["a"], t["b"]
    if a.ndim == 2 and b.ndim == 1 and a.shape[0] == a.shape[1]:
        return va.T @ b + a @ vb
    return va @ b + a @ vb


def _softmax_ce_jvp_soft_target_argmax(
    call: Any, p: dict[str, Any], t: dict[str, Any], params: dict[str, Any]
) -> Any:
    """[softmax cross-entropy, a soft (not one-hot) target] the logits' tangent rule uses the
    one-hot of the target's argmax (the class-index kernel)."""
    import torch

    z, y = p["logits"], p["target"]
    soft = bool((y.max() < 1).item())
    yy = torch.nn.functional.one_hot(y.argmax(), y.shape[0]).to(z.dtype) if soft else y
    logp = torch.log_softmax(z, dim=-1)
    return ((logp.exp() - yy) * t["logits"]).sum() - (logp * t["target"]).sum()


# ======================================================================================
# second order (hvp): right gradient, wrong Hessian in one configuration
# ======================================================================================


def _conv_hvp_grouped_cross_dropped(self: Any, op: Any, **a: Any) -> Any:
    """[conv, groups > 1] the double backward drops the X-K cross term (``(H v)_K`` and
    ``(H v)_X`` are 0 for grouped convolutions)."""
    if a["groups"] > 1:
        return -op(_d(a["x"]), _d(a["k"]), None, a["stride"], a["padding"], a["dilation"], a["groups"])
    return None


def _conv_hvp_same_swapped(self: Any, op: Any, **a: Any) -> Any:
    """[conv, padding="same" with an odd d(k-1)] the double backward's cross term pads the extra
    element before."""
    if _odd_same({"padding": a["padding"], "dilation": a["dilation"]}, a["k"]):
        dx, dk = _d(a["x"]), _d(a["k"])
        right = op(dx, dk, None, a["stride"], a["padding"], a["dilation"], a["groups"])
        return _conv_same_swapped(dx, dk, None, a["dilation"], a["groups"]) - right
    return None


def _conv3d_hvp_cross_sign(self: Any, op: Any, **a: Any) -> Any:
    """[conv3d] the double backward's cross term has the wrong sign."""
    if a["x"].ndim == 5:
        return -2 * op(_d(a["x"]), _d(a["k"]), None, a["stride"], a["padding"], a["dilation"], a["groups"])
    return None


def _linear_hvp_two_axes_half(self: Any, op: Any, **a: Any) -> Any:
    """[linear, X with two batch axes] the double backward's cross term is halved (a mean of the
    two rules for the flattened and the unflattened batch)."""
    if a["x"].ndim == 3:
        return -0.5 * op(_d(a["x"]), _d(a["w"]), None)
    return None


def _dense_hvp_square_transposed(self: Any, op: Any, **a: Any) -> Any:
    """[dense, in == out] the double backward's cross term uses ``vW^T``."""
    w = a["w"]
    if w.shape[0] == w.shape[1]:
        dx, dw = _d(a["x"]), _d(w)
        return dx @ dw.T - dx @ dw
    return None


def _ce_quadratic(logits: Any) -> tuple[Any, Any, Any]:
    """``(sum_n sum_c p dZ^2, sum_n (p . dZ)^2, N)`` with p = softmax(Z) held constant."""
    import torch

    dz = _d(logits)
    p = torch.softmax(logits.detach(), dim=-1)
    return (p * dz * dz).sum(), ((p * dz).sum(-1) ** 2).sum(), logits.shape[0]


def _ce_hvp_mean_twice(self: Any, op: Any, **a: Any) -> Any:
    """[cross-entropy, reduction="mean", N > 1] the double backward divides by N twice."""
    if a["reduction"] == "mean" and a["logits"].shape[0] > 1:
        diag, outer, n = _ce_quadratic(a["logits"])
        return 0.5 * (1 / n**2 - 1 / n) * (diag - outer)
    return None


def _ce_hvp_soft_targets_diagonal(self: Any, op: Any, **a: Any) -> Any:
    """[cross-entropy, probability targets (N, C)] the softmax Hessian is diag(p) only (the
    ``- p p^T`` term missing on the soft-target kernel)."""
    if a["target"].ndim == 2:
        _, outer, n = _ce_quadratic(a["logits"])
        r = 1 / n if a["reduction"] == "mean" else 1.0
        return 0.5 * r * outer
    return None


def _ce_hvp_batch1_diagonal(self: Any, op: Any, **a: Any) -> Any:
    """[cross-entropy, N = 1] the squeezed batch-1 double backward drops ``- p p^T``."""
    if a["logits"].shape[0] == 1:
        _, outer, _ = _ce_quadratic(a["logits"])
        return 0.5 * outer
    return None


def _matvec_hvp_square_transposed(self: Any, op: Any, **a: Any) -> Any:
    """[matvec W x, square W] the double backward's cross term uses ``vW^T``."""
    m, v = a["a"], a["b"]
    if m.ndim == 2 and v.ndim == 1 and m.shape[0] == m.shape[1]:
        dm, dv = _d(m), _d(v)
        return dm.T @ dv - dm @ dv
    return None


def _elementwise_curvature(fn: Callable[[Any], Any]) -> Callable[..., Any]:
    """``0.5 c(x) d^2``: the Hessian's diagonal plus ``c(x)`` (``c`` of the detached input)."""

    def extra(self: Any, op: Any, **a: Any) -> Any:
        x = a["x"]
        c = fn(x.detach())
        if c is None:
            return None
        d = _d(x)
        return 0.5 * c * d * d

    return extra


def _tanh_f32_missing_factor(x: Any) -> Any:
    """[tanh, float32] f'' = -2 t instead of -2 t (1 - t^2) (the float32 kernel's missing factor)."""
    import torch

    if x.dtype != torch.float32:
        return None
    t = torch.tanh(x)
    return -2 * t - (-2 * t * (1 - t * t))


def _sigmoid_negative_sign(x: Any) -> Any:
    """[sigmoid, x < 0] f'' has the wrong sign for negative inputs."""
    import torch

    s = torch.sigmoid(x)
    f2 = s * (1 - s) * (1 - 2 * s)
    return torch.where(x < 0, -2 * f2, torch.zeros_like(f2))


def _softplus_uses_output(x: Any) -> Any:
    """[softplus] f'' = sigma'(y) at the output y = softplus(x) instead of at x."""
    import torch

    y = torch.nn.functional.softplus(x)
    sy, sx = torch.sigmoid(y), torch.sigmoid(x)
    return sy * (1 - sy) - sx * (1 - sx)


def _gelu_missing_x2(x: Any) -> Any:
    """[gelu] f'' = 2 phi(x), the ``- x^2 phi(x)`` term dropped."""
    phi = (-0.5 * x * x).exp() / math.sqrt(2 * math.pi)
    return x * x * phi


def _max_pool_hvp_dilated(self: Any, op: Any, **a: Any) -> Any:
    """[max pool, dilation > 1] the double backward is ``J^T J v`` instead of 0 (the dilated
    path's router differentiated as if it were a smooth gather-and-square)."""
    if any(d > 1 for d in a["dilation"]):
        m = op(**a)
        return 0.5 * _d(m) ** 2
    return None


def _avg_pool_hvp_exclude_pad(self: Any, op: Any, **a: Any) -> Any:
    """[avg pool, count_include_pad=False] the double backward is ``J^T J v`` instead of 0."""
    if not a["count_include_pad"]:
        m = op(**a)
        return 0.5 * _d(m) ** 2
    return None


def _jax_conv_hvp_depthwise_cross_dropped(name: str) -> Any:
    """JAX [depthwise conv: groups == C_in > 1] the double backward drops the X-K cross term."""
    import jax

    from gradoracle.adapters.jax_adapter import JaxOps

    class Ops(JaxOps):
        def conv_nd(
            self, x: Any, k: Any, b: Any, stride: Any, padding: Any, dilation: Any, groups: int
        ) -> Any:
            out = JaxOps.conv_nd(self, x, k, b, stride, padding, dilation, groups)
            if groups > 1 and groups == x.shape[1]:
                sg = jax.lax.stop_gradient
                out = out - JaxOps.conv_nd(
                    self, x - sg(x), k - sg(k), None, stride, padding, dilation, groups
                )
            return out

    return _jax_adapter(name, Ops)


# ======================================================================================
# the records
# ======================================================================================


def _doc(f: Any) -> str:
    return " ".join((f.__doc__ or "").split())


def _vjp(
    name: str, target: str, op: str, arrays: tuple[str, ...], bug: VjpBug, dtype: str = "float64"
) -> ModeMutant:
    return ModeMutant(name, _doc(bug), target, "vjp", dtype, BW, "torch", _torch_vjp_mutant(op, arrays, bug))


def _jvp(
    name: str, target: str, op: str, arrays: tuple[str, ...], rule: Any, dtype: str = "float64"
) -> ModeMutant:
    return ModeMutant(
        name, _doc(rule), target, "jvp", dtype, FM, "torch", _torch_jvp_mutant(op, arrays, rule)
    )


def _hvp(name: str, target: str, op: str, extra: Any, doc: Any = None, dtype: str = "float64") -> ModeMutant:
    return ModeMutant(
        name, _doc(doc or extra), target, "hvp", dtype, SO, "torch", _torch_hessian_mutant(op, extra)
    )


CONV = ("x", "k", "b")
LIN = ("x", "w", "b")
CE = ("logits", "target")
X = ("x",)

MUTANTS: tuple[ModeMutant, ...] = (
    # ---- reverse mode (vjp) on the layer forms
    _vjp("b5-conv-vjp-same-pad-swapped", "conv2d-layer", "conv_nd", CONV, _conv_same_swapped_input),
    _vjp("b5-conv-vjp-filter-group0-input", "conv1d-layer", "conv_nd", CONV, _conv_filter_grad_group0_input),
    _vjp("b5-conv3d-vjp-bias-last-axis-first", "conv3d-layer", "conv_nd", CONV, _conv3d_bias_last_axis_first),
    _vjp(
        "b5-conv-vjp-depthwise-kernel-flipped", "conv2d-layer", "conv_nd", CONV, _conv_depthwise_input_flipped
    ),
    _vjp(
        "b5-conv-vjp-batch1-drops-last-channel",
        "conv1d-layer",
        "conv_nd",
        CONV,
        _conv_batch1_drops_last_channel,
    ),
    _vjp(
        "b5-linear-vjp-square-weight-transposed",
        "linear-layer",
        "linear",
        LIN,
        _linear_square_weight_transposed,
    ),
    _vjp(
        "b5-linear-vjp-two-axes-first-slice",
        "linear-layer",
        "linear",
        LIN,
        _linear_two_batch_axes_first_slice,
    ),
    _vjp("b5-dense-vjp-bias-mean-two-axes", "dense-layer", "dense", LIN, _dense_bias_mean_two_axes),
    _vjp(
        "b5-max-pool-vjp-ceil-last-window-dropped",
        "max-pool-layer",
        "max_pool_nd",
        X,
        _max_pool_ceil_last_window_dropped,
    ),
    _vjp(
        "b5-avg-pool-vjp-include-pad-ignored",
        "avg-pool-layer",
        "avg_pool_nd",
        X,
        _avg_pool_include_pad_ignored,
    ),
    _vjp(
        "b5-ce-vjp-soft-target-smoothing-ignored",
        "cross-entropy-batch",
        "cross_entropy",
        CE,
        _ce_soft_targets_smoothing_ignored,
    ),
    _vjp("b5-ce-vjp-sum-divided-by-n", "cross-entropy-batch", "cross_entropy", CE, _ce_sum_divided_by_n),
    ModeMutant(
        "b5-max-pool-vjp-ties-to-all-maxima",
        _doc(_max_pool_ties_to_all),
        "max-pool",
        "vjp",
        "float64",
        Fault.OUTSIDE_SUBDIFFERENTIAL,
        "torch",
        _torch_vjp_mutant("max_pool2d", X, _max_pool_ties_to_all),
    ),
    _vjp(
        "b5-global-avg-vjp-3d-wrong-axis", "global-avg-pool", "global_avg_pool", X, _global_avg_3d_wrong_axis
    ),
    ModeMutant(
        "b5-jax-conv-vjp-bias-row0-times-n",
        _doc(_jax_conv_bias_batch1),
        "conv2d-layer",
        "vjp",
        "float64",
        BW,
        "jax",
        _jax_conv_bias_batch1,
    ),
    # ---- forward mode (jvp)
    _jvp("b5-conv-jvp-same-pad-swapped", "conv2d-layer", "conv_nd", CONV, _conv_jvp_same_swapped),
    _jvp(
        "b5-conv-jvp-kernel-dilation-ignored",
        "conv1d-layer",
        "conv_nd",
        CONV,
        _conv_jvp_kernel_dilation_ignored,
    ),
    _jvp("b5-conv3d-jvp-bias-first-sample", "conv3d-layer", "conv_nd", CONV, _conv_jvp_bias_first_sample),
    _jvp(
        "b5-linear-jvp-square-weight-transposed",
        "linear-layer",
        "linear",
        LIN,
        _linear_jvp_square_weight_transposed,
    ),
    _jvp("b5-dense-jvp-two-axes-first-row", "dense-layer", "dense", LIN, _dense_jvp_two_axes_first_row),
    _jvp("b5-ce-jvp-smoothing-twice", "cross-entropy-batch", "cross_entropy", CE, _ce_jvp_smoothing_twice),
    _jvp(
        "b5-ce-jvp-mean-over-classes", "cross-entropy-batch", "cross_entropy", CE, _ce_jvp_mean_over_classes
    ),
    _jvp("b5-max-pool-jvp-padding-shift", "max-pool-layer", "max_pool_nd", X, _max_pool_jvp_padding_shift),
    _jvp(
        "b5-avg-pool-jvp-ceil-full-divisor",
        "avg-pool-layer",
        "avg_pool_nd",
        X,
        _avg_pool_jvp_ceil_full_divisor,
    ),
    _jvp("b5-abs-jvp-negative-sign-dropped", "elementwise-abs", "abs", X, _abs_jvp_sign_dropped),
    _jvp("b5-sigmoid-jvp-stable-branch", "elementwise-sigmoid", "sigmoid", X, _sigmoid_jvp_stable_branch),
    _jvp(
        "b5-softplus-jvp-float32-threshold-10",
        "elementwise-softplus",
        "softplus",
        X,
        _softplus_jvp_float32_threshold,
        dtype="float32",
    ),
    _jvp(
        "b5-matvec-jvp-square-transposed",
        "matvec-weight-grad",
        "matmul",
        ("a", "b"),
        _matvec_jvp_square_transposed,
    ),
    _jvp(
        "b5-softmax-ce-jvp-soft-target-argmax",
        "mlp-a-logits",
        "softmax_cross_entropy",
        CE,
        _softmax_ce_jvp_soft_target_argmax,
    ),
    # ---- second order (hvp)
    _hvp("b5-conv-hvp-grouped-cross-dropped", "conv1d-layer", "conv_nd", _conv_hvp_grouped_cross_dropped),
    _hvp("b5-conv-hvp-same-pad-swapped", "conv2d-layer", "conv_nd", _conv_hvp_same_swapped),
    _hvp("b5-conv3d-hvp-cross-sign", "conv3d-layer", "conv_nd", _conv3d_hvp_cross_sign),
    _hvp("b5-linear-hvp-two-axes-half", "linear-layer", "linear", _linear_hvp_two_axes_half),
    _hvp("b5-dense-hvp-square-transposed", "dense-layer", "dense", _dense_hvp_square_transposed),
    _hvp("b5-ce-hvp-mean-twice", "cross-entropy-batch", "cross_entropy", _ce_hvp_mean_twice),
    _hvp(
        "b5-ce-hvp-soft-targets-diagonal",
        "cross-entropy-batch",
        "cross_entropy",
        _ce_hvp_soft_targets_diagonal,
    ),
    _hvp("b5-mlp-batch-hvp-batch1-diagonal", "mlp-batch", "cross_entropy", _ce_hvp_batch1_diagonal),
    _hvp("b5-matvec-hvp-square-transposed", "matvec-weight-grad", "matmul", _matvec_hvp_square_transposed),
    _hvp(
        "b5-tanh-hvp-float32-missing-factor",
        "elementwise-tanh",
        "tanh",
        _elementwise_curvature(_tanh_f32_missing_factor),
        _tanh_f32_missing_factor,
        dtype="float32",
    ),
    _hvp(
        "b5-sigmoid-hvp-negative-sign",
        "elementwise-sigmoid",
        "sigmoid",
        _elementwise_curvature(_sigmoid_negative_sign),
        _sigmoid_negative_sign,
    ),
    _hvp(
        "b5-softplus-hvp-uses-output",
        "elementwise-softplus",
        "softplus",
        _elementwise_curvature(_softplus_uses_output),
        _softplus_uses_output,
    ),
    _hvp(
        "b5-gelu-hvp-missing-x2",
        "elementwise-gelu",
        "gelu",
        _elementwise_curvature(_gelu_missing_x2),
        _gelu_missing_x2,
    ),
    _hvp("b5-max-pool-hvp-dilated", "max-pool-layer", "max_pool_nd", _max_pool_hvp_dilated),
    _hvp("b5-avg-pool-hvp-exclude-pad", "avg-pool-layer", "avg_pool_nd", _avg_pool_hvp_exclude_pad),
    ModeMutant(
        "b5-jax-conv-hvp-depthwise-cross-dropped",
        _doc(_jax_conv_hvp_depthwise_cross_dropped),
        "conv2d-layer",
        "hvp",
        "float64",
        SO,
        "jax",
        _jax_conv_hvp_depthwise_cross_dropped,
    ),
)

MUTANTS_BY_NAME: dict[str, ModeMutant] = {m.name: m for m in MUTANTS}

#: Mutants that survive on purpose: name -> (the seeds it survives at, None for every seed; why).
#: Measured at seeds 0-4 with ``mutant_settings(30, seed)``.
EXPECTED_SURVIVORS: dict[str, tuple[tuple[int, ...] | None, str]] = {
    "b5-softplus-jvp-float32-threshold-10": (
        None,
        "not reported as forward-mode: the float32-only linear tail from x = 10 is off by at most "
        "2^-14.4 relative (x in (10, 12.5)), and float64 is right, which is what the precision "
        "judge reads as a TF32-like reduced-precision finding (seeds 0, 1, 3); at seeds 2 and 4 "
        "no drawn element falls where the error exceeds the float32 tolerance (it passes)",
    ),
    "b5-matvec-jvp-square-transposed": (
        (4,),
        "a draw blind spot of the notes' shape menus: at seed 4 Hypothesis's 30 examples draw no "
        "square W ((2, 2), (4, 4): 2 of MATRIX_SHAPES' 9 entries); the notes identities have no "
        "covering set and no top-ups (survives at 1 seed of 0-19)",
    ),
    "b5-matvec-hvp-square-transposed": (
        (4,),
        "the same draws as b5-matvec-jvp-square-transposed: no square W at seed 4 (1 seed of 0-19)",
    ),
}


def expected_to_survive(name: str, seed: int) -> str | None:
    """Why mutant ``name`` is expected to survive at ``seed``, or None (it must be caught)."""
    entry = EXPECTED_SURVIVORS.get(name)
    if entry is None or (entry[0] is not None and seed not in entry[0]):
        return None
    return entry[1]
