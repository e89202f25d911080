"""Messages in the user's words (issue 12, item 6).

- a user check names the user's function and says "your backward <name>" for a hand-written
  vjp (never "adapter vjp:<name>", never "autodiff"); a lambda is named by where it is;
- a forward that is not defined at the drawn inputs (``np.log`` of a negative) is an
  input-domain problem with a hint on restricting the inputs, not a broken contract;
- the allowance reads "allowed 3.7e-15 = 128 ulp x magnitude of the terms 1.3e-1", and the
  formula is one ``--verbose`` away;
- ``notes:`` labels are named by the notes' section titles; ``explain`` prints the passage.

Each test keeps its negative control: a framework adapter's message keeps "adapter"/"autodiff",
a real contract break (or a NaN from a framework on in-domain inputs) stays an adapter fault.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from gradoracle.results import Fault, GradientMismatch, Verdict, brief_message
from gradoracle.runner import CheckSettings, check
from gradoracle.specification import labels, passage, source_words
from gradoracle.tolerances import sci, tolerance_for
from gradoracle.user_checks import check_gradients, display_name

pytest_plugins = ["pytester"]

TESTS = Path(__file__).parent
FAST = CheckSettings(examples=4, seed=0)


def matvec(W: np.ndarray, x: np.ndarray) -> np.ndarray:
    return W @ x


def matvec_backward_off(g: np.ndarray, W: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    return {"W": np.outer(g, x) * 1.01, "x": W.T @ g}


def log_forward(x: np.ndarray) -> np.ndarray:
    return np.log(x)


def log_backward(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    return g / x


def _raises(*args: object, **kwargs: object) -> GradientMismatch:
    with pytest.raises(GradientMismatch) as info:
        check_gradients(*args, **kwargs)  # type: ignore[arg-type]
    return info.value


# ------------------------------------------------------------------ whose function


def test_a_user_check_names_the_function_and_says_your_backward() -> None:
    err = _raises(
        matvec,
        {"W": (2, 3), "x": (3,)},
        vjp=matvec_backward_off,
        identity="matvec-weight-grad",
        examples=5,
    )
    text = str(err)
    assert err.fault == Fault.BACKWARD
    first = text.splitlines()[0]
    assert first.startswith("gradient check failed: your function matvec (")
    assert "/ your backward matvec_backward_off / float64" in first
    assert (
        "fault: backward - your backward matvec_backward_off is not the derivative of your function matvec"
        in text
    )
    assert re.search(r"your backward = \S+ +analytic = \S+ +finite differences = \S+", text)
    # the project's inner words are gone
    assert "vjp:" not in text.split("  repro:")[0]
    assert "autodiff" not in text
    assert "adapter" not in text.split("  repro:")[0]


def test_a_framework_adapter_keeps_the_adapter_words() -> None:
    """Negative control: a conformance check speaks of the adapter and its autodiff."""
    r = check("matvec-weight-grad", "broken_adapters:ScaledAdapter", "float64", FAST)
    assert r.verdict == Verdict.FAIL
    assert "/ adapter ScaledAdapter / float64" in r.message.splitlines()[0]
    assert re.search(r"autodiff = \S+ +analytic = \S+", r.message)
    assert "your " not in r.message


def test_a_lambda_is_named_by_where_it_is_defined() -> None:
    err = _raises(lambda x: x**3, {"x": (3,)}, vjp=lambda g, x: 3 * x * g, examples=5)
    text = str(err)
    here = f"(lambda at {Path(__file__).name}:"
    assert f"your function {here}" in text
    assert f"your backward {here}" in text
    assert "your function forward" not in text
    # the repro still has code a user can complete: distinct placeholder names
    assert "vjp=vjp" in (err.repro or "")
    assert display_name(matvec) == "matvec"


# ------------------------------------------------------------------ input domain


def test_a_domain_error_of_the_forward_is_an_input_domain_problem_with_a_hint() -> None:
    err = _raises(log_forward, {"x": (3,)}, vjp=log_backward, examples=20)
    text = str(err)
    assert err.fault == Fault.DOMAIN
    assert "fault: input-domain - the inputs lie outside the domain of your function log_forward" in text
    assert "hint: restrict the inputs" in text
    assert "broke its contract" not in text
    assert re.search(r"the forward gives -?(nan|inf)", text)


def test_a_math_domain_error_raised_by_the_forward_is_an_input_domain_problem() -> None:
    import math as m

    def sqrt_all(x: np.ndarray) -> np.ndarray:
        return np.array([m.sqrt(v) for v in x])

    err = _raises(sqrt_all, {"x": (2,)}, vjp=lambda g, x: g / (2 * np.sqrt(x)), examples=20)
    assert err.fault == Fault.DOMAIN
    assert "math domain error" in str(err)


def test_the_domain_result_is_an_error_record_not_a_gradient_failure() -> None:
    with pytest.raises(GradientMismatch):
        check_gradients(log_forward, {"x": (3,)}, vjp=log_backward, examples=20)
    from gradoracle.user_checks import UserFunctionAdapter, user_identity

    ident, user = user_identity(log_forward, {"x": (3,)}, vjp=log_backward)
    r = check(ident, UserFunctionAdapter(user), "float64", FAST.with_(examples=20))
    assert r.verdict == Verdict.ERROR and r.fault == Fault.DOMAIN


def test_a_real_contract_break_stays_an_adapter_fault() -> None:
    """Negative controls: a wrong shape from the user's backward, a NaN from a framework."""

    def bad_shape(g: np.ndarray, x: np.ndarray) -> np.ndarray:
        return np.zeros(x.size + 1)

    err = _raises(lambda x: x * 2.0, {"x": (3,)}, vjp=bad_shape, examples=3)
    assert err.fault == Fault.ADAPTER
    assert "input-domain" not in str(err)
    r = check("elementwise-sigmoid", "broken_adapters:NaNAdapter", "float64", FAST)
    assert r.fault == Fault.ADAPTER and "input-domain" not in r.message


