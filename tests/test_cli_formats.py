"""Report formats on a core install: HTML is left out by default, an error when asked for."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from gradoracle.cli import common, main


def _without_html_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name in ("jinja2", "matplotlib") else real(name, *args, **kwargs)

    monkeypatch.setattr(common.importlib.util, "find_spec", find_spec)


def test_default_formats_leave_html_out_with_a_note(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    _without_html_libraries(monkeypatch)
    assert common.chosen_formats(None) == [f for f in common.FORMATS if f != "html"]
    assert "report.html needs jinja2 and matplotlib" in capsys.readouterr().err


def test_html_asked_for_without_its_libraries_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_html_libraries(monkeypatch)
    with pytest.raises(common.UsageError, match=r"gradoracle\[report\]"):
        common.chosen_formats([["json", "html"]])


def test_with_the_libraries_the_default_is_all_four() -> None:
    pytest.importorskip("jinja2")
    pytest.importorskip("matplotlib")
    assert common.chosen_formats(None) == list(common.FORMATS)


def test_report_on_a_core_install_writes_the_other_formats(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: Any
) -> None:
    _without_html_libraries(monkeypatch)
    out = tmp_path / "reports"
    code = main(
        [
            "report",
            "--identity",
            "matvec-jacobian",
            "--adapter",
            "numpy",
            "--jobs",
            "1",
            "-q",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    written = {p.name for p in out.iterdir()}
    assert {"report.json", "report.md", "junit.xml"} <= written
    assert "report.html" not in written
    # asked for explicitly, the same install refuses before running anything
    assert (
        main(
            [
                "report",
                "--identity",
                "matvec-jacobian",
                "--adapter",
                "numpy",
                "--format",
                "html",
                "--out",
                str(tmp_path / "other"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "other").exists()
