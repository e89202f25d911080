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


@pytest.mark.parametrize("order", _jax_orders(), ids=["jax-first", "wrong-first"])
def test_report_two_jax_adapters_either_order(order: list[str], tmp_path: Path) -> None:
    pytest.importorskip("jax")
    args = ["report", "--format", "json", "--out", str(tmp_path), *SIGMOID]
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


@pytest.mark.parametrize("order", _jax_orders(), ids=["jax-first", "wrong-first"])
def test_plugin_two_jax_adapters_either_order(order: list[str], pytester: pytest.Pytester) -> None:
    pytest.importorskip("jax")
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
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED gradoracle::elementwise-sigmoid[[]jax-wrong-sigmoid-float64[]]*"])
    verdicts = {r["adapter"]: r["verdict"] for r in report_doc(pytester.path / "rep")["results"]}
    assert verdicts == {"jax": "pass", "jax-wrong-sigmoid": "fail"}
