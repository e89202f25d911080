"""The notes' pooling as frameworks ship it: (N, C, *S) maps in 1-D, 2-D or 3-D, rectangular
windows, stride different from the window, padding, ``ceil_mode``, ``count_include_pad``,
dilation for max pooling, and global average pooling.

Window ``p`` of an axis covers the padded positions ``p s - pad + a d`` (``a < w``); the output
length is PyTorch's (``floor``, or ``ceil`` in ceil mode minus a last window that would start
in the right padding).  Derivation from the notes' router and spread, per window, then summed
over the windows (a pixel in several windows, stride < window, collects from each of them):

- max: ``dJ/dx_i = sum over windows p whose maximum is x_i of delta_p`` (padding is -inf and
  never wins);
- average: ``dJ/dx_i = sum over windows p containing x_i of delta_p / divisor_p``, with
  PyTorch's divisor: the window clipped to the padded input ``[-pad, S + pad)`` when
  ``count_include_pad`` (the ceil-mode overhang never counts), else the number of input
  elements in it; padding positions get nothing;
- global average: ``dJ/dx[n,c,p] = delta[n,c] / prod(S)``.

Forward mode is the transpose of each router/spread: max pooling routes the tangent from
each window's maximum (``(J v)_p = v`` at the argmax of window ``p``; with overlapping windows
one element can feed several outputs), average pooling is linear, so ``J v`` is the same
average of the tangent (``sum_a vpad[p s - pad + a] / divisor_p``, zero padding), and global
pooling averages the tangent over space.  Second order: average pooling is linear and max
pooling piecewise linear, so ``H v = 0`` (for max pooling away from ties, where the router
is constant; at a tie the gradient jumps and has no second derivative).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from gradoracle import layer_strategies as L
from gradoracle import strategies as S
from gradoracle.identities.record import Arrays, Identity, InvalidShapeError, Params, zero_hvp
from gradoracle.reference_layers import (
    avg_pool_divisor,
    avg_pool_nd,
    crop,
    offset_slices,
    offsets,
    pool_geometry,
)

RANKS: tuple[int, ...] = (2, 1, 3)
WINDOWS: tuple[int, ...] = (2, 1, 3)
#: Stride per axis: "w" = the window (non-overlapping, the notes' case), then 1, 2, 3.
STRIDES: tuple[Any, ...] = ("w", 1, 2, 3)
PADDINGS: tuple[int, ...] = (0, 1)
DILATIONS: tuple[int, ...] = (1, 2)
EXTRA: tuple[int, ...] = (0, 1, 2, 3, 5)
CHANNELS: tuple[int, ...] = (1, 2, 3)


def _hyper(p: Params, rank: int, dilated: bool) -> tuple[tuple[int, ...], ...]:
    names = ("window", "stride", "padding") + (("dilation",) if dilated else ())
    missing = [k for k in names if k not in p]
    if missing:
        raise InvalidShapeError(
            f"missing pooling parameter(s) {', '.join(missing)} (one int per spatial axis)"
        )
    values = tuple(tuple(int(v) for v in p[k]) for k in names)
    if any(len(v) != rank for v in values):
        raise InvalidShapeError(
            f"window/stride/padding need one entry per spatial axis ({rank}); got {values}"
        )
    if not dilated:
        values += ((1,) * rank,)
    return values


def _validator(dilated: bool) -> Any:
    def check(a: Arrays, p: Params) -> None:
        X = a["X"]
        if X.ndim not in (3, 4, 5):
            raise InvalidShapeError(f"pooling needs X (N, C, *S) with 1-3 spatial axes; got X{list(X.shape)}")
        window, stride, padding, dilation = _hyper(p, X.ndim - 2, dilated)
        for n, w, s, q, d in zip(X.shape[2:], window, stride, padding, dilation, strict=True):
            if w < 1 or s < 1 or d < 1 or q < 0:
                raise InvalidShapeError(f"window {window}, stride {stride}, dilation {dilation} must be >= 1")
            if 2 * q > w:
                raise InvalidShapeError(
                    f"padding {padding} must be at most half the window {window} (PyTorch's rule)"
                )
            if n < d * (w - 1) + 1:
                raise InvalidShapeError(
                    f"the (dilated) window {window} is larger than the input {list(X.shape[2:])} on an axis: "
                    "every window must hold an input element (enlarge X)"
                )

    return check


def _max_forward(ops: Any, a: Arrays, p: Params) -> Any:
    """``Z = MaxPool(X)`` with the drawn window, stride, padding, dilation and ceil mode."""
    return ops.max_pool_nd(
        a["X"],
        tuple(p["window"]),
        tuple(p["stride"]),
        tuple(p["padding"]),
        tuple(p["dilation"]),
        p["ceil_mode"],
    )


def _avg_forward(ops: Any, a: Arrays, p: Params) -> Any:
    """``Z = AvgPool(X)`` with the drawn window, stride, padding, ceil mode and count_include_pad."""
    return ops.avg_pool_nd(
        a["X"],
        tuple(p["window"]),
        tuple(p["stride"]),
        tuple(p["padding"]),
        p["ceil_mode"],
        p["count_include_pad"],
    )


def _global_forward(ops: Any, a: Arrays, p: Params) -> Any:
    """``Z[n, c] = mean_p X[n, c, p]``."""
    return ops.global_avg_pool(a["X"])


def _setup(a: Arrays, p: Params, dilated: bool) -> tuple[Any, ...]:
    X = a["X"]
    window, stride, padding, dilation = _hyper(p, X.ndim - 2, dilated)
    out, pads = pool_geometry(X.shape[2:], window, stride, padding, dilation, bool(p["ceil_mode"]))
    return window, stride, padding, dilation, out, pads


def _grad_max(a: Arrays, p: Params, delta: np.ndarray) -> dict[str, np.ndarray]:
    """Router summed over windows: dJ/dx_i = sum of delta_p over the windows p whose maximum is x_i."""
    X = a["X"]
    window, stride, _, dilation, out, pads = _setup(a, p, True)
    xp = np.pad(X, ((0, 0), (0, 0), *pads), constant_values=-np.inf)
    index = [(slice(None), slice(None), *offset_slices(o, dilation, stride, out)) for o in offsets(window)]
    z = np.max([xp[i] for i in index], axis=0)
    dxp = np.zeros(xp.shape, dtype=np.result_type(X, delta))
    routed = np.zeros(z.shape, dtype=bool)
    for i in index:
        hit = (xp[i] == z) & ~routed
        dxp[i] += np.where(hit, delta, 0)
        routed |= hit
    return {"X": crop(dxp, pads)}


def _grad_avg(a: Arrays, p: Params, delta: np.ndarray) -> dict[str, np.ndarray]:
    """Spread summed over windows: dJ/dx_i = sum of delta_p / divisor_p over the windows p containing x_i."""
    X = a["X"]
    window, stride, padding, dilation, out, pads = _setup(a, p, False)
    divisor = avg_pool_divisor(X.shape[2:], window, stride, padding, out, bool(p["count_include_pad"]))
    share = delta / divisor.astype(np.result_type(X, delta))
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(X.shape[2:], pads, strict=True))
    dxp = np.zeros(X.shape[:2] + padded, dtype=share.dtype)
    for o in offsets(window):
        dxp[(slice(None), slice(None), *offset_slices(o, dilation, stride, out))] += share
    return {"X": crop(dxp, pads)}


def _grad_global(a: Arrays, p: Params, delta: np.ndarray) -> dict[str, np.ndarray]:
    """``dJ/dx[n,c,p] = delta[n,c] / prod(S)``."""
    X = a["X"]
    count = X.dtype.type(int(np.prod(X.shape[2:])))
    return {"X": np.broadcast_to((delta / count).reshape(delta.shape + (1,) * (X.ndim - 2)), X.shape).copy()}


def _jvp_max(a: Arrays, p: Params, t: Arrays) -> np.ndarray:
    """Router forward: ``(J v)[n,c,p] = v`` at the (first) maximum of window ``p`` (padding never wins)."""
    X, v = a["X"], np.asarray(t["X"])
    window, stride, _, dilation, out, pads = _setup(a, p, True)
    xp = np.pad(X, ((0, 0), (0, 0), *pads), constant_values=-np.inf)
    vp = np.pad(v, ((0, 0), (0, 0), *pads))
    index = [(slice(None), slice(None), *offset_slices(o, dilation, stride, out)) for o in offsets(window)]
    z = np.max([xp[i] for i in index], axis=0)
    jv = np.zeros(z.shape, dtype=np.result_type(X, v))
    routed = np.zeros(z.shape, dtype=bool)
    for i in index:
        hit = (xp[i] == z) & ~routed
        jv = np.where(hit, vp[i], jv)
        routed |= hit
    return jv


def _jvp_max_magnitude(a: Arrays, p: Params, t: Arrays) -> np.ndarray:
    """The router moves values without arithmetic: the magnitude is ``|J v|`` itself."""
    return np.abs(_jvp_max(a, p, t))


def _jvp_avg(a: Arrays, p: Params, t: Arrays) -> np.ndarray:
    """Linear: ``(J v)[n,c,p] = sum_a vpad[n,c, p s - pad + a] / divisor_p`` (the same average of v)."""
    window, stride, padding, _, _, _ = _setup(a, p, False)
    return avg_pool_nd(
        np.asarray(t["X"]), window, stride, padding, bool(p["ceil_mode"]), bool(p["count_include_pad"])
    )


def _jvp_global(a: Arrays, p: Params, t: Arrays) -> np.ndarray:
    """``(J v)[n,c] = (1 / prod S) sum_p v[n,c,p]``."""
    v = np.asarray(t["X"])
    return np.asarray(np.sum(v, axis=tuple(range(2, v.ndim))) / v.dtype.type(int(np.prod(v.shape[2:]))))


_LINEAR_SECOND_ORDER = "linear: H v = 0 exactly (a double backward must give exactly 0)"


def _max_pattern(a: Arrays, p: Params) -> np.ndarray:
    """Which window offset holds each window's maximum (changes exactly when the router would)."""
    window, stride, _, dilation, out, pads = _setup(a, p, True)
    xp = np.pad(a["X"], ((0, 0), (0, 0), *pads), constant_values=-np.inf)
    slices = [
        xp[(slice(None), slice(None), *offset_slices(o, dilation, stride, out))] for o in offsets(window)
    ]
    return np.asarray(np.argmax(np.stack(slices), axis=0))


