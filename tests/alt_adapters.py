"""Correct third-party-style adapters whose numerics differ from the three built-in ones.

The oracle must pass every *correct* implementation, not only the NumPy engine, PyTorch and
JAX whose rounding its tolerances were tuned on.  Each adapter here computes the same
functions and the same gradients by another correct algorithm or formula, as another team's
framework might:

===========================  ==================================================================
adapter                      what differs
===========================  ==================================================================
TorchFuncAdapter             PyTorch, every derivative through ``torch.func`` (``vjp``,
                             ``jvp``, ``jvp`` of ``grad``, ``vjp`` of ``grad``); no
                             ``torch.autograd.grad``
TorchStridedAdapter          PyTorch on non-contiguous (transposed, strided) input tensors,
                             convolutions in ``channels_last`` memory format, the linear
                             layers as ``addmm`` on a transposed weight
Im2colAdapter                NumPy engine: every convolution as im2col + one matmul (Caffe);
                             input gradients by col2im (the transpose of im2col)
FFTConvAdapter               NumPy engine: stride-1 convolutions, and both of their gradients,
                             as products of ``numpy.fft`` spectra (cuDNN's FFT algorithms);
                             float32 spectra in float32 (``complex64``); strided ones direct
FFTSubsampledAdapter         the same with strided convolutions by FFT too (subsampled): the
                             one case left failing (structural zeros; see its rules)
WinogradAdapter              NumPy engine: stride-1 3x3 convolutions (forward and input
                             gradient) by Winograd F(2x2, 3x3) (cuDNN, XNNPACK), other sums
                             pairwise (tree) in reversed order
Float64AccumAdapter          NumPy engine: every rule computed in float64 and the result
                             rounded to the dtype asked for (a GPU kernel accumulating wide)
AltFormulaAdapter            NumPy engine with algebraically equivalent, numerically sound
                             forms: tanh' = 4e/(1+e)^2 (e = exp(-2|x|)), sigmoid' =
                             e/(1+e)^2 (e = exp(-|x|)), softplus' = -expm1(-softplus),
                             Phi = erfc(-x/sqrt 2)/2, ELU' = elu + 1 (JAX's), SiLU' = s + z (1 -
                             s), log-sum-exp cross-entropy ``sum(y) lse - <y, z>``
JaxRematAdapter              JAX with ``jax.checkpoint`` (rematerialisation) around the forward
                             and around the gradient map of the Hessian-vector products
JaxLinearTransposeAdapter    JAX: ``u^T J`` as ``jax.linear_transpose(jax.linearize(f))``,
                             ``J v`` from ``jax.linearize``, ``H v`` as linearize/transpose of
                             the gradient map
===========================  ==================================================================

Every one is correct (``tests/test_alt_adapters.py`` compares each against the built-in
engine on random inputs and runs them through the oracle; a deliberately wrong copy of each
family must fail).  Run one through the whole suite with
``gradoracle report --adapter 'tests.alt_adapters:FFTConvAdapter'`` from the repository root.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np

from gradoracle.adapters.base import (
    AdapterBase,
    ForwardFn,
    VJPResult,
    check_hvp_request,
    check_tangent_names,
    check_wrt_names,
)
from gradoracle.adapters.jax_adapter import JaxAdapter
from gradoracle.adapters.numpy_engine import NumpyEngineAdapter, Rules
from gradoracle.adapters.torch_adapter import TorchOps, _quiet_jit_script
from gradoracle.ops import ALL_OPS, ELU_ALPHA

Pads = tuple[tuple[int, int], ...]


# ======================================================================================
# NumPy engine variants: other algorithms for the same rules
# ======================================================================================


def _grouped(x: np.ndarray, groups: int) -> np.ndarray:
    """(N, G*Cg, *S) -> (N, G, Cg, *S)."""
    return x.reshape(x.shape[0], groups, x.shape[1] // groups, *x.shape[2:])


def _dilate(a: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Insert ``f - 1`` zeros between neighbours along each trailing axis."""
    rank = len(factors)
    lead = a.shape[: a.ndim - rank]
    tail = a.shape[a.ndim - rank :]
    out = np.zeros(lead + tuple((n - 1) * f + 1 for n, f in zip(tail, factors, strict=True)), dtype=a.dtype)
    out[(Ellipsis, *(slice(None, None, f) for f in factors))] = a
    return out


