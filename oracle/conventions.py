"""Convention probes: what each framework does at non-differentiable points, judged.

ReLU at 0, tied maxima in a max-pool window and the like have no single right gradient,
but they have a right *set*: the generalised (Clarke) gradient, the convex hull of the
one-sided derivatives (:mod:`gradoracle.subdifferential`).  Each probe evaluates the
framework's gradient at such points (and a few ulps off them, where the one-sided
derivatives must hold exactly) and judges it:

- a value inside the set is a *convention*, recorded in the report's table next to what
  the notes' formula gives when read literally (``1(z > 0)`` for ReLU, "delta to every
  x_ij = max(window)" for max pooling);
- a value outside is a *failure* with fault ``outside-subdifferential``
  (:attr:`gradoracle.results.Fault.OUTSIDE_SUBDIFFERENTIAL`): the value, the allowed set and a
  repro (:func:`reproduce_probe`).

Some probes look at smooth functions of kinked primitives, whose derivative is unique
(``max(x, x) = x``, a max pool over copies of one input), and at points that look special
but are smooth (ELU with alpha = 1 at 0, softplus at a framework's linearisation
threshold).  :func:`run_probe` is the unit of work: one probe, one adapter, one dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from gradoracle.ops import ELU_ALPHA, LEAKY_RELU_SLOPE
from gradoracle.results import Fault
from gradoracle.subdifferential import (
    AllOf,
    AllowedSet,
    Intervals,
    Judgement,
    TieSplits,
    WindowRoutings,
    pool_windows,
)
from gradoracle.text import FIELD_LIMIT, MESSAGE_LIMIT, NAME_LIMIT, CleanText

ProbeForward = Callable[[Any, Mapping[str, Any]], Any]
Arrays = dict[str, np.ndarray]

#: "Just off" a kink at 0: 2^-124, four times float32's smallest normal number (exact in
#: float32 and float64, and not subnormal: frameworks that flush subnormals to zero, as XLA
#: on CPU does, see it as it is).
OFF = 2.0**-124
#: "Just off" a kink at +-1: 8 float32 ulps of 1 (2^-20), exact in both dtypes.
OFF_ONE = 2.0**-20
#: The largest ``1 - sigma(x)`` for which a linear tail (softplus' = 1) is accepted: half a
#: float32 ulp of 1, i.e. invisible in float32.
LINEAR_TAIL = 2.0**-24

#: Verdicts of one probe result.
CONVENTION, FAILURE, ERROR, UNSUPPORTED = "convention", "fail", "error", "unsupported"


class OutsideSubdifferential(AssertionError):
    """A framework's gradient at a non-differentiable point lies outside the generalised gradient."""

    def __init__(self, result: ProbeResult) -> None:
        super().__init__(result.message())
        self.result = result


@dataclass(frozen=True)
class Probe:
    """One probe: inputs at (and just off) non-differentiable points, and the allowed set there.

    ``allowed(inputs)`` builds the :class:`gradoracle.subdifferential.AllowedSet` of the gradients
    for the inputs as the adapter sees them (float64 copies of the dtype-cast inputs); the
    cotangent is all ones.  ``notes`` is the notes' formula read literally (``None`` where the
    notes give no answer).
    """

    name: str
    op: str
    description: str
    inputs: Mapping[str, Any]
    forward: ProbeForward
    notes: Any
    notes_text: str
    allowed: Callable[[Arrays], AllowedSet]
    convention: Callable[[Arrays, Arrays, str], str]
    wrt: tuple[str, ...] = ("x",)
    ops: frozenset[str] = frozenset()
    kind: str = "kink"  # kink | tie | pool | composite | smooth
    #: A smooth forward built from the probe's helper ops only, and its known gradient: when the
    #: adapter gets it wrong the probe cannot judge the kink (the helper op is broken) and the
    #: result is an error naming the helper, not an ``outside-subdifferential`` failure.
    precondition: tuple[ProbeForward, float, str] | None = None

    @property
    def x(self) -> Any:
        """The probed input (the first differentiated one)."""
        return self.inputs[self.wrt[0]]

    @property
    def pool(self) -> bool:
        """Whether this is a max-pool probe."""
        return self.kind == "pool" or self.op == "max_pool2d"

    def required_ops(self) -> frozenset[str]:
        """Every op the forward calls."""
        return self.ops | {self.op}


# ------------------------------------------------------------------ allowed sets


