"""Hostile adapters (audit 1): adapters that write into their inputs, declare odd attributes or
hand back results that change between reads.  Each case keeps a negative control: the same
hostility with a wrong gradient must still fail, with the right fault."""

from __future__ import annotations

import gc
import io
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from gradoracle import CheckSettings, Fault, Verdict, check
from gradoracle.adapters.base import ForwardFn, VJPResult
from gradoracle.adapters.numpy_engine import NumpyEngineAdapter
from gradoracle.batching import ForwardCall, VjpCall, drive
from gradoracle.guard import AdapterGuard, dtype_names, read_facts
from gradoracle.results import CheckResult

FAST = CheckSettings(examples=3, seed=1, timeout_s=20.0)


class _Engine(NumpyEngineAdapter):
    """The correct NumPy engine; ``scale`` != 1 makes every gradient wrong (the negative control)."""

    scale = 1.0

    def __init__(self) -> None:
        super().__init__(name=type(self).__name__)

    def vjp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangent: np.ndarray,
        dtype: str,
    ) -> VJPResult:
        r = super().vjp(fn, inputs, wrt, cotangent, dtype)
        return VJPResult(r.output, {k: (v * self.scale).astype(v.dtype) for k, v in r.grads.items()})


# ------------------------------------------------------------------ adapters that write into their inputs


class MutatingForward(_Engine):
    """Its forward is right for the inputs it is given, then scales them in place."""

    def forward(self, fn: ForwardFn, inputs: Mapping[str, np.ndarray], dtype: str) -> np.ndarray:
        out = super().forward(fn, inputs, dtype)
        for v in inputs.values():
            v *= 1.5
        return out


class MutatingForwardWrong(MutatingForward):
    scale = 2.0


class MutatingVjp(_Engine):
    """Its vjp is right, then scales its inputs and the cotangent in place."""

    def vjp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangent: np.ndarray,
        dtype: str,
    ) -> VJPResult:
        r = super().vjp(fn, inputs, wrt, cotangent, dtype)
        for v in inputs.values():
            v *= 1.5
        cotangent *= 2.0
        return r


@pytest.mark.parametrize("identity", ["conv-filter", "matvec-jacobian"])  # X / W: inputs not differentiated
def test_an_adapter_writing_into_its_forward_inputs_does_not_fool_the_oracle(identity: str) -> None:
    # The finite-difference points share the inputs that are not perturbed (and, in float64,
    # the master copy the closed form and the oracle's own finite differences use): once
    # an adapter scaled them in place, gradoracle blamed itself ("oracle" fault).
    r = check(identity, MutatingForward(), "float64", FAST)
    assert r.verdict == Verdict.PASS, r.message
    wrong = check(identity, MutatingForwardWrong(), "float64", FAST)
    assert (wrong.verdict, wrong.fault) == (Verdict.FAIL, Fault.BACKWARD), wrong.message


def test_an_adapter_writing_into_its_vjp_inputs_and_cotangent_passes() -> None:
    for dtype in ("float64", "float32"):
        r = check("mlp", MutatingVjp(), dtype, FAST)
        assert r.verdict == Verdict.PASS, r.message


def test_every_call_gets_its_own_copy_of_the_arrays() -> None:
    shared = np.arange(4.0)
    seen: list[np.ndarray] = []

    class Writer(NumpyEngineAdapter):
        def forward(self, fn: ForwardFn, inputs: Mapping[str, np.ndarray], dtype: str) -> np.ndarray:
            seen.append(inputs["x"].copy())
            inputs["x"][:] = -1.0
            return np.zeros(1)

        def vjp(
            self,
            fn: ForwardFn,
            inputs: Mapping[str, np.ndarray],
            wrt: Sequence[str],
            u: np.ndarray,
            dtype: str,
        ) -> VJPResult:
            seen.append(inputs["x"].copy())
            inputs["x"][:] = -2.0
            u[:] = -2.0
            return VJPResult(np.zeros(1), {"x": np.zeros(4)})

    u = np.ones(1)

    def evaluation() -> Any:
        yield ForwardCall(lambda ops, a: a["x"], [{"x": shared}, {"x": shared}, {"x": shared}], "float64")
        yield VjpCall(lambda ops, a: a["x"], {"x": shared}, ("x",), u, "float64")
        return "done"

    assert drive(Writer(), [evaluation()]) == ["done"]
    assert len(seen) == 4 and all(np.array_equal(s, np.arange(4.0)) for s in seen)
    assert np.array_equal(shared, np.arange(4.0)) and np.array_equal(u, np.ones(1))


