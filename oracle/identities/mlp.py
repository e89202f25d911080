"""The notes' one-hidden-layer MLP (ReLU hidden layer, softmax cross-entropy loss): the whole
network, then steps A-E of its backward pass one at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from gradoracle import strategies as S
from gradoracle.identities.record import Arrays, Identity, InvalidShapeError, Params


def _softmax(z: np.ndarray) -> np.ndarray:
    """``softmax(z)_i = e^{z_i} / sum_j e^{z_j}``, shifted by max z for stability."""
    e = np.exp(z - np.max(z))
    return e / np.sum(e)


def _delta2(z2: np.ndarray, y: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Step A: ``delta2 = dJ/dz2 = (yhat - y)``, scaled by the upstream scalar ``c``."""
    return c * (_softmax(z2) - y)


def _check_mlp(inputs: Arrays, params: Params) -> None:
    y = inputs["y"]
    if y.ndim != 1:
        raise InvalidShapeError(f"the target y must be a vector; got y{list(y.shape)}")
    if "z2" in inputs and inputs["z2"].shape != y.shape:
        raise InvalidShapeError(f"logits z2{list(inputs['z2'].shape)} and target y{list(y.shape)} differ")


# ----------------------------------------------------- forwards, closed forms, draws


def _mlp_forward(ops: Any, a: Arrays, p: Params) -> Any:
    """``J = CE(y, softmax(W2 ReLU(W1 x + b1) + b2))``."""
    z1 = ops.add(ops.matmul(a["W1"], a["x"]), a["b1"])
    h = ops.relu(z1)
    z2 = ops.add(ops.matmul(a["W2"], h), a["b2"])
    return ops.softmax_cross_entropy(z2, a["y"])


def _mlp_step_a_forward(ops: Any, a: Arrays, p: Params) -> Any:
    """``J = CE(y, softmax(z2))``."""
    return ops.softmax_cross_entropy(a["z2"], a["y"])


def _mlp_output_forward(ops: Any, a: Arrays, p: Params) -> Any:
    """``J = CE(y, softmax(W2 h + b2))``."""
    return ops.softmax_cross_entropy(ops.add(ops.matmul(a["W2"], a["h"]), a["b2"]), a["y"])


def _mlp_relu_forward(ops: Any, a: Arrays, p: Params) -> Any:
    """``J = CE(y, softmax(W2 ReLU(z1) + b2))``."""
    return ops.softmax_cross_entropy(ops.add(ops.matmul(a["W2"], ops.relu(a["z1"])), a["b2"]), a["y"])


def _mlp_backward(a: Arrays, c: np.ndarray) -> dict[str, np.ndarray]:
    """Steps A-E of the notes for the whole network (upstream scalar ``c``)."""
    z1 = a["W1"] @ a["x"] + a["b1"]
    h = np.maximum(z1, 0)
    z2 = a["W2"] @ h + a["b2"]
    delta2 = _delta2(z2, a["y"], c)  # A: yhat - y
    dW2 = np.outer(delta2, h)  # B: delta2 h^T
    db2 = delta2  # B: delta2
    dh = a["W2"].T @ delta2  # C: W2^T delta2
    delta1 = dh * (z1 > 0)  # D: dh * 1(z1 > 0)
    dW1 = np.outer(delta1, a["x"])  # E: delta1 x^T
    db1 = delta1  # E: delta1
    dx = a["W1"].T @ delta1  # identity 1 applied once more
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "x": dx, "h": dh, "z1": delta1, "z2": delta2}


