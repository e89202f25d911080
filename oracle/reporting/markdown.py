"""``report.md``: the matrix, the convention table and every failure, as GitHub Markdown.

Readable as a GitHub Actions step summary (``cat reports/report.md >> $GITHUB_STEP_SUMMARY``).
Free text from gradoracle.adapters and exceptions only appears inside fenced code blocks (fenced
with more backticks than the text contains) or with Markdown/HTML metacharacters
escaped, so it cannot inject markup.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from gradoracle.reporting.tables import (
    DETAILED_VERDICTS,
    VERDICT_ICON,
    agrees_mark,
    build_matrix,
    convention_matrix,
    convention_rows,
    fmt_number,
    fmt_ratio,
    headline_ratio,
    message_without_repro,
    repro_needs,
    summary_line,
    versions_line,
)
from gradoracle.specification import source_words

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&])")


def escape(text: Any) -> str:
    """Text safe inside a Markdown table cell or paragraph (metacharacters escaped, one line)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\r", " ").replace("\n", " ")


def fence(text: str, lang: str = "text") -> str:
    """``text`` in a fenced code block longer than any backtick run inside it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{lang}\n{text.rstrip()}\n{ticks}"


def _cell(record: Mapping[str, Any] | None) -> str:
    if record is None:
        return ""
    verdict = str(record["verdict"])
    ratio = fmt_ratio(headline_ratio(record)) if verdict not in ("skip", "not-run") else ""
    return f"{VERDICT_ICON.get(verdict, '')} {verdict}" + (f" {ratio}" if ratio else "")


def _matrix(results: Sequence[Mapping[str, Any]]) -> list[str]:
    m = build_matrix(results)
    if not m.rows:
        return ["_No checks in this report._"]
    header = ["identity", "source", *(f"{a} {d}" for a, d in m.columns)]
    lines = ["| " + " | ".join(escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    for identity, source in m.rows:
        cells = [_cell(m.cell(identity, col)) for col in m.columns]
        lines.append("| " + " | ".join([escape(identity), escape(source), *cells]) + " |")
    lines.append("")
    lines.append(
        "Each cell: the verdict, then the worst error as a fraction of what the tolerance allows "
        "(error / tolerance over every comparison, input, element and example; a check fails above 1), "
        "the same scale for float32 and float64. "
        + " ".join(f"{icon} {v}" for v, icon in VERDICT_ICON.items())
    )
    sources = list(dict.fromkeys(source for _, source in m.rows if source_words(source) != source))
    if sources:
        lines.append("")
        named = "; ".join(f"{escape(s)}: {escape(source_words(s))}" for s in sources)
        lines.append(f"Sources: {named}.")
    return lines


def _conventions(conventions: Sequence[Mapping[str, Any]]) -> list[str]:
    """The probe x framework table, the notes' answer as the last column."""
    m = convention_matrix(conventions)
    if not m.probes:
        return ["_No convention probes in this report._"]
    header = ["probe", *m.adapters, "judged", "the notes"]
    lines = ["| " + " | ".join(escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    for probe in m.probes:
        cells = []
        for adapter in m.adapters:
            cell = m.cell(probe["name"], adapter)
            cells.append("" if cell is None else escape(cell.text + agrees_mark(cell.agrees)))
        lines.append(
            "| "
            + " | ".join(
                [escape(probe["name"]), *cells, escape(probe["judged"]), escape(probe["notes_text"])]
            )
            + " |"
        )
    lines.append("")
    lines.append(
        "A value inside the generalised (Clarke) gradient, the convex hull of the one-sided derivatives, "
        "is a valid convention; a value outside it is a failure (fault `outside-subdifferential`)."
    )
    for r in convention_rows(conventions):
        if r["is_failure"]:
            lines += [
                "",
                f"**{escape(r['probe'])}** ({escape(r['adapter'])}, {escape(r['dtype'])}): "
                f"{escape(r['outside'])}.  Allowed: {escape(r['allowed'])}.",
            ]
            if r["repro"]:
                lines += ["", fence(str(r["repro"]), "python")]
    return lines


def _details(record: Mapping[str, Any]) -> list[str]:
    verdict = str(record["verdict"])
    fault = str(record.get("fault", "none"))
    title = f"### {VERDICT_ICON.get(verdict, '')} {escape(record['id'])}: {verdict}"
    if fault != "none":
        title += f" ({escape(fault)} fault)"
    lines = [title, ""]
    precision = record.get("precision") or {}
    if precision.get("mode"):
        lines.append(
            f"Reduced precision: {escape(precision.get('bits'))} correct mantissa bits "
            f"({escape(precision.get('text', precision['mode']))})."
        )
        lines.append("")
    deviation = record.get("deviation")
    if verdict == "xfail" and deviation:
        link = str(deviation.get("link") or "")
        lines.append(
            f"Expected deviation: {escape(deviation.get('reason', ''))}"
            + (f" ({escape(link)})" if link else "")
        )
        lines.append("")
    worst = record.get("worst")
    if worst:
        lines.append(
            f"Worst element: input {escape(worst.get('input'))} {escape(worst.get('index'))} "
            f"({escape(worst.get('kind'))}): autodiff {fmt_number(worst.get('autodiff'))}, "
            f"analytic {fmt_number(worst.get('analytic'))}, "
            f"finite differences {fmt_number(worst.get('fd'))}; "
            f"|error| {fmt_number(worst.get('abs_error'))} > allowed {fmt_number(worst.get('allowed'))}."
        )
        lines.append("")
    lines.append(fence(message_without_repro(record) or "(no message)"))
    if record.get("repro"):
        needs = repro_needs(str(record["repro"]))
        intro = f"Repro (runs on its own; it needs {escape(needs)}):" if needs else "Repro (runs on its own):"
        lines += ["", intro, "", fence(str(record["repro"]), "python")]
    lines.append("")
    return lines


def _deviations(known: Mapping[str, Any] | None) -> list[str]:
    if not known:
        return []
    items = [
        f"- expected deviation {escape(m.get('id'))}: {escape(m.get('reason'))}"
        for m in known.get("matched", [])
    ]
    items += [
        f"- ⚠️ stale (now passes; remove the entry): {escape(d['identity'])} / {escape(d['adapter'])} / "
        f"{escape(d['dtype'])}: {escape(d.get('reason'))}"
        for d in known.get("stale", [])
    ]
    items += [
        f"- ⚠️ matches no check of this run: {escape(d['identity'])} / {escape(d['adapter'])} / "
        f"{escape(d['dtype'])}"
        for d in known.get("unmatched", [])
    ]
    source = [f"From {escape(known['file'])}.", ""] if known.get("file") else []
    return [
        "## Known deviations",
        "",
        *source,
        *(items or ["No entry matched a failure; none is stale."]),
        "",
    ]


def render_markdown(document: Mapping[str, Any]) -> str:
    """The Markdown report of a document."""
    results = document["results"]
    run = document.get("run") or {}
    env = document.get("environment") or {}
    lines = ["# gradoracle report", "", f"**{escape(summary_line(document))}**", ""]
    facts = [
        f"seed {escape(env.get('seed'))}",
        f"{escape(run.get('examples', env.get('hypothesis', {}).get('max_examples')))} examples per check",
    ]
    if run.get("shard"):
        facts.append(f"shard {escape(run['shard'])}")
    if run.get("merged_from"):
        facts.append(f"merged from {len(run['merged_from'])} reports")
    lines += [
        f"{escape(versions_line(document))}; device {escape(env.get('device', '?'))}; "
        + "; ".join(facts)
        + ".",
        "",
    ]
    merge = run.get("merge") or {}
    if merge.get("accepted"):
        lines += [
            "> ⚠️ **Merged from an incomplete or inconsistent set of reports**, accepted explicitly:",
            *(f"> - {escape(p['kind'])}: {escape(p['detail'])}" for p in merge["accepted"]),
            "",
        ]
    not_run = [r for r in results if r["verdict"] == "not-run"]
    if run.get("interrupted") or not_run:
        lines += [
            f"> ⏸️ **The run was interrupted**: {len(not_run)} check(s) did not run and are marked not-run.",
            "",
        ]
    lines += ["## Verdicts", "", *_matrix(results), ""]
    lines += ["## Conventions at non-differentiable points", ""]
    lines += [
        "What each framework returns where the derivative is not defined: a finding, never a failure.",
        "",
        *_conventions(document.get("conventions") or []),
        "",
    ]
    lines += _deviations(document.get("known_deviations"))
    detailed = [r for r in results if r["verdict"] in DETAILED_VERDICTS]
    lines += ["## Failures", ""]
    if detailed:
        for r in detailed:
            lines += _details(r)
    else:
        lines += ["None.", ""]
    lines += ["", f"<!-- gradoracle report set, run {escape(document.get('run_id'))} -->"]
    return "\n".join(lines).rstrip() + "\n"
