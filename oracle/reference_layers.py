"""The oracle's forward of the layer ops (:data:`gradoracle.ops.LAYER_OPS`) and their geometry.

Plain NumPy, in the dtype of the inputs, written with shifted slices: for every kernel
(or window) offset ``a`` the input elements it meets form one strided slice of the padded
input, ``Xpad[..., a d : a d + s (O - 1) + 1 : s]``, so a convolution is a sum over the
``prod(k)`` offsets of a channel contraction, and a pool a max or a sum over them.  The
closed-form gradients of :mod:`gradoracle.identities.convolution_nd` and
:mod:`gradoracle.identities.pooling_nd` scatter through the same slices.  Forward only:
nothing here is differentiated.

Geometry (PyTorch's, which :mod:`gradoracle.ops` adopts):

- convolution output ``O = floor((S + p_lo + p_hi - d (k - 1) - 1) / s) + 1``; ``padding =
  "same"`` (stride 1) pads ``d (k - 1)`` in total, ``total // 2`` before;
- pooling output ``O = floor((S + 2p - d (w - 1) - 1) / s) + 1`` (``ceil`` in ceil mode,
  minus one when the last window would start in the right padding, ``(O - 1) s >= S + p``);
  ceil mode pads the right edge by what the last window overhangs;
- average-pool divisor per axis: the window clipped to ``[-p, S + p)`` when
  ``count_include_pad``, else to ``[0, S)``; the divisor is their product over the axes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

Pads = tuple[tuple[int, int], ...]


# ------------------------------------------------------------------------------ geometry


def as_tuple(value: int | Sequence[int], rank: int, what: str) -> tuple[int, ...]:
    """``value`` as one int per spatial axis (an int is repeated ``rank`` times)."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * rank
    out = tuple(int(v) for v in value)
    if len(out) != rank:
        raise ValueError(f"{what} has {len(out)} entries {out} for {rank} spatial axes; give one per axis")
    return out


