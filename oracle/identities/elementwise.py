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
    domain: str = "real"  # "real", "positive", "nonzero" (a kink at 0), "near0" (smooth, special-looking 0)
    kink: str = ""
    #: the generalised gradient at the kink x = 0: ``(left derivative, right derivative)``
    one_sided: tuple[float, float] | None = None
    #: f'' jumps at 0 (ELU): finite differences must not straddle 0, the draws still go there
    second_derivative_jump: bool = False
    scale: float = 2.0
    #: the largest |x| of the tail draws (about half the examples move some entries to
    #: ``[scale, tail]``, where saturating branches and thresholds live); 0: none
    tail: float = 0.0
    #: a signed open interval the tail draws skip (a framework's documented deviation there)
    tail_gap: tuple[float, float] | None = None
    #: magnitude of the terms in f'(x) (cancellation-free bound); default |f'(x)|
    term_magnitude: Callable[[np.ndarray], np.ndarray] | None = None
    #: magnitude of the terms in f(x); default |f(x)| + |x f'(x)|
    value_magnitude: Callable[[np.ndarray], np.ndarray] | None = None
    #: the closed-form second derivative ``f''`` (zero away from a kink for piecewise-linear f)
    second: Callable[[np.ndarray], np.ndarray] = lambda x: np.zeros_like(x)
    second_text: str = "0"
    #: magnitude of the terms in f''(x); default |f''(x)|
    second_magnitude: Callable[[np.ndarray], np.ndarray] | None = None


def _t(x: np.ndarray, v: float) -> Any:
    return x.dtype.type(v)


_SQRT_2PI = math.sqrt(2.0 * math.pi)
#: The tail draws' largest |x| for the functions whose textbook backward goes through ``exp(|x|)``
#: (sigmoid' as ``e^-x / (1 + e^-x)^2``, softplus' and SiLU's sigmoid as ``e^x / (1 + e^x)``,
#: tanh' as ``4 e^2x / (1 + e^2x)^2``): past float32's ``exp`` overflow at 88.7 (44.4 for
#: ``e^2x``), where such a backward returns inf/inf = NaN while the correct frameworks stay
#: inside the tolerance.  Gradients that underflow there (sigmoid'(-100) = 3.7e-44, subnormal in
#: float32, flushed to 0 by XLA on CPU) are judged by the absolute floor of the tolerance
#: (``atol``, and the subnormal floor of the effective-bits measure, :mod:`gradoracle.precision`).
OVERFLOW_TAIL = 100.0
#: The tail draws' largest |x| for sin (periodic, nothing overflows; the finite differences'
#: step grows with the vector's largest |x|).
TAIL = 20.0
#: GELU's: its exact backward has no growing ``exp``; ``Phi(x) = (1 + erf(x / sqrt 2)) / 2``
#: underflows to 0 from x = -5.4 in float32 and -8.3 in float64, where a backward dividing by it
#: breaks (f'' = phi(x) (2 - x^2) is subnormal in float32 past |x| = 13: the subnormal floor of
#: :mod:`gradoracle.precision` and the tolerance's ``atol`` judge it).
GELU_TAIL = 20.0
#: PyTorch's softplus threshold (``F.softplus(x, threshold=20)`` is ``x`` above it, its
#: derivative exactly 1): a documented deviation that shows in float64 until ``sigma(x)``
#: rounds to 1 there (x = 36.7; e^-37 = 8.5e-17).  The softplus tail draws skip that window
#: (:func:`gradoracle.strategies.with_tails`'s ``gap``); the convention probe
#: ``softplus-threshold`` reports what a framework does there (``gradoracle.conventions``).
SOFTPLUS_THRESHOLD = 20.0
SOFTPLUS_LINEAR_TAIL_GAP = (SOFTPLUS_THRESHOLD, 37.0)

