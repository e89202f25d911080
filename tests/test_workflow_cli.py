"""A team's CI running ``gradoracle report``: what broke when the job was cancelled.

CI systems stop a job with SIGTERM (a cancelled GitHub Actions run, a job past its time
limit, ``kill``).  ``gradoracle report`` wrote nothing then: the checks that had finished
were lost and the process died with the signal.  It now handles SIGTERM as it handles
Ctrl-C: the finished checks are written, the rest marked not-run, exit 143.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TERM_ADAPTER = """
import os
import signal
import time

from gradoracle.adapters.numpy_engine import NumpyEngineAdapter


class Term(NumpyEngineAdapter):
    '''Sends SIGTERM to the report process (its worker's parent) during its 12th vjp.'''

    calls = 0

    def __init__(self):
        super().__init__(name="term")

    def vjp(self, fn, inputs, wrt, cotangent, dtype):
        type(self).calls += 1
        if type(self).calls == 12 and os.environ.get("SEND_SIGTERM"):
            os.kill(os.getppid(), signal.SIGTERM)
            time.sleep(1.0)
        return super().vjp(fn, inputs, wrt, cotangent, dtype)
"""


def _report(tmp_path: Path, sigterm: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "team_adapters.py").write_text(TERM_ADAPTER)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    if sigterm:
        env["SEND_SIGTERM"] = "1"
    identities = [
        a for n in ("elementwise-tanh", "elementwise-sigmoid", "elementwise-sin") for a in ("--identity", n)
    ]
    command = [sys.executable, "-m", "gradoracle", "report", "--adapter", "team_adapters:Term", *identities]
    command += ["--dtype", "float64", "--mode", "vjp", "--examples", "4", "--jobs", "1", "--out", "rep", "-q"]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX")
def test_sigterm_during_a_report_writes_what_finished(tmp_path: Path) -> None:
    from gradoracle.reporting import validate_document

    done = _report(tmp_path, sigterm=True)
    assert done.returncode == 143, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    document = json.loads((tmp_path / "rep" / "report.json").read_text())
    validate_document(document)
    verdicts = [r["verdict"] for r in document["results"]]
    assert "pass" in verdicts and "not-run" in verdicts, verdicts
    not_run = [r for r in document["results"] if r["verdict"] == "not-run"]
    # the records name the signal that stopped the run (they said Ctrl-C)
    assert all("SIGTERM" in (r["message"] or "") and "Ctrl-C" not in (r["message"] or "") for r in not_run), (
        not_run
    )
    assert document["summary"]["status"] == "incomplete"
    assert document["run"]["interrupted"] is True
    assert "did not run" in done.stderr
    # negative control: the same run without the signal completes and conforms
    plain = _report(tmp_path, sigterm=False)
    assert plain.returncode == 0, plain.stderr
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["summary"]["status"] == "conform"


def test_a_non_integer_count_names_the_option_not_a_private_function(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from gradoracle.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--adapter", "numpy", "--examples", "abc"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --examples: must be a positive integer, got 'abc'" in err
    assert "_positive_int" not in err  # it read "invalid _positive_int value: 'abc'"


def test_ctrl_c_in_check_does_not_speak_of_report_sets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import gradoracle.cli.check as check_module
    from gradoracle.cli import main

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(check_module, "cmd_check", interrupted)
    assert main(["check", "--adapter", "numpy"]) == 130
    err = capsys.readouterr().err
    assert "gradoracle check: interrupted" in err and "report set" not in err
