"""The runner: three-way comparison, localisation, bad adapters as records, repro snippets."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gradoracle import CheckSettings, Fault, GradientMismatch, Verdict, check, reproduce
from gradoracle import finite_differences as fd
from gradoracle.tolerances import tolerance_for

TESTS = Path(__file__).parent
FAST = CheckSettings(examples=8, seed=1, timeout_s=20.0)


def test_correct_engine_passes_and_records_errors() -> None:
    r = check("mlp", "numpy", "float64", FAST)
    assert r.verdict == Verdict.PASS, r.message
    assert r.examples >= 8
    assert set(r.errors) == {"forward", "analytic", "fd", "oracle"}
    assert set(r.errors["analytic"]) == {"W1", "b1", "W2", "b2", "x"}
    assert 0 <= r.max_ratio() < 1
    assert r.tolerance["dtype"] == "float64" and r.fd_dtype == "float64"


@pytest.mark.parametrize(
    ("adapter", "identity", "verdict", "fault", "needle"),
    [
        (
            "broken_adapters:RaisingAdapter",
            "matvec-weight-grad",
            Verdict.ERROR,
            Fault.ADAPTER,
            "vjp raised RuntimeError",
        ),
        ("broken_adapters:WrongShapeAdapter", "matvec-weight-grad", Verdict.FAIL, Fault.ADAPTER, "has shape"),
        ("broken_adapters:WrongDtypeAdapter", "conv-input", Verdict.FAIL, Fault.DTYPE, "has dtype float16"),
        (
            "broken_adapters:MissingGradAdapter",
            "mlp",
            Verdict.FAIL,
            Fault.ADAPTER,
            "no gradient returned for input 'x'",
        ),
        ("broken_adapters:NaNAdapter", "avg-pool", Verdict.FAIL, Fault.ADAPTER, "is not finite"),
        (
            "broken_adapters:NoRot180Adapter",
            "conv-input",
            Verdict.FAIL,
            Fault.BACKWARD,
            "autodiff vs analytic",
        ),
        ("broken_adapters:WrongPixelMaxPoolAdapter", "max-pool", Verdict.FAIL, Fault.BACKWARD, "input 'X'"),
        ("broken_adapters:ScaledAdapter", "mlp", Verdict.FAIL, Fault.BACKWARD, "error/tolerance"),
        ("broken_adapters:TrueConvolutionAdapter", "conv-filter", Verdict.FAIL, Fault.FORWARD, "forward"),
    ],
)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_broken_adapters_become_records_with_the_right_localisation(
    adapter: str, identity: str, verdict: Verdict, fault: Fault, needle: str, dtype: str
) -> None:
    r = check(identity, adapter, dtype, FAST)
    assert r.verdict == verdict, r.message
    assert r.fault == fault, r.message
    assert needle in r.message
    assert r.repro and "reproduce(" in r.repro
    assert r.counterexample is not None


def test_true_convolution_forward_is_consistent_with_its_own_backward() -> None:
    """Forward fault: autodiff disagrees with the notes, but agrees with FD of its own forward."""
    r = check("conv-input", "broken_adapters:TrueConvolutionAdapter", "float64", FAST)
    assert r.fault == Fault.FORWARD
    assert r.errors["fd"]["X"].max_ratio < 1 if "X" in r.errors["fd"] else True
    assert r.max_ratio("forward") > 1


def test_a_hanging_adapter_times_out_and_the_run_goes_on() -> None:
    r = check("matvec-jacobian", "broken_adapters:HangingAdapter", "float64", FAST.with_(timeout_s=0.3))
    assert r.verdict == Verdict.ERROR
    assert r.fault == Fault.ADAPTER
    assert "did not return within 0.3 s" in r.message
    assert r.duration_s < 20
    assert check("matvec-jacobian", "numpy", "float64", FAST).verdict == Verdict.PASS


def test_unavailable_unknown_and_unsupported() -> None:
    r = check("mlp", "broken_adapters:UnavailableAdapter", "float64", FAST)
    assert r.verdict == Verdict.SKIP and "frobnicate is not installed" in r.message
    r = check("mlp", "nosuchframework", "float64", FAST)
    assert r.verdict == Verdict.ERROR and "unknown adapter" in r.message
    r = check("no-such-identity", "numpy", "float64", FAST)
    assert r.verdict == Verdict.ERROR and "unknown identity" in r.message
    r = check("mlp", "numpy", "float16", FAST)
    assert r.verdict == Verdict.ERROR and "unknown dtype" in r.message


def test_failure_message_names_everything_and_the_repro_reproduces_it(tmp_path: Path) -> None:
    r = check("conv-input", "broken_adapters:NoRot180Adapter", "float32", FAST)
    msg = r.message
    for piece in (
        "conv-input",
        'notes "CNN example 2: gradient w.r.t. the input"',
        "no-rot180",
        "float32",
        "input 'X'",
        "autodiff =",
        "analytic =",
        "finite differences =",
        "tolerance formula: float32",
        "repro:",
    ):
        assert piece in msg, piece
    assert re.search(
        r"allowed \d\.\de-?\d+ = (128 ulp x magnitude of the terms|finite-difference accuracy)", msg
    )
    assert r.worst is not None and r.worst.input == "X" and r.worst.abs_error > r.worst.allowed
    # the snippet runs on its own (fresh interpreter) and raises GradientMismatch
    script = tmp_path / "repro.py"
    script.write_text(r.repro or "")
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(TESTS)},
        timeout=120,
    )
    assert proc.returncode != 0
    assert "GradientMismatch" in proc.stderr and "conv-input" in proc.stderr


def test_reproduce_passes_on_a_correct_adapter() -> None:
    inputs = {"X": np.arange(16.0).reshape(4, 4) / 7, "K": np.array([[1.0, -2.0], [0.5, 0.25]])}
    outcome = reproduce("conv-input", "numpy", "float32", inputs, seed=3)
    assert outcome.passed
    with pytest.raises(GradientMismatch) as info:
        reproduce("conv-input", "broken_adapters:NoRot180Adapter", "float32", inputs, seed=3)
    assert info.value.fault == Fault.BACKWARD and info.value.identity == "conv-input"


def test_shrinking_gives_a_small_counterexample() -> None:
    r = check("conv-input", "broken_adapters:NoRot180Adapter", "float64", CheckSettings(examples=30, seed=4))
    assert r.counterexample is not None
    X = np.asarray(r.counterexample["inputs"]["X"])
    K = np.asarray(r.counterexample["inputs"]["K"])
    assert K.shape == (2, 2)  # the smallest kernel on which rot180 matters
    assert X.shape == (2, 2)


# ------------------------------------------------------------------ finite differences


def test_step_size_is_the_cube_root_of_eps_times_magnitude() -> None:
    assert fd.step_size("float64", {"x": np.array([0.5])}) == pytest.approx(
        np.finfo(np.float64).eps ** (1 / 3)
    )
    assert fd.step_size("float32", {"x": np.array([-4.0])}) == pytest.approx(
        4 * np.finfo(np.float32).eps ** (1 / 3)
    )


def test_central_differences_and_richardson() -> None:
    f = lambda a: np.sin(a["x"]) * a["x"] ** 3  # noqa: E731
    x = {"x": np.array([0.7, -1.3])}
    u = np.array([1.0, -2.0])
    v = {"x": np.array([0.6, 0.8])}
    exact = float(u @ ((np.cos(x["x"]) * x["x"] ** 3 + 3 * np.sin(x["x"]) * x["x"] ** 2) * v["x"]))
    h = 1e-2
    d = fd.central_difference(f, x, u, v, h, "float64")
    rich = fd.richardson(f, x, u, v, h, "float64")
    assert abs(d - exact) > abs(rich.value - exact) * 10  # extrapolation removes the h^2 term
    assert abs(d - exact) <= 2 * rich.error  # and the estimate bounds the plain error
    J = fd.jacobian(lambda a: a["x"] ** 2, {"x": np.array([1.0, 2.0, 3.0])}, "x")
    np.testing.assert_allclose(J, np.diag([2.0, 4.0, 6.0]), atol=1e-8)


def test_directions_full_for_small_inputs_projected_for_large() -> None:
    rng = np.random.default_rng(0)
    full = fd.directions(rng, {"W": (2, 3), "x": (3,)}, 2, 12)
    assert len(full) == 9 and all(fd.is_basis(d) is not None for d in full)
    proj = fd.directions(rng, {"W": (20, 30)}, 3, 12)
    assert len(proj) == 3 and fd.is_basis(proj[0]) is None
    assert np.sqrt(sum(np.sum(v**2) for v in proj[0].values())) == pytest.approx(1.0)


def test_cost_does_not_grow_with_input_size() -> None:
    """Projected FD: the number of forward evaluations per example is constant in the size."""
    from gradoracle.identities import get_identity
    from gradoracle.runner import evaluate_example
    from gradoracle.strategies import Example

    calls: list[int] = []

    from gradoracle.adapters.numpy_engine import NumpyEngineAdapter

    class Counting(NumpyEngineAdapter):
        def forward(self, fn, inputs, dtype):  # type: ignore[no-untyped-def]
            calls.append(1)
            return super().forward(fn, inputs, dtype)

    counts = []
    for n in (16, 64, 256):
        calls.clear()
        rng = np.random.default_rng(n)
        ex = Example({"W": rng.normal(size=(n, n)), "x": rng.normal(size=n)}, {}, 1)
        assert evaluate_example(get_identity("matvec-weight-grad"), Counting(), "float64", ex).passed
        counts.append(len(calls))
    assert counts[0] == counts[1] == counts[2] == 2 * CheckSettings().directions


# ------------------------------------------------------------------- tolerances


def test_tolerance_model_numbers() -> None:
    t64, t32 = tolerance_for("float64"), tolerance_for("float32")
    assert t64.rtol == pytest.approx(128 * 2.220446049250313e-16)
    assert t32.rtol == pytest.approx(128 * 1.1920929e-07)
    # a 1e-3 relative bug is above the float32 bound on a well-conditioned gradient
    assert t32.allowed(magnitude=1.0, noise=1e-7) < 1e-3 * 1.0
    assert "float32" in t32.describe() and "eta" in t32.describe()


def test_oracle_import_does_not_import_frameworks() -> None:
    code = textwrap.dedent(
        """
        import sys
        import gradoracle, gradoracle.cli, gradoracle.runner, gradoracle.conventions, adapters
        import gradoracle.adapters.torch_adapter, gradoracle.adapters.jax_adapter
        bad = [m for m in ("torch", "jax", "jaxlib", "matplotlib") if m in sys.modules]
        assert not bad, bad
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_run_s_modes_reach_the_adapter_and_a_failing_hint_is_the_adapter_s_error() -> None:
    """``CheckSettings.modes`` is handed to the adapter's optional ``plan_modes`` before a check
    (through its guard); a hint that raises makes that check an adapter error naming it, and a
    matrix fills the hint in from its tasks."""
    from gradoracle.adapters.numpy_engine import NumpyEngineAdapter
    from gradoracle.matrix import CheckTask, planned_modes, run_matrix

    heard: list[tuple[str, ...]] = []

    class Listening(NumpyEngineAdapter):
        def plan_modes(self, modes: Any) -> None:
            heard.append(tuple(modes))

    ad = Listening()
    assert check("matvec-jacobian", ad, "float64", CheckSettings(examples=3)).verdict == Verdict.PASS
    assert heard == []  # no run, no hint
    settings = CheckSettings(examples=3, modes=("vjp", "jvp"))
    assert check("matvec-jacobian", ad, "float64", settings).verdict == Verdict.PASS
    assert heard == [("vjp", "jvp")]

    tasks = [
        CheckTask("matvec-jacobian", "", "broken_adapters:PlanRaisesAdapter", "PlanRaisesAdapter", "float64"),
        CheckTask("matvec-jacobian", "", "numpy", "numpy", "float64"),
    ]
    assert planned_modes([*tasks, CheckTask("mlp", "", "jax", "jax", "float32", "hvp")]) == ("vjp", "hvp")
    raising, fine = run_matrix(tasks, CheckSettings(examples=3)).results
    assert (raising.verdict, raising.fault) == (Verdict.ERROR, Fault.ADAPTER)
    assert "plan_modes()" in raising.message and "cannot plan for these modes" in raising.message
    assert fine.verdict == Verdict.PASS
