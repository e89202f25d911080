"""Output at a glance (issue 12, item 7).

- an 80-column ``check`` table shows every number whole (names fold instead);
- ``-q`` / ``-v`` on ``check`` and ``report``; the convention table belongs to ``-v``;
- report.html: no emoji (inline-SVG icons and words), verdict first (the cell's colour),
  error second (error/tolerance, a number and a bar), conventions as probe x framework;
- failure plots only where they add something, at a legible size;
- the environment names the frameworks that ran (third-party included), not the others;
- the plugin's terminal summary shows the convention table when probes ran;
- a repro that needs PYTHONPATH or an environment variable says so.

Each with a negative control (the check would notice the old behaviour).
"""

from __future__ import annotations

import base64
import io
import re
import struct
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from gradoracle.cli import main
from gradoracle.cli.common import results_table
from gradoracle.reporting import write_reports
from gradoracle.reporting.environment import adapter_frameworks, frameworks_that_ran
from gradoracle.reporting.html_report import (
    MIN_ELEMENTS_TO_DRAW,
    VERDICT_COLOURS,
    failure_pictures,
    worth_drawing,
)
from gradoracle.reporting.tables import convention_matrix, repro_needs, versions_line
from gradoracle.runner import CheckSettings, check

pytest_plugins = ["pytester"]

TESTS = Path(__file__).parent
FAST = CheckSettings(examples=3, seed=0)
BROKEN = "broken_adapters:WrongPixelMaxPoolAdapter"

#: Emoji and pictographs a machine without an emoji font shows as empty boxes.
EMOJI = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\ufe0f]")


@pytest.fixture(autouse=True)
def _tests_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS))


# ------------------------------------------------------------------ 80 columns


def _numbers(results: list[Any]) -> list[str]:
    out = []
    for r in results:
        out += [
            f"{r.max_ratio():.2g}",
            f"{r.max_rel('analytic'):.1e}",
            f"{r.max_rel('fd'):.1e}",
            str(r.examples),
        ]
    return out


