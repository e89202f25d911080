"""Issue 11: a broken adapter never takes the run down, and adapters never share state.

- item 0: two JAX-derived adapters (one with a wrong ``jax.custom_vjp`` sigmoid) give, in one
  process and in either order, the verdicts each gives alone: CLI ``check``, ``report``
  and the pytest plugin;
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
WRONG_JAX = "broken_adapters:WrongSigmoidJaxAdapter"
SIGMOID = ["--identity", "elementwise-sigmoid", "--dtype", "float64", "--examples", "3"]

pytest_plugins = ["pytester"]


def run_cli(*args: str, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m gradoracle ARGS`` in a subprocess, ``tests/`` on the path (broken_adapters)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "gradoracle", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


def report_doc(out: Path) -> dict[str, Any]:
    from gradoracle.reporting import validate_document

    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    validate_document(doc)
    return doc


# ------------------------------------------------------------- item 0: no shared state


def _jax_orders() -> list[list[str]]:
    return [["jax", WRONG_JAX], [WRONG_JAX, "jax"]]


@pytest.mark.parametrize(
    ("order", "mode"),
    [(_jax_orders()[0], "--jobs=1"), (_jax_orders()[1], "--in-process")],
    ids=["jax-first-worker", "wrong-first-in-process"],
)
def test_report_two_jax_adapters_either_order(order: list[str], mode: str, tmp_path: Path) -> None:
    """Both adapters run in one process: the worker's (default) or the command's own."""
    pytest.importorskip("jax")
    args = ["report", mode, "--format", "json", "--out", str(tmp_path), *SIGMOID]
    for spec in order:
        args += ["--adapter", spec]
    proc = run_cli(*args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    verdicts = {r["adapter"]: r["verdict"] for r in report_doc(tmp_path)["results"]}
    assert verdicts == {"jax": "pass", "jax-wrong-sigmoid": "fail"}


@pytest.mark.parametrize("order", _jax_orders(), ids=["jax-first", "wrong-first"])
def test_check_two_jax_adapters_either_order(order: list[str]) -> None:
    pytest.importorskip("jax")
    args = ["check", "--no-conventions", "--mode", "vjp", *SIGMOID]
    for spec in order:
        args += ["--adapter", spec]
    proc = run_cli(*args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.rstrip().endswith("1 pass, 1 fail, 0 error, 0 skip"), proc.stdout
    failed = [line.split(":")[0] for line in proc.stdout.splitlines() if line.endswith(": fail")]
    assert failed == ["elementwise-sigmoid-jax-wrong-sigmoid-float64"], proc.stdout


@pytest.fixture
def jax_imported() -> Any:
    """jax, imported before ``pytester`` snapshots ``sys.modules`` (were it imported after, the
    snapshot's restore would drop jaxlib, and importing it again in one process aborts)."""
    return pytest.importorskip("jax")


@pytest.mark.parametrize("order", _jax_orders(), ids=["jax-first", "wrong-first"])
def test_plugin_two_jax_adapters_either_order(
    order: list[str], jax_imported: Any, pytester: pytest.Pytester
) -> None:
    pytester.syspathinsert(TESTS)
    args = ["-p", "no:cacheprovider", "--gradoracle-examples", "3", "--gradoracle-dtype", "float64"]
    args += [
        "--gradoracle-identity",
        "elementwise-sigmoid",
        "--gradoracle-report",
        "rep",
        "--gradoracle-mode",
        "vjp",
    ]
    for spec in order:
        args += ["--gradoracle-adapter", spec]
    result = pytester.runpytest(*args)  # in this process, like a user's pytest session
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED gradoracle::elementwise-sigmoid[[]jax-wrong-sigmoid-float64[]]*"])
    verdicts = {r["adapter"]: r["verdict"] for r in report_doc(pytester.path / "rep")["results"]}
    assert verdicts == {"jax": "pass", "jax-wrong-sigmoid": "fail"}


# ------------------------------------------------------- item 1: the guard, in the runner


def test_guard_runs_every_call_on_one_thread_and_turns_any_exception_into_a_record() -> None:
    import threading

    from gradoracle.guard import AdapterCallError, AdapterGuard

    guard = AdapterGuard("t")
    threads = {guard.call(threading.get_ident, 5, "who") for _ in range(5)}
    assert len(threads) == 1 and threading.get_ident() not in threads
    for exc, needle in [
        (SystemExit(4), "SystemExit: 4"),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
        (_unprintable(), "unprintable"),
    ]:

        def boom(e: BaseException = exc) -> None:
            raise e

        with pytest.raises(AdapterCallError, match=needle) as info:
            guard.call(boom, 5, "boom")
        assert info.value.kind == "raised"
    with pytest.raises(AdapterCallError, match=r"did not return within 0\.2 s") as info:
        guard.call(lambda: __import__("time").sleep(30), 0.2, "sleepy")
    assert info.value.kind == "timeout"
    with pytest.raises(AdapterCallError, match="hung earlier") as info:
        guard.call(lambda: 1, 5, "after")
    assert info.value.kind == "hung"


def _unprintable() -> BaseException:
    from broken_adapters import _Unprintable

    return _Unprintable()


@pytest.mark.parametrize(
    ("spec", "verdict", "fault", "needle"),
    [
        ("broken_adapters:SystemExitAdapter", "error", "adapter", "SystemExit: 4"),
        ("broken_adapters:KeyboardInterruptAdapter", "error", "adapter", "KeyboardInterrupt"),
        ("broken_adapters:UnprintableExceptionAdapter", "error", "adapter", "unprintable"),
        ("broken_adapters:ZeroDimGradAdapter", "fail", "adapter", "has shape []"),
        ("broken_adapters:HangingAdapter", "error", "adapter", "did not return within 0.5 s"),
        ("numpy", "pass", "none", ""),  # negative control
    ],
)
def test_runner_check_records_whatever_the_adapter_does(
    spec: str, verdict: str, fault: str, needle: str
) -> None:
    from gradoracle.runner import CheckSettings, check

    r = check("elementwise-relu", spec, "float64", CheckSettings(examples=2, timeout_s=0.5))
    assert (r.verdict, r.fault) == (verdict, fault), r.message
    assert needle in r.message


def test_probes_of_a_zero_dim_adapter_are_records_not_a_crash() -> None:
    from gradoracle.matrix import guarded_probes

    probes = guarded_probes("broken_adapters:ZeroDimGradAdapter", ["float64"], 5.0)
    assert probes and all(p.error for p in probes if p.probe.startswith("relu"))
    assert all(("shape" in p.error or "IndexError" in p.error) for p in probes if p.error)
    good = guarded_probes("numpy", ["float64"], 5.0)  # negative control
    assert good and not any(p.error for p in good)


# ------------------------------------------- item 1: process isolation in the CLI, any --jobs


HOSTILE = {
    "broken_adapters:SegfaultAdapter": "killed by signal SIGSEGV",
    "broken_adapters:ExitAdapter": "exited with code 3",
    "broken_adapters:SystemExitAdapter": "SystemExit: 4",
    "broken_adapters:KeyboardInterruptAdapter": "KeyboardInterrupt",
    "broken_adapters:UnprintableExceptionAdapter": "unprintable",
    "broken_adapters:HangingAdapter": "did not return within 1 s",
}


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_report_survives_every_hostile_adapter(jobs: str, tmp_path: Path) -> None:
    args = ["report", "--out", str(tmp_path), "--identity", "elementwise-relu", "--dtype", "float64"]
    args += ["--examples", "2", "--timeout", "1", "--jobs", jobs, "--adapter", "numpy"]
    for spec in HOSTILE:
        args += ["--adapter", spec]
    proc = run_cli(*args)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # nonconformance, not a crash of the run
    from gradoracle.reporting import FILE_NAMES

    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert names == sorted([*FILE_NAMES.values(), "report-set.json"])
    doc = report_doc(tmp_path)
    got = {r["adapter"]: r for r in doc["results"]}
    assert got["numpy"]["verdict"] == "pass"
    for spec, needle in HOSTILE.items():
        record = got[spec.partition(":")[2]]
        assert record["verdict"] == "error" and record["fault"] == "adapter", record
        assert needle in record["message"], (needle, record["message"])
    assert doc["summary"]["counts"]["not-run"] == 0 and not doc["run"]["interrupted"]
    probes = {}
    for p in doc["conventions"]:
        probes.setdefault(p["adapter"], []).append(p)
    assert probes["numpy"] and not any(p["error"] for p in probes["numpy"])
    assert all("SIGSEGV" in p["error"] for p in probes["SegfaultAdapter"])
    assert all(p["error"] for p in probes["HangingAdapter"])


def test_check_command_names_the_signal_of_a_segfault_and_carries_on() -> None:
    args = [
        "check",
        "--identity",
        "elementwise-relu",
        "--identity",
        "elementwise-sigmoid",
        "--dtype",
        "float64",
    ]
    proc = run_cli(
        *args, "--examples", "2", "--no-conventions", "--adapter", "broken_adapters:SegfaultAdapter"
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    text = " ".join(proc.stdout.split())
    assert text.count("killed by signal SIGSEGV") == 2 and "0 pass, 0 fail, 2 error" in text


def test_in_process_mode_is_what_isolation_protects_from() -> None:
    """Negative control: without isolation a segfaulting adapter takes the whole run down."""
    proc = run_cli(
        "check", "--in-process", "--identity", "elementwise-relu", "--dtype", "float64", "--examples", "2",
        "--no-conventions", "--adapter", "broken_adapters:SegfaultAdapter",
    )  # fmt: skip
    assert proc.returncode == -11 or proc.returncode == 139, proc.returncode


@pytest.mark.parametrize("command", ["report", "check"])
def test_an_adapter_that_crashes_while_loading_is_a_usage_error_not_a_crashed_run(
    command: str, tmp_path: Path
) -> None:
    """``report`` and ``check`` load the adapters in their workers: a constructor that segfaults
    ends a worker, and the run says which adapter and how, instead of dying without a report
    (exit 139).  Negative control: the same with ``--in-process`` takes the process down."""
    args = [command, "--identity", "matvec-jacobian", "--dtype", "float64", "--examples", "2"]
    args += ["--adapter", "numpy", "--adapter", "broken_adapters:SegfaultingConstructorAdapter"]
    if command == "report":
        args += ["-q", "--out", str(tmp_path / "out")]
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    said = " ".join(proc.stderr.split())
    assert "adapter 'broken_adapters:SegfaultingConstructorAdapter' could not be loaded" in said
    assert "was killed by signal SIGSEGV" in said
    crashed = run_cli(*args, "--in-process")
    assert crashed.returncode in (-11, 139), crashed.returncode


def test_the_report_process_imports_no_framework(tmp_path: Path) -> None:
    """The adapters are loaded (and the frameworks imported) in the workers only; the report
    still names the frameworks' versions and the runtime the workers saw.  Negative control:
    ``--in-process`` imports them here."""
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    code = (
        "import sys; from gradoracle.cli import main; "
        "rc = main(sys.argv[1:]); print(rc, 'torch' in sys.modules, 'jax' in sys.modules)"
    )
    args = ["report", "--adapter", "torch", "--adapter", "jax", "--identity", "matvec-jacobian"]
    args += ["--dtype", "float64", "--mode", "vjp", "--examples", "2", "--format", "json", "-q"]
    for how, expected in (("--jobs=1", "0 False False"), ("--in-process", "0 True True")):
        out = tmp_path / how.strip("-")
        proc = subprocess.run(
            [sys.executable, "-c", code, *args, how, "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.stdout.split()[-3:] == expected.split(), proc.stdout + proc.stderr
        env = report_doc(out)["environment"]
        assert env["threads"]["torch"]["threads"] >= 1 and env["threads"]["jax"]["backend"] == "cpu"
        assert set(env["frameworks"]) == {"torch", "jax"} and "torch" in env["frameworks"]["torch"]


def test_a_hang_that_holds_the_interpreter_is_killed_by_the_watchdog() -> None:
    args = ["check", "--identity", "elementwise-relu", "--dtype", "float64", "--examples", "2"]
    args += ["--timeout", "0.5", "--no-conventions", "--adapter", "broken_adapters:GILHoldingHangAdapter"]
    proc = run_cli(*args, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    text = " ".join(proc.stdout.split())
    assert "silent for 5.5 s" in text and "0 pass, 0 fail, 1 error" in text


def test_an_available_that_hangs_is_a_usage_error_not_a_hung_run() -> None:
    proc = run_cli("check", "--timeout", "0.5", "--adapter", "broken_adapters:HangingAvailableAdapter")
    assert proc.returncode == 2
    # available() imports the framework: set-up calls get SETUP_FACTOR (6) times the per-call limit
    assert "available() did not return within 3 s" in " ".join(proc.stderr.split())


# --------------------------------------------------------------------- item 7: --jobs


def test_jobs_are_capped_at_the_usable_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from gradoracle import isolation

    monkeypatch.setattr(isolation, "usable_cores", lambda: 3)
    assert isolation.effective_jobs(2) == (2, None)
    jobs, note = isolation.effective_jobs(64)
    assert jobs == 3 and note is not None and "capped at 3" in note
    assert isolation.effective_jobs(0) == (3, None)
    with pytest.raises(ValueError, match="expected 0"):
        isolation.effective_jobs(-1)


def test_cli_jobs_64_runs_at_most_one_worker_per_core(tmp_path: Path) -> None:
    from gradoracle.isolation import usable_cores

    args = ["report", "--out", str(tmp_path), "--format", "json", "--identity", "elementwise-relu"]
    proc = run_cli(*args, "--examples", "2", "--adapter", "numpy", "--jobs", "64")
    assert proc.returncode == 0, proc.stderr
    doc = report_doc(tmp_path)
    assert doc["run"]["jobs"] == min(64, usable_cores())
    if usable_cores() < 64:
        assert "capped at" in " ".join(proc.stderr.split())


# ------------------------------------------------------------- item 6: nondeterminism


@pytest.mark.parametrize(
    "spec", ["broken_adapters:OsEntropyNoiseAdapter", "broken_adapters:NumpyRandomNoiseAdapter"]
)
def test_nondeterministic_gradients_are_a_named_fault(spec: str) -> None:
    from gradoracle.runner import CheckSettings, check

    r = check("matvec-weight-grad", spec, "float64", CheckSettings(examples=3))
    assert (r.verdict, r.fault) == ("fail", "nondeterministic"), r.message
    assert "first call =" in r.message and "second call =" in r.message and "element [" in r.message
    assert r.worst is not None and r.worst.kind == "nondeterministic" and r.worst.index
    assert r.repro and "reproduce(" in r.repro and r.counterexample is not None
    assert "FlakyFailure" not in r.message and "Flaky" not in r.message


def test_documented_nondeterminism_within_its_tolerance_passes() -> None:
    from gradoracle.runner import CheckSettings, check

    r = check(
        "matvec-weight-grad", "broken_adapters:DocumentedNoiseAdapter", "float64", CheckSettings(examples=3)
    )
    assert r.verdict == "pass", r.message
    assert check("matvec-weight-grad", "numpy", "float64", CheckSettings(examples=3)).verdict == "pass"


def test_a_failure_that_does_not_replay_is_nondeterministic_not_a_raw_flaky() -> None:
    from gradoracle.adapters.numpy_engine import NumpyEngineAdapter
    from gradoracle.runner import CheckSettings, check

    class FirstTwoCallsWrong(NumpyEngineAdapter):
        """Wrong (consistently) on its first two vjp calls, right afterwards."""

        calls = 0

        def vjp(self, fn: Any, inputs: Any, wrt: Any, cotangent: Any, dtype: str) -> Any:
            type(self).calls += 1
            res = super().vjp(fn, inputs, wrt, cotangent, dtype)
            if type(self).calls <= 2:
                return type(res)(res.output, {k: v * 2 for k, v in res.grads.items()})
            return res

    r = check("matvec-weight-grad", FirstTwoCallsWrong(name="flip"), "float64", CheckSettings(examples=3))
    assert (r.verdict, r.fault) == ("fail", "nondeterministic"), r.message
    assert "passed when replayed" in r.message and r.repro and "Flaky" not in r.message.split("\n")[0]


# ------------------------------------------------------------ item 8: one thread per adapter


def test_a_thread_bound_adapter_works_in_checks_and_probes_in_process_and_isolated(tmp_path: Path) -> None:
    from gradoracle.guard import process_session
    from gradoracle.matrix import guarded_probes
    from gradoracle.runner import CheckSettings, check

    spec = "broken_adapters:ThreadBoundAdapter"
    for ident in ("elementwise-relu", "matvec-weight-grad"):
        r = check(ident, spec, "float32", CheckSettings(examples=2))
        assert r.verdict == "pass", r.message
    probes = guarded_probes(spec, ["float64"], 5.0)
    assert probes and not any(p.error for p in probes)
    # negative control: the instance really is bound to its thread
    adapter = process_session().get(spec).adapter
    with pytest.raises(RuntimeError, match="same thread"):
        adapter.available()
    proc = run_cli(
        "report",
        "--out",
        str(tmp_path),
        "--identity",
        "elementwise-relu",
        "--examples",
        "2",
        "--adapter",
        spec,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = report_doc(tmp_path)
    assert not any(p["error"] for p in doc["conventions"])


# ------------------------------------------------------------- item 9: dtype promotion


def test_a_frameworks_dtype_promotion_is_a_named_finding() -> None:
    from gradoracle.runner import CheckSettings, check

    r = check(
        "elementwise-leaky-relu", "broken_adapters:PromotingAdapter", "float32", CheckSettings(examples=2)
    )
    assert (r.verdict, r.fault) == ("fail", "dtype"), r.message
    assert "has dtype float64, asked for float32" in r.message
    assert "ops.leaky_relu returned float64 for float32 input" in r.message
    assert "broke its contract" not in r.message
    # negative control: in float64 nothing is promoted
    assert (
        check(
            "elementwise-leaky-relu", "broken_adapters:PromotingAdapter", "float64", CheckSettings(examples=2)
        ).verdict
        == "pass"
    )


# ------------------------------------------------------------------- the plugin


PLUGIN_FAST = ["-p", "no:cacheprovider", "--gradoracle-examples", "2", "--gradoracle-dtype", "float64"]


def test_plugin_isolation_turns_a_segfault_into_a_failed_item(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(broken_adapters=(TESTS / "broken_adapters.py").read_text(encoding="utf-8"))
    args = [*PLUGIN_FAST, "--gradoracle-identity", "elementwise-relu", "--gradoracle-isolate"]
    args += ["--gradoracle-adapter", "numpy", "--gradoracle-adapter", "broken_adapters:SegfaultAdapter"]
    args += ["--gradoracle-report", "rep"]
    result = pytester.runpytest_subprocess(*args, timeout=300)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*killed by signal SIGSEGV*"])
    doc = report_doc(pytester.path / "rep")
    assert {r["adapter"]: r["verdict"] for r in doc["results"]} == {
        "numpy": "pass",
        "SegfaultAdapter": "error",
    }
    assert doc["run"]["isolation"] == "process"


def test_plugin_isolation_loads_the_adapters_in_the_worker(pytester: pytest.Pytester) -> None:
    """With ``--gradoracle-isolate`` an adapter whose constructor segfaults is a usage error
    naming it, not a crashed pytest.  Negative control: without isolation pytest dies."""
    pytester.makepyfile(broken_adapters=(TESTS / "broken_adapters.py").read_text(encoding="utf-8"))
    args = [*PLUGIN_FAST, "--gradoracle-identity", "elementwise-relu"]
    args += ["--gradoracle-adapter", "broken_adapters:SegfaultingConstructorAdapter"]
    result = pytester.runpytest_subprocess(*args, "--gradoracle-isolate", timeout=300)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    said = " ".join(str(result.stderr).split())
    assert "--gradoracle-adapter broken_adapters:SegfaultingConstructorAdapter" in said
    assert "was killed by signal SIGSEGV" in said
    crashed = pytester.runpytest_subprocess(*args, timeout=300)
    assert crashed.ret in (-11, 139)


def test_plugin_timeout_ini_key_and_guarded_probes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(broken_adapters=(TESTS / "broken_adapters.py").read_text(encoding="utf-8"))
    pytester.makeini("[pytest]\ngradoracle_timeout = 0.5\n")
    args = [*PLUGIN_FAST, "--gradoracle-identity", "elementwise-relu", "--gradoracle-report", "rep"]
    args += ["--gradoracle-adapter", "broken_adapters:HangingAdapter"]
    result = pytester.runpytest_subprocess(*args, timeout=300)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*did not return within 0.5 s*"])
    doc = report_doc(pytester.path / "rep")  # the probes ran (guarded) and the report was written
    assert doc["conventions"] and all(p["error"] for p in doc["conventions"])


# ------------------------------------------- hangs: an adapter that hangs everywhere stops being called

ELEMENTWISE_FOUR = ["elementwise-relu", "elementwise-sigmoid", "elementwise-tanh", "elementwise-softplus"]


def _identity_args(names: list[str]) -> list[str]:
    return [a for name in names for a in ("--identity", name)]


@pytest.mark.parametrize("max_hangs", ["2", "0"])
def test_an_adapter_that_hangs_in_max_hangs_checks_is_not_called_again(
    max_hangs: str, tmp_path: Path
) -> None:
    args = ["report", "--out", str(tmp_path), "--format", "json", "--dtype", "float64", "--examples", "2"]
    args += ["--timeout", "0.5", "--max-hangs", max_hangs, "--jobs", "1", *_identity_args(ELEMENTWISE_FOUR)]
    args += ["--adapter", "numpy", "--adapter", "broken_adapters:HangingAdapter"]
    proc = run_cli(*args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    results = report_doc(tmp_path)["results"]
    hanging = [r for r in results if r["adapter"] == "HangingAdapter"]
    assert len(hanging) == 4 and all(r["verdict"] == "error" and r["fault"] == "adapter" for r in hanging)
    assert all(r["verdict"] == "pass" for r in results if r["adapter"] == "numpy")  # the others' results kept
    timed_out = [r for r in hanging if "did not return within 0.5 s" in r["message"]]
    stopped = [r for r in hanging if "is not called again (--max-hangs 2)" in r["message"]]
    if max_hangs == "2":
        assert len(timed_out) == 2 and len(stopped) == 2
        assert "Rerun this check alone with 'gradoracle check --identity" in stopped[0]["message"]
    else:  # negative control: 0 = no limit, every check calls the adapter and times out
        assert len(timed_out) == 4 and stopped == []


def test_the_hang_breaker_counts_hangs_only() -> None:
    from gradoracle.matrix import CheckTask, HangBreaker, hung
    from gradoracle.results import CheckResult, Fault, Verdict

    def rec(message: str, verdict: Verdict = Verdict.ERROR) -> CheckResult:
        return CheckResult("elementwise-relu", "", "a", "float64", verdict, Fault.ADAPTER, message)

    task = CheckTask("elementwise-tanh", "", "spec", "a", "float64")
    breaker = HangBreaker(2)
    breaker.record("spec", rec("vjp raised RuntimeError: no"))  # an ordinary error is not a hang
    breaker.record("spec", rec("x did not return within 1 s", Verdict.FAIL))
    assert not breaker.tripped("spec") and breaker.result_for(task) is None
    breaker.record("spec", rec("probe did not return within 1 s (the --timeout limit ...)"))
    breaker.record("other", rec("the worker process running it was silent for 5 s"))
    assert not breaker.tripped("spec") and hung(rec("was silent for 5 s"))
    breaker.record("spec", rec("the worker process running it was silent for 5 s and was killed"))
    stand_in = breaker.result_for(task)
    assert (
        stand_in is not None and stand_in.verdict == Verdict.ERROR and stand_in.identity == "elementwise-tanh"
    )
    assert "hung in 2 checks already" in stand_in.message and not HangBreaker(0).tripped("spec")


def test_plugin_max_hangs_stops_calling_a_hanging_adapter(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(broken_adapters=(TESTS / "broken_adapters.py").read_text(encoding="utf-8"))
    pytester.makeini("[pytest]\ngradoracle_timeout = 0.5\ngradoracle_max_hangs = 1\n")
    args = [*PLUGIN_FAST, *[f"--gradoracle-identity={n}" for n in ELEMENTWISE_FOUR[:3]]]
    args += ["--gradoracle-adapter", "broken_adapters:HangingAdapter"]
    result = pytester.runpytest_subprocess(*args, timeout=300)
    result.assert_outcomes(failed=3)
    text = result.stdout.str()
    assert text.count("did not return within 0.5 s") >= 1
    assert text.count("hung in 1 check already") >= 2


# ------------------------------------------- output: what an adapter prints is captured, like pytest


def test_what_an_adapter_prints_is_captured_and_shown_for_failures_only(tmp_path: Path) -> None:
    args = ["report", "--out", str(tmp_path), "--format", "json", "--dtype", "float64", "--examples", "3"]
    args += ["--identity", "elementwise-tanh", "--mode", "vjp"]
    args += [
        "--adapter",
        "broken_adapters:PrintingAdapter",
        "--adapter",
        "broken_adapters:PrintingWrongAdapter",
    ]
    args += ["--adapter", "broken_adapters:PrintingSegfaultAdapter"]
    proc = run_cli(*args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    terminal = proc.stdout + proc.stderr
    # never raw on the terminal: only inside the failing check's message, indented and cleaned
    printed = [line for line in terminal.splitlines() if "printing adapter" in line]
    assert printed and all(line.startswith("    ") for line in printed), printed
    assert "\x1b]0;pwned" not in terminal and "\x07" not in terminal
    by_adapter = {r["adapter"]: r for r in report_doc(tmp_path)["results"]}
    assert by_adapter["PrintingAdapter"]["verdict"] == "pass"
    assert "output of the adapter" not in by_adapter["PrintingAdapter"]["message"]  # a pass drops it
    wrong = by_adapter["PrintingWrongAdapter"]
    assert wrong["verdict"] == "fail" and wrong["fault"] == "backward"
    assert "output of the adapter during this check:" in wrong["message"]
    assert (
        "debug: vjp of the printing adapter" in wrong["message"] and "native stderr line" in wrong["message"]
    )
    assert "\x1b" not in wrong["message"] and "\x07" not in wrong["message"]  # cleaned
    crashed = by_adapter["PrintingSegfaultAdapter"]
    assert crashed["verdict"] == "error" and "SIGSEGV" in crashed["message"]
    assert "what it printed last: last words before the crash" in crashed["message"]


def test_in_process_output_is_not_captured_negative_control() -> None:
    args = ["check", "--in-process", "--no-conventions", "--dtype", "float64", "--examples", "2"]
    args += [
        "--identity",
        "elementwise-tanh",
        "--mode",
        "vjp",
        "--adapter",
        "broken_adapters:PrintingAdapter",
    ]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "debug: vjp of the printing adapter" in proc.stdout  # what the worker's capture hides
