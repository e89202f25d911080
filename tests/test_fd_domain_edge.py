"""Inputs inside the function's domain but within a step of its edge (``log`` at ``x = 1e-6``).

The step ``h = eps^(1/3) max(1, max |x|)`` is 6e-6 for inputs below 1, so ``log(x - h)`` is nan for
``x = 1e-6`` and the finite difference judges nothing.  Until session 17 that was reported as an
input-domain finding ("keep the inputs more than a step inside the domain") although every
input was inside it; now such a direction tries steps 8, 64, ... times smaller
(:func:`gradoracle.runner._domain_safe_steps`) and is judged where one is finite.
"""

from __future__ import annotations

import numpy as np
import pytest

from gradoracle import runner
from gradoracle.results import Fault
from gradoracle.user_checks import GradientMismatch, check_gradients, check_gradients_at


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):  # the steps across the edge are the point
        return np.log(x)


def _log_vjp(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    return g / x


def _sqrt(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.sqrt(x)


def _sqrt_vjp(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    return g / (2 * np.sqrt(x))


def _scaled(vjp, factor: float):  # type: ignore[no-untyped-def]
    def wrong(g: np.ndarray, x: np.ndarray) -> np.ndarray:
        return factor * vjp(g, x)

    wrong.__name__ = f"wrong_{vjp.__name__}"
    return wrong


NEAR = {
    "log at 1e-6..3e-6 (basis)": (
        _log,
        _log_vjp,
        1e-6 + 1e-6 * np.abs(np.random.default_rng(0).normal(size=5)),
    ),
    "log at 1e-6..3e-6 (projections)": (
        _log,
        _log_vjp,
        1e-6 + 1e-6 * np.abs(np.random.default_rng(1).normal(size=30)),
    ),
    "sqrt at 1e-8 beside 1": (_sqrt, _sqrt_vjp, np.array([1e-8, 1.0, 0.25])),
}


@pytest.mark.parametrize("name", NEAR)
def test_a_correct_backward_near_the_domains_edge_passes(name: str) -> None:
    f, vjp, x = NEAR[name]
    for seed in range(2):
        check_gradients_at(f, {"x": x}, vjp=vjp, seed=seed)


@pytest.mark.parametrize("factor", [1.5, 1.01])
@pytest.mark.parametrize("name", NEAR)
def test_a_wrong_backward_near_the_domains_edge_fails_as_the_backward(name: str, factor: float) -> None:
    f, vjp, x = NEAR[name]
    with pytest.raises(GradientMismatch) as info:
        check_gradients_at(f, {"x": x}, vjp=_scaled(vjp, factor))
    assert "fault: backward" in str(info.value)


def test_without_smaller_steps_it_is_an_input_domain_finding_negative_control(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    f, vjp, x = NEAR["log at 1e-6..3e-6 (basis)"]
    monkeypatch.setattr(runner, "DOMAIN_CUTS", 0)
    with pytest.raises(GradientMismatch) as info:
        check_gradients_at(f, {"x": x}, vjp=vjp)
    assert "fault: input-domain" in str(info.value)


def test_an_input_closer_to_the_edge_than_the_smallest_step_is_still_input_domain() -> None:
    # sqrt at 1e-30: every step down to h / 8^6 ~ 2e-11 crosses 0
    with pytest.raises(GradientMismatch) as info:
        check_gradients_at(_sqrt, {"x": np.array([1e-30, 1.0])}, vjp=_sqrt_vjp)
    assert "fault: input-domain" in str(info.value)


def test_drawn_inputs_near_the_edge_are_judged() -> None:
    """A strategy drawing positive values down to 1e-7 (where ``h`` crosses 0): the check runs
    and passes a correct backward, and fails a wrong one as the backward."""
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    small = arrays(np.float64, (4,), elements=st.floats(1e-7, 1e-5))
    results = check_gradients(_log, {"x": small}, vjp=_log_vjp, examples=15)
    assert all(r.fault in (None, Fault.NONE) for r in results)
    with pytest.raises(GradientMismatch) as info:
        check_gradients(_log, {"x": small}, vjp=_scaled(_log_vjp, 1.01), examples=15)
    assert "fault: backward" in str(info.value)
