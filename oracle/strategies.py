"""Hypothesis strategies that draw identity inputs cheaply, and shrink in shape and value.

Each strategy draws the *structure* (shapes from small menus, a value scale, a target
kind), a 32-bit ``seed`` (the cotangent and the finite-difference directions come from
it), and the *values*, through :class:`DrawnValues`: an object with the methods of a
``numpy.random.Generator`` that the strategies use (``uniform``, ``random``,
``integers``) whose values Hypothesis draws and shrinks.

Values that shrink.  An array of ``n`` elements in ``[low, high]`` is one Hypothesis
``binary`` draw of ``6 n`` bytes (one choice, so drawing costs about as much as drawing
one integer; measured in :func:`gradoracle.strategies.draw_cost`), read as ``n`` 48-bit
codes.  A code ``c`` is mapped to a point of the dyadic grid ``{k 2**-B} cap [low, high]``
(``B`` ~ 37 for ``[-1, 1]``, so values carry ~38 significant bits and products still
round in float64) through a bijection ordered by *simplicity*: first the integers
(``0, 1, -1, 2, -2, ...``), then the halves (``0.5, -0.5, 1.5, ...``), then quarters,
eighths, and so on, each level by increasing magnitude, positive first.  A uniform code
gives a value uniform on the grid, i.e. uniform on ``[low, high]``; Hypothesis shrinks
bytes towards zero, so codes shrink towards 0 and a shrunk counterexample's values become
small integers and halves wherever the failure survives the simplification, and 0 (or
the simplest point of the interval) wherever the value does not matter.  Arrays beyond
:data:`SHRINKABLE_ELEMENTS` elements per example (large user-supplied shapes) take their
values from the seed instead (they still shrink in shape and seed, not in value), which
keeps every example far below Hypothesis's buffer limit.

Shrinking also works on the structure: shapes shrink towards the first entry of their
menu (the smallest shape that exercises every rule of the family), the scale towards 1,
the seed towards 0.  The runner rejects the one example made only of simplest choices
(all values 0, first shape, seed 0: the example Hypothesis always tries first), so that
a different seed gives a different first example.

Shapes come from small menus (:data:`VECTOR_SIZES`, :data:`MATRIX_SHAPES`,
:data:`MLP_SHAPES`, :data:`CONV_SHAPES`, :data:`POOL_SHAPES`) that name the shape classes
a gradient rule can get wrong (1x1, square, tall, wide, a kernel or pool window as large
as the input, pool windows that tile the input exactly or leave rows and columns over),
instead of every size in a range.  Each new shape costs a compiling framework (JAX/XLA)
a compilation (30-250 ms per program, see :mod:`gradoracle.adapters.jax_adapter`); with a menu the
same few shapes recur across the examples of a check and across identities, so those
compilations are amortised.  Over 100 examples, the 28 identities see 199 distinct
(identity, shape) pairs instead of 725 (measured with Hypothesis seed 0).

Kinks and special-looking smooth points (#13).  Margins apply only where a function is not
differentiable, and even there the draws go *just off* the kink on each side: the
one-sided derivatives must hold down to a few ulps away (a rule written ``x > 1e-3``
instead of ``x > 0`` is a bug).  :func:`off_kink` draws half of the values ordinarily
(at least :data:`KINK_MARGIN` away, where finite differences can look too) and half
log-uniformly between :data:`NEAREST` (2^-124, four times float32's smallest normal
number, so no framework flushes it to zero) and 1/2, never exactly at the kink.  Where a
function only *looks* special but is smooth (ELU with alpha = 1, softplus, SiLU and GELU
at 0), :func:`near_point` draws values near the point and exactly at it, checked like any
other input.  A max-pool window's maximum leads its runner-up by :data:`KINK_MARGIN` or, in
some examples, by only a few float32 ulps (:func:`separate_window_maxima`).  The runner
verifies that no finite-difference evaluation crosses a kink (it halves the step, and
leaves out a direction that cannot avoid it; the analytic comparison still covers the
point).  Inputs that are *computed* (the MLP's pre-activations ``W1 x + b1``) keep the
margin: a float32 framework's rounding of them is larger than a few ulps of 0.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st

#: Distance kept between the ordinary conformance draws and a non-differentiable point.
KINK_MARGIN = 0.05
#: The closest a draw comes to a kink or a special point (besides exactly at it): 2^-124,
#: four times float32's smallest normal number, exact in float32 and float64.
NEAREST = 2.0**-124

SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
SCALES = st.sampled_from([1.0, 0.5, 2.0])


#: An example prints every value of its arrays, smallest array first, while they hold at most this
#: many values together; the other arrays print as a summary (:class:`ArraySummary`).  256 values are
#: the values Hypothesis itself draws and shrinks per example (:data:`SHRINKABLE_ELEMENTS`; beyond
#: them values come from the seed), and they keep the printed example far below the 30,000
#: characters at which Hypothesis warns about an "overly large repr" of a falsifying example
#: (``hypothesis.internal.reflection.repr_call``): a float64 prints in at most 24 characters (``repr``
#: of ``-2.2250738585072014e-308``), so 256 values take at most about 11,000 characters with their
#: separators and indentation (9,100-10,700 measured in 1 to 8 dimensions); numpy's own threshold,
#: 1,000 values per array, lets one example of three arrays print 60 kB.
PRINTED_VALUES = 256
#: Leading values an :class:`ArraySummary` shows (numpy's ``edgeitems``).
LEADING_VALUES = 3


def array_digest(a: np.ndarray) -> str:
    """``sha256(bytes)[:16]``: the first 16 hex digits of the SHA-256 of the array's values, in C
    order and little-endian (for a float64 array:
    ``hashlib.sha256(np.ascontiguousarray(a, dtype="<f8").tobytes()).hexdigest()[:16]``)."""
    arr = np.asarray(a)
    values = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    return hashlib.sha256(values.tobytes()).hexdigest()[:16]


def _value_text(v: Any) -> str:
    """One value as Python source that gives it back exactly (``repr``; non-finite floats as ``np.nan``
    and ``np.inf``)."""
    if isinstance(v, float) and not math.isfinite(v):
        return "np.nan" if math.isnan(v) else ("np.inf" if v > 0 else "-np.inf")
    return repr(v)


def _dtype_suffix(a: np.ndarray) -> str:
    return "" if a.dtype == np.float64 else f", dtype={a.dtype.name!r}"


class ArrayValues:
    """An array printed with every value: ``np.array([...])``, Python source that rebuilds it exactly
    (``repr`` of each float, as in the repro snippets)."""

    def __init__(self, a: np.ndarray) -> None:
        self.array = np.asarray(a)

    def __repr__(self) -> str:
        a = self.array
        if a.size == 0:
            return f"np.zeros({a.shape}{_dtype_suffix(a)})"

        def nested(v: Any) -> str:
            return "[" + ", ".join(nested(x) for x in v) + "]" if isinstance(v, list) else _value_text(v)

        return f"np.array({nested(a.tolist())}{_dtype_suffix(a)})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        a = self.array
        if a.size == 0 or a.ndim == 0:
            p.text(repr(self))
            return

        def nested(v: list[Any]) -> None:
            with p.group(1, "[", "]"):
                for i, x in enumerate(v):
                    if i:
                        p.text(",")
                        if isinstance(x, list):  # rows break together, values fill the lines
                            p.breakable()
                        else:
                            with p.group():
                                p.breakable()
                    if isinstance(x, list):
                        nested(x)
                    else:
                        p.text(_value_text(x))

        with p.group(4, "np.array(", ")"):
            nested(a.tolist())
            p.text(_dtype_suffix(a))


class ArraySummary:
    """An array printed by its shape, dtype, :func:`array_digest` and first values (C order):
    ``<float64[40, 20] sha256=3f2a9c1e0b7d4a55 [0.0236, 0.9009, -0.7116, ...]>``."""

    def __init__(self, a: np.ndarray) -> None:
        self.array = np.asarray(a)

    def _parts(self) -> tuple[str, str]:
        a = self.array
        head = [_value_text(v) for v in a.reshape(-1)[:LEADING_VALUES].tolist()]
        more = ", ..." if a.size > LEADING_VALUES else ""
        return f"{a.dtype.name}{list(a.shape)} sha256={array_digest(a)}", f"[{', '.join(head)}{more}]"

    def __repr__(self) -> str:
        return "<{} {}>".format(*self._parts())

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        what, head = self._parts()
        with p.group(1, "<", ">"):
            p.text(what)
            p.breakable()
            p.text(head)


def shown_arrays(arrays: dict[Any, Any]) -> dict[Any, Any]:
    """Each array of ``arrays`` as it prints: :class:`ArrayValues`, smallest first while they hold at
    most :data:`PRINTED_VALUES` values together, the rest :class:`ArraySummary`; other values as they
    are."""
    sizes = {k: np.asarray(v).size for k, v in arrays.items() if isinstance(v, np.ndarray)}
    budget, full = PRINTED_VALUES, set()
    for k in sorted(sizes, key=lambda k: sizes[k]):  # stable: equal sizes in the arrays' order
        if sizes[k] > budget:
            break
        budget -= sizes[k]
        full.add(k)
    return {
        k: v if k not in sizes else ArrayValues(v) if k in full else ArraySummary(v)
        for k, v in arrays.items()
    }


@dataclass(frozen=True)
class Example:
    """One drawn input: float64 master arrays, hyperparameters, and a seed.

    ``seed`` determines the cotangent ``u`` and the finite-difference directions, so an
    example is fully reproducible from these three fields.

    It prints (``repr``, and Hypothesis's falsifying example, through ``_repr_pretty_``) every value
    of a small example as ``np.array([...])`` (exact: each float's ``repr``), and an array beyond
    :data:`PRINTED_VALUES` values in the example as its shape, dtype, digest and first values
    (:func:`shown_arrays`).
    """

    inputs: dict[str, np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def _shown(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(inputs, params) as they print; arrays among the params share the inputs' budget."""
        arrays: dict[Any, Any] = {("inputs", k): v for k, v in self.inputs.items()}
        arrays.update({("params", k): v for k, v in self.params.items()})
        shown = shown_arrays(arrays)
        return (
            {k: shown[("inputs", k)] for k in self.inputs},
            {k: shown[("params", k)] for k in self.params},
        )

    def __repr__(self) -> str:
        inputs, params = self._shown()
        text = ", ".join(f"{k!r}: {v!r}" for k, v in inputs.items())
        return f"Example(inputs={{{text}}}, params={params!r}, seed={self.seed})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        """Hypothesis's (and IPython's) pretty printer: :meth:`__repr__`, lines broken to its width.

        Without it Hypothesis prints a dataclass field by field, each array as numpy's ``repr``."""
        if cycle:
            p.text("Example(...)")
            return
        inputs, params = self._shown()
        with p.group(8, "Example(", ")"):
            p.text("inputs=")
            with p.group(1, "{", "}"):
                for i, (k, v) in enumerate(inputs.items()):
                    if i:
                        p.text(",")
                        p.breakable()
                    p.text(f"{k!r}: ")
                    p.pretty(v)
            p.text(",")
            p.breakable()
            p.text("params=")
            p.pretty(params)
            p.text(",")
            p.breakable()
            p.text(f"seed={self.seed!r}")


def rng_for(seed: int) -> np.random.Generator:
    """The generator that turns a drawn seed into values."""
    return np.random.default_rng(seed)


# ------------------------------------------------------------------ values that shrink

#: Bytes per element: one 48-bit code per value.
CODE_BYTES = 6
#: Grid points per interval are kept below ``2**GRID_POINTS_BITS`` (codes are taken
#: modulo the count, so the 48-bit codes stay uniform on the grid to within 2**-8).
GRID_POINTS_BITS = 40
#: Elements per example whose values Hypothesis draws (and shrinks); beyond, values come
#: from the example's seed.  6 bytes x 256 keeps the simplest example at 1.5 KiB, far
#: below Hypothesis's 8 KiB buffer (and its health check at half of it).
SHRINKABLE_ELEMENTS = 256


@dataclass(frozen=True)
class _Grid:
    """The simplicity-ordered dyadic grid on ``[low, high]``, level by level.

    Level ``d`` holds the grid points whose simplest denominator is ``2**d`` (level 0: the
    integers, 0 first when inside); within a level, increasing magnitude, positive first.
    """

    offsets: np.ndarray  # first code of each level, and the total count last
    has_zero: bool
    pos_first: np.ndarray  # smallest numerator of the level's positive side
    pos_count: np.ndarray
    neg_first: np.ndarray  # smallest |numerator| of the level's negative side
    neg_count: np.ndarray
    step: np.ndarray  # numerator step: 1 at level 0, 2 (odd numerators) above


def _odd_range(a: int, b: int) -> tuple[int, int]:
    """(first odd >= a, count of odd numbers in [a, b]) for a >= 1."""
    if b < a:
        return 1, 0
    return (a if a % 2 else a + 1), (b + 1) // 2 - a // 2


@functools.lru_cache(maxsize=256)
def _grid(low: float, high: float) -> _Grid:
    """The grid for ``[low, high]`` with ``2**levels`` as fine as fits :data:`GRID_POINTS_BITS`."""
    width = max(high - low, 2.0**-20)
    levels = max(1, GRID_POINTS_BITS - 1 - max(0, math.ceil(math.log2(width))))
    counts, pos_first, pos_count, neg_first, neg_count, step = [], [], [], [], [], []
    has_zero = low <= 0.0 <= high
    for d in range(levels + 1):
        scale = 2.0**d
        hi_num, lo_num = math.floor(high * scale), math.ceil(low * scale)
        a_pos, b_pos = max(1, lo_num), hi_num
        a_neg, b_neg = max(1, -hi_num), -lo_num
        if d == 0:
            pf, pc = a_pos, max(0, b_pos - a_pos + 1)
            nf, nc = a_neg, max(0, b_neg - a_neg + 1)
        else:
            pf, pc = _odd_range(a_pos, b_pos)
            nf, nc = _odd_range(a_neg, b_neg)
        pos_first.append(pf)
        pos_count.append(pc)
        neg_first.append(nf)
        neg_count.append(nc)
        step.append(1 if d == 0 else 2)
        counts.append(pc + nc + (1 if d == 0 and has_zero else 0))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    as_array = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    return _Grid(
        offsets,
        has_zero,
        as_array(pos_first),
        as_array(pos_count),
        as_array(neg_first),
        as_array(neg_count),
        as_array(step),
    )


def grid_values(codes: np.ndarray, low: float, high: float) -> np.ndarray:
    """Codes (non-negative integers) -> values in ``[low, high]``, simplest for the smallest codes.

    ``grid_values(range(7), -1, 1) = [0, 1, -1, 0.5, -0.5, 0.25, -0.25]``: a bijection
    between ``[0, count)`` and the grid (codes beyond wrap around), so uniform codes give
    uniform values and codes shrinking towards 0 give simpler values.
    """
    if not low <= high:
        low, high = high, low
    if low == high:
        return np.full(np.shape(codes), float(low))
    grid = _grid(float(low), float(high))
    total = int(grid.offsets[-1])
    if total == 0:  # no dyadic point inside (a very narrow interval): its midpoint
        return np.full(np.shape(codes), (low + high) / 2)
    c = (np.asarray(codes, dtype=np.uint64) % np.uint64(total)).astype(np.int64)
    level = np.searchsorted(grid.offsets, c, side="right") - 1
    r = c - grid.offsets[level]
    zero = (level == 0) & grid.has_zero & (r == 0)
    r = r - ((level == 0) & grid.has_zero)
    pc, nc = grid.pos_count[level], grid.neg_count[level]
    pairs = np.minimum(pc, nc)
    in_pair = r < 2 * pairs
    positive = np.where(in_pair, r % 2 == 0, pc > nc)
    j = np.where(in_pair, r // 2, pairs + (r - 2 * pairs))
    numerator = np.where(positive, grid.pos_first[level], grid.neg_first[level]) + grid.step[level] * j
    values = np.where(positive, numerator, -numerator) * np.ldexp(1.0, -level)
    return np.where(zero, 0.0, values).astype(np.float64)


def _codes(data: bytes, n: int) -> np.ndarray:
    """``n`` big-endian 48-bit codes from ``6 n`` bytes."""
    padded = np.zeros((n, 8), dtype=np.uint8)
    padded[:, 8 - CODE_BYTES :] = np.frombuffer(data, dtype=np.uint8).reshape(n, CODE_BYTES)
    return padded.view(">u8").reshape(n).astype(np.uint64)


@functools.lru_cache(maxsize=1024)
def _binary(size: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=size, max_size=size)


@functools.lru_cache(maxsize=1024)
def array_label(n: int) -> int:
    """The span label of an array of ``n`` drawn values: a 64-bit digest of ``n``, as
    Hypothesis labels its own spans (``calc_label_from_name``)."""
    digest = hashlib.sha384(f"gradoracle.strategies:array of {n} values".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _takes_span_labels(draw: Any) -> bool:
    """Whether ``draw`` is Hypothesis's ``ConjectureData.draw``, whose second argument is the
    label of the span the draw makes (another ``draw`` is called without one)."""
    try:
        from hypothesis.internal.conjecture.data import ConjectureData
    except ImportError:  # pragma: no cover - another Hypothesis layout
        return False
    return getattr(draw, "__func__", None) is ConjectureData.draw


def _size(size: int | tuple[int, ...] | None) -> tuple[int, ...]:
    if size is None:
        return ()
    if isinstance(size, int | np.integer):
        return (int(size),)
    return tuple(int(d) for d in size)


class DrawnValues:
    """The values of one example, drawn through Hypothesis so that they shrink.

    Has the ``numpy.random.Generator`` methods the strategies use: :meth:`uniform`,
    :meth:`random` and :meth:`integers` draw through Hypothesis (see the module
    docstring); every other method (``multinomial``, ``dirichlet``, ``normal``, ...) is
    the seed's generator's, so a strategy written against a ``Generator`` works unchanged
    (its values then shrink only with the seed).  Each array is one ``binary`` choice;
    an array drawn with every byte 0 (Hypothesis fills the choices after a new prefix
    with their simplest values while it explores) is all zeros: the runner rejects such
    examples until a failure is found (:func:`gradoracle.runner.simplest_values_drawn`).

    Each array's choice is drawn under a label of its size (:func:`array_label`), where
    Hypothesis's ``draw`` takes one: its generator copies a drawn part of an example over
    another part with the same label (to try the same value in two places), and under
    one label for every size the copied bytes would not fit and Hypothesis would fill the
    choice with zeros instead: an example the runner rejects (one test case in five of a
    default check was such a copy before the labels).
    """

    def __init__(self, draw: st.DrawFn, seed: int) -> None:
        self._draw = draw
        self._labelled = _takes_span_labels(draw)
        self._rng = np.random.default_rng(seed)
        self._budget = SHRINKABLE_ELEMENTS

    def uniform(self, low: float = 0.0, high: float = 1.0, size: int | tuple[int, ...] | None = None) -> Any:
        """Values in ``[low, high]``, uniform on a fine dyadic grid, shrinking to simple ones."""
        shape = _size(size)
        n = math.prod(shape)
        if n > self._budget:
            return self._rng.uniform(low, high, size=size)
        self._budget -= n
        data = self._array_bytes(n) if n else b""
        values = grid_values(_codes(data, n), float(low), float(high)).reshape(shape)
        return float(values) if size is None else values

    def _array_bytes(self, n: int) -> bytes:
        """The ``CODE_BYTES * n`` bytes of an array of ``n`` values: one choice, labelled by ``n``."""
        strategy = _binary(CODE_BYTES * n)
        if self._labelled:
            return bytes(self._draw(strategy, array_label(n)))
        return bytes(self._draw(strategy))

    def random(self, size: int | tuple[int, ...] | None = None) -> Any:
        """Values in ``[0, 1]`` (:meth:`uniform`); shrink towards 0."""
        return self.uniform(0.0, 1.0, size)

    def integers(self, low: int, high: int | None = None, size: int | tuple[int, ...] | None = None) -> Any:
        """Integers in ``[low, high)`` (``[0, low)`` with one bound); shrink towards ``low``."""
        lo, hi = (0, int(low)) if high is None else (int(low), int(high))
        if hi <= lo:
            raise ValueError(f"integers: empty range [{lo}, {hi})")
        shape = _size(size)
        n = math.prod(shape)
        drawn = [self._draw(st.integers(lo, hi - 1)) for _ in range(n)]
        return drawn[0] if size is None else np.asarray(drawn, dtype=np.int64).reshape(shape)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rng, name)


#: What a strategy draws values from: a seeded ``Generator`` or :class:`DrawnValues`.
ValueSource = np.random.Generator | DrawnValues


def values_for(draw: st.DrawFn, seed: int) -> DrawnValues:
    """The value source of one example (use it where ``rng_for(seed)`` was used)."""
    return DrawnValues(draw, seed)


def uniform(rng: ValueSource, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """Values uniform in ``[-scale, scale]``."""
    return rng.uniform(-scale, scale, size=shape)


def away_from_zero(
    rng: ValueSource, shape: tuple[int, ...], scale: float, margin: float = KINK_MARGIN
) -> np.ndarray:
    """Values with ``margin <= |x| <= margin + scale``, random sign."""
    magnitude = margin + rng.uniform(0.0, scale, size=shape)
    sign = np.where(rng.random(size=shape) < 0.5, -1.0, 1.0)
    return sign * magnitude


_NEAR_DRAWS = [True]


@contextmanager
def ordinary_draws() -> Iterator[None]:
    """Within this block :func:`off_kink`, :func:`near_point` and :func:`separate_window_maxima`
    draw as before #13 (``|x| >= margin``, uniform, maxima leading by the margin): for comparing
    tools whose finite differences cannot work next to a kink (the threshold campaign)."""
    _NEAR_DRAWS.append(False)
    try:
        yield
    finally:
        _NEAR_DRAWS.pop()


def _log_uniform(rng: ValueSource, shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
    return np.asarray(np.exp(rng.uniform(np.log(low), np.log(high), size=shape)))


def off_kink(
    rng: ValueSource, shape: tuple[int, ...], scale: float, margin: float = KINK_MARGIN
) -> np.ndarray:
    """Values on both sides of a kink at 0, never at it: about half ordinary (``margin <= |x| <=
    margin + scale``), half log-uniform in ``[2^-124, 1/2]`` (just off the kink, down to a few ulps)."""
    if not _NEAR_DRAWS[-1]:
        return away_from_zero(rng, shape, scale, margin)
    ordinary = margin + rng.uniform(0.0, scale, size=shape)
    near = _log_uniform(rng, shape, NEAREST, 0.5)
    sign = np.where(rng.random(size=shape) < 0.5, -1.0, 1.0)
    return sign * np.where(rng.random(size=shape) < 0.5, near, ordinary)


def near_point(rng: ValueSource, shape: tuple[int, ...], scale: float, point: float = 0.0) -> np.ndarray:
    """Values around a smooth point that looks special: ordinary ``[-scale, scale]`` draws, draws
    log-uniformly close to ``point`` on either side (down to 2^-124 away) and ``point`` itself
    (``point = 0``: ``0.0`` and ``-0.0`` alike, by the sign drawn for the near values)."""
    if not _NEAR_DRAWS[-1]:
        return uniform(rng, shape, scale)
    ordinary = rng.uniform(-scale, scale, size=shape)
    sign = np.where(rng.random(size=shape) < 0.5, -1.0, 1.0)
    near = point + sign * _log_uniform(rng, shape, NEAREST, 0.5)
    pick = rng.random(size=shape)
    at = np.copysign(0.0, sign) if point == 0 else np.full(shape, point)
    return np.where(pick < 0.4, ordinary, np.where(pick < 0.85, near, at))


#: About this share of a smooth elementwise draw's entries are exact zeros (:func:`with_zeros`).
ZERO_SHARE = 0.125


def with_zeros(rng: ValueSource, x: np.ndarray) -> np.ndarray:
    """``x`` with about one entry in 8 (:data:`ZERO_SHARE`) set to an exact zero, ``0.0`` or
    ``-0.0`` by a coin: a smooth function's backward with a guard or a branch at 0 (``where(x !=
    0, ...)``, a ``signbit`` test, a small-``|x|`` shortcut) is wrong there only, and a uniform draw
    never lands on 0.  The simplest codes keep the entry (Hypothesis favours ``random() = 0``).
    Unchanged under :func:`ordinary_draws`."""
    if not _NEAR_DRAWS[-1] or x.size == 0:
        return x
    pick = rng.random(size=x.shape) >= 1.0 - ZERO_SHARE
    zero = np.where(rng.random(size=x.shape) < 0.5, -0.0, 0.0)
    return np.where(pick, zero, x)


#: The upper end of the tail draws' middle decades (see :func:`with_tails`).
MID_TAIL = 20.0


def with_tails(
    rng: ValueSource,
    x: np.ndarray,
    scale: float,
    tail: float,
    gap: tuple[float, float] | None = None,
) -> np.ndarray:
    """``x`` with about three quarters of its entries (at least one) moved to the tails, where a rule written
    for the bulk (a saturating branch, a threshold, an approximation valid for small ``|x|``, an
    overflowing intermediate) is still checked.

    Each moved entry is ``+-`` log-uniform in ``[scale, 20]`` (:data:`MID_TAIL`: where thresholds,
    clamps and saturated branches cut too early show, a gradient still above the tolerance), or,
    for a quarter of them, in ``[20, tail]``; and two entries of opposite signs (one in half the
    examples of one or two entries) are uniform in ``[0.9 tail, tail]``: the far end, where an
    intermediate such as ``exp(|x|)`` overflows (float32's ``exp`` past 88.7 of a tail of 100;
    log-uniform draws alone put 4% of the entries there, and a 30-example check missed it).
    ``gap = (a, b)``: values drawn inside the open interval move up by ``b - a`` (a region a
    framework documents a deviation in, such as PyTorch's softplus linearisation between its
    threshold 20 and the point where it stops showing in float64).
    Unchanged under :func:`ordinary_draws`."""
    if not _NEAR_DRAWS[-1] or tail <= scale or x.size == 0:
        return x
    out = np.array(x, dtype=float)
    flat = out.reshape(-1)
    pick = rng.random(size=flat.shape) < 0.75
    # signs alternate along the vector, each flipped by a coin: Hypothesis favours the simplest
    # codes (0.0 from ``random()``), which would otherwise give one sign throughout
    flips = rng.random(size=flat.shape) < 0.5
    sign = np.where((np.arange(flat.size) + flips) % 2 == 0, 1.0, -1.0)
    chosen = int(rng.integers(0, flat.size))  # at least one entry moved
    pick[chosen] = True
    mid = min(tail, MID_TAIL)
    beyond = (rng.random(size=flat.shape) >= 0.75) & (tail > mid)  # simplest codes: the middle
    magnitude = np.where(
        beyond, _log_uniform(rng, flat.shape, mid, tail), _log_uniform(rng, flat.shape, scale, mid)
    )
    far_end = rng.uniform(max(scale, 0.9 * tail), tail, size=2)
    if tail > mid and flat.size >= 3:  # the far end on both sides
        other = (chosen + 1 + int(rng.integers(0, flat.size - 1))) % flat.size
        pick[other] = True
        magnitude[[chosen, other]] = far_end
        sign[other] = -sign[chosen]
    elif tail > mid and rng.random() < 0.5:
        magnitude[chosen] = far_end[0]
    moved = sign * magnitude
    if gap is not None:
        low, high = gap
        inside = (moved > low) & (moved < high)
        moved = np.where(inside, moved + (high - low), moved)
    flat[pick] = moved[pick]
    return out


#: The largest |logit| of the cross-entropy draws' tails: past float32's ``exp`` overflow at 88.7,
#: where a log-sum-exp or softmax without the max subtracted returns inf/inf = NaN.
LOGIT_TAIL = 100.0
#: How the cross-entropy draws place the logits: the bulk as drawn, entries moved to the tails
#: (:func:`with_tails`), or every logit of a row shifted by one large common offset (the softmax
#: is shift-invariant, the unshifted exponentials are not).
LOGIT_KINDS = ("bulk", "tails", "shifted")


def logit_tails(rng: ValueSource, z: np.ndarray, scale: float, kind: str) -> np.ndarray:
    """Logits ``z`` (rows along the last axis) placed by ``kind`` (:data:`LOGIT_KINDS`): ``tails``
    moves about half the entries to ``+-[scale, LOGIT_TAIL]``; ``shifted`` adds to each row one
    offset ``c`` drawn as a tail entry (``|c|`` up to :data:`LOGIT_TAIL`): ``softmax(z + c) =
    softmax(z)``, while ``exp(z + c)`` overflows (c > 0) or every entry underflows (c < -104)."""
    if kind == "bulk" or not _NEAR_DRAWS[-1]:
        return z
    if kind == "tails":
        return with_tails(rng, z, scale, LOGIT_TAIL)
    if kind != "shifted":
        raise ValueError(f"logit kind {kind!r}; use one of {LOGIT_KINDS}")
    rows = z.reshape(-1, z.shape[-1]) if z.ndim else z.reshape(1, 1)
    offsets = with_tails(rng, np.zeros(rows.shape[0]), scale, LOGIT_TAIL)
    return np.asarray(rows + offsets[:, None]).reshape(z.shape)


def positive(rng: ValueSource, shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
    """Values uniform in ``[low, high]`` (for log's domain)."""
    return rng.uniform(low, high, size=shape)


def target_vector(rng: ValueSource, m: int, soft: bool) -> np.ndarray:
    """A probability vector: one-hot, or soft with dyadic entries summing to exactly 1.

    Soft targets are multiples of 2**-16, so they and their sum are exact in float32 and
    float64 and the identity ``d/dz CE = softmax(z) - y`` (which uses ``sum y = 1``)
    holds exactly in every dtype.
    """
    y = np.zeros(m)
    if not soft:
        y[rng.integers(0, m)] = 1.0
        return y
    counts = rng.multinomial(2**16, rng.dirichlet(np.ones(m)))
    return counts / 2.0**16


def separate_window_maxima(
    x: np.ndarray,
    k: int,
    margin: float = KINK_MARGIN,
    close: np.ndarray | None = None,
    ulps: int = 4,
) -> np.ndarray:
    """Raise each k x k window's (stride k) maximum so it leads the runner-up by ``margin``.

    Windows where ``close[u, v]`` is true instead get a maximum only ``ulps`` float32 ulps above
    the runner-up (a window that is close to a tie but not tied: the max is unique, the
    gradient too).  The values are first rounded to float32, so the gap is the same in both
    dtypes.
    """
    x = x.astype(np.float32).astype(np.float64)
    ho, wo = x.shape[0] // k, x.shape[1] // k
    if ho == 0 or wo == 0 or k == 1:
        return x
    core = x[: ho * k, : wo * k].reshape(ho, k, wo, k).transpose(0, 2, 1, 3).reshape(ho, wo, k * k)
    order = np.sort(core, axis=2)
    gap = order[:, :, -1] - order[:, :, -2]
    top = order[:, :, -1] + np.maximum(margin - gap, 0.0)
    top = top.astype(np.float32).astype(np.float64)
    top = np.where(top > order[:, :, -2], top, np.nextafter(order[:, :, -2].astype(np.float32), np.inf))
    if close is not None and _NEAR_DRAWS[-1]:
        runner = order[:, :, -2].astype(np.float32)
        near = runner
        for _ in range(max(int(ulps), 1)):
            near = np.nextafter(near, np.float32(np.inf))
        # next to 0 the float32 ulps are subnormal (flushed to zero by some frameworks): there
        # the gap is ``ulps`` times 2^-100 instead, still far below any finite-difference step
        floor = (runner.astype(np.float64) + max(int(ulps), 1) * 2.0**-100).astype(np.float32)
        near = np.where(np.abs(runner) < 2.0**-100, np.maximum(near, floor), near)
        top = np.where(np.asarray(close, dtype=bool), near.astype(np.float64), top)
    idx = np.argmax(core, axis=2)
    np.put_along_axis(core, idx[:, :, None], top[:, :, None], axis=2)
    x[: ho * k, : wo * k] = core.reshape(ho, wo, k, k).transpose(0, 2, 1, 3).reshape(ho * k, wo * k)
    return x


def push_preactivation_from_kinks(
    z: np.ndarray, bias: np.ndarray, margin: float = 2 * KINK_MARGIN
) -> np.ndarray:
    """A new bias so that ``z - bias + new_bias`` keeps ``|.| >= margin`` elementwise."""
    shift = np.where(np.abs(z) < margin, np.where(z >= 0, margin - z, -margin - z), 0.0)
    return bias + shift


def dim_menu(min_value: int = 1, max_value: int = 8) -> tuple[int, ...]:
    """The sizes :func:`dims` draws from: both ends and the :data:`VECTOR_SIZES` between them,
    ascending."""
    inside = {v for v in VECTOR_SIZES if min_value <= v <= max_value}
    return tuple(sorted(inside | {min_value, max_value}))


def dims(min_value: int = 1, max_value: int = 8) -> st.SearchStrategy[int]:
    """A dimension size from :func:`dim_menu`; shrinks towards ``min_value``."""
    return st.sampled_from(dim_menu(min_value, max_value))


#: Vector lengths: degenerate 1, small even and odd sizes, a SIMD-width multiple, and 12
#: (the largest vector whose full Jacobian the finite differences still take).
VECTOR_SIZES: tuple[int, ...] = (1, 2, 3, 5, 8, 12)
# Menu order matters: Hypothesis tries the first entry first and shrinks towards it, so
# each menu opens with the smallest shape on which every rule of its family does
# something (a transposition, a kernel rotation, a pool window's routing); the
# degenerate 1 x 1 case comes right after.

#: Matrix shapes (rows, columns): 2x2 (the smallest on which a transposition shows),
#: 1x1, small non-square both ways, one row or column, square, tall and wide.
MATRIX_SHAPES: tuple[tuple[int, int], ...] = (
    (2, 2),
    (1, 1),
    (2, 3),
    (3, 2),
    (1, 5),
    (5, 1),
    (4, 4),
    (3, 8),
    (8, 3),
)
#: MLP sizes (inputs n, hidden h, classes m >= 2): non-square layers both ways first,
#: then all-minimal, square, a one-unit input or hidden layer, wider/narrower layers.
MLP_SHAPES: tuple[tuple[int, int, int], ...] = (
    (2, 3, 2),
    (1, 1, 2),
    (3, 2, 3),
    (4, 4, 4),
    (1, 5, 3),
    (5, 1, 2),
    (3, 8, 6),
    (8, 3, 5),
)
#: Convolutions (k, H, W): 2x2 on 2x2 first (the smallest case where the kernel's
#: rotation matters), kernel as large as the input for k = 1..4, 1x1 kernels on a
#: non-square input, and larger non-square inputs.
CONV_SHAPES: tuple[tuple[int, int, int], ...] = (
    (2, 2, 2),
    (1, 1, 1),
    (1, 2, 3),
    (2, 5, 3),
    (3, 3, 3),
    (3, 4, 7),
    (4, 4, 4),
    (4, 6, 9),
    (2, 10, 7),
)
#: Pooling (k, H, W): one 2x2 window first, one window covering the input for k = 1..4,
#: windows tiling the input exactly, and inputs that leave rows/columns over at the
#: edge (floor mode).
POOL_SHAPES: tuple[tuple[int, int, int], ...] = (
    (2, 2, 2),
    (1, 1, 1),
    (1, 2, 3),
    (2, 4, 6),
    (2, 5, 3),
    (3, 3, 3),
    (3, 6, 9),
    (3, 7, 8),
    (4, 4, 4),
    (4, 8, 10),
)


def shapes(menu: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    """One entry of a shape menu; tried first and shrunk towards: the menu's first entry."""
    return st.sampled_from(menu)
