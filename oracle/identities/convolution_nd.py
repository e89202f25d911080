"""The notes' convolution as frameworks ship it: n-d, batches, channels, groups, stride,
zero padding (including 'same'), dilation, with and without bias, by one closed form for 1-D,
2-D and 3-D.

Forward (cross-correlation, as every framework computes it), with ``Xpad`` the input padded
by zeros, ``g = o // Og`` the group of output channel ``o`` and ``Cg = C_in / groups``::

    Z[n, o, p] = b[o] + sum_{c < Cg, a} Xpad[n, g Cg + c, p s + a d] K[o, c, a]

Derivation from the notes: Z is linear in K, in X and in b, so each gradient is the
adjoint of the index map above (the notes' ``dJ/dK = X * delta`` and ``dJ/dX =
pad(delta, k-1) * rot180(K)`` are its special case N = C = 1, s = d = 1, no padding):

- ``dJ/dK[o, c, a] = sum_{n, p} delta[n, o, p] Xpad[n, g Cg + c, p s + a d]``: the padded
  input correlated with delta *dilated by the stride*, sampled every ``d`` (the dilation);
- ``dJ/dX = crop_pad( sum_a scatter of K[o, c, a] delta[n, o, p] to p s + a d )``: the
  transposed convolution, i.e. delta dilated by the stride, padded by ``d (k - 1)``,
  correlated with rot180(K) (dilated by d, in/out channels swapped within each group), then
  cropped by the padding; input positions no window reaches get 0;
- ``dJ/db[o] = sum_{n, p} delta[n, o, p]``: delta summed over the batch and space.

Without bias (``bias=False``, PyTorch's ``bias=False``, Flax's ``use_bias=False``) the forward
passes ``b=None`` to the op, so Z has no b term: ``dJ/dX`` and ``dJ/dK`` are the same formulas
(Z's dependence on X and K does not change) and ``dJ/db = 0`` (the drawn b is not an input of
the op; a framework must report no gradient, or zeros, for it).  Frameworks run a layer without
bias through code paths of its own (no bias add to fuse, no bias gradient to reduce), so the
drawn configurations hold both.

The closed forms walk the ``prod(k)`` kernel offsets, each one strided slice of ``Xpad``
(no sliding-window tensor), and are linear in each input separately.

Forward mode: Z is bilinear in (X, K) plus b, so ``J v = conv(dX, K) + conv(X, dK) + db``
(the product rule; ``db`` broadcast over the batch and space).  Second order of ``s = <U, Z>``:
``dJ/dK`` depends on X only, ``dJ/dX`` on K only and ``dJ/db`` on neither, so the Hessian
over (X, K, b) is the cross term: ``(H v)_K = dJ/dK`` with X replaced by ``v_X``,
``(H v)_X = dJ/dX`` (the transposed convolution) with K replaced by ``v_K``, ``(H v)_b = 0``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from gradoracle import layer_strategies as L
from gradoracle import strategies as S
from gradoracle.identities.record import (
    Arrays,
    Identity,
    InvalidShapeError,
    Params,
    has_bias,
    no_bias_hint,
    validate_bias,
)
from gradoracle.reference_layers import (
    Pads,
    conv_nd,
    conv_output_shape,
    conv_pads,
    crop,
    index_of,
    offset_slices,
    offsets,
)

#: Per-axis menus (first entry: the simplest value, what a failure shrinks to).
KERNELS: tuple[int, ...] = (2, 1, 3)
STRIDES: tuple[int, ...] = (1, 2, 3)
PADDINGS: tuple[int, ...] = (0, 1, 2)
DILATIONS: tuple[int, ...] = (1, 2)
GROUPS: tuple[int, ...] = (1, 2, 3)
EXTRA: tuple[int, ...] = (0, 1, 2, 4)


def _geometry(a: Arrays, p: Params) -> tuple[tuple[int, ...], Pads, tuple[int, ...], tuple[int, ...], int]:
    X, K = a["X"], a["K"]
    rank = X.ndim - 2
    stride, dilation = tuple(p["stride"]), tuple(p["dilation"])
    if len(stride) != rank or len(dilation) != rank:
        raise InvalidShapeError(
            f"stride {stride} and dilation {dilation} need one entry per spatial axis ({rank})"
        )
    pads = conv_pads(p["padding"], K.shape[2:], dilation)
    out = conv_output_shape(X.shape[2:], K.shape[2:], stride, pads, dilation)
    return stride, pads, dilation, out, int(p["groups"])


def _validator(rank: int) -> Any:
    def check(a: Arrays, p: Params) -> None:
        X, K, b = a["X"], a["K"], a["b"]
        if X.ndim != rank + 2 or K.ndim != rank + 2 or b.ndim != 1:
            raise InvalidShapeError(
                f"a {rank}-D convolution needs X (N, C_in, {rank} spatial), "
                f"K (C_out, C_in/groups, {rank} kernel) and b (C_out,); "
                f"got X{list(X.shape)}, K{list(K.shape)}, b{list(b.shape)}"
            )
        missing = [k for k in ("stride", "padding", "dilation", "groups") if k not in p]
        if missing:
            raise InvalidShapeError(
                f"missing parameter(s) {', '.join(missing)} (e.g. stride=(1,)*{rank}, groups=1)"
            )
        validate_bias(p)
        groups = int(p["groups"])
        if groups < 1 or X.shape[1] != K.shape[1] * groups or K.shape[0] % groups or b.shape[0] != K.shape[0]:
            raise InvalidShapeError(
                f"groups={groups} needs C_in = groups * K.shape[1] and C_out (= len(b)) divisible by groups; "
                f"got X{list(X.shape)}, K{list(K.shape)}, b{list(b.shape)}"
            )
        if p["padding"] == "same" and any(s != 1 for s in p["stride"]):
            raise InvalidShapeError("padding='same' is defined for stride 1 only (as in PyTorch)")
        _, _, _, out, _ = _geometry(a, p)
        if min(out) < 1:
            raise InvalidShapeError(
                f"the dilated kernel does not fit the padded input: output {out} (enlarge X or the padding)"
            )

    return check


#: Said when an adapter raises on a convolution without bias (the op's ``b`` is None).
_crash_hint = no_bias_hint("convolution", "conv_nd", "(C_out,)")


def _conv_forward(ops: Any, a: Arrays, p: Params) -> Any:
    """``Z = conv(X, K, b)`` (``conv(X, K, None)`` without bias) with the drawn stride, padding,
    dilation and groups."""
    b = a["b"] if has_bias(p) else None
    return ops.conv_nd(a["X"], a["K"], b, tuple(p["stride"]), p["padding"], tuple(p["dilation"]), p["groups"])


def _grad_conv(a: Arrays, p: Params, delta: np.ndarray) -> dict[str, np.ndarray]:
    """dJ/dK[o,c,a] = sum_{n,p} delta[n,o,p] Xpad[n, g Cg + c, p s + a d];  dJ/dX = crop(sum_a scatter of
    K[o,c,a] delta[n,o,p] to p s + a d) (the transposed convolution);  dJ/db[o] = sum_{n,p} delta[n,o,p]."""
    X, K = a["X"], a["K"]
    stride, pads, dilation, out, groups = _geometry(a, p)
    n, c_in = X.shape[:2]
    c_out, cg = K.shape[:2]
    og = c_out // groups
    xp = np.pad(X, ((0, 0), (0, 0), *pads))
    dg = delta.reshape(n, groups, og, -1)
    dtype = np.result_type(X, K, delta)
    dxp = np.zeros(xp.shape, dtype=dtype)
    dK = np.zeros((groups, og, cg, *K.shape[2:]), dtype=dtype)
    for off in offsets(K.shape[2:]):
        index = (slice(None), slice(None), *offset_slices(off, dilation, stride, out))
        dK[index_of(Ellipsis, *off)] = np.einsum("ngop,ngcp->goc", dg, xp[index].reshape(n, groups, cg, -1))
        k_off = K[index_of(slice(None), slice(None), *off)].reshape(groups, og, cg)
        dxp[index] += np.einsum("ngop,goc->ngcp", dg, k_off).reshape(n, c_in, *out)
    db = delta.sum(axis=(0, *range(2, delta.ndim))) if has_bias(p) else np.zeros_like(np.asarray(a["b"]))
    return {"X": crop(dxp, pads), "K": dK.reshape(K.shape), "b": db}


def _tangent(a: Arrays, t: Arrays, name: str) -> np.ndarray:
    return np.asarray(t[name]) if name in t else np.zeros_like(np.asarray(a[name]))


def _jvp_conv(a: Arrays, p: Params, t: Arrays) -> np.ndarray:
    """Forward mode (bilinear in X and K, affine in b): ``dZ = conv(dX, K) + conv(X, dK) + db``
    (no ``db`` without bias)."""
    geometry = (tuple(p["stride"]), p["padding"], tuple(p["dilation"]), int(p["groups"]))
    X, K = a["X"], a["K"]
    db = _tangent(a, t, "b") if has_bias(p) else None
    return np.asarray(
        conv_nd(_tangent(a, t, "X"), K, db, *geometry) + conv_nd(X, _tangent(a, t, "K"), None, *geometry)
    )


def _hvp_conv(a: Arrays, p: Params, u: np.ndarray, t: Arrays) -> dict[str, np.ndarray]:
    """``s = <U, conv(X, K) + b>``: ``(H v)_X = dJ/dX at K = v_K`` (transposed conv of U with v_K),
    ``(H v)_K = dJ/dK at X = v_X`` (v_X correlated with U), ``(H v)_b = 0``."""
    out: dict[str, np.ndarray] = {}
    if "X" in t:
        out["X"] = _grad_conv({"X": a["X"], "K": _tangent(a, t, "K"), "b": a["b"]}, p, u)["X"]
    if "K" in t:
        out["K"] = _grad_conv({"X": _tangent(a, t, "X"), "K": a["K"], "b": a["b"]}, p, u)["K"]
    if "b" in t:
        out["b"] = np.zeros_like(np.asarray(a["b"]))
    return out


_SECOND_ORDER = (
    "taken over X, K and b: s = <U, conv(X, K) + b> is bilinear in (X, K) and linear in b, so H v is the "
    "cross term (d(dJ/dK)/dX v_X = v_X correlated with U, d(dJ/dX)/dK v_K = the transposed convolution of U "
    "with v_K); the b block is exactly 0"
)


def _reads_input(
    spatial: tuple[int, ...],
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    padding: tuple[int, ...] | str,
) -> bool:
    """Whether some kernel tap meets an input element (not only padding) along every axis."""
    pads = conv_pads(padding, kernel, dilation)
    out = conv_output_shape(spatial, kernel, stride, pads, dilation)
    for m, k, s, d, (lo, _), o in zip(spatial, kernel, stride, dilation, pads, out, strict=True):
        taps = (np.arange(o) * s)[:, None] + np.arange(k)[None, :] * d - lo
        if not np.any((taps >= 0) & (taps < m)):
            return False
    return True


def _reading_outputs(size: int, kernel: int, stride: int, dilation: int, pad: tuple[int, int]) -> int:
    """How many outputs along one axis have a kernel tap on an input element (not on padding)."""
    lo = pad[0]
    out = conv_output_shape((size,), (kernel,), (stride,), (pad,), (dilation,))[0]
    taps = (np.arange(out) * stride)[:, None] + np.arange(kernel)[None, :] * dilation - lo
    return int(np.sum(np.any((taps >= 0) & (taps < size), axis=1)))


def _conv_config(p: L.Picker, rank: int) -> L.Configuration:
    big = p.large()
    n = p.one("N", L.BATCH_SIZES)
    if big:
        groups, c_in, c_out = p.one("channels", L.LARGE_CONV_CHANNELS, cover=False)
    else:
        groups = p.one("groups", GROUPS)
        c_in, c_out = groups * p.one("C_in/groups", (1, 2, 3)), groups * p.one("C_out/groups", (1, 2))
    kernel = p.axes("kernel", KERNELS if rank < 3 else KERNELS[:2], rank)
    stride = p.axes("stride", STRIDES, rank)
    dilation = p.axes("dilation", DILATIONS, rank)
    same = all(s == 1 for s in stride) and p.boolean("same")
    padding: tuple[int, ...] | str
    if same:
        padding, pad_total = "same", [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
    else:
        pads = p.axes("padding", PADDINGS, rank)
        padding, pad_total = pads, [2 * q for q in pads]
    extra = p.axes("extra", EXTRA if rank < 3 and not big else EXTRA[:3], rank)
    spatial = tuple(
        max(d * (k - 1) + 1 - t, 1) + e + (6 if big and rank == 2 else 0)
        for k, d, t, e in zip(kernel, dilation, pad_total, extra, strict=True)
    )
    bias = p.one("bias", (True, False))
    params = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups, "bias": bias}
    shapes = {"X": (n, c_in, *spatial), "K": (c_out, c_in // groups, *kernel), "b": (c_out,)}
    # 'same' with an odd d (k - 1) pads one element more after than before (PyTorch's split): a
    # property of kernel x dilation x same that the covering pool must hold, not only its parts,
    # on a configuration whose kernel reads the input (a dilated kernel can step over all of it)
    p.note(
        "asymmetric padding, input read",
        any(t % 2 for t in pad_total) and _reads_input(spatial, kernel, stride, dilation, padding),
    )
    # a stride past the (dilated) kernel skips input elements between windows, and a strided 1x1
    # kernel is a fast path of its own: shown only where two outputs or more on that axis read the
    # input (outputs over the padding alone give dJ/dX = 0 whatever the stride)
    pad_pairs = conv_pads(padding, kernel, dilation)
    reads = _reads_input(spatial, kernel, stride, dilation, padding)
    strided = [
        s > d * (k - 1) + 1 and _reading_outputs(m, k, s, d, q) >= 2
        for m, k, s, d, q in zip(spatial, kernel, stride, dilation, pad_pairs, strict=True)
    ]
    p.note("stride past the kernel, 2+ outputs", reads and any(strided))
    p.note("strided 1x1 kernel, 2+ outputs", reads and any(strided) and all(k == 1 for k in kernel))
    # a stride and a dilation above 1 on one axis of a kernel wider than 1: the transposed
    # convolution of dJ/dX spreads delta by the stride and the taps by the dilation at once (a
    # combination some backends refuse or route to a kernel of their own)
    p.note(
        "stride and dilation > 1 on one axis, kernel > 1",
        reads and any(s > 1 and d > 1 and k > 1 for s, d, k in zip(stride, dilation, kernel, strict=True)),
    )
    # a blocked kernel's channel tail: input channels per group past a block of 16 by a remainder;
    # a depthwise convolution (one input channel per group) is a kernel of its own in every framework
    p.note("C_in/groups past a block of 16", reads and c_in // groups > 16 and (c_in // groups) % 16 != 0)
    p.note("depthwise (groups = C_in > 1)", reads and groups == c_in > 1)
    # a batch of one is a fast path of its own (a squeezed batch axis); with one output channel
    # it cannot show a channel mixed up or dropped (a blind round's mutant passed conv1d's pool)
    p.late("N = 1, C_out > 1, input read", reads and n == 1 and c_out > 1)
    return {"shapes": shapes, "params": params}


def _conv_values(draw: st.DrawFn, config: L.Configuration) -> S.Example:
    scale, seed = draw(S.SCALES), draw(S.SEEDS)
    arrays = L.uniform(draw, seed, config["shapes"], scale)
    return S.Example(arrays, dict(config["params"]), seed)


def _space(rank: int) -> L.ConfigSpace:
    return L.ConfigSpace(f"conv{rank}d-layer", lambda p: _conv_config(p, rank), _conv_values)


_PARAMETERS = (
    ("N", f"batch from {list(L.BATCH_SIZES)}"),
    (
        "groups",
        f"from {list(GROUPS)} with C_in/groups in 1..3 and C_out/groups in 1..2 (depthwise when 1); "
        f"about 1 example in 12 from {list(L.LARGE_CONV_CHANNELS)} (groups, C_in, C_out)",
    ),
    ("kernel", f"per axis from {list(KERNELS)} (rectangular)"),
    ("stride", f"per axis from {list(STRIDES)}"),
    ("padding", f"per axis from {list(PADDINGS)}, or 'same' (drawn when every stride is 1)"),
    ("dilation", f"per axis from {list(DILATIONS)}"),
    ("spatial", f"the smallest size the dilated kernel fits, plus {list(EXTRA)} per axis"),
    ("bias", "True or False (False: the op gets b=None and dJ/db = 0)"),
)


def _record(rank: int) -> Identity:
    space = _space(rank)
    return Identity(
        name=f"conv{rank}d-layer",
        source="notes:conv-filter",
        family="conv-layer",
        formula=(
            f"{rank}-D: Z[n,o,p] = b[o] + sum_(c,a) Xpad[n, g Cg + c, p s + a d] K[o,c,a];  "
            "dJ/dK = Xpad correlated with delta dilated by s, sampled every d;  "
            "dJ/dX = crop_pad(dil_s(delta) padded by d(k-1), correlated with rot180(K)) (transposed conv);  "
            "dJ/db = sum over batch and space of delta (0 with bias=False: no b term)"
        ),
        forward=_conv_forward,
        wrt=("X", "K", "b"),
        reference_gradient=_grad_conv,
        strategy=space.free,
        configurations=space,
        ops=frozenset({"conv_nd"}),
        validate=_validator(rank),
        parameters=_PARAMETERS,
        generalises=("notes:conv-filter", "notes:conv-input"),
        reference_jvp=_jvp_conv,
        reference_hvp=_hvp_conv,
        second_order_note=_SECOND_ORDER,
        crash_hint=_crash_hint,
        derivation=(
            "Z is linear in K, X and b; each gradient is the adjoint of the index map p s + a d: "
            "for K a correlation of the padded input with the stride-dilated delta sampled by the dilation, "
            "for X the transposed convolution (rot180(K), stride-dilated delta, cropped by the padding), "
            "for b the sum of delta; N = C = 1, s = d = 1, no padding gives the notes' X * delta and "
            "pad(delta, k-1) * rot180(K)"
        ),
    )


RECORDS: tuple[Identity, ...] = tuple(_record(rank) for rank in (1, 2, 3))
