"""The bench machinery (gradoracle.bench, ``gradoracle bench``) on tiny sizes: cases, timing,
ratios, evaluation counts, detection power, the files written and the CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gradoracle import bench as B
from gradoracle.cli import main
from gradoracle.runner import CheckSettings
from gradoracle.strategies import KINK_MARGIN

# ---------------------------------------------------------------------------- cases


def test_default_cases_are_the_issue_sizes() -> None:
    cases = B.plan_cases()
    by_op = {op: [c.size for c in cases if c.op == op] for op in B.BENCH_OPS}
    assert by_op["linear"] == [8, 32, 128, 512, 1024]  # 8 and 1024: issue 16's growth target
    assert by_op["conv"] == [16, 32, 64, 128]
    assert by_op["max-pool"] == by_op["avg-pool"] == [16, 32, 64, 128]
    assert by_op["mlp"]
    quick = B.plan_cases(quick=True)
    assert {c.op for c in quick} == set(B.BENCH_OPS) and len(quick) < len(cases)
    custom = B.plan_cases(["linear"], {"linear": [4, 2, 4]})
    assert [(c.op, c.size) for c in custom] == [("linear", 2), ("linear", 4)]


def test_bad_cases_are_rejected_with_what_fits() -> None:
    with pytest.raises(B.BenchError, match="choose from"):
        B.plan_cases(["lineaar"])
    with pytest.raises(B.BenchError, match="--size names unknown op"):
        B.plan_cases(None, {"nope": [4]})
    with pytest.raises(B.BenchError, match="size >= 3"):
        B.BenchCase("conv", 2)


@pytest.mark.parametrize("op", B.BENCH_OPS)
def test_examples_fit_their_identity(op: str) -> None:
    case = B.BenchCase(op, 6)
    ex = case.example()
    ident = case.identity
    ident.check_shapes(ex.inputs, ex.params)
    assert np.all(np.isfinite(ident.reference_forward(ex.inputs, ex.params)))
    assert case.elements == sum(ex.inputs[n].size for n in ident.wrt)
    assert case.example().inputs.keys() == ex.inputs.keys()
    for name, value in ex.inputs.items():  # deterministic
        np.testing.assert_array_equal(case.example().inputs[name], value)
    if op == "mlp":  # kept away from the ReLU kink like the identity's own strategy
        z1 = ex.inputs["W1"] @ ex.inputs["x"] + ex.inputs["b1"]
        assert np.min(np.abs(z1)) >= 2 * KINK_MARGIN - 1e-12


def test_perturb_has_the_asked_relative_size() -> None:
    rng = np.random.default_rng(0)
    g, n = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    p = B.perturb(g, 1e-3, n)
    assert np.linalg.norm(p - g) / np.linalg.norm(g) == pytest.approx(1e-3)
    np.testing.assert_array_equal(B.perturb(g, 0.0, n), g)
    assert B.perturb(g.astype(np.float32), 1e-3, n).dtype == np.float32


# --------------------------------------------------------------------------- timing


def test_time_calls_counts_every_call_and_keeps_the_cold_one_apart() -> None:
    calls: list[int] = []

    def call() -> bool:
        calls.append(1)
        return True

    t = B.time_calls(call, repeats=3, min_time_s=0.0, budget_s=10.0)
    assert t.calls == len(calls) == 2 + 3
    assert t.passed and t.cpu_s >= 0 and t.first_cpu_s >= 0

    outcomes = iter([True, False] + [True] * 100)
    assert not B.time_calls(lambda: next(outcomes), repeats=1, min_time_s=0.0).passed


def test_time_calls_does_not_repeat_a_call_over_half_the_budget() -> None:
    calls: list[int] = []

    def slow() -> bool:
        calls.append(1)
        end = time.process_time() + 0.02
        while time.process_time() < end:
            pass
        return True

    t = B.time_calls(slow, repeats=5, min_time_s=0.0, budget_s=0.01)
    assert len(calls) == t.calls == 1  # the cold call already took over half the budget
    assert t.cpu_s >= 0.015
    calls.clear()
    t = B.time_calls(slow, repeats=5, min_time_s=0.0, budget_s=10.0)
    assert len(calls) == t.calls == 2 + 5  # within budget: cold, calibration, 5 batches of one


# ---------------------------------------------------------- evaluations and detection


def test_evaluations_per_check_do_not_grow_with_size() -> None:
    settings = CheckSettings()
    for op, sizes in (("linear", (4, 16, 64)), ("conv", (5, 12, 40)), ("avg-pool", (4, 16, 48))):
        counts = [B.GradoracleTool(B.BenchCase(op, n), "numpy").evaluations() for n in sizes]
        # two vjps (the second checks that it repeats itself) + two evaluations per random
        # direction, whatever the input size
        assert counts == [2 + 2 * settings.directions] * len(sizes), (op, counts)


def test_the_evaluation_counter_sees_growth_where_there_is_growth() -> None:
    pytest.importorskip("torch")
    # slow gradcheck perturbs every input element: its count must grow (negative control)
    small = B.GradcheckTool(B.BenchCase("linear", 2), fast=False).evaluations()
    large = B.GradcheckTool(B.BenchCase("linear", 4), fast=False).evaluations()
    assert large > small >= 2 * (2 * 2 + 2)


def test_gradoracle_catches_a_perturbed_gradient_and_passes_the_correct_one() -> None:
    tool = B.GradoracleTool(B.BenchCase("linear", 4), "numpy")
    assert tool.run()
    assert tool.caught(1e-3)
    assert not tool.caught(0.0)


# ------------------------------------------------------------------ ratios and skipping


class _FakeTool(B.Tool):
    """A tool whose cost, evaluations and detection floor are given."""

    def __init__(self, name: str, case: B.BenchCase, cost: float, floor: float) -> None:
        super().__init__(case)
        self.name, self.cost, self.floor = name, cost, floor

    def run(self) -> bool:
        return True

    def evaluations(self) -> int:
        return 7

    def caught(self, eps: float) -> bool:
        return eps >= self.floor


COSTS = {"fwd+bwd[numpy]": 2e-5, "fwd+bwd[torch]": 1e-5, "gradoracle[numpy]": 3e-4, "gradcheck": 4e-3}


@pytest.fixture
def fake_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    def make(name: str, case: B.BenchCase) -> B.Tool:
        return _FakeTool(name, case, COSTS[name], 1e-6)

    def timing(call: Any, *args: Any) -> B.Timing:
        cost = call.__self__.cost
        return B.Timing(cost, cost, 10 * cost, 10 * cost, 3, True)

    monkeypatch.setattr(B, "make_tool", make)
    monkeypatch.setattr(B, "time_calls", timing)
    monkeypatch.setattr(B, "framework_available", lambda fw: (True, ""))


@pytest.mark.usefixtures("fake_tools")
def test_ratio_is_cost_over_the_tool_frameworks_forward_backward() -> None:
    config = B.BenchConfig(cases=[], adapters=("numpy",), reference_tools=("gradcheck",))
    res = B.run_case(B.BenchCase("linear", 4), config)
    m = res.measurements
    assert list(m) == ["fwd+bwd[numpy]", "fwd+bwd[torch]", "gradoracle[numpy]", "gradcheck"]
    assert m["gradoracle[numpy]"].ratio == pytest.approx(3e-4 / 2e-5)
    assert m["gradcheck"].ratio == pytest.approx(4e-3 / 1e-5)
    assert m["fwd+bwd[torch]"].ratio == 1.0
    assert m["gradcheck"].evals == 7
    assert m["gradcheck"].detect_eps == pytest.approx(1e-6) and m["gradcheck"].detect_status == "measured"
    assert m["gradoracle[numpy]"].new_shape_s == pytest.approx(9 * 3e-4)


@pytest.mark.usefixtures("fake_tools")
def test_ratios_are_interleaved_unless_a_check_is_too_slow_to_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str]] = []

    def interleaved(call: Any, base: Any, *args: Any) -> float:
        seen.append((call.__self__.name, base.__self__.name))
        return 42.0

    monkeypatch.setattr(B, "interleaved_ratio", interleaved)
    config = B.BenchConfig(
        cases=[], adapters=("numpy",), reference_tools=("gradcheck",), interleaved=True, max_seconds=0.01
    )
    m = B.run_case(B.BenchCase("linear", 4), config).measurements
    # each check against the forward+backward of its own framework, round by round
    assert seen == [("gradoracle[numpy]", "fwd+bwd[numpy]")]
    assert m["gradoracle[numpy]"].ratio == 42.0 and m["gradoracle[numpy]"].ratio_method == "interleaved"
    # gradcheck (4 ms x 5 rounds) does not fit 0.01 s: medians timed apart, and said so
    assert m["gradcheck"].ratio == pytest.approx(4e-3 / 1e-5) and m["gradcheck"].ratio_method == "sequential"
    assert B.fmt_ratio(m["gradcheck"]).endswith("seq.")
    assert "seq." not in B.fmt_ratio(m["gradoracle[numpy]"])


def test_detection_budget_counts_every_example_of_a_batched_call() -> None:
    calls: list[float] = []

    class Batch(_FakeTool):
        def caught(self, eps: float) -> bool:
            calls.append(eps)
            return True

    tool = Batch("gradoracle-batch[numpy]", B.BenchCase("linear", 4), 0.01, 0.0)
    m = B.Measurement(tool.name, "numpy", "ok", cpu_s=0.01, passed=True)
    B._detect(tool, m, budget_s=1.0, per_call=32)  # 14 points x 32 examples x 10 ms > 1 s
    assert m.detect_status == "not measured" and not calls
    B._detect(tool, m, budget_s=1.0, per_call=1)  # control: 14 x 10 ms fits
    assert m.detect_status == "measured" and len(calls) == len(B.DETECTION_GRID)


def _report_with(ratios: dict[tuple[str, int], dict[str, float]]) -> B.BenchReport:
    cases = []
    for (op, size), tools in ratios.items():
        case = B.BenchCase(op, size)
        res = B.CaseResult(op, size, case.label, case.identity.name, 1)
        for tool, ratio in tools.items():
            res.measurements[tool] = B.Measurement(tool, "x", "ok", cpu_s=1.0, ratio=ratio, evals=6)
        cases.append(res)
    return B.BenchReport({"adapters": ["numpy", "torch", "jax"]}, {}, cases, 1.0, {})


def test_issue_16_targets_are_read_off_the_batched_columns() -> None:
    report = _report_with(
        {
            ("linear", 8): {"gradoracle-batch[torch]": 4.0, "gradoracle-batch[jax]": 4.0},
            ("linear", 128): {"gradoracle-batch[torch]": 9.9, "gradoracle-batch[jax]": 10.1},
            ("linear", 1024): {"gradoracle-batch[torch]": 8.0, "gradoracle-batch[jax]": 8.1},
            ("conv", 64): {"gradoracle-batch[torch]": 5.0, "gradoracle-batch[jax]": 12.0},
        }
    )
    got = {
        (t["target"].split(":")[0], t["unit"], t["target"].split(" at ")[-1]): t
        for t in B.batch_targets(report)
    }
    assert len(got) == 6 and all(t["issue"] == 16 for t in got.values())
    met = {k: t["met"] for k, t in got.items()}
    assert met[("gradoracle-batch[torch]", "x", "linear W 128x128")] is True  # 9.9 <= 10
    assert met[("gradoracle-batch[jax]", "x", "linear W 128x128")] is False  # 10.1 > 10
    assert met[("gradoracle-batch[torch]", "x", "conv 64x64 k=3")] is True  # 5.0 <= 5
    assert met[("gradoracle-batch[jax]", "x", "conv 64x64 k=3")] is False
    growth = [t for t in got.values() if t["unit"] == "growth"]
    assert [t["value"] for t in growth] == [pytest.approx(2.0), pytest.approx(8.1 / 4.0)]
    assert [t["met"] for t in growth] == [True, False]  # 2.0 <= 2; 2.025 > 2
    assert any(t["issue"] == 16 for t in B.targets(report))
    # without linear 1024 (or a batched column) the growth target is not claimed either way
    report.cases = [c for c in report.cases if c.size != 1024]
    assert all(t["unit"] != "growth" for t in B.batch_targets(report))
    for c in report.cases:
        c.measurements = {k.replace("-batch", ""): v for k, v in c.measurements.items()}
    assert B.batch_targets(report) == []


@pytest.mark.usefixtures("fake_tools")
def test_a_slow_gradcheck_predicted_over_budget_is_not_run_but_estimated() -> None:
    config = B.BenchConfig(cases=[], adapters=("numpy",), reference_tools=("gradcheck",), max_seconds=1.0)
    prev = B.run_case(B.BenchCase("linear", 4), config)
    big = B.BenchCase("linear", 64)
    res = B.run_case(big, config, prev)
    g = res.measurements["gradcheck"]
    assert g.status == "skipped" and g.cpu_s is None
    # quadratic in the number of input elements (its forward grows with them too)
    assert g.estimate_s == pytest.approx(4e-3 * (big.elements / prev.elements) ** 2)
    assert g.ratio == pytest.approx(g.estimate_s / 1e-5)
    assert "est." in B.fmt_ratio(g)
    assert res.measurements["gradoracle[numpy]"].status == "ok"


def test_one_broken_tool_is_a_record_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    config = B.BenchConfig(cases=[], adapters=("numpy", "no_such_module:Adapter"), reference_tools=())
    res = B.run_case(B.BenchCase("linear", 3), config)
    bad = res.measurements["gradoracle[no_such_module:Adapter]"]
    assert bad.status == "error" and bad.note
    assert res.measurements["gradoracle[numpy]"].status == "ok"


# ----------------------------------------------------------------------- the files


def _tiny_report() -> B.BenchReport:
    config = B.BenchConfig(
        cases=[B.BenchCase("linear", 4), B.BenchCase("linear", 16)],
        adapters=("numpy",),
        reference_tools=(),
        repeats=1,
        min_time_s=0.0,
        max_seconds=2.0,
    )
    return B.run_bench(config)


def test_bench_writes_json_and_markdown(tmp_path: Path) -> None:
    report = _tiny_report()
    paths = B.write_bench(report, tmp_path, "gradoracle bench --test")
    assert sorted(p.name for p in paths) == ["bench.json", "bench.md"]
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["schema"] == "gradoracle-bench/1" and data["command"] == "gradoracle bench --test"
    assert [c["label"] for c in data["cases"]] == ["linear W 4x4", "linear W 16x16"]
    for c in data["cases"]:
        check = c["tools"]["gradoracle[numpy]"]
        assert check["status"] == "ok" and check["ratio"] > 0 and check["passed"] is True
        assert check["ratio"] == pytest.approx(check["cpu_s"] / c["tools"]["fwd+bwd[numpy]"]["cpu_s"])
        assert check["detect_eps"] is not None
    flat = [t for t in data["targets"] if "flat as linear" in t["target"]]
    assert len(flat) == 1 and "evaluations 6 -> 6" in flat[0]["target"]
    md = (tmp_path / "bench.md").read_text()
    assert "| linear W 16x16 |" in md and "gradoracle[numpy]" in md and "## Targets" in md


def test_cli_bench_prints_the_table_and_writes_the_files(tmp_path: Path, capsys: Any) -> None:
    code = main(
        [
            "bench",
            "--op",
            "linear",
            "--size",
            "linear=3",
            "--adapter",
            "numpy",
            "--no-reference-tools",
            "--repeats",
            "1",
            "--no-detection",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "linear W 3x3" in out and "gradoracle[numpy]" in out
    assert (tmp_path / "bench.json").exists() and (tmp_path / "bench.md").exists()


def test_cli_bench_usage_errors(tmp_path: Path, capsys: Any) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--size", "linear", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "OP=N" in capsys.readouterr().err
    assert main(["bench", "--size", "nope=4", "--out", str(tmp_path)]) == 2
    assert "unknown op 'nope'" in capsys.readouterr().err
    assert main(["bench", "--adapter", "no_such_module:Adapter", "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "bench.json").exists()


# --------------------------------------------------------- the reference tools, live


def test_gradcheck_and_check_grads_run_side_by_side() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    config = B.BenchConfig(cases=[], adapters=("numpy",), repeats=1, min_time_s=0.0, max_seconds=5.0)
    res = B.run_case(B.BenchCase("linear", 3), config)
    for name in ("fwd+bwd[torch]", "fwd+bwd[jax]", "gradcheck", "gradcheck-fast", "check_grads"):
        m = res.measurements[name]
        assert m.status == "ok", (name, m.note)
        assert m.cpu_s is not None and m.cpu_s > 0
    for name in B.REFERENCE_TOOLS:
        m = res.measurements[name]
        assert m.passed is True and m.evals and m.evals > 0, name
        assert m.detect_status == "measured" and m.detect_eps is not None, name
    # slow gradcheck perturbs each of the 12 inputs twice; fast mode and check_grads do not
    assert res.measurements["gradcheck"].evals > res.measurements["gradcheck-fast"].evals
    assert res.measurements["check_grads"].evals < res.measurements["gradcheck"].evals


def test_batched_tool_holds_fewer_examples_where_32_would_not_fit_in_memory() -> None:
    # 32 examples up to 65k input elements (linear 128: 16,512), fewer above, never none
    assert B.batch_examples(B.BenchCase("linear", 128).elements) == B.BATCH_EXAMPLES
    assert B.batch_examples(B.BenchCase("linear", 512).elements) == B.BATCH_MAX_ELEMENTS // 262_656
    assert B.batch_examples(10**9) == 1
    big = B.make_tool("gradoracle-batch[numpy]", B.BenchCase("linear", 512))
    assert len(big.examples) == big.examples_per_call < B.BATCH_EXAMPLES
    total = sum(a.size for ex in big.examples for a in ex.inputs.values())
    assert total <= B.BATCH_MAX_ELEMENTS


def test_fast_gradcheck_detection_is_not_run_where_its_failure_message_needs_a_huge_jacobian() -> None:
    pytest.importorskip("torch")
    # a rejected fast gradcheck computes the slow-mode Jacobians for its message: linear 1024
    # would hold 8.6 GB twice (the bench was killed for memory); linear 4 is measured (control)
    big = B.GradcheckTool(B.BenchCase("linear", 1024), fast=True)
    assert "full Jacobian" in big.detection_problem()
    assert B.GradcheckTool(B.BenchCase("linear", 4), fast=True).detection_problem() == ""
    m = B.Measurement("gradcheck-fast", "torch", "ok", cpu_s=1e-3, passed=True)
    B._detect(big, m, budget_s=10.0)
    assert m.detect_status == "not measured" and "full Jacobian" in m.note


def test_report_timing_markdown_names_a_narrowed_report() -> None:
    """A timing of the default report says so; one narrowed with ``--report-arg`` does not claim
    to be the default report and shows its arguments."""
    from gradoracle.bench.report_timing import ReportRun, ReportTiming
    from gradoracle.cli.bench import report_timing_markdown

    run = ReportRun("warm", 2, 0, 12.5, 1.0, 1.1, 600, 600, 0)
    default = report_timing_markdown(ReportTiming([], [run]), "gradoracle bench --report-only")
    narrowed = report_timing_markdown(ReportTiming(["--mode=vjp"], [run]), "gradoracle bench --report-only")
    assert default.startswith("# The default report, timed")
    assert narrowed.startswith("# A report, timed") and "--jobs N --mode=vjp" in narrowed
    assert "| 1 | warm | 2 | 12.5 |" in narrowed