ELEMENTWISE: tuple[Elementwise, ...] = (
    Elementwise(
        "relu",
        lambda x: (x > 0).astype(x.dtype),
        "1(x > 0)",
        "nonzero",
        "x = 0 (left derivative 0, right derivative 1; generalised gradient [0, 1])",
        (0.0, 1.0),
        second_text="0 for x != 0 (f' jumps at 0: no f'' there)",
    ),
    Elementwise(
        "leaky_relu",
        lambda x: np.where(x > 0, _t(x, 1.0), _t(x, LEAKY_RELU_SLOPE)),
        f"1 if x > 0 else {LEAKY_RELU_SLOPE}",
        "nonzero",
        f"x = 0 (left derivative {LEAKY_RELU_SLOPE}, right derivative 1; generalised gradient "
        f"[{LEAKY_RELU_SLOPE}, 1])",
        (LEAKY_RELU_SLOPE, 1.0),
        second_text="0 for x != 0 (f' jumps at 0: no f'' there)",
    ),
    Elementwise(
        "sigmoid",
        lambda x: sigmoid(x) * (1 - sigmoid(x)),
        "sigma(x) (1 - sigma(x))",
        scale=4.0,
        tail=OVERFLOW_TAIL,
        term_magnitude=lambda x: sigmoid(x) * (1 + sigmoid(x)),
        second=lambda x: sigmoid(x) * (1 - sigmoid(x)) * (1 - 2 * sigmoid(x)),
        second_text="sigma(x) (1 - sigma(x)) (1 - 2 sigma(x))",
        second_magnitude=lambda x: sigmoid(x) * (1 + sigmoid(x)) * (1 + 2 * sigmoid(x)),
    ),
    Elementwise(
        "tanh",
        lambda x: 1 - np.tanh(x) ** 2,
        "1 - tanh(x)^2",
        scale=3.0,
        tail=OVERFLOW_TAIL,
        term_magnitude=lambda x: 1 + np.tanh(x) ** 2,
        second=lambda x: -2 * np.tanh(x) * (1 - np.tanh(x) ** 2),
        second_text="-2 tanh(x) (1 - tanh(x)^2)",
        # f'' as the formula reads, plus the terms of the product rule on f' = (1 - t)(1 + t), the
        # form JAX differentiates: t' ((1 - t) - (1 + t)) cancels at t = 0, where jit (FMA) leaves
        # a rounding residue of 2 t' |u v| eps although f'' = 0 (found by the FP campaign)
        second_magnitude=lambda x: (
            2 * np.abs(np.tanh(x)) * (1 + np.tanh(x) ** 2)
            + 2 * (1 - np.tanh(x) ** 2) * (1 + np.abs(np.tanh(x)))
        ),
    ),
    Elementwise("exp", np.exp, "exp(x)", scale=3.0, second=np.exp, second_text="exp(x)"),
    Elementwise(
        "log", lambda x: 1 / x, "1 / x", "positive", second=lambda x: -1 / (x * x), second_text="-1 / x^2"
    ),
    Elementwise(
        "softplus",
        sigmoid,
        "sigma(x)",
        "near0",
        scale=4.0,
        # PyTorch returns x itself above its threshold 20 (2e-9 off in float64): the tails skip
        # (20, 37), where that documented linearisation shows in float64
        tail=OVERFLOW_TAIL,
        tail_gap=SOFTPLUS_LINEAR_TAIL_GAP,
        second=lambda x: sigmoid(x) * (1 - sigmoid(x)),
        second_text="sigma(x) (1 - sigma(x))",
        second_magnitude=lambda x: sigmoid(x) * (1 + sigmoid(x)),
    ),
    Elementwise(
        "sin",
        np.cos,
        "cos(x)",
        scale=4.0,
        tail=TAIL,
        term_magnitude=lambda x: np.ones_like(x),
        second=lambda x: -np.sin(x),
        second_text="-sin(x)",
        second_magnitude=lambda x: np.ones_like(x),
    ),
    Elementwise("square", lambda x: 2 * x, "2 x", second=lambda x: np.full_like(x, 2.0), second_text="2"),
    Elementwise(
        "abs",
        np.sign,
        "sign(x)",
        "nonzero",
        "x = 0 (left derivative -1, right derivative 1; generalised gradient [-1, 1])",
        (-1.0, 1.0),
        second_text="0 for x != 0 (f' jumps at 0: no f'' there)",
    ),
    Elementwise(
        "elu",
        lambda x: np.where(x > 0, _t(x, 1.0), _t(x, ELU_ALPHA) * np.exp(np.minimum(x, 0))),
        f"1 if x > 0 else {ELU_ALPHA} exp(x)",
        "near0",
        second_derivative_jump=True,
        # x <= 0: expm1(x), or exp(x) - 1 whose terms are exp(x) and 1 (cancellation near 0)
        value_magnitude=lambda x: np.where(x > 0, np.abs(x), np.exp(np.minimum(x, 0)) + 1),
        second=lambda x: np.where(x > 0, _t(x, 0.0), _t(x, ELU_ALPHA) * np.exp(np.minimum(x, 0))),
        second_text=f"0 if x > 0 else {ELU_ALPHA} exp(x) (jumps at 0)",
    ),
    Elementwise(
        "silu",
        lambda x: sigmoid(x) * (1 + x * (1 - sigmoid(x))),
        "sigma(x) (1 + x (1 - sigma(x)))",
        "near0",
        scale=4.0,
        tail=OVERFLOW_TAIL,
        term_magnitude=lambda x: sigmoid(x) * (1 + np.abs(x) * (1 + sigmoid(x))),
        second=lambda x: sigmoid(x) * (1 - sigmoid(x)) * (2 + x * (1 - 2 * sigmoid(x))),
        second_text="sigma(x) (1 - sigma(x)) (2 + x (1 - 2 sigma(x)))",
        second_magnitude=lambda x: sigmoid(x) * (1 + sigmoid(x)) * (2 + np.abs(x) * (1 + 2 * sigmoid(x))),
    ),
    Elementwise(
        "gelu",
        lambda x: 0.5 * (1 + erf(x / _t(x, math.sqrt(2.0)))) + x * np.exp(-0.5 * x * x) / _t(x, _SQRT_2PI),
        "Phi(x) + x phi(x)  (exact erf form)",
        "near0",
        scale=3.0,
        tail=GELU_TAIL,
        term_magnitude=lambda x: (
            0.5 * (1 + np.abs(erf(x / _t(x, math.sqrt(2.0)))))
            + np.abs(x) * np.exp(-0.5 * x * x) / _t(x, _SQRT_2PI)
        ),
        # x/2 (1 + erf(x / sqrt 2)): the 1 + erf cancels for x << 0
        value_magnitude=lambda x: 0.5 * np.abs(x) * (1 + np.abs(erf(x / _t(x, math.sqrt(2.0))))),
        second=lambda x: np.exp(-0.5 * x * x) / _t(x, _SQRT_2PI) * (2 - x * x),
        second_text="phi(x) (2 - x^2)",
        second_magnitude=lambda x: np.exp(-0.5 * x * x) / _t(x, _SQRT_2PI) * (2 + x * x),
    ),
)


