"""``WindowRoutings.judge`` (max pooling with ties): the rounding room, the supply-demand check and
the excess reported, each on a window layout built for it.

Max pooling with cotangent ``c_w >= 0`` per window allows every ``g = sum_w c_w p_w`` with
``p_w`` a probability vector on window ``w``'s maxima; the judge decides membership up to a
rounding room, ``atol + 128 eps * sum_w |c_w|`` (the conformance ``rtol`` applied to the total
routed, since a framework accumulates the windows' cotangents).  These cases were missing
from ``tests/test_kinks.py``: mutants of the judge survived it (``docs/self-mutation.md``,
``oracle/subdifferential.py``, "Open gaps").  Expected values are written from those
definitions, not read from the judge, and every accepted case has a rejected twin.
"""

from __future__ import annotations

import numpy as np
import pytest

from gradoracle.subdifferential import AllOf, Intervals, WindowRoutings

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)


def documented_room(cotangent: np.ndarray, eps: float) -> float:
    """The judge's room as its docstring defines it: ``eps^2 + 128 eps max(sum |c_w|, 1)``."""
    return eps * eps + 128 * eps * max(float(np.sum(np.abs(cotangent))), 1.0)


# ------------------------------------------------------------ the room scales with the total routed


def _centre_of_25_windows() -> np.ndarray:
    """9x9, a single maximum in the centre: it is the only maximum of all 25 5x5 windows (stride 1)."""
    x = np.zeros((9, 9))
    x[4, 4] = 1.0
    return x


def test_float32_accumulation_of_25_windows_at_one_maximum_stays_inside() -> None:
    """A float32 framework adding 25 windows' cotangents at their shared maximum, one large
    (1024) and 24 just under half an ulp of it, keeps 1024 at every addition: it loses ``24 *
    0.495 ulp(1024)``, about 12 eps of the total.  That is rounding of the accumulated sum, so it
    is inside the room (128 eps of the total routed) although it exceeds 128 eps of the mean
    cotangent per window (a room from the mean would fail a correct float32 framework)."""
    x = _centre_of_25_windows()
    big = 1024.0
    small = float(np.float32(0.99 * big * EPS32 / 2))  # under half an ulp of 1024 in float32
    c = np.array([big] + [small] * 24)
    s = WindowRoutings(x, 5, 1, c)
    assert len(s._window_maxima()) == 25 and all(m == [(4, 4)] for m in s._window_maxima())

    acc = np.float32(0.0)
    for cw in c.astype(np.float32):  # the windows in order, accumulated in float32
        acc = np.float32(acc + cw)
    g = np.zeros((9, 9))
    g[4, 4] = float(acc)
    lost = float(np.sum(c)) - g[4, 4]
    assert lost == pytest.approx(24 * small, rel=1e-12)  # every small cotangent was rounded away
    # the case separates the two rooms: above 128 eps of the mean, well within 128 eps of the sum
    assert 128 * EPS32 * float(np.mean(c)) < lost < 0.2 * 128 * EPS32 * float(np.sum(c))

    assert s.judge({"x": g}, "float32").inside
    # negative controls: the same loss is not rounding in float64, and twice the float32 room
    # (the total short by 256 eps of it) is a wrong routing in float32
    assert not s.judge({"x": g}, "float64").inside
    short = np.zeros((9, 9))
    short[4, 4] = float(np.sum(c)) - 2 * documented_room(c, EPS32)
    j = s.judge({"x": short}, "float32")
    assert not j.inside
    assert "the gradient sums to" in j.where and "a tie's weights must sum to one" in j.where
    assert j.excess == pytest.approx(2.0, rel=1e-6)  # the distance, in units of the room


# ------------------------------------------------------------ supply-demand at any cotangent scale

# 2x3, window size 2, stride 1: window 0 (columns 0-1) has the single maximum (0, 1); window 1
# (columns 1-2) has the tie (0, 1), (0, 2).  So (0, 1) must receive all of c_0, and may take any
# part of c_1 besides.
_SHARED = np.array([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])


def _routing(to_01: float, to_02: float) -> np.ndarray:
    g = np.zeros((2, 3))
    g[0, 1], g[0, 2] = to_01, to_02
    return g