def _sided(f_prime: Callable[[np.ndarray], np.ndarray], kinks: Sequence[tuple[float, float, float]]) -> Any:
    """Elementwise: ``f'(x)`` away from the kinks, ``[min(l, r), max(l, r)]`` at a kink (point, l, r)."""

    def allowed(a: Arrays) -> AllowedSet:
        x = a["x"]
        lo = np.asarray(f_prime(x), dtype=np.float64)
        hi = lo.copy()
        for point, left, right in kinks:
            at = x == point
            lo = np.where(at, min(left, right), lo)
            hi = np.where(at, max(left, right), hi)
        labels = tuple(f"x = {v:.9g}" for v in x.reshape(-1))
        return Intervals("x", lo, hi, labels)

    return allowed


def _step(x: np.ndarray) -> np.ndarray:
    return (x > 0).astype(np.float64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=np.float64)


def _softplus_allowed(a: Arrays) -> AllowedSet:
    """``sigma(x)``, widened to ``[sigma(x), 1]`` where a linear tail differs by < 2^-24."""
    x = a["x"]
    s = _sigmoid(x)
    tail = (1.0 - s) <= LINEAR_TAIL
    labels = tuple(f"x = {v:.9g}" for v in x.reshape(-1))
    return Intervals("x", s, np.where(tail, 1.0, s), labels)


def _unique(grad: Callable[[Arrays], np.ndarray], name: str = "x") -> Callable[[Arrays], AllowedSet]:
    """A differentiable function: the set is its one gradient."""

    def allowed(a: Arrays) -> AllowedSet:
        g = np.asarray(grad(a), dtype=np.float64)
        return Intervals(name, g, g)

    return allowed


def _maximum_allowed(a: Arrays) -> AllowedSet:
    return TieSplits(a["a"], a["b"], np.ones_like(a["a"]))


def _pool_allowed(k: int, stride: int) -> Callable[[Arrays], AllowedSet]:
    def allowed(a: Arrays) -> AllowedSet:
        x = a["x"]
        n = len(pool_windows(x.shape, k, stride))
        return WindowRoutings(x, k, stride, np.ones(n))

    return allowed


# ------------------------------------------------------------ convention texts


def _g(v: float) -> str:
    return f"{v:.6g}"


def _at(x: np.ndarray, g: np.ndarray, point: float) -> float:
    return float(g.reshape(-1)[int(np.flatnonzero(x.reshape(-1) == point)[0])])


def _kink_text(op: str, point: float = 0.0) -> Callable[[Arrays, Arrays, str], str]:
    def text(a: Arrays, g: Arrays, dtype: str) -> str:
        return f"{op}'({point:g}) = {_g(_at(a['x'], g['x'], point))}"

    return text


def _clamp_text(a: Arrays, g: Arrays, dtype: str) -> str:
    return f"clamp' at x = lo: {_g(_at(a['x'], g['x'], -1.0))}, at x = hi: {_g(_at(a['x'], g['x'], 1.0))}"


def _tie_text(a: Arrays, g: Arrays, dtype: str) -> str:
    tie = np.flatnonzero(a["a"].reshape(-1) == a["b"].reshape(-1))
    if tie.size == 0:
        return "no tie"
    ga, gb = g["a"].reshape(-1)[tie], g["b"].reshape(-1)[tie]
    if np.all(ga == 0.5) and np.all(gb == 0.5):
        return "tie split evenly: (1/2, 1/2)"
    if np.all(ga == 1.0) and np.all(gb == 0.0):
        return "tie goes to the first argument: (1, 0)"
    if np.all(ga == 0.0) and np.all(gb == 1.0):
        return "tie goes to the second argument: (0, 1)"
    return f"tie gives (d/da, d/db) = ({_g(float(ga[0]))}, {_g(float(gb[0]))})"


def _value_text(what: str) -> Callable[[Arrays, Arrays, str], str]:
    def text(a: Arrays, g: Arrays, dtype: str) -> str:
        values = np.unique(g["x"].reshape(-1))
        shown = ", ".join(_g(float(v)) for v in values[:4])
        return f"{what} = {shown}"

    return text


def _softplus_text(a: Arrays, g: Arrays, dtype: str) -> str:
    x, gx = a["x"].reshape(-1), g["x"].reshape(-1)
    # a linear tail shows only where sigma(x) rounds to less than 1 in the dtype
    below_one = np.asarray(_sigmoid(x), dtype=dtype).astype(np.float64) < 1.0
    ones = x[(gx == 1.0) & below_one & (x > 0)]
    if ones.size:
        return f"linear tail: softplus'(x) = 1 from x = {_g(float(ones.min()))} (sigma(x) < 1 there)"
    if not np.any(below_one[x >= 20.0]):
        return f"softplus'(x) = sigma(x) (a linear tail from x = 20 would not show in {dtype})"
    return "softplus'(x) = sigma(x) throughout (no linear tail)"


