"""Finite differences of inputs whose magnitudes differ by orders: the per-element second opinion.

The runner's step ``h = eps^(1/3) max(1, max |x|)`` is one for every element.  Beside a large
element, the small ones are stepped far past their curvature, and a correct backward used to
fail (a user's ``st.floats()`` strategy drew ``[0.0, 519700.0]`` for ``tanh``).  A direction that
still fails after Richardson is measured once more with each element's own step
(:func:`gradoracle.runner.element_scaled`); these tests show that rescues correct backwards and
rescues no wrong one.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

from gradoracle import runner
from gradoracle.user_checks import GradientMismatch, check_gradients, check_gradients_at


def _tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


def _tanh_vjp(g: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    return {"x": g * (1 - np.tanh(x) ** 2)}


def _off_in_the_bulk(rel: float):  # type: ignore[no-untyped-def]
    def vjp(g: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
        return {"x": g * (1 - np.tanh(x) ** 2) * np.where(np.abs(x) < 1, 1 + rel, 1.0)}

    return vjp


SPREAD = [
    np.array([0.0, 519700.0]),  # two elements: basis directions (the full Jacobian)
    np.array([0.3, -2e9, 1e-3, 4.0]),
    np.append(np.linspace(-1.0, 1.0, 20), 3e6),  # 21 elements: random directions
]


def _no_second_opinion(monkeypatch: pytest.MonkeyPatch) -> None:
    def none(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        return
        yield  # a generator that asks for nothing

    monkeypatch.setattr(runner, "_per_element_rescue", none)
    monkeypatch.setattr(runner, "REFINEMENTS", 0)  # the step refinement is a second opinion too


@pytest.mark.parametrize("x", SPREAD, ids=["2", "4", "21"])
def test_a_correct_backward_passes_beside_a_large_element(x: np.ndarray) -> None:
    check_gradients_at(_tanh, {"x": x}, vjp=_tanh_vjp)


@pytest.mark.parametrize("x", SPREAD, ids=["2", "4", "21"])
def test_without_the_second_opinion_the_correct_backward_fails_negative_control(
    x: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_second_opinion(monkeypatch)
    with pytest.raises(GradientMismatch, match="fault: backward"):
        check_gradients_at(_tanh, {"x": x}, vjp=_tanh_vjp)


@pytest.mark.parametrize("rel", [1e-3, 1e-6])
@pytest.mark.parametrize("x", SPREAD, ids=["2", "4", "21"])
def test_a_backward_wrong_in_the_small_elements_still_fails(x: np.ndarray, rel: float) -> None:
    with pytest.raises(GradientMismatch, match="fault: backward"):
        check_gradients_at(_tanh, {"x": x}, vjp=_off_in_the_bulk(rel))


def test_a_backward_wrong_in_the_large_element_still_fails() -> None:
    def square(x: np.ndarray) -> np.ndarray:
        return np.concatenate([np.tanh(x[:1]), x[1:] ** 2])

    def wrong(g: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:  # forgets the square's 2x
        return {"x": g * np.concatenate([1 - np.tanh(x[:1]) ** 2, np.zeros(x.size - 1)])}

    with pytest.raises(GradientMismatch, match="fault: backward"):
        check_gradients_at(square, {"x": np.append([0.0], np.full(20, 1e7))}, vjp=wrong)


@pytest.mark.parametrize("seed", [0, 1])
def test_unbounded_finite_floats_pass_a_correct_backward(seed: int) -> None:
    values = st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=4).map(np.array)
    check_gradients(_tanh, {"x": values}, vjp=_tanh_vjp, wrt=["x"], examples=60, seed=seed)


def test_element_scaled_steps_each_element_at_its_own_scale() -> None:
    x = {"a": np.array([0.0, 100.0]), "b": np.array([-4.0])}
    v = {"a": np.array([0.5, 0.5]), "b": np.array([1.0])}
    w = runner.element_scaled(x, v)
    np.testing.assert_allclose(w["a"], [0.5 / 100, 0.5])
    np.testing.assert_allclose(w["b"], [4.0 / 100])
