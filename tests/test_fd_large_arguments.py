"""Finite differences at large arguments of a function that varies on scale 1 (sin at 1e6..1e12).

The step ``h = eps^(1/3) max(1, max |x|)`` assumes a function varies on the scale of ``|x|``.  sin
at ``x = 3.9e6`` is stepped by ``h = 23``, far past its period: ``D(h)`` and ``D(2h)`` are near 0,
and their Richardson error estimate is small by coincidence, so a correct ``cos x`` used to fail.
Such a direction now *searches* smaller steps (``runner._refine_steps``) and reads each with the
step its points actually take (``runner.snapped_steps``, ``runner.input_rounding``).  Each rule has
a negative control: without it, the correct backward fails again.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

import gradoracle
import gradoracle.runner as runner
from gradoracle.results import Fault, GradientMismatch


def cos_vjp(ct, x):
    return {"x": ct * np.cos(x)}


def off_vjp(factor: float, index: int = 0):
    def vjp(ct, x):
        g = ct * np.cos(x)
        g[index] *= factor
        return {"x": g}

    return vjp


def passes(x: np.ndarray, vjp=cos_vjp) -> bool:
    fault = None
    try:
        gradoracle.check_gradients_at(np.sin, {"x": x}, vjp=vjp)
    except GradientMismatch as e:
        fault = e.fault
    assert fault in (None, Fault.BACKWARD)
    return fault is None


# inputs where the first step's numbers failed a correct backward (each one seen, see the docstring)
LARGE = [3883652.0, 1e7 + 0.3, 288218585.14104086, 1e9, 28153626461.0, 672230245967.1665, 3138565428808.0]


@pytest.mark.parametrize("x", LARGE)
def test_correct_backward_passes_at_a_large_argument(x: float) -> None:
    assert passes(np.array([x]))


@pytest.mark.parametrize("x", LARGE[::2])
@pytest.mark.parametrize("factor", [1.5, 1.0001])
def test_wrong_backward_fails_at_a_large_argument(x: float, factor: float) -> None:
    assert not passes(np.array([x]), off_vjp(factor))


@pytest.mark.parametrize("n", [3, 40])  # basis directions, and projections
def test_many_large_elements(n: int) -> None:
    rng = np.random.default_rng(n)
    for _ in range(3):
        x = rng.uniform(-1, 1, n) * 10 ** rng.uniform(4, 12, n)
        assert passes(x)
        assert not passes(x, off_vjp(1.01, n // 2))


def test_hypothesis_draws_up_to_1e12() -> None:
    # Hypothesis looks for failing inputs: it found steps near multiples of pi, where sin(8a) ~
    # 8 sin(a) makes two steps agree on a wrong value; the search does not stop at agreement
    strategy = {"x": st.lists(st.floats(-1e12, 1e12), min_size=1, max_size=14).map(np.array)}
    for seed in range(2):
        gradoracle.check_gradients(np.sin, strategy, vjp=cos_vjp, seed=seed, examples=60)
        with pytest.raises(GradientMismatch):
            gradoracle.check_gradients(np.sin, strategy, vjp=off_vjp(1.0001), seed=seed, examples=60)


def test_unresolvable_argument_keeps_the_failure_of_a_wrong_backward() -> None:
    # at 7.8e13 floats are 0.016 apart: no step resolves cos x to the tolerance, the search ends
    # on a pass only within its error estimate, and the failure stands
    assert not passes(np.array([77576679288593.0]), off_vjp(1.0001))


def test_negative_control_without_the_search(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "MAX_REFINEMENTS", runner.REFINEMENTS)
    monkeypatch.setattr(runner, "unconverged", lambda *a: False)
    assert not passes(np.array([3883652.0]))
    assert not passes(np.array([1e9]))


def test_negative_control_without_the_rounded_step(monkeypatch: pytest.MonkeyPatch) -> None:
    # at 3.1e12 floats are 4.9e-4 apart; the step that resolves cos x (~0.002-0.02) is bent by
    # up to a tenth of itself, which the correction <g, v - s/a> takes out
    monkeypatch.setattr(runner, "input_rounding", lambda g, d, s, a: 0.0)
    assert not passes(np.array([3138565428808.0]))


def test_negative_control_restoring_the_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    # without giving back the failing numbers, a search ending on a pass within its (wide) error
    # estimate would pass a wrong backward where no step resolves it
    monkeypatch.setattr(runner, "_inconclusive", lambda r, tol: False)
    assert passes(np.array([77576679288593.0]), off_vjp(1.0001))


def test_unconverged_rule() -> None:
    # two estimates agreeing within their error estimates are consistent; disagreeing, not
    assert not runner.unconverged(1.0, 0.1, 1.05, 0.01, 0.0)
    assert runner.unconverged(0.05, 0.04, -0.85, 0.05, 1e-7)
    assert not runner.unconverged(0.05, 0.04, 0.0, 0.02, 1e-7)


def test_unresolved_failure_says_finite_differences_could_not_decide() -> None:
    # a correct backward at 7.8e13 still fails (no step resolves it), but the message shows the
    # finest step's estimate (close to cos x, not the first step's 5.8e-12) and says why
    with pytest.raises(GradientMismatch) as info:
        gradoracle.check_gradients_at(np.sin, {"x": np.array([77576679288593.0])}, vjp=cos_vjp)
    text = str(info.value)
    assert "finite differences could not decide here" in text
    assert "finite differences = 0.02670998" in text
    # an ordinary wrong backward does not get the hint
    with pytest.raises(GradientMismatch) as info:
        gradoracle.check_gradients_at(np.sin, {"x": np.array([0.5, 2.0])}, vjp=off_vjp(1.01))
    assert "could not decide" not in str(info.value)


def cos_reference(ct, x):
    return {"x": ct * np.cos(x)}


BEYOND = [np.array([77576679288593.0]), np.array([3e15]), np.array([2e14, 1.0])]


def fault_of(x: np.ndarray, vjp) -> Fault | None:
    try:
        gradoracle.check_gradients_at(np.sin, {"x": x}, vjp=vjp, reference=cos_reference)
    except GradientMismatch as e:
        return e.fault
    return None


@pytest.mark.parametrize("i", range(len(BEYOND)))
def test_undecided_differences_beside_a_closed_form(i: int) -> None:
    # beyond what any step resolves, the closed form (reference=) judges: a backward matching it
    # passes, one 1% off is `backward`; the user's reference is not blamed for the undecided
    # finite differences
    assert fault_of(BEYOND[i], cos_vjp) is None
    assert fault_of(BEYOND[i], off_vjp(1.01)) is Fault.BACKWARD


def test_negative_control_undecided_differences_blame_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "settle_undecided", lambda *a: None)
    assert fault_of(BEYOND[0], cos_vjp) is Fault.ORACLE
