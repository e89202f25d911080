"""Linear layers with batches, with and without bias, in both layouts frameworks ship.

``Z = X W^T + b`` (PyTorch's ``nn.Linear``: W is (out, in)) and ``Z = X W + b`` (JAX/Flax's
``nn.Dense``: W is (in, out)), X with one or more leading batch axes.  Derivation from the
notes: every row ``x_r`` of X (all batch axes flattened) is an independent ``z_r = W x_r +
b`` (identity 5) or ``z_r = x_r W + b`` (identity 6), and ``J`` depends on W and b through
every row, so their gradients are the per-row identities *summed over the batch*:

- PyTorch layout: ``dJ/dW = sum_r delta_r x_r^T = delta^T X``, ``dJ/db = sum_r delta_r``,
  ``dJ/dX = delta W`` (row by row identity 1: ``W^T delta_r``);
- Flax layout: ``dJ/dW = sum_r x_r^T delta_r = X^T delta``, ``dJ/db = sum_r delta_r``,
  ``dJ/dX = delta W^T`` (identity 2).

Every closed form is linear in each input separately, so a directional derivative is the
same formula with one input replaced by its tangent (product rule over the inputs):

- forward mode: ``J v = dX W^T + X dW^T + db`` (PyTorch layout), ``dX W + X dW + db`` (Flax);
- second order of ``s = <U, Z>``: the gradients ``dJ/dX = U W`` and ``dJ/dW = U^T X`` each
  depend on the other input only and ``dJ/db = sum_r U_r`` on none, so ``H v`` is the cross
  term: ``(H v)_X = U v_W``, ``(H v)_W = U^T v_X`` (summed over the batch), ``(H v)_b = 0``.

Without bias (``bias=False``: PyTorch's ``nn.Linear(bias=False)``, Flax's
``nn.Dense(use_bias=False)``) the forward passes ``b=None`` to the op, so Z has no b term:
``dJ/dX`` and ``dJ/dW`` are the same formulas and ``dJ/db = 0`` (the drawn b is not an input
of the op; a framework must report no gradient, or zeros, for it), as for the convolution
layers.  Frameworks run a layer without bias through code paths of their own (``mm`` where
``addmm`` fuses the bias, no bias reduction in the backward), so the drawn configurations
hold both.
"""

from __future__ import annotations

import functools
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


def _validator(layout: str) -> Any:
    def check(inputs: Arrays, params: Params) -> None:
        X, W, b = inputs["X"], inputs["W"], inputs["b"]
        validate_bias(params)
        if X.ndim < 2 or W.ndim != 2 or b.ndim != 1:
            raise InvalidShapeError(
                f"a linear layer needs X with at least one batch axis (..., in), a 2-D W and a 1-D b; "
                f"got X{list(X.shape)}, W{list(W.shape)}, b{list(b.shape)}"
            )
        n_in, n_out = (W.shape[1], W.shape[0]) if layout == "torch" else W.shape
        shape = "(out, in)" if layout == "torch" else "(in, out)"
        if X.shape[-1] != n_in or b.shape[0] != n_out:
            raise InvalidShapeError(
                f"W{list(W.shape)} is {shape} here, so X's last axis must be {n_in} and b must have "
                f"{n_out} entries; got X{list(X.shape)}, b{list(b.shape)}"
            )

    return check


def _bias(a: Arrays, p: Params) -> Any:
    """The op's ``b``: the drawn bias, or None for a layer without bias."""
    return a["b"] if has_bias(p) else None


def _bias_grad(a: Arrays, p: Params, delta: np.ndarray, batch: str) -> np.ndarray:
    """``dJ/db = sum_r delta_r`` (0 without bias: b is no input of the op)."""
    if has_bias(p):
        return np.asarray(np.einsum(f"{batch}o->o", delta))
    return np.zeros_like(np.asarray(a["b"]))


def _linear_forward(ops: Any, a: Arrays, p: Params) -> Any:
    """``Z = X W^T + b`` (``X W^T`` without bias: the op gets ``b=None``)."""
    return ops.linear(a["X"], a["W"], _bias(a, p))


def _dense_forward(ops: Any, a: Arrays, p: Params) -> Any:
    """``Z = X W + b`` (``X W`` without bias: the op gets ``b=None``)."""
    return ops.dense(a["X"], a["W"], _bias(a, p))


