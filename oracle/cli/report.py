"""``gradoracle report`` and ``gradoracle merge``: the cross-framework report and CI conformance.

``report`` runs every identity x adapter x dtype (default: every installed built-in
adapter, float64 and float32) plus the convention probes and writes ``report.json``,
``report.md``, ``report.html`` and ``junit.xml`` into ``--out`` (default ``reports/``).
``merge`` joins the ``report.json`` of several shards (``--shard K/N``) into one report.

Exit codes: 0 every check conforms (known deviations allowed), 1 a nonconformance
(a fail or error; for ``merge`` also checks that did not run), 2 a usage or
configuration error, 130 interrupted (Ctrl-C) with no nonconformance among the checks
that finished.  An interrupted run still writes its reports, the rest marked not-run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from gradoracle import options as shared
from gradoracle.cli import (
    EXIT_NONCONFORMANCE,
    EXIT_OK,
    UsageError,
    adapter_specs,
    console,
    conventions_table,
    resolve_adapters,
    results_table,
)
from gradoracle.matrix import CheckTask, Shard, ShardError, parse_shard, plan_tasks, run_matrix, select_shard
from gradoracle.reporting import FORMATS, normalize_formats, write_reports
from gradoracle.reporting.json_report import result_record, summarize
from gradoracle.reporting.tables import convention_rows, fmt_error, headline_error, summary_line
from gradoracle.results import CheckResult, Verdict
from rich.console import Console
from rich.table import Table

#: Exit code of a run stopped by Ctrl-C (128 + SIGINT, the shell's convention).
EXIT_INTERRUPTED = 130
DEFAULT_OUT = Path("reports")


# ------------------------------------------------------------------- argument types


def _formats(text: str) -> list[str]:
    try:
        return normalize_formats(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--jobs {text!r}: expected a positive number of worker processes")
    return value


def _shard(text: str) -> Shard:
    try:
        return parse_shard(text)
    except ShardError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"directory the reports are written to (default {DEFAULT_OUT}/)",
    )
    parser.add_argument(
        "--format",
        dest="formats",
        type=_formats,
        action="append",
        metavar="LIST",
        help=f"comma-separated formats out of {','.join(FORMATS)}; repeatable (default: all four)",
    )


def register(subparsers: Any) -> None:
    """Add the ``report`` and ``merge`` sub-commands."""
    p = subparsers.add_parser(
        "report",
        help="run the conformance matrix and write report.json/.md/.html and junit.xml",
        description="Check every identity on every adapter in every dtype, run the convention probes, "
        "and write the reports. Exit 0: all conform; 1: a nonconformance; 2: usage error; 130: interrupted.",
    )
    shared.add_to_argparse(p)
    _add_output_options(p)
    p.add_argument(
        "--jobs", type=_jobs, default=1, metavar="N", help="run checks in N worker processes (default 1)"
    )
    p.add_argument(
        "--shard",
        type=_shard,
        default=None,
        metavar="K/N",
        help="run only the K-th of N deterministic slices of the matrix (join them with 'gradoracle merge')",
    )
    p.set_defaults(func=cmd_report)

    m = subparsers.add_parser(
        "merge",
        help="join the report.json of several shards into one report",
        description="Merge shard reports (files or directories holding report.json) into one report. "
        "Exit 0: all conform; 1: a nonconformance or checks not run; 2: unreadable or contradicting reports.",
    )
    m.add_argument("files", nargs="+", type=Path, metavar="REPORT", help="report.json files or directories")
    _add_output_options(m)
    m.add_argument(
        "--known-deviations",
        type=Path,
        default=None,
        metavar="FILE",
        help="TOML file of known deviations to apply to the merged results "
        "(default: the entries the shards were made with)",
    )
    m.set_defaults(func=cmd_merge)


# ------------------------------------------------------------------------- helpers


def _chosen_formats(values: Sequence[Sequence[str]] | None) -> list[str]:
    """The formats asked for (all by default); HTML without its libraries is a usage error."""
    import importlib.util

    formats = list(FORMATS) if not values else normalize_formats([f for group in values for f in group])
    missing = [m for m in ("jinja2", "matplotlib") if importlib.util.find_spec(m) is None]
    if "html" in formats and missing:
        raise UsageError(
            f"report.html needs {' and '.join(missing)}: pip install 'gradoracle[report]', "
            "or leave html out (--format json,md,junit)"
        )
    return formats


def _load_deviation_entries(path: Path | None) -> list[Any] | None:
    from gradoracle.deviations import DeviationFileError, load_deviations

    if path is None:
        return None
    try:
        return load_deviations(path)
    except DeviationFileError as exc:
        raise UsageError(str(exc)) from exc
    except OSError as exc:
        raise UsageError(f"known-deviations file {str(path)!r} cannot be read: {exc}") from exc


def _load_adapters(specs: Sequence[str], explicit: bool, out: Console) -> list[tuple[str, Any]]:
    """``(spec, adapter)`` for every spec; without explicit adapters, uninstalled ones are skipped."""
    loaded: list[tuple[str, Any]] = []
    for spec in specs:
        try:
            (adapter,) = resolve_adapters([spec], explicit)
        except UsageError:
            if explicit:
                raise
            out.print(f"note: adapter {spec!r} is not installed here; skipped", markup=False)
            continue
        loaded.append((spec, adapter))
    if not loaded:
        raise UsageError("no adapter is available; install one (pip install 'gradoracle[torch]') or name one")
    names: dict[str, str] = {}
    for spec, adapter in loaded:
        name = str(adapter.name)
        if name in names:
            raise UsageError(
                f"adapters {names[name]!r} and {spec!r} both call themselves {name!r}, so their results "
                "would share ids; give one of them another name or run them separately"
            )
        names[name] = spec
    return loaded


def _run_probes(adapters: Sequence[tuple[str, Any]], dtypes: Sequence[str]) -> tuple[list[Any], bool]:
    """Convention probes per adapter; ``(probes, interrupted)``."""
    from gradoracle.conventions import run_probes

    probes: list[Any] = []
    try:
        for _, adapter in adapters:
            probes.extend(run_probes([adapter], dtypes))
    except KeyboardInterrupt:
        return probes, True
    return probes, False


def _run_with_progress(tasks: Sequence[CheckTask], settings: Any, jobs: int, out: Console) -> Any:
    """:func:`run_matrix` with a rich progress bar (a line per tenth of the run when not a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    total = len(tasks)
    state = {"done": 0, "bad": 0, "next": max(1, total // 10)}
    start = time.perf_counter()
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=True,
        disable=not out.is_terminal,
    ) as progress:
        bar = progress.add_task("checking", total=total)

        def on_start(task: CheckTask) -> None:
            progress.update(bar, description=f"{task.id}")

        def on_result(result: CheckResult) -> None:
            state["done"] += 1
            state["bad"] += int(result.verdict in (Verdict.FAIL, Verdict.ERROR))
            progress.advance(bar)
            if not out.is_terminal and (state["done"] >= state["next"] or state["done"] == total):
                state["next"] += max(1, total // 10)
                out.print(
                    f"progress: {state['done']}/{total} checks, {state['bad']} nonconforming, "
                    f"{time.perf_counter() - start:.0f}s",
                    markup=False,
                )

        return run_matrix(tasks, settings, jobs=jobs, on_start=on_start, on_result=on_result)


def summary_table(results: Sequence[CheckResult], title: str) -> Table:
    """Counts per adapter and dtype, the worst relative error and the time taken."""
    groups: dict[tuple[str, str], list[CheckResult]] = {}
    for r in results:
        groups.setdefault((r.adapter, r.dtype), []).append(r)
    table = Table(title=title)
    verdicts = [str(v) for v in Verdict]
    for col in ("adapter", "dtype", *verdicts, "worst rel err (analytic)", "time"):
        table.add_column(col, justify="left" if col in ("adapter", "dtype") else "right")
    colour = {"pass": "green", "fail": "red", "error": "magenta", "skip": "yellow", "xfail": "cyan"}
    for (adapter, dtype), rs in groups.items():
        errors = [e for e in (headline_error(result_record(r)) for r in rs) if e is not None]
        cells = []
        for v in verdicts:
            n = sum(1 for r in rs if r.verdict == v)
            cells.append(f"[{colour.get(v, 'white')}]{n}[/]" if n else "0")
        table.add_row(
            adapter,
            dtype,
            *cells,
            fmt_error(max(errors)) if errors else "",
            f"{sum(r.duration_s for r in rs):.1f}s",
        )
    return table


def _print_conventions(probes: Sequence[Any], out: Console) -> None:
    if not probes:
        return
    rows = convention_rows([p.to_dict() if hasattr(p, "to_dict") else dict(p) for p in probes])
    shown = [
        SimpleNamespace(
            probe=r["probe"],
            adapter=r["adapter"],
            dtype=r["dtype"],
            error=r["observed"] if r["is_error"] else None,
            convention=r["observed"],
            notes_text=r["notes_text"],
            agrees_with_notes=r["agrees"],
        )
        for r in rows
    ]
    out.print(conventions_table(shown))


def _finish(
    results: Sequence[CheckResult],
    probes: Sequence[Any],
    outcome: Any,
    written: dict[str, Path],
    interrupted: bool,
    title: str,
    out: Console,
) -> int:
    """Print the summary, the warnings and the files written; the exit code."""
    not_ok = [r for r in results if r.verdict not in (Verdict.PASS,)]
    _print_conventions(probes, out)
    if not_ok:
        out.print(results_table(not_ok, "checks that did not pass"))
    for r in results:
        if r.verdict in (Verdict.FAIL, Verdict.ERROR):
            out.print(f"\n[bold red]{r.id}[/]: {r.verdict}")
            out.print(r.message, markup=False)
    out.print(summary_table(results, title))
    err = console(stderr=True)
    if outcome is not None:
        for line in outcome.warnings():
            err.print(f"warning: {line}", markup=False, style="yellow")
    not_run = [r for r in results if r.verdict == Verdict.NOT_RUN]
    if interrupted or not_run:
        err.print(
            f"interrupted: {len(not_run)} check(s) did not run; they are marked not-run in the reports",
            markup=False,
            style="bold yellow",
        )
    out.print(summary_line({"summary": summarize(results)}), markup=False)
    out.print("wrote " + ", ".join(str(p) for p in written.values()), markup=False)
    bad = any(r.verdict in (Verdict.FAIL, Verdict.ERROR) for r in results)
    if bad:
        return EXIT_NONCONFORMANCE
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK


def _check_out_dir(path: Path) -> None:
    """Fail before any work when the reports could not be written to ``path``."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {str(path)!r} is a file, not a directory; name a directory for the reports")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {str(path)!r}: cannot create the report directory: {exc}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"--out {str(path)!r}: the directory is not writable; choose another with --out")


# ------------------------------------------------------------------------- commands


def cmd_report(args: argparse.Namespace) -> int:
    """Run the matrix and the probes, write the reports, print the summary."""
    from gradoracle.identities import select_identities
    from gradoracle.reporting.known_deviations import apply_known_deviations

    start = time.perf_counter()
    out = console()
    config = shared.run_config(vars(args))
    formats = _chosen_formats(args.formats)
    entries = _load_deviation_entries(config.known_deviations)
    specs, explicit = adapter_specs(config.adapters)
    adapters = _load_adapters(specs, explicit, out)
    identities = select_identities(list(config.identities))
    _check_out_dir(args.out)
    tasks = plan_tasks(identities, [(spec, str(ad.name)) for spec, ad in adapters], config.dtypes)
    planned = len(tasks)
    tasks = select_shard(tasks, args.shard)
    shard_note = f", shard {args.shard} ({len(tasks)} of {planned})" if args.shard else ""
    out.print(
        f"gradoracle report: {len(identities)} identities x {len(adapters)} adapters "
        f"({', '.join(str(ad.name) for _, ad in adapters)}) x {len(config.dtypes)} dtypes{shard_note}, "
        f"{config.examples} examples each, seed {config.seed}, {args.jobs} job(s)",
        markup=False,
    )

    outcome = _run_with_progress(tasks, config.settings, args.jobs, out)
    results, interrupted = outcome.results, outcome.interrupted
    probes: list[Any] = []
    if not interrupted:  # after the checks: a Ctrl-C here loses only probes
        probes, interrupted = _run_probes(adapters, config.dtypes)
    deviations = apply_known_deviations(results, entries) if entries is not None else None

    meta: dict[str, Any] = {
        "adapters": [spec for spec, _ in adapters],
        "identities": [i.name for i in identities],
        "dtypes": list(config.dtypes),
        "examples": config.examples,
        "seed": config.seed,
        "settings": dataclasses.asdict(config.settings),
        "jobs": args.jobs,
        "shard": str(args.shard) if args.shard else None,
        "planned_checks": planned,
        "interrupted": interrupted,
        "duration_s": time.perf_counter() - start,
    }
    if entries is not None:
        meta["known_deviations"] = {
            "file": str(config.known_deviations),
            "entries": [e.to_dict() for e in entries],
        }
    written = write_reports(results, probes, args.out, formats, meta=meta, deviations=deviations)
    title = f"gradoracle report: {len(results)} checks, {config.examples} examples each"
    return _finish(results, probes, deviations, written, interrupted, title, out)


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
    formats = _chosen_formats(args.formats)
    _check_out_dir(args.out)
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
        err.print(f"warning: {line}", markup=False, style="yellow")

    undo_known_deviations(merged.results)
    if args.known_deviations is not None:
        entries = _load_deviation_entries(args.known_deviations)
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
    code = _finish(merged.results, merged.conventions, deviations, written, False, title, out)
    if code == EXIT_OK and any(r.verdict == Verdict.NOT_RUN for r in merged.results):
        err.print("incomplete: some checks did not run (an interrupted shard); exit 1", markup=False)
        return EXIT_NONCONFORMANCE
    return code
