"""A finite-difference failure whose allowance is mostly the finite differences' own error says so.

A user's forward that computes in float32 inside a float64 check is not smooth at the step's
scale: its finite differences are noise, and the message used to blame the backward alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gradoracle import check_gradients
from gradoracle.runner import GradientMismatch


def _float32_inside(x: np.ndarray) -> np.ndarray:
    return np.sin(np.asarray(x, dtype=np.float32)).astype(np.float64)


def _smooth(x: np.ndarray) -> np.ndarray:
    return np.sin(x)


def _message(forward: Any, factor: float) -> str:
    with pytest.raises(GradientMismatch) as info:
        check_gradients(
            forward, {"x": np.linspace(-2, 2, 20)}, vjp=lambda u, x: {"x": factor * u * np.cos(x)}
        )
    return str(info.value)


def test_noisy_finite_differences_are_named_in_the_message() -> None:
    text = _message(_float32_inside, 1.0)
    assert "hint: the finite differences are noisy here" in text
    assert "reference=" in text


def test_a_plainly_wrong_backward_gets_no_noise_hint() -> None:
    # negative control: a smooth forward, a backward off by a factor 2
    assert "finite differences are noisy" not in _message(_smooth, 2.0)