def _delta2_magnitude(z2_terms: np.ndarray, z2: np.ndarray, y: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Terms of ``delta2 = yhat - y``: ``|yhat| (1 + |terms of z2|) + |y|``, times ``|c|``.

    ``yhat`` carries a relative error of a few ulps times the magnitude of the terms of
    ``z2`` (softmax is computed from z2 - max z2), and ``- y`` cancels it when ``yhat ~ y``.
    """
    return np.abs(c) * (_softmax(z2) * (1 + z2_terms + np.max(z2_terms)) + np.abs(y))


def _mlp_magnitude_chain(a: Arrays, c: np.ndarray) -> dict[str, np.ndarray]:
    """Steps A-E with every product taken in absolute value (the rounding-error scale)."""
    z1 = a["W1"] @ a["x"] + a["b1"]
    h = np.maximum(z1, 0)
    z1_terms = np.abs(a["W1"]) @ np.abs(a["x"]) + np.abs(a["b1"])
    z2 = a["W2"] @ h + a["b2"]
    z2_terms = np.abs(a["W2"]) @ (z1_terms * (z1 > 0)) + np.abs(a["b2"])
    d2 = _delta2_magnitude(z2_terms, z2, a["y"], c)
    dh = np.abs(a["W2"]).T @ d2
    d1 = dh * (z1 > 0)
    return {
        "W1": np.outer(d1, np.abs(a["x"])),
        "b1": d1,
        "W2": np.outer(d2, np.abs(h)),
        "b2": d2,
        "x": np.abs(a["W1"]).T @ d1,
    }


def _mlp_magnitude(a: Arrays, p: Params, c: np.ndarray) -> dict[str, np.ndarray]:
    """Magnitude of the terms of every gradient of the whole network."""
    return _mlp_magnitude_chain(a, c)


def _mlp_e_magnitude(a: Arrays, p: Params, c: np.ndarray) -> dict[str, np.ndarray]:
    """Magnitude of the terms of dJ/dW1, dJ/db1."""
    g = _mlp_magnitude_chain(a, c)
    return {"W1": g["W1"], "b1": g["b1"]}


def _output_layer_terms(a: Arrays, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z2 = a["W2"] @ a["h"] + a["b2"]
    terms = np.abs(a["W2"]) @ np.abs(a["h"]) + np.abs(a["b2"])
    return _delta2_magnitude(terms, z2, a["y"], c), terms


def _step_a_magnitude(a: Arrays, p: Params, c: np.ndarray) -> dict[str, np.ndarray]:
    """Terms of ``yhat - y``."""
    return {"z2": _delta2_magnitude(np.abs(a["z2"]), a["z2"], a["y"], c)}


def _step_b_magnitude(a: Arrays, p: Params, c: np.ndarray) -> dict[str, np.ndarray]:
    """Terms of ``delta2 h^T`` and ``delta2``."""
    d2, _ = _output_layer_terms(a, c)
    return {"W2": np.outer(d2, np.abs(a["h"])), "b2": d2}


def _step_c_magnitude(a: Arrays, p: Params, c: np.ndarray) -> dict[str, np.ndarray]:
    """Terms of ``W2^T delta2``."""
    d2, _ = _output_layer_terms(a, c)
    return {"h": np.abs(a["W2"]).T @ d2}


def _step_d_magnitude(a: Arrays, p: Params, c: np.ndarray) -> dict[str, np.ndarray]:
    """Terms of ``(W2^T delta2) * 1(z1 > 0)``."""
    z1 = a["z1"]
    h = np.maximum(z1, 0)
    terms = np.abs(a["W2"]) @ h + np.abs(a["b2"])
    d2 = _delta2_magnitude(terms, a["W2"] @ h + a["b2"], a["y"], c)
    return {"z1": (np.abs(a["W2"]).T @ d2) * (z1 > 0)}


def _ce_forward_magnitude(z2: np.ndarray, z2_terms: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Terms of ``J = logsumexp(z2) - sum y z2``: ``max|z2| + log m + sum |y| |terms of z2|``."""
    return np.asarray(np.max(np.abs(z2)) + np.log(z2.size) + np.sum(np.abs(y) * (1 + z2_terms)))


def _mlp_forward_magnitude(a: Arrays, p: Params) -> np.ndarray:
    z1 = a["W1"] @ a["x"] + a["b1"]
    terms1 = np.abs(a["W1"]) @ np.abs(a["x"]) + np.abs(a["b1"])
    z2 = a["W2"] @ np.maximum(z1, 0) + a["b2"]
    terms2 = np.abs(a["W2"]) @ (terms1 * (z1 > 0)) + np.abs(a["b2"])
    return _ce_forward_magnitude(z2, terms2, a["y"])


def _step_a_forward_magnitude(a: Arrays, p: Params) -> np.ndarray:
    return _ce_forward_magnitude(a["z2"], np.abs(a["z2"]), a["y"])


def _output_forward_magnitude(a: Arrays, p: Params) -> np.ndarray:
    terms = np.abs(a["W2"]) @ np.abs(a["h"]) + np.abs(a["b2"])
    return _ce_forward_magnitude(a["W2"] @ a["h"] + a["b2"], terms, a["y"])


def _relu_forward_magnitude(a: Arrays, p: Params) -> np.ndarray:
    h = np.maximum(a["z1"], 0)
    terms = np.abs(a["W2"]) @ h + np.abs(a["b2"])
    return _ce_forward_magnitude(a["W2"] @ h + a["b2"], terms, a["y"])


def _grad_mlp(a: Arrays, p: Params, c: np.ndarray) -> dict[str, np.ndarray]:
    """The whole network: dW1 = delta1 x^T, db1 = delta1, dW2 = delta2 h^T, db2 = delta2, dx = W1^T delta1."""
    g = _mlp_backward(a, c)
    return {k: g[k] for k in ("W1", "b1", "W2", "b2", "x")}


def _grad_step_a(a: Arrays, p: Params, c: np.ndarray) -> dict[str, np.ndarray]:
    """Step A: ``dJ/dz2 = yhat - y`` with ``yhat = softmax(z2)``."""
    return {"z2": _delta2(a["z2"], a["y"], c)}


def _grad_step_b(a: Arrays, p: Params, c: np.ndarray) -> dict[str, np.ndarray]:
    """Step B: ``dJ/dW2 = delta2 h^T``, ``dJ/db2 = delta2``."""
    delta2 = _delta2(a["W2"] @ a["h"] + a["b2"], a["y"], c)
    return {"W2": np.outer(delta2, a["h"]), "b2": delta2}


def _grad_step_c(a: Arrays, p: Params, c: np.ndarray) -> dict[str, np.ndarray]:
    """Step C: ``dJ/dh = W2^T delta2``."""
    delta2 = _delta2(a["W2"] @ a["h"] + a["b2"], a["y"], c)
    return {"h": a["W2"].T @ delta2}


def _grad_step_d(a: Arrays, p: Params, c: np.ndarray) -> dict[str, np.ndarray]:
    """Step D: ``delta1 = dJ/dz1 = (W2^T delta2) * 1(z1 > 0)``."""
    z1 = a["z1"]
    delta2 = _delta2(a["W2"] @ np.maximum(z1, 0) + a["b2"], a["y"], c)
    return {"z1": (a["W2"].T @ delta2) * (z1 > 0)}


def _grad_step_e(a: Arrays, p: Params, c: np.ndarray) -> dict[str, np.ndarray]:
    """Step E: ``dJ/dW1 = delta1 x^T``, ``dJ/db1 = delta1``."""
    g = _mlp_backward(a, c)
    return {"W1": g["W1"], "b1": g["b1"]}


# ------------------------------------------- forward mode and second order (closed forms)
#
# One tangent pass through the network, written from the notes' forward: with tangents
# dW1, db1, dx, dW2, db2 (zero for inputs held constant) and the mask m = 1(z1 > 0),
#   dz1 = dW1 x + W1 dx + db1,  dh = m * dz1,  dz2 = dW2 h + W2 dh + db2,
#   dJ  = delta2 . dz2                                   (forward mode: J v)
# and, differentiating steps A-E along the tangent (second order: H v of s = c J):
#   d delta2 = c (diag(yhat) - yhat yhat^T) dz2         (the softmax Jacobian)
#   d dW2 = d delta2 h^T + delta2 dh^T,  d db2 = d delta2
#   d dh = dW2^T delta2 + W2^T d delta2,  d delta1 = m * d dh   (m is constant off the kink)
#   d dW1 = d delta1 x^T + delta1 dx^T,  d db1 = d delta1,  d dx = dW1^T delta1 + W1^T d delta1
# With ``ab`` (the magnitude of the terms) every product is taken in absolute value, the
# differences become sums, and yhat carries the relative error of exp(z2 - max z2).


def _softmax_tangent(
    z2: np.ndarray, dz2: np.ndarray, c: np.ndarray, ab: bool, z2_terms: np.ndarray
) -> np.ndarray:
    """``c (diag(yhat) - yhat yhat^T) dz2 = c yhat * (dz2 - <yhat, dz2>)``."""
    yhat = _softmax(z2)
    if ab:
        ym = yhat * (1 + z2_terms + np.max(z2_terms))
        return np.asarray(np.abs(c) * ym * (np.abs(dz2) + float(np.sum(ym * np.abs(dz2)))))
    return np.asarray(c * yhat * (dz2 - float(np.sum(yhat * dz2))))


def _mlp_tangent(a: Arrays, t: Arrays, c: np.ndarray, ab: bool = False) -> dict[str, np.ndarray]:
    """The tangent pass and the differentiated steps A-E (see above) for the whole network
    or any of its steps: the network starts at ``x`` (W1, b1), ``z1``, ``h`` or ``z2``."""
    A = (lambda n: np.abs(a[n])) if ab else (lambda n: a[n])
    T = (
        (lambda n: np.abs(t[n]) if n in t else np.zeros_like(a[n]))
        if ab
        else (lambda n: t[n] if n in t else np.zeros_like(a[n]))
    )
    out: dict[str, np.ndarray] = {}
    y = a["y"]
    if "z2" in a:  # step A: the logits are the input
        z2, dz2, z2_terms = a["z2"], T("z2"), np.abs(a["z2"])
        dd2 = _softmax_tangent(z2, dz2, c, ab, z2_terms)
        d2 = _delta2_magnitude(z2_terms, z2, y, c) if ab else _delta2(z2, y, c)
        out.update(z2=dd2, J=np.asarray(np.sum(d2 * dz2)))
        return out
    m: np.ndarray | None = None
    if "h" in a:  # steps B, C: the hidden activation is the input
        h, dh, h_terms = a["h"], T("h"), np.abs(a["h"])
    else:
        if "z1" in a:  # step D
            z1, dz1, z1_terms = a["z1"], T("z1"), np.abs(a["z1"])
        else:  # the whole network, step E
            z1 = a["W1"] @ a["x"] + a["b1"]
            z1_terms = np.abs(a["W1"]) @ np.abs(a["x"]) + np.abs(a["b1"])
            dz1 = T("W1") @ A("x") + A("W1") @ T("x") + T("b1")
        m = (z1 > 0).astype(z1.dtype)
        h, dh, h_terms = np.maximum(z1, 0), m * dz1, z1_terms * m
    z2 = a["W2"] @ h + a["b2"]
    z2_terms = np.abs(a["W2"]) @ h_terms + np.abs(a["b2"])
    dz2 = T("W2") @ (np.abs(h) if ab else h) + A("W2") @ dh + T("b2")
    d2 = _delta2_magnitude(z2_terms, z2, y, c) if ab else _delta2(z2, y, c)
    dd2 = _softmax_tangent(z2, dz2, c, ab, z2_terms)
    out["J"] = np.asarray(np.sum(d2 * dz2))
    out["W2"] = np.outer(dd2, np.abs(h) if ab else h) + np.outer(d2, dh)
    out["b2"] = dd2
    ddh = T("W2").T @ d2 + A("W2").T @ dd2
    out["h"] = ddh
    if m is None:
        return out
    dd1 = m * ddh
    out["z1"] = dd1
    if "x" in a:
        d1 = m * ((np.abs(a["W2"]).T @ d2) if ab else (a["W2"].T @ d2))
        out["W1"] = np.outer(dd1, A("x")) + np.outer(d1, T("x"))
        out["b1"] = dd1
        out["x"] = T("W1").T @ d1 + A("W1").T @ dd1
    return out


def _mlp_jvp(a: Arrays, p: Params, t: Arrays) -> np.ndarray:
    """Forward mode: ``J v = delta2 . dz2`` with ``dz2`` from the tangent pass (above)."""
    return np.asarray(_mlp_tangent(a, t, np.asarray(1.0))["J"])


def _mlp_hvp_for(names: tuple[str, ...]) -> Any:
    def hvp(a: Arrays, p: Params, u: np.ndarray, t: Arrays) -> dict[str, np.ndarray]:
        g = _mlp_tangent(a, t, np.asarray(u))
        return {n: g[n] for n in names if n in t}

    def magnitude(a: Arrays, p: Params, u: np.ndarray, t: Arrays) -> dict[str, np.ndarray]:
        g = _mlp_tangent(a, t, np.asarray(u), ab=True)
        return {n: g[n] for n in names if n in t}

    hvp.__doc__ = (
        "Second order of ``s = u J``: steps A-E differentiated along the tangent, with "
        "``d delta2 = u (diag(yhat) - yhat yhat^T) dz2`` (module comment)."
    )
    return hvp, magnitude


_MLP_SECOND_ORDER = (
    "the softmax cross-entropy's Hessian diag(yhat) - yhat yhat^T carried through both layers; "
    f"ReLU: its f'' is 0 off the kink (inputs keep |z1| >= {2 * S.KINK_MARGIN}), so the mask is constant "
    "and a framework whose double backward through ReLU is not zero fails; at z1 = 0 not checked"
)


def _second_order(names: tuple[str, ...]) -> dict[str, Any]:
    hvp, magnitude = _mlp_hvp_for(names)
    return {
        "reference_jvp": _mlp_jvp,
        "reference_hvp": hvp,
        "hvp_magnitude": magnitude,
        "second_order_note": _MLP_SECOND_ORDER,
    }


def _mlp_sizes(draw: st.DrawFn) -> tuple[int, int, int, bool, int]:
    n, h, m = draw(S.shapes(S.MLP_SHAPES))
    return n, h, m, draw(st.booleans()), draw(S.SEEDS)


@st.composite
def _mlp_inputs(draw: st.DrawFn) -> S.Example:
    n, h, m, soft, seed = _mlp_sizes(draw)
    rng = S.values_for(draw, seed)
    x = S.uniform(rng, (n,), 1.0)
    W1 = S.uniform(rng, (h, n), 1.0)
    b1 = S.uniform(rng, (h,), 0.5)
    b1 = S.push_preactivation_from_kinks(W1 @ x + b1, b1)
    W2 = S.uniform(rng, (m, h), 1.0)
    b2 = S.uniform(rng, (m,), 0.5)
    y = S.target_vector(rng, m, soft)
    return S.Example({"x": x, "W1": W1, "b1": b1, "W2": W2, "b2": b2, "y": y}, {}, seed)


@st.composite
def _logit_inputs(draw: st.DrawFn) -> S.Example:
    m, soft, seed, scale = draw(S.dims(2, 10)), draw(st.booleans()), draw(S.SEEDS), draw(S.SCALES)
    kind = draw(st.sampled_from(S.LOGIT_KINDS))
    rng = S.values_for(draw, seed)
    # large logits in half the examples (tails or a common shift, up to 100): a log-sum-exp or
    # softmax without the max subtracted overflows past 88.7 in float32
    z2 = S.logit_tails(rng, S.uniform(rng, (m,), 2 * scale), 2 * scale, kind)
    return S.Example({"z2": z2, "y": S.target_vector(rng, m, soft)}, {}, seed)


@st.composite
def _output_layer_inputs(draw: st.DrawFn) -> S.Example:
    _, h, m, soft, seed = _mlp_sizes(draw)
    rng = S.values_for(draw, seed)
    return S.Example(
        {
            "h": np.abs(S.uniform(rng, (h,), 1.0)),
            "W2": S.uniform(rng, (m, h), 1.0),
            "b2": S.uniform(rng, (m,), 0.5),
            "y": S.target_vector(rng, m, soft),
        },
        {},
        seed,
    )


@st.composite
def _relu_layer_inputs(draw: st.DrawFn) -> S.Example:
    _, h, m, soft, seed = _mlp_sizes(draw)
    rng = S.values_for(draw, seed)
    return S.Example(
        {
            "z1": S.off_kink(rng, (h,), 1.0, 2 * S.KINK_MARGIN),
            "W2": S.uniform(rng, (m, h), 1.0),
            "b2": S.uniform(rng, (m,), 0.5),
            "y": S.target_vector(rng, m, soft),
        },
        {},
        seed,
    )


def _mlp_pattern(a: Arrays, p: Params) -> np.ndarray:
    return np.asarray(a["W1"] @ a["x"] + a["b1"] > 0)


def _z1_pattern(a: Arrays, p: Params) -> np.ndarray:
    return np.asarray(a["z1"] > 0)


# ----------------------------------------------------------------------- records

_MLP_NOTE = "ReLU at z1 = 0 (left derivative 0, right derivative 1)"
_MLP_POLICY = (
    f"b1 shifted so that |W1 x + b1| >= {2 * S.KINK_MARGIN} (z1 is computed: a float32 framework "
    "rounds it by more than a few ulps of 0, so the margin stays; mlp-d-relu-mask draws z1 just off 0); "
    "soft and one-hot targets drawn"
)


#: The whole network, then steps A-E.
RECORDS: tuple[Identity, ...] = (
    Identity(
        name="mlp",
        source="notes:mlp",
        family="mlp",
        formula=(
            "z1 = W1 x + b1, h = ReLU(z1), z2 = W2 h + b2, yhat = softmax(z2), J = -sum y log yhat;  "
            "delta2 = yhat - y, dW2 = delta2 h^T, db2 = delta2, dh = W2^T delta2, "
            "delta1 = dh * 1(z1 > 0), dW1 = delta1 x^T, db1 = delta1, dx = W1^T delta1"
        ),
        forward=_mlp_forward,
        wrt=("W1", "b1", "W2", "b2", "x"),
        **_second_order(("W1", "b1", "W2", "b2", "x")),
        reference_gradient=_grad_mlp,
        magnitude=_mlp_magnitude,
        forward_magnitude=_mlp_forward_magnitude,
        strategy=_mlp_inputs,
        ops=frozenset({"matmul", "add", "relu", "softmax_cross_entropy"}),
        nondifferentiable=_MLP_NOTE,
        kink_policy=_MLP_POLICY,
        smooth_pattern=_mlp_pattern,
        validate=_check_mlp,
    ),
    Identity(
        name="mlp-a-logits",
        source="notes:mlp",
        family="mlp",
        formula="Step A: J = CE(y, softmax(z2));  delta2 = dJ/dz2 = yhat - y",
        forward=_mlp_step_a_forward,
        wrt=("z2",),
        **_second_order(("z2",)),
        reference_gradient=_grad_step_a,
        magnitude=_step_a_magnitude,
        forward_magnitude=_step_a_forward_magnitude,
        strategy=_logit_inputs,
        ops=frozenset({"softmax_cross_entropy"}),
        validate=_check_mlp,
    ),
    Identity(
        name="mlp-b-output-params",
        source="notes:mlp",
        family="mlp",
        formula="Step B: z2 = W2 h + b2;  dJ/dW2 = delta2 h^T,  dJ/db2 = delta2",
        forward=_mlp_output_forward,
        wrt=("W2", "b2"),
        **_second_order(("W2", "b2")),
        reference_gradient=_grad_step_b,
        magnitude=_step_b_magnitude,
        forward_magnitude=_output_forward_magnitude,
        strategy=_output_layer_inputs,
        ops=frozenset({"matmul", "add", "softmax_cross_entropy"}),
        validate=_check_mlp,
    ),
    Identity(
        name="mlp-c-hidden-activation",
        source="notes:mlp",
        family="mlp",
        formula="Step C: z2 = W2 h + b2;  dJ/dh = W2^T delta2",
        forward=_mlp_output_forward,
        wrt=("h",),
        **_second_order(("h",)),
        reference_gradient=_grad_step_c,
        magnitude=_step_c_magnitude,
        forward_magnitude=_output_forward_magnitude,
        strategy=_output_layer_inputs,
        ops=frozenset({"matmul", "add", "softmax_cross_entropy"}),
        validate=_check_mlp,
    ),
    Identity(
        name="mlp-d-relu-mask",
        source="notes:mlp",
        family="mlp",
        formula="Step D: h = ReLU(z1), z2 = W2 h + b2;  delta1 = dJ/dz1 = (W2^T delta2) * 1(z1 > 0)",
        forward=_mlp_relu_forward,
        wrt=("z1",),
        **_second_order(("z1",)),
        reference_gradient=_grad_step_d,
        magnitude=_step_d_magnitude,
        forward_magnitude=_relu_forward_magnitude,
        strategy=_relu_layer_inputs,
        ops=frozenset({"matmul", "add", "relu", "softmax_cross_entropy"}),
        nondifferentiable=_MLP_NOTE,
        kink_policy=(
            f"z1 drawn on both sides of 0, half of it between 2^-124 and 1/2 away, the rest >= "
            f"{2 * S.KINK_MARGIN} away (the one-sided derivatives of ReLU down to a few ulps)"
        ),
        smooth_pattern=_z1_pattern,
        validate=_check_mlp,
    ),
    Identity(
        name="mlp-e-hidden-params",
        source="notes:mlp",
        family="mlp",
        formula="Step E: z1 = W1 x + b1;  dJ/dW1 = delta1 x^T,  dJ/db1 = delta1",
        forward=_mlp_forward,
        wrt=("W1", "b1"),
        **_second_order(("W1", "b1")),
        reference_gradient=_grad_step_e,
        magnitude=_mlp_e_magnitude,
        forward_magnitude=_mlp_forward_magnitude,
        strategy=_mlp_inputs,
        ops=frozenset({"matmul", "add", "relu", "softmax_cross_entropy"}),
        nondifferentiable=_MLP_NOTE,
        kink_policy=_MLP_POLICY,
        smooth_pattern=_mlp_pattern,
        validate=_check_mlp,
    ),
)
