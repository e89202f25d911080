"""PyTorch layer mutants of the second adversarial audit: framework backward passes wrong in one
configuration only, as a framework team's real bugs look.

Each wraps one layer op of the PyTorch adapter with
:func:`~gradoracle.selftest.mutant_frameworks._torch_layer_adapter` (the real op forward, the
framework's own gradient for every input but one) or, for the forward-mode and second-order
ones, an ``autograd.Function`` with ``setup_context``; the one wrong gradient is written from a
formula that is right exactly when the mutant's parameter
(:mod:`gradoracle.selftest.layer_parameters`) is off.  torch is imported only inside the
factories.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gradoracle.selftest.mutant_frameworks import (
    _torch_adapter,
    _torch_grads,
    _torch_layer_adapter,
    _torch_pad,
)

Pads = Sequence[tuple[int, int]]


def _transposed_input(
    g: Any,
    k: Any,
    spatial: Sequence[int],
    stride: Sequence[int],
    pads: Pads,
    dilation: Sequence[int],
    groups: int,
) -> Any:
    """``dJ/dX``: the transposed convolution of ``g`` with ``k`` (``g`` dilated by ``stride``,
    ``k`` sampled by ``dilation``), cropped to ``[lo, lo + S)`` per axis (zero-extended first
    where a wrong geometry makes it shorter)."""
    import torch.nn.functional as F

    transpose = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[g.ndim - 3]
    full = transpose(g, k, None, stride=tuple(stride), padding=0, groups=groups, dilation=tuple(dilation))
    short = [max(0, lo + m - size) for (lo, _), m, size in zip(pads, spatial, full.shape[2:], strict=True)]
    full = _torch_pad(full, [(0, s) for s in short])
    index = tuple(slice(lo, lo + m) for (lo, _), m in zip(pads, spatial, strict=True))
    return full[(slice(None), slice(None), *index)]


def _conv_geometry(x: Any, k: Any, p: dict[str, Any]) -> tuple[Any, ...]:
    from gradoracle.reference_layers import conv_pads

    kernel, dilation = tuple(k.shape[2:]), tuple(p["dilation"])
    return tuple(x.shape[2:]), tuple(p["stride"]), conv_pads(p["padding"], kernel, dilation), dilation


def _conv_input_mutant(name: str, wrong: Any) -> Any:
    """A conv layer whose input gradient is :func:`_transposed_input` with the geometry
    ``wrong(x, k, stride, pads, dilation, groups)`` returns (``k`` included)."""

    def bug(call: Any, t: dict[str, Any], p: dict[str, Any], g: Any) -> list[Any]:
        x, k = t["x"], t["k"]
        grads = _torch_grads(call, list(t.values()), g)
        spatial, stride, pads, dilation = _conv_geometry(x, k, p)
        k2, stride, pads, dilation, groups = wrong(x, k, stride, pads, dilation, int(p["groups"]))
        grads[0] = _transposed_input(g, k2, spatial, stride, pads, dilation, groups)
        return grads

    return _torch_layer_adapter(name, "conv_nd", ("x", "k", "b"), bug)


def _torch_conv_input_dilation_ignored(name: str) -> Any:
    """[dilation > 1] dJ/dX: the transposed convolution spreads each kernel tap at ``a``, not ``a d``."""
    return _conv_input_mutant(name, lambda x, k, s, q, d, g: (k, s, q, (1,) * len(d), g))


def _torch_conv_input_groups_crossed(name: str) -> Any:
    """[groups > 1] dJ/dX: each group's delta is spread with the *mirrored* group's filters."""

    def wrong(x: Any, k: Any, s: Any, q: Any, d: Any, groups: int) -> Any:
        og = k.shape[0] // groups
        mirrored = k.reshape(groups, og, *k.shape[1:]).flip(0).reshape(k.shape)
        return mirrored, s, q, d, groups

    return _conv_input_mutant(name, wrong)


def _torch_conv_input_same_pad_swapped(name: str) -> Any:
    """[asymmetric padding] dJ/dX: cropped with the padding's (before, after) swapped, as if
    ``padding='same'`` put its odd extra element before the input (it goes after)."""
    return _conv_input_mutant(name, lambda x, k, s, q, d, g: (k, s, [(hi, lo) for lo, hi in q], d, g))


def _torch_conv_input_first_axis_stride(name: str) -> Any:
    """[anisotropic stride] dJ/dX: the transposed convolution dilates delta by the first axis's
    stride on every axis."""
    return _conv_input_mutant(name, lambda x, k, s, q, d, g: (k, (s[0],) * len(s), q, d, g))


def _torch_conv_input_kernel_axes_swapped(name: str) -> Any:
    """[square 2-D kernel, k > 1] dJ/dX: the kernel's two spatial axes swapped (an HW/WH layout
    slip that only type-checks when the kernel is square)."""

    def wrong(x: Any, k: Any, s: Any, q: Any, d: Any, g: int) -> Any:
        if k.ndim == 4 and k.shape[2] == k.shape[3]:
            k = k.transpose(2, 3)
        return k, s, q, d, g

    return _conv_input_mutant(name, wrong)


def _torch_conv_input_batch_mean(name: str) -> Any:
    """[N > 1] dJ/dX: every sample gets the batch's mean input gradient (a batch axis reduced)."""

    def bug(call: Any, t: dict[str, Any], p: dict[str, Any], g: Any) -> list[Any]:
        grads = _torch_grads(call, list(t.values()), g)
        grads[0] = grads[0].mean(0, keepdim=True).expand_as(grads[0]).clone()
        return grads

    return _torch_layer_adapter(name, "conv_nd", ("x", "k", "b"), bug)


