"""What an outside team adopting gradoracle from the README met in its first two hours (probed
from a fresh project in /tmp with its own conftest, profiles and torch / JAX code), and what
gradoracle now says instead.

- A function that does not repeat itself on the same input (dropout in a module's training
  mode, a global generator, a call counter) was blamed on the wrong thing: "your backward ...,
  called twice on the same input, gave different values" when the outputs differed, with
  advice meant for adapters ("declare nondeterminism_rtol on its adapter"); in forward mode
  "your function ... computes another function than finite differences" (the reference forward
  of a check without a catalogue identity is the function itself, called again); and a failure
  that passed when Hypothesis replayed it spoke of "the adapter" and "adapter vjp:forward".
  Each now names the function, says that two calls on the same input returned different
  outputs, and says what to do (``module.eval()``, fix the randomness inside the function).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from gradoracle.results import REPEAT_HINT, Fault, GradientMismatch
from gradoracle.user_checks import check_gradients

# ---------------------------------------------------------------- functions that do not repeat themselves


def counting_function() -> Any:
    """``x * k`` with ``k`` the number of calls so far: not a function of ``x`` alone."""
    calls = itertools.count(1)

    def stateful(x: np.ndarray) -> np.ndarray:
        return x * float(next(calls))

    return stateful


def once_off_function() -> Any:
    """``x`` on every call but the third, which returns ``x + 1``: a failure that passes when
    Hypothesis replays it (its ``Flaky``)."""
    calls = itertools.count(1)

    def once_off(x: np.ndarray) -> np.ndarray:
        return x + 1.0 if next(calls) == 3 else x

    return once_off


def identity_backward(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    return g


def test_a_stateful_function_is_named_not_its_backward() -> None:
    fn = counting_function()
    with pytest.raises(GradientMismatch) as info:
        check_gradients(fn, {"x": ("n",)}, vjp=lambda g, x: {"x": g}, examples=3)
    message = str(info.value)
    assert info.value.fault == Fault.NONDETERMINISTIC, message
    assert (
        "fault: nondeterministic - your function stateful, called twice on the same input, returned"
        in message
    )
    assert REPEAT_HINT in message
    assert "nondeterminism_rtol" not in message  # adapter advice, meaningless for a user's function


def test_a_deterministic_function_passes() -> None:  # the control: the same check, no state
    results = check_gradients(lambda x: 2.0 * x, {"x": ("n",)}, vjp=lambda g, x: {"x": 2.0 * g}, examples=3)
    assert [r.verdict for r in results] == ["pass"]


def test_a_failure_that_passes_on_replay_speaks_of_the_users_function() -> None:
    with pytest.raises(GradientMismatch) as info:
        check_gradients(once_off_function(), {"x": ("n",)}, vjp=identity_backward, examples=3)
    message = str(info.value)
    assert info.value.fault == Fault.NONDETERMINISTIC, message
    assert "passed when replayed on the same input, so your function once_off or your backward" in message
    assert "adapter" not in message  # it said "the adapter does not give the same answer twice"
    assert REPEAT_HINT in message


def test_forward_mode_names_a_function_that_does_not_repeat_itself() -> None:
    torch = pytest.importorskip("torch")
    calls = itertools.count(1)

    def stateful(x: Any) -> Any:
        return x * float(next(calls))

    with pytest.raises(GradientMismatch) as info:
        check_gradients(stateful, {"x": ("n",)}, framework="torch", modes="jvp", examples=3)
    message = str(info.value)
    assert "called twice on the same input, returned different outputs" in message
    assert "vs itself, called again on the same input" in message
    assert "computes another function than finite differences" not in message
    assert REPEAT_HINT in message
    # the control: the same check of a function of x alone passes
    results = check_gradients(
        lambda x: 2.0 * torch.tanh(x), {"x": ("n",)}, framework="torch", modes="jvp", examples=3
    )
    assert [r.verdict for r in results] == ["pass"]


def test_a_catalogue_forward_mismatch_keeps_its_words() -> None:
    """With ``identity=`` the reference forward is the notes' one: a different function is a
    forward fault against it, not a function that fails to repeat itself."""
    with pytest.raises(GradientMismatch) as info:
        check_gradients(
            lambda x: 2.0 * np.tanh(x),
            vjp=lambda g, x: {"x": 2.0 * g * (1 - np.tanh(x) ** 2)},
            identity="elementwise-tanh",
            examples=3,
        )
    message = str(info.value)
    assert info.value.fault == Fault.FORWARD, message
    assert "computes another function than the notes' closed form of elementwise-tanh" in message
    assert REPEAT_HINT not in message
