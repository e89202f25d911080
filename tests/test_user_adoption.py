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
- A torch module as it is built (float32 parameters) could not be checked at all, even with
  ``dtypes=("float32",)``: finite differences call the function in float64, torch raised "mat1
  and mat2 must have the same dtype", and the check said only that the function "did not run
  as the check needs"; a module converted with ``.double()`` failed the same way in float32.
  The message now says which dtype the function runs in, why finite differences need float64,
  and how to make it follow its inputs' dtype (the advice is checked to work).
- An index array given as an input (``nn.Embedding``'s ``idx``, a NumPy or torch int64 array) is
  taken as float64, as documented, and torch said "Expected ... Long, Int; but got
  torch.DoubleTensor" about an array the user had given as int64.  A failing call now notes the
  inputs given as integers or booleans and that such arrays go in ``params=`` (the advice is
  checked to work; integer arrays of values that a float function takes still pass).  An input
  given as a bare int (``{"x": (4,), "n": 3}``, meant as the number 3) is a shape, as
  documented; a failing call now says so.
- A torch function that leaves torch's graph (``.detach()``, ``.numpy()``) was a plain "the
  torch backward of your function is not the derivative" with a torch gradient of 0; when the
  framework's gradient for the failing input is exactly 0 everywhere, the message now says that
  nothing connects the output to that input in the framework's graph, and what cuts it.
- Under a session-wide ``--gradoracle-mode hvp`` (or ``jvp``), a fixture check of a
  ``torch.autograd.Function`` with ``once_differentiable`` (no double backward, no forward mode)
  had its only mode left out, and the test passed having checked nothing: a backward 1% off
  passed.  When every session mode is left out, the check now runs reverse mode, as it already
  did when no session mode could run at all.
- A check of methods (``gradoracle.check(self.f, vjp=self.f_bwd)`` in a test class, a
  class's static or class methods) printed a repro that imported the class and then called
  ``check_gradients_at(f, ..., vjp=f_bwd)``: a NameError.  It now names them through the class
  (``TestOps().f``, ``Kernels.g``), and runs.
- ``@settings(max_examples=..., deadline=...)`` on a test of the ``gradoracle`` fixture (the
  README says "your Hypothesis configuration applies") fails with Hypothesis' own "Using
  `@settings` on a test without `@given` is completely pointless."  That refusal stands (it is
  Hypothesis'), and the report now has a ``gradoracle`` section saying where a check's examples,
  seed and deadline are set.
- A failing fixture check did not say how its examples were drawn (a conformance item does:
  "--hypothesis-seed=N draws them again"); it now does, in the same words, when Hypothesis
  chose the seed (one given on the command line or to the check is already the user's).  The
  seed is checked to draw the same examples again.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from gradoracle.results import REPEAT_HINT, Fault, GradientMismatch
from gradoracle.user_checks import check_gradients, check_gradients_at

pytest_plugins = ["pytester"]

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


# ---------------------------------------------------------------- a function bound to one dtype


def linear_module(dtype: str) -> Any:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2).to(getattr(torch, dtype))


def test_a_float32_module_is_told_why_float64_is_needed() -> None:
    module = linear_module("float32")
    with pytest.raises(GradientMismatch) as info:
        check_gradients(
            lambda x: module(x), {"x": (2, 3)}, framework="torch", dtypes=("float32",), examples=2
        )
    message = str(info.value)
    assert info.value.fault == Fault.ADAPTER, message
    assert "note: your function runs on float32 inputs only (it raised on float64 ones" in message
    assert "finite differences call it in float64 whatever dtype is checked" in message
    with pytest.raises(RuntimeError) as at:  # its repro: torch's own exception, with the same note
        check_gradients_at(lambda x: module(x), {"x": np.ones((2, 3))}, framework="torch", dtype="float32")
    assert any(
        "note: your function runs on float32 inputs only" in n for n in getattr(at.value, "__notes__", [])
    )


def test_a_float64_module_checked_in_float32_is_told_so() -> None:
    module = linear_module("float64")
    with pytest.raises(GradientMismatch) as info:
        check_gradients(
            lambda x: module(x), {"x": (2, 3)}, framework="torch", dtypes=("float32",), examples=2
        )
    assert "note: your function runs on float64 inputs only (it raised on float32 ones" in str(info.value)


def test_the_advice_works_and_a_function_raising_in_every_dtype_gets_no_note() -> None:
    torch = pytest.importorskip("torch")
    module = linear_module("float32")

    def follows(x: Any) -> Any:  # the note's advice, verbatim
        return torch.func.functional_call(
            module, {k: p.to(x.dtype) for k, p in module.named_parameters()}, (x,)
        )

    results = check_gradients(
        follows, {"x": (2, 3)}, framework="torch", dtypes=("float64", "float32"), examples=2
    )
    assert [r.verdict for r in results] == ["pass", "pass"]
    mask = np.array([True, False])  # a NumPy mask given to torch.where: raises in both dtypes
    with pytest.raises(GradientMismatch) as info:
        check_gradients(
            lambda x, mask: torch.where(mask, x, 2 * x),
            {"x": (2,)},
            params={"mask": mask},
            framework="torch",
            dtypes=("float32",),
            examples=2,
        )
    assert info.value.fault == Fault.ADAPTER and "note: your function runs on" not in str(info.value)
    assert "given as integers or booleans" not in str(info.value)


# ---------------------------------------------------------------- index arrays given as inputs


def embedding(weight: Any, idx: Any) -> Any:
    import torch.nn.functional as F

    return F.embedding(idx, weight)


def test_an_index_array_given_as_an_input_is_pointed_to_params() -> None:
    torch = pytest.importorskip("torch")
    idx = torch.tensor([0, 2, 2, 4])
    with pytest.raises(GradientMismatch) as info:
        check_gradients(
            embedding, {"weight": (5, 3), "idx": idx}, wrt=["weight"], framework="torch", examples=2
        )
    message = str(info.value)
    assert info.value.fault == Fault.ADAPTER, message
    assert "note: input 'idx' (torch.int64) was given as integers or booleans" in message
    assert "pass index and mask arrays in params=" in message
    with pytest.raises(RuntimeError) as at:  # the repro: torch's own exception, with the same note
        check_gradients_at(embedding, {"weight": np.ones((5, 3)), "idx": np.array([0, 2])}, framework="torch")
    assert any("input 'idx' (int64) was given as integers" in n for n in getattr(at.value, "__notes__", []))
    # the control: the advice works, and integers a float function takes are still taken
    results = check_gradients(
        embedding, {"weight": (5, 3)}, params={"idx": idx}, framework="torch", examples=2
    )
    assert [r.verdict for r in results] == ["pass"]
    results = check_gradients(
        np.tanh, {"x": np.array([1, 2, 3])}, vjp=lambda g, x: {"x": g * (1 - np.tanh(x) ** 2)}
    )
    assert [r.verdict for r in results] == ["pass"]


def test_a_bare_int_input_is_said_to_be_a_shape() -> None:
    pytest.importorskip("torch")
    with pytest.raises(GradientMismatch) as info:  # "n": 3 meant the number 3: a drawn vector of 3
        check_gradients(lambda x, n: x**n, {"x": (4,), "n": 3}, framework="torch", examples=2)
    assert "note: input 'n': 3 is a shape, as a bare int is" in str(info.value)
    # the control: the note's params= advice works
    results = check_gradients(lambda x, n: x**n, {"x": (4,)}, params={"n": 3}, framework="torch", examples=2)
    assert [r.verdict for r in results] == ["pass"]


# ---------------------------------------------------------------- a function that leaves the framework's graph


def test_a_cut_graph_is_named_for_the_input_it_cuts() -> None:
    pytest.importorskip("torch")
    with pytest.raises(GradientMismatch) as info:
        check_gradients(lambda W, x: W.detach() @ x, {"W": (2, 3), "x": (3,)}, framework="torch", examples=2)
    message = str(info.value)
    assert info.value.fault == Fault.BACKWARD, message
    assert "note: torch's gradient for input 'W' is exactly 0 for every element" in message
    assert "'x' is exactly 0" not in message
    with pytest.raises(GradientMismatch) as at:  # its repro says the same
        check_gradients_at(lambda x: x.detach() * 2.0, {"x": np.array([0.5, -1.0])}, framework="torch")
    assert "note: torch's gradient for input 'x' is exactly 0 for every element" in str(at.value)


def test_a_wrong_nonzero_framework_gradient_gets_no_cut_graph_note() -> None:  # the control
    square = torch_square(1.01, once=False)  # 1% off, never 0 everywhere
    with pytest.raises(GradientMismatch) as info:
        check_gradients(square, {"x": ("n",)}, framework="torch", examples=3)
    assert info.value.fault == Fault.BACKWARD and "exactly 0 for every element" not in str(info.value)


def test_a_wrong_gradient_of_outputs_summing_to_a_constant_gets_no_cut_graph_note() -> None:
    # x - mean(x) sums to 0 whatever x is: the vjp of a cotangent of ones is exactly 0 for a
    # connected graph (softmax and layer norm too), so the note's probe takes the check's own
    # cotangent; with ones it said "nothing connects the output to 'x'" of this connected one
    torch = pytest.importorskip("torch")

    class Centred(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any) -> Any:
            return x - x.mean()

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            return 1.5 * (g - g.mean())  # 1.5x off, and 0 for g = ones

    with pytest.raises(GradientMismatch) as info:
        check_gradients(lambda x: Centred.apply(x), {"x": ("n",)}, framework="torch", examples=3)
    assert info.value.fault == Fault.BACKWARD and "exactly 0 for every element" not in str(info.value)
    # the control: the same function cut from the graph still gets the note
    with pytest.raises(GradientMismatch) as cut:
        check_gradients(lambda x: x.detach() - x.detach().mean(), {"x": ("n",)}, framework="torch", examples=3)
    assert "note: torch's gradient for input 'x' is exactly 0 for every element" in str(cut.value)


# ---------------------------------------------------------------- session modes the function cannot run


def torch_square(factor: float, once: bool = True) -> Any:
    """``x * x`` as a ``torch.autograd.Function`` whose backward is ``factor`` times the right
    one; ``once``: the backward is ``once_differentiable`` (neither forward mode nor a double
    backward)."""
    torch = pytest.importorskip("torch")
    from torch.autograd.function import once_differentiable

    def backward(ctx: Any, g: Any) -> Any:
        (x,) = ctx.saved_tensors
        return factor * 2.0 * x * g

    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any) -> Any:
            ctx.save_for_backward(x)
            return x * x

    Square.backward = staticmethod(once_differentiable(backward) if once else backward)  # type: ignore[method-assign]
    return lambda x: Square.apply(x)


def once_differentiable_square(factor: float) -> Any:
    """:func:`torch_square` with a ``once_differentiable`` backward."""
    return torch_square(factor, once=True)


def _square_in_session_mode(factor: float, mode: str) -> Any:
    """The once-differentiable square checked by torch's autodiff with ``mode`` as the session's."""
    return check_gradients(
        once_differentiable_square(factor),
        {"x": ("n",)},
        framework="torch",
        identity="elementwise-square",
        examples=3,
        modes=mode,
        skip_unsupported_modes=True,
    )


@pytest.mark.parametrize("mode", ["hvp", "jvp"])
def test_a_session_mode_left_out_falls_back_to_reverse_mode(mode: str) -> None:
    with pytest.raises(GradientMismatch) as info:  # it passed: its only mode was left out
        _square_in_session_mode(1.01, mode)
    assert info.value.fault == Fault.BACKWARD, str(info.value)
    # the control: the right backward passes in reverse mode, the left-out mode still said
    results = _square_in_session_mode(1.0, mode)
    assert [(r.mode, r.verdict) for r in results] == [(mode, "skip"), ("vjp", "pass")]
    assert results[0].message.startswith(f"mode {mode} left out")


# ---------------------------------------------------------------- a repro of methods


class SineMethods:
    """A test class's methods: a forward and a backward 2% off."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.sin(x)

    def backward(self, g: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
        return {"x": 1.02 * g * np.cos(x)}


class SineKernels:
    @staticmethod
    def forward(x: np.ndarray) -> np.ndarray:
        return np.sin(x)

    @classmethod
    def backward(cls, g: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
        return {"x": 1.02 * g * np.cos(x)}


@pytest.mark.parametrize(
    ("forward", "backward", "named"),
    [
        (SineMethods().forward, SineMethods().backward, "SineMethods().forward"),
        (SineKernels.forward, SineKernels.backward, "SineKernels.forward"),
    ],
)
def test_the_repro_of_methods_runs(forward: Any, backward: Any, named: str) -> None:
    with pytest.raises(GradientMismatch) as info:
        check_gradients(forward, {"x": ("n",)}, vjp=backward, examples=5)
    repro = info.value.repro or ""
    assert f"check_gradients_at({named}, inputs" in repro, repro
    with pytest.raises(GradientMismatch):  # it raised NameError: f is not defined
        exec(repro, {})


class SineCallable:
    """A callable instance (as a torch.nn.Module is): the forward in ``__call__``."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.sin(x)


def test_the_repro_of_a_callable_instance_builds_its_class_and_runs() -> None:
    # it passed the class itself (check_gradients_at(SineCallable, ...)) and named the function
    # "a SineCallable object"
    with pytest.raises(GradientMismatch) as info:
        check_gradients(SineCallable(), {"x": ("n",)}, vjp=SineMethods().backward, examples=5)
    repro = info.value.repro or ""
    assert "check_gradients_at(SineCallable(), inputs" in repro, repro
    assert "an instance of SineCallable; build it as your test does" in repro
    assert "your function SineCallable()" in str(info.value)
    with pytest.raises(GradientMismatch):
        exec(repro, {})


def test_a_jitted_function_is_still_a_function_in_the_repro() -> None:  # the control
    jax = pytest.importorskip("jax")
    from gradoracle.user_checks import _callable_instance

    assert _callable_instance(SineCallable()) and not _callable_instance(jax.jit(np.sin))
    assert not _callable_instance(SineMethods().forward) and not _callable_instance(SineKernels.forward)


# ---------------------------------------------------------------- Hypothesis' decorators on a fixture test

DECORATED = """
import numpy as np
from hypothesis import settings


@settings(max_examples=3, deadline=None)
def test_decorated_check(gradoracle):
    gradoracle.check(np.tanh, {"x": ("n",)}, vjp=lambda g, x: {"x": g * (1 - np.tanh(x) ** 2)})


@settings(max_examples=3)
def test_decorated_without_the_fixture():
    pass


def test_failing_check(gradoracle):
    gradoracle.check(np.tanh, {"x": ("n",)}, vjp=lambda g, x: {"x": 2 * g}, examples=2)
"""


def test_settings_on_a_fixture_test_says_where_examples_are_set(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_decorated=DECORATED)
    result = pytester.runpytest("-p", "no:randomly", "-p", "no:cacheprovider", "-rN")
    result.assert_outcomes(failed=3)
    out = result.stdout.str()
    assert out.count("completely pointless") >= 2  # Hypothesis' refusal, for both decorated tests
    # the hint, once: under the fixture test, not under the test without the fixture nor a failing check
    hint = "Hypothesis' decorators apply to @given tests only"
    assert out.count(hint) == 1, out
    hint_at = out.index(hint)
    assert out.rindex("test_decorated_check", 0, hint_at) > out.rfind(
        "test_decorated_without_the_fixture", 0, hint_at
    )
    assert "gradoracle.check(..., examples=50, seed=1)" in out


SEEDED = """
import numpy as np

LOG = "drawn.txt"


def f(x):
    with open(LOG, "a") as fh:
        fh.write(repr(np.asarray(x).tolist()) + "\\n")
    return np.sin(x)


def bad(g, x):  # 1% off wherever |x| > 0.8
    return {"x": g * np.cos(x) * (1.01 if np.max(np.abs(x)) > 0.8 else 1.0)}


def test_session_seed(gradoracle):
    gradoracle.check(f, {"x": ("n",)}, vjp=bad, examples=30)


def test_own_seed(gradoracle):
    gradoracle.check(np.sin, {"x": ("n",)}, vjp=bad, examples=30, seed=3)
"""


def test_a_failing_fixture_check_says_how_to_draw_its_examples_again(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    import re

    import hypothesis.core
    from hypothesis import settings

    # an in-process run's --hypothesis-seed stays in hypothesis.core: none at the start (an earlier
    # in-process run in this worker may have left one, and then no seed is Hypothesis's own), and
    # the value before given back afterwards
    monkeypatch.setattr(hypothesis.core, "global_force_seed", None)
    # under CI=true Hypothesis loads its "ci" profile (derandomize=True: no seed is generated, and
    # nothing is said of one); these runs load the default profile, and the one before is restored
    profile = settings.get_current_profile_name()
    request.addfinalizer(lambda: settings.load_profile(profile))
    pin = "--hypothesis-profile=default"

    pytester.makepyfile(test_seeded=SEEDED)
    first = pytester.runpytest("-p", "no:randomly", "-p", "no:cacheprovider", pin, "-k", "session_seed")
    first.assert_outcomes(failed=1)
    found = re.search(r"--hypothesis-seed=(\d+) draws them again", first.stdout.str())
    assert found, first.stdout.str()
    drawn = (pytester.path / "drawn.txt").read_text().splitlines()[:3]
    (pytester.path / "drawn.txt").unlink()
    # under --hypothesis-seed a check runs without the example database: the seed alone draws them
    again = pytester.runpytest(
        "-p", "no:randomly", "-p", "no:cacheprovider", pin, f"--hypothesis-seed={found[1]}"
    )
    again.assert_outcomes(failed=2)
    assert (pytester.path / "drawn.txt").read_text().splitlines()[:3] == drawn
    # the control: a check with its own seed= says nothing of the session's seed
    own = pytester.runpytest("-p", "no:randomly", "-p", "no:cacheprovider", pin, "-k", "own_seed")
    own.assert_outcomes(failed=1)
    assert "- gradoracle -" not in own.stdout.str() and "draws them again" not in own.stdout.str()
