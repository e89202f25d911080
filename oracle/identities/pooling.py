"""The notes' pooling identities: the max-pool router and the average-pool spread
(k x k windows, stride k, floor mode).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from gradoracle import strategies as S
from gradoracle.identities.record import Arrays, Identity, InvalidShapeError, Params, zero_hvp


def _check_pool(inputs: Arrays, params: Params) -> None:
    X, k = inputs["X"], int(params.get("k", 0))
    if X.ndim != 2:
        raise InvalidShapeError(f"pooling needs a 2-D input; got X{list(X.shape)}")
    if k < 1:
        raise InvalidShapeError(f"pool window k must be a positive integer; got {params.get('k')!r}")
    if k > X.shape[0] or k > X.shape[1]:
        raise InvalidShapeError(
            f"pool window {k}x{k} is larger than the {X.shape[0]}x{X.shape[1]} input: floor mode would "
            "produce an empty output (use k <= min(H, W))"
        )


def _max_pool_forward(ops: Any, a: Arrays, p: Params) -> Any:
    """``Z = MaxPool_k(X)``, k x k windows, stride k, floor mode."""
    return ops.max_pool2d(a["X"], int(p["k"]))


def _avg_pool_forward(ops: Any, a: Arrays, p: Params) -> Any:
    """``Z = AvgPool_k(X)``, k x k windows, stride k, floor mode."""
    return ops.avg_pool2d(a["X"], int(p["k"]))


def _windows(X: np.ndarray, k: int) -> tuple[np.ndarray, int, int]:
    ho, wo = X.shape[0] // k, X.shape[1] // k
    return X[: ho * k, : wo * k].reshape(ho, k, wo, k), ho, wo


def _grad_max_pool(a: Arrays, p: Params, delta: np.ndarray) -> dict[str, np.ndarray]:
    """Router: ``dJ/dx_ij = delta_uv if x_ij = max(window_uv) else 0`` (edge rows/cols left over: 0)."""
    X, k = a["X"], int(p["k"])
    win, ho, wo = _windows(X, k)
    is_max = win == win.max(axis=(1, 3), keepdims=True)
    routed = np.where(is_max, delta[:, None, :, None], np.zeros((), dtype=delta.dtype))
    dX = np.zeros_like(X, dtype=np.result_type(X, delta))
    dX[: ho * k, : wo * k] = routed.reshape(ho * k, wo * k)
    return {"X": dX}


def _grad_avg_pool(a: Arrays, p: Params, delta: np.ndarray) -> dict[str, np.ndarray]:
    """Spread: ``dJ/dx_ij = delta_uv / k^2`` for every pixel of window uv (edge rows/cols left over: 0)."""
    X, k = a["X"], int(p["k"])
    _, ho, wo = _windows(X, k)
    dX = np.zeros_like(X, dtype=np.result_type(X, delta))
    spread = np.broadcast_to((delta / delta.dtype.type(k * k))[:, None, :, None], (ho, k, wo, k))
    dX[: ho * k, : wo * k] = spread.reshape(ho * k, wo * k)
    return {"X": dX}


@st.composite
def _pool_inputs(draw: st.DrawFn, separate_maxima: bool) -> S.Example:
    k, H, W = draw(S.shapes(S.POOL_SHAPES))
    scale, seed = draw(S.SCALES), draw(S.SEEDS)
    rng = S.values_for(draw, seed)
    X = S.uniform(rng, (H, W), scale)
    if separate_maxima:
        # in about half of the examples some windows' maxima lead their runner-up by only a few
        # float32 ulps: close to a tie but not tied, so the router's answer is still unique
        # (chosen from the seed, not drawn through Hypothesis: the examples' shapes stay as they were)
        pick = S.rng_for(seed)
        close = None
        if pick.random() < 0.5:
            close = pick.random(size=(H // k, W // k)) < 0.5
        X = S.separate_window_maxima(X, k, close=close, ulps=int(pick.integers(1, 5)))
    return S.Example({"X": X}, {"k": k}, seed)


def _max_pool_pattern(a: Arrays, p: Params) -> np.ndarray:
    win, ho, wo = _windows(a["X"], int(p["k"]))
    return np.asarray(win.transpose(0, 2, 1, 3).reshape(ho, wo, -1).argmax(axis=2))


def _max_pool_magnitude(a: Arrays, p: Params, delta: np.ndarray) -> dict[str, np.ndarray]:
    """The router moves values without arithmetic: the magnitude is |dJ/dX| itself."""
    return {"X": np.abs(_grad_max_pool(a, p, delta)["X"])}


def _jvp_max_pool(a: Arrays, p: Params, t: Arrays) -> np.ndarray:
    """Forward mode of the router: ``(J v)_uv = v_ij`` at the argmax ``ij`` of window uv."""
    win, _, _ = _windows(a["X"], int(p["k"]))
    is_max = win == win.max(axis=(1, 3), keepdims=True)
    vwin, _, _ = _windows(np.asarray(t["X"]), int(p["k"]))
    # separated maxima: exactly one True per window, so the masked sum picks v at the argmax
    return np.asarray(np.where(is_max, vwin, 0).sum(axis=(1, 3)))


def _jvp_max_pool_magnitude(a: Arrays, p: Params, t: Arrays) -> np.ndarray:
    """The router moves values without arithmetic: the magnitude is ``|J v|`` itself."""
    return np.abs(_jvp_max_pool(a, p, t))


def _jvp_avg_pool(a: Arrays, p: Params, t: Arrays) -> np.ndarray:
    """Forward mode of the linear average: ``(J v)_uv = (1/k^2) sum_{ij in window uv} v_ij``."""
    k = int(p["k"])
    vwin, _, _ = _windows(np.asarray(t["X"]), k)
    return np.asarray(vwin.sum(axis=(1, 3)) / k**2)


RECORDS: tuple[Identity, ...] = (
    Identity(
        name="max-pool",
        source="notes:max-pool",
        family="pool",
        formula=(
            "Z = MaxPool_k(X), k x k windows, stride k;  dJ/dx_ij = delta_uv if x_ij = max(window_uv) else 0"
        ),
        forward=_max_pool_forward,
        wrt=("X",),
        reference_gradient=_grad_max_pool,
        magnitude=_max_pool_magnitude,
        strategy=lambda: _pool_inputs(True),
        ops=frozenset({"max_pool2d"}),
        nondifferentiable="tied maxima inside a window (the router has no single target)",
        kink_policy=(
            f"each window's maximum leads its runner-up by >= {S.KINK_MARGIN}, or (some windows in half of "
            "the examples) by only 1-4 float32 ulps: close to a tie but not tied; ties themselves are judged "
            "by the convention probes; rows/columns left over at the edge (floor mode) get zero gradient"
        ),
        smooth_pattern=_max_pool_pattern,
        validate=_check_pool,
        reference_jvp=_jvp_max_pool,
        jvp_magnitude=_jvp_max_pool_magnitude,
        reference_hvp=zero_hvp,
        second_order_note=(
            "piecewise linear: away from ties (maxima separated by the margin) the router is constant, "
            "so H v = 0 exactly; at a tie the gradient jumps and no second derivative exists (not checked)"
        ),
    ),
    Identity(
        name="avg-pool",
        source="notes:avg-pool",
        family="pool",
        formula="Z = AvgPool_k(X), z_uv = (1/k^2) sum x_ij;  dJ/dx_ij = delta_uv / k^2",
        forward=_avg_pool_forward,
        wrt=("X",),
        reference_gradient=_grad_avg_pool,
        strategy=lambda: _pool_inputs(False),
        ops=frozenset({"avg_pool2d"}),
        kink_policy="none needed; rows/columns left over at the edge (floor mode) get zero gradient",
        validate=_check_pool,
        reference_jvp=_jvp_avg_pool,
        reference_hvp=zero_hvp,
        second_order_note="linear: H v = 0 exactly",
    ),
)
