"""``gradoracle merge``: join the ``report.json`` of several shards into one report.

The shards come from ``gradoracle report --shard K/N``; the merged report.json/.md/.html
and junit.xml go to ``--out`` (default ``reports/latest/``).  The known deviations are
taken off every shard and applied again to the union.

A merge refuses to call an incomplete or inconsistent set conforming.  Missing shards or
planned checks (``missing``), a shard, file or check given twice (``duplicate``), and
reports from different sweeps: seeds, examples, settings, package versions, shardings or
plans (``mixed``) each exit 2 unless ``--allow-missing``, ``--allow-duplicate`` or
``--allow-mixed`` accepts that kind; the merged report then lists the accepted problems
(``run.merge`` in report.json, a banner in report.md and report.html), and a merge with
missing checks has the status ``incomplete`` and exits 1.

Exit codes: 0 every check conforms, 1 a nonconformance, checks that did not run or an
accepted incomplete set, 2 unreadable, contradicting, incomplete or inconsistent reports
(or another usage error).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradoracle.cli.common import (
    EXIT_NONCONFORMANCE,
    EXIT_OK,
    UsageError,
    add_output_options,
    check_out_dir,
    chosen_formats,
    console,
    finish,
    load_deviation_entries,
    write_report_files,
)
from gradoracle.results import Verdict
from gradoracle.text import clean_text


def register(subparsers: Any) -> None:
    """Add the ``merge`` sub-command."""
    m = subparsers.add_parser(
        "merge",
        help="join the report.json of several shards into one report",
        description="Merge shard reports (files or directories holding report.json) into one report. "
        "Exit 0: all conform; 1: a nonconformance, checks not run, or an accepted incomplete set; "
        "2: unreadable, contradicting, incomplete or inconsistent reports (unless accepted by a flag).",
    )
    m.add_argument("files", nargs="+", type=Path, metavar="REPORT", help="report.json files or directories")
    add_output_options(m)
    m.add_argument(
        "--known-deviations",
        type=Path,
        default=None,
        metavar="FILE",
        help="TOML file of known deviations to apply to the merged results "
        "(default: the entries the shards were made with)",
    )
    for kind, flag_help in (
        ("missing", "merge although shards or planned checks are missing (the report says which; exit 1)"),
        ("duplicate", "merge although a shard, file or check is given twice (the first one is kept)"),
        ("mixed", "merge reports made with different seeds, settings, versions, shardings or plans"),
    ):
        m.add_argument(
            f"--allow-{kind}",
            dest="allow",
            action="append_const",
            const=kind,
            help=flag_help,
        )
    m.set_defaults(func=cmd_merge)


def _refusal(problems: Sequence[Any], accepted: set[str]) -> str | None:
    """The usage error for the problems no flag accepted, or ``None``."""
    refused = [p for p in problems if p.kind not in accepted]
    if not refused:
        return None
    kinds = list(dict.fromkeys(p.kind for p in refused))
    lines = [f"{p.kind}: {p.detail}" for p in refused]
    flags = " ".join(f"--allow-{k}" for k in kinds)
    return (
        "the reports are not one complete sweep, so the merge would not be a conformance verdict: "
        + "; ".join(lines)
        + f". Merge the complete shards of one run, or accept this explicitly with {flags}"
    )


def cmd_merge(args: argparse.Namespace) -> int:
    """Join shard reports, reapply the known deviations to the union, write the merged report."""
    with contextlib.ExitStack() as stack:  # holds the --out directory's lock until the reports are written
        return _cmd_merge(args, stack)


def _cmd_merge(args: argparse.Namespace, stack: contextlib.ExitStack) -> int:
    from gradoracle.reporting import ReportFormatError, load_report
    from gradoracle.reporting.known_deviations import (
        apply_known_deviations,
        entries_from_dicts,
        undo_known_deviations,
    )
    from gradoracle.reporting.merge import LoadedReport, MergeError, deviation_entries, merge_reports

    out = console()
    formats = chosen_formats(args.formats)
    check_out_dir(args.out, stack)
    loaded = []
    for path in args.files:
        try:
            results, probes, meta = load_report(path)
        except ReportFormatError as exc:
            raise UsageError(str(exc)) from exc
        loaded.append(LoadedReport(str(path), results, probes, meta))
    try:
        merged = merge_reports(loaded)
    except MergeError as exc:
        raise UsageError(str(exc)) from exc
    accepted = set(args.allow or ())
    refusal = _refusal(merged.problems, accepted)
    if refusal is not None:
        raise UsageError(refusal)
    err = console(stderr=True)
    for line in merged.warnings:
        err.print(f"warning: {clean_text(line)}", markup=False, style="yellow")
    for problem in merged.problems:
        err.print(
            f"accepted ({problem.kind}, --allow-{problem.kind}): {clean_text(problem.detail)}",
            markup=False,
            style="yellow",
        )
    incomplete = "missing" in merged.problem_kinds()
    merged.meta["merge"] = {
        "complete": not incomplete,
        "consistent": not merged.problems,
        "accepted": [p.to_dict() for p in merged.problems],
    }

    undo_known_deviations(merged.results)
    if args.known_deviations is not None:
        entries = load_deviation_entries(args.known_deviations)
        files = [str(args.known_deviations)]
    else:
        raw, files = deviation_entries(loaded)
        entries = entries_from_dicts(raw) if raw or files else None
    deviations = None
    if entries is not None:
        deviations = apply_known_deviations(merged.results, entries)
        merged.meta["known_deviations"] = {
            "file": ", ".join(files) or None,
            "entries": [e.to_dict() for e in entries],
        }
    written = write_report_files(
        merged.results, merged.conventions, args.out, formats, merged.meta, deviations
    )
    title = f"gradoracle merge: {len(merged.results)} checks from {len(loaded)} reports"
    code = finish(merged.results, merged.conventions, deviations, written, False, title, out)
    if code == EXIT_OK and any(r.verdict == Verdict.NOT_RUN for r in merged.results):
        err.print("incomplete: some checks did not run (an interrupted shard); exit 1", markup=False)
        return EXIT_NONCONFORMANCE
    if code == EXIT_OK and incomplete:
        err.print("incomplete: shards or planned checks are missing (accepted); exit 1", markup=False)
        return EXIT_NONCONFORMANCE
    return code
