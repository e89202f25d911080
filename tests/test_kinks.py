"""Kinks judged (#13): generalised gradients, convention probes with a verdict, draws next to kinks.

- the allowed sets of :mod:`gradoracle.subdifferential` accept every value of the set and
  reject values outside it (negative controls for each kind of set);
- one small adapter per defect of the issue (MyGrad's leaky_relu'(0) = 0 and maximum tie
  giving 0 to both, tinygrad's ELU vanishing near 0, a ReLU written ``x > 1e-3``), each failing
  with fault ``outside-subdifferential``, the value, the allowed set and a repro that
  reproduces; the correct adapters and the autograd example stay at zero failures;
- the conformance strategies draw next to kinks (both sides, never at them) and near and at
  smooth special points, and the runner catches the rules that are wrong only there;
- reports mark each probe value as a valid convention or a failure.
"""

from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gradoracle import CheckSettings, Verdict, check, get_identity
from gradoracle.adapters.numpy_engine import NumpyEngineAdapter, Rules
from gradoracle.conventions import (
    LAYER_PROBES,
    OFF,
    PROBES,
    OutsideSubdifferential,
    get_probe,
    reproduce_probe,
    run_probe,
    run_probes,
)
from gradoracle.results import Fault
from gradoracle.selftest.common import draw_examples
from gradoracle.selftest.mutant_rules import (
    EluVanishesNearZero,
    LeakyReluZeroAtZero,
    MaximumTieGivesZero,
    ReluDerivativeTwoAtZero,
    ReluThresholdMilli,
)
from gradoracle.subdifferential import Intervals, TieSplits, WindowRoutings

DTYPES = ("float64", "float32")

# --------------------------------------------------------------------------- allowed sets


def test_intervals_accept_the_hull_and_reject_outside() -> None:
    s = Intervals("x", np.array([0.0, 0.01, 1.0]), np.array([0.0, 1.0, 1.0]))
    for inside in ([0.0, 0.01, 1.0], [0.0, 0.5, 1.0], [0.0, 1.0, 1.0]):
        assert s.judge({"x": np.array(inside)}, "float64").inside, inside
    for outside in ([0.0, 0.0, 1.0], [0.0, 1.5, 1.0], [1e-6, 0.5, 1.0], [0.0, np.nan, 1.0]):
        j = s.judge({"x": np.array(outside)}, "float64")
        assert not j.inside, outside
        assert "allowed" in j.where
    # float32 rounding of an exact value stays inside; 1e-3 relative does not
    assert s.judge({"x": np.array([0.0, 0.5, float(np.float32(1.0 + 1e-7))])}, "float32").inside
    assert not s.judge({"x": np.array([0.0, 0.5, 1.001])}, "float32").inside


def test_tie_splits_need_non_negative_shares_summing_to_the_cotangent() -> None:
    s = TieSplits(np.array([1.0, 3.0]), np.array([1.0, 0.0]), np.ones(2))
    for ga, gb in (([0.5, 1.0], [0.5, 0.0]), ([1.0, 1.0], [0.0, 0.0]), ([0.0, 1.0], [1.0, 0.0])):
        assert s.judge({"a": np.array(ga), "b": np.array(gb)}, "float64").inside
    for ga, gb in (
        ([0.0, 1.0], [0.0, 0.0]),  # MyGrad: 0 to both at a tie
        ([1.0, 1.0], [1.0, 0.0]),  # 1 to both: sums to 2
        ([1.5, 1.0], [-0.5, 0.0]),  # sums to 1 but a negative share
        ([0.5, 0.5], [0.5, 0.5]),  # no tie in element 1: the split is wrong there
    ):
        j = s.judge({"a": np.array(ga), "b": np.array(gb)}, "float64")
        assert not j.inside, (ga, gb)


