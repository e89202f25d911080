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
        [sys.executable, "-m", "gradoracle.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
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


# ------------------------------------------- module:Class adapters from the current directory

MY_ADAPTER = '''
from gradoracle.adapters.numpy_engine import NumpyEngineAdapter


class MyAdapter(NumpyEngineAdapter):
    """The NumPy engine under another name: a correct third-party adapter."""

    def __init__(self) -> None:
        super().__init__(name="mine")
'''


def run_from(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -P -m gradoracle ARGS`` in ``cwd``, with nothing else putting ``cwd`` on sys.path.

    Plain ``python -m`` prepends the current directory itself, which would hide a CLI that does
    not; ``-P`` (Python 3.11+) turns that off, so the interpreter sees sys.path as the
    ``gradoracle`` console script does (its own folder, not the user's).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    return subprocess.run(
        [sys.executable, "-P", "-m", "gradoracle", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_adapter_path_imports_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "myadapter.py").write_text(MY_ADAPTER, encoding="utf-8")
    proc = run_from(
        tmp_path,
        "check",
        "--adapter",
        "myadapter:MyAdapter",
        "--identity",
        "matvec-jacobian",
        "--examples",
        "3",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mine" in proc.stdout and "2 pass, 0 fail" in proc.stdout


def test_missing_adapter_module_says_where_it_was_looked_for(tmp_path: Path) -> None:
    proc = run_from(tmp_path, "check", "--adapter", "nomodule:Cls", "--identity", "matvec-jacobian")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())  # undo the console's line wrapping
    assert "cannot import module 'nomodule'" in err
    assert f"not importable from the current directory {tmp_path} or the installed packages" in err
    assert "run from the directory that holds nomodule.py or install it" in err


def test_cli_leaves_sys_path_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = list(sys.path)
    assert main(["check", "--adapter", "nomodule:Cls", "--identity", "matvec-jacobian"]) == 2
    assert sys.path == before


# --------------------------------------------------- default output directory: reports/latest


def test_report_writes_to_reports_latest_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(
        [
            "report",
            "--adapter",
            "numpy",
            "--identity",
            "matvec-jacobian",
            "--dtype",
            "float64",
            "--examples",
            "3",
            "--format",
            "json,md,junit",
        ]
    )
    assert code == 0, capsys.readouterr()
    latest = tmp_path / "reports" / "latest"
    shown = sorted(p.name for p in latest.iterdir() if not p.name.startswith("."))
    assert shown == ["junit.xml", "report-set.json", "report.json", "report.md"]
    assert [p.name for p in (tmp_path / "reports").iterdir()] == ["latest"]  # the reference spot untouched


@pytest.mark.parametrize("argv", [["report"], ["merge", "part/report.json"], ["selftest"], ["bench"]])
def test_every_writing_command_defaults_to_reports_latest(argv: list[str]) -> None:
    from gradoracle.cli import build_parser

    assert build_parser().parse_args(argv).out == Path("reports/latest")


def test_version_and_python_m_gradoracle() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gradoracle", "--version"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.startswith("gradoracle "), proc.stdout + proc.stderr
