"""A third-party suite checking its torch.autograd.Function / jax.custom_vjp backward with
check_gradients(framework=...): right and wrong backwards, and functions that return what
the framework's autodiff cannot use (adversarial audit, branch thirdparty)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gradoracle.results import GradientMismatch
from gradoracle.user_checks import UserCheckError, check_gradients

FAST: dict[str, Any] = {"examples": 5, "seed": 0}


def _torch_functions() -> tuple[Any, Any]:
    torch = pytest.importorskip("torch")

    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any) -> Any:
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            (x,) = ctx.saved_tensors
            return 2 * x * g

    class SquareWrong(Square):
        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            (x,) = ctx.saved_tensors
            return 2.1 * x * g

    return Square, SquareWrong


def test_a_torch_function_backward_right_passes_and_wrong_fails() -> None:
    square, wrong = _torch_functions()
    check_gradients(lambda x: square.apply(x).sum(), {"x": ("n",)}, framework="torch", **FAST)
    with pytest.raises(GradientMismatch, match="torch backward of your function is not the derivative"):
        check_gradients(lambda x: wrong.apply(x).sum(), {"x": ("n",)}, framework="torch", **FAST)


@pytest.mark.parametrize(
    ("returned", "said"),
    [
        (lambda x: (x * x, x), "returned a tuple: return one torch array; several outputs"),
        (lambda x: {"y": x * x}, "returned a dict: return one torch array"),
        (lambda x: None, "returned None: return one torch array"),
        (lambda x: x.detach().numpy() ** 2, "returned a ndarray from torch arrays"),
        (lambda x: float((x * x).sum()), "returned a float from torch arrays"),
    ],
)
def test_a_torch_function_returning_no_tensor_is_named(returned: Any, said: str) -> None:
    pytest.importorskip("torch")
    with pytest.raises(GradientMismatch) as info:
        check_gradients(returned, {"x": ("n",)}, framework="torch", **FAST)
    assert said in str(info.value)
    assert "has no attribute 'detach'" not in str(info.value)


def test_a_jax_custom_vjp_right_passes_wrong_fails_and_numpy_inside_is_named() -> None:
    jax = pytest.importorskip("jax")

    def make(factor: float) -> Any:
        @jax.custom_vjp
        def square(x: Any) -> Any:
            return x * x

        square.defvjp(lambda x: (x * x, x), lambda x, g: (factor * x * g,))
        return square

    check_gradients(make(2.0), {"x": ("n",)}, framework="jax", **FAST)
    with pytest.raises(GradientMismatch, match="jax backward of your function is not the derivative"):
        check_gradients(make(2.1), {"x": ("n",)}, framework="jax", **FAST)
    with pytest.raises(GradientMismatch, match="returned a ndarray from jax arrays"):
        check_gradients(lambda x: np.sin(x), {"x": ("n",)}, framework="jax", **FAST)
    with pytest.raises(GradientMismatch, match="returned a dict: return one jax array"):
        check_gradients(lambda x: {"y": x}, {"x": ("n",)}, framework="jax", **FAST)


def test_a_framework_that_is_no_adapter_is_refused() -> None:
    with pytest.raises(UserCheckError, match="framework must be 'torch'"):
        check_gradients(lambda x: x * x, {"x": ("n",)}, framework=object(), **FAST)


def test_a_session_mode_the_framework_cannot_run_is_left_out_not_failed() -> None:
    """--gradoracle-mode jvp for the session: a torch.autograd.Function without jvp() or a
    jax.custom_vjp has no forward mode; that mode is left out (a SKIP result with the reason),
    as a mode the adapter lacks is.  A custom_jvp with a wrong jvp still fails."""
    from gradoracle.results import Verdict
    from gradoracle.user_checks import GradOracle

    jax = pytest.importorskip("jax")
    session = GradOracle(examples=5, seed=0, modes=("vjp", "jvp"))

    @jax.custom_vjp
    def square(x: Any) -> Any:
        return x * x

    square.defvjp(lambda x: (x * x, x), lambda x, g: (2 * x * g,))
    results = session.check(square, {"x": ("n",)}, framework="jax")
    left_out = [r for r in results if r.verdict == Verdict.SKIP]
    assert len(left_out) == 1 and "mode jvp left out" in left_out[0].message
    assert "custom_vjp" in left_out[0].message

    @jax.custom_jvp
    def square_jvp(x: Any) -> Any:
        return x * x

    square_jvp.defjvp(lambda primals, tangents: (primals[0] ** 2, 2.1 * primals[0] * tangents[0]))
    with pytest.raises(GradientMismatch):
        session.check(square_jvp, {"x": ("n",)}, framework="jax")
    with pytest.raises(GradientMismatch):  # asked for explicitly: the mode cannot run, an error
        check_gradients(square, {"x": ("n",)}, framework="jax", modes=("jvp",), **FAST)
