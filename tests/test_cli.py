"""The command line: list, explain, check, exit codes and error messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gradoracle.cli import main
from gradoracle.identities import SOURCES, all_identities

TESTS = Path(__file__).parent


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "gradoracle.cli", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_list_json_covers_every_source_label(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["source"] for r in rows} == set(SOURCES)
    assert [r["name"] for r in rows] == [i.name for i in all_identities()]
    assert all(r["formula"] and r["name"] for r in rows)


def test_list_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "conv-input" in out and "notes:max-pool" in out


def test_explain_names_formula_source_and_kinks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "max-pool"]) == 0
    out = capsys.readouterr().out
    assert "notes:max-pool" in out and "tied maxima" in out and "delta_uv" in out


def test_explain_unknown_suggests(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "mlp-relu"]) == 2
    err = capsys.readouterr().err
    assert "unknown identity 'mlp-relu'" in err and "mlp-d-relu-mask" in err


def test_check_passes_and_exits_0() -> None:
    proc = run_cli(
        "check",
        "--adapter",
        "numpy",
        "--identity",
        "conv-input",
        "--identity",
        "mlp",
        "--examples",
        "5",
        "--no-conventions",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 pass, 0 fail" in proc.stdout


def test_check_nonconformance_exits_1_with_the_diagnostic() -> None:
    proc = run_cli(
        "check",
        "--adapter",
        "broken_adapters:NoRot180Adapter",
        "--identity",
        "conv-input",
        "--dtype",
        "float64",
        "--examples",
        "5",
        "--no-conventions",
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "fail" in proc.stdout and "backward" in proc.stdout and "reproduce(" in proc.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["check", "--adapter", "tensorflw"], "unknown adapter 'tensorflw'"),
        (["check", "--adapter", "numpy", "--identity", "nope"], "unknown identity 'nope'"),
        (["check", "--adapter", "broken_adapters:UnavailableAdapter"], "frobnicate is not installed"),
        (["check", "--adapter", "no_such_module:Cls"], "cannot import module 'no_such_module'"),
        (["check", "--dtype", "float16"], "unknown dtype"),
        (["check", "--examples", "0"], "positive integer"),
    ],
)
def test_usage_errors_exit_2(args: list[str], needle: str) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in proc.stderr


def test_help_lists_every_subcommand() -> None:
    proc = run_cli("--help")
    for command in ("list", "explain", "check", "report", "merge", "selftest", "bench"):
        assert command in proc.stdout
