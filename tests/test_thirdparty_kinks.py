"""A third-party suite's non-differentiable functions, in-place updates and NumPy ufuncs, as a
user writes them (adversarial audit, branch thirdparty).

Hypothesis draws 0.0 (and ties) first, and users pass fixed inputs at kinks: there the
central difference averages the two sides, so a correct relu / abs / max backward used to
fail.  A basis direction at a kink is now judged against the one-sided slopes (a generalised
gradient passes, a value outside fails), and tied maxima are also moved together (all of
them getting the cotangent fails).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradoracle.results import GradientMismatch
from gradoracle.user_checks import check_gradients, check_gradients_at

FAST: dict[str, Any] = {"examples": 20, "seed": 0}
AT_KINKS = hnp.arrays(np.float64, st.integers(1, 6), elements=st.sampled_from([0.0, 1.0, -1.0, 2.0]))


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def vmax(x: np.ndarray) -> np.ndarray:
    return np.max(x)


def _max_first(g: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    out = np.zeros_like(x)
    out[np.argmax(x)] = g
    return {"x": out}


def _max_split(g: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    tied = x == np.max(x)
    return {"x": g * tied / tied.sum()}


def _max_all(g: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    return {"x": g * (x == np.max(x))}


RIGHT = [
    ("relu, 0 at 0", relu, lambda g, x: {"x": g * (x > 0)}),
    ("relu, 1 at 0", relu, lambda g, x: {"x": g * (x >= 0)}),
    ("relu, 1/2 at 0", relu, lambda g, x: {"x": g * np.where(x == 0, 0.5, x > 0)}),
    ("abs, sign", lambda x: np.abs(x), lambda g, x: {"x": g * np.sign(x)}),
    ("max, first", vmax, _max_first),
    ("max, split", vmax, _max_split),
]
WRONG = [
    ("relu, 2 at 0", relu, lambda g, x: {"x": g * np.where(x == 0, 2.0, x > 0)}),
    ("relu, -1 at 0", relu, lambda g, x: {"x": g * np.where(x == 0, -1.0, x > 0)}),
    ("abs, 2 at 0", lambda x: np.abs(x), lambda g, x: {"x": g * np.where(x == 0, 2.0, np.sign(x))}),
    ("max, every tied maximum gets u", vmax, _max_all),
]


@pytest.mark.parametrize(("label", "forward", "backward"), RIGHT, ids=[r[0] for r in RIGHT])
def test_a_right_backward_passes_at_kinks(label: str, forward: Any, backward: Any) -> None:
    check_gradients(forward, {"x": AT_KINKS}, vjp=backward, **FAST)
    for point in ([0.0, 1.0, -1.0], [2.0, 2.0, 1.0], [0.0, 0.0]):
        check_gradients_at(forward, {"x": point}, vjp=backward)


@pytest.mark.parametrize(("label", "forward", "backward"), WRONG, ids=[w[0] for w in WRONG])
def test_a_backward_outside_the_generalised_gradient_fails(label: str, forward: Any, backward: Any) -> None:
    with pytest.raises(GradientMismatch, match="not the derivative"):
        check_gradients(forward, {"x": AT_KINKS}, vjp=backward, **FAST)


def test_a_smooth_function_is_still_judged_by_the_central_difference() -> None:
    """Curvature is no kink: a backward 1% off on x^2 (or on a steep exp) fails at any point."""
    with pytest.raises(GradientMismatch):
        check_gradients(lambda x: x * x, {"x": AT_KINKS}, vjp=lambda g, x: {"x": 2.02 * x * g}, **FAST)
    with pytest.raises(GradientMismatch):
        check_gradients_at(lambda x: np.exp(8 * x), {"x": [1.0]}, vjp=lambda g, x: 8.08 * np.exp(8 * x) * g)
    check_gradients_at(lambda x: np.exp(8 * x), {"x": [1.0, 0.0]}, vjp=lambda g, x: 8 * np.exp(8 * x) * g)


@pytest.mark.parametrize(
    ("forward", "backward", "said"),
    [
        (lambda x: (x.__imul__(2), x * x / 4)[1], lambda g, x: {"x": 2 * x * g}, "your function"),
        (lambda x: x * x, lambda g, x: (x.__imul__(0), {"x": 2 * x * g})[1], "your backward"),
        (lambda x: x * x, lambda g, x: (g.__imul__(2), {"x": x * g})[1], "'cotangent'"),
    ],
)
def test_an_in_place_update_of_an_argument_is_named(forward: Any, backward: Any, said: str) -> None:
    with pytest.raises(GradientMismatch) as info:
        check_gradients(forward, {"x": ("n",)}, vjp=backward, examples=5, seed=0)
    text = str(info.value)
    assert said in text and "in place" in text and "x = x.copy()" in text


def test_numpy_ufuncs_take_their_inputs_by_position() -> None:
    check_gradients(np.tanh, {"x": ("n",)}, vjp=lambda g, x: g * (1 - np.tanh(x) ** 2), examples=5)
    check_gradients(np.multiply, {"a": ("n",), "b": ("n",)}, vjp=lambda g, a, b: (g * b, g * a), examples=5)
    with pytest.raises(GradientMismatch, match="not the derivative"):
        check_gradients(
            np.multiply, {"a": ("n",), "b": ("n",)}, vjp=lambda g, a, b: (g * a, g * b), examples=5
        )
