"""Gaps in the tests of the oracle's own code, found by mutating it (``tests/tools/mutate.py``).

Each test here kills mutants of the oracle's reference code that the rest of the suite let
through (``docs/self-mutation.md`` lists them).  Expected values come from definitions
written independently of the code under test (``tests/naive_layers.py``, the semantics
table of ``tests/test_framework_adapters.py``, finite differences of the forward), and
every check has a negative control: a deliberately wrong variant the same check rejects.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import naive_layers as naive
import numpy as np
import pytest
from test_framework_adapters import OP_CASES

from gradoracle import finite_differences as fd
from gradoracle.ops import ALL_OPS
from gradoracle.reference_layers import as_tuple, conv_nd, window_positions
from gradoracle.reference_ops import REFERENCE_OPS, ReferenceOps
from gradoracle.subdifferential import TieSplits
from gradoracle.tolerances import EPS32, Tolerance, sci, tolerance_for

# ------------------------------------------------------------ the reference forward (reference_ops.py)

_Z = np.array([[0.3, -1.1, 2.0, 0.4], [1.5, 0.2, -0.7, -2.2], [0.0, 0.9, 0.1, -0.4]])
_IDX = np.array([2.0, 0.0, 3.0])

# The defaults of the reference's layer ops (not exercised by the table: it passes every argument)
DEFAULT_CASES: dict[str, list[tuple[tuple[Any, ...], dict[str, Any], np.ndarray]]] = {
    "cross_entropy": [((_Z, _IDX), {}, naive.cross_entropy(_Z, _IDX, "mean", 0.0))],
}


def semantic_mismatches(ops: Any) -> list[str]:
    """The ops of ``ops`` whose forward differs from the documented semantics on any case
    (``|got - expected| <= 1e-12 (1 + |expected|)`` elementwise, same shape)."""
    bad = []
    for op in sorted(ALL_OPS):
        for args, kwargs, expected in OP_CASES[op] + DEFAULT_CASES.get(op, []):
            got = np.asarray(getattr(ops, op)(*args, **kwargs), dtype=np.float64)
            if got.shape != np.shape(expected) or not np.all(
                np.abs(got - expected) <= 1e-12 * (1 + np.abs(expected))
            ):
                bad.append(op)
                break
    return bad


def test_the_reference_forward_of_every_op_follows_its_documented_semantics() -> None:
    """The oracle's own forward (the reference a framework's forward is compared with, and what
    its finite differences differentiate) against expected values written from the semantics in
    :mod:`gradoracle.ops`: the kink ops (maximum, clamp, clamp_min_zero) and the argument order
    of the layer ops were reached by no other test."""
    assert semantic_mismatches(REFERENCE_OPS) == []


class _WrongReference(ReferenceOps):
    """Negative control: one wrong op per family the check must catch."""

    def maximum(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.minimum(a, b)

    def clamp_min_zero(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x, 1, None)

    def conv_nd(self, x: Any, k: Any, b: Any, stride: Any, padding: Any, dilation: Any, groups: int) -> Any:
        if isinstance(padding, str):
            return ReferenceOps.conv_nd(self, x, k, b, stride, padding, dilation, groups)
        return ReferenceOps.conv_nd(self, x, k, b, padding, stride, dilation, groups)

    def avg_pool_nd(
        self, x: Any, window: Any, stride: Any, padding: Any, ceil_mode: bool, count_include_pad: bool
    ) -> Any:
        return ReferenceOps.avg_pool_nd(self, x, window, stride, padding, count_include_pad, ceil_mode)

    def cross_entropy(
        self, logits: Any, target: Any, reduction: str = "mean", label_smoothing: float = 0.1
    ) -> Any:
        return ReferenceOps.cross_entropy(self, logits, target, reduction, label_smoothing)


def test_a_wrong_reference_forward_is_caught_by_the_semantics_check() -> None:
    assert semantic_mismatches(_WrongReference()) == sorted(
        ["avg_pool_nd", "conv_nd", "cross_entropy", "clamp_min_zero", "maximum"]
    )


@pytest.mark.parametrize("op", ["maximum", "clamp_min_zero", "conv_nd", "avg_pool_nd", "cross_entropy"])
def test_each_wrong_op_of_the_control_is_caught_on_its_own(op: str) -> None:
    wrong = _WrongReference()
    only = type("OneWrong", (ReferenceOps,), {op: getattr(type(wrong), op)})()
    assert semantic_mismatches(only) == [op]


# ------------------------------------------------------------ the tolerance model (tolerances.py)


def tolerance_violations(tol: Tolerance, fd_eps: float) -> list[str]:
    """The statements of the tolerance model (:mod:`gradoracle.tolerances`' docstring) that ``tol``
    breaks: the documented constants, ``allowed = atol + rtol m + kappa eta eps/eps_32`` term by
    term, the exact-arithmetic floor, ``fd_allowed = fd_rtol s + fd_safety e + atol``."""
    eps, out = tol.eps, []
    if tol.rtol != 128 * eps or tol.atol != eps * eps or tol.kappa != 16.0 or tol.fd_safety != 4.0:
        out.append("constants")
    if tol.fd_rtol != max(4e3 * fd_eps ** (2.0 / 3.0), 128 * eps):
        out.append("fd_rtol")
    m = np.array([0.0, 0.5, 3.0])
    scale = eps / EPS32
    if not np.array_equal(tol.allowed(m, 0.0), tol.atol + tol.rtol * m):
        out.append("magnitude term")
    if not np.allclose(tol.allowed(m, 2.5) - tol.allowed(m, 0.0), 16.0 * 2.5 * scale, rtol=1e-12, atol=0):
        out.append("noise term")
    floored = tol.allowed(m, 0.0, exact_floor=True) - tol.allowed(m, 0.0)
    if not np.allclose(floored, 16.0 * EPS32 * 3.0 * scale, rtol=1e-12, atol=0):
        out.append("exact floor")
    if not np.array_equal(tol.allowed(m, 2.5, exact_floor=True), tol.allowed(m, 2.5)):
        out.append("floor of a measured noise")
    infinite = tol.allowed(np.array([0.5, np.inf]), 0.0, exact_floor=True)
    if infinite[0] != tol.atol + tol.rtol * 0.5:
        out.append("floor of an infinite magnitude")
    if tol.fd_allowed(2.0) != tol.fd_rtol * 2.0 + tol.atol:
        out.append("fd without an error estimate")
    if tol.fd_allowed(2.0, 0.25) != tol.fd_rtol * 2.0 + 4.0 * 0.25 + tol.atol:
        out.append("fd with an error estimate")
    return out


@pytest.mark.parametrize(
    ("dtype", "fd_dtype"), [("float64", None), ("float32", None), ("float32", "float64")]
)
def test_the_tolerances_follow_the_documented_model(dtype: str, fd_dtype: str | None) -> None:
    tol = tolerance_for(dtype, fd_dtype)
    fd_eps = float(np.finfo(np.dtype(fd_dtype or dtype)).eps)
    assert tolerance_violations(tol, fd_eps) == []
    # the figures the module docstring quotes
    quoted = {"float64": "2.8e-14", "float32": "1.5e-5"}
    assert sci(tol.rtol) == quoted[dtype]
    quoted_fd = {("float64", None): "1.5e-7", ("float32", "float64"): "1.5e-5", ("float32", None): "9.7e-2"}
    assert sci(tol.fd_rtol) == quoted_fd[(dtype, fd_dtype)]


class _NoiseNotScaled(Tolerance):
    def allowed(self, magnitude: Any, noise: float, exact_floor: bool = False) -> np.ndarray:
        m = np.asarray(magnitude, dtype=np.float64)
        if exact_floor and noise == 0 and m.size:
            noise = EPS32 * float(np.min(m))
        return self.atol + self.rtol * m + self.kappa * noise


class _FdSafetyDropped(Tolerance):
    def fd_allowed(self, magnitude: float, error_estimate: float = 0.0) -> float:
        return self.fd_rtol * magnitude + self.atol


def test_a_wrong_tolerance_breaks_the_documented_model() -> None:
    tol = tolerance_for("float64")
    eps = tol.eps
    assert tolerance_violations(replace(tol, rtol=129 * eps), eps) == ["constants"]
    assert tolerance_violations(replace(tol, fd_rtol=4001 * eps ** (2 / 3)), eps) == ["fd_rtol"]
    assert "constants" in tolerance_violations(replace(tol, kappa=17.0), eps)
    wrong = _NoiseNotScaled(**{k: getattr(tol, k) for k in tol.__dataclass_fields__})
    assert {"noise term", "exact floor"} <= set(tolerance_violations(wrong, eps))
    dropped = _FdSafetyDropped(**{k: getattr(tol, k) for k in tol.__dataclass_fields__})
    assert tolerance_violations(dropped, eps) == ["fd with an error estimate"]


def explanation_violations(tol: Tolerance) -> list[str]:
    """What ``explain``/``explain_fd`` get wrong: they name ``rtol/eps`` ulp x the magnitude (or
    ``fd_rtol`` x the size), plus the rest of the allowance only when it is over 1% of it."""
    out = []
    main = tol.rtol * 0.5
    if tol.explain(main, 0.5) != f"allowed {sci(main)} = 128 ulp x magnitude of the terms 5.0e-1":
        out.append("explain: exact")
    if not tol.explain(main * 1.005, 0.5).endswith("terms 5.0e-1"):
        out.append("explain: 0.5% room named")
    if not tol.explain(main * 2, 0.5).endswith(f" + rounding room {sci(main)}"):
        out.append("explain: room not named")
    if tol.explain(3e-9, None) != "allowed 3.0e-9":
        out.append("explain: no magnitude")
    fd_main = tol.fd_rtol * 0.25
    if not tol.explain_fd(fd_main, 0.25).endswith("size of the directional derivative 2.5e-1"):
        out.append("explain_fd: exact")
    if not tol.explain_fd(fd_main * 1.005, 0.25).endswith("derivative 2.5e-1"):
        out.append("explain_fd: 0.5% room named")
    if not tol.explain_fd(fd_main * 3, 0.25).endswith(
        f" + {sci(2 * fd_main)} for the step's rounding and truncation error"
    ):
        out.append("explain_fd: room not named")
    return out


def test_the_explanations_name_the_term_that_makes_the_allowance() -> None:
    assert explanation_violations(tolerance_for("float64")) == []
    assert explanation_violations(tolerance_for("float32", "float64")) == []
    assert sci(0.13) == "1.3e-1" and sci(float("inf")) == "inf" and sci(2.5e-14) == "2.5e-14"


class _RoomAlwaysNamed(Tolerance):
    """Negative control: the rest of the allowance named however small it is."""

    def explain(self, allowed: float, magnitude: float | None) -> str:
        text = Tolerance.explain(self, allowed, magnitude)
        rest = allowed - self.rtol * (magnitude or 0.0)
        if magnitude is None or rest <= 0 or "rounding room" in text:
            return text
        return f"{text} + rounding room {sci(rest)}"


def test_a_wrong_explanation_is_caught() -> None:
    tol = tolerance_for("float64")
    wrong = _RoomAlwaysNamed(**{k: getattr(tol, k) for k in tol.__dataclass_fields__})
    assert explanation_violations(wrong) == ["explain: 0.5% room named"]


# ------------------------------------------------------------ finite differences (finite_differences.py)


def step_violations(step: Any) -> list[str]:
    """Where ``step(dtype, inputs)`` breaks ``h = eps^(1/3) max(1, max_i |x_i|)`` (the module's
    documented step: an absolute step below |x| = 1, relative above; 6.1e-6 in float64 and
    4.9e-3 in float32 at |x| <= 1)."""
    out = []
    for dtype, quoted in (("float64", "6.1e-6"), ("float32", "4.9e-3")):
        cube_root = float(np.finfo(np.dtype(dtype)).eps) ** (1.0 / 3.0)
        small = {"x": np.array([0.5, -0.25]), "y": np.zeros(0)}
        if step(dtype, small) != cube_root or sci(step(dtype, small)) != quoted:
            out.append(f"{dtype}: |x| < 1")
        large = {"x": np.array([0.5, -3.0]), "y": np.array([2.0])}
        if step(dtype, large) != cube_root * 3.0:
            out.append(f"{dtype}: |x| = 3")
    return out


def test_the_finite_difference_step_is_the_documented_one() -> None:
    assert step_violations(fd.step_size) == []


def test_a_wrong_step_is_caught() -> None:
    def doubled_below_one(dtype: Any, inputs: Any) -> float:
        scale = max([2.0] + [float(np.max(np.abs(v))) for v in inputs.values() if v.size])
        return float(fd.machine_epsilon(dtype) ** (1.0 / 3.0) * scale)

    assert step_violations(doubled_below_one) == ["float64: |x| < 1", "float32: |x| < 1"]


# ------------------------------------------------------------ layer geometry (reference_layers.py)


def test_an_int_hyper_parameter_is_repeated_per_spatial_axis() -> None:
    """``as_tuple(2, 3) == (2, 2, 2)``: the oracle's draws always pass tuples, a user's check may not."""
    assert as_tuple(2, 3, "stride") == (2, 2, 2)
    assert as_tuple(np.int64(1), 2, "dilation") == (1, 1)
    assert as_tuple((1, 3), 2, "padding") == (1, 3)
    with pytest.raises(ValueError, match="padding has 2 entries"):
        as_tuple((1, 3), 3, "padding")
    # negative control: the layer forward given an int where a tuple was tested gives the same
    x, k = np.arange(2 * 2 * 5 * 4.0).reshape(2, 2, 5, 4) / 7, np.ones((2, 2, 2, 2))
    assert np.array_equal(conv_nd(x, k, None, 2, 1, 1, 1), conv_nd(x, k, None, (2, 2), (1, 1), (1, 1), 1))
    assert not np.array_equal(
        conv_nd(x, k, None, 1, 1, 1, 1).shape, conv_nd(x, k, None, (2, 2), (1, 1), (1, 1), 1).shape
    )


def naive_window_positions(s: int, p: int, d: int, w: int, o: int) -> list[list[int]]:
    """Window ``i`` reads input positions ``i s - p + a d``, ``a = 0 .. w - 1`` (may be padding)."""
    return [[i * s - p + a * d for a in range(w)] for i in range(o)]


@pytest.mark.parametrize(("s", "p", "d", "w", "o"), [(2, 1, 2, 3, 3), (3, 0, 1, 2, 4), (1, 2, 3, 2, 5)])
def test_window_positions_are_stride_times_index_minus_padding_plus_dilated_offset(
    s: int, p: int, d: int, w: int, o: int
) -> None:
    """The positions the selftest's parameter-coverage check reads (``window_positions``)."""
    got = window_positions(100, w, s, p, d, o)
    assert got.tolist() == naive_window_positions(s, p, d, w, o)
    # negative control: the same comparison tells a stride-free or undilated window apart
    assert got.tolist() != naive_window_positions(1, p, d, w, o) or s == 1
    assert got.tolist() != naive_window_positions(s, p, 1, w, o) or d == 1


def richardson_violations(rich: Any) -> list[str]:
    """On ``s(t) = (x0 + t)^3`` (``u = v = 1``) ``D(h) = 3 x0^2 + h^2`` exactly, so Richardson's
    ``D_R = (4 D(h) - D(2h)) / 3`` is ``3 x0^2`` and the error estimate ``|D(h) - D(2h)| = 3 h^2``
    (up to rounding): an estimate that is too large loosens every finite-difference comparison."""
    out = []
    x, u, v, h = {"x": np.array([0.7])}, np.array([1.0]), {"x": np.array([1.0])}, 1e-2
    got = rich(lambda a: a["x"] ** 3, x, u, v, h, "float64")
    if abs(got.value - 3 * 0.49) > 1e-9:
        out.append("value")
    if abs(got.error - 3 * h * h) > 1e-9:
        out.append("error estimate")
    reused = rich(lambda a: a["x"] ** 3, x, u, v, h, "float64", d_h=3 * 0.49 + h * h)
    if abs(reused.value - got.value) > 1e-9 or abs(reused.error - got.error) > 1e-9:
        out.append("given D(h)")
    return out


def test_richardson_extrapolates_a_cubic_exactly_and_estimates_the_error() -> None:
    assert richardson_violations(fd.richardson) == []


def test_a_wrong_richardson_estimate_is_caught() -> None:
    def summed(f: Any, x: Any, u: Any, v: Any, h: float, dtype: str, d_h: float | None = None) -> Any:
        dh = fd.central_difference(f, x, u, v, h, dtype) if d_h is None else d_h
        d2h = fd.central_difference(f, x, u, v, 2 * h, dtype)
        return fd.Richardson(value=(4 * dh - d2h) / 3, error=abs(dh + d2h))

    assert richardson_violations(summed) == ["error estimate"]


def test_random_directions_are_the_documented_draw() -> None:
    """``directions``: above ``full_max`` elements, ``count`` draws uniform in ``[-1, 1]`` per element
    (in the order of ``shapes``), normalised to unit 2-norm over all inputs together."""
    shapes = {"W": (4, 5), "b": (4,)}
    got = fd.directions(np.random.default_rng(7), shapes, 3, 10)
    rng = np.random.default_rng(7)
    for d in got:
        raw = {n: rng.uniform(-1.0, 1.0, size=s) for n, s in shapes.items()}
        norm = np.sqrt(sum(np.sum(r * r) for r in raw.values()))
        for n in shapes:
            np.testing.assert_allclose(d[n], raw[n] / norm, rtol=1e-15, atol=0)
    # negative control: a draw from [-2, 1] (not symmetric) is told apart by the same comparison
    rng = np.random.default_rng(7)
    skewed = {n: rng.uniform(-2.0, 1.0, size=s) for n, s in shapes.items()}
    norm = np.sqrt(sum(np.sum(r * r) for r in skewed.values()))
    assert not np.allclose(got[0]["W"], skewed["W"] / norm, rtol=1e-15, atol=0)


# ------------------------------------------------------------ subdifferentials (subdifferential.py)


def test_a_tie_allows_every_split_of_any_cotangent() -> None:
    """At a tie ``maximum(a, b)`` allows ``(t c, (1 - t) c)`` for every ``t in [0, 1]``: for a
    cotangent above 1 (uneven splits) and a negative one (both shares negative), not only
    ``c = 1`` as in ``tests/test_kinks.py``."""
    tie = np.array([2.0, 2.0, 2.0])
    s = TieSplits(tie, tie.copy(), np.array([3.0, -2.0, 0.5]))
    for t in (0.0, 1 / 6, 0.5, 1.0):
        c = s.cotangent
        assert s.judge({"a": t * c, "b": (1 - t) * c}, "float64").inside, t
    # negative controls: outside [0, 1], or not summing to c, in one element each
    c = s.cotangent
    assert not s.judge({"a": 1.25 * c, "b": -0.25 * c}, "float64").inside
    assert not s.judge({"a": -0.25 * c, "b": 1.25 * c}, "float64").inside
    assert not s.judge({"a": 0.5 * c, "b": 0.4 * c}, "float64").inside
    # without a tie the larger argument takes all of c, also where b is the larger one
    apart = TieSplits(np.array([1.0, 3.0, -1.0]), np.array([2.0, 0.0, 0.5]), np.array([3.0, -2.0, 0.5]))
    assert apart.judge({"a": np.array([0.0, -2.0, 0.0]), "b": np.array([3.0, 0.0, 0.5])}, "float64").inside
    assert not apart.judge(
        {"a": np.array([1.0, -2.0, 0.0]), "b": np.array([2.0, 0.0, 0.5])}, "float64"
    ).inside
