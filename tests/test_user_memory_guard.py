"""A user check whose inputs cannot fit in memory is refused before it allocates anything."""

from __future__ import annotations

import numpy as np
import pytest

from gradoracle import user_checks
from gradoracle.user_checks import UserCheckError, check_gradients, check_gradients_at


def _tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


def _tanh_vjp(g: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    return {"x": g * (1 - np.tanh(x) ** 2)}


def test_a_shape_that_cannot_fit_is_a_clear_error_not_an_allocation() -> None:
    # 10^12 float64 elements: allocating even one copy would fail or swap the machine
    with pytest.raises(UserCheckError, match=r"1,000,000,000,000 elements.*float64 copies.*smaller shapes"):
        check_gradients(_tanh, {"x": (10**12,)}, vjp=_tanh_vjp, examples=2)


def test_the_guard_counts_named_dimensions_at_max_dim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(user_checks, "available_memory", lambda: 1 << 20)  # 1 MiB
    # 16 copies x 8 bytes x 60^2 = 460,800 bytes: fits; at max_dim 100, 1.28 MB does not
    check_gradients(_tanh, {"x": ("n", "n")}, vjp=_tanh_vjp, examples=2, max_dim=60)
    with pytest.raises(UserCheckError, match=r"at the largest draw.*smaller max_dim"):
        check_gradients(_tanh, {"x": ("n", "n")}, vjp=_tanh_vjp, examples=2, max_dim=100)


def test_fixed_arrays_count_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(user_checks, "available_memory", lambda: 1 << 20)
    small, large = np.full(100, 0.5), np.full(20_000, 0.5)
    check_gradients_at(_tanh, {"x": small}, vjp=_tanh_vjp)
    with pytest.raises(UserCheckError, match="20,000 elements"):
        check_gradients_at(_tanh, {"x": large}, vjp=_tanh_vjp)
    with pytest.raises(UserCheckError, match="20,000 elements"):
        check_gradients(_tanh, {"x": large}, vjp=_tanh_vjp, examples=2)


def test_unknown_memory_turns_the_guard_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(user_checks, "available_memory", lambda: None)
    check_gradients_at(_tanh, {"x": np.full(20_000, 0.5)}, vjp=_tanh_vjp)


def test_available_memory_reads_this_machine() -> None:
    memory = user_checks.available_memory()
    assert memory is None or memory > 1 << 20