def conv_pads(padding: str | Sequence[int] | int, kernel: Sequence[int], dilation: Sequence[int]) -> Pads:
    """Zero padding ``(before, after)`` per spatial axis; ``"same"`` splits ``d (k-1)`` as PyTorch."""
    if isinstance(padding, str):
        if padding != "same":
            raise ValueError(f"padding {padding!r}: use 'same' or one int per spatial axis")
        totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        return tuple((t // 2, t - t // 2) for t in totals)
    return tuple((p, p) for p in as_tuple(padding, len(kernel), "padding"))


def conv_output_shape(
    spatial: Sequence[int], kernel: Sequence[int], stride: Sequence[int], pads: Pads, dilation: Sequence[int]
) -> tuple[int, ...]:
    """``floor((S + p_lo + p_hi - d (k - 1) - 1) / s) + 1`` per axis."""
    return tuple(
        (n + lo + hi - d * (k - 1) - 1) // s + 1
        for n, k, s, (lo, hi), d in zip(spatial, kernel, stride, pads, dilation, strict=True)
    )


def pool_output_size(n: int, w: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """Pool output length along one axis (PyTorch's rule, including the ceil-mode drop)."""
    span = n + 2 * p - d * (w - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


def pool_geometry(
    spatial: Sequence[int],
    window: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    ceil_mode: bool,
) -> tuple[tuple[int, ...], Pads]:
    """Output shape and the padding ``(p, p + overhang)`` that makes every window a full slice."""
    out, pads = [], []
    for n, w, s, p, d in zip(spatial, window, stride, padding, dilation, strict=True):
        o = pool_output_size(n, w, s, p, d, ceil_mode)
        overhang = max(0, (o - 1) * s + d * (w - 1) + 1 - (n + 2 * p))
        out.append(o)
        pads.append((p, p + overhang))
    return tuple(out), tuple(pads)


def avg_pool_divisor(
    spatial: Sequence[int],
    window: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    out: Sequence[int],
    count_include_pad: bool,
) -> np.ndarray:
    """The divisor of every output element: the product over axes of the clipped window length."""
    per_axis = []
    for n, w, s, p, o in zip(spatial, window, stride, padding, out, strict=True):
        start = np.arange(o) * s - p
        end = np.minimum(start + w, n + p)
        if count_include_pad:
            per_axis.append(end - start)
        else:
            per_axis.append(np.minimum(end, n) - np.maximum(start, 0))
    divisor = np.ones((), dtype=np.int64)
    for length in per_axis:
        divisor = np.multiply.outer(divisor, length)
    return np.asarray(divisor)


def window_positions(n: int, w: int, s: int, p: int, d: int, o: int) -> np.ndarray:
    """Input positions (may lie in the padding) of every window along one axis, shape (o, w)."""
    return (np.arange(o) * s - p)[:, None] + np.arange(w)[None, :] * d


def offset_slices(
    offset: Sequence[int], dilation: Sequence[int], stride: Sequence[int], out: Sequence[int]
) -> tuple[slice, ...]:
    """The strided slice of the padded input that kernel offset ``a`` meets at every output."""
    return tuple(
        slice(a * d, a * d + s * (o - 1) + 1, s)
        for a, d, s, o in zip(offset, dilation, stride, out, strict=True)
    )


def index_of(*parts: Any) -> tuple[Any, ...]:
    """``parts`` as an index tuple (slices, ints, ``Ellipsis``)."""
    return parts


def offsets(kernel: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Every kernel offset, in row-major order."""
    return itertools.product(*(range(k) for k in kernel))


def crop(padded: np.ndarray, pads: Pads) -> np.ndarray:
    """The inverse of padding the trailing ``len(pads)`` axes by ``pads``."""
    lead = padded.ndim - len(pads)
    spatial = [slice(lo, padded.shape[lead + i] - hi) for i, (lo, hi) in enumerate(pads)]
    return padded[tuple([slice(None)] * lead + spatial)]


# ------------------------------------------------------------------------------ forwards


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """``Z = X W^T + b`` (PyTorch's layout; ``X W^T`` when b is None)."""
    z = np.matmul(x, w.T)
    return np.asarray(z if b is None else z + b)


def dense(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """``Z = X W + b`` (JAX/Flax's layout; ``X W`` when b is None)."""
    z = np.matmul(x, w)
    return np.asarray(z if b is None else z + b)


def log_softmax_rows(z: np.ndarray) -> np.ndarray:
    """``z_nc - max_c z_n - log sum_c exp(z_nc - max_c z_n)`` row by row."""
    shifted = z - np.max(z, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def smoothed_targets(target: np.ndarray, classes: int, label_smoothing: float, dtype: np.dtype) -> np.ndarray:
    """``t~ = (1 - eps) t + eps / C`` with class indices turned one-hot first (PyTorch's definition)."""
    if target.ndim == 1:
        t = np.zeros((target.shape[0], classes), dtype=dtype)
        t[np.arange(target.shape[0]), np.asarray(np.rint(target), dtype=np.int64)] = 1
    else:
        t = np.asarray(target, dtype=dtype)
    if label_smoothing:
        eps = dtype.type(label_smoothing)
        t = (1 - eps) * t + eps / dtype.type(classes)
    return t


def reduction_scale(reduction: str, n: int) -> float:
    """``1/N`` for ``mean``, 1 for ``sum``."""
    if reduction == "mean":
        return 1.0 / n
    if reduction == "sum":
        return 1.0
    raise ValueError(f"reduction {reduction!r}: use 'mean' or 'sum'")


def cross_entropy(z: np.ndarray, target: np.ndarray, reduction: str, label_smoothing: float) -> np.ndarray:
    """``J = r sum_n -sum_c t~_nc log softmax(z_n)_c`` with ``r = 1/N`` (mean) or 1 (sum)."""
    t = smoothed_targets(target, z.shape[-1], label_smoothing, z.dtype)
    losses = -np.sum(t * log_softmax_rows(z), axis=-1)
    if reduction == "mean":
        return np.asarray(np.sum(losses) / z.dtype.type(z.shape[0]))
    if reduction != "sum":
        raise ValueError(f"reduction {reduction!r}: use 'mean' or 'sum'")
    return np.asarray(np.sum(losses))


def conv_nd(
    x: np.ndarray,
    k: np.ndarray,
    b: np.ndarray | None,
    stride: Sequence[int],
    padding: str | Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> np.ndarray:
    """``Z[n,o,p] = b[o] + sum_{c,a} Xpad[n, g Cg + c, p s + a d] K[o,c,a]``: a channel contraction
    of one shifted slice of the padded input per kernel offset ``a``."""
    rank = x.ndim - 2
    kernel = k.shape[2:]
    stride_t, dil = as_tuple(stride, rank, "stride"), as_tuple(dilation, rank, "dilation")
    pads = conv_pads(padding, kernel, dil)
    out = conv_output_shape(x.shape[2:], kernel, stride_t, pads, dil)
    n = x.shape[0]
    c_out, cg = k.shape[:2]
    og = c_out // groups
    xp = np.pad(x, ((0, 0), (0, 0), *pads))
    z = np.zeros((n, groups, og, *out), dtype=np.result_type(x, k))
    for a in offsets(kernel):
        sl = xp[(slice(None), slice(None), *offset_slices(a, dil, stride_t, out))]
        ka = k[index_of(slice(None), slice(None), *a)].reshape(groups, og, cg)
        z += np.einsum("ngc...,goc->ngo...", sl.reshape(n, groups, cg, *out), ka)
    z = z.reshape(n, c_out, *out)
    if b is not None:
        z = z + b.reshape((1, c_out) + (1,) * rank)
    return z


def max_pool_nd(
    x: np.ndarray,
    window: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    ceil_mode: bool,
) -> np.ndarray:
    """``Z[n,c,p] = max_a Xpad[n, c, p s + a d]`` (padding -inf)."""
    rank = x.ndim - 2
    w = as_tuple(window, rank, "window")
    s, p, d = (
        as_tuple(v, rank, name)
        for v, name in ((stride, "stride"), (padding, "padding"), (dilation, "dilation"))
    )
    out, pads = pool_geometry(x.shape[2:], w, s, p, d, ceil_mode)
    xp = np.pad(x, ((0, 0), (0, 0), *pads), constant_values=-np.inf)
    z = np.full(x.shape[:2] + out, -np.inf, dtype=x.dtype)
    for a in offsets(w):
        z = np.maximum(z, xp[(slice(None), slice(None), *offset_slices(a, d, s, out))])
    return z


def avg_pool_nd(
    x: np.ndarray,
    window: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    ceil_mode: bool,
    count_include_pad: bool,
) -> np.ndarray:
    """``Z[n,c,p] = sum_a Xpad[n, c, p s + a] / divisor[p]`` (zero padding; PyTorch's divisors)."""
    rank = x.ndim - 2
    w = as_tuple(window, rank, "window")
    s, p = as_tuple(stride, rank, "stride"), as_tuple(padding, rank, "padding")
    ones = (1,) * rank
    out, pads = pool_geometry(x.shape[2:], w, s, p, ones, ceil_mode)
    xp = np.pad(x, ((0, 0), (0, 0), *pads))
    total = np.zeros(x.shape[:2] + out, dtype=x.dtype)
    for a in offsets(w):
        total += xp[(slice(None), slice(None), *offset_slices(a, ones, s, out))]
    divisor = avg_pool_divisor(x.shape[2:], w, s, p, out, count_include_pad).astype(x.dtype)
    return total / divisor


def global_avg_pool(x: np.ndarray) -> np.ndarray:
    """``Z[n,c] = (1 / prod S) sum_p X[n,c,p]``."""
    return np.asarray(np.mean(x, axis=tuple(range(2, x.ndim))))
