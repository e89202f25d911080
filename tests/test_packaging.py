"""What a user installs: one import name, ``gradoracle``, from the wheel as from a clone (issue 10).

The repository's folders ``oracle/`` and ``adapters/`` are mapped to ``gradoracle`` and
``gradoracle.adapters`` by the packaging; these tests build the wheel, install it into a
directory of its own and use it from an empty directory, the way a user does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytest_plugins = ["pytester"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("gradoracle-*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed (without dependencies) into a directory put first on PYTHONPATH."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_wheel_installs_one_top_level_name_with_everything_in_it(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"gradoracle"}
    top_level = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    assert [zipfile.ZipFile(wheel).read(t).decode().split() for t in top_level] == [["gradoracle"]]
    # every module of both folders is in the wheel under its mapped name (a subpackage missing
    # from pyproject's package list would silently drop out of the wheel)
    expected = {
        f"gradoracle/{p.relative_to(REPO / 'oracle').as_posix()}" for p in (REPO / "oracle").rglob("*.py")
    }
    expected |= {
        f"gradoracle/adapters/{p.relative_to(REPO / 'adapters').as_posix()}"
        for p in (REPO / "adapters").rglob("*.py")
    }
    assert expected <= set(names), sorted(expected - set(names))
    for data in (
        "gradoracle/notes/gradient-notes.md",
        "gradoracle/report.schema.json",
        "gradoracle/py.typed",
    ):
        assert data in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    metadata = (
        zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    )
    assert "License-Expression: MIT" in metadata


def test_installed_wheel_from_an_empty_directory(site: Path, tmp_path: Path) -> None:
    where = _run(site, tmp_path, "-c", "import gradoracle; print(gradoracle.__file__)")
    assert where.stdout.strip().startswith(str(site)), where.stderr
    assert _run(site, tmp_path, "-c", "import adapters").returncode != 0
    assert _run(site, tmp_path, "-c", "import oracle").returncode != 0
    version = _run(site, tmp_path, "-m", "gradoracle", "--version")
    assert version.returncode == 0
    assert version.stdout.split() == ["gradoracle", _run(site, tmp_path, "-c", _META).stdout.strip()]
    explain = _run(site, tmp_path, "-m", "gradoracle", "explain", "conv-input")
    assert explain.returncode == 0, explain.stderr
    report = _run(
        site, tmp_path, "-m", "gradoracle", "report", "--adapter", "numpy", "--identity", "matvec-jacobian",
        "--examples", "2", "--format", "json", "--out", "out",
    )  # fmt: skip
    assert report.returncode == 0, report.stdout + report.stderr
    assert (tmp_path / "out" / "report.json").exists()


_META = "from importlib.metadata import version; print(version('gradoracle'))"


def test_another_distributions_adapters_package_beside_it(site: Path, tmp_path: Path) -> None:
    """AdapterHub's ``adapters`` installs a top-level ``adapters/``: gradoracle must not care."""
    other = tmp_path / "other-site"
    (other / "adapters").mkdir(parents=True)
    (other / "adapters" / "__init__.py").write_text(
        "raise ImportError('this is AdapterHub, not gradoracle')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(other), str(site)])}
    code = "import gradoracle.adapters as a; print(type(a.load_adapter('numpy')).__name__)"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "NumpyEngineAdapter"


USER_TEST = """
import numpy as np

import adapters
import oracle


def test_the_users_own_packages_are_the_ones_imported():
    assert adapters.USERS_OWN and oracle.USERS_OWN


def matvec(W, x):
    return W @ x


def matvec_backward(g, W, x):
    return {"W": np.outer(g, x), "x": W.T @ g}


def test_matvec_backward(gradoracle):
    gradoracle.check(matvec, {"W": ("n", "m"), "x": ("m",)}, vjp=matvec_backward,
                     identity="matvec-weight-grad", examples=5)
"""


def test_user_repo_with_its_own_adapters_package_and_oracle_module(pytester: pytest.Pytester) -> None:
    """A rootdir with ``adapters/`` and ``oracle.py`` of its own (common names in ML repos)."""
    pytester.mkpydir("adapters").joinpath("__init__.py").write_text("USERS_OWN = True\n")
    pytester.makepyfile(oracle="USERS_OWN = True\n", test_user=USER_TEST)
    pytester.makeini("[pytest]\npythonpath = .\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--gradoracle-adapter", "numpy", "--gradoracle-examples", "3",
        "--gradoracle-identity", "matvec-jacobian", "--gradoracle-identity", "max-pool",
    )  # fmt: skip
    result.assert_outcomes(passed=2 + 4)
