"""A third-party test suite's hostile calls of check_gradients: what comes back from the user's
function and backward, and the arguments a user passes (adversarial audit, branch thirdparty).

Each case is a correct verdict or a clear error that names what was wrong and how to fix it;
the negative controls show that the same check still fails a wrong backward.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gradoracle.results import GradientMismatch
from gradoracle.user_checks import UserCheckError, check_gradients, check_gradients_at

FAST: dict[str, Any] = {"examples": 5, "seed": 0}


def sq(x: np.ndarray) -> np.ndarray:
    return x * x


def sq_backward(g: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    return {"x": 2 * x * g}


def sq_backward_wrong(g: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    return {"x": 2.1 * x * g}


def _message(exc_info: pytest.ExceptionInfo[BaseException]) -> str:
    return str(exc_info.value)


# ------------------------------------------------------------- what the function returns


@pytest.mark.parametrize(
    ("returned", "said"),
    [
        (lambda x: {"y": 2 * x}, "returned a dict"),
        (lambda x: None, "returned None"),
        (lambda x: "2x", "returned a str"),
        (lambda x: (x, x[:1]), "not one array"),
        (lambda x: x > 0, "returned booleans"),
        (lambda x: x * 1j, "returned complex values"),
    ],
)
def test_a_forward_returning_no_array_is_named_with_what_to_return(returned: Any, said: str) -> None:
    with pytest.raises(GradientMismatch) as info:
        check_gradients(returned, {"x": ("n",)}, vjp=lambda g, x: {"x": 2 * g}, **FAST)
    text = _message(info)
    assert said in text and ("return a" in text or "return the" in text)
    assert "isfinite" not in text  # no internal error leaks instead of the explanation


def test_a_torch_tensor_that_requires_grad_is_taken_as_its_values() -> None:
    torch = pytest.importorskip("torch")

    def forward(x: np.ndarray) -> Any:
        t = torch.as_tensor(x).requires_grad_()
        return t * t

    check_gradients(forward, {"x": ("n",)}, vjp=sq_backward, **FAST)
    with pytest.raises(GradientMismatch, match="not the derivative"):  # negative control
        check_gradients(forward, {"x": ("n",)}, vjp=sq_backward_wrong, **FAST)


# ------------------------------------------------------------- what the backward returns


@pytest.mark.parametrize(
    ("backward", "said"),
    [
        (lambda g, x: None, "your backward (lambda at test_thirdparty_contract.py:"),
        (lambda g, x: {"x": None}, "returned None for 'x'"),
        (lambda g, x: "2x", "returned a str for 'x'"),
        (lambda g, x: {"x": (2 * x * g).astype(complex)}, "returned complex values for 'x'"),
        (lambda g, x: {"y": 2 * x * g}, "returned no gradient for ['x']"),
    ],
)
def test_a_backward_returning_no_gradient_is_named_as_the_backward(backward: Any, said: str) -> None:
    with pytest.raises(GradientMismatch) as info:
        check_gradients(sq, {"x": ("n",)}, vjp=backward, **FAST)
    text = _message(info)
    assert said in text
    assert "forward(cotangent" not in text  # it used to call the backward "forward"
    assert "your function sq or your backward" in text  # the fault line names both suspects


def test_a_backward_in_another_dtype_is_the_users_to_cast_not_an_adapters() -> None:
    with pytest.raises(GradientMismatch) as info:
        check_gradients(sq, {"x": ("n",)}, vjp=lambda g, x: {"x": (2 * x * g).astype(np.float32)}, **FAST)
    text = _message(info)
    assert "has dtype float32, asked for float64" in text and "your backward" in text
    assert "adapter" not in text and "known deviation" not in text
    # the same backward in the right dtype passes
    check_gradients(sq, {"x": ("n",)}, vjp=lambda g, x: {"x": (2 * x * g).astype(x.dtype)}, **FAST)


# ------------------------------------------------------------------ the inputs given


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (None, "input 'x' is a NoneType"),
        ("abc", "input 'x' is a str"),
        (np.array([1.0 + 1j, 2.0]), "input 'x' is complex"),
        (np.array([1.0, np.nan]), "input 'x' is not finite at [1]"),
        ([1.0, float("inf")], "input 'x' is not finite at [1]"),
        (np.zeros((2, 0)), "every input is empty"),
    ],
)
def test_fixed_inputs_that_cannot_be_checked_are_refused_by_name(value: Any, said: str) -> None:
    with pytest.raises(UserCheckError, match=None) as info:
        check_gradients(sq, {"x": value}, vjp=sq_backward_wrong, **FAST)
    assert said in _message(info)
    with pytest.raises(UserCheckError) as info_at:
        check_gradients_at(sq, {"x": value}, vjp=sq_backward_wrong)
    assert said in _message(info_at)


def test_an_empty_shape_is_refused_rather_than_passing_any_backward() -> None:
    with pytest.raises(UserCheckError, match="any backward would pass"):
        check_gradients(sq, {"x": (0,)}, vjp=sq_backward_wrong, **FAST)
    # one empty input beside a non-empty one is checked (the wrong backward still fails)
    with pytest.raises(GradientMismatch):
        check_gradients(
            lambda x, b: x * x + np.sum(b),
            {"x": (3,), "b": (0,)},
            vjp=lambda g, x, b: {"x": 2.1 * x * g, "b": np.zeros(0)},
            **FAST,
        )


@pytest.mark.parametrize(
    "layout",
    [
        np.arange(12.0).reshape(3, 4)[:, ::2],  # not contiguous
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        np.array([1, 2, 3]),  # ints
        [[0.5, 1.0], [2.0, 3.0]],  # nested lists
        np.array(1.5),  # 0-d
        2.5,  # a Python float
    ],
)
def test_fixed_inputs_in_any_layout_get_a_verdict(layout: Any) -> None:
    value = np.asarray(layout)
    if isinstance(layout, np.ndarray):
        layout.setflags(write=False)
    check_gradients(sq, {"x": layout}, vjp=sq_backward, **FAST)
    check_gradients_at(sq, {"x": layout}, vjp=sq_backward)
    with pytest.raises(GradientMismatch):
        check_gradients_at(sq, {"x": value + 1.0}, vjp=sq_backward_wrong)


def test_a_param_named_like_an_input_is_refused() -> None:
    with pytest.raises(UserCheckError, match=r"\['x'\] named both as inputs and as params"):
        check_gradients(sq, {"x": (2,)}, vjp=sq_backward, params={"x": 1}, **FAST)
    with pytest.raises(UserCheckError, match="named both"):
        check_gradients_at(sq, {"x": [1.0]}, vjp=sq_backward, params={"x": 1})


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [
        ({"examples": "10"}, "examples must be an integer"),
        ({"examples": 2.5}, "examples must be an integer"),
        ({"seed": "a"}, "seed must be an integer"),
        ({"scale": float("nan")}, "scale must be a positive finite number"),
        ({"scale": 0}, "scale must be a positive finite number"),
        ({"scale": 1e200}, "scale must be a positive finite number"),
        ({"max_dim": 0}, "max_dim must be a positive integer"),
        ({"vjp": 3}, "vjp must be a function"),
    ],
)
def test_arguments_that_cannot_work_are_refused_up_front(kwargs: dict[str, Any], said: str) -> None:
    call: dict[str, Any] = {"vjp": sq_backward, **kwargs}
    with pytest.raises(UserCheckError, match=said):
        check_gradients(sq, {"x": ("n",)}, **call)
    with pytest.raises(UserCheckError, match="forward must be a function"):
        check_gradients(3, {"x": ("n",)}, vjp=sq_backward)


@pytest.mark.parametrize("scale", [1e-12, 1e-3, 1e6, 1e100])
def test_extreme_scales_draw_values_at_that_scale_and_judge_them(scale: float) -> None:
    """Values used to be drawn on a fixed grid: at scale 1e-12 every value was 0 (where x^2's
    gradient is 0, right or wrong), at 1e150 the grid overflowed."""
    seen: list[float] = []

    def forward(x: np.ndarray) -> np.ndarray:
        seen.append(float(np.max(np.abs(x))))
        return x * x

    check_gradients(forward, {"x": ("n",)}, vjp=sq_backward, scale=scale, **FAST)
    assert max(seen) > 0.1 * scale
    with pytest.raises(GradientMismatch, match="not the derivative"):
        check_gradients(sq, {"x": ("n",)}, vjp=sq_backward_wrong, scale=scale, **FAST)


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1e-17])
def test_a_right_backward_passes_at_tiny_inputs(scale: float) -> None:
    """Finite differences of x^2 at x ~ 1e-20 with the step h ~ 6e-6 evaluate h^2 ~ 4e-11, not
    x^2: their rounding is relative to that (it used to be taken relative to f(x) alone, and a
    correct backward failed).  Down to 1e-17 a backward 5% off is still caught; below, the
    difference is under what float64 finite differences resolve with that step."""
    check_gradients(sq, {"x": ("n",)}, vjp=sq_backward, scale=scale, **FAST)
    check_gradients_at(sq, {"x": [scale, -2 * scale]}, vjp=sq_backward)
    if scale >= 1e-17:
        with pytest.raises(GradientMismatch, match="not the derivative"):
            check_gradients(sq, {"x": ("n",)}, vjp=sq_backward_wrong, scale=scale, **FAST)


def test_a_check_in_an_explicit_example_draws_its_own_example() -> None:
    """``@example(...)`` on a ``@given`` test: the test case has no choices to draw from, and the
    nested check stopped with Hypothesis' internal StopTest / Frozen errors."""
    from hypothesis import Phase, example, given, settings
    from hypothesis import strategies as st

    from gradoracle.user_checks import GradOracle

    oracle = GradOracle(examples=5, seed=0)

    @settings(database=None, deadline=None, max_examples=3)
    @given(n=st.integers(1, 3))
    @example(n=2)
    def right(n: int) -> None:
        oracle.check(sq, {"x": (n,)}, vjp=sq_backward)

    right()

    @settings(database=None, deadline=None, phases=[Phase.explicit])
    @given(n=st.integers(1, 3))
    @example(n=2)
    def wrong(n: int) -> None:
        oracle.check(sq, {"x": (n,)}, vjp=sq_backward_wrong)

    with pytest.raises(GradientMismatch, match="not the derivative"):
        wrong()


