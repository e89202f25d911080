"""Forward mode and second order at large arguments (sin at 1e8..2e10; torch).

The modes' refinement (``modes._fd_check``) searches smaller steps as reverse mode's does
(``runner._refine_steps``, tested in ``test_fd_large_arguments.py``), measuring a step the inputs'
floats bend along the step they take, against the checked value there (``along``).
"""

from __future__ import annotations

import numpy as np
import pytest

import gradoracle
import gradoracle.runner as runner
from gradoracle.results import Fault, GradientMismatch

torch = pytest.importorskip("torch")


class _SinWithJvp(torch.autograd.Function):
    factor = 1.0

    @staticmethod
    def forward(x):
        return torch.sin(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.cos(x)

    @staticmethod
    def jvp(ctx, t):
        (x,) = ctx.saved_tensors
        return _SinWithJvp.factor * t * torch.cos(x)


def _modes_fault(x: np.ndarray, mode: str, fn=None) -> Fault | None:
    try:
        gradoracle.check_gradients_at(
            fn or torch.sin, {"x": x}, framework="torch", identity="elementwise-sin", mode=mode
        )
    except GradientMismatch as e:
        return e.fault
    return None


MODES_LARGE = [np.array([6.4e8, -3.1e9, 2.2e10]), np.array([-7.7e9, 1.3e8, 4.1e9])]


@pytest.mark.parametrize("mode", ["jvp", "hvp"])
@pytest.mark.parametrize("i", range(len(MODES_LARGE)))
def test_forward_mode_and_second_order_at_large_arguments(mode: str, i: int) -> None:
    # the closed form's own check against finite differences used to fail here (an `oracle`
    # finding, "a bug in gradoracle"): the modes' refinement searches as reverse mode's does
    assert _modes_fault(MODES_LARGE[i], mode) is None


@pytest.mark.parametrize("i", range(len(MODES_LARGE)))
def test_wrong_forward_mode_at_large_arguments_is_forward_mode(
    monkeypatch: pytest.MonkeyPatch, i: int
) -> None:
    monkeypatch.setattr(_SinWithJvp, "factor", 1.01)
    assert _modes_fault(MODES_LARGE[i], "jvp", _SinWithJvp.apply) is Fault.FORWARD_MODE


def test_negative_control_modes_without_the_search(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "MAX_REFINEMENTS", runner.REFINEMENTS)
    monkeypatch.setattr(runner, "unconverged", lambda *a: False)
    monkeypatch.setattr(runner, "settle_undecided", lambda *a: None)
    assert any(_modes_fault(x, "jvp") is Fault.ORACLE for x in MODES_LARGE)