def _torch_conv_filter_channels_reversed(name: str) -> Any:
    """[C_in/groups > 1] dJ/dK: the input-channel axis of the filter gradient reversed (a
    channel permutation)."""

    def bug(call: Any, t: dict[str, Any], p: dict[str, Any], g: Any) -> list[Any]:
        grads = _torch_grads(call, list(t.values()), g)
        grads[1] = grads[1].flip(1)
        return grads

    return _torch_layer_adapter(name, "conv_nd", ("x", "k", "b"), bug)


def _torch_conv_filter_batch_mean(name: str) -> Any:
    """[N > 1] dJ/dK averaged over the batch instead of summed."""

    def bug(call: Any, t: dict[str, Any], p: dict[str, Any], g: Any) -> list[Any]:
        grads = _torch_grads(call, list(t.values()), g)
        grads[1] = grads[1] / t["x"].shape[0]
        return grads

    return _torch_layer_adapter(name, "conv_nd", ("x", "k", "b"), bug)


def _torch_conv_filter_first_four_samples(name: str) -> Any:
    """[N > 4] dJ/dK summed over the first four samples only (a batch tile of 4 never advanced)."""

    def bug(call: Any, t: dict[str, Any], p: dict[str, Any], g: Any) -> list[Any]:
        grads = _torch_grads(call, list(t.values()), g)
        head = {**t, "x": t["x"][:4]}
        grads[1] = _torch_grads(call, list(head.values()), g[:4])[1]
        return grads

    return _torch_layer_adapter(name, "conv_nd", ("x", "k", "b"), bug)


def _torch_conv_bias_grad_spatial_mean(name: str) -> Any:
    """[output with more than one position] dJ/db = delta summed over the batch and *averaged*
    over space."""

    def bug(call: Any, t: dict[str, Any], p: dict[str, Any], g: Any) -> list[Any]:
        grads = _torch_grads(call, list(t.values()), g)
        if "b" in t:
            grads[2] = g.sum(0).reshape(g.shape[1], -1).mean(-1)
        return grads

    return _torch_layer_adapter(name, "conv_nd", ("x", "k", "b"), bug)


def _torch_max_pool_ceil_window_dropped(name: str) -> Any:
    """[ceil_mode] the max pool's backward routes the floor-mode windows only: the last,
    partial window's delta is dropped."""
    import torch.nn.functional as F

    def bug(call: Any, t: dict[str, Any], p: dict[str, Any], g: Any) -> list[Any]:
        x = t["x"]
        pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[x.ndim - 3]

        def floor_pool(x: Any) -> Any:
            return pool(x, tuple(p["window"]), tuple(p["stride"]), tuple(p["padding"]), tuple(p["dilation"]))

        out = floor_pool(x.detach())
        head = g[(slice(None), slice(None), *(slice(0, m) for m in out.shape[2:]))]
        return _torch_grads(floor_pool, [x], head.contiguous())

    return _torch_layer_adapter(name, "max_pool_nd", ("x",), bug)


def _torch_max_pool_dilation_ignored(name: str) -> Any:
    """[dilation > 1] the max pool's router converts each window's argmax offset ``a d`` back to
    an input position as ``p s - pad + a`` (the dilation dropped)."""
    import torch
    import torch.nn.functional as F

    def bug(call: Any, t: dict[str, Any], p: dict[str, Any], g: Any) -> list[Any]:
        x = t["x"]
        window, stride, padding = tuple(p["window"]), tuple(p["stride"]), tuple(p["padding"])
        dilation = tuple(p["dilation"])
        pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[x.ndim - 3]
        _, where = pool(
            x.detach(), window, stride, padding, dilation, ceil_mode=p["ceil_mode"], return_indices=True
        )
        spatial = tuple(x.shape[2:])
        idx = np.unravel_index(where.cpu().numpy(), spatial)
        grids = np.meshgrid(*(np.arange(o) for o in where.shape[2:]), indexing="ij")
        moved = []
        for axis, (pos, grid) in enumerate(zip(idx, grids, strict=True)):
            start = grid * stride[axis] - padding[axis]
            a = (pos - start) // dilation[axis]
            moved.append(np.clip(start + a, 0, spatial[axis] - 1))
        flat = np.ravel_multi_index(tuple(moved), spatial)
        out = torch.zeros(x.shape[0], x.shape[1], int(np.prod(spatial)), dtype=g.dtype)
        out.scatter_add_(2, torch.as_tensor(flat.reshape(*where.shape[:2], -1)), g.reshape(*g.shape[:2], -1))
        return [out.reshape(x.shape)]

    return _torch_layer_adapter(name, "max_pool_nd", ("x",), bug)


