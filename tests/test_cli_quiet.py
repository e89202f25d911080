"""``gradoracle selftest -q``: the kill table left out, what failed and the summary kept.

``report`` and ``check`` had ``-q``; ``selftest`` printed its whole kill matrix every time,
which buries the one line a CI log needs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gradoracle.cli import main


def _selftest(tmp_path: Path, mutant: str, *extra: str) -> int:
    argv = ["selftest", "--mutant", mutant, "--no-correct", "--examples", "5", "--out", str(tmp_path)]
    return main([*argv, *extra])


def test_quiet_selftest_leaves_out_the_kill_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = _selftest(tmp_path, "relu-mask-missing", "-q")
    out = capsys.readouterr().out
    assert code == 0
    assert "1/1 mutants killed" in out
    assert "Kill matrix" not in out
    # negative control: without -q the table is printed
    assert _selftest(tmp_path, "relu-mask-missing") == 0
    assert "Kill matrix" in capsys.readouterr().out


def test_quiet_selftest_still_names_a_survivor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = _selftest(tmp_path, "control-correct-numpy", "--quiet")
    out = capsys.readouterr().out
    assert code == 1
    assert "control-correct-numpy" in out and "survived" in out and "0/1 mutants killed" in out
    assert "Kill matrix" not in out