@pytest.mark.parametrize("scale", [1e-3, 0.5, 1.0, 1e3])
def test_a_window_with_one_maximum_sends_it_all_its_cotangent_at_any_scale(scale: float) -> None:
    """Membership is invariant under scaling the cotangent and the gradient together: the same
    routings are inside or outside at a cotangent of 1e-3 per window (a mean-reduced loss over
    1000 outputs) as at 1e3.  Half of window 0's cotangent sent to the tie's other pixel has the
    right total and no negative weight, and only the supply-demand condition for window 0 alone
    (``c_0 <= g[0, 1]``) rejects it, whatever the scale; the shortfall is ``c_0 / 2``."""
    s = WindowRoutings(_SHARED, 2, 1, scale * np.ones(2))
    assert s._window_maxima() == [[(0, 1)], [(0, 1), (0, 2)]]
    for to_01 in (1.0, 1.5, 2.0):  # window 1 splits t : 1 - t, t = 0, 1/2, 1
        assert s.judge({"x": _routing(to_01 * scale, (2.0 - to_01) * scale)}, "float64").inside, to_01

    j = s.judge({"x": _routing(0.5 * scale, 1.5 * scale)}, "float64")
    assert not j.inside
    assert j.where.startswith("windows [0] route") and "their maxima [0, 1]" in j.where
    assert f"receive only {0.5 * scale:.6g}" in j.where
    room = documented_room(s.cotangent, EPS64)
    assert j.excess == pytest.approx(0.5 * scale / room, rel=1e-9)


# ------------------------------------------------------------ the excess: distance in units of the room

# 3x3, window size 2, stride 1 (the layout of tests/test_kinks.py): windows 0 and 2 have the single
# maximum (1, 1), windows 1 and 3 the tie (1, 1), (1, 2); a cotangent of 1 per window.
_TIE = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])


def _tie_set() -> WindowRoutings:
    return WindowRoutings(_TIE, 2, 1, np.ones(4))


@pytest.mark.parametrize(
    ("g", "named"),
    [
        ([[0, 0, 0], [0, 5, -1], [0, 0, 0]], "x[1, 2]: got -1, a negative routing weight"),
        ([[1, 0, 0], [0, 3, 0], [0, 0, 0]], "x[0, 0]: got 1, allowed {0}"),
        ([[0, 0, 0], [0, 1, 3], [0, 0, 0]], "windows [0, 2] route 2 but their maxima [1, 1] receive only 1"),
    ],
)
def test_the_excess_is_the_distance_to_the_set_in_units_of_the_room(g: list[list[int]], named: str) -> None:
    """The allowed gradients here are ``g[1, 1] = t``, ``g[1, 2] = 4 - t`` with ``t in [2, 4]``
    and 0 elsewhere.  Each routing is at max-norm distance exactly 1 from that set (a weight of
    -1 where 0 is the least allowed; 1 on a pixel that is no window's maximum; 1 at the centre
    where windows 0 and 2 need 2), so the judgement names that element and reports 1 / room."""
    s = _tie_set()
    j = s.judge({"x": np.array(g, dtype=float)}, "float64")
    assert not j.inside
    assert j.where.startswith(named), j.where
    assert j.excess == pytest.approx(1.0 / documented_room(s.cotangent, EPS64), rel=1e-9)
    assert j.excess > 1.0  # a failure is outside the room by definition


def test_the_worst_part_is_shown_when_a_negative_weight_meets_a_small_error_elsewhere() -> None:
    """``AllOf`` shows the part farthest outside, in units of each part's room: a routing weight
    of -1 (9e12 rooms of 4 unit cotangents in float64) outweighs an interval missed by 1e-6
    (3.5e7 rooms of a value 1); a weight of -1e-12 (9 rooms) does not."""
    both = AllOf((_tie_set(), Intervals("y", np.array([0.0]), np.array([1.0]))))
    y_off = {"y": np.array([1.0 + 1e-6])}
    negative = np.array([[0, 0, 0], [0, 5, -1], [0, 0, 0]], dtype=float)
    j = both.judge({"x": negative, **y_off}, "float64")
    assert not j.inside and j.where.startswith("x[1, 2]: got -1, a negative routing weight"), j.where

    # negative controls: a negative weight of a few rooms, or none, leaves the interval named
    barely = np.array([[0, 0, 0], [0, 4, -1e-12], [0, 0, 0]], dtype=float)
    assert not _tie_set().judge({"x": barely}, "float64").inside  # still a wrong routing on its own
    right = np.array([[0, 0, 0], [0, 3, 1], [0, 0, 0]], dtype=float)
    for x in (barely, right):
        j = both.judge({"x": x, **y_off}, "float64")
        assert not j.inside and j.where.startswith("y[0]: got 1"), j.where
    assert both.judge({"x": right, "y": np.array([1.0])}, "float64").inside


