"""A gradient element wrong where another element of the gradient is orders larger.

With a few inputs (basis directions: the finite differences give ``u^T J`` element by element)
each element is judged by its own size.  Until session 17 the allowance of every direction
was floored at ``fd_rtol * max_j |g_j|``, so beside ``x = 1e2`` in ``x^3 / 3`` (a gradient element
of 1e4) an element of 1e-3 could be 1.5 times too large and pass; and a second opinion (each
element's own step ``h w_i``, or a step 8 times smaller) could overturn a failure by a pass too
noisy to have seen it: the rounding of ``s(t) = <u, f(x + t v)>``, set by outputs of 1e8, over a
step of 6e-6.  These tests pin both: the wrong element fails, the correct backward passes, and
each rule's negative control shows the wrong one passing without it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradoracle import runner
from gradoracle.tolerances import Tolerance, tolerance_for
from gradoracle.user_checks import GradientMismatch, check_gradients_at


def _square(x: np.ndarray) -> np.ndarray:
    return x**2


def _cube(x: np.ndarray) -> np.ndarray:
    return x**3 / 3


def _square_vjp(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    return g * 2 * x


def _cube_vjp(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    return g * x**2


def _wrong_at(vjp, i: int, factor: float):  # type: ignore[no-untyped-def]
    def wrong(g: np.ndarray, x: np.ndarray) -> np.ndarray:
        out = np.array(vjp(g, x), dtype=np.float64)
        out[i] *= factor
        return out

    wrong.__name__ = f"wrong_{vjp.__name__}"
    return wrong


# (forward, correct vjp, x, index of the element made wrong); every x has few enough elements
# for basis directions, and one element orders larger than the one made wrong
CASES = {
    "cube beside 1e2": (_cube, _cube_vjp, np.array([0.3, 100.0, -0.4, 0.7]), 0),
    "square beside 1e4": (_square, _square_vjp, np.array([0.35, 0.82, 1e4, -1.3, 0.9, 0.45]), 0),
    "square beside -1e6": (_square, _square_vjp, np.array([0.6, -1e6, 0.2]), 2),
}


@pytest.mark.parametrize("name", CASES)
def test_a_correct_backward_passes(name: str) -> None:
    f, vjp, x, _ = CASES[name]
    for seed in range(3):
        check_gradients_at(f, {"x": x}, vjp=vjp, seed=seed)


@pytest.mark.parametrize("factor", [1.5, 1.01])
@pytest.mark.parametrize("name", CASES)
def test_an_element_wrong_beside_a_far_larger_one_fails_as_the_backward(name: str, factor: float) -> None:
    f, vjp, x, i = CASES[name]
    for seed in range(3):
        with pytest.raises(GradientMismatch) as info:
            check_gradients_at(f, {"x": x}, vjp=_wrong_at(vjp, i, factor), seed=seed)
        assert "fault: backward" in str(info.value)
        assert f"element [{i}]" in str(info.value)


def test_with_the_largest_element_floor_the_wrong_element_passes_negative_control(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The old allowance, ``fd_rtol * max(sum |g_i v_i|, max |g| max |v|)``: the wrong element hides
    under the large one's size (the test above is what the floor's removal changed)."""
    f, vjp, x, i = CASES["cube beside 1e2"]
    gmax = float(np.max(np.abs(_cube_vjp(np.ones(4), x))))
    real = Tolerance.fd_allowed

    def floored(self, magnitude: float, error_estimate: float = 0.0) -> float:  # type: ignore[no-untyped-def]
        return real(self, max(magnitude, gmax), error_estimate)

    monkeypatch.setattr(Tolerance, "fd_allowed", floored)
    check_gradients_at(f, {"x": x}, vjp=_wrong_at(vjp, i, 1.5), seed=0)


