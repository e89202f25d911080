"""Rendering the bench: the table cells, ``bench.md``, and writing ``bench.json``/``bench.md``."""

from __future__ import annotations

from pathlib import Path

from gradoracle.bench.cases import DETECTION_GRID
from gradoracle.bench.report import BenchReport, Measurement, _cpu, targets


def fmt_seconds(s: float | None) -> str:
    """``12 us``, ``3.4 ms``, ``1.2 s``."""
    if s is None:
        return ""
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def fmt_ratio(m: Measurement | None) -> str:
    """The cost cell of a tool: ``12x``, ``~3e4x (est.)``, or the status."""
    if m is None:
        return ""
    if m.status == "skipped" and m.ratio is not None:
        return f"~{m.ratio:.2g}x est."
    if m.status != "ok":
        return m.status
    if m.ratio is None:
        return fmt_seconds(m.cpu_s)
    text = f"{m.ratio:.3g}x" if m.ratio < 1000 else f"{m.ratio:,.0f}x"
    if m.ratio_method == "sequential":  # not interleaved with its forward+backward: a noisier ratio
        text += " seq."
    return text if m.passed in (True, None) else f"{text} (FAILED)"


def fmt_detect(m: Measurement | None) -> str:
    """The detection cell: the smallest relative gradient error caught."""
    if m is None or m.status != "ok":
        return ""
    if m.detect_status == "measured" and m.detect_eps is not None:
        floor = m.detect_eps <= DETECTION_GRID[-1]  # caught all the way down the grid
        return f"{'<=' if floor else ''}{m.detect_eps:.0e}"
    return {"never caught": "none", "false failure": "false fail", "not measured": "-"}.get(
        m.detect_status, ""
    )


def markdown(report: BenchReport, command: str = "gradoracle bench") -> str:
    """``bench.md``: the side-by-side tables, the targets, how it was measured."""
    tools = _tool_columns(report)
    lines = [
        "# gradoracle bench",
        "",
        f"Command: `{command}`; float64; {report.config.get('clock')}; torch threads "
        f"{report.config.get('torch_threads')}; load average at start {report.load_average.get('start')}, "
        f"at end {report.load_average.get('end')}; {report.duration_s:.0f} s in all.",
        "",
        "## Cost of one check, as a multiple of one forward+backward of the same op",
        "",
        "Each cell: CPU time of one check / CPU time of one plain forward+backward in the tool's "
        "framework (PyTorch eager autograd; JAX `jit(vjp)`, compiled once; the NumPy engine's vjp): "
        "the median over rounds of the per-round ratio, the check and the forward+backward timed "
        "alternately in each round (interleaved), so a change in the machine's load hits both. "
        "`seq.`: a check too slow to repeat in rounds, its median time over the forward+backward's "
        "measured before it. `est.`: not run, predicted from the previous size. "
        "`gradoracle-batch[...]`: 32 examples of the case's shape evaluated as one batch "
        "(`evaluate_examples`; fewer above 65k input elements, see Notes), cost per example. "
        "`gradoracle[jax]`: the adapter `jax?combine=off`, the steady state of a long run at one "
        "shape (each kind its own program); the default report's combined programs are timed by "
        "`--report-timing`. "
        "fwd+bwd columns: CPU time of one forward+backward. "
        "load: the 1-minute load average when the case started.",
        "",
    ]
    base_cols = [t for t in tools if t.startswith("fwd+bwd")]
    check_cols = [t for t in tools if not t.startswith("fwd+bwd")]
    header = ["case", "elements", "load", *base_cols, *check_cols]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in report.cases:
        row = [c.label, str(c.elements), "" if not c.load else f"{c.load[0]:.2f}"]
        row += [fmt_seconds(_cpu(c, t)) for t in base_cols]
        row += [fmt_ratio(c.measurements.get(t)) for t in check_cols]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "## Evaluations per check and detection power",
        "",
        "Evaluations: framework calls (forwards and backwards) of one check.  Detection: the smallest "
        "relative gradient error `eps` (gradient replaced by `g + eps ||g|| n/||n||`) the check still "
        "rejects, on the grid 1e-1 .. 1e-14 (`<=1e-14`: caught down to the grid's end; `none`: not even "
        "1e-1; `-`: not measured).",
        "",
    ]
    header = ["case", *[f"{t} evals" for t in check_cols], *[f"{t} catches" for t in check_cols]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in report.cases:
        ms = [c.measurements.get(t) for t in check_cols]
        row = [c.label]
        row += ["" if m is None or m.evals is None else str(m.evals) for m in ms]
        row += [fmt_detect(m) for m in ms]
        lines.append("| " + " | ".join(row) + " |")
    new_shape = [(c.label, c.measurements.get("gradoracle[jax]")) for c in report.cases]
    if any(m is not None and m.new_shape_s is not None for _, m in new_shape):
        lines += ["", "## JAX: first check at a new shape (compilation) minus a repeated check", ""]
        lines += ["| case | first check | repeated check | new-shape cost |", "|---|---|---|---|"]
        for label, m in new_shape:
            if m is not None and m.status == "ok":
                lines.append(
                    f"| {label} | {fmt_seconds(m.first_cpu_s)} | {fmt_seconds(m.cpu_s)} | "
                    f"{fmt_seconds(m.new_shape_s)} |"
                )
    lines += [
        "",
        "## Targets",
        "",
        "Issue 16: one check with its examples evaluated as a batch (the `gradoracle-batch` columns). "
        "Issue 7: one check evaluated one example at a time (flat: the same evaluations at every size and "
        "the ratio at the largest size at most 1.5x the smallest's).",
        "",
        "| issue | target | measured | met |",
        "|---|---|---|---|",
    ]
    for t in targets(report):
        value = t["value"]
        shown = "" if value is None else (fmt_seconds(value) if t["unit"] == "s" else f"{value:.3g}")
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "no")
        lines.append(f"| {t.get('issue', '')} | {t['target']} | {shown} | {met} |")
    notes = [(c.label, m.tool, m.note) for c in report.cases for m in c.measurements.values() if m.note]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {label}, {tool}: {note}" for label, tool, note in notes]
    return "\n".join(lines) + "\n"


def _tool_columns(report: BenchReport) -> list[str]:
    seen: dict[str, None] = {}
    for c in report.cases:
        for t in c.measurements:
            seen.setdefault(t, None)
    return list(seen)


def write_bench(report: BenchReport, out: Path, command: str = "gradoracle bench") -> list[Path]:
    """Write ``bench.json`` and ``bench.md`` into ``out`` (atomically)."""
    import json

    from gradoracle.reporting.atomic import atomic_write_text

    data = report.to_dict()
    data["command"] = command
    return [
        atomic_write_text(out / "bench.json", json.dumps(data, indent=2, default=str) + "\n"),
        atomic_write_text(out / "bench.md", markdown(report, command)),
    ]