# ------------------------------------------------------------------ odd declarations


def test_dtypes_as_one_string_is_one_dtype_not_its_letters() -> None:
    # ``dtypes = "float64"`` used to read as ('f', 'l', 'o', ...): every check skipped, exit 0
    assert dtype_names("float64") == ("float64",)
    assert dtype_names(["float32"]) == ("float32",)

    class OneString(_Engine):
        dtypes = "float64"  # type: ignore[assignment]

    r = check("matvec-jacobian", OneString(), "float64", FAST)
    assert r.verdict == Verdict.PASS, r.message
    assert check("matvec-jacobian", OneString(), "float32", FAST).verdict == Verdict.SKIP

    class OneStringWrong(OneString):
        scale = 2.0

    assert check("matvec-jacobian", OneStringWrong(), "float64", FAST).verdict == Verdict.FAIL


@pytest.mark.parametrize("value", [3, None, ("float64", 3)])
def test_dtypes_that_are_not_names_are_a_clear_error(value: Any) -> None:
    class Odd(_Engine):
        dtypes = value

    r = check("matvec-jacobian", Odd(), "float64", FAST)
    assert (r.verdict, r.fault) == (Verdict.ERROR, Fault.ADAPTER)
    assert "dtypes must be a tuple of dtype names such as ('float64', 'float32')" in r.message


def test_read_facts_names_the_bad_dtypes() -> None:
    class Odd(_Engine):
        dtypes = 3  # type: ignore[assignment]

    with pytest.raises(Exception, match=r"Odd\.dtypes raised TypeError: dtypes must be a tuple"):
        read_facts(Odd(), AdapterGuard("odd"), 5.0)


class _RaisingOptionals(_Engine):
    """Optional attributes that raise when read (a courtesy attribute gone wrong)."""

    @property
    def words(self) -> Any:
        raise RuntimeError("words boom")

    @property
    def repro_env(self) -> Any:
        raise RuntimeError("repro_env boom")


