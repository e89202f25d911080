"""Every identity of ``notes/gradient-notes.md`` as a declarative record.

Each :class:`Identity` holds the forward (written once against the ops namespace of
:mod:`gradoracle.ops`, so every adapter runs literally the same computation), the
closed-form reference gradient written from the notes' formula in NumPy (never from
autodiff), a Hypothesis strategy for its inputs, and its non-differentiable points with
the policy for them.  Reference gradients are vector-Jacobian products: given the
cotangent ``u = dJ/dz`` (the notes' ``delta``) they return ``dJ/d input`` for every
differentiable input.  For notes identities 1-4 the full Jacobian is also provided and
the VJP is ``u^T J`` computed from it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from gradoracle import strategies as S
from gradoracle.ops import ELU_ALPHA, LEAKY_RELU_SLOPE
from gradoracle.reference_ops import REFERENCE_OPS, correlate2d_valid, erf, sigmoid
from hypothesis import strategies as st

Arrays = Mapping[str, np.ndarray]
Params = Mapping[str, Any]
ForwardFn = Callable[[Any, Arrays, Params], Any]
ReferenceFn = Callable[[Arrays, Params, np.ndarray], dict[str, np.ndarray]]
JacobianFn = Callable[[Arrays, Params], dict[str, np.ndarray]]
PatternFn = Callable[[Arrays, Params], np.ndarray]


class UnknownIdentityError(KeyError):
    """An identity name that is not in the catalogue; the message suggests close names."""

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidShapeError(ValueError):
    """Input shapes an identity cannot work with; the message says why and what fits."""


@dataclass(frozen=True)
class Identity:
    """One identity of the notes: forward, closed-form gradient, inputs, kinks."""

    name: str
    source: str
    family: str
    formula: str
    forward: ForwardFn
    wrt: tuple[str, ...]
    reference_gradient: ReferenceFn | None  # None: no closed form (ad-hoc checks; FD only)
    strategy: Callable[[], st.SearchStrategy[S.Example]]
    ops: frozenset[str]
    nondifferentiable: str = "none: smooth everywhere on the drawn domain"
    kink_policy: str = "none needed"
    reference_jacobian: JacobianFn | None = None
    magnitude: ReferenceFn | None = None
    forward_magnitude: Callable[[Arrays, Params], np.ndarray] | None = None
    smooth_pattern: PatternFn | None = None
    validate: Callable[[Arrays, Params], None] | None = None
    doc: str = ""

    def run_forward(self, ops: Any, inputs: Arrays, params: Params | None = None) -> Any:
        """``forward(ops, inputs, params)``: the identity's forward on any ops namespace."""
        return self.forward(ops, inputs, params or {})

    def reference_forward(self, inputs: Arrays, params: Params | None = None) -> np.ndarray:
        """The forward in NumPy (the dtype of ``inputs``) with the oracle's reference ops."""
        return np.asarray(self.forward(REFERENCE_OPS, inputs, params or {}))

    def check_shapes(self, inputs: Arrays, params: Params | None = None) -> None:
        """Raise :class:`InvalidShapeError` for inputs this identity cannot work with."""
        missing = [n for n in self.wrt if n not in inputs]
        if missing:
            raise InvalidShapeError(f"{self.name}: missing input(s) {', '.join(missing)}")
        if self.validate is not None:
            self.validate(inputs, params or {})

    def gradient_magnitude(
        self, inputs: Arrays, params: Params | None, cotangent: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Per element, the magnitude of the terms the gradient is computed from.

        This is the scale of the componentwise rounding-error bound
        ``|fl(g)_i - g_i| <= c eps sum_k |t_ik|`` (``g_i = sum_k t_ik``).  For identities made
        of sums of products (matmul, conv, average pooling) it is the closed form applied to
        ``|inputs|`` and ``|u|``; identities with cancellation in a derivative formula
        (``yhat - y``, ``1 - tanh^2``, ...) or with kinks supply their own ``magnitude``.
        """
        params = params or {}
        u = np.asarray(cotangent)
        if self.magnitude is not None:
            return {k: np.abs(v) for k, v in self.magnitude(inputs, params, u).items()}
        if self.reference_gradient is None:
            raise ValueError(f"identity {self.name!r} has no closed form, hence no magnitude")
        absolute = {k: np.abs(v) for k, v in inputs.items()}
        return {k: np.abs(v) for k, v in self.reference_gradient(absolute, params, np.abs(u)).items()}

    def output_magnitude(self, inputs: Arrays, params: Params | None = None) -> np.ndarray:
        """Per element, the magnitude of the terms the forward output is computed from."""
        params = params or {}
        if self.forward_magnitude is not None:
            return np.abs(self.forward_magnitude(inputs, params))
        return np.abs(self.reference_forward({k: np.abs(v) for k, v in inputs.items()}, params))

    def gradient(self, inputs: Arrays, params: Params | None, cotangent: np.ndarray) -> dict[str, np.ndarray]:
        """Closed-form ``dJ/d input`` for every name in ``wrt`` given ``u = dJ/dz``."""
        if self.reference_gradient is None:
            raise ValueError(
                f"identity {self.name!r} has no closed-form reference gradient; it is checked against "
                "finite differences only"
            )
        self.check_shapes(inputs, params)
        return self.reference_gradient(inputs, params or {}, np.asarray(cotangent))


# --------------------------------------------------------------------------- helpers


def _vjp_from_jacobian(jac: JacobianFn) -> ReferenceFn:
    """``u^T J`` reshaped to the input's shape, from a full Jacobian ``J`` (out x in)."""

    def vjp(inputs: Arrays, params: Params, u: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name, J in jac(inputs, params).items():
            out[name] = (u.reshape(-1) @ J).reshape(inputs[name].shape)
        return out

    vjp.__doc__ = f"``u^T J`` from the full Jacobian. {jac.__doc__}"
    return vjp


def _softmax(z: np.ndarray) -> np.ndarray:
    """``softmax(z)_i = e^{z_i} / sum_j e^{z_j}``, shifted by max z for stability."""
    e = np.exp(z - np.max(z))
    return e / np.sum(e)


def _delta2(z2: np.ndarray, y: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Step A: ``delta2 = dJ/dz2 = (yhat - y)``, scaled by the upstream scalar ``c``."""
    return c * (_softmax(z2) - y)


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


def _check_conv(inputs: Arrays, params: Params) -> None:
    X, K = inputs["X"], inputs["K"]
    if X.ndim != 2 or K.ndim != 2:
        raise InvalidShapeError(f"conv needs a 2-D input and kernel; got X{list(X.shape)}, K{list(K.shape)}")
    if K.shape[0] > X.shape[0] or K.shape[1] > X.shape[1]:
        raise InvalidShapeError(
            f"kernel {K.shape[0]}x{K.shape[1]} is larger than the {X.shape[0]}x{X.shape[1]} input: a valid "
            "cross-correlation needs H >= k and W >= k (use a smaller kernel or a larger input)"
        )


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


def _check_mlp(inputs: Arrays, params: Params) -> None:
    y = inputs["y"]
    if y.ndim != 1:
        raise InvalidShapeError(f"the target y must be a vector; got y{list(y.shape)}")
    if "z2" in inputs and inputs["z2"].shape != y.shape:
        raise InvalidShapeError(f"logits z2{list(inputs['z2'].shape)} and target y{list(y.shape)} differ")


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
    rng = S.rng_for(seed)
    return S.Example({"W": S.uniform(rng, (n, m), scale), "x": S.uniform(rng, (m,), scale)}, {}, seed)


@st.composite
def _vecmat_inputs(draw: st.DrawFn) -> S.Example:
    (n, m), scale, seed = draw(S.shapes(S.MATRIX_SHAPES)), draw(S.SCALES), draw(S.SEEDS)
    rng = S.rng_for(seed)
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
    return S.Example({"x": S.uniform(S.rng_for(seed), (n,), scale)}, {}, seed)


def _jac_self(a: Arrays, p: Params) -> dict[str, np.ndarray]:
    """Identity 3: ``(dz/dx)_{ij} = 1 if i = j else 0``, i.e. ``dz/dx = I``."""
    return {"x": np.eye(a["x"].shape[0], dtype=a["x"].dtype)}


# --------------------------------------------------------------------- identity 4


@dataclass(frozen=True)
class Elementwise:
    """One elementwise ``f`` of identity 4 with its closed-form derivative ``f'``."""

    op: str
    derivative: Callable[[np.ndarray], np.ndarray]
    derivative_text: str
    domain: str = "real"  # "real", "positive", "nonzero"
    kink: str = ""
    scale: float = 2.0
    #: magnitude of the terms in f'(x) (cancellation-free bound); default |f'(x)|
    term_magnitude: Callable[[np.ndarray], np.ndarray] | None = None
    #: magnitude of the terms in f(x); default |f(x)| + |x f'(x)|
    value_magnitude: Callable[[np.ndarray], np.ndarray] | None = None


def _t(x: np.ndarray, v: float) -> Any:
    return x.dtype.type(v)


_SQRT_2PI = math.sqrt(2.0 * math.pi)

ELEMENTWISE: tuple[Elementwise, ...] = (
    Elementwise(
        "relu",
        lambda x: (x > 0).astype(x.dtype),
        "1(x > 0)",
        "nonzero",
        "x = 0 (left derivative 0, right derivative 1)",
    ),
    Elementwise(
        "leaky_relu",
        lambda x: np.where(x > 0, _t(x, 1.0), _t(x, LEAKY_RELU_SLOPE)),
        f"1 if x > 0 else {LEAKY_RELU_SLOPE}",
        "nonzero",
        f"x = 0 (left derivative {LEAKY_RELU_SLOPE}, right derivative 1)",
    ),
    Elementwise(
        "sigmoid",
        lambda x: sigmoid(x) * (1 - sigmoid(x)),
        "sigma(x) (1 - sigma(x))",
        scale=4.0,
        term_magnitude=lambda x: sigmoid(x) * (1 + sigmoid(x)),
    ),
    Elementwise(
        "tanh",
        lambda x: 1 - np.tanh(x) ** 2,
        "1 - tanh(x)^2",
        scale=3.0,
        term_magnitude=lambda x: 1 + np.tanh(x) ** 2,
    ),
    Elementwise("exp", np.exp, "exp(x)", scale=3.0),
    Elementwise("log", lambda x: 1 / x, "1 / x", "positive"),
    Elementwise("softplus", sigmoid, "sigma(x)", scale=4.0),
    Elementwise("sin", np.cos, "cos(x)", scale=4.0, term_magnitude=lambda x: np.ones_like(x)),
    Elementwise("square", lambda x: 2 * x, "2 x"),
    Elementwise("abs", np.sign, "sign(x)", "nonzero", "x = 0 (left derivative -1, right derivative 1)"),
    Elementwise(
        "elu",
        lambda x: np.where(x > 0, _t(x, 1.0), _t(x, ELU_ALPHA) * np.exp(np.minimum(x, 0))),
        f"1 if x > 0 else {ELU_ALPHA} exp(x)",
        "nonzero",
        "x = 0 (differentiable for alpha = 1, but f'' jumps: kept away like a kink)",
    ),
    Elementwise(
        "silu",
        lambda x: sigmoid(x) * (1 + x * (1 - sigmoid(x))),
        "sigma(x) (1 + x (1 - sigma(x)))",
        scale=4.0,
        term_magnitude=lambda x: sigmoid(x) * (1 + np.abs(x) * (1 + sigmoid(x))),
    ),
    Elementwise(
        "gelu",
        lambda x: 0.5 * (1 + erf(x / _t(x, math.sqrt(2.0)))) + x * np.exp(-0.5 * x * x) / _t(x, _SQRT_2PI),
        "Phi(x) + x phi(x)  (exact erf form)",
        scale=3.0,
        term_magnitude=lambda x: (
            0.5 * (1 + np.abs(erf(x / _t(x, math.sqrt(2.0)))))
            + np.abs(x) * np.exp(-0.5 * x * x) / _t(x, _SQRT_2PI)
        ),
        # x/2 (1 + erf(x / sqrt 2)): the 1 + erf cancels for x << 0
        value_magnitude=lambda x: 0.5 * np.abs(x) * (1 + np.abs(erf(x / _t(x, math.sqrt(2.0))))),
    ),
)


def _elementwise_identity(f: Elementwise) -> Identity:
    op = f.op

    def forward(ops: Any, a: Arrays, p: Params) -> Any:
        return getattr(ops, op)(a["x"])

    forward.__doc__ = f"``z = {op}(x)`` elementwise."

    def jacobian(a: Arrays, p: Params) -> dict[str, np.ndarray]:
        return {"x": np.diag(f.derivative(a["x"]))}

    jacobian.__doc__ = f"Identity 4: ``dz/dx = diag(f'(x))`` with ``f'(x) = {f.derivative_text}``."

    def vjp(a: Arrays, p: Params, u: np.ndarray) -> dict[str, np.ndarray]:
        # u^T diag(f'(x)) = u * f'(x): the diagonal Jacobian applied without forming it.
        return {"x": u * f.derivative(a["x"])}

    vjp.__doc__ = f"Identity 4: ``u^T diag(f'(x)) = u * f'(x)`` with ``f'(x) = {f.derivative_text}``."

    def magnitude(a: Arrays, p: Params, u: np.ndarray) -> dict[str, np.ndarray]:
        terms = f.term_magnitude or (lambda x: np.abs(f.derivative(x)))
        return {"x": np.abs(u) * np.abs(terms(a["x"]))}

    def forward_magnitude(a: Arrays, p: Params) -> np.ndarray:
        # f(x) to a few ulps of |f(x)|, plus the input's own rounding carried through f'
        x = a["x"]
        value = np.abs(getattr(REFERENCE_OPS, op)(x)) + np.abs(x) * np.abs(f.derivative(x))
        return value if f.value_magnitude is None else np.maximum(value, f.value_magnitude(x))

    @st.composite
    def inputs(draw: st.DrawFn) -> S.Example:
        n, seed = draw(S.dims(1, 12)), draw(S.SEEDS)
        rng = S.rng_for(seed)
        if f.domain == "positive":
            x = S.positive(rng, (n,), 0.1, 4.0)
        elif f.domain == "nonzero":
            x = S.away_from_zero(rng, (n,), f.scale)
        else:
            x = S.uniform(rng, (n,), f.scale)
        return S.Example({"x": x}, {}, seed)

    pattern: PatternFn | None = None
    if f.domain == "nonzero":

        def pattern(a: Arrays, p: Params) -> np.ndarray:
            return np.asarray(a["x"] > 0)

    return Identity(
        name=f"elementwise-{op.replace('_', '-')}",
        source="notes:identity-4",
        family="elementwise",
        formula=f"z = {op}(x) elementwise;  dz/dx = diag(f'(x)),  f'(x) = {f.derivative_text}",
        forward=forward,
        wrt=("x",),
        reference_gradient=vjp,
        reference_jacobian=jacobian,
        magnitude=magnitude,
        forward_magnitude=forward_magnitude,
        strategy=inputs,
        ops=frozenset({op}),
        nondifferentiable=f.kink or "none",
        kink_policy=(
            f"inputs drawn with |x| >= {S.KINK_MARGIN}; the kink is probed by the convention table"
            if f.kink
            else ("inputs drawn in [0.1, 4] (log's domain)" if f.domain == "positive" else "none needed")
        ),
        smooth_pattern=pattern,
    )


# ----------------------------------------------------------------- identities 5, 6


def _grad_matvec(a: Arrays, p: Params, delta: np.ndarray) -> dict[str, np.ndarray]:
    """Identity 5: ``dJ/dW = delta x^T`` (entry (i,j) is delta_i x_j); ``dJ/dx = W^T delta``."""
    return {"W": np.outer(delta, a["x"]), "x": a["W"].T @ delta}


def _grad_vecmat(a: Arrays, p: Params, delta: np.ndarray) -> dict[str, np.ndarray]:
    """Identity 6: ``dJ/dW = x^T delta`` (entry (i,j) is x_i delta_j); ``dJ/dx = delta W^T``."""
    return {"W": np.outer(a["x"], delta), "x": delta @ a["W"].T}


# --------------------------------------------------------------------------- MLP


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


def _max_pool_magnitude(a: Arrays, p: Params, delta: np.ndarray) -> dict[str, np.ndarray]:
    """The router moves values without arithmetic: the magnitude is |dJ/dX| itself."""
    return {"X": np.abs(_grad_max_pool(a, p, delta)["X"])}


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


def _mlp_sizes(draw: st.DrawFn) -> tuple[int, int, int, bool, int]:
    n, h, m = draw(S.shapes(S.MLP_SHAPES))
    return n, h, m, draw(st.booleans()), draw(S.SEEDS)


@st.composite
def _mlp_inputs(draw: st.DrawFn) -> S.Example:
    n, h, m, soft, seed = _mlp_sizes(draw)
    rng = S.rng_for(seed)
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
    rng = S.rng_for(seed)
    return S.Example(
        {"z2": S.uniform(rng, (m,), 2 * scale), "y": S.target_vector(rng, m, soft)},
        {},
        seed,
    )


@st.composite
def _output_layer_inputs(draw: st.DrawFn) -> S.Example:
    _, h, m, soft, seed = _mlp_sizes(draw)
    rng = S.rng_for(seed)
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
    rng = S.rng_for(seed)
    return S.Example(
        {
            "z1": S.away_from_zero(rng, (h,), 1.0, 2 * S.KINK_MARGIN),
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


# -------------------------------------------------------------------------- conv


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


@st.composite
def _conv_inputs(draw: st.DrawFn) -> S.Example:
    k, H, W = draw(S.shapes(S.CONV_SHAPES))
    scale, seed = draw(S.SCALES), draw(S.SEEDS)
    rng = S.rng_for(seed)
    return S.Example({"X": S.uniform(rng, (H, W), scale), "K": S.uniform(rng, (k, k), scale)}, {}, seed)


# ----------------------------------------------------------------------- pooling


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
    X = S.uniform(S.rng_for(seed), (H, W), scale)
    if separate_maxima:
        X = S.separate_window_maxima(X, k)
    return S.Example({"X": X}, {"k": k}, seed)


def _max_pool_pattern(a: Arrays, p: Params) -> np.ndarray:
    win, ho, wo = _windows(a["X"], int(p["k"]))
    return np.asarray(win.transpose(0, 2, 1, 3).reshape(ho, wo, -1).argmax(axis=2))


# ---------------------------------------------------------------------- registry

_MLP_NOTE = "ReLU at z1 = 0 (left derivative 0, right derivative 1)"
_MLP_POLICY = f"b1 shifted so that |W1 x + b1| >= {2 * S.KINK_MARGIN}; soft and one-hot targets drawn"


def _build() -> dict[str, Identity]:
    ids: list[Identity] = [
        Identity(
            name="matvec-jacobian",
            source="notes:identity-1",
            family="jacobian",
            formula="z = W x, W in R^{n x m};  dz/dx = W  ((dz/dx)_ij = W_ij)",
            forward=_matvec_forward,
            wrt=("x",),
            reference_gradient=_vjp_from_jacobian(_jac_matvec),
            reference_jacobian=_jac_matvec,
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
            reference_gradient=_vjp_from_jacobian(_jac_vecmat),
            reference_jacobian=_jac_vecmat,
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
            reference_gradient=_vjp_from_jacobian(_jac_self),
            reference_jacobian=_jac_self,
            strategy=_vector_inputs,
            ops=frozenset(),
        ),
        *(_elementwise_identity(f) for f in ELEMENTWISE),
        Identity(
            name="matvec-weight-grad",
            source="notes:identity-5",
            family="linear",
            formula="z = W x, delta = dJ/dz;  dJ/dW = delta x^T,  dJ/dx = W^T delta",
            forward=_matvec_forward,
            wrt=("W", "x"),
            reference_gradient=_grad_matvec,
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
            strategy=_vecmat_inputs,
            ops=frozenset({"matmul"}),
            validate=_check_vecmat,
        ),
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
            reference_gradient=_grad_step_d,
            magnitude=_step_d_magnitude,
            forward_magnitude=_relu_forward_magnitude,
            strategy=_relu_layer_inputs,
            ops=frozenset({"matmul", "add", "relu", "softmax_cross_entropy"}),
            nondifferentiable=_MLP_NOTE,
            kink_policy=f"z1 drawn with |z1| >= {2 * S.KINK_MARGIN}",
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
        ),
        Identity(
            name="max-pool",
            source="notes:max-pool",
            family="pool",
            formula=(
                "Z = MaxPool_k(X), k x k windows, stride k;  "
                "dJ/dx_ij = delta_uv if x_ij = max(window_uv) else 0"
            ),
            forward=_max_pool_forward,
            wrt=("X",),
            reference_gradient=_grad_max_pool,
            magnitude=_max_pool_magnitude,
            strategy=lambda: _pool_inputs(True),
            ops=frozenset({"max_pool2d"}),
            nondifferentiable="tied maxima inside a window (the router has no single target)",
            kink_policy=(
                f"each window's maximum leads its runner-up by >= {S.KINK_MARGIN}; ties are probed by the "
                "convention table; rows/columns left over at the edge (floor mode) get zero gradient"
            ),
            smooth_pattern=_max_pool_pattern,
            validate=_check_pool,
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
        ),
    ]
    return {i.name: i for i in ids}


IDENTITIES: dict[str, Identity] = _build()

#: The notes' section labels, in the order of the notes.
SOURCES: tuple[str, ...] = (
    "notes:identity-1",
    "notes:identity-2",
    "notes:identity-3",
    "notes:identity-4",
    "notes:identity-5",
    "notes:identity-6",
    "notes:mlp",
    "notes:conv-filter",
    "notes:conv-input",
    "notes:max-pool",
    "notes:avg-pool",
)


def all_identities() -> list[Identity]:
    """Every identity in the catalogue, in the notes' order."""
    return list(IDENTITIES.values())


def get_identity(name: str | Identity) -> Identity:
    """The identity called ``name`` (or a source label naming exactly one); suggests close names."""
    if isinstance(name, Identity):
        return name
    if name in IDENTITIES:
        return IDENTITIES[name]
    close = difflib.get_close_matches(name, list(IDENTITIES), n=4, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownIdentityError(f"unknown identity {name!r}.{hint} Run 'gradoracle list' for the catalogue.")


def select_identities(names: list[str] | None) -> list[Identity]:
    """Identities named (by name, by ``notes:`` source label, or by family), all when empty."""
    if not names:
        return all_identities()
    chosen: dict[str, Identity] = {}
    for name in names:
        matches = [i for i in IDENTITIES.values() if name in (i.source, i.family)]
        for ident in matches or [get_identity(name)]:
            chosen[ident.name] = ident
    return list(chosen.values())