def _torch_linear_weight_grad_batch_mean(name: str) -> Any:
    """[N > 1] ``F.linear``'s dJ/dW = delta^T X averaged over the rows instead of summed."""

    def bug(call: Any, t: dict[str, Any], p: dict[str, Any], g: Any) -> list[Any]:
        grads = _torch_grads(call, list(t.values()), g)
        grads[1] = grads[1] / int(np.prod(t["x"].shape[:-1]))
        return grads

    return _torch_layer_adapter(name, "linear", ("x", "w", "b"), bug)


def _torch_linear_input_grad_last_row(name: str) -> Any:
    """``F.linear``'s dJ/dX wrong on the last row only (its delta W computed with W's last output
    row dropped): every other row right."""

    def bug(call: Any, t: dict[str, Any], p: dict[str, Any], g: Any) -> list[Any]:
        grads = _torch_grads(call, list(t.values()), g)
        w = t["w"]
        flat = grads[0].reshape(-1, w.shape[1]).clone()
        flat[-1] = g.reshape(-1, w.shape[0])[-1, :-1] @ w[:-1]
        grads[0] = flat.reshape(grads[0].shape)
        return grads

    return _torch_layer_adapter(name, "linear", ("x", "w", "b"), bug)


def _torch_cross_entropy_sum_divided_by_n(name: str) -> Any:
    """[reduction='sum', N > 1] ``F.cross_entropy``'s backward divides by N under 'sum' too."""
    import torch

    def bug(call: Any, t: dict[str, Any], p: dict[str, Any], g: Any) -> list[Any]:
        z, target = t["logits"], t["target"]
        classes, eps = z.shape[-1], float(p["label_smoothing"])
        onehot = target.ndim == z.ndim - 1
        smooth = torch.nn.functional.one_hot(target.long(), classes).to(z.dtype) if onehot else target
        smooth = (1.0 - eps) * smooth + eps / classes
        yhat = torch.softmax(z, dim=-1)
        return [(yhat * smooth.sum(-1, keepdim=True) - smooth) * g / z.shape[0], None]

    return _torch_layer_adapter(name, "cross_entropy", ("logits", "target"), bug)


def _torch_cross_entropy_smoothing_over_c_minus_1(name: str) -> Any:
    """[label_smoothing > 0] the backward smooths the target with ``eps / (C - 1)`` off the true
    class (the forward PyTorch's ``eps / C``)."""
    import torch

    def bug(call: Any, t: dict[str, Any], p: dict[str, Any], g: Any) -> list[Any]:
        z, target = t["logits"], t["target"]
        classes, eps = z.shape[-1], float(p["label_smoothing"])
        onehot = target.ndim == z.ndim - 1
        hard = torch.nn.functional.one_hot(target.long(), classes).to(z.dtype) if onehot else target
        smooth = (1.0 - eps) * hard + eps / max(classes - 1, 1) * (1 - hard)
        r = 1.0 / z.shape[0] if p["reduction"] == "mean" else 1.0
        yhat = torch.softmax(z, dim=-1)
        return [r * (yhat * smooth.sum(-1, keepdim=True) - smooth) * g, None]

    return _torch_layer_adapter(name, "cross_entropy", ("logits", "target"), bug)


def _torch_cross_entropy_soft_target_argmax(name: str) -> Any:
    """[probability targets] the backward replaces a probability target by the one-hot of its
    argmax (right for one-hot rows)."""
    import torch

    def bug(call: Any, t: dict[str, Any], p: dict[str, Any], g: Any) -> list[Any]:
        z, target = t["logits"], t["target"]
        classes, eps = z.shape[-1], float(p["label_smoothing"])
        index = target.long() if target.ndim == z.ndim - 1 else target.argmax(-1)
        hard = torch.nn.functional.one_hot(index, classes).to(z.dtype)
        smooth = (1.0 - eps) * hard + eps / classes
        r = 1.0 / z.shape[0] if p["reduction"] == "mean" else 1.0
        yhat = torch.softmax(z, dim=-1)
        return [r * (yhat * smooth.sum(-1, keepdim=True) - smooth) * g, None]

    return _torch_layer_adapter(name, "cross_entropy", ("logits", "target"), bug)