def _max_magnitude(a: Arrays, p: Params, delta: np.ndarray) -> dict[str, np.ndarray]:
    """Each element's terms: the |delta_p| of the windows routed to it."""
    return {"X": _grad_max(a, p, np.abs(delta))["X"]}


def window_gap(a: Arrays, p: Params) -> float:
    """The smallest lead of a window's maximum over its runner-up (inf for one-element windows)."""
    window, stride, _, dilation, out, pads = _setup(a, p, True)
    xp = np.pad(a["X"], ((0, 0), (0, 0), *pads), constant_values=-np.inf)
    stack = np.sort(
        np.stack(
            [
                xp[(slice(None), slice(None), *offset_slices(o, dilation, stride, out))]
                for o in offsets(window)
            ]
        ),
        axis=0,
    )
    if stack.shape[0] < 2:
        return float("inf")
    lead = stack[-1] - stack[-2]
    return float(np.min(lead[np.isfinite(lead)])) if np.isfinite(lead).any() else float("inf")


def _pool_config(p: L.Picker, kind: str) -> L.Configuration:
    big = p.large()
    rank = p.one("rank", RANKS)
    n = p.one("N", L.BATCH_SIZES)
    c = p.one("C", L.LARGE_CHANNELS, cover=False) if big else p.one("C", CHANNELS)
    window = p.axes("window", WINDOWS if rank < 3 else WINDOWS[:2], rank)
    stride = tuple(w if s == "w" else s for w, s in zip(window, p.axes("stride", STRIDES, rank), strict=True))
    padding = tuple(min(q, w // 2) for q, w in zip(p.axes("padding", PADDINGS, rank), window, strict=True))
    dilation = p.axes("dilation", DILATIONS, rank) if kind == "max" else (1,) * rank
    extra = p.axes("extra", EXTRA if rank < 3 else EXTRA[:3], rank)
    spatial = tuple(d * (w - 1) + 1 + e for w, d, e in zip(window, dilation, extra, strict=True))
    params: dict[str, Any] = {"window": window, "stride": stride, "padding": padding}
    if kind == "max":
        params["dilation"] = dilation
    params["ceil_mode"] = p.boolean("ceil_mode")
    if kind == "avg":
        params["count_include_pad"] = p.boolean("count_include_pad")
    return {"shape": (n, c, *spatial), "params": params, "kind": kind}


def _pool_values(draw: st.DrawFn, config: L.Configuration) -> S.Example:
    scale, seed = draw(S.SCALES), draw(S.SEEDS)
    rng = S.values_for(draw, seed)
    shape = config["shape"]
    if config["kind"] == "max":
        X = L.distinct_values(rng, shape, 2 * S.KINK_MARGIN)
    else:
        X = S.uniform(rng, shape, scale)
    return S.Example({"X": X}, dict(config["params"]), seed)


def _global_config(p: L.Picker) -> L.Configuration:
    big = p.large()
    rank = p.one("rank", RANKS)
    n = p.one("N", L.BATCH_SIZES)
    c = p.one("C", L.LARGE_CHANNELS[::2], cover=False) if big else p.one("C", CHANNELS)
    spatial = p.axes("spatial", (2, 1, 3, 5), rank)
    return {"shape": (n, c, *spatial)}


def _global_values(draw: st.DrawFn, config: L.Configuration) -> S.Example:
    scale, seed = draw(S.SCALES), draw(S.SEEDS)
    return S.Example({"X": S.uniform(S.values_for(draw, seed), config["shape"], scale)}, {}, seed)


_SPACES = {
    "max": L.ConfigSpace("max-pool-layer", lambda p: _pool_config(p, "max"), _pool_values),
    "avg": L.ConfigSpace("avg-pool-layer", lambda p: _pool_config(p, "avg"), _pool_values),
    "global": L.ConfigSpace("global-avg-pool", _global_config, _global_values),
}


def _check_global(a: Arrays, p: Params) -> None:
    if a["X"].ndim not in (3, 4, 5):
        raise InvalidShapeError(f"global average pooling needs X (N, C, *S); got X{list(a['X'].shape)}")


_COMMON = (
    ("rank", f"spatial axes from {list(RANKS)}"),
    (
        "N, C",
        f"batch from {list(L.BATCH_SIZES)}, channels from {list(CHANNELS)} "
        f"({list(L.LARGE_CHANNELS)} in about 1 example in 12)",
    ),
    ("window", f"per axis from {list(WINDOWS)} (rectangular)"),
    ("stride", "per axis: the window (non-overlapping), 1, 2 or 3 (overlapping or gapped windows)"),
    ("padding", f"per axis from {list(PADDINGS)}, at most half the window"),
    ("ceil_mode", "False, True"),
)

RECORDS: tuple[Identity, ...] = (
    Identity(
        name="max-pool-layer",
        source="notes:max-pool",
        family="pool-layer",
        formula=(
            "Z[n,c,p] = max_a Xpad[n,c, p s - pad + a d] (padding -inf, floor or ceil mode);  "
            "dJ/dx_i = sum over windows p whose maximum is x_i of delta_p (overlapping windows accumulate)"
        ),
        forward=_max_forward,
        wrt=("X",),
        reference_gradient=_grad_max,
        magnitude=_max_magnitude,
        strategy=_SPACES["max"].free,
        configurations=_SPACES["max"],
        ops=frozenset({"max_pool_nd"}),
        nondifferentiable="tied maxima inside a window (the router has no single target)",
        kink_policy=(
            f"X's values differ pairwise by >= {2 * S.KINK_MARGIN}, so every window, overlapping or not, "
            "has one maximum; ties are probed by the convention table"
        ),
        smooth_pattern=_max_pattern,
        validate=_validator(True),
        parameters=(*_COMMON, ("dilation", f"per axis from {list(DILATIONS)}")),
        generalises=("notes:max-pool",),
        reference_jvp=_jvp_max,
        jvp_magnitude=_jvp_max_magnitude,
        reference_hvp=zero_hvp,
        second_order_note=(
            "piecewise linear: away from ties (values drawn pairwise >= the margin apart, so every window, "
            "overlapping or not, has one maximum) the router is constant and H v = 0 exactly; at a tie the "
            "gradient jumps and there is no second derivative (not checked; ties are probed in reverse mode)"
        ),
        derivation=(
            "the notes' router per window; a pixel that is the maximum of several windows (stride < window) "
            "receives the sum of their deltas; padding (-inf) never wins"
        ),
    ),
    Identity(
        name="avg-pool-layer",
        source="notes:avg-pool",
        family="pool-layer",
        formula=(
            "Z[n,c,p] = sum_a Xpad[n,c, p s - pad + a] / divisor_p;  "
            "dJ/dx_i = sum over windows p containing x_i of delta_p / divisor_p; "
            "divisor_p = window clipped to [-pad, S + pad) (count_include_pad) "
            "or its count of input elements (PyTorch)"
        ),
        forward=_avg_forward,
        wrt=("X",),
        reference_gradient=_grad_avg,
        strategy=_SPACES["avg"].free,
        configurations=_SPACES["avg"],
        ops=frozenset({"avg_pool_nd"}),
        validate=_validator(False),
        parameters=(*_COMMON, ("count_include_pad", "False, True")),
        generalises=("notes:avg-pool",),
        reference_jvp=_jvp_avg,
        reference_hvp=zero_hvp,
        second_order_note=_LINEAR_SECOND_ORDER,
        derivation=(
            "the notes' spread delta / k^2 per window with k^2 replaced by the window's divisor; windows "
            "overlapping a pixel add their shares; the shares falling on padding are dropped"
        ),
    ),
    Identity(
        name="global-avg-pool",
        source="notes:avg-pool",
        family="pool-layer",
        formula="Z[n,c] = (1 / prod S) sum_p X[n,c,p];  dJ/dX[n,c,p] = delta[n,c] / prod S",
        forward=_global_forward,
        wrt=("X",),
        reference_gradient=_grad_global,
        strategy=_SPACES["global"].free,
        configurations=_SPACES["global"],
        ops=frozenset({"global_avg_pool"}),
        validate=_check_global,
        parameters=(
            ("rank", f"spatial axes from {list(RANKS)}"),
            ("N, C, S", "batch 1-4, channels 1-3 (20-68 rarely), each spatial axis from 1, 2, 3, 5"),
        ),
        generalises=("notes:avg-pool",),
        reference_jvp=_jvp_global,
        reference_hvp=zero_hvp,
        second_order_note=_LINEAR_SECOND_ORDER,
        derivation="the notes' spread with one window covering the whole map (k^2 -> prod S)",
    ),
)