def test_window_routings_solve_ties_across_overlapping_windows() -> None:
    x = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    s = WindowRoutings(x, 2, 1, np.ones(4))
    # windows 0 and 2 must send to the centre; windows 1 and 3 split between the two maxima
    for g in (
        [[0, 0, 0], [0, 4, 0], [0, 0, 0]],
        [[0, 0, 0], [0, 3, 1], [0, 0, 0]],
        [[0, 0, 0], [0, 2, 2], [0, 0, 0]],
    ):
        assert s.judge({"x": np.array(g, dtype=float)}, "float64").inside, g
    for g in (
        [[0, 0, 0], [0, 1, 3], [0, 0, 0]],  # windows 0 and 2 need 2 at the centre
        [[0, 0, 0], [0, 3, 2], [0, 0, 0]],  # the notes read literally: sums to 5, not 4
        [[0, 0, 0], [0, 0, 0], [0, 0, 0]],  # ties giving 0 to every maximum
        [[1, 0, 0], [0, 3, 0], [0, 0, 0]],  # a pixel that is no window's maximum
        [[0, 0, 0], [0, 5, -1], [0, 0, 0]],  # a negative weight
    ):
        assert not s.judge({"x": np.array(g, dtype=float)}, "float64").inside, g


# ------------------------------------------------------------ one adapter per defect


def _engine(rules: type[Rules], name: str) -> NumpyEngineAdapter:
    return NumpyEngineAdapter(rules=rules(), name=name)