def _torch_conv_filter_float16(name: str) -> Any:
    """float32 dJ/dK of ``F.conv{1,2,3}d`` computed from float16 operands (right in float64)."""
    import torch

    def bug(call: Any, t: dict[str, Any], p: dict[str, Any], g: Any) -> list[Any]:
        grads = _torch_grads(call, list(t.values()), g)
        if g.dtype == torch.float32:
            low = [v.half().float() for v in t.values()]
            grads[1] = _torch_grads(call, low, g.half().float())[1]
        return grads

    return _torch_layer_adapter(name, "conv_nd", ("x", "k", "b"), bug)


def _torch_conv_filter_scaled(name: str) -> Any:
    """dJ/dK multiplied by ``1 + 1e-4`` (a small-scale detection case)."""

    def bug(call: Any, t: dict[str, Any], p: dict[str, Any], g: Any) -> list[Any]:
        grads = _torch_grads(call, list(t.values()), g)
        grads[1] = grads[1] * (1 + 1e-4)
        return grads

    return _torch_layer_adapter(name, "conv_nd", ("x", "k", "b"), bug)


# ---- forward mode and second order -----------------------------------------------------


def _torch_linear_mutant(name: str, backward: Any, jvp: Any) -> Any:
    """A PyTorch adapter whose ``F.linear`` is a ``torch.autograd.Function`` with the given
    ``backward(ctx, g)`` and ``jvp(ctx, tx, tw, tb)`` (inputs saved for both modes)."""
    import torch

    from gradoracle.adapters.torch_adapter import TorchOps

    base = TorchOps()

    class Linear(torch.autograd.Function):
        @staticmethod
        def forward(x: Any, w: Any, b: Any) -> Any:
            return base.linear(x, w, b)

        @staticmethod
        def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
            ctx.save_for_backward(*inputs)
            ctx.save_for_forward(*inputs)

    Linear.backward = staticmethod(backward)  # type: ignore[method-assign]
    Linear.jvp = staticmethod(jvp)  # type: ignore[method-assign]

    class Ops(TorchOps):
        def linear(self, x: Any, w: Any, b: Any) -> Any:
            return Linear.apply(x, w, b)

    return _torch_adapter(name, Ops)


def _linear_jvp(ctx: Any, tx: Any, tw: Any, tb: Any, transposed: bool = True) -> Any:
    """``dX W^T + X dW^T + db`` (``transposed=False``: ``dX W`` where W is square, the bug)."""
    import torch

    x, w, b = ctx.saved_tensors
    out = torch.zeros_like(torch.nn.functional.linear(x, w, b))
    if tx is not None:
        out = out + (tx @ w if not transposed and w.shape[0] == w.shape[1] else tx @ w.T)
    if tw is not None:
        out = out + x @ tw.T
    if tb is not None:
        out = out + tb
    return out


def _torch_linear_jvp_transposed(name: str) -> Any:
    """``F.linear`` whose forward-mode rule is ``dX W + X dW^T + db``: the input tangent pushed
    through W instead of W^T (the vjp's matrix), which only fits a square W; reverse mode right."""
    from gradoracle.adapters.torch_adapter import TorchOps

    base = TorchOps()

    def backward(ctx: Any, g: Any) -> Any:
        x, w, b = ctx.saved_tensors
        if b is None:  # a layer without bias: no gradient for its b
            return (*_torch_grads(lambda x, w: base.linear(x, w, None), (x, w), g), None)
        return tuple(_torch_grads(base.linear, (x, w, b), g))

    def jvp(ctx: Any, tx: Any, tw: Any, tb: Any) -> Any:
        return _linear_jvp(ctx, tx, tw, tb, transposed=False)  # the bug: W, not W^T

    return _torch_linear_mutant(name, backward, jvp)


def _torch_linear_hessian_cross_term_missing(name: str) -> Any:
    """``F.linear`` whose weight gradient is computed from a detached X: the gradient is right,
    the double backward misses the cross term ``(H v)_W = U^T v_X`` (``(H v)_X = U v_W`` kept)."""

    def backward(ctx: Any, g: Any) -> Any:
        x, w, b = ctx.saved_tensors
        gx = g @ w
        gw = g.reshape(-1, w.shape[0]).T @ x.detach().reshape(-1, w.shape[1])  # the bug: detach
        gb = g.reshape(-1, w.shape[0]).sum(0) if b is not None else None  # None: a layer without bias
        return gx, gw, gb

    return _torch_linear_mutant(name, backward, _linear_jvp)
