"""A runnable repro for every failure, however large its inputs.

A failing example whose inputs, written out inline, would make its repro snippet longer than
:data:`gradoracle.runner.INLINE_REPRO_LIMIT` gets a snippet that loads them from an ``.npz``
file (``GRADORACLE_REPRO_DIR`` > ``report --out DIR``/repro > ``./.gradoracle/repro``): the
message stays whole within ``MESSAGE_LIMIT`` and the snippet, run on its own, raises the same
mismatch.  Small examples keep inline arrays and write no file; a folder that cannot be
written falls back to the inline snippet with a line that says why.  The negative control:
the large example's inline snippet is longer than ``MESSAGE_LIMIT``, so a record cuts it into
text Python cannot run.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gradoracle.identities import get_identity
from gradoracle.results import GradientMismatch, Verdict
from gradoracle.runner import (
    INLINE_REPRO_LIMIT,
    REPRO_DIR_ENV,
    CheckSettings,
    build_repro,
    check,
    repro_directory,
    repro_snippet,
)
from gradoracle.strategies import Example
from gradoracle.text import MESSAGE_LIMIT, truncate
from gradoracle.user_checks import check_gradients_at

pytest_plugins = ["pytester"]
# Hypothesis's note on the 30 kB repr of a large example's arguments: expected here
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

TESTS = Path(__file__).parent
SCALED = "broken_adapters:ScaledAdapter"  # every gradient off by 1e-3 (tests/ on sys.path)
LOAD = re.compile(r"with np\.load\('([^']+\.npz)', allow_pickle=False\) as npz:")
FEW = CheckSettings(examples=2)


@pytest.fixture
def large(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Accelerator-sized layer examples, repro files in ``tmp_path/repro`` (returned)."""
    monkeypatch.setenv("GRADORACLE_LARGE_SHAPES", "1")
    monkeypatch.setenv(REPRO_DIR_ENV, str(tmp_path / "repro"))
    return tmp_path / "repro"


def _loaded(repro: str) -> Path:
    match = LOAD.search(repro)
    assert match is not None, repro
    return Path(match.group(1))


def _bits(arrays: dict[str, np.ndarray]) -> dict[str, tuple[tuple[int, ...], bytes]]:
    return {k: (v.shape, np.ascontiguousarray(v, dtype=np.float64).tobytes()) for k, v in arrays.items()}