def _pool_text(a: Arrays, g: Arrays, k: int, stride: int) -> str:
    x, gx = a["x"], g["x"]
    windows = pool_windows(x.shape, k, stride)
    maxima = []
    for pixels in windows:
        top = max(x[p] for p in pixels)
        maxima.append([p for p in pixels if x[p] == top])
    if all(len(m) == 1 for m in maxima):
        return (
            "no tie: every window routes to its unique maximum ("
            + ("gradients accumulate" if stride < k else "one pixel per window")
            + ")"
        )
    literal = np.zeros_like(x)
    for m in maxima:
        for p in m:
            literal[p] += 1.0
    if np.array_equal(gx, literal):
        return "delta to every tied maximum (the notes' formula read literally)"
    if len(windows) == 1:
        flat = gx.reshape(-1)
        nz = np.flatnonzero(flat)
        tied = [p[0] * x.shape[1] + p[1] for p in maxima[0]]
        if nz.size == 1 and nz[0] == tied[0]:
            return "tie goes to the first maximum (row-major)"
        if nz.size == 1 and nz[0] == tied[-1]:
            return "tie goes to the last maximum (row-major)"
        if nz.size == len(tied) and np.allclose(flat[nz], 1.0 / len(tied)):
            return "delta split evenly between tied maxima"
    return "gradient " + np.array2string(gx, separator=", ").replace("\n", "")


# ------------------------------------------------------------------ the probes

_KINK_POINTS = (-1.0, -OFF, 0.0, OFF, 1.0)
_RELU_KINK = ((0.0, 0.0, 1.0),)


def _el(op: str) -> ProbeForward:
    return lambda ops, a: getattr(ops, op)(a["x"])


def _pool(k: int, stride: int | None) -> ProbeForward:
    return lambda ops, a: ops.max_pool2d(a["x"], k, stride)


def _elementwise_probe(
    name: str,
    op: str,
    what: str,
    f_prime: Callable[[np.ndarray], np.ndarray],
    kink: tuple[float, float, float],
    notes: Any,
    notes_text: str,
) -> Probe:
    left, right = kink[1], kink[2]
    return Probe(
        name,
        op,
        f"{what} at x = -1, -2^-124, 0, 2^-124, 1: in [{left:g}, {right:g}] at 0, one-sided derivatives "
        "a few ulps off",
        {"x": _KINK_POINTS},
        _el(op),
        notes,
        notes_text,
        _sided(f_prime, (kink,)),
        _kink_text(op),
    )


def _leaky(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, 1.0, LEAKY_RELU_SLOPE)


def _clamp_prime(x: np.ndarray) -> np.ndarray:
    return ((x > -1.0) & (x < 1.0)).astype(np.float64)


def _copies_forward(ops: Any, a: Mapping[str, Any]) -> Any:
    """A 3x3 map whose every entry is ``x`` (``L x R`` with all-ones L, R), max-pooled 2x2, stride 1."""
    return ops.max_pool2d(ops.matmul(ops.matmul(a["L"], a["x"]), a["R"]), 2, 1)


def _copies_only(ops: Any, a: Mapping[str, Any]) -> Any:
    """The 3x3 map of copies alone (its gradient with an all-ones cotangent: 9)."""
    return ops.matmul(ops.matmul(a["L"], a["x"]), a["R"])