def _out_shape(
    padded: Sequence[int], kshape: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> tuple[int, ...]:
    """``floor((Sp - d (k - 1) - 1) / s) + 1`` per axis."""
    return tuple(
        (p - d * (m - 1) - 1) // s + 1 for p, m, s, d in zip(padded, kshape, stride, dilation, strict=True)
    )


def _im2col_index(
    padded: Sequence[int], kshape: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> np.ndarray:
    """Flat index into the padded spatial block of element ``(kernel offset j, output position p)``:
    ``sum_axis (p_i s_i + a_i d_i) * (row-major stride of axis i)``, shape (prod K, prod out)."""
    out = _out_shape(padded, kshape, stride, dilation)
    rank = len(kshape)
    strides = [int(np.prod(padded[i + 1 :])) for i in range(rank)]
    flat = np.zeros(tuple(kshape) + out, dtype=np.int64)
    for i in range(rank):
        a = np.arange(kshape[i]) * dilation[i]
        p = np.arange(out[i]) * stride[i]
        shape_a = [1] * (2 * rank)
        shape_a[i] = kshape[i]
        shape_p = [1] * (2 * rank)
        shape_p[rank + i] = out[i]
        flat = flat + (a.reshape(shape_a) + p.reshape(shape_p)) * strides[i]
    return flat.reshape(int(np.prod(kshape)), int(np.prod(out)))


class Im2colRules(Rules):
    """Convolutions as im2col + matmul: ``cols[n, (c, a), p] = Xpad[n, c, p s + a d]``, then
    ``Z = K_flat @ cols``; dJ/dK = delta @ cols^T summed over n; dJ/dX = col2im(K_flat^T @ delta)
    (every column's entries added back where im2col read them), cropped by the padding."""

    def _cols(
        self,
        x: np.ndarray,
        k: np.ndarray,
        stride: Sequence[int],
        pads: Pads,
        dilation: Sequence[int],
        groups: int,
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
        xp = np.pad(x, ((0, 0), (0, 0), *pads))
        index = _im2col_index(xp.shape[2:], k.shape[2:], stride, dilation)
        n, c = xp.shape[:2]
        cols = xp.reshape(n, c, -1)[:, :, index]  # (N, C, K, P)
        cols = cols.reshape(n, groups, (c // groups) * index.shape[0], index.shape[1])
        return cols, index, xp.shape

    def conv_nd_forward(self, x, k, b, stride, pads, dilation, groups):  # type: ignore[no-untyped-def]
        """``Z = K_flat @ cols + b`` per group."""
        cols, _, xp_shape = self._cols(x, k, stride, pads, dilation, groups)
        out = _out_shape(xp_shape[2:], k.shape[2:], stride, dilation)
        kf = k.reshape(groups, k.shape[0] // groups, -1)
        z = np.matmul(kf[None], cols).reshape(x.shape[0], k.shape[0], *out)
        if b is not None:
            z = z + b.reshape((1, -1) + (1,) * len(out))
        return np.ascontiguousarray(z)

    def conv_nd_filter_grad(self, delta, x, k, stride, pads, dilation, groups):  # type: ignore[no-untyped-def]
        """``dJ/dK_flat = sum_n delta_n @ cols_n^T``."""
        cols, _, _ = self._cols(x, k, stride, pads, dilation, groups)
        d = delta.reshape(delta.shape[0], groups, k.shape[0] // groups, -1)
        return np.matmul(d, cols.swapaxes(-1, -2)).sum(axis=0).reshape(k.shape)

    def conv_nd_input_grad(self, delta, x, k, stride, pads, dilation, groups):  # type: ignore[no-untyped-def]
        """col2im of ``K_flat^T @ delta``: each kernel offset's row added back at its positions."""
        n = x.shape[0]
        og = k.shape[0] // groups
        kf = k.reshape(groups, og, -1)
        d = delta.reshape(n, groups, og, -1)
        dcols = np.matmul(kf.swapaxes(-1, -2)[None], d)  # (N, G, Cg*K, P)
        xp_shape = [n, x.shape[1]] + [m + lo + hi for m, (lo, hi) in zip(x.shape[2:], pads, strict=True)]
        index = _im2col_index(xp_shape[2:], k.shape[2:], stride, dilation)
        dcols = dcols.reshape(n, x.shape[1], index.shape[0], index.shape[1])
        grad = np.zeros((n, x.shape[1], int(np.prod(xp_shape[2:]))), dtype=delta.dtype)
        for j in range(index.shape[0]):  # one offset's positions are distinct: plain += is exact
            grad[:, :, index[j]] += dcols[:, :, j]
        grad = grad.reshape(xp_shape)
        crop = tuple(slice(lo, lo + m) for m, (lo, _) in zip(x.shape[2:], pads, strict=True))
        return np.ascontiguousarray(grad[(slice(None), slice(None), *crop)])

    def conv2d_forward(self, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        """The notes' valid correlation as a 1-image, 1-channel im2col convolution."""
        if x.ndim != 2 or k.ndim != 2 or k.shape[0] > x.shape[0] or k.shape[1] > x.shape[1]:
            raise ValueError(f"conv2d expects a 2-D input and a smaller 2-D kernel, got {x.shape}, {k.shape}")
        return self.conv_nd_forward(x[None, None], k[None, None], None, (1, 1), ((0, 0), (0, 0)), (1, 1), 1)[
            0, 0
        ]

    def conv2d_filter_grad(self, delta: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        """dJ/dK by the im2col filter gradient."""
        return self.conv_nd_filter_grad(
            delta[None, None], x[None, None], k[None, None], (1, 1), ((0, 0), (0, 0)), (1, 1), 1
        )[0, 0]

    def conv2d_input_grad(self, delta: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        """dJ/dX by col2im."""
        return self.conv_nd_input_grad(
            delta[None, None], x[None, None], k[None, None], (1, 1), ((0, 0), (0, 0)), (1, 1), 1
        )[0, 0]


def _fft_valid(x: np.ndarray, k: np.ndarray, spec: str, rank: int) -> np.ndarray:
    """Valid correlation over the trailing ``r`` axes through the FFT, contracted by ``spec``.

    ``out[..., p] = sum x[..., p + a] k[..., a]`` (the leading axes contracted by the einsum
    ``spec``, written without the spatial axes).  Circular convolution of length ``S`` of x with
    flipped k is the linear one at the positions ``K - 1 .. S - 1``: exactly the valid part.
    """
    size = x.shape[-rank:]
    kshape = k.shape[-rank:]
    axes = tuple(range(-rank, 0))
    flipped = k[(Ellipsis, *(slice(None, None, -1) for _ in range(rank)))]
    xf = np.fft.rfftn(x, s=size, axes=axes)
    kf = np.fft.rfftn(flipped, s=size, axes=axes)
    full = np.fft.irfftn(np.einsum(spec, xf, kf), s=size, axes=axes)
    valid = full[(Ellipsis, *(slice(m - 1, None) for m in kshape))]
    return np.ascontiguousarray(valid.astype(np.result_type(x, k), copy=False))


class FFTConvRules(Rules):
    """Convolutions through the FFT where cuDNN's FFT algorithms apply (stride 1; the dilated
    kernel zero-filled), the engine's direct rules for strided convolutions (as cuDNN, whose
    FFT algorithms require stride 1, falls back to another algorithm).

    Forward: ``Z = sub_s(Xpad (*) dil_d(K)) + b``; filter gradient: ``Xpad (*) dil_s(delta)``
    summed over the batch, sampled every d; input gradient: ``pad(dil_s(delta), d (k-1))``
    correlated with rot180(dil_d(K)) (channels swapped), zero-extended and cropped.  Every
    correlation is a product of spectra; float32 stays float32 (NumPy >= 2 keeps complex64).
    """

    #: also strided convolutions by FFT (the stride-1 correlation, subsampled)
    strided_by_fft = False

    def _direct(self, stride: Sequence[int]) -> bool:
        return not self.strided_by_fft and any(s != 1 for s in stride)

    def conv_nd_forward(self, x, k, b, stride, pads, dilation, groups):  # type: ignore[no-untyped-def]
        """``sub_s(Xpad (*) dil_d K) + b`` by FFT."""
        if self._direct(stride):
            return super().conv_nd_forward(x, k, b, stride, pads, dilation, groups)
        xp = _grouped(np.pad(x, ((0, 0), (0, 0), *pads)), groups)
        dilated = _dilate(k, dilation)
        kd = dilated.reshape(groups, k.shape[0] // groups, k.shape[1], *dilated.shape[2:])
        full = _fft_valid(xp, kd, "ngc...,goc...->ngo...", len(stride))
        z = full[(slice(None), slice(None), slice(None), *(slice(None, None, s) for s in stride))]
        z = z.reshape(x.shape[0], k.shape[0], *z.shape[3:])
        if b is not None:
            z = z + b.reshape((1, -1) + (1,) * len(stride))
        return np.ascontiguousarray(z)

    def conv_nd_filter_grad(self, delta, x, k, stride, pads, dilation, groups):  # type: ignore[no-untyped-def]
        """``dJ/dK[o, c, a] = sum_n (Xpad (*) dil_s delta)[a d]`` by FFT."""
        if self._direct(stride):
            return super().conv_nd_filter_grad(delta, x, k, stride, pads, dilation, groups)
        xp = _grouped(np.pad(x, ((0, 0), (0, 0), *pads)), groups)
        spread = _grouped(_dilate(delta, stride), groups)
        corr = _fft_valid(xp, spread, "ngc...,ngo...->goc...", len(stride))
        sampled = corr[
            (Ellipsis, *(slice(0, d * (m - 1) + 1, d) for d, m in zip(dilation, k.shape[2:], strict=True)))
        ]
        return np.ascontiguousarray(sampled.reshape(k.shape))

    def conv_nd_input_grad(self, delta, x, k, stride, pads, dilation, groups):  # type: ignore[no-untyped-def]
        """The transposed convolution by FFT (structure of the engine's rule, FFT correlation)."""
        if self._direct(stride):
            return super().conv_nd_input_grad(delta, x, k, stride, pads, dilation, groups)
        rank = len(stride)
        og = k.shape[0] // groups
        kd = _dilate(k, dilation)
        halo = [m - 1 for m in kd.shape[2:]]
        spread = np.pad(_dilate(delta, stride), ((0, 0), (0, 0), *((h, h) for h in halo)))
        flipped = kd[(slice(None), slice(None), *(slice(None, None, -1) for _ in range(rank)))]
        swapped = flipped.reshape(groups, og, k.shape[1], *kd.shape[2:]).swapaxes(1, 2)  # (G, Cg, Og, *K)
        grad = _fft_valid(_grouped(spread, groups), swapped, "ngo...,gco...->ngc...", rank)
        grad = grad.reshape(x.shape[0], x.shape[1], *grad.shape[3:])
        padded = [m + lo + hi for m, (lo, hi) in zip(x.shape[2:], pads, strict=True)]
        grad = np.pad(
            grad, ((0, 0), (0, 0), *((0, p - g) for p, g in zip(padded, grad.shape[2:], strict=True)))
        )
        crop = tuple(slice(lo, lo + m) for m, (lo, _) in zip(x.shape[2:], pads, strict=True))
        return np.ascontiguousarray(grad[(slice(None), slice(None), *crop)])

    def conv2d_forward(self, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        """The notes' valid correlation by FFT."""
        if x.ndim != 2 or k.ndim != 2 or k.shape[0] > x.shape[0] or k.shape[1] > x.shape[1]:
            raise ValueError(f"conv2d expects a 2-D input and a smaller 2-D kernel, got {x.shape}, {k.shape}")
        return _fft_valid(x, k, "...,...->...", 2)

    def conv2d_filter_grad(self, delta: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        """dJ/dK = X (*) delta by FFT."""
        return _fft_valid(x, delta, "...,...->...", 2)

    def conv2d_input_grad(self, delta: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        """dJ/dX = pad(delta, k-1) (*) rot180(K) by FFT."""
        kh, kw = k.shape
        padded = np.pad(delta, ((kh - 1, kh - 1), (kw - 1, kw - 1)))
        return _fft_valid(padded, np.ascontiguousarray(k[::-1, ::-1]), "...,...->...", 2)


class FFTSubsampledRules(FFTConvRules):
    """Every convolution by FFT, strided ones as the stride-1 correlation subsampled.

    Correct, but outside what the oracle accepts (documented in the README): the FFT's rounding
    is ``c eps ||Xpad|| ||delta||`` over *every* position of the stride-1 correlation, so a
    filter tap whose exact gradient is structurally 0 (it reads only padding, or only inputs
    the stride skips: ``m_i = 0``) gets ~1e-8 (float32) instead of 0.  No shipping library
    does this (cuDNN's FFT algorithms require stride 1).
    """

    strided_by_fft = True


def _pairwise_sum(terms: list[np.ndarray]) -> np.ndarray:
    """Tree (pairwise) summation of ``terms`` in reversed order."""
    terms = terms[::-1]
    while len(terms) > 1:
        nxt = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            nxt.append(terms[-1])
        terms = nxt
    return terms[0]


# Winograd F(2, 3): y = A^T [(G g) * (B^T d)], 1-D; the 2-D form is the nested product.
_WB = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
_WG = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
_WA = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)


def _winograd_3x3(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Valid correlation of ``x`` (..., H, W) with a 3x3 ``k`` (...) by F(2x2, 3x3) tiles.

    Each 2x2 output tile is ``A^T [(G k G^T) * (B^T d B)] A`` over its 4x4 input tile (Lavin &
    Gray 2016); ``x`` is zero-extended to whole tiles and the output cropped.  The transforms'
    entries (0, +-1, +-1/2) are exact in every float type; arithmetic in ``x``'s dtype.
    """
    dt = np.result_type(x, k)
    h, w = x.shape[-2:]
    ho, wo = h - 2, w - 2
    th, tw = -(-ho // 2), -(-wo // 2)
    xe = np.zeros((*x.shape[:-2], 2 * th + 2, 2 * tw + 2), dtype=dt)
    xe[..., :h, :w] = x
    b, g, a = (m.astype(dt) for m in (_WB, _WG, _WA))
    u = g @ k.astype(dt) @ g.T  # (..., 4, 4)
    rows = np.arange(th)[:, None] * 2 + np.arange(4)[None, :]
    cols = np.arange(tw)[:, None] * 2 + np.arange(4)[None, :]
    tiles = xe[..., rows[:, None, :, None], cols[None, :, None, :]]  # (..., th, tw, 4, 4)
    v = b @ tiles @ b.T
    m = u[..., None, None, :, :] * v
    y = a @ m @ a.T  # (..., th, tw, 2, 2)
    y = np.moveaxis(y, -2, -3).reshape(*y.shape[:-4], 2 * th, 2 * tw)
    return np.ascontiguousarray(y[..., :ho, :wo])


class WinogradRules(Rules):
    """Winograd F(2x2, 3x3) for the notes' 3x3 convolutions (forward and input gradient: both
    stride-1 3x3 correlations), pairwise reversed summation for the other correlations, the
    filter gradient and the matmuls (``A @ B`` as a tree sum of rank-1 / column terms)."""

    @staticmethod
    def _correlate(x: np.ndarray, k: np.ndarray) -> np.ndarray:
        if k.shape == (3, 3) and min(x.shape) >= 3:
            return _winograd_3x3(x, k)
        kh, kw = k.shape
        ho, wo = x.shape[0] - kh + 1, x.shape[1] - kw + 1
        terms = [x[a : a + ho, b : b + wo] * k[a, b] for a in range(kh) for b in range(kw)]
        return np.ascontiguousarray(_pairwise_sum(terms))

    def conv2d_forward(self, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        """``Z = X (*) K`` (Winograd for 3x3)."""
        if x.ndim != 2 or k.ndim != 2 or k.shape[0] > x.shape[0] or k.shape[1] > x.shape[1]:
            raise ValueError(f"conv2d expects a 2-D input and a smaller 2-D kernel, got {x.shape}, {k.shape}")
        return self._correlate(x, k)

    def conv2d_filter_grad(self, delta: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        """``dJ/dK = X (*) delta`` (pairwise sum over delta's positions)."""
        return self._correlate(x, delta)

    def conv2d_input_grad(self, delta: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        """``dJ/dX = pad(delta, k-1) (*) rot180(K)`` (Winograd for 3x3)."""
        kh, kw = k.shape
        padded = np.pad(delta, ((kh - 1, kh - 1), (kw - 1, kw - 1)))
        return self._correlate(padded, np.ascontiguousarray(k[::-1, ::-1]))

    def matmul_forward(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a @ b`` as a pairwise sum over the contracted index."""
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        terms = [np.multiply.outer(a2[:, j], b2[j, :]) for j in range(a2.shape[1])]
        out = _pairwise_sum(terms)
        if a.ndim == 1:
            out = out[0]
        if b.ndim == 1:
            out = out[..., 0]
        return np.asarray(out, dtype=np.result_type(a, b))


def _wide(value: Any, work: np.dtype[Any] | None) -> Any:
    """Floating arrays (and tuples/lists of them) as float64."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return value.astype(np.float64)
    if isinstance(value, tuple):
        return tuple(_wide(v, work) for v in value)
    if isinstance(value, list):
        return [_wide(v, work) for v in value]
    return value


def _narrow(value: Any, work: np.dtype[Any]) -> Any:
    """Floating arrays (and tuples/lists of them) rounded to ``work``."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return value.astype(work)
    if isinstance(value, np.floating):
        return np.asarray(value, dtype=work)
    if isinstance(value, tuple):
        return tuple(_narrow(v, work) for v in value)
    if isinstance(value, list):
        return [_narrow(v, work) for v in value]
    return value


def _work_dtype(args: Sequence[Any]) -> np.dtype[Any] | None:
    for a in args:
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            return a.dtype
        if isinstance(a, tuple):
            found = _work_dtype(a)
            if found is not None:
                return found
    return None


class Float64AccumRules(Rules):
    """Every rule evaluated in float64 on the widened inputs, its results rounded to the dtype
    of its first floating input: float32 in, float32 out, float64 accumulation (as a GPU kernel
    with wide accumulators).  More accurate than float32 arithmetic throughout."""

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if (
            name.startswith("_")
            or not callable(attr)
            or not name.endswith(("_forward", "_backward", "_grad", "_argmax"))
        ):
            return attr

        def wide(*args: Any) -> Any:
            work = _work_dtype(args)
            if work is None or work == np.float64:
                return attr(*args)
            return _narrow(attr(*(_wide(a, work) for a in args)), work)

        return wide


def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class AltFormulaRules(Rules):
    """Elementwise derivatives and the cross-entropy in other, numerically sound forms."""

    def sigmoid_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``sigma' = e / (1 + e)^2`` with ``e = exp(-|x|)`` (even in x; no overflow)."""
        e = np.exp(-np.abs(x))
        return delta * (e / ((1.0 + e) * (1.0 + e)))

    def tanh_forward(self, x: np.ndarray) -> np.ndarray:
        """``tanh x = sign(x) (1 - e) / (1 + e)``, ``e = exp(-2|x|)``: ``-expm1(-2|x|) / (1 + e)``."""
        e2 = -2.0 * np.abs(x)
        return np.sign(x) * (-np.expm1(e2) / (1.0 + np.exp(e2)))

    def tanh_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``sech^2 x = 1 / cosh^2 x = 4 e / (1 + e)^2``, ``e = exp(-2|x|)`` (overflow-free)."""
        e = np.exp(-2.0 * np.abs(x))
        return delta * (4.0 * e / ((1.0 + e) * (1.0 + e)))

    def softplus_forward(self, x: np.ndarray) -> np.ndarray:
        """``log1p(exp(x))`` for x <= 0, ``x + log1p(exp(-x))`` above."""
        neg = np.log1p(np.exp(np.minimum(x, 0)))
        pos = np.maximum(x, 0) + np.log1p(np.exp(-np.maximum(x, 0)))
        return np.where(x > 0, pos, neg)

    def softplus_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``sigma(x) = 1 - exp(-softplus(x)) = -expm1(-z)`` from the cached output."""
        return delta * -np.expm1(-z)

    def elu_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``1`` for x > 0, else ``elu(x) + alpha`` (= alpha exp(x); JAX's form)."""
        return delta * np.where(x > 0, 1.0, z + ELU_ALPHA).astype(x.dtype)

    def silu_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``s + z (1 - s)`` with ``z = x s`` the cached output (= s (1 + x (1 - s)))."""
        s = _sigmoid(x)
        return delta * (s + z * (1.0 - s))

    def gelu_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``Phi(x) + x phi(x)`` with ``Phi = erfc(-x / sqrt 2) / 2`` (no 1 + erf cancellation)."""
        erfc = np.frompyfunc(math.erfc, 1, 1)
        phi_cdf = 0.5 * np.asarray(erfc(-x * (1.0 / math.sqrt(2.0))), dtype=x.dtype)
        pdf = np.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))
        return delta * (phi_cdf + x * pdf)

    def softmax_cross_entropy_forward(self, z: np.ndarray, y: np.ndarray):  # type: ignore[no-untyped-def]
        """``J = sum(y) lse(z) - <y, z>``, ``lse = m + log sum exp(z - m)``; ``yhat = exp(z - lse)``."""
        if z.ndim != 1 or y.shape != z.shape:
            raise ValueError(f"softmax_cross_entropy expects 1-D logits and target, got {z.shape}, {y.shape}")
        m = np.max(z)
        lse = m + np.log(np.sum(np.exp(z - m)))
        log_yhat = z - lse
        loss = np.asarray(np.sum(y) * lse - np.dot(y, z), dtype=z.dtype)
        return loss, (np.exp(log_yhat), log_yhat)

    def cross_entropy_forward(self, z, target, reduction, label_smoothing):  # type: ignore[no-untyped-def]
        """The batched loss as ``r sum_n (sum_c t~_nc) lse(z_n) - <t~_n, z_n>``, ``lse = m + log sum
        exp(z - m)`` (the engine sums the rows of ``t~ log softmax``)."""
        _, (_, smooth, r) = super().cross_entropy_forward(z, target, reduction, label_smoothing)
        m = z.max(axis=1, keepdims=True)
        e = np.exp(z - m)
        s = e.sum(axis=1, keepdims=True)
        lse = m + np.log(s)
        per_row = smooth.sum(axis=1) * lse[:, 0] - (smooth * z).sum(axis=1)
        loss = per_row.sum() * r
        return np.asarray(loss, dtype=z.dtype), (z - lse, smooth, r)


class _EngineVariant(NumpyEngineAdapter):
    """A NumPy-engine adapter with other rules, loadable by path with no arguments."""

    rules_class: type[Rules] = Rules
    variant = "numpy-variant"

    def __init__(self) -> None:
        super().__init__(rules=self.rules_class(), name=self.variant)


class Im2colAdapter(_EngineVariant):
    """NumPy engine, convolutions by im2col + matmul."""

    rules_class = Im2colRules
    variant = "numpy-im2col"


class FFTConvAdapter(_EngineVariant):
    """NumPy engine, convolutions by FFT."""

    rules_class = FFTConvRules
    variant = "numpy-fft"


class FFTSubsampledAdapter(_EngineVariant):
    """NumPy engine, every convolution (strided ones too) by FFT: fails at structural zeros."""

    rules_class = FFTSubsampledRules
    variant = "numpy-fft-subsampled"


class WinogradAdapter(_EngineVariant):
    """NumPy engine, Winograd F(2x2, 3x3) and pairwise sums."""

    rules_class = WinogradRules
    variant = "numpy-winograd"


class Float64AccumAdapter(_EngineVariant):
    """NumPy engine, every rule in float64 then rounded."""

    rules_class = Float64AccumRules
    variant = "numpy-f64acc"


class AltFormulaAdapter(_EngineVariant):
    """NumPy engine, equivalent elementwise and cross-entropy formulas."""

    rules_class = AltFormulaRules
    variant = "numpy-altformula"


# ======================================================================================
# PyTorch variants
# ======================================================================================


class TorchFuncAdapter(AdapterBase):
    """PyTorch's own ops, every derivative through ``torch.func`` (functional transforms)."""

    name = "torch-func"
    dtypes = ("float64", "float32")
    has_jvp = True
    hvp_methods = ("reverse-over-reverse", "forward-over-reverse")

    def available(self) -> tuple[bool, str]:
        """``(True, "")`` when torch imports."""
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            return False, f"torch is not installed ({exc})"
        return True, ""

    @cached_property
    def ops(self) -> TorchOps:
        """PyTorch's functions (the built-in adapter's namespace)."""
        return TorchOps()

    def supported_ops(self) -> frozenset[str]:
        """Every op."""
        return frozenset(ALL_OPS)

    def from_numpy(self, a: np.ndarray, dtype: str) -> Any:
        """A fresh tensor in ``dtype``."""
        import torch

        if dtype not in self.dtypes:
            raise ValueError(f"{self.name}: unsupported dtype {dtype!r}")
        return torch.tensor(np.asarray(a), dtype=getattr(torch, dtype))

    def to_numpy(self, t: Any) -> np.ndarray:
        """A NumPy copy."""
        return np.array(t.detach().cpu().numpy(), copy=True)

    def _split(
        self, fn: ForwardFn, inputs: Mapping[str, np.ndarray], names: Sequence[str], dtype: str
    ) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        args = {k: self.from_numpy(v, dtype) for k, v in inputs.items()}

        def f(*xs: Any) -> Any:
            return fn(self.ops, {**args, **dict(zip(names, xs, strict=True))})

        return f, tuple(args[n] for n in names)

    def forward(self, fn: ForwardFn, inputs: Mapping[str, np.ndarray], dtype: str) -> np.ndarray:
        """``fn`` under ``torch.no_grad``."""
        import torch

        with torch.no_grad():
            return self.to_numpy(fn(self.ops, {k: self.from_numpy(v, dtype) for k, v in inputs.items()}))

    def vjp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangent: np.ndarray,
        dtype: str,
    ) -> VJPResult:
        """``out, pullback = torch.func.vjp(f, *x)``; ``pullback(u)``."""
        import torch

        check_wrt_names(self.name, inputs, wrt)
        f, primals = self._split(fn, inputs, list(wrt), dtype)
        out, pullback = torch.func.vjp(f, *primals)
        if tuple(np.shape(cotangent)) != tuple(out.shape):
            raise ValueError(
                f"{self.name}: cotangent shape {np.shape(cotangent)} != output {tuple(out.shape)}"
            )
        grads = pullback(torch.tensor(np.asarray(cotangent), dtype=out.dtype))
        return VJPResult(self.to_numpy(out), {n: self.to_numpy(g) for n, g in zip(wrt, grads, strict=True)})

    def jvp(
        self, fn: ForwardFn, inputs: Mapping[str, np.ndarray], tangents: Mapping[str, np.ndarray], dtype: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """``torch.func.jvp(f, x, v)``."""
        import torch

        check_tangent_names(self.name, inputs, tangents)
        names = list(tangents)
        f, primals = self._split(fn, inputs, names, dtype)
        if not names:
            out = f()
            return self.to_numpy(out), np.zeros(tuple(out.shape), dtype=dtype)
        with _quiet_jit_script():  # torch's forward-AD decompositions warn about torch.jit.script
            out, jv = torch.func.jvp(f, primals, tuple(self.from_numpy(tangents[n], dtype) for n in names))
        return self.to_numpy(out), self.to_numpy(jv)

    def hvp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangent: np.ndarray,
        tangents: Mapping[str, np.ndarray],
        dtype: str,
        method: str,
    ) -> dict[str, np.ndarray]:
        """``H v`` of ``<u, f>``: ``jvp(grad)`` (forward-over-reverse) or ``vjp(grad)``
        (reverse-over-reverse, H symmetric), with ``grad = torch.func.grad`` of ``<u, f>``."""
        import torch

        check_hvp_request(self.name, self.hvp_methods, method, inputs, wrt, tangents)
        names = list(wrt)
        f, primals = self._split(fn, inputs, names, dtype)
        u = self.from_numpy(np.asarray(cotangent), dtype)
        argnums = tuple(range(len(names)))
        gradient = torch.func.grad(lambda *xs: (f(*xs) * u).sum(), argnums=argnums)
        tans = tuple(self.from_numpy(np.asarray(tangents[n]), dtype) for n in names)
        if method == "forward-over-reverse":
            with _quiet_jit_script():
                _, hv = torch.func.jvp(gradient, primals, tans)
        else:
            _, pullback = torch.func.vjp(gradient, *primals)
            hv = pullback(tans)
        out: dict[str, np.ndarray] = {}
        for n, t in zip(names, hv, strict=True):
            is_zero = getattr(t, "_is_zerotensor", None)
            out[n] = (
                np.zeros(tuple(t.shape), dtype=dtype) if callable(is_zero) and is_zero() else self.to_numpy(t)
            )
        return out


class StridedTorchOps(TorchOps):
    """PyTorch's functions, with convolutions in ``channels_last`` memory format and the linear
    layers as ``addmm`` on a transposed (non-contiguous) weight."""

    def conv_nd(self, x, k, b, stride, padding, dilation, groups):  # type: ignore[no-untyped-def]
        """``F.conv{1,2,3}d`` on channels-last input and weight (4-D, 5-D); 3-D as given."""
        import torch

        fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
        if fmt is not None:
            x = x.contiguous(memory_format=fmt)
            k = k.contiguous(memory_format=fmt)
        return super().conv_nd(x, k, b, stride, padding, dilation, groups)

    def linear(self, x: Any, w: Any, b: Any) -> Any:
        """``addmm(b, X, W^T)`` on X flattened to rows (``W^T`` a transposed view; ``mm`` without bias)."""
        import torch

        rows = x.reshape(-1, x.shape[-1])
        z = torch.mm(rows, w.t()) if b is None else torch.addmm(b, rows, w.t())  # b None: no bias
        return z.reshape(*x.shape[:-1], w.shape[0])

    def dense(self, x: Any, w: Any, b: Any) -> Any:
        """``addmm(b, X, W)`` on X flattened to rows."""
        import torch

        rows = x.reshape(-1, x.shape[-1])
        z = torch.mm(rows, w) if b is None else torch.addmm(b, rows, w)
        return z.reshape(*x.shape[:-1], w.shape[1])

    def conv2d(self, x: Any, k: Any) -> Any:
        """``F.conv2d`` on (1, 1, H, W) channels-last tensors."""
        import torch
        import torch.nn.functional as F

        x4 = x[None, None].contiguous(memory_format=torch.channels_last)
        k4 = k[None, None].contiguous(memory_format=torch.channels_last)
        return F.conv2d(x4, k4)[0, 0]


class TorchStridedAdapter(TorchFuncAdapter):
    """PyTorch on non-contiguous inputs: each array of rank >= 2 is a transposed view of
    transposed storage, each vector a stride-2 slice; gradients by ``torch.autograd.grad``."""

    name = "torch-strided"
    has_jvp = False
    hvp_methods = ()

    @cached_property
    def ops(self) -> StridedTorchOps:  # type: ignore[override]
        """The channels-last / addmm namespace."""
        return StridedTorchOps()

    def from_numpy(self, a: np.ndarray, dtype: str) -> Any:
        """A non-contiguous tensor holding ``a``: rank >= 2 a ``.mT`` of a transposed copy, rank 1 every
        other element of a doubled buffer."""
        import torch

        if dtype not in self.dtypes:
            raise ValueError(f"{self.name}: unsupported dtype {dtype!r}")
        arr = np.asarray(a)
        tdt = getattr(torch, dtype)
        if arr.ndim >= 2:
            return torch.tensor(np.ascontiguousarray(np.swapaxes(arr, -1, -2)), dtype=tdt).transpose(-1, -2)
        if arr.ndim == 1:
            buf = torch.zeros(2 * arr.shape[0], dtype=tdt)
            buf[::2] = torch.tensor(arr, dtype=tdt)
            return buf[::2]
        return torch.tensor(arr, dtype=tdt)

    def vjp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangent: np.ndarray,
        dtype: str,
    ) -> VJPResult:
        """``torch.autograd.grad`` with non-contiguous leaves and a non-contiguous cotangent."""
        import torch

        check_wrt_names(self.name, inputs, wrt)
        args = {k: self.from_numpy(v, dtype) for k, v in inputs.items()}
        leaves = [args[n].requires_grad_(True) for n in wrt]
        with torch.enable_grad():
            out = fn(self.ops, args)
        if tuple(np.shape(cotangent)) != tuple(out.shape):
            raise ValueError(
                f"{self.name}: cotangent shape {np.shape(cotangent)} != output {tuple(out.shape)}"
            )
        if not leaves or not out.requires_grad:
            return VJPResult(self.to_numpy(out), {n: np.zeros(np.shape(inputs[n]), dtype=dtype) for n in wrt})
        raw = torch.autograd.grad(
            out, leaves, grad_outputs=self.from_numpy(np.asarray(cotangent), dtype), allow_unused=True
        )
        grads = {
            n: (np.zeros(np.shape(inputs[n]), dtype=dtype) if g is None else self.to_numpy(g))
            for n, g in zip(wrt, raw, strict=True)
        }
        return VJPResult(self.to_numpy(out), grads)


# ======================================================================================
# JAX variants (the built-in adapter's ops and compilation; other transforms)
# ======================================================================================


class JaxRematAdapter(JaxAdapter):
    """JAX with ``jax.checkpoint`` around the forward (vjp, jvp) and around the gradient map
    (Hessian-vector products): the backward recomputes the forward's residuals."""

    name = "jax-remat"

    def _vjp_function(self, fn: ForwardFn) -> Callable[..., Any]:
        import jax

        ops = self.ops

        def run(diff: dict[str, Any], const: dict[str, Any], u: Any) -> tuple[Any, Any]:
            out, pullback = jax.vjp(jax.checkpoint(lambda d: fn(ops, {**const, **d})), diff)
            (grads,) = pullback(u.astype(out.dtype))
            return out, grads

        return run

    def _jvp_function(self, fn: ForwardFn) -> Callable[..., Any]:
        import jax

        ops = self.ops

        def run(primal: dict[str, Any], const: dict[str, Any], tangent: dict[str, Any]) -> Any:
            return jax.jvp(jax.checkpoint(lambda p: fn(ops, {**const, **p})), (primal,), (tangent,))

        return run

    def _hvp_function(self, fn: ForwardFn, method: str) -> Callable[..., Any]:
        import jax

        ops = self.ops

        def run(primal: dict[str, Any], const: dict[str, Any], u: Any, tangent: dict[str, Any]) -> Any:
            @jax.checkpoint
            def gradient(p: dict[str, Any]) -> Any:
                out, pullback = jax.vjp(jax.checkpoint(lambda q: fn(ops, {**const, **q})), p)
                (g,) = pullback(u.astype(out.dtype))
                return g

            if method == "reverse-over-reverse":
                _, pullback = jax.vjp(gradient, primal)
                (hv,) = pullback(tangent)
                return hv
            return jax.jvp(gradient, (primal,), (tangent,))[1]

        return run


class JaxLinearTransposeAdapter(JaxAdapter):
    """JAX: ``J v`` from ``jax.linearize``, ``u^T J`` as ``jax.linear_transpose`` of it, ``H v``
    as the linearized gradient map (forward-over-reverse) or its transpose (reverse-over-reverse)."""

    name = "jax-lintrans"

    def _vjp_function(self, fn: ForwardFn) -> Callable[..., Any]:
        import jax

        ops = self.ops

        def run(diff: dict[str, Any], const: dict[str, Any], u: Any) -> tuple[Any, Any]:
            out, lin = jax.linearize(lambda d: fn(ops, {**const, **d}), diff)
            (grads,) = jax.linear_transpose(lin, diff)(u.astype(out.dtype))
            return out, grads

        return run

    def _jvp_function(self, fn: ForwardFn) -> Callable[..., Any]:
        import jax

        ops = self.ops

        def run(primal: dict[str, Any], const: dict[str, Any], tangent: dict[str, Any]) -> Any:
            out, lin = jax.linearize(lambda p: fn(ops, {**const, **p}), primal)
            return out, lin(tangent)

        return run

    def _hvp_function(self, fn: ForwardFn, method: str) -> Callable[..., Any]:
        import jax

        ops = self.ops

        def run(primal: dict[str, Any], const: dict[str, Any], u: Any, tangent: dict[str, Any]) -> Any:
            def gradient(p: dict[str, Any]) -> Any:
                out, lin = jax.linearize(lambda q: fn(ops, {**const, **q}), p)
                (g,) = jax.linear_transpose(lin, p)(u.astype(out.dtype))
                return g

            _, hlin = jax.linearize(gradient, primal)
            if method == "forward-over-reverse":
                return hlin(tangent)
            (hv,) = jax.linear_transpose(hlin, primal)(tangent)
            return hv

        return run


#: Every alternative adapter, by class name (for the tests and the campaign).
ALT_ADAPTERS: tuple[str, ...] = (
    "TorchFuncAdapter",
    "TorchStridedAdapter",
    "Im2colAdapter",
    "FFTConvAdapter",
    "WinogradAdapter",
    "Float64AccumAdapter",
    "AltFormulaAdapter",
    "JaxRematAdapter",
    "JaxLinearTransposeAdapter",
)

__all__ = [*ALT_ADAPTERS, "ALT_ADAPTERS"]