def _run_alone(snippet: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    env.pop("GRADORACLE_LARGE_SHAPES", None)  # the inputs come from the file, not from a draw
    return subprocess.run(
        [sys.executable, "-c", snippet], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_a_large_failure_loads_its_inputs_from_a_file_and_reproduces(large: Path) -> None:
    res = check("linear-layer", SCALED, "float64", FEW)
    assert res.verdict == Verdict.FAIL and res.repro is not None and res.counterexample is not None
    # the whole message, repro included, within the limit: nothing cut
    assert len(res.message) < MESSAGE_LIMIT and res.repro in res.message.replace("\n    ", "\n")
    assert len(res.repro) <= INLINE_REPRO_LIMIT and "np.array(" not in res.repro
    path = _loaded(res.repro)
    assert path.is_absolute() and path.parent == large
    # one file: the reported example's, not one for each failing example the shrinker tried
    assert sorted(large.iterdir()) == [path]
    assert path.name.startswith("linear-layer-ScaledAdapter-float64-vjp-")
    with np.load(path, allow_pickle=False) as npz:
        saved = dict(npz)
    want = {k: np.asarray(v, dtype=np.float64) for k, v in res.counterexample["inputs"].items()}
    assert _bits(saved) == _bits(want) and max(v.size for v in saved.values()) >= 40 * 20
    run = _run_alone(res.repro, large.parent)
    assert run.returncode != 0 and "GradientMismatch" in run.stderr and "linear-layer" in run.stderr


def test_negative_control_the_inline_snippet_of_a_large_example_is_cut_unrunnable(large: Path) -> None:
    res = check("linear-layer", SCALED, "float64", FEW)
    assert res.counterexample is not None
    counter = res.counterexample
    example = Example(
        {k: np.asarray(v) for k, v in counter["inputs"].items()}, counter["params"], counter["seed"]
    )
    pending = build_repro(get_identity("linear-layer"), SCALED, "float64", example)
    assert pending.inputs_file is not None and len(pending.inline) > MESSAGE_LIMIT
    cut = truncate(pending.inline, MESSAGE_LIMIT)
    assert cut != pending.inline
    with pytest.raises(SyntaxError):
        ast.parse(cut)
    ast.parse(pending.snippet)  # the file-loading one parses


def test_a_small_failure_keeps_inline_arrays_and_writes_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRADORACLE_LARGE_SHAPES", raising=False)
    monkeypatch.setenv(REPRO_DIR_ENV, str(tmp_path / "repro"))
    res = check("matvec-jacobian", SCALED, "float64", FEW)
    assert res.verdict == Verdict.FAIL and res.repro is not None
    assert "np.array([" in res.repro and "np.load" not in res.repro
    assert not (tmp_path / "repro").exists()


def test_the_repro_folder_env_over_out_over_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(REPRO_DIR_ENV, raising=False)
    assert repro_directory() == tmp_path / ".gradoracle" / "repro"
    assert repro_directory("out/repro") == tmp_path / "out" / "repro"  # relative: made absolute
    monkeypatch.setenv(REPRO_DIR_ENV, "elsewhere")
    assert repro_directory("out/repro") == tmp_path / "elsewhere"


def _big_example(seed: int = 0) -> Example:
    rng = np.random.default_rng(seed)
    arrays = {
        "X": rng.standard_normal((40, 68)),
        "W": rng.standard_normal((20, 68)),
        "b": rng.standard_normal(20),
    }
    return Example(arrays, {}, 0)


def test_the_same_inputs_name_the_same_file_and_other_inputs_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(REPRO_DIR_ENV, raising=False)  # (it would win over ``directory``)
    ident = get_identity("linear-layer")
    first = repro_snippet(ident, SCALED, "float64", _big_example(), directory=str(tmp_path))
    again = repro_snippet(ident, SCALED, "float64", _big_example(), directory=str(tmp_path))
    assert first == again and len(list(tmp_path.iterdir())) == 1  # a rerun adds no clutter
    other = repro_snippet(ident, SCALED, "float64", _big_example(1), directory=str(tmp_path))
    assert _loaded(other) != _loaded(first) and len(list(tmp_path.iterdir())) == 2
    jvp = repro_snippet(ident, SCALED, "float64", _big_example(), mode="jvp", directory=str(tmp_path))
    assert "-jvp-" in _loaded(jvp).name and "mode='jvp'" in jvp


def test_a_folder_that_cannot_be_written_falls_back_to_the_inline_snippet(
    large: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(REPRO_DIR_ENV, str(blocker / "repro"))  # mkdir fails (root ignores chmod)
    res = check("linear-layer", SCALED, "float64", FEW)
    assert res.verdict == Verdict.FAIL and res.repro is not None and res.counterexample is not None
    first = res.repro.splitlines()[0]
    assert first.startswith("# the inputs could not be saved to ") and str(blocker) in first
    assert "np.array([" in res.repro and "np.load" not in res.repro
    assert first in res.message  # the message says why its repro may be cut


def test_a_full_disk_falls_back_to_the_inline_snippet_that_still_reproduces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gradoracle.reporting.atomic as atomic

    def full(path: object, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "atomic_write_bytes", full)
    monkeypatch.setenv(REPRO_DIR_ENV, str(tmp_path))
    snippet = repro_snippet(get_identity("linear-layer"), SCALED, "float64", _big_example())
    first = snippet.splitlines()[0]
    assert first.startswith("# the inputs could not be saved to ") and "No space left on device" in first
    assert "'X': np.array([[" in snippet and len(snippet) > MESSAGE_LIMIT and list(tmp_path.iterdir()) == []
    with pytest.raises(GradientMismatch):  # whole (not cut), it runs
        exec(snippet, {})


def test_report_out_writes_repro_files_the_report_names(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    env.pop(REPRO_DIR_ENV, None)
    env["GRADORACLE_LARGE_SHAPES"] = "1"
    out = tmp_path / "out"
    args = ["report", "--adapter", SCALED, "--identity", "linear-layer", "--dtype", "float64"]
    args += ["--mode", "vjp", "--examples", "2", "--in-process", "--out", str(out), "--format", "json"]
    run = subprocess.run(
        [sys.executable, "-m", "gradoracle.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1, run.stderr
    report = json.loads((out / "report.json").read_text())
    (record,) = report["results"]
    path = _loaded(record["repro"])
    assert path.parent == out / "repro" and path.exists()
    assert "repro_dir" not in report["run"]["settings"]  # where files go: not a setting of the checks
    assert not (tmp_path / ".gradoracle").exists()  # --out, not the current directory


def test_check_without_out_writes_under_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gradoracle.cli import main

    monkeypatch.setenv("GRADORACLE_LARGE_SHAPES", "1")
    monkeypatch.delenv(REPRO_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    args = ["check", "--adapter", SCALED, "--identity", "linear-layer", "--dtype", "float64"]
    assert main([*args, "--mode", "vjp", "--examples", "2", "--in-process", "--no-conventions"]) == 1
    (path,) = (tmp_path / ".gradoracle" / "repro").iterdir()
    assert path.suffix == ".npz"


def big_forward(x: np.ndarray) -> np.ndarray:
    return np.sin(x)


def big_wrong_vjp(g: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    return {"x": g * np.cos(x) * 1.001}


def test_a_user_check_on_large_inputs_loads_them_from_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REPRO_DIR_ENV, str(tmp_path))
    x = np.random.default_rng(0).standard_normal((40, 68))
    with pytest.raises(GradientMismatch) as info:
        check_gradients_at(big_forward, {"x": x}, vjp=big_wrong_vjp)
    repro = info.value.repro or ""
    assert "check_gradients_at(big_forward, inputs" in repro and "np.array(" not in repro
    assert len(str(info.value)) < MESSAGE_LIMIT
    path = _loaded(repro)
    with np.load(path, allow_pickle=False) as npz:
        assert _bits(dict(npz)) == _bits({"x": x})
    with pytest.raises(GradientMismatch):  # the snippet (its functions imported from here) raises
        exec(repro, {})
    assert len(list(tmp_path.iterdir())) == 1


def test_a_small_user_check_stays_inline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REPRO_DIR_ENV, str(tmp_path))
    with pytest.raises(GradientMismatch) as info:
        check_gradients_at(big_forward, {"x": np.array([0.5, -1.0, 2.0])}, vjp=big_wrong_vjp)
    assert "'x': np.array([0.5, -1.0, 2.0])" in (info.value.repro or "")
    assert list(tmp_path.iterdir()) == []


SCALED_ADAPTER = '''
import numpy as np

from gradoracle.adapters.base import VJPResult
from gradoracle.adapters.numpy_engine import NumpyEngineAdapter


class Scaled(NumpyEngineAdapter):
    """Every gradient off by a factor 1 + 1e-3."""

    def __init__(self):
        super().__init__(name="scaled")

    def vjp(self, fn, inputs, wrt, cotangent, dtype):
        r = super().vjp(fn, inputs, wrt, cotangent, dtype)
        return VJPResult(r.output, {k: v * v.dtype.type(1.001) for k, v in r.grads.items()})
'''


def _plugin_run_of_a_large_failure(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *extra: str
) -> pytest.RunResult:
    """The plugin checking the 1.001-scaled engine on an accelerator-sized linear layer (2
    examples, reverse mode, float64; ``extra`` options): one failed test."""
    monkeypatch.setenv("GRADORACLE_LARGE_SHAPES", "1")
    monkeypatch.delenv(REPRO_DIR_ENV, raising=False)
    pytester.makepyfile(scaled=SCALED_ADAPTER)
    pytester.syspathinsert()
    options = ["--gradoracle-adapter", "scaled:Scaled", "--gradoracle-identity", "linear-layer"]
    options += ["--gradoracle-dtype", "float64", "--gradoracle-mode", "vjp", "--gradoracle-examples", "2"]
    result = pytester.runpytest("-p", "no:cacheprovider", *options, *extra)
    result.assert_outcomes(failed=1)
    return result


def test_the_pytest_plugin_shows_a_whole_repro_that_loads_the_file(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _plugin_run_of_a_large_failure(pytester, monkeypatch)
    out = result.stdout.str()
    assert "characters cut" not in out
    (path,) = (pytester.path / ".gradoracle" / "repro").iterdir()
    assert f"with np.load({str(path)!r}, allow_pickle=False) as npz:" in out


def test_the_repro_folder_is_not_a_variable_the_snippet_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    # where the inputs are saved changes no result, so the "# needs:" line leaves it out; a
    # GRADORACLE_ variable that may change one stays in it (negative control)
    from gradoracle.repro_env import needs

    monkeypatch.setenv(REPRO_DIR_ENV, "/somewhere")
    monkeypatch.setenv("GRADORACLE_LARGE_SHAPES", "1")
    text = needs([])
    assert REPRO_DIR_ENV not in text and "GRADORACLE_LARGE_SHAPES=1" in text


def test_the_pytest_plugin_keeps_the_inputs_beside_its_report(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --gradoracle-report DIR keeps them in DIR/repro, as `gradoracle report --out DIR` does; the
    # report's settings do not name the folder (negative control: without the option they go to
    # ./.gradoracle/repro, the test above)
    result = _plugin_run_of_a_large_failure(pytester, monkeypatch, "--gradoracle-report", "out")
    (path,) = (pytester.path / "out" / "repro").iterdir()
    assert f"with np.load({str(path)!r}, allow_pickle=False) as npz:" in result.stdout.str()
    assert not (pytester.path / ".gradoracle").exists()
    report = json.loads((pytester.path / "out" / "report.json").read_text())
    assert "repro_dir" not in json.dumps(report["run"]) and str(path) in json.dumps(report["results"])


def _shrink_a_large_failure(tmp_path: Path) -> tuple[list[Path], str]:
    """A user's own ``@given`` test of a wrong vjp on 16x16 inputs (too many values to write out
    inline): (the files left, the repro Hypothesis reports)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=20, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.integers(0, 1000))
    def user_test(scale: int) -> None:
        if scale < 3:  # passes: so the simplest example is not the first failure, shrinking runs
            return
        x = np.random.default_rng(0).standard_normal((16, 16)) * (scale / 100)
        check_gradients_at(big_forward, {"x": x}, vjp=big_wrong_vjp)

    with pytest.raises(GradientMismatch) as info:
        user_test()
    return sorted(tmp_path.iterdir()), info.value.repro or ""


def test_shrinking_in_a_users_given_test_leaves_the_reported_examples_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every failing shrink step writes its inputs; the earlier ones are removed, so the folder
    # holds one file, the one the reported failure's repro loads (negative control: without the
    # removal the steps leave several)
    from gradoracle import runner

    monkeypatch.setenv(REPRO_DIR_ENV, str(tmp_path / "kept"))
    (tmp_path / "kept").mkdir()
    files, repro = _shrink_a_large_failure(tmp_path / "kept")
    assert files == [_loaded(repro)]
    monkeypatch.setenv(REPRO_DIR_ENV, str(tmp_path / "all"))
    (tmp_path / "all").mkdir()
    monkeypatch.setattr(runner, "_supersede", lambda path: None)
    files, repro = _shrink_a_large_failure(tmp_path / "all")
    assert len(files) > 1 and _loaded(repro) in files