@pytest.mark.parametrize(
    ("rules", "probe", "where"),
    [
        (LeakyReluZeroAtZero, "leaky-relu-at-0", "allowed [0.01, 1]"),
        (MaximumTieGivesZero, "maximum-tie", "with t in [0, 1]"),
        (MaximumTieGivesZero, "maximum-same-input", "allowed {1}"),
        (EluVanishesNearZero, "elu-at-0", "allowed {1}"),
        (ReluThresholdMilli, "relu-at-0", "x = 4.7019774e-38: got 0, allowed {1}"),
        (ReluDerivativeTwoAtZero, "relu-at-0", "x = 0: got 2, allowed [0, 1]"),
    ],
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_each_defect_fails_its_probe_outside_the_subdifferential(
    rules: type[Rules], probe: str, where: str, dtype: str
) -> None:
    adapter = _engine(rules, f"defect-{rules.__name__}")
    result = run_probe(get_probe(probe), adapter, dtype)
    assert result.verdict == "fail" and result.fault == str(Fault.OUTSIDE_SUBDIFFERENTIAL)
    assert where in result.outside, result.outside
    assert result.allowed and result.observed is not None and result.repro
    message = result.message()
    assert "outside the generalised" in message and "allowed:" in message and "reproduce_probe" in message
    # the correct engine passes the same probe: the negative control
    assert run_probe(get_probe(probe), NumpyEngineAdapter(), dtype).verdict == "convention"


class MyGradLikeLeakyRelu(NumpyEngineAdapter):
    """A third-party adapter in a module (loaded by spec in the repro)."""

    def __init__(self) -> None:
        super().__init__(rules=LeakyReluZeroAtZero(), name="mygrad-like")


def test_the_repro_reproduces_and_a_fixed_adapter_passes() -> None:
    spec = f"{__name__}:MyGradLikeLeakyRelu"
    result = run_probe(get_probe("leaky-relu-at-0"), MyGradLikeLeakyRelu(), "float64")
    assert spec in (result.repro or "")
    with pytest.raises(OutsideSubdifferential) as info:
        reproduce_probe("leaky-relu-at-0", MyGradLikeLeakyRelu(), "float64")
    assert info.value.result.outside == result.outside
    ok = reproduce_probe("leaky-relu-at-0", "numpy", "float64")
    assert ok.verdict == "convention" and ok.convention == "leaky_relu'(0) = 0.01"


@pytest.mark.parametrize(
    ("rules", "identity"),
    [
        (ReluThresholdMilli, "elementwise-relu"),
        (ReluThresholdMilli, "mlp-d-relu-mask"),
        (EluVanishesNearZero, "elementwise-elu"),
    ],
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rules_wrong_only_next_to_a_point_fail_the_conformance_check(
    rules: type[Rules], identity: str, dtype: str
) -> None:
    result = check(identity, _engine(rules, "near"), dtype, CheckSettings(examples=20, seed=0))
    assert result.verdict == Verdict.FAIL and result.fault == Fault.BACKWARD, result.message
    assert "reproduce(" in (result.repro or "")


class _AutogradStyleEluTie(NumpyEngineAdapter):
    """ELU written ``where(x > 0, x, expm1(minimum(x, 0)))`` under a tie-splitting minimum: elu'(0) = 1/2."""

    def __init__(self) -> None:
        class EluHalfAtZero(Rules):
            def elu_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
                g = super().elu_backward(delta, x, z)
                return np.where(x == 0, 0.5 * delta, g)

        super().__init__(rules=EluHalfAtZero(), name="elu-half-at-0")


def test_elu_is_checked_at_zero_by_the_conformance_strategy_too() -> None:
    result = check("elementwise-elu", _AutogradStyleEluTie(), "float64", CheckSettings(examples=30, seed=0))
    assert result.verdict == Verdict.FAIL and result.fault == Fault.BACKWARD, result.message
    assert run_probe(get_probe("elu-at-0"), _AutogradStyleEluTie(), "float64").verdict == "fail"


# ---------------------------------------------------------------- correct adapters


def _available(name: str) -> Any:
    from gradoracle.adapters import load_adapter

    if name != "numpy" and find_spec(name) is None:
        pytest.skip(f"{name} not installed")
    return load_adapter(name)


@pytest.mark.parametrize("name", ["numpy", "torch", "jax", "autograd"])
def test_correct_adapters_give_valid_conventions_only(name: str) -> None:
    rows = run_probes([_available(name)], DTYPES)
    assert len(rows) == 2 * len(PROBES)
    # the layer probes (issue 14) are "unsupported" on an adapter without the layer ops (autograd)
    layer = {p.name for p in LAYER_PROBES}
    bad = [
        r.message()
        for r in rows
        if r.verdict != "convention" and not (r.probe in layer and r.verdict == "unsupported")
    ]
    assert not bad, bad
    by = {r.probe: r for r in rows if r.dtype == "float64"}
    assert by["maximum-same-input"].observed == [1.0, 1.0, 1.0]
    assert by["max-pool-of-copies"].observed == [[4.0]]
    assert by["elu-at-0"].convention == "elu'(0) = 1"
    assert "no tie" in by["max-pool-overlapping-windows"].convention
    assert "no tie" in by["max-pool-near-tie"].convention


def test_a_broken_helper_op_is_an_error_not_a_kink_failure() -> None:
    class DoubledMatmul(Rules):
        def matmul_backward(
            self, delta: np.ndarray, a: np.ndarray, b: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray]:
            da, db = super().matmul_backward(delta, a, b)
            return 2 * da, 2 * db

    result = run_probe(get_probe("max-pool-of-copies"), _engine(DoubledMatmul, "dm"), "float64")
    assert result.verdict == "error" and "cannot judge" in (result.error or "")


def test_an_adapter_without_the_new_ops_is_unsupported_not_failed() -> None:
    class Old(NumpyEngineAdapter):
        def supported_ops(self) -> frozenset[str]:
            return super().supported_ops() - {"maximum", "clamp"}

    rows = run_probes([Old()], ["float64"])
    by = {r.probe: r for r in rows}
    assert by["maximum-tie"].verdict == "unsupported" and "maximum" in (by["maximum-tie"].error or "")
    assert by["relu-at-0"].verdict == "convention"


def test_an_adapter_that_raises_is_an_error_row() -> None:
    class Raises(NumpyEngineAdapter):
        def vjp(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("boom")

    result = run_probe(get_probe("relu-at-0"), Raises(), "float64")
    assert result.verdict == "error" and "boom" in (result.error or "")


# --------------------------------------------------------------------- strategies


def _draws(identity: str, name: str, n: int = 60) -> np.ndarray:
    return np.concatenate([ex.inputs[name].reshape(-1) for ex in draw_examples(identity, n, 0)])


@pytest.mark.parametrize("identity", ["elementwise-relu", "elementwise-leaky-relu", "elementwise-abs"])
def test_kinks_are_approached_from_both_sides_but_never_hit(identity: str) -> None:
    x = _draws(identity, "x")
    assert not np.any(x == 0)
    tiny = np.abs(x) < 1e-20
    assert np.any(tiny & (x > 0)) and np.any(tiny & (x < 0))
    assert np.min(np.abs(x)) >= 2.0**-124
    assert np.any(np.abs(x) >= 0.05)  # ordinary draws too, for finite differences


@pytest.mark.parametrize(
    "identity", ["elementwise-elu", "elementwise-softplus", "elementwise-silu", "elementwise-gelu"]
)
def test_smooth_special_points_are_drawn_near_and_at(identity: str) -> None:
    x = _draws(identity, "x")
    assert np.any(x == 0)
    near = (np.abs(x) < 1e-6) & (x != 0)
    assert np.any(near & (x > 0)) and np.any(near & (x < 0))
    assert "smooth at 0" in get_identity(identity).kink_policy


def test_max_pool_draws_windows_close_to_a_tie_but_never_tied() -> None:
    close = 0
    for ex in draw_examples("max-pool", 60, 0):
        X, k = ex.inputs["X"], ex.params["k"]
        ho, wo = X.shape[0] // k, X.shape[1] // k
        if k == 1:
            continue
        win = np.sort(
            X[: ho * k, : wo * k].reshape(ho, k, wo, k).transpose(0, 2, 1, 3).reshape(ho, wo, -1), axis=2
        )
        gap = win[:, :, -1] - win[:, :, -2]
        assert np.all(gap > 0)
        assert np.all(X.astype(np.float32).astype(np.float64) == X)  # the same gaps in float32
        close += int(np.sum(gap < 1e-5))
    assert close > 0


def test_mlp_d_draws_z1_next_to_the_kink() -> None:
    z1 = _draws("mlp-d-relu-mask", "z1")
    assert not np.any(z1 == 0) and np.any(np.abs(z1) < 1e-20)


def test_probe_inputs_are_exact_and_not_subnormal() -> None:
    assert OFF == 2.0**-124 and float(np.float32(OFF)) == OFF
    assert np.finfo(np.float32).tiny < OFF


# ------------------------------------------------------------------------ reports


def test_report_marks_each_value_valid_convention_or_failure(tmp_path: Path) -> None:
    from gradoracle.reporting import write_reports

    probes = run_probes([NumpyEngineAdapter(), _engine(LeakyReluZeroAtZero, "mygrad-like")], ["float64"])
    written = write_reports([], probes, tmp_path, ["json", "md"], meta={"settings": {}})
    doc = json.loads(Path(written["json"]).read_text())
    assert doc["summary"]["convention_failures"] == 1 and doc["summary"]["status"] == "nonconformance"
    failed = [c for c in doc["conventions"] if c["verdict"] == "fail"]
    assert [(c["probe"], c["adapter"], c["fault"]) for c in failed] == [
        ("leaky-relu-at-0", "mygrad-like", "outside-subdifferential")
    ]
    md = Path(written["md"]).read_text()
    assert "| judged |" in md and "valid convention" in md
    assert "FAILURE: outside-subdifferential" in md and "reproduce_probe" in md


def test_report_of_correct_adapters_has_no_convention_failures(tmp_path: Path) -> None:
    from gradoracle.reporting import write_reports

    written = write_reports([], run_probes([NumpyEngineAdapter()], DTYPES), tmp_path, ["json"], meta={})
    doc = json.loads(Path(written["json"]).read_text())
    assert doc["summary"]["convention_failures"] == 0
    assert all(c["verdict"] == "convention" for c in doc["conventions"])


# ---------------------------------------------------------------------------- CLI


def test_cli_check_and_report_fail_on_a_probe_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gradoracle.cli import main

    (tmp_path / "kinked_cli.py").write_text(
        "from gradoracle.adapters.numpy_engine import NumpyEngineAdapter\n"
        "from gradoracle.selftest.mutant_rules import MaximumTieGivesZero\n\n\n"
        "class TieZero(NumpyEngineAdapter):\n"
        "    def __init__(self):\n"
        "        super().__init__(rules=MaximumTieGivesZero(), name='tie-zero')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    base = ["--identity", "elementwise-sigmoid", "--examples", "2", "--dtype", "float64"]
    assert main(["check", "--adapter", "kinked_cli:TieZero", *base]) == 1
    out = capsys.readouterr().out
    assert "maximum-same-input [tie-zero-float64]: fail" in out
    assert "got 0, allowed {1}" in out and "reproduce_probe('maximum-same-input', 'kinked_cli:TieZero'" in out
    assert "convention probe(s) outside the generalised gradient" in out
    # negative control: the correct engine exits 0
    assert main(["check", "--adapter", "numpy", *base]) == 0
    capsys.readouterr()
    report = [
        "report",
        "--adapter",
        "kinked_cli:TieZero",
        *base,
        "--out",
        str(tmp_path / "r"),
        "--format",
        "json,md",
    ]
    assert main(report) == 1
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert doc["summary"]["status"] == "nonconformance" and doc["summary"]["convention_failures"] == 2
