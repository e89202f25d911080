"""The views every human-readable format shares: the verdict matrix and the convention table.

All of them read the report *document* (:func:`gradoracle.reporting.json_report.build_document`),
so Markdown, HTML and JUnit always show what ``report.json`` holds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: A short mark per verdict, for Markdown and the terminal.
VERDICT_ICON: dict[str, str] = {
    "pass": "✅",
    "fail": "❌",
    "error": "💥",
    "skip": "⏭️",
    "xfail": "🟡",
    "not-run": "⏸️",
}

#: Verdicts that need a section of details.
DETAILED_VERDICTS: tuple[str, ...] = ("fail", "error", "xfail")


def as_float(value: Any) -> float | None:
    """A number from a document field (``"Infinity"`` etc. included), None when absent."""
    if value is None:
        return None
    if isinstance(value, str):
        return {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}.get(value)
    return float(value)


def headline_error(record: Mapping[str, Any]) -> float | None:
    """The matrix's error for one result: the relative error of autodiff vs the analytic gradient.

    ``max_rel = |autodiff - analytic|_inf / |analytic|_inf`` (per input, worst over the
    examples), from ``max_errors``; vs finite differences for an identity without a closed
    form; None when the check compared nothing (a skip, a crash before any comparison).
    """
    errors = record.get("max_errors") or {}
    for kind in ("analytic", "fd"):
        if kind in errors:
            return as_float(errors[kind]["max_rel"])
    return None


def fmt_error(value: float | None) -> str:
    """``1.2e-07``, or an empty string when there is no error to show."""
    if value is None:
        return ""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf"
    return f"{value:.1e}"


def fmt_number(value: Any) -> str:
    """A value of a worst element: 9 significant digits, ``n/a`` when absent."""
    number = as_float(value)
    return "n/a" if number is None else f"{number:.9g}"


def message_without_repro(record: Mapping[str, Any]) -> str:
    """The failure message without its trailing repro snippet (shown apart, as code)."""
    message = str(record.get("message") or "")
    if record.get("repro"):
        message = message.split("\n  repro:\n", 1)[0]
    return message


@dataclass
class Matrix:
    """Rows (identity, source), columns (adapter, dtype) and the record in each cell."""

    rows: list[tuple[str, str]] = field(default_factory=list)
    columns: list[tuple[str, str]] = field(default_factory=list)
    cells: dict[tuple[str, str, str], Mapping[str, Any]] = field(default_factory=dict)

    def cell(self, identity: str, column: tuple[str, str]) -> Mapping[str, Any] | None:
        """The record of ``identity`` on ``column = (adapter, dtype)``, or None."""
        return self.cells.get((identity, *column))


def build_matrix(results: Sequence[Mapping[str, Any]]) -> Matrix:
    """The verdict matrix, rows and columns in the order the results come in."""
    m = Matrix()
    for r in results:
        row = (str(r["identity"]), str(r.get("source", "")))
        col = (str(r["adapter"]), str(r["dtype"]))
        if row not in m.rows:
            m.rows.append(row)
        if col not in m.columns:
            m.columns.append(col)
        m.cells[(row[0], *col)] = r
    return m


def convention_rows(conventions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Probe records with the dtypes that observed the same thing merged into one row."""
    rows: list[dict[str, Any]] = []
    index: dict[tuple[Any, ...], dict[str, Any]] = {}
    for c in conventions:
        observed = c.get("error") or c.get("convention") or ""
        verdict = c.get("verdict") or ("error" if c.get("error") else "convention")
        key = (
            c.get("probe"),
            c.get("adapter"),
            observed,
            c.get("agrees_with_notes"),
            verdict,
            c.get("outside"),
        )
        if key in index:
            index[key]["dtypes"].append(c.get("dtype"))
            continue
        row = {
            "probe": c.get("probe", ""),
            "adapter": c.get("adapter", ""),
            "dtypes": [c.get("dtype")],
            "description": c.get("description", ""),
            "observed": observed,
            "is_error": bool(c.get("error")),
            "notes_text": c.get("notes_text", ""),
            "agrees": c.get("agrees_with_notes"),
            "verdict": verdict,
            "judged": judged_text(c),
            "is_failure": verdict == "fail",
            "allowed": c.get("allowed") or "",
            "outside": c.get("outside") or "",
            "repro": c.get("repro") or "",
        }
        index[key] = row
        rows.append(row)
    for row in rows:
        row["dtype"] = ", ".join(str(d) for d in row["dtypes"])
    return rows


def judged_text(probe: Mapping[str, Any]) -> str:
    """``valid convention`` (inside the generalised gradient), ``FAILURE: outside-subdifferential
    (<where>)``, ``error`` or ``unsupported`` (reports written before #13: ``not judged``)."""
    verdict = probe.get("verdict")
    if verdict is None:
        return "error" if probe.get("error") else "not judged"
    if verdict == "fail":
        return f"FAILURE: {probe.get('fault') or 'outside-subdifferential'} ({probe.get('outside', '')})"
    if verdict == "convention":
        return "valid convention"
    return str(verdict)


def agrees_text(value: bool | None) -> str:
    """``yes`` / ``no`` / empty (the notes give no answer)."""
    return "" if value is None else ("yes" if value else "no")


def summary_line(document: Mapping[str, Any]) -> str:
    """``168 checks: 160 pass, 2 fail, ... - nonconformance``."""
    summary = document["summary"]
    counts = summary["counts"]
    parts = [f"{n} {v}" for v, n in counts.items() if n or v in ("pass", "fail", "error")]
    probes = summary.get("convention_failures") or 0
    extra = f"; {probes} convention probe(s) outside the generalised gradient" if probes else ""
    return f"{summary['total']} checks: {', '.join(parts)}{extra} - {summary['status']}"


def versions_line(document: Mapping[str, Any]) -> str:
    """``Python 3.11.9, numpy 2.1.0, torch 2.13.0, ...`` (installed packages only)."""
    env = document.get("environment") or {}
    packages = env.get("packages") or {}
    parts = [f"Python {env.get('python', {}).get('version', '?')}"]
    for name in ("numpy", "torch", "jax", "jaxlib", "hypothesis"):
        if packages.get(name):
            parts.append(f"{name} {packages[name]}")
    return ", ".join(parts)
