"""The docs match what a user installs: the README's minimal adapter runs as printed (issue 10)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

pytest.importorskip("torch", reason="the README's minimal adapter wraps PyTorch")


def _block(first_line: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    (found,) = [b for b in blocks if b.startswith(first_line)]
    return found


def _check(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "my_adapter.py").write_text(source)
    args = ["check", "--adapter", "my_adapter:MyAdapter", "--examples", "3", "--no-conventions"]
    for name in ("matvec-weight-grad", "elementwise-sigmoid", "elementwise-relu", "max-pool"):
        args += ["--identity", name]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # -P: the current directory is not put on sys.path by Python, only by gradoracle's CLI
    return subprocess.run(
        [sys.executable, "-P", "-m", "gradoracle", *args],
        cwd=tmp_path, env={**env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_readme_minimal_adapter_passes_as_printed(tmp_path: Path) -> None:
    done = _check(tmp_path, _block("# my_adapter.py"))
    assert done.returncode == 0, done.stdout + done.stderr
    # 3 identities it implements x 2 dtypes pass; max-pool needs max_pool2d, which it lacks
    assert "6 pass, 0 fail, 0 error, 2 skip" in done.stdout


def test_readme_minimal_adapter_with_a_wrong_backward_fails(tmp_path: Path) -> None:
    source = _block("# my_adapter.py")
    wrong = source.replace("return torch.sigmoid(x)", "return _WrongSigmoid.apply(x)")
    wrong += """

class _WrongSigmoid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = torch.sigmoid(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y  # the bug: sigmoid' is y (1 - y)
"""
    assert wrong != source
    done = _check(tmp_path, wrong)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "elementwise-sigmoid" in done.stdout
    assert "2 fail" in done.stdout


def test_readme_has_no_links_that_break_off_the_repository() -> None:
    """Relative links work on the forge but not where the README is shown as a package page."""
    text = README.read_text(encoding="utf-8")
    relative = [
        m for m in re.findall(r"\]\(([^)]+)\)", text) if not m.startswith(("http://", "https://", "#"))
    ]
    assert relative == []