def _grad_linear(a: Arrays, p: Params, delta: np.ndarray) -> dict[str, np.ndarray]:
    """``dJ/dW = sum_r delta_r x_r^T``, ``dJ/db = sum_r delta_r``, ``dJ/dX = delta W`` (r over the batch)."""
    X, W = a["X"], a["W"]
    batch = "".join("abcdefgh"[: X.ndim - 1])
    return {
        "W": np.einsum(f"{batch}o,{batch}i->oi", delta, X),
        "b": _bias_grad(a, p, delta, batch),
        "X": np.einsum(f"{batch}o,oi->{batch}i", delta, W),
    }


def _grad_dense(a: Arrays, p: Params, delta: np.ndarray) -> dict[str, np.ndarray]:
    """``dJ/dW = sum_r x_r^T delta_r``, ``dJ/db = sum_r delta_r``, ``dJ/dX = delta W^T``."""
    X, W = a["X"], a["W"]
    batch = "".join("abcdefgh"[: X.ndim - 1])
    return {
        "W": np.einsum(f"{batch}i,{batch}o->io", X, delta),
        "b": _bias_grad(a, p, delta, batch),
        "X": np.einsum(f"{batch}o,io->{batch}i", delta, W),
    }


def _tangent(a: Arrays, t: Arrays, name: str) -> np.ndarray:
    """The tangent of ``name``, zero when it is held constant."""
    return np.asarray(t[name]) if name in t else np.zeros_like(np.asarray(a[name]))


def _bias_tangent(a: Arrays, p: Params, t: Arrays) -> np.ndarray | float:
    """``db``, the bias's tangent (0 without bias: b is no input of the op)."""
    return _tangent(a, t, "b") if has_bias(p) else 0.0


def _jvp_linear(a: Arrays, p: Params, t: Arrays) -> np.ndarray:
    """Forward mode of ``Z = X W^T + b`` (bilinear in X and W): ``dZ = dX W^T + X dW^T + db``
    (no ``db`` without bias)."""
    X, W = a["X"], a["W"]
    return np.asarray(
        np.matmul(_tangent(a, t, "X"), W.T) + np.matmul(X, _tangent(a, t, "W").T) + _bias_tangent(a, p, t)
    )


def _jvp_dense(a: Arrays, p: Params, t: Arrays) -> np.ndarray:
    """Forward mode of ``Z = X W + b``: ``dZ = dX W + X dW + db`` (no ``db`` without bias)."""
    X, W = a["X"], a["W"]
    return np.asarray(
        np.matmul(_tangent(a, t, "X"), W) + np.matmul(X, _tangent(a, t, "W")) + _bias_tangent(a, p, t)
    )


def _cross_hvp(grad: Any) -> Any:
    def hvp(a: Arrays, p: Params, u: np.ndarray, t: Arrays) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if "X" in t:  # d(dJ/dX)/dW v_W: the X-gradient with W replaced by its tangent
            out["X"] = grad({**a, "W": _tangent(a, t, "W")}, p, u)["X"]
        if "W" in t:  # d(dJ/dW)/dX v_X
            out["W"] = grad({**a, "X": _tangent(a, t, "X")}, p, u)["W"]
        if "b" in t:  # dJ/db = sum_r U_r depends on no input
            out["b"] = np.zeros_like(np.asarray(a["b"]))
        return out

    return hvp


def _hvp_linear(a: Arrays, p: Params, u: np.ndarray, t: Arrays) -> dict[str, np.ndarray]:
    """``s = <U, X W^T + b>``: ``(H v)_X = U v_W``, ``(H v)_W = U^T v_X`` (batch-summed), ``(H v)_b = 0``."""
    return dict(_cross_hvp(_grad_linear)(a, p, u, t))


def _hvp_dense(a: Arrays, p: Params, u: np.ndarray, t: Arrays) -> dict[str, np.ndarray]:
    """``s = <U, X W + b>``: ``(H v)_X = U v_W^T``, ``(H v)_W = v_X^T U`` (batch-summed), ``(H v)_b = 0``."""
    return dict(_cross_hvp(_grad_dense)(a, p, u, t))


