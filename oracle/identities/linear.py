"""Notes identities 1, 2, 3, 5 and 6: the Jacobians of ``z = W x``, ``z = x W`` and ``z = x``,
and ``dJ/dW``, ``dJ/dx`` for ``z = W x`` and ``z = x W``.

For identities 1-3 the full Jacobian is provided and the VJP is ``u^T J`` computed from it.
Identities 1-3 (:data:`JACOBIAN_RECORDS`) and 5-6 (:data:`WEIGHT_GRADIENT_RECORDS`) are two
records tuples because the catalogue lists them in the notes' order, identity 4 between them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from gradoracle import strategies as S
from gradoracle.identities.record import (
    Arrays,
    Identity,
    InvalidShapeError,
    Params,
    jvp_from_jacobian,
    vjp_from_jacobian,
    zero_hvp,
)

# -------------------------------------------------------------------- shape checks


def _check_matvec(inputs: Arrays, params: Params) -> None:
    W, x = inputs["W"], inputs["x"]
    if W.ndim != 2 or x.ndim != 1 or W.shape[1] != x.shape[0]:
        raise InvalidShapeError(
            f"z = W x needs W of shape (n, m) and x of shape (m,); got W{list(W.shape)}, x{list(x.shape)}"
        )


def _check_vecmat(inputs: Arrays, params: Params) -> None:
    W, x = inputs["W"], inputs["x"]
    if W.ndim != 2 or x.ndim != 1 or W.shape[0] != x.shape[0]:
        raise InvalidShapeError(
            f"z = x W needs x of shape (n,) and W of shape (n, m); got x{list(x.shape)}, W{list(W.shape)}"
        )


# --------------------------------------------------------------- identities 1, 2, 3


def _matvec_forward(ops: Any, a: Arrays, p: Params) -> Any:
    """``z = W x``."""
    return ops.matmul(a["W"], a["x"])


def _vecmat_forward(ops: Any, a: Arrays, p: Params) -> Any:
    """``z = x W`` (x a row vector)."""
    return ops.matmul(a["x"], a["W"])


@st.composite
def _matvec_inputs(draw: st.DrawFn) -> S.Example:
    (n, m), scale, seed = draw(S.shapes(S.MATRIX_SHAPES)), draw(S.SCALES), draw(S.SEEDS)
    rng = S.values_for(draw, seed)
    return S.Example({"W": S.uniform(rng, (n, m), scale), "x": S.uniform(rng, (m,), scale)}, {}, seed)


@st.composite
def _vecmat_inputs(draw: st.DrawFn) -> S.Example:
    (n, m), scale, seed = draw(S.shapes(S.MATRIX_SHAPES)), draw(S.SCALES), draw(S.SEEDS)
    rng = S.values_for(draw, seed)
    return S.Example({"x": S.uniform(rng, (n,), scale), "W": S.uniform(rng, (n, m), scale)}, {}, seed)


def _jac_matvec(a: Arrays, p: Params) -> dict[str, np.ndarray]:
    """Identity 1: ``(dz/dx)_{ij} = W_{ij}``, i.e. ``dz/dx = W``."""
    return {"x": np.array(a["W"], copy=True)}


def _jac_vecmat(a: Arrays, p: Params) -> dict[str, np.ndarray]:
    """Identity 2: ``(dz/dx)_{ij} = W_{ji}``, i.e. ``dz/dx = W^T``."""
    return {"x": np.array(a["W"].T, copy=True)}


def _self_forward(ops: Any, a: Arrays, p: Params) -> Any:
    """``z = x``."""
    return a["x"]


@st.composite
def _vector_inputs(draw: st.DrawFn) -> S.Example:
    n, scale, seed = draw(S.dims()), draw(S.SCALES), draw(S.SEEDS)
    return S.Example({"x": S.uniform(S.values_for(draw, seed), (n,), scale)}, {}, seed)


def _jac_self(a: Arrays, p: Params) -> dict[str, np.ndarray]:
    """Identity 3: ``(dz/dx)_{ij} = 1 if i = j else 0``, i.e. ``dz/dx = I``."""
    return {"x": np.eye(a["x"].shape[0], dtype=a["x"].dtype)}


# ----------------------------------------------------------------- identities 5, 6


def _grad_matvec(a: Arrays, p: Params, delta: np.ndarray) -> dict[str, np.ndarray]:
    """Identity 5: ``dJ/dW = delta x^T`` (entry (i,j) is delta_i x_j); ``dJ/dx = W^T delta``."""
    return {"W": np.outer(delta, a["x"]), "x": a["W"].T @ delta}


def _grad_vecmat(a: Arrays, p: Params, delta: np.ndarray) -> dict[str, np.ndarray]:
    """Identity 6: ``dJ/dW = x^T delta`` (entry (i,j) is x_i delta_j); ``dJ/dx = delta W^T``."""
    return {"W": np.outer(a["x"], delta), "x": delta @ a["W"].T}


def _zeros_like_in(a: Arrays, name: str) -> np.ndarray:
    return np.zeros_like(np.asarray(a[name]))


def _jvp_matvec(a: Arrays, p: Params, t: Arrays) -> np.ndarray:
    """Forward mode of ``z = W x`` (bilinear): ``dz = dW x + W dx``."""
    dW = t.get("W", _zeros_like_in(a, "W"))
    dx = t.get("x", _zeros_like_in(a, "x"))
    return np.asarray(dW @ a["x"] + a["W"] @ dx)


def _jvp_vecmat(a: Arrays, p: Params, t: Arrays) -> np.ndarray:
    """Forward mode of ``z = x W`` (bilinear): ``dz = dx W + x dW``."""
    dW = t.get("W", _zeros_like_in(a, "W"))
    dx = t.get("x", _zeros_like_in(a, "x"))
    return np.asarray(dx @ a["W"] + a["x"] @ dW)


def _hvp_matvec(a: Arrays, p: Params, u: np.ndarray, t: Arrays) -> dict[str, np.ndarray]:
    """``s = u^T W x``: ``grad_W = u x^T``, ``grad_x = W^T u``, so ``H v = (u v_x^T, v_W^T u)``."""
    out: dict[str, np.ndarray] = {}
    if "W" in t:
        out["W"] = np.outer(u, t.get("x", _zeros_like_in(a, "x")))
    if "x" in t:
        out["x"] = t.get("W", _zeros_like_in(a, "W")).T @ u
    return out


def _hvp_vecmat(a: Arrays, p: Params, u: np.ndarray, t: Arrays) -> dict[str, np.ndarray]:
    """``s = x W u``: ``grad_W = x^T u``, ``grad_x = W u``, so ``H v = (v_x^T u, v_W u)``."""
    out: dict[str, np.ndarray] = {}
    if "W" in t:
        out["W"] = np.outer(t.get("x", _zeros_like_in(a, "x")), u)
    if "x" in t:
        out["x"] = t.get("W", _zeros_like_in(a, "W")) @ u
    return out


_LINEAR_SECOND_ORDER = (
    "s = <u, f(x)> is linear in x: H v = 0 (checked: a double backward must give exactly 0)"
)
_BILINEAR_SECOND_ORDER = (
    "s = <u, f(W, x)> is bilinear: the Hessian is the cross term only (d grad_W / dx and d grad_x / dW)"
)

# ----------------------------------------------------------------------- records

#: Notes identities 1, 2, 3: the Jacobians of ``z = W x``, ``z = x W`` and ``z = x``.
JACOBIAN_RECORDS: tuple[Identity, ...] = (
    Identity(
        name="matvec-jacobian",
        source="notes:identity-1",
        family="jacobian",
        formula="z = W x, W in R^{n x m};  dz/dx = W  ((dz/dx)_ij = W_ij)",
        forward=_matvec_forward,
        wrt=("x",),
        reference_gradient=vjp_from_jacobian(_jac_matvec),
        reference_jacobian=_jac_matvec,
        reference_jvp=jvp_from_jacobian(_jac_matvec),
        reference_hvp=zero_hvp,
        second_order_note=_LINEAR_SECOND_ORDER,
        strategy=_matvec_inputs,
        ops=frozenset({"matmul"}),
        validate=_check_matvec,
    ),
    Identity(
        name="vecmat-jacobian",
        source="notes:identity-2",
        family="jacobian",
        formula="z = x W, x a row vector;  dz/dx = W^T  ((dz/dx)_ij = W_ji)",
        forward=_vecmat_forward,
        wrt=("x",),
        reference_gradient=vjp_from_jacobian(_jac_vecmat),
        reference_jacobian=_jac_vecmat,
        reference_jvp=jvp_from_jacobian(_jac_vecmat),
        reference_hvp=zero_hvp,
        second_order_note=_LINEAR_SECOND_ORDER,
        strategy=_vecmat_inputs,
        ops=frozenset({"matmul"}),
        validate=_check_vecmat,
    ),
    Identity(
        name="identity-jacobian",
        source="notes:identity-3",
        family="jacobian",
        formula="z = x;  dz/dx = I",
        forward=_self_forward,
        wrt=("x",),
        reference_gradient=vjp_from_jacobian(_jac_self),
        reference_jacobian=_jac_self,
        reference_jvp=jvp_from_jacobian(_jac_self),
        reference_hvp=zero_hvp,
        second_order_note=_LINEAR_SECOND_ORDER,
        strategy=_vector_inputs,
        ops=frozenset(),
    ),
)

#: Notes identities 5, 6: ``dJ/dW`` and ``dJ/dx`` for ``z = W x`` and ``z = x W``.
WEIGHT_GRADIENT_RECORDS: tuple[Identity, ...] = (
    Identity(
        name="matvec-weight-grad",
        source="notes:identity-5",
        family="linear",
        formula="z = W x, delta = dJ/dz;  dJ/dW = delta x^T,  dJ/dx = W^T delta",
        forward=_matvec_forward,
        wrt=("W", "x"),
        reference_gradient=_grad_matvec,
        reference_jvp=_jvp_matvec,
        reference_hvp=_hvp_matvec,
        second_order_note=_BILINEAR_SECOND_ORDER,
        strategy=_matvec_inputs,
        ops=frozenset({"matmul"}),
        validate=_check_matvec,
    ),
    Identity(
        name="vecmat-weight-grad",
        source="notes:identity-6",
        family="linear",
        formula="z = x W, delta = dJ/dz;  dJ/dW = x^T delta,  dJ/dx = delta W^T",
        forward=_vecmat_forward,
        wrt=("W", "x"),
        reference_gradient=_grad_vecmat,
        reference_jvp=_jvp_vecmat,
        reference_hvp=_hvp_vecmat,
        second_order_note=_BILINEAR_SECOND_ORDER,
        strategy=_vecmat_inputs,
        ops=frozenset({"matmul"}),
        validate=_check_vecmat,
    ),
)