# ------------------------------------------------------------ found by running every mutant of the judge

# 2x4, window size 2, stride 2: two windows that share no pixel, with the single maxima (0, 1) and
# (0, 3); each is a connected group of one window.
_APART = np.array([[0.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]])


def test_a_window_alone_in_its_group_cannot_send_its_cotangent_to_another_window() -> None:
    """Windows that share no maximum cannot exchange cotangent: swapping two windows' shares
    (a stride or index bug) keeps the total, every weight non-negative and nothing off the
    maxima, and only the supply-demand condition of the lone window (its whole group) rejects it."""
    s = WindowRoutings(_APART, 2, 2, np.array([1.0, 2.0]))
    assert s._window_maxima() == [[(0, 1)], [(0, 3)]]
    right = np.array([[0.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    assert s.judge({"x": right}, "float64").inside
    swapped = np.array([[0.0, 2.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    j = s.judge({"x": swapped}, "float64")
    assert not j.inside
    assert j.where.startswith("windows [1] route 2 but their maxima [0, 3] receive only 1"), j.where
    assert j.excess == pytest.approx(1.0 / documented_room(s.cotangent, EPS64), rel=1e-9)


def test_a_non_finite_gradient_is_named_at_its_first_element() -> None:
    """NaN or inf anywhere is outside every set (infinitely far): the judgement names the first
    non-finite element in row-major order, whatever the rest of the routing."""
    s = _tie_set()
    g = np.array([[0.0, 0.0, 0.0], [0.0, 3.0, np.nan], [np.inf, 0.0, 0.0]])
    j = s.judge({"x": g}, "float64")
    assert not j.inside and j.where == "x[1, 2]: got nan" and j.excess == np.inf, j
    g[1, 2] = 1.0  # the control: the NaN replaced by the share that makes the routing right ...
    j = s.judge({"x": g}, "float64")
    assert not j.inside and j.where == "x[2, 0]: got inf", j  # ... leaves the inf named
    g[2, 0] = 0.0
    assert s.judge({"x": g}, "float64").inside


def test_the_description_says_which_windows_split_over_a_tie() -> None:
    """The allowed set in words (shown with every failure): a window with one maximum sends its
    cotangent there, a window with a tie splits it over the tied maxima."""
    text = WindowRoutings(_SHARED, 2, 1, np.array([1.0, 0.5])).describe()
    assert text == (
        "window 0 sends 1 to [0, 1]; "
        "window 1 splits 0.5 over its tied maxima [0, 1], [0, 2] (weights >= 0, sum 1); "
        "overlapping windows add up"
    )


def test_a_group_of_16_windows_is_checked_subset_by_subset() -> None:
    """A constant 5x5 input under 2x2 windows, stride 1 (every pixel a tied maximum) makes one
    group of 16 windows, the largest the judge enumerates (2^16 subsets; larger groups get only
    the sums).  Window 0 is the only window on [0, 0] but shares its other pixels, so a routing
    that starves its four pixels has the right total and no negative weight: only the subset
    check rejects it.  The control, the uniform routing, enumerates every subset (about 1 s)."""
    s = WindowRoutings(np.zeros((5, 5)), 2, 1, np.ones(16))
    starved = np.full((5, 5), 16 / 21)
    starved[:2, :2] = 0.0
    j = s.judge({"x": starved}, "float64")
    assert not j.inside
    assert j.where.startswith("windows [0] route 1 but their maxima [0, 0], [0, 1], [1, 0], [1, 1]"), j.where
    assert s.judge({"x": np.full((5, 5), 16 / 25)}, "float64").inside