class _JunkGetattr(_Engine):
    """``__getattr__`` answers every unknown attribute with a string."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return "junk"


@pytest.mark.parametrize("base", [_RaisingOptionals, _JunkGetattr])
def test_broken_optional_attributes_do_not_hide_a_wrong_gradient(base: type[_Engine]) -> None:
    # reading ``words`` / ``repro_env`` for the failure message used to turn the finding into
    # an error about that attribute ("RuntimeError: words boom")
    assert check("matvec-jacobian", base(), "float64", FAST).verdict == Verdict.PASS
    wrong = type("Wrong", (base,), {"scale": 2.0})()
    r = check("matvec-jacobian", wrong, "float64", FAST)
    assert (r.verdict, r.fault) == (Verdict.FAIL, Fault.BACKWARD), r.message
    assert "boom" not in r.message and "reproduce('matvec-jacobian'" in r.message


@pytest.mark.parametrize("rtol", [float("inf"), float("nan"), -1.0, "lots"])
def test_a_meaningless_nondeterminism_rtol_allows_nothing(rtol: Any) -> None:
    class Noisy(_Engine):
        nondeterminism_rtol = rtol
        calls = 0

        def vjp(self, *args: Any) -> VJPResult:
            r = super().vjp(*args)
            Noisy.calls += 1
            return VJPResult(r.output, {k: v * (1 + 1e-3 * (Noisy.calls % 2)) for k, v in r.grads.items()})

    r = check("matvec-jacobian", Noisy(), "float64", FAST)
    assert r.fault == Fault.NONDETERMINISTIC, r.message

    class Documented(Noisy):
        nondeterminism_rtol = 1e-2  # the control: a finite declaration covers the noise...

    assert check("matvec-jacobian", Documented(), "float64", FAST).fault != Fault.NONDETERMINISTIC


# ------------------------------------------------------------------ results that change between reads


class _Shifty:
    """A vjp result whose ``grads`` are right on the first read and NaN of another shape after."""

    def __init__(self, result: VJPResult) -> None:
        self.output, self._grads, self.reads = result.output, result.grads, 0

    @property
    def grads(self) -> dict[str, np.ndarray]:
        self.reads += 1
        return self._grads if self.reads == 1 else {k: np.full(3, np.nan) for k in self._grads}


def test_a_vjp_result_is_read_once_and_the_validated_arrays_are_compared() -> None:
    class Shifty(_Engine):
        def vjp(self, *args: Any) -> Any:
            return _Shifty(super().vjp(*args))

    r = check("matvec-jacobian", Shifty(), "float64", FAST)
    assert r.verdict == Verdict.PASS, r.message

    class ShiftyWrong(Shifty):
        scale = 2.0

    assert check("matvec-jacobian", ShiftyWrong(), "float64", FAST).fault == Fault.BACKWARD


# ------------------------------------------------------------------ the -q line


def test_quiet_line_of_a_one_line_message_says_what_happened() -> None:
    from gradoracle.cli.common import print_failures

    died = "the worker process running it was killed by signal SIGSEGV (Segmentation fault)\x1b[31m"
    buf = io.StringIO()
    print_failures(
        [CheckResult("mlp", "", "a", "float64", Verdict.ERROR, Fault.ADAPTER, died)],
        Console(file=buf, width=300),
        -1,
    )
    text = buf.getvalue()
    assert "mlp-a-float64: error - the worker process running it was killed by signal SIGSEGV" in text
    assert "\x1b" not in text


# ------------------------------------------------------------------ batched methods that lie for some rows


class _Batched(_Engine):
    """The engine with a ``vjp_batch`` that loops over its rows; ``lie_from`` doubles the
    gradients of rows at and after that index (0: every row, also a batch of one)."""

    lie_from: int | None = None

    def vjp_batch(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangent: np.ndarray,
        dtype: str,
    ) -> VJPResult:
        rows = [
            self.vjp(fn, {k: v[i] for k, v in inputs.items()}, wrt, cotangent[i], dtype)
            for i in range(len(cotangent))
        ]
        grads = {k: np.stack([r.grads[k] for r in rows]) for k in wrt}
        if self.lie_from is not None:
            for g in grads.values():
                g[self.lie_from :] *= 2
        return VJPResult(np.stack([r.output for r in rows]), grads)


BATCHED = CheckSettings(examples=10, seed=1, timeout_s=20.0)


def test_a_vjp_batch_that_lies_only_in_a_batch_is_an_adapter_fault_not_the_backward() -> None:
    # The failing example of the batched pass used to be reported as the framework's backward,
    # with a repro that passes (alone, the example is answered right).
    honest = check("elementwise-tanh", _Batched(), "float64", BATCHED)
    assert honest.verdict == Verdict.PASS, honest.message
    lying = type("LiesInBatches", (_Batched,), {"lie_from": 1})()
    r = check("elementwise-tanh", lying, "float64", BATCHED)
    assert (r.verdict, r.fault) == (Verdict.FAIL, Fault.ADAPTER), r.message
    assert "the adapter's batched methods disagree with its single calls" in r.message
    assert "failed (backward: analytic comparison on 'x'" in r.message
    # the control: a vjp_batch that lies in every row (alone too) is the backward, as before
    always = type("LiesAlways", (_Batched,), {"lie_from": 0})()
    r = check("elementwise-tanh", always, "float64", BATCHED)
    assert (r.verdict, r.fault) == (Verdict.FAIL, Fault.BACKWARD), r.message


# ------------------------------------------------------------------ adapters that change the process


def test_an_adapter_call_leaves_the_working_directory_and_recursion_limit_as_it_found_them(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # os.chdir in an adapter moved `report --in-process --out reports` elsewhere; a recursion
    # limit of 60 crashed the run's own code (RecursionError) after the adapter returned
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(tmp_path)
    limit = sys.getrecursionlimit()

    class Meddler(_Engine):
        def vjp(self, *args: Any) -> VJPResult:
            r = super().vjp(*args)
            os.chdir(elsewhere)
            sys.setrecursionlimit(60)
            return r

    try:
        r = check("matvec-jacobian", Meddler(), "float64", FAST)
        assert os.getcwd() == str(tmp_path) and sys.getrecursionlimit() == limit
        assert r.verdict == Verdict.PASS, r.message
        wrong = check("matvec-jacobian", type("MeddlerWrong", (Meddler,), {"scale": 2.0})(), "float64", FAST)
        assert wrong.fault == Fault.BACKWARD, wrong.message
    finally:
        sys.setrecursionlimit(limit)


class _GlobalMeddler(_Engine):
    """Right gradients; every vjp turns warnings into errors (and ignores its own category),
    sets a run variable, swallows stdout and stderr, disables the garbage collector and
    starves thread switching."""

    def vjp(self, *args: Any) -> VJPResult:
        r = super().vjp(*args)
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=_MeddlerWarning)
        os.environ["GRADORACLE_LARGE_SHAPES"] = "1"
        os.environ["GRADORACLE_MEDDLED"] = "yes"
        sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
        gc.disable()
        sys.setswitchinterval(5.0)
        return r


class _MeddlerWarning(UserWarning):
    pass


def _global_state() -> tuple[Any, ...]:
    env = {k: v for k, v in os.environ.items() if k.startswith("GRADORACLE_")}
    errors = [f for f in warnings.filters if f[0] == "error"]
    return errors, env, sys.stdout, sys.stderr, gc.isenabled(), sys.getswitchinterval()


def test_an_adapter_call_leaves_the_process_state_the_run_reads_as_it_found_it() -> None:
    # an "error" warning filter would turn any warning of the run into an exception; a
    # GRADORACLE_LARGE_SHAPES set by one adapter changed every later check's draws
    with warnings.catch_warnings():
        before = _global_state()
        try:
            r = check("matvec-jacobian", _GlobalMeddler(), "float64", FAST)
            after = _global_state()
            kept_ignore = any(f[0] == "ignore" and f[2] is _MeddlerWarning for f in warnings.filters)
        finally:
            gc.enable()
        assert after == before
        assert kept_ignore  # what the adapter added for its own warnings stays (torch adds such)
        assert r.verdict == Verdict.PASS, r.message
        wrong = check(
            "matvec-jacobian", type("MeddlerWrong", (_GlobalMeddler,), {"scale": 2.0})(), "float64", FAST
        )
        assert wrong.fault == Fault.BACKWARD, wrong.message


def test_the_meddler_does_change_the_state_outside_the_guard() -> None:
    # the negative control: called directly, the same adapter leaves every change behind
    stdout, stderr, interval = sys.stdout, sys.stderr, sys.getswitchinterval()
    saved_env = dict(os.environ)
    with warnings.catch_warnings():
        before = _global_state()
        try:
            adapter = _GlobalMeddler()
            adapter.vjp(lambda ops, t: ops.relu(t["x"]), {"x": np.ones(3)}, ("x",), np.ones(3), "float64")
            after = _global_state()
        finally:
            sys.stdout, sys.stderr = stdout, stderr
            gc.enable()
            sys.setswitchinterval(interval)
            os.environ.clear()
            os.environ.update(saved_env)
    assert all(a != b for a, b in zip(after, before, strict=True)), after


def test_convention_probes_of_an_adapter_writing_into_its_forward_inputs_are_judged_where_asked() -> None:
    # the probe's vjp was made at the inputs the forward had scaled: a right vjp was judged
    # outside the generalised gradient (6 probes, exit 1)
    from gradoracle.conventions import FAILURE, get_probe, run_probe

    for name in ("clamp-at-bounds", "elu-at-0", "softplus-threshold"):
        assert run_probe(get_probe(name), MutatingForward(), "float64").verdict == "convention", name
    probe = get_probe("relu-at-0")

    class MutatingForwardReluOne(MutatingForward):
        """The control: relu'(0) = 2 is outside [0, 1] whatever the forward does."""

        def vjp(self, *args: Any) -> VJPResult:
            r = super().vjp(*args)
            return VJPResult(r.output, {k: np.full_like(v, 2.0) for k, v in r.grads.items()})

    assert run_probe(probe, MutatingForwardReluOne(), "float64").verdict == FAILURE