PROBES: tuple[Probe, ...] = (
    _elementwise_probe(
        "relu-at-0",
        "relu",
        "relu'(x)",
        _step,
        _RELU_KINK[0],
        (0.0, 0.0, 0.0, 1.0, 1.0),
        "1(z > 0): relu'(0) = 0",
    ),
    _elementwise_probe(
        "leaky-relu-at-0",
        "leaky_relu",
        f"leaky_relu'(x), slope {LEAKY_RELU_SLOPE:g},",
        _leaky,
        (0.0, LEAKY_RELU_SLOPE, 1.0),
        None,
        f"not in the notes (one-sided derivatives {LEAKY_RELU_SLOPE:g} and 1)",
    ),
    _elementwise_probe(
        "abs-at-0",
        "abs",
        "abs'(x)",
        np.sign,
        (0.0, -1.0, 1.0),
        None,
        "not in the notes (one-sided derivatives -1 and 1)",
    ),
    _elementwise_probe(
        "maximum-zero-at-0",
        "maximum_zero",
        "d/dx maximum(x, 0)",
        _step,
        _RELU_KINK[0],
        (0.0, 0.0, 0.0, 1.0, 1.0),
        "ReLU written as maximum(x, 0); notes' 1(z > 0) gives 0",
    ),
    _elementwise_probe(
        "clamp-min-zero-at-0",
        "clamp_min_zero",
        "d/dx clamp(x, min=0)",
        _step,
        _RELU_KINK[0],
        (0.0, 0.0, 0.0, 1.0, 1.0),
        "ReLU written as clamp(x, min=0); notes' 1(z > 0) gives 0",
    ),
    Probe(
        "clamp-at-bounds",
        "clamp",
        "d/dx clamp(x, -1, 1) at both bounds and 2^-20 off each side of them: in [0, 1] at a bound",
        {"x": (-2.0, -1.0 - OFF_ONE, -1.0, -1.0 + OFF_ONE, 0.0, 1.0 - OFF_ONE, 1.0, 1.0 + OFF_ONE, 2.0)},
        lambda ops, a: ops.clamp(a["x"], -1.0, 1.0),
        None,
        "not in the notes (one-sided derivatives 0 and 1 at each bound)",
        _sided(_clamp_prime, ((-1.0, 0.0, 1.0), (1.0, 1.0, 0.0))),
        _clamp_text,
    ),
    Probe(
        "maximum-tie",
        "maximum",
        "d/da, d/db maximum(a, b) at ties a = b (1, 0, -2), and at a = 3 > b = 0, a = 1 + 2^-20 > b = 1",
        {"a": (1.0, 0.0, -2.0, 3.0, 1.0 + OFF_ONE), "b": (1.0, 0.0, -2.0, 0.0, 1.0)},
        lambda ops, a: ops.maximum(a["a"], a["b"]),
        None,
        "not in the notes (generalised gradient at a tie: (t, 1 - t), t in [0, 1])",
        _maximum_allowed,
        _tie_text,
        wrt=("a", "b"),
        kind="tie",
    ),
    Probe(
        "maximum-same-input",
        "maximum",
        "d/dx maximum(x, x) at x = -1, 0, 2: the function is x, its derivative 1 (a tie's shares must "
        "sum to 1)",
        {"x": (-1.0, 0.0, 2.0)},
        lambda ops, a: ops.maximum(a["x"], a["x"]),
        (1.0, 1.0, 1.0),
        "maximum(x, x) = x: derivative 1",
        _unique(lambda a: np.ones_like(a["x"])),
        _value_text("d/dx maximum(x, x)"),
        kind="composite",
    ),
    Probe(
        "max-pool-tie-in-window",
        "max_pool2d",
        "2x2 window [[1, 1], [0, 0]], k=2: two tied maxima (weights >= 0 on them, summing to 1)",
        {"x": ((1.0, 1.0), (0.0, 0.0))},
        _pool(2, None),
        ((1.0, 1.0), (0.0, 0.0)),
        "read literally, delta goes to every x_ij = max(window)",
        _pool_allowed(2, 2),
        lambda a, g, dtype: _pool_text(a, g, 2, 2),
        kind="pool",
    ),
    Probe(
        "max-pool-all-equal-window",
        "max_pool2d",
        "2x2 window of equal values, k=2: four tied maxima (weights >= 0, summing to 1)",
        {"x": ((2.0, 2.0), (2.0, 2.0))},
        _pool(2, None),
        ((1.0, 1.0), (1.0, 1.0)),
        "read literally, delta goes to every x_ij = max(window)",
        _pool_allowed(2, 2),
        lambda a, g, dtype: _pool_text(a, g, 2, 2),
        kind="pool",
    ),
    Probe(
        "max-pool-near-tie",
        "max_pool2d",
        "2x2 window [[1, 1 - 2^-20], [0, 0]], k=2: the runner-up a few ulps below, no tie (unique gradient)",
        {"x": ((1.0, 1.0 - OFF_ONE), (0.0, 0.0))},
        _pool(2, None),
        ((1.0, 0.0), (0.0, 0.0)),
        "delta to the unique maximum",
        _pool_allowed(2, 2),
        lambda a, g, dtype: _pool_text(a, g, 2, 2),
        kind="pool",
    ),
    Probe(
        "max-pool-overlapping-windows",
        "max_pool2d",
        "3x3 input, k=2, stride 1: the centre is the unique maximum of all four windows (no tie)",
        {"x": ((0.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 0.0))},
        _pool(2, 1),
        ((0.0, 0.0, 0.0), (0.0, 4.0, 0.0), (0.0, 0.0, 0.0)),
        "every window routes its delta to the centre: gradients accumulate to 4",
        _pool_allowed(2, 1),
        lambda a, g, dtype: _pool_text(a, g, 2, 1),
        kind="pool",
    ),
    Probe(
        "max-pool-ties-across-windows",
        "max_pool2d",
        "3x3 input, k=2, stride 1, two tied maxima shared by overlapping windows (each window's weights "
        ">= 0, summing to 1)",
        {"x": ((0.0, 0.0, 0.0), (0.0, 1.0, 1.0), (0.0, 0.0, 0.0))},
        _pool(2, 1),
        ((0.0, 0.0, 0.0), (0.0, 3.0, 2.0), (0.0, 0.0, 0.0)),
        "read literally, each window gives delta to each of its tied maxima",
        _pool_allowed(2, 1),
        lambda a, g, dtype: _pool_text(a, g, 2, 1),
        kind="pool",
    ),
    Probe(
        "max-pool-of-copies",
        "max_pool2d",
        "max pool (k=2, stride 1) of a 3x3 map whose entries all equal one input x: the sum of the four "
        "outputs is 4x, its derivative 4",
        {"x": ((0.5,),), "L": ((1.0,), (1.0,), (1.0,)), "R": ((1.0, 1.0, 1.0),)},
        _copies_forward,
        ((16.0,),),
        "the function is 4x: derivative 4 (read literally, delta to every tied maximum gives 16)",
        _unique(lambda a: np.full_like(a["x"], 4.0)),
        _value_text("d/dx"),
        ops=frozenset({"matmul"}),
        kind="composite",
        precondition=(_copies_only, 9.0, "the map of copies L x R (matmul by all-ones vectors)"),
    ),
    Probe(
        "elu-at-0",
        "elu",
        "elu'(x), alpha 1, at x = -1, -1e-3, -2^-124, 0, 2^-124, 1e-3, 1: differentiable at 0, elu'(0) = 1",
        {"x": (-1.0, -1e-3, -OFF, 0.0, OFF, 1e-3, 1.0)},
        _el("elu"),
        None,
        "1 if x > 0 else alpha exp(x): elu'(0) = 1 for alpha = 1 (no kink)",
        _unique(lambda a: np.where(a["x"] > 0, 1.0, ELU_ALPHA * np.exp(np.minimum(a["x"], 0.0)))),
        _kink_text("elu"),
        kind="smooth",
    ),
    Probe(
        "softplus-threshold",
        "softplus",
        "softplus'(x) at x = 0, 10, 20 - 2^-20, 20, 20 + 2^-20, 30, 50: sigma(x), or 1 where 1 - sigma(x) "
        "< 2^-24 (a linear tail, as PyTorch's threshold 20)",
        {"x": (0.0, 10.0, 20.0 - OFF_ONE, 20.0, 20.0 + OFF_ONE, 30.0, 50.0)},
        _el("softplus"),
        None,
        "sigma(x); a linear tail is allowed where 1 - sigma(x) < 2^-24",
        _softplus_allowed,
        _softplus_text,
        kind="smooth",
    ),
)

