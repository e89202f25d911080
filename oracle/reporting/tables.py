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

#: The comment line of a repro snippet that says what it needs to run (PYTHONPATH, variables).
REPRO_NEEDS_PREFIX = "# needs: "

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
    from gradoracle.results import MODE_KINDS

    errors = record.get("max_errors") or {}
    for kind in MODE_KINDS.get(str(record.get("mode") or "vjp"), MODE_KINDS["vjp"]):
        if kind in errors:
            return as_float(errors[kind]["max_rel"])
    return None


def headline_ratio(record: Mapping[str, Any]) -> float | None:
    """The matrix's size of error: the worst ``error / tolerance`` of the check (all comparisons).

    ``max_ratio = max_i |g_i - r_i| / allowed_i`` over every comparison, input and example
    (a check fails above 1): the same scale for float32 and float64 cells, unlike a relative
    error (a failing float64 cell at 1.6e-07 beside passing float32 cells at 1.2e-05).
    None when the check compared nothing.
    """
    errors = record.get("max_errors") or {}
    ratios = [as_float(stat.get("max_ratio")) for stat in errors.values()]
    known = [r for r in ratios if r is not None]
    return max(known) if known else None


def fmt_ratio(value: float | None) -> str:
    """``0.0033``, ``1.2e-05``, ``3.3e+11`` (two significant digits), empty when absent."""
    if value is None:
        return ""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf"
    return f"{value:.2g}"


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


def column_of(record: Mapping[str, Any]) -> tuple[str, str]:
    """The matrix column of a result: ``(adapter, dtype)``, the mode added after the dtype
    for forward mode and second order (``float32 jvp``)."""
    mode = str(record.get("mode") or "vjp")
    dtype = str(record["dtype"])
    return (str(record["adapter"]), dtype if mode == "vjp" else f"{dtype} {mode}")


def build_matrix(results: Sequence[Mapping[str, Any]]) -> Matrix:
    """The verdict matrix, rows and columns in the order the results come in."""
    m = Matrix()
    for r in results:
        row = (str(r["identity"]), str(r.get("source", "")))
        col = column_of(r)
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
    """``Python 3.11.9, numpy 2.1.0 (numpy), torch 2.13.0 (torch), mylib 1.2 (mylib), hypothesis 6.1``.

    The frameworks are those whose adapters ran (``environment.frameworks``, third-party
    adapters included), each with the adapter that used it; a framework installed here but
    not run is not named.  A report without that section (older, or merged from such) names
    the installed numpy/torch/jax as before.
    """
    env = document.get("environment") or {}
    packages = env.get("packages") or {}
    parts = [f"Python {env.get('python', {}).get('version', '?')}"]
    frameworks = env.get("frameworks")
    if isinstance(frameworks, Mapping):
        users: dict[tuple[str, str], list[str]] = {}
        for adapter, dists in frameworks.items():
            for dist, version in (dists or {}).items():
                users.setdefault((str(dist), str(version)), []).append(str(adapter))
        for (dist, version), adapters in users.items():
            parts.append(f"{dist} {version} ({', '.join(adapters)})")
        if packages.get("hypothesis"):
            parts.append(f"hypothesis {packages['hypothesis']}")
        return ", ".join(parts)
    for name in ("numpy", "torch", "jax", "jaxlib", "hypothesis"):
        if packages.get(name):
            parts.append(f"{name} {packages[name]}")
    return ", ".join(parts)


def repro_needs(repro: str | None) -> str:
    """What a repro snippet needs to run, from its ``# needs:`` line (empty when nothing)."""
    for line in (repro or "").splitlines():
        if line.startswith(REPRO_NEEDS_PREFIX):
            return line[len(REPRO_NEEDS_PREFIX) :].split("  (", 1)[0].strip()
    return ""


@dataclass
class ConventionCell:
    """What one framework does at one probe: the text, whether it agrees with the notes, an error."""

    text: str
    agrees: bool | None
    is_error: bool
    dtypes: list[str] = field(default_factory=list)
    failure: bool = False  # outside the generalised (Clarke) gradient: a failure, not a convention


@dataclass
class ConventionMatrix:
    """Probes (rows) x adapters (columns), with the notes' answer as a column of its own."""

    probes: list[dict[str, str]] = field(default_factory=list)  # name, description, notes_text
    adapters: list[str] = field(default_factory=list)
    cells: dict[tuple[str, str], ConventionCell] = field(default_factory=dict)

    def cell(self, probe: str, adapter: str) -> ConventionCell | None:
        """What ``adapter`` does at ``probe`` (None when it was not probed)."""
        return self.cells.get((probe, adapter))


def convention_matrix(conventions: Sequence[Mapping[str, Any]]) -> ConventionMatrix:
    """The convention probes as the probe x framework table the README uses.

    Each probe also carries ``judged``: ``valid convention`` when every framework's value lies
    inside the generalised (Clarke) gradient, ``FAILURE: outside-subdifferential (<where>)``
    otherwise (``not judged`` for reports written before the judgement existed).

    A cell holds what the framework returned; when its dtypes disagree, each dtype's answer
    (``float64: a; float32: b``).  ``agrees`` is True only if every dtype agrees with the notes,
    False if one does not, None where the notes give no answer.
    """
    m = ConventionMatrix()
    per_cell: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in convention_rows(conventions):
        probe, adapter = str(row["probe"]), str(row["adapter"])
        if probe not in [p["name"] for p in m.probes]:
            m.probes.append(
                {
                    "name": probe,
                    "description": str(row["description"]),
                    "notes_text": str(row["notes_text"]),
                    "judged": "",
                }
            )
        if adapter not in m.adapters:
            m.adapters.append(adapter)
        per_cell.setdefault((probe, adapter), []).append(row)

    def said(r: Mapping[str, Any]) -> str:
        text = ("error: " if r["is_error"] else "") + str(r["observed"])
        return text + (f" [{r['judged']}]" if r.get("is_failure") else "")

    for probe_row in m.probes:
        rows_of_probe = [r for (p, _), rs in per_cell.items() if p == probe_row["name"] for r in rs]
        failing = [f"{r['adapter']} {r['dtype']}" for r in rows_of_probe if r.get("is_failure")]
        judged = [str(r.get("judged", "")) for r in rows_of_probe if not r["is_error"]]
        if failing:
            probe_row["judged"] = f"FAILURE: outside-subdifferential ({', '.join(failing)})"
        elif not judged:
            probe_row["judged"] = "error"
        elif all(j == "valid convention" for j in judged):
            probe_row["judged"] = "valid convention"
        else:
            probe_row["judged"] = "not judged"
    for key, rows in per_cell.items():
        errors = [r for r in rows if r["is_error"]]
        text = said(rows[0]) if len(rows) == 1 else "; ".join(f"{r['dtype']}: {said(r)}" for r in rows)
        verdicts = [r["agrees"] for r in rows if not r["is_error"]]
        agrees: bool | None
        if any(v is False for v in verdicts):
            agrees = False
        elif verdicts and all(v is True for v in verdicts):
            agrees = True
        else:
            agrees = None
        dtypes = [str(d) for r in rows for d in r["dtypes"]]
        m.cells[key] = ConventionCell(
            text=text,
            agrees=agrees,
            is_error=bool(errors),
            dtypes=dtypes,
            failure=any(r.get("is_failure") for r in rows),
        )
    return m


def agrees_mark(value: bool | None) -> str:
    """``(= notes)`` / ``(differs from notes)`` / empty, after a convention cell's text."""
    return "" if value is None else (" (= notes)" if value else " (differs from the notes)")