def test_a_function_recursing_deeper_than_hypothesis_allows_keeps_the_callers_limit() -> None:
    """Hypothesis lowers the recursion limit to its stack depth + 2000 while a test runs; a
    function recursing 5000 deep under the caller's raised limit raised RecursionError."""
    import sys

    def deep(x: np.ndarray, depth: int = 5000) -> np.ndarray:
        return x * x if depth == 0 else deep(x, depth - 1)

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 12000))
    try:
        check_gradients(deep, {"x": ("n",)}, vjp=sq_backward, **FAST)
        with pytest.raises(GradientMismatch, match="not the derivative"):
            check_gradients(deep, {"x": ("n",)}, vjp=sq_backward_wrong, **FAST)
        assert sys.getrecursionlimit() == max(old, 12000)
    finally:
        sys.setrecursionlimit(old)


def _pool(X: np.ndarray, k: int) -> np.ndarray:
    n, m = X.shape
    return X[: n // k * k, : m // k * k].reshape(n // k, k, m // k, k).max(axis=(1, 3))


def _pool_backward(g: np.ndarray, X: np.ndarray, k: int) -> dict[str, np.ndarray]:
    out = np.zeros_like(X)
    for i in range(X.shape[0] // k):
        for j in range(X.shape[1] // k):
            window = X[i * k : (i + 1) * k, j * k : (j + 1) * k]
            a, b = np.unravel_index(np.argmax(window), window.shape)
            out[i * k + a, j * k + b] += g[i, j]
    return {"X": out}


def test_inputs_that_rarely_fit_the_identity_are_a_usage_error_not_a_failed_backward() -> None:
    """k = 5 windows with dimensions drawn in 1..5: Hypothesis' filter health check stopped the
    check, and a correct backward was reported as a failing one."""
    with pytest.raises(
        UserCheckError, match=r"could not draw your inputs.*shape rules of identity 'max-pool'"
    ):
        check_gradients(
            _pool,
            {"X": ("n", "m")},
            params={"k": 5},
            vjp=_pool_backward,
            identity="max-pool",
            max_dim=5,
            examples=10,
            seed=0,
        )
    check_gradients(_pool, {"X": (5, 10)}, params={"k": 5}, vjp=_pool_backward, identity="max-pool", **FAST)


def test_a_nested_check_is_kept_out_of_the_users_given_deadline() -> None:
    """Hypothesis' default deadline is 200 ms per example of the user's @given test; a nested
    check whose function's first call takes 300 ms (a framework compiling) took longer, and a
    correct backward failed with DeadlineExceeded (or Flaky: fast when replayed)."""
    import datetime
    import time

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from gradoracle.user_checks import GradOracle

    oracle = GradOracle(examples=5, seed=0)

    def compiles_once() -> Any:
        compiled: list[bool] = []

        def square(x: np.ndarray) -> np.ndarray:
            if not compiled:  # a framework's first call: 300 ms
                time.sleep(0.3)
                compiled.append(True)
            return x * x

        return square

    first_slow = compiles_once()

    @settings(database=None, max_examples=2, deadline=datetime.timedelta(milliseconds=200))
    @given(n=st.integers(1, 3))
    def right(n: int) -> None:
        oracle.check(first_slow, {"x": (n,)}, vjp=sq_backward)

    right()

    first_slow_too = compiles_once()

    @settings(database=None, max_examples=2, deadline=datetime.timedelta(milliseconds=200))
    @given(n=st.integers(1, 3))
    def wrong(n: int) -> None:
        oracle.check(first_slow_too, {"x": (n,)}, vjp=sq_backward_wrong)

    with pytest.raises(GradientMismatch, match="not the derivative"):
        wrong()