# ------------------------------------------------- layer probes (issue 14), one block
# Edges where frameworks differ on the layers as they ship them.  gradoracle.ops defines each
# layer op as PyTorch does (an adapter whose framework lacks a knob spells it with explicit
# padding); these probes record what each adapter's op gives at the edge and accept every
# convention in use there, naming the one observed, so a framework that follows another
# convention shows by name instead of one side being picked silently.


@dataclass(frozen=True)
class _Squeezed(AllowedSet):
    """An allowed set for ``x[0, 0]`` of an (1, 1, ...) input: the layer op's leading axes dropped."""

    inner: AllowedSet
    shape: tuple[int, ...]
    name: str = "x"

    def describe(self) -> str:
        """The inner set in words."""
        return self.inner.describe()

    def judge(self, grads: Mapping[str, np.ndarray], dtype: str) -> Judgement:
        """The inner judgement of the gradient without its leading (1, 1) axes."""
        return self.inner.judge({self.name: np.asarray(grads[self.name]).reshape(self.shape)}, dtype)


def _layer_max_pool(ops: Any, a: Mapping[str, Any]) -> Any:
    return ops.max_pool_nd(a["x"], (2, 2), (1, 1), (0, 0), (1, 1), False)


def _layer_max_allowed(a: Arrays) -> AllowedSet:
    x = a["x"][0, 0]
    return _Squeezed(WindowRoutings(x, 2, 1, np.ones(len(pool_windows(x.shape, 2, 1)))), x.shape)


