"""An exception raised in the oracle's own reference code is the oracle's fault, not the adapter's.

Every example's evaluation runs inside the adapter's guard, so any exception used to read as
"the adapter broke its contract", including one raised by a closed form of the catalogue (found
when a closed form of the linear layer without bias raised KeyError: it read "fault: adapter",
with a hint telling the adapter to accept b=None).  Exceptions thrown in from adapter calls are
marked (:func:`gradoracle.batching.raised_by_adapter`); one that is not, raised in reference code,
is ``fault: oracle``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gradoracle import batching, runner
from gradoracle.adapters import load_adapter
from gradoracle.adapters.numpy_engine import NumpyEngineAdapter, TapeOps
from gradoracle.identities import linear_layers
from gradoracle.results import Fault, Verdict
from gradoracle.selftest.kill_matrix import mutant_settings

FAST = mutant_settings(5, 0)


def _broken_closed_form(*args: Any) -> Any:
    """A closed form that raises inside the catalogue's code (KeyError 'X' in ``_grad_linear``)."""
    return linear_layers._grad_linear({}, {}, np.zeros(1))


@pytest.mark.parametrize(("mode", "part"), [("vjp", "_bias_grad"), ("jvp", "_bias_tangent")])
def test_a_closed_form_that_raises_is_an_oracle_fault(
    mode: str, part: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    monkeypatch.setattr(linear_layers, part, _broken_closed_form)
    adapter = NumpyEngineAdapter() if mode == "vjp" else load_adapter("torch")
    result = runner.check("linear-layer", adapter, "float64", FAST, mode)
    assert result.verdict == Verdict.ERROR and result.fault == Fault.ORACLE, result.message
    assert "gradoracle's own reference code raised KeyError: 'X'" in result.message, result.message
    assert "linear_layers.py" in result.message and "hint:" not in result.message, result.message


class _Raises(TapeOps):
    """An adapter whose linear builds on gradoracle's reference ops, and calls them wrongly: the
    exception is raised inside reference code, from an adapter call."""

    def linear(self, x: Any, w: Any, b: Any) -> Any:
        from gradoracle import reference_layers

        return reference_layers.linear(np.ones((2, 5)), np.ones((4, 3)), None)


def test_an_adapter_op_that_raises_inside_the_identity_forward_stays_the_adapter_fault() -> None:
    # the adapter's linear is called from the identity's forward, whose frame lies in the
    # catalogue's code too; it came out of an adapter call, so it is the adapter's
    adapter = NumpyEngineAdapter(name="raises")
    adapter._ops = _Raises(adapter.rules)
    result = runner.check("linear-layer", adapter, "float64", FAST, "vjp")
    assert result.verdict == Verdict.ERROR and result.fault == Fault.ADAPTER, result.message
    assert "own reference code" not in result.message


def test_an_adapter_error_escaping_an_evaluation_is_marked_as_the_adapters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # an evaluation that lets an adapter call's exception escape: it was raised inside
    # gradoracle's reference code (the adapter builds on it), and the mark alone keeps it the
    # adapter's; without the mark (negative control) it would read as the oracle's own
    adapter = NumpyEngineAdapter(name="raises")
    adapter._ops = _Raises(adapter.rules)
    fn = runner.forward_for(linear_layers.RECORDS[0], {"bias": True})
    point = {"X": np.ones((2, 3)), "W": np.ones((4, 3)), "b": np.ones(4)}

    def evaluation() -> Any:
        yield batching.ForwardCall(fn, [point], "float64")

    def escaped() -> BaseException:
        (result,) = batching.drive(adapter, [evaluation()])
        assert isinstance(result, ValueError)
        return result

    assert runner.oracle_own_error(escaped()) is None
    monkeypatch.setattr(batching, "_adapter_raised", lambda exc: exc)
    where = runner.oracle_own_error(escaped())
    assert where is not None and "reference_layers.py" in where


def test_the_mark_follows_an_exception_raised_while_handling_an_adapter_error() -> None:
    inner = batching._adapter_raised(ValueError("from the adapter"))

    def wraps() -> None:
        try:
            raise inner
        except ValueError as exc:
            raise RuntimeError("wrapped") from exc

    with pytest.raises(RuntimeError, match="wrapped") as outer:
        wraps()
    assert batching.raised_by_adapter(outer.value)
    assert not batching.raised_by_adapter(RuntimeError("the oracle's own"))


def test_an_exception_outside_reference_code_is_not_called_the_oracles() -> None:
    # an error in evaluation code that reads adapter results (here: a plain function of this
    # file) keeps the adapter's blame; only frames of the catalogue's reference code decide
    def here() -> None:
        np.asarray([1.0]).reshape(3)

    with pytest.raises(ValueError, match="reshape") as info:
        here()
    assert runner.oracle_own_error(info.value) is None
    with pytest.raises(KeyError) as raised:
        linear_layers._bias_grad({}, {"bias": False}, np.zeros(2), "a")
    where = runner.oracle_own_error(raised.value)
    assert where is not None and where.startswith("linear_layers.py:") and where.endswith("in _bias_grad")


def test_an_exception_that_refuses_attributes_is_still_known_as_the_adapters() -> None:
    # a hostile adapter's exception whose __setattr__ raises cannot carry the mark; it is
    # remembered by identity instead (and one never thrown in is not the adapter's)
    class Sealed(RuntimeError):
        def __setattr__(self, name: str, value: Any) -> None:
            raise AttributeError("sealed")

    thrown, other = Sealed("from the adapter"), Sealed("never thrown in")
    assert batching._adapter_raised(thrown) is thrown
    assert batching.raised_by_adapter(thrown) and not batching.raised_by_adapter(other)


def test_a_users_function_that_raises_is_not_called_the_oracles() -> None:
    # a user's function is called through the Identity record's methods (catalogue code that is
    # not reference code); the innermost frame outside the libraries is the user's, so the
    # oracle is not blamed (NumPy's own frames, where it raised, are looked through)
    from gradoracle.results import GradientMismatch
    from gradoracle.user_checks import check_gradients

    def f(x: np.ndarray) -> np.ndarray:
        return np.asarray(x).reshape(7)

    with pytest.raises(GradientMismatch) as info:
        check_gradients(f, {"x": (3,)}, vjp=lambda g, x: {"x": g}, examples=3, seed=0)
    assert info.value.fault != Fault.ORACLE and "own reference code" not in str(info.value), str(info.value)