# ------------------------------------------------------------------ the tolerance in words


def _allowed_parts(text: str) -> tuple[float, float, float]:
    m = re.search(r"\|error\| (\S+) > allowed (\S+) = 128 ulp x magnitude of the terms (\S+)", text)
    assert m, text
    return float(m.group(1)), float(m.group(2)), float(m.group(3))


def test_the_allowance_is_spelled_out_and_adds_up() -> None:
    err = _raises(
        matvec, {"W": (2, 3), "x": (3,)}, vjp=matvec_backward_off, identity="matvec-weight-grad", examples=5
    )
    error, allowed, magnitude = _allowed_parts(str(err))
    assert err.worst is not None
    assert math.isclose(allowed, err.worst.allowed, rel_tol=0.05)
    assert math.isclose(error, err.worst.abs_error, rel_tol=0.05)
    # allowed = 128 eps m (+ a small rounding room): the words match the arithmetic
    eps = float(np.finfo(np.float64).eps)
    assert 128 * eps * magnitude <= allowed * 1.05
    assert allowed <= 1.05 * (128 * eps * magnitude) * 1.5
    assert sci(0.13) == "1.3e-1" and sci(3.7e-15) == "3.7e-15" and sci(2.0) == "2.0e0"


def test_the_formula_is_one_verbose_away() -> None:
    r = check("conv-input", "broken_adapters:NoRot180Adapter", "float64", FAST)
    formula = tolerance_for("float64").describe()
    assert formula in r.message  # the record keeps everything
    assert formula not in brief_message(r.message)
    assert formula in brief_message(r.message, verbose=True)
    assert "allowed" in brief_message(r.message)
    err = _raises(matvec, {"W": (2, 3), "x": (3,)}, vjp=matvec_backward_off, examples=5)
    assert "tolerance formula:" not in str(err)
    err = _raises(matvec, {"W": (2, 3), "x": (3,)}, vjp=matvec_backward_off, examples=5, verbose=True)
    assert "tolerance formula: float64" in str(err)


FIXTURE_TEST = """
import numpy as np

def f(x):
    return x ** 2

def f_backward(g, x):
    return 2.5 * x * g

def test_mine(gradoracle):
    gradoracle.check(f, {"x": (3,)}, vjp=f_backward)
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_pytest_verbose_shows_the_formula(pytester: pytest.Pytester, verbose: bool) -> None:
    pytester.makepyfile(test_mine=FIXTURE_TEST)
    args = ["-p", "no:cacheprovider", "--gradoracle-examples", "3"] + (["-v"] if verbose else [])
    result = pytester.runpytest(*args)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "your backward f_backward" in out
    assert "finite-difference accuracy" in out
    assert ("tolerance formula: float64" in out) == verbose


# ------------------------------------------------------------------ notes labels


def test_every_notes_label_is_named_by_its_section_title() -> None:
    for label in labels():
        title = passage(label).title
        assert source_words(label) == f'notes "{title}"'
        assert source_words(f"{label}, identity x") == f'notes "{title}", identity x'
    assert source_words("notes:no-such-label") == "notes:no-such-label"
    assert source_words("your reference f") == "your reference f"


def test_messages_name_the_notes_section_not_the_label() -> None:
    r = check("max-pool", "broken_adapters:WrongPixelMaxPoolAdapter", "float64", FAST)
    head = r.message.splitlines()[0]
    assert 'max-pool (notes "Pooling layers: max pooling")' in head
    assert "notes:max-pool" not in head


def test_explain_prints_the_notes_passage(capsys: pytest.CaptureFixture[str]) -> None:
    from gradoracle.cli import main

    assert main(["explain", "conv-input"]) == 0
    out = capsys.readouterr().out
    assert 'notes "CNN example 2: gradient w.r.t. the input"' in out
    assert passage("notes:conv-input").text.splitlines()[0] in out
    assert main(["explain", "mlp-a-logits"]) == 0
    assert passage("notes:mlp").text.splitlines()[0] in capsys.readouterr().out