def test_an_80_column_check_table_shows_every_number_whole(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    args = ["check", "--identity", "max-pool", "--identity", "mlp-e-hidden-params", "--examples", "3"]
    code = main([*args, "--adapter", "numpy", "--adapter", BROKEN, "-q"])
    assert code == 1
    capsys.readouterr()
    assert main([*args, "--adapter", "numpy", "--adapter", BROKEN]) == 1
    out = capsys.readouterr().out
    table_text = out.split("max-pool-wrong-pixel-float64: fail", 1)[0]  # the table, before the messages
    assert all(len(line) <= 80 for line in table_text.splitlines()), table_text
    results = [
        check(i, a, d, CheckSettings(examples=3, seed=0))
        for a in ("numpy", BROKEN)
        for d in ("float64", "float32")
        for i in ("max-pool", "mlp-e-hidden-params")
    ]
    words = set(re.findall(r"\S+", table_text))
    for number in _numbers(results):
        assert number in words, (number, table_text)
    assert "time" in table_text and "exam-" in table_text


def test_the_number_check_notices_a_cut_table() -> None:
    """Negative control: a plain rich table (columns allowed to shrink) loses digits at 80."""
    from rich.table import Table

    results = [
        check("max-pool", BROKEN, "float64", FAST),
        check("mlp-e-hidden-params", "numpy", "float64", FAST),
    ]
    plain = Table()
    for col in (
        "identity",
        "adapter",
        "dtype",
        "verdict",
        "fault",
        "err/tol",
        "rel err (analytic)",
        "rel err (FD)",
        "examples",
        "time",
    ):
        plain.add_column(col)
    for r in results:
        plain.add_row(
            r.identity,
            r.adapter,
            r.dtype,
            str(r.verdict),
            str(r.fault),
            *_numbers([r])[:1],
            *_numbers([r])[1:3],
            str(r.examples),
            "0.01s",
        )
    buffer = io.StringIO()
    Console(file=buffer, width=80).print(plain)
    words = set(re.findall(r"\S+", buffer.getvalue()))
    assert any(n not in words for n in _numbers(results))
    buffer = io.StringIO()
    Console(file=buffer, width=80).print(results_table(results, "t", width=80))
    words = set(re.findall(r"\S+", buffer.getvalue()))
    assert all(n in words for n in _numbers(results))


# ------------------------------------------------------------------ -q / -v


def test_check_quiet_default_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["check", "--identity", "max-pool", "--adapter", BROKEN, "--dtype", "float64", "--examples", "3"]
    assert main([*args, "-q"]) == 1
    quiet = capsys.readouterr().out
    assert main(args) == 1
    default = capsys.readouterr().out
    assert main([*args, "-v"]) == 1
    verbose = capsys.readouterr().out
    assert "max-pool-wrong-pixel-float64: fail" in quiet
    assert "err/tol" not in quiet and "gradient check failed" not in quiet
    assert "err/tol" in default and "gradient check failed" in default
    assert "Conventions at non-differentiable points" not in default
    assert "tolerance formula:" not in default
    assert "Conventions at non-differentiable points" in verbose
    assert "tolerance formula: float64" in verbose
    assert len(quiet) < len(default) < len(verbose)


def test_report_quiet_and_verbose(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    base = ["report", "--identity", "max-pool", "--adapter", "numpy", "--dtype", "float64", "--examples", "3"]
    assert main([*base, "--out", str(tmp_path / "q"), "--format", "json", "-q"]) == 0
    quiet = capsys.readouterr().out
    assert main([*base, "--out", str(tmp_path / "v"), "--format", "json", "-v"]) == 0
    verbose = capsys.readouterr().out
    assert "Conventions at non-differentiable points" not in quiet
    assert "err/tol" not in quiet
    assert "1 checks: 1 pass" in quiet
    assert "Conventions at non-differentiable points" in verbose
    assert "err/tol" in verbose


# ------------------------------------------------------------------ report.html


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    sys.path.insert(0, str(TESTS))
    try:
        from gradoracle.adapters import load_adapter
        from gradoracle.conventions import run_probes

        adapters = ["numpy", BROKEN, "broken_adapters:RaisingAdapter"]
        results = [
            check(i, a, d, FAST)
            for a in adapters
            for d in ("float64", "float32")
            for i in ("max-pool", "matvec-weight-grad")
        ]
        loaded = [load_adapter(a) for a in adapters]
        probes = run_probes(loaded[:2], ["float64", "float32"])
        out = tmp_path_factory.mktemp("report")
        meta = {"seed": 0, "examples": 3, "frameworks": frameworks_that_ran(loaded, results)}
        write_reports(results, probes, out, meta=meta)
    finally:
        sys.path.remove(str(TESTS))
    page = _Page()
    raw = (out / "report.html").read_text(encoding="utf-8")
    page.feed(raw)
    return {"out": out, "raw": raw, "page": page, "results": results}


def test_html_has_no_emoji_and_an_svg_icon_and_word_per_verdict(report: dict[str, Any]) -> None:
    raw = report["raw"]
    assert not EMOJI.findall(raw)
    tags = report["page"].tags
    symbols = {a.get("id") for t, a in tags if t == "symbol"}
    assert {"icon-pass", "icon-fail", "icon-error", "icon-xfail", "icon-skip", "icon-not-run"} <= symbols
    cells = [a for t, a in tags if t == "td" and a.get("data-verdict")]
    assert {c["data-verdict"] for c in cells} == {"pass", "fail", "error"}
    # negative control: the detector sees the Markdown report's emoji
    assert EMOJI.findall((report["out"] / "report.md").read_text(encoding="utf-8"))


def test_html_cells_are_verdict_coloured_and_show_error_over_tolerance(report: dict[str, Any]) -> None:
    cells = {a["data-id"]: a for t, a in report["page"].tags if t == "td" and a.get("data-id")}
    for cell in cells.values():
        assert VERDICT_COLOURS[str(cell["data-verdict"])]["background"] in str(cell["style"])
    by_id = {r.id: r for r in report["results"]}
    ok = cells["max-pool-numpy-float32"]
    bad = cells["max-pool-wrong-pixel-float64"]
    assert float(str(ok["data-ratio"])) == pytest.approx(by_id["max-pool-numpy-float32"].max_ratio())
    assert float(str(ok["data-ratio"])) < 1 < float(str(bad["data-ratio"]))
    # like with like: a relative error would rank a passing float32 cell above a failing float64 one
    assert "relative error" in str(ok["title"]) and "error/tolerance" in str(ok["title"])
    text = "".join(report["page"].text)
    assert f"{by_id['max-pool-wrong-pixel-float64'].max_ratio():.2g}" in text


def test_conventions_are_a_probe_by_framework_table_with_the_notes_column(report: dict[str, Any]) -> None:
    raw = report["raw"]
    table = raw.split('id="conventions"', 1)[1].split("</table>", 1)[0]
    header = re.findall(r"<th>(.*?)</th>", table.split("</thead>")[0])
    assert header == ["probe", "numpy", "wrong-pixel", "judged", "the notes"]
    rows = table.split("</thead>")[1].count("<tr>")
    probes = {
        p["probe"]
        for p in __import__("json").loads((report["out"] / "report.json").read_text())["conventions"]
    }
    assert rows == len(probes)  # one row per probe, not per probe x adapter x dtype
    m = convention_matrix(
        [
            {"probe": "p", "adapter": "a", "dtype": "float64", "convention": "x", "agrees_with_notes": True},
            {"probe": "p", "adapter": "a", "dtype": "float32", "convention": "y", "agrees_with_notes": False},
        ]
    )
    cell = m.cell("p", "a")
    assert cell is not None and cell.text == "float64: x; float32: y" and cell.agrees is False


def test_markdown_cells_show_error_over_tolerance_and_the_pivoted_conventions(report: dict[str, Any]) -> None:
    md = (report["out"] / "report.md").read_text(encoding="utf-8")
    by_id = {r.id: r for r in report["results"]}
    assert f"pass {by_id['max-pool-numpy-float64'].max_ratio():.2g}" in md
    assert "| probe | numpy | wrong-pixel | judged | the notes |" in md


# ------------------------------------------------------------------ pictures


def _png_size(b64: str) -> tuple[int, int]:
    data = base64.b64decode(b64)
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def test_pictures_only_where_they_add_something_and_legible() -> None:
    one = {"gradients": {"x": {"autodiff": [1.0], "analytic": [2.0]}}}
    pictures, skipped = failure_pictures({"counterexample": one, "worst": {"input": "x", "index": [0]}})
    assert pictures == [] and "not drawn" in skipped[0]
    assert worth_drawing(np.ones(MIN_ELEMENTS_TO_DRAW - 1), np.zeros(MIN_ELEMENTS_TO_DRAW - 1))
    assert worth_drawing(np.zeros(8), np.zeros(8))
    grads = {
        "X": {"autodiff": np.arange(12.0).reshape(3, 4).tolist(), "analytic": np.zeros((3, 4)).tolist()},
        "v": {"autodiff": [0.0, 1.0, 2.0, 3.0, 4.0], "analytic": [0.0, 1.0, 2.0, 3.0, 5.0]},
        "row": {"autodiff": [[0.0, 1.0, 2.0, 3.0]], "analytic": [[0.0, 1.0, 2.0, 9.0]]},
    }
    pictures, skipped = failure_pictures(
        {"counterexample": {"gradients": grads}, "worst": {"input": "X", "index": [1, 2]}}
    )
    assert [p["input"] for p in pictures] == ["X", "v", "row"] and not skipped
    for p in pictures:
        width, height = _png_size(p["png"])
        assert width >= 1000 and height >= 300  # 100 dpi, 10 pt text: legible when scaled down


def test_html_failure_of_a_tiny_input_has_no_picture(report: dict[str, Any]) -> None:
    section = report["raw"].split('id="failure-max-pool-wrong-pixel-float64"', 1)[1].split("</section>", 1)[0]
    assert ("<img" in section) == ("not drawn" not in section)


# ------------------------------------------------------------------ environment


ADAPTER_MODULE = '''
import packaging.version
from gradoracle.adapters.numpy_engine import NumpyEngineAdapter

class PackagingAdapter(NumpyEngineAdapter):
    """A stand-in for a third-party framework's adapter (its module imports 'packaging')."""

    def __init__(self):
        super().__init__(name="pkg")
'''


def test_environment_names_the_frameworks_that_ran(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    from gradoracle.adapters import load_adapter

    (tmp_path / "pkg_adapter.py").write_text(textwrap.dedent(ADAPTER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    third = load_adapter("pkg_adapter:PackagingAdapter")
    assert adapter_frameworks(third)["packaging"] == metadata.version("packaging")
    numpy_adapter = load_adapter("numpy")
    results = [check("max-pool", numpy_adapter, "float64", FAST), check("max-pool", third, "float64", FAST)]

    class NotRun:
        name = "torch"
        frameworks = ("torch",)

    frameworks = frameworks_that_ran([numpy_adapter, third, NotRun()], results)
    assert set(frameworks) == {"numpy", "pkg"}
    line = versions_line(
        {"environment": {"python": {"version": "3"}, "packages": {}, "frameworks": frameworks}}
    )
    assert f"numpy {metadata.version('numpy')} (numpy, pkg)" in line
    assert f"packaging {metadata.version('packaging')} (pkg)" in line
    assert "torch" not in line and "jax" not in line
    # negative control: without the frameworks section the old line names what is installed
    legacy = versions_line({"environment": {"python": {"version": "3"}, "packages": {"torch": "9.9"}}})
    assert "torch 9.9" in legacy


# ------------------------------------------------------------------ plugin summary


def test_plugin_summary_shows_conventions_when_probes_ran(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ngradoracle_adapter = numpy\n")
    base_id = ["--gradoracle-identity", "max-pool"]
    base = [
        "-p",
        "no:cacheprovider",
        "--gradoracle-examples",
        "2",
        "--gradoracle-dtype",
        "float64",
    ]
    result = pytester.runpytest(*base, *base_id, "--gradoracle-report", str(pytester.path / "rep"))
    out = result.stdout.str()
    assert "Conventions at non-differentiable points" in out, out + result.stderr.str()
    assert "relu-at-0" in out
    result = pytester.runpytest(*base, *base_id)  # negative control: no report, no probes, no table
    assert "Conventions at non-differentiable points" not in result.stdout.str()


# ------------------------------------------------------------------ repro needs


def test_a_repro_that_needs_pythonpath_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    r = check("max-pool", BROKEN, "float64", FAST)
    first = (r.repro or "").splitlines()[0]
    assert first.startswith("# needs: PYTHONPATH=")
    assert str(TESTS.resolve()) in first
    assert repro_needs(r.repro) == f"PYTHONPATH={TESTS.resolve()}"
    monkeypatch.setenv("JAX_ENABLE_X64", "1")
    r = check("max-pool", BROKEN, "float64", FAST)
    assert "JAX_ENABLE_X64=1" in repro_needs(r.repro)


def test_a_repro_of_an_installed_adapter_needs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: an adapter importable from anywhere gets no note."""
    for name in ("JAX_ENABLE_X64", "JAX_PLATFORMS", "XLA_FLAGS", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    from gradoracle.identities import get_identity
    from gradoracle.runner import repro_snippet
    from gradoracle.strategies import Example

    example = Example({"X": np.zeros((2, 2))}, {"k": 2}, 0)
    snippet = repro_snippet(
        get_identity("max-pool"), "gradoracle.adapters.numpy_engine:NumpyEngineAdapter", "float64", example
    )
    assert not snippet.startswith("# needs:")
    snippet = repro_snippet(get_identity("max-pool"), BROKEN, "float64", example)
    assert snippet.startswith("# needs: PYTHONPATH=")