def _layer_avg_pool(padding: int) -> ProbeForward:
    return lambda ops, a: ops.avg_pool_nd(a["x"], (3,), (2,), (padding,), True, True)


#: 1-D, length 4, window 3, stride 2, ceil mode: d/dx (ones cotangent) under PyTorch's divisor
#: (the window clipped to the padded input) and under the full window (Flax's avg_pool).
_CEIL_PARTIAL = {"pytorch": (1 / 3, 1 / 3, 1 / 3 + 1 / 2, 1 / 2), "full window": (1 / 3, 1 / 3, 2 / 3, 1 / 3)}
_CEIL_PADDED = {
    "pytorch": (1 / 3, 2 / 3, 1 / 3, 1 / 3 + 1 / 2),
    "full window": (1 / 3, 2 / 3, 1 / 3, 2 / 3),
}


def _either(conventions: Mapping[str, tuple[float, ...]]) -> Callable[[Arrays], AllowedSet]:
    def allowed(a: Arrays) -> AllowedSet:
        values = np.array(list(conventions.values()))
        labels = tuple(f"x[{i}]" for i in range(values.shape[1]))
        return _Squeezed(Intervals("x", values.min(axis=0), values.max(axis=0), labels), (values.shape[1],))

    return allowed


def _which(conventions: Mapping[str, tuple[float, ...]]) -> Callable[[Arrays, Arrays, str], str]:
    def text(a: Arrays, g: Arrays, dtype: str) -> str:
        got = np.asarray(g["x"], dtype=np.float64).reshape(-1)
        last = float(got[-1])
        for name, values in conventions.items():
            if np.allclose(got, values, rtol=1e-5, atol=1e-6):
                return f"{name} divisor (d/dx[3] = {_g(last)})"
        return "gradient " + ", ".join(_g(v) for v in got)

    return text


LAYER_PROBES: tuple[Probe, ...] = (
    Probe(
        "max-pool-layer-ties-across-windows",
        "max_pool_nd",
        "the layer op (N, C = 1), 3x3 input, window 2, stride 1, two tied maxima shared by "
        "overlapping windows",
        {"x": ((((0.0, 0.0, 0.0), (0.0, 1.0, 1.0), (0.0, 0.0, 0.0)),),)},
        _layer_max_pool,
        ((((0.0, 0.0, 0.0), (0.0, 3.0, 2.0), (0.0, 0.0, 0.0)),),),
        "read literally, each window gives delta to each of its tied maxima",
        _layer_max_allowed,
        lambda a, g, dtype: _pool_text({"x": a["x"][0, 0]}, {"x": g["x"][0, 0]}, 2, 1),
        kind="pool",
    ),
    Probe(
        "avg-pool-ceil-partial-window",
        "avg_pool_nd",
        "1-D avg pool, x of length 4, window 3, stride 2, ceil_mode: the last window [2, 5) overhangs x",
        {"x": (((1.0, 2.0, 3.0, 4.0),),)},
        _layer_avg_pool(0),
        None,
        "not in the notes (no ceil mode); PyTorch (gradoracle.ops) divides the partial window by 2 "
        "(clipped to the input), Flax's avg_pool by 3 (the full window); JAX has no ceil_mode",
        _either(_CEIL_PARTIAL),
        _which(_CEIL_PARTIAL),
        kind="smooth",
    ),
    Probe(
        "avg-pool-ceil-padded-window",
        "avg_pool_nd",
        "1-D avg pool, x of length 4, window 3, stride 2, padding 1, ceil_mode, count_include_pad: "
        "windows [-1, 2), [1, 4), [3, 6)",
        {"x": (((1.0, 2.0, 3.0, 4.0),),)},
        _layer_avg_pool(1),
        None,
        "not in the notes; PyTorch counts the padding but not the overhang past it (2 for the last "
        "window), the full window gives 3",
        _either(_CEIL_PADDED),
        _which(_CEIL_PADDED),
        kind="smooth",
    ),
)

PROBES = PROBES + LAYER_PROBES

_BY_NAME: dict[str, Probe] = {p.name: p for p in PROBES}


def get_probe(name: str) -> Probe:
    """The probe called ``name``; the error lists the known names."""
    if name not in _BY_NAME:
        raise KeyError(f"unknown convention probe {name!r}; known probes: {', '.join(_BY_NAME)}")
    return _BY_NAME[name]


