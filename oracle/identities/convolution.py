"""The notes' convolution identities: ``Z = X * K`` (valid cross-correlation),
``dJ/dK = X * delta`` and ``dJ/dX = pad(delta, k-1) * rot180(K)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from gradoracle import strategies as S
from gradoracle.identities.record import Arrays, Identity, InvalidShapeError, Params
from gradoracle.reference_ops import correlate2d_valid


def _check_conv(inputs: Arrays, params: Params) -> None:
    X, K = inputs["X"], inputs["K"]
    if X.ndim != 2 or K.ndim != 2:
        raise InvalidShapeError(f"conv needs a 2-D input and kernel; got X{list(X.shape)}, K{list(K.shape)}")
    if K.shape[0] > X.shape[0] or K.shape[1] > X.shape[1]:
        raise InvalidShapeError(
            f"kernel {K.shape[0]}x{K.shape[1]} is larger than the {X.shape[0]}x{X.shape[1]} input: a valid "
            "cross-correlation needs H >= k and W >= k (use a smaller kernel or a larger input)"
        )


def _conv_forward(ops: Any, a: Arrays, p: Params) -> Any:
    """``Z = X * K`` (valid cross-correlation)."""
    return ops.conv2d(a["X"], a["K"])


def _grad_conv_filter(a: Arrays, p: Params, delta: np.ndarray) -> dict[str, np.ndarray]:
    """``dJ/dK = X * delta``: valid cross-correlation of the input with the output gradient."""
    return {"K": correlate2d_valid(a["X"], delta)}


def _grad_conv_input(a: Arrays, p: Params, delta: np.ndarray) -> dict[str, np.ndarray]:
    """``dJ/dX = pad(delta, k-1) * rot180(K)``: full correlation with the rotated kernel."""
    K = a["K"]
    kh, kw = K.shape
    padded = np.pad(delta, ((kh - 1, kh - 1), (kw - 1, kw - 1)))
    return {"X": correlate2d_valid(padded, K[::-1, ::-1])}


def _jvp_conv(a: Arrays, p: Params, t: Arrays) -> np.ndarray:
    """Forward mode (bilinear in X and K): ``dZ = dX * K + X * dK`` over the tangents given."""
    out = np.zeros(
        (a["X"].shape[0] - a["K"].shape[0] + 1, a["X"].shape[1] - a["K"].shape[1] + 1),
        dtype=np.result_type(a["X"], a["K"]),
    )
    if "X" in t:
        out = out + correlate2d_valid(t["X"], a["K"])
    if "K" in t:
        out = out + correlate2d_valid(a["X"], t["K"])
    return out


def _hvp_conv(a: Arrays, p: Params, u: np.ndarray, t: Arrays) -> dict[str, np.ndarray]:
    """``s = <U, X * K>``: ``grad_K = X * U`` depends on X only and ``grad_X = pad(U) * rot180(K)``
    on K only, so ``H v = (grad_X at K = v_K, grad_K at X = v_X)``: the cross terms of the
    double backward (``d grad_K / dX`` and ``d grad_X / dK``)."""
    zeros = {n: np.zeros_like(np.asarray(a[n])) for n in ("X", "K")}
    vX, vK = t.get("X", zeros["X"]), t.get("K", zeros["K"])
    out: dict[str, np.ndarray] = {}
    if "K" in t:
        out["K"] = _grad_conv_filter({"X": vX, "K": a["K"]}, p, u)["K"]
    if "X" in t:
        out["X"] = _grad_conv_input({"X": a["X"], "K": vK}, p, u)["X"]
    return out


_CONV_SECOND_ORDER = (
    "taken over X and K together: s = <U, X * K> is bilinear, so H v is the cross term "
    "(d(dJ/dK)/dX v_X = v_X * U and d(dJ/dX)/dK v_K = pad(U) * rot180(v_K))"
)


@st.composite
def _conv_inputs(draw: st.DrawFn) -> S.Example:
    k, H, W = draw(S.shapes(S.CONV_SHAPES))
    scale, seed = draw(S.SCALES), draw(S.SEEDS)
    rng = S.values_for(draw, seed)
    return S.Example({"X": S.uniform(rng, (H, W), scale), "K": S.uniform(rng, (k, k), scale)}, {}, seed)


RECORDS: tuple[Identity, ...] = (
    Identity(
        name="conv-filter",
        source="notes:conv-filter",
        family="conv",
        formula="Z = X * K (valid cross-correlation), X in R^{HxW}, K in R^{kxk};  dJ/dK = X * delta",
        forward=_conv_forward,
        wrt=("K",),
        reference_gradient=_grad_conv_filter,
        strategy=_conv_inputs,
        ops=frozenset({"conv2d"}),
        validate=_check_conv,
        reference_jvp=_jvp_conv,
        reference_hvp=_hvp_conv,
        hvp_wrt=("X", "K"),
        second_order_note=_CONV_SECOND_ORDER,
    ),
    Identity(
        name="conv-input",
        source="notes:conv-input",
        family="conv",
        formula="Z = X * K (valid cross-correlation);  dJ/dX = pad(delta, k-1) * rot180(K)",
        forward=_conv_forward,
        wrt=("X",),
        reference_gradient=_grad_conv_input,
        strategy=_conv_inputs,
        ops=frozenset({"conv2d"}),
        validate=_check_conv,
        reference_jvp=_jvp_conv,
        reference_hvp=_hvp_conv,
        hvp_wrt=("X", "K"),
        second_order_note=_CONV_SECOND_ORDER,
    ),
)