class ForwardOff(_Engine):
    """``forward()`` (what finite differences evaluate) is 1.001x the function the vjp differentiates."""

    def forward(self, fn: ForwardFn, inputs: Mapping[str, np.ndarray], dtype: str) -> np.ndarray:
        return (np.asarray(super().forward(fn, inputs, dtype)) * 1.001).astype(dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_forward_method_that_disagrees_with_the_vjp_is_an_adapter_fault_not_the_backward(
    dtype: str,
) -> None:
    # gradients equal to the notes' closed form were reported as fault 'backward' (the
    # framework's autodiff wrong) when only the adapter's forward() computed another function
    r = check("elementwise-tanh", ForwardOff(), dtype, FAST)
    assert (r.verdict, r.fault) == (Verdict.FAIL, Fault.ADAPTER), r.message
    assert "the adapter's forward() and its vjp compute different functions" in r.message
    # the control: with wrong gradients as well, the backward is what is reported
    wrong = check("elementwise-tanh", type("ForwardOffWrong", (ForwardOff,), {"scale": 2.0})(), dtype, FAST)
    assert (wrong.verdict, wrong.fault) == (Verdict.FAIL, Fault.BACKWARD), wrong.message


def test_a_call_abandoned_by_ctrl_c_does_not_answer_the_next_call() -> None:
    """A KeyboardInterrupt leaves the first call's late result queued; the next call gets its own."""
    import signal
    import threading
    import time

    from gradoracle.guard import AdapterGuard

    guard = AdapterGuard("x")
    release, answered = threading.Event(), threading.Event()

    def slow() -> str:
        release.wait(30.0)  # returns only after the Ctrl-C: no race with a loaded machine
        answered.set()
        return "first"

    # a test runner's worker may ignore SIGINT (pytest-xdist's can): Ctrl-C as a terminal delivers it
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        timer = threading.Timer(0.1, lambda: os.kill(os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            guard.call(slow, None, "slow")
    finally:
        signal.signal(signal.SIGINT, previous)
    release.set()
    assert answered.wait(30.0)
    time.sleep(0.2)  # the first call's result is in the queue by now
    assert guard.call(lambda: "second", None, "fast") == "second"
    assert guard.call(lambda: "third", 5.0, "fast") == "third"  # with a timeout too
    guard.close()


# --------------------------------------- forward mode and second order: an unprintable exception


class _Unprintable(RuntimeError):
    def __str__(self) -> str:
        raise ValueError("__str__ of this exception raises")

    def __repr__(self) -> str:
        raise ValueError("__repr__ of this exception raises")


@pytest.mark.parametrize("mode", ["jvp", "hvp"])
def test_an_unprintable_exception_in_jvp_or_hvp_is_an_adapter_record(mode: str) -> None:
    """modes.py wrote ``f"... {exc}"``: an exception whose ``__str__`` raises escaped the
    evaluation as the oracle's own error instead of an adapter fault naming it."""
    pytest.importorskip("torch")
    from gradoracle.adapters.torch_adapter import TorchAdapter

    class Raising(TorchAdapter):
        def jvp(self, *args: Any, **kwargs: Any) -> Any:
            raise _Unprintable()

        def hvp(self, *args: Any, **kwargs: Any) -> Any:
            raise _Unprintable()

    settings = CheckSettings(examples=2, batch=1)
    r = check("elementwise-tanh", Raising(), "float64", settings, mode=mode)
    assert (r.verdict, r.fault) == (Verdict.ERROR, Fault.ADAPTER), r.message
    assert "unprintable" in r.message and "_Unprintable" in r.message, r.message
    # negative control: the stock adapter passes the same check
    assert check("elementwise-tanh", TorchAdapter(), "float64", settings, mode=mode).verdict == Verdict.PASS