_SECOND_ORDER = (
    "s = <U, Z> is bilinear in X and W and linear in b: H v is the cross term only "
    "(d grad_X / dW v_W and d grad_W / dX v_X, the latter summed over the batch); the b block is exactly 0"
)


def _layer_config(p: L.Picker, layout: str) -> L.Configuration:
    batch: tuple[int, ...]
    if p.large():
        batch, (n_in, n_out) = (L.LARGE_ROWS,), p.one("in, out", L.LARGE_WIDTHS, cover=False)
    else:
        batch, (n_in, n_out) = p.one("batch", L.BATCH_SHAPES), p.one("in, out", S.MATRIX_SHAPES)
    w_shape = (n_out, n_in) if layout == "torch" else (n_in, n_out)
    bias = p.one("bias", (True, False))
    return {"shapes": {"X": (*batch, n_in), "W": w_shape, "b": (n_out,)}, "params": {"bias": bias}}


def _layer_values(draw: st.DrawFn, config: L.Configuration) -> S.Example:
    scale, seed = draw(S.SCALES), draw(S.SEEDS)
    return S.Example(L.uniform(draw, seed, config["shapes"], scale), dict(config["params"]), seed)


_SPACES = {
    layout: L.ConfigSpace(name, functools.partial(_layer_config, layout=layout), _layer_values)
    for layout, name in (("torch", "linear-layer"), ("flax", "dense-layer"))
}


_PARAMETERS = (
    ("batch", f"leading batch shape of X from {list(L.BATCH_SHAPES)} (one row first)"),
    (
        "in, out",
        f"layer widths from the matrix-shape menu; in about 1 example in 12, {L.LARGE_ROWS} rows and "
        f"(in, out) from {list(L.LARGE_WIDTHS)}",
    ),
    ("bias", "True or False (False: the op gets b=None and dJ/db = 0)"),
)

RECORDS: tuple[Identity, ...] = (
    Identity(
        name="linear-layer",
        source="notes:identity-5",
        family="linear-layer",
        formula=(
            "Z = X W^T + b (PyTorch layout, W (out, in), X (..., in));  "
            "dJ/dW = delta^T X = sum_r delta_r x_r^T, dJ/db = sum_r delta_r (0 with bias=False: no b term), "
            "dJ/dX = delta W  (r over every batch row)"
        ),
        forward=_linear_forward,
        wrt=("X", "W", "b"),
        reference_gradient=_grad_linear,
        strategy=_SPACES["torch"].free,
        configurations=_SPACES["torch"],
        ops=frozenset({"linear"}),
        validate=_validator("torch"),
        parameters=_PARAMETERS,
        generalises=("notes:identity-5", "notes:identity-1", "notes:identity-3"),
        reference_jvp=_jvp_linear,
        reference_hvp=_hvp_linear,
        second_order_note=_SECOND_ORDER,
        crash_hint=no_bias_hint("linear layer", "linear", "(out,)"),
        derivation=(
            "each batch row is z_r = W x_r + b (identity 5 for W, identity 1 for x_r, identity 3 for b); "
            "W and b are shared by the rows, so their gradients sum the per-row ones over the batch"
        ),
    ),
    Identity(
        name="dense-layer",
        source="notes:identity-6",
        family="linear-layer",
        formula=(
            "Z = X W + b (JAX/Flax layout, W (in, out), X (..., in));  "
            "dJ/dW = X^T delta = sum_r x_r^T delta_r, dJ/db = sum_r delta_r (0 with bias=False: no b term), "
            "dJ/dX = delta W^T"
        ),
        forward=_dense_forward,
        wrt=("X", "W", "b"),
        reference_gradient=_grad_dense,
        strategy=_SPACES["flax"].free,
        configurations=_SPACES["flax"],
        ops=frozenset({"dense"}),
        validate=_validator("flax"),
        parameters=_PARAMETERS,
        generalises=("notes:identity-6", "notes:identity-2", "notes:identity-3"),
        reference_jvp=_jvp_dense,
        reference_hvp=_hvp_dense,
        second_order_note=_SECOND_ORDER,
        crash_hint=no_bias_hint("dense layer", "dense", "(out,)"),
        derivation=(
            "each batch row is z_r = x_r W + b (identity 6 for W, identity 2 for x_r, identity 3 for b); "
            "the shared W and b sum the per-row gradients over the batch"
        ),
    ),
)