# ------------------------------------------------------------------ results


@dataclass
class ProbeResult(CleanText):
    """What one adapter returned for one probe in one dtype, and whether it is allowed.

    ``verdict`` is ``convention`` (inside the generalised gradient), ``fail`` (outside:
    ``fault = "outside-subdifferential"``, ``outside`` says where, ``repro`` reproduces it),
    ``error`` (the adapter raised or returned something unusable) or ``unsupported`` (the
    adapter lacks an op the probe needs).  Text fields are cleaned on assignment
    (:mod:`gradoracle.text`).
    """

    _text_limits: ClassVar[dict[str, int]] = {
        "probe": NAME_LIMIT,
        "adapter": NAME_LIMIT,
        "dtype": NAME_LIMIT,
        "description": FIELD_LIMIT,
        "notes_text": FIELD_LIMIT,
        "convention": FIELD_LIMIT,
        "error": FIELD_LIMIT,
        "allowed": FIELD_LIMIT,
        "outside": FIELD_LIMIT,
        "repro": MESSAGE_LIMIT,
    }

    probe: str
    adapter: str
    dtype: str
    description: str
    observed: Any = None
    notes: Any = None
    notes_text: str = ""
    agrees_with_notes: bool | None = None
    convention: str = ""
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    verdict: str = CONVENTION
    fault: str = str(Fault.NONE)
    allowed: str = ""
    outside: str = ""
    repro: str | None = None

    @property
    def failed(self) -> bool:
        """The gradient lies outside the generalised gradient."""
        return self.verdict == FAILURE

    def message(self) -> str:
        """One paragraph: probe, adapter, dtype, the value outside, the allowed set, the repro."""
        head = f"{self.probe} [{self.adapter}, {self.dtype}]"
        if not self.failed:
            return f"{head}: {self.verdict}: {self.error or self.convention}"
        lines = [
            f"{head}: gradient outside the generalised (Clarke) gradient",
            f"  probe: {self.description}",
            f"  outside: {self.outside}",
            f"  observed: {self.observed}",
            f"  allowed: {self.allowed}",
        ]
        if self.repro:
            lines.append("  repro:\n" + "\n".join("    " + line for line in self.repro.splitlines()))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def adapter_spec(adapter: Any) -> str:
    """A ``load_adapter`` spec for ``adapter``: its ``spec`` (a mutant's), else ``module:Class``."""
    spec = getattr(adapter, "spec", None)
    if isinstance(spec, str) and spec:
        return spec
    mutant = getattr(adapter, "mutant", None)
    if mutant is not None and isinstance(getattr(mutant, "spec", None), str):
        return str(mutant.spec)
    cls = type(adapter)
    return f"{cls.__module__}:{cls.__qualname__}"


def probe_repro(probe: Probe, spec: str, dtype: str) -> str:
    """A runnable snippet that re-runs the probe and raises while the gradient is outside."""
    return "\n".join(
        [
            "from gradoracle.conventions import reproduce_probe",
            "",
            f"# inputs: {dict(probe.inputs)!r}, cotangent: all ones",
            f"reproduce_probe({probe.name!r}, {spec!r}, {dtype!r})  # raises OutsideSubdifferential "
            "while the fault is there",
        ]
    )


def _observed(grads: Arrays, wrt: Sequence[str]) -> Any:
    if len(wrt) == 1:
        return grads[wrt[0]].tolist()
    return {n: grads[n].tolist() for n in wrt}


def _copies(arrays: Arrays) -> dict[str, np.ndarray]:
    return {k: np.array(v, copy=True) for k, v in arrays.items()}


