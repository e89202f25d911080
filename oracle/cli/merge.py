"""``gradoracle merge``: join the ``report.json`` of several shards into one report.

The shards come from ``gradoracle report --shard K/N``; the merged report.json/.md/.html
and junit.xml go to ``--out`` (default ``reports/latest/``).  The known deviations are
taken off every shard and applied again to the union.

Exit codes: 0 every check conforms, 1 a nonconformance or checks that did not run,
2 unreadable or contradicting reports (or another usage error).
"""

from __future__ import annotations

import argparse
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
)
from gradoracle.reporting import write_reports
from gradoracle.results import Verdict
from gradoracle.text import clean_text


def register(subparsers: Any) -> None:
    """Add the ``merge`` sub-command."""
    m = subparsers.add_parser(
        "merge",
        help="join the report.json of several shards into one report",
        description="Merge shard reports (files or directories holding report.json) into one report. "
        "Exit 0: all conform; 1: a nonconformance or checks not run; 2: unreadable or contradicting reports.",
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
    m.set_defaults(func=cmd_merge)


def cmd_merge(args: argparse.Namespace) -> int:
    """Join shard reports, reapply the known deviations to the union, write the merged report."""
    from gradoracle.reporting import ReportFormatError, load_report
    from gradoracle.reporting.known_deviations import (
        apply_known_deviations,
        entries_from_dicts,
        undo_known_deviations,
    )
    from gradoracle.reporting.merge import LoadedReport, MergeError, deviation_entries, merge_reports

    out = console()
    formats = chosen_formats(args.formats)
    check_out_dir(args.out)
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
    err = console(stderr=True)
    for line in merged.warnings:
        err.print(f"warning: {clean_text(line)}", markup=False, style="yellow")

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
    written = write_reports(
        merged.results, merged.conventions, args.out, formats, meta=merged.meta, deviations=deviations
    )
    title = f"gradoracle merge: {len(merged.results)} checks from {len(loaded)} reports"
    code = finish(merged.results, merged.conventions, deviations, written, False, title, out)
    if code == EXIT_OK and any(r.verdict == Verdict.NOT_RUN for r in merged.results):
        err.print("incomplete: some checks did not run (an interrupted shard); exit 1", markup=False)
        return EXIT_NONCONFORMANCE
    return code