def _policy(f: Elementwise) -> str:
    if f.domain == "nonzero":
        return (
            "inputs on both sides of the kink, half of them between 2^-124 and 1/2 away (one-sided "
            f"derivatives down to a few ulps), the rest >= {S.KINK_MARGIN} away; the kink itself is "
            "judged by the convention probes (value must lie in the generalised gradient)"
        )
    if f.domain == "near0":
        jump = " (finite differences do not straddle 0, where f'' jumps)" if f.second_derivative_jump else ""
        return (
            "smooth at 0: inputs drawn near 0 (down to 2^-124) and exactly at 0 (0.0 and -0.0), checked "
            f"like any other{jump}"
        )
    if f.domain == "positive":
        return "inputs drawn in [0.1, 4] (log's domain)"
    return "none needed (about one entry in 8 is an exact zero, 0.0 or -0.0: checked like any other)"


def _f2_jump(a: Arrays, p: Params) -> dict[str, np.ndarray]:
    """Where f'' jumps (x = 0 exactly): the second derivative has no single value there."""
    return {"x": np.asarray(a["x"] == 0)}


def _second_order_note(f: Elementwise) -> str:
    if f.domain == "nonzero":
        return (
            f"f''(x) = {f.second_text}: off the kink a double backward must give 0 (the inputs never sit "
            "on it); at 0 itself f' jumps and f'' is a Dirac, not checked"
        )
    if f.second_derivative_jump:
        return (
            f"f''(x) = {f.second_text}: checked on both sides, down to 2^-124 from 0; at x = 0 exactly "
            "f'' has no single value (any is accepted there) and finite differences never straddle 0"
        )
    return f"f''(x) = {f.second_text}"


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

    def jvp(a: Arrays, p: Params, t: Arrays) -> np.ndarray:
        # diag(f'(x)) v = f'(x) * v
        return np.asarray(f.derivative(a["x"]) * t["x"])

    jvp.__doc__ = (
        f"Identity 4 in forward mode: ``diag(f'(x)) v = f'(x) * v``, ``f'(x) = {f.derivative_text}``."
    )

    def jvp_magnitude(a: Arrays, p: Params, t: Arrays) -> np.ndarray:
        terms = f.term_magnitude or (lambda x: np.abs(f.derivative(x)))
        return np.abs(t["x"]) * np.abs(terms(a["x"]))

    def hvp(a: Arrays, p: Params, u: np.ndarray, t: Arrays) -> dict[str, np.ndarray]:
        # s(x) = sum_i u_i f(x_i): grad = u * f'(x), H = diag(u * f''(x)), H v = u * f''(x) * v
        return {"x": u * f.second(a["x"]) * t["x"]}

    hvp.__doc__ = f"``H v = u * f''(x) * v`` for ``s = <u, f(x)>``, ``f''(x) = {f.second_text}``."

    def hvp_magnitude(a: Arrays, p: Params, u: np.ndarray, t: Arrays) -> dict[str, np.ndarray]:
        terms = f.second_magnitude or (lambda x: np.abs(f.second(x)))
        return {"x": np.abs(u) * np.abs(terms(a["x"])) * np.abs(t["x"])}

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
        elif f.domain == "nonzero":  # a kink at 0: both sides, down to 2^-124 away, never at it
            x = S.off_kink(rng, (n,), f.scale)
        elif f.domain == "near0":  # smooth through 0: near it and at it, like any other input
            x = S.near_point(rng, (n,), f.scale)
        else:
            x = S.uniform(rng, (n,), f.scale)
        if f.tail and draw(st.integers(0, 2)) > 0:  # tails in about two examples of three
            x = S.with_tails(rng, x, f.scale, f.tail, f.tail_gap)
        if f.domain in ("real", "near0"):  # smooth through 0: exact zeros too, of both signs
            x = S.with_zeros(rng, x)
        return S.Example({"x": x}, {}, seed)

    pattern: PatternFn | None = None
    if f.domain == "nonzero" or f.second_derivative_jump:

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
        kink_policy=_policy(f),
        smooth_pattern=pattern,
        reference_jvp=jvp,
        jvp_magnitude=jvp_magnitude,
        reference_hvp=hvp,
        hvp_magnitude=hvp_magnitude,
        second_order_note=_second_order_note(f),
        hvp_undefined=_f2_jump if f.second_derivative_jump else None,
    )


#: One record per row of :data:`ELEMENTWISE`, in the table's order.
RECORDS: tuple[Identity, ...] = tuple(_elementwise_identity(f) for f in ELEMENTWISE)