def run_probe(probe: Probe, adapter: Any, dtype: str, spec: str | None = None) -> ProbeResult:
    """Evaluate one probe and judge it; adapter failures become a result with ``error`` set."""
    name = str(getattr(adapter, "name", "?"))
    res = ProbeResult(probe.name, name, dtype, probe.description, notes_text=probe.notes_text)
    arrays = {k: np.asarray(v, dtype=dtype) for k, v in probe.inputs.items()}
    seen = {k: v.astype(np.float64) for k, v in arrays.items()}  # what the adapter sees, exactly
    res.notes = None if probe.notes is None else np.asarray(probe.notes, dtype=np.float64).tolist()
    try:
        missing = sorted(probe.required_ops() - set(adapter.supported_ops()))
        if missing:
            res.verdict = UNSUPPORTED
            res.error = f"adapter does not implement {', '.join(missing)}"
            return res
        # each call gets its own copies: an adapter that writes into its inputs must not move
        # the point at which the next call (and the judgement) is made
        out = np.asarray(adapter.forward(probe.forward, _copies(arrays), dtype))
        vjp = adapter.vjp(probe.forward, _copies(arrays), probe.wrt, np.ones(out.shape, dtype=dtype), dtype)
        grads: Arrays = {}
        for n in probe.wrt:
            g = np.asarray(vjp.grads[n], dtype=np.float64)
            if g.shape != arrays[n].shape:
                raise ValueError(
                    f"gradient for {n!r} has shape {list(g.shape)}, expected {list(arrays[n].shape)}"
                )
            grads[n] = g
        if probe.precondition is not None:
            pre_fn, pre_grad, pre_text = probe.precondition
            pre_out = np.asarray(adapter.forward(pre_fn, _copies(arrays), dtype))
            pre = adapter.vjp(pre_fn, _copies(arrays), probe.wrt, np.ones(pre_out.shape, dtype=dtype), dtype)
            got = np.asarray(pre.grads[probe.wrt[0]], dtype=np.float64)
            if not np.allclose(got, pre_grad, rtol=1e-4, atol=0.0):
                res.verdict = ERROR
                res.error = (
                    f"cannot judge: the gradient of {pre_text} is {got.reshape(-1).tolist()}, "
                    f"not {pre_grad:g} "
                    "(a helper op is wrong; its conformance checks say which)"
                )
                return res
    except Exception as exc:  # a probe that crashes is a finding, not a crash of the run
        res.verdict = ERROR
        res.error = f"{type(exc).__name__}: {exc}"
        return res
    res.observed = _observed(grads, probe.wrt)
    if probe.notes is not None:
        res.agrees_with_notes = bool(np.array_equal(grads[probe.wrt[0]], np.asarray(probe.notes)))
    allowed = probe.allowed(seen)
    res.allowed = allowed.describe()
    judgement = allowed.judge(grads, dtype)
    try:
        res.convention = probe.convention(seen, grads, dtype)
    except (IndexError, ValueError) as exc:
        res.convention = f"(not described: {exc})"
    if not judgement.inside:
        res.verdict = FAILURE
        res.fault = str(Fault.OUTSIDE_SUBDIFFERENTIAL)
        res.outside = judgement.where
        res.repro = probe_repro(probe, spec or adapter_spec(adapter), dtype)
    return res


def reproduce_probe(name: str, adapter: Any, dtype: str = "float64") -> ProbeResult:
    """Re-run probe ``name`` on ``adapter`` (an adapter or a ``load_adapter`` spec) in ``dtype``.

    Returns the result; raises :class:`OutsideSubdifferential` when the gradient lies outside
    the generalised gradient (and ``RuntimeError`` when the adapter errs).
    """
    spec = adapter if isinstance(adapter, str) else None
    if isinstance(adapter, str):
        from gradoracle.adapters import load_adapter

        adapter = load_adapter(adapter)
    result = run_probe(get_probe(name), adapter, dtype, spec)
    if result.failed:
        raise OutsideSubdifferential(result)
    if result.verdict == ERROR:
        raise RuntimeError(result.message())
    return result


def run_probes(adapters: Sequence[Any], dtypes: Sequence[str] = ("float64",)) -> list[ProbeResult]:
    """Every probe on every adapter (that is available) in every dtype."""
    out: list[ProbeResult] = []
    for adapter in adapters:
        ok, _ = adapter.available()
        if not ok:
            continue
        for dtype in dtypes:
            if dtype not in getattr(adapter, "dtypes", ("float64", "float32")):
                continue
            out.extend(run_probe(p, adapter, dtype) for p in PROBES)
    return out


def probe_failures(probes: Sequence[Any]) -> list[Any]:
    """The probe results (objects or dicts) whose gradient lies outside the allowed set."""
    out = []
    for p in probes:
        verdict = p.get("verdict") if isinstance(p, Mapping) else getattr(p, "verdict", None)
        if verdict == FAILURE:
            out.append(p)
    return out


__all__ = [
    "CONVENTION",
    "ERROR",
    "FAILURE",
    "OFF",
    "OFF_ONE",
    "PROBES",
    "UNSUPPORTED",
    "AllOf",
    "OutsideSubdifferential",
    "Probe",
    "ProbeResult",
    "adapter_spec",
    "get_probe",
    "probe_failures",
    "probe_repro",
    "reproduce_probe",
    "run_probe",
    "run_probes",
]
