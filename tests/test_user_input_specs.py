"""How ``check_gradients`` reads an input spec: NumPy integer sizes are sizes (a shape computed
with ``np.prod`` must not become a one-element value), empty dimension names and a plain NumPy
function without a backward are refused with what to give instead."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gradoracle.user_checks import UserCheckError, check_gradients


def _seen_shapes(spec: Any) -> set[tuple[int, ...]]:
    seen: set[tuple[int, ...]] = set()

    def forward(x: np.ndarray) -> np.ndarray:
        seen.add(tuple(np.shape(x)))
        return np.sin(x)

    results = check_gradients(forward, {"x": spec}, vjp=lambda g, x: {"x": g * np.cos(x)}, examples=3, seed=0)
    assert all(r.verdict.value == "pass" for r in results)
    return seen


@pytest.mark.parametrize("spec", [(np.int64(3), 2), (np.int32(3), np.uint8(2)), np.int64(3) * np.int64(2)])
def test_numpy_integer_sizes_are_a_shape(spec: Any) -> None:
    expected = (6,) if np.ndim(spec) == 0 else (3, 2)
    assert _seen_shapes(spec) == {expected}


def test_python_int_sizes_are_the_same_shape_and_floats_are_a_value() -> None:
    assert _seen_shapes((3, 2)) == {(3, 2)}  # the control: what the NumPy sizes must match
    assert _seen_shapes((2.5, 1.0)) == {(2,)}  # a tuple of floats is a fixed value, not a shape


@pytest.mark.parametrize("spec", [("n", ""), ("  ", 3)])
def test_an_empty_dimension_name_is_refused(spec: tuple[Any, ...]) -> None:
    with pytest.raises(UserCheckError, match="empty dimension name"):
        check_gradients(lambda x: x, {"x": spec}, vjp=lambda g, x: {"x": g}, examples=1)


def test_a_negative_numpy_size_is_refused() -> None:
    with pytest.raises(UserCheckError, match="negative dimension"):
        check_gradients(lambda x: x, {"x": (np.int64(-2),)}, vjp=lambda g, x: {"x": g}, examples=1)


def test_framework_numpy_without_a_backward_says_numpy_has_no_autodiff() -> None:
    with pytest.raises(UserCheckError, match="NumPy has no autodiff, so it needs vjp="):
        check_gradients(lambda x: x, {"x": ("n",)}, framework="numpy", examples=1)
    with pytest.raises(UserCheckError) as info:  # without framework= the hint would not apply
        check_gradients(lambda x: x, {"x": ("n",)}, examples=1)
    assert "NumPy has no autodiff" not in str(info.value)
