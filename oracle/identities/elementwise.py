"""Notes identity 4: ``z = f(x)`` elementwise, ``dz/dx = diag(f'(x))``, one record per row
of the :data:`ELEMENTWISE` table (the full Jacobian is provided; the VJP is ``u * f'(x)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from gradoracle import strategies as S
from gradoracle.identities.record import Arrays, Identity, Params, PatternFn
from gradoracle.ops import ELU_ALPHA, LEAKY_RELU_SLOPE
from gradoracle.reference_ops import REFERENCE_OPS, erf, sigmoid


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
        rng = S.values_for(draw, seed)
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


#: One record per row of :data:`ELEMENTWISE`, in the table's order.
RECORDS: tuple[Identity, ...] = tuple(_elementwise_identity(f) for f in ELEMENTWISE)
