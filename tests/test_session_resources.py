"""What a check leaves behind in a long session (a pytest run of many checks): nothing of the
user's.  After ``check_gradients`` returns, the function it checked, and the models and tensors
that function closes over, can be collected, and the thread that ran the adapter's calls ends.

Before session 19 every checked function stayed alive for the process (``runner.forward_for``
held its identity's forward in a plain dict, and each adapter's guard thread kept its last
call's closure bound while it waited), with one thread per check: a suite of 2,000 checks held
2,000 threads and every model it built (on a GPU, their memory)."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from typing import Any

import numpy as np
import pytest

from gradoracle import guard, runner, user_checks
from gradoracle.user_checks import check_gradients


class Model:
    """Stands for a model the checked function closes over (its weights)."""

    def __init__(self) -> None:
        self.w = np.linspace(0.5, 1.5, 4)


def _checked_model(**kw: Any) -> weakref.ref[Model]:
    model = Model()

    def forward(x: Any, m: Model = model) -> Any:
        return m.w * np.tanh(x)

    def backward(u: Any, x: Any, m: Model = model) -> Any:
        return u * m.w * (1 - np.tanh(x) ** 2)

    check_gradients(forward, {"x": (4,)}, vjp=backward, examples=3, **kw)
    return weakref.ref(model)


def _adapter_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("gradoracle-adapter-")]


def _settle(threads: int, wait_s: float = 3.0) -> int:
    """The adapter threads alive once the ended ones have ended (waits at most ``wait_s``: one
    collection, then the threads' own exits; a collection costs seconds in a large process, so
    it is not repeated)."""
    gc.collect()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        alive = len(_adapter_threads())
        if alive <= threads:
            return alive
        time.sleep(0.02)
    return len(_adapter_threads())


def test_a_checked_function_and_what_it_closes_over_go_with_the_check() -> None:
    refs = [_checked_model(seed=i) for i in range(3)]
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


def test_a_strong_cache_of_forwards_is_what_the_test_catches(monkeypatch: pytest.MonkeyPatch) -> None:
    # the control: forward_for before session 19 (a plain dict), its forwards holding the check
    monkeypatch.setattr(runner, "_FORWARDS", {})
    bind = user_checks._UserForward.bind

    def holding(self: Any, user: Any, inner: Any) -> None:
        self.held = (user, inner)
        bind(self, user, inner)

    monkeypatch.setattr(user_checks._UserForward, "bind", holding)
    ref = _checked_model()
    gc.collect()
    assert ref() is not None


def test_the_adapter_threads_of_finished_checks_end() -> None:
    before = _settle(0)
    for i in range(5):
        _checked_model(seed=i)
    assert _settle(before) <= before


def _loop_holding_its_last_call(self: guard.AdapterGuard) -> None:
    """The guard's loop before session 19: the last call's closure stays bound while it waits."""
    while (job := self._jobs.get()) is not None:
        number, func = job
        try:
            answer: tuple[bool, Any] = (True, func())
        except BaseException as exc:
            answer = (False, exc)
        with self._awaited_lock:
            pass
        self._results.put((number, *answer))


def test_a_loop_holding_its_last_call_is_what_the_thread_test_catches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = _settle(0)
    monkeypatch.setattr(guard.AdapterGuard, "_loop", _loop_holding_its_last_call)
    refs = [_checked_model(seed=i) for i in range(3)]
    assert _settle(before) >= before + 3  # the control: each check's thread stays, with its model
    assert all(r() is not None for r in refs)


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_a_framework_model_goes_with_its_check(framework: str) -> None:
    pytest.importorskip(framework)

    def run() -> weakref.ref[Any]:
        if framework == "torch":
            import torch

            model: Any = torch.nn.Linear(4, 3).double()
            check_gradients(lambda x, m=model: m(x), {"x": (4,)}, framework="torch", examples=3)
        else:
            import jax.numpy as jnp

            model = Model()
            model.w = jnp.linspace(0.5, 1.5, 4)
            check_gradients(lambda x, m=model: m.w * jnp.tanh(x), {"x": (4,)}, framework="jax", examples=3)
        return weakref.ref(model)

    ref = run()
    gc.collect()
    assert ref() is None
