"""A float32 check without a closed form measures its gradient's rounding before it fails.

torch's float32 ``layer_norm`` and ``normalize`` gradients are small differences of larger
terms; judged by finite differences alone they were off by ``eps_32`` times those terms, which
the allowance (``128 eps_32 max |g|``) did not hold, and every such check failed (error/tolerance
54 and 99 on the first examples).  A failing example is now judged again with ``eta``, the
spread of the float32 error ``g_32 - g_64`` of the framework's own gradient at inputs a few ulps
away (:func:`gradoracle.runner._float32_rounding_rejudge`), where the float64 gradient passes the
same finite differences.  The controls: a float32 backward 1e-3 off, one off in both dtypes,
and one whose float64 gradient is noise (which would make the spread large) still fail.
Forward mode measures the same way where it judges a user's function element by element
(inputs of at most 12 elements, :func:`gradoracle.modes._jvp_by_elements`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import gradoracle.runner as runner
from gradoracle.results import Fault, GradientMismatch
from gradoracle.user_checks import check_gradients

torch = pytest.importorskip("torch")
F = torch.nn.functional

MN = {"x": ("m", "n")}


def layer_norm(x: Any) -> Any:
    return F.layer_norm(x, x.shape[-1:])


def normalize(x: Any) -> Any:
    return F.normalize(x, dim=-1)


def _true_backward(base: Any, x: Any, g: Any) -> Any:
    """``g^T J`` of ``base`` at ``x``, by torch's own autodiff."""
    with torch.enable_grad():
        xx = x.detach().requires_grad_()
        (gx,) = torch.autograd.grad(base(xx), xx, g)
    return gx


def _altered(base: Any, in_float32: Any, in_float64: Any = None) -> Any:
    """``base`` with a backward that ``in_float32(g)`` / ``in_float64(g)`` change per dtype."""

    class Altered(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any) -> Any:
            ctx.save_for_backward(x)
            return base(x)

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            (x,) = ctx.saved_tensors
            gx = _true_backward(base, x, g)
            change = in_float32 if x.dtype == torch.float32 else in_float64
            return gx if change is None else change(gx)

    return Altered.apply


def _float32(fn: Any, seed: int = 0) -> None:
    check_gradients(fn, MN, framework="torch", dtypes=("float32",), examples=30, seed=seed)


@pytest.mark.parametrize("fn", [layer_norm, normalize], ids=["layer_norm", "normalize"])
def test_a_correct_float32_gradient_with_cancellation_passes(fn: Any) -> None:
    for seed in range(3):
        _float32(fn, seed)


def test_without_the_measurement_it_fails_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "ROUNDING_PROBES", 0)  # no probe: eta stays 0, no second judgement
    with pytest.raises(GradientMismatch) as info:
        _float32(layer_norm)
    assert info.value.fault is Fault.BACKWARD
    assert "the same example passes in float64" in str(info.value)


@pytest.mark.parametrize(
    ("in_float32", "in_float64"),
    [
        (lambda g: g * 1.001, None),  # a float32-only fault: a systematic error, not a spread
        (lambda g: g * 1.01, lambda g: g * 1.01),  # wrong in both dtypes
        # a float64 gradient of noise makes the spread of g_32 - g_64 large; its own finite
        # differences fail, so the spread is not believed
        (lambda g: g * 1.01, lambda g: g + 0.05 * torch.randn_like(g)),
    ],
    ids=["float32-only", "both", "noisy-float64"],
)
def test_a_wrong_float32_gradient_still_fails(in_float32: Any, in_float64: Any) -> None:
    with pytest.raises(GradientMismatch) as info:
        _float32(_altered(layer_norm, in_float32, in_float64))
    assert info.value.fault is Fault.BACKWARD


def test_a_function_without_cancellation_keeps_its_sensitivity() -> None:
    # tanh's float32 gradient is not a small difference: a backward 1e-4 off is caught as before
    with pytest.raises(GradientMismatch):
        _float32(_altered(torch.tanh, lambda g: g * 1.0001))
    _float32(torch.tanh)  # the control


def test_jax_layer_norm_in_float32_passes() -> None:
    jnp = pytest.importorskip("jax.numpy")

    def jax_layer_norm(x: Any) -> Any:
        m = x.mean(-1, keepdims=True)
        return (x - m) / jnp.sqrt(((x - m) ** 2).mean(-1, keepdims=True) + 1e-5)

    check_gradients(jax_layer_norm, MN, framework="jax", dtypes=("float32",), examples=30)


def test_the_measured_rounding_is_a_spread_not_an_offset() -> None:
    # the premise, measured directly: at a failing example of the old check, the float32 error
    # moves from point to point by about its own size (here within a factor of 4)
    x = np.array([[0.0, 1.0], [0.3, -0.7]], dtype=np.float32)
    u = np.array([[0.5, -0.25], [1.0, 0.75]], dtype=np.float32)

    def error(at: np.ndarray) -> np.ndarray:
        out = []
        for dt in (torch.float32, torch.float64):
            t = torch.tensor(at, dtype=dt, requires_grad=True)
            (g,) = torch.autograd.grad(layer_norm(t), t, torch.tensor(u, dtype=dt))
            out.append(g.double().numpy())
        return out[0] - out[1]

    rng = np.random.default_rng(0)
    e0 = error(x)
    spread = max(
        float(
            np.max(np.abs(error((x * (1 + rng.integers(-4, 5, x.shape) * 2.0**-23)).astype(np.float32)) - e0))
        )
        for _ in range(6)
    )
    assert 0 < float(np.max(np.abs(e0))) <= 4 * spread


# ------------------------------------------------------------------ forward mode


def _forward_altered(base: Any, scale32: float) -> Any:
    """``base`` whose forward-mode rule is ``scale32`` times the true one in float32."""

    class ForwardAltered(torch.autograd.Function):
        @staticmethod
        def forward(x: Any) -> Any:
            return base(x)

        @staticmethod
        def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
            (x,) = inputs
            ctx.save_for_backward(x)
            ctx.x = x

        @staticmethod
        def jvp(ctx: Any, t: Any) -> Any:
            _, jt = torch.func.jvp(base, (ctx.x.detach(),), (t,))
            return jt * (scale32 if ctx.x.dtype == torch.float32 else 1.0)

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            (x,) = ctx.saved_tensors
            return _true_backward(base, x, g)

    return ForwardAltered.apply


def _float32_jvp(fn: Any) -> None:
    check_gradients(fn, MN, framework="torch", dtypes=("float32",), examples=30, modes=("jvp",))


def test_forward_mode_layer_norm_in_float32_passes() -> None:
    _float32_jvp(layer_norm)  # it failed at error/tolerance 2.4
    _float32_jvp(_forward_altered(layer_norm, 1.0))  # the control of the next test, unaltered


def test_a_wrong_float32_forward_mode_rule_still_fails() -> None:
    with pytest.raises(GradientMismatch) as info:
        _float32_jvp(_forward_altered(layer_norm, 1.001))
    assert info.value.fault is Fault.FORWARD_MODE


def test_forward_mode_without_the_measurement_fails_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "ROUNDING_PROBES", 0)
    with pytest.raises(GradientMismatch):
        _float32_jvp(layer_norm)
