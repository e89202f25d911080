"""Callables whose parameters Python cannot read (C builtins such as ``torch.atan2``).

A user check calls the function with the inputs by keyword, under the inputs' names.  A
builtin whose parameters have other names (``torch.atan2(input, other)`` checked with inputs
``y`` and ``x``) raised TypeError at every example, reported as "fault: adapter", and its repro
began ``from torch import _VariableFunctionsClass``, an ImportError.  Where the parameters
cannot be read and the call by keyword raises TypeError, the inputs now go by position in their
order (as they already did for ``np.tanh``); where that fails too, the message says what was
tried and how to name the inputs; and a repro names such a function where it can be imported.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gradoracle.results import Fault, GradientMismatch
from gradoracle.user_checks import _public_alias, _resolves, _signature_known, check_gradients


class Unsigned:
    """Like a C builtin: ``inspect.signature`` cannot read it, and it takes ``(input, other)``."""

    __signature__ = "unreadable"  # inspect.signature raises TypeError on this

    def __call__(self, input: np.ndarray, other: np.ndarray) -> np.ndarray:
        return input * other**2


def _vjp(scale_b: float = 1.0) -> Any:
    def vjp(g: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
        return {"a": g * b**2, "b": scale_b * g * 2 * a * b}

    return vjp


def test_the_callable_is_unsigned() -> None:  # the premise of every test below
    assert not _signature_known(Unsigned()) and _signature_known(np.tanh)


def test_an_unsigned_callable_takes_the_inputs_in_their_order() -> None:
    (result,) = check_gradients(Unsigned(), {"a": ("n",), "b": ("n",)}, vjp=_vjp(), examples=10)
    assert result.verdict == "pass", result.message


def test_a_wrong_backward_of_an_unsigned_callable_still_fails() -> None:  # the negative control
    with pytest.raises(GradientMismatch) as info:
        check_gradients(Unsigned(), {"a": ("n",), "b": ("n",)}, vjp=_vjp(1.01), examples=10)
    assert info.value.fault is Fault.BACKWARD


def test_the_order_of_the_inputs_is_the_order_of_the_call() -> None:
    # inputs given as (b, a): the call is Unsigned()(b, a) = b * a^2, whose gradient the vjp
    # written for a * b^2 is not
    with pytest.raises(GradientMismatch) as info:
        check_gradients(Unsigned(), {"b": ("n",), "a": ("n",)}, vjp=_vjp(), examples=10)
    assert info.value.fault is Fault.BACKWARD


def test_when_neither_call_works_the_message_says_what_was_tried() -> None:
    with pytest.raises(GradientMismatch) as info:
        check_gradients(
            Unsigned(), {"a": ("n",), "b": ("n",), "c": ("n",)}, vjp=lambda g, a, b, c: {}, examples=3
        )
    text = str(info.value)
    assert info.value.fault is Fault.ADAPTER
    assert "Python cannot read its parameters" in text, text
    assert "by keyword, Unsigned(a=..., b=..., c=...)" in text, text
    assert "by position in the inputs' order, Unsigned(a, b, c)" in text, text
    assert "takes 3 positional arguments but 4 were given" in text, text
    assert "Name the inputs after Unsigned's parameters" in text, text


def test_a_signed_function_raising_type_error_is_not_called_again() -> None:
    calls = {"type": 0, "value": 0}

    def raises(kind: str) -> Any:
        def f(x: np.ndarray) -> np.ndarray:
            calls[kind] += 1
            raise TypeError("inner") if kind == "type" else ValueError("inner")

        return f

    for kind in calls:
        with pytest.raises(GradientMismatch) as info:
            check_gradients(raises(kind), {"x": (3,)}, vjp=lambda g, x: {"x": g}, examples=2)
        assert info.value.fault is Fault.ADAPTER
    # the same number of calls for TypeError as for ValueError: no second try by position
    assert calls["type"] == calls["value"] > 0


def hidden(x: np.ndarray) -> np.ndarray:
    return np.sin(x)


hidden.__qualname__ = "_Namespace.hidden"  # as torch.atan2's, it names no importable path


def test_a_public_alias_is_found_where_the_qualname_does_not_resolve() -> None:
    assert not _resolves(__name__, "_Namespace.hidden", hidden)
    assert _public_alias(hidden, __name__) == (__name__, "hidden")
    assert _resolves(__name__, "Unsigned", Unsigned)  # the control: a path that resolves
    assert _public_alias(lambda x: x, __name__) is None


def test_the_repro_of_a_function_with_an_unresolvable_qualname_runs() -> None:
    with pytest.raises(GradientMismatch) as info:
        check_gradients(hidden, {"x": ("n",)}, vjp=lambda g, x: {"x": 1.02 * g * np.cos(x)}, examples=5)
    repro = info.value.repro or ""
    assert f"from {__name__} import hidden" in repro and "_Namespace" not in repro, repro


def test_torch_atan2_with_inputs_named_otherwise_is_checked() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    inputs = {"y": rng.uniform(-1, 1, 4), "x": rng.uniform(0.5, 1, 4)}
    (result,) = check_gradients(torch.atan2, inputs, framework="torch", examples=5)
    assert result.verdict == "pass", result.message
    # three inputs: neither call works; the repro imports atan2 from torch and runs
    with pytest.raises(GradientMismatch) as info:
        check_gradients(torch.atan2, {**inputs, "z": inputs["x"]}, framework="torch", examples=3)
    repro = info.value.repro or ""
    assert "from torch import atan2" in repro and "_VariableFunctionsClass" not in repro, repro
    with pytest.raises((GradientMismatch, TypeError)) as again:  # it raised ImportError
        exec(repro, {})
    assert "Name the inputs after atan2's parameters" in str(again.value)


class HostileHash:
    """A callable (with a signature) whose ``__hash__`` and ``__eq__`` raise."""

    def __hash__(self) -> int:
        raise RuntimeError("no hashing")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparing")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.sin(x)


class UnsignedHostileHash(Unsigned):
    def __hash__(self) -> int:
        raise RuntimeError("no hashing")


def test_a_callable_whose_hash_raises_is_still_checked() -> None:
    # the positional cache is consulted for signature-less callables only, and a hash that
    # raises is no hash: the check runs as it did before the cache existed
    (result,) = check_gradients(
        HostileHash(), {"x": ("n",)}, vjp=lambda g, x: {"x": g * np.cos(x)}, examples=5
    )
    assert result.verdict == "pass", result.message
    (result,) = check_gradients(UnsignedHostileHash(), {"a": ("n",), "b": ("n",)}, vjp=_vjp(), examples=5)
    assert result.verdict == "pass", result.message
    with pytest.raises(GradientMismatch):  # the control
        check_gradients(
            HostileHash(), {"x": ("n",)}, vjp=lambda g, x: {"x": 1.02 * g * np.cos(x)}, examples=5
        )


class HostileAttributes:
    """A callable whose ``__name__``, ``__qualname__``, ``__module__``, ``__code__`` ... raise
    RuntimeError when read (not AttributeError, which ``getattr(..., default)`` handles)."""

    def __getattribute__(self, name: str) -> Any:
        if name in ("__name__", "__qualname__", "__module__", "__wrapped__", "__signature__", "__code__"):
            raise RuntimeError(f"no {name}")
        return object.__getattribute__(self, name)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.sin(x)


def test_a_callable_whose_attributes_raise_is_still_checked() -> None:
    # it raised RuntimeError("no __name__") out of the check, before any example ran
    (result,) = check_gradients(
        HostileAttributes(), {"x": ("n",)}, vjp=lambda g, x: {"x": g * np.cos(x)}, examples=5
    )
    assert result.verdict == "pass", result.message
    with pytest.raises(GradientMismatch) as info:  # the control
        check_gradients(
            HostileAttributes(), {"x": ("n",)}, vjp=lambda g, x: {"x": 1.02 * g * np.cos(x)}, examples=5
        )
    assert info.value.fault is Fault.BACKWARD
    assert "your function HostileAttributes()" in str(info.value)