def test_a_noisy_second_opinion_does_not_overturn_a_failure_negative_control(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without :func:`gradoracle.runner._resolves` the per-element step of the small element
    (``6e-6``, against outputs of 1e8) passes the wrong backward that the common step failed."""
    f, vjp, x, i = CASES["square beside 1e4"]
    wrong = _wrong_at(vjp, i, 1.5)
    with pytest.raises(GradientMismatch):
        check_gradients_at(f, {"x": x}, vjp=wrong, seed=1)
    monkeypatch.setattr(runner, "_resolves", lambda *args: True)
    check_gradients_at(f, {"x": x}, vjp=wrong, seed=1)


def test_resolves_carries_the_miss_by_the_directions_magnitudes() -> None:
    tol = tolerance_for("float64")
    d = {"x": np.array([1.0, 0.0])}
    w = {"x": np.array([1e-4, 0.0])}
    r = {"p": 1.0, "value": 0.9, "mag": 1.0, "d": d}
    quiet = {"mag": 1e-4, "extra": 1e-9, "rounding": 1e-9}
    noisy = {"mag": 1e-4, "extra": 1e-4, "rounding": 1e-4}  # rounding 1e-4 > the carried miss 1e-5
    assert runner._resolves(quiet, r, w, tol)
    assert not runner._resolves(noisy, r, w, tol)
    # room for the gradient's own rounding is not the measurement's noise
    assert runner._resolves({"mag": 1e-4, "extra": 1e-4, "rounding": 1e-9}, r, w, tol)
    # g vanishing along v: the direction's geometry carries the miss
    r0 = {"p": 0.0, "value": 0.1, "mag": 0.0, "d": d}
    assert runner._resolves({"mag": 0.0, "extra": 1e-9, "rounding": 1e-9}, r0, w, tol)
    assert not runner._resolves({"mag": 0.0, "extra": 1e-4, "rounding": 1e-4}, r0, w, tol)


def test_a_clear_miss_is_a_failure_by_four_allowances_with_a_converged_estimate() -> None:
    tol = tolerance_for("float64")
    clear = {"p": 1.5, "value": 1.0, "mag": 1.5, "extra": 1e-12, "error": 1e-6}
    assert runner._clear_miss(clear, tol) == pytest.approx(0.5)
    narrow = {"p": 1.0 + 1e-7, "value": 1.0, "mag": 1.0, "extra": 1e-12, "error": 0.0}
    assert runner._clear_miss(narrow, tol) == math.inf
    # D(h) ~ 1/h at a step far past the function's scale: the estimate is half the value
    unconverged = {"p": 5.6e-12, "value": 1.2e-12, "mag": 5.6e-12, "extra": 1e-13, "error": 6e-13}
    assert runner._clear_miss(unconverged, tol) == math.inf


def test_a_refinement_too_noisy_to_see_the_miss_stops_rather_than_overturns() -> None:
    # failing numbers held with a miss of 1e-3; the smaller step passes within a fast bound of 2e-3
    assert runner.finer_step_taken(True, 1e-4, 3e-3, 2e-3, 1e-6, 1e-2, held=1e-3) is None
    # the same pass with a fast bound below the held miss overturns the failure, as before
    assert runner.finer_step_taken(True, 1e-4, 6e-4, 5e-4, 1e-6, 1e-2, held=1e-3) is True
    # without a held miss (forward mode's older callers): the pass overturns
    assert runner.finer_step_taken(True, 1e-4, 3e-3, 2e-3, 1e-6, 1e-2) is True
    assert runner.finer_step_taken(True, 1e-4, 3e-3, 2e-3, 1e-6, 1e-2, held=math.inf) is True


def _tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


def _tanh_vjp(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    return g * (1 - np.tanh(x) ** 2)


#: tanh at 13 beside 2.6e16: the common step (1.5e11) puts the direction far past tanh's
#: curvature and it misses by one allowance; the element's own step cannot resolve 5.6e-12 either
NARROW = np.array([13.0, 2.5588981058706076e16])


def test_a_narrow_failure_is_still_overturned_by_a_pass() -> None:
    check_gradients_at(_tanh, {"x": NARROW}, vjp=_tanh_vjp, seed=0)
    # four allowances off, but at a step (4e11) where D(h) ~ 1/h: not converged, not held
    for seed in range(4):
        check_gradients_at(_tanh, {"x": np.array([13.0, 7.407339881653194e16])}, vjp=_tanh_vjp, seed=seed)
    # thirteen elements, twelve of them 0 beside 7e13 (projections): the per-element step decides
    zeros = np.array([0.0] * 12 + [74173448708589.0])
    for seed in range(3):
        check_gradients_at(_tanh, {"x": zeros}, vjp=_tanh_vjp, seed=seed)


def test_holding_a_narrow_failure_against_a_noisy_pass_fails_a_correct_backward_negative_control(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Were every failure held (not only a clear one, by FINER_MARGIN allowances), the rescue's
    noisy pass could not overturn this narrow one, and the correct backward would fail."""
    monkeypatch.setattr(runner, "_clear_miss", lambda r, tol: abs(r["p"] - r["value"]))
    with pytest.raises(GradientMismatch):
        check_gradients_at(_tanh, {"x": NARROW}, vjp=_tanh_vjp, seed=0)
