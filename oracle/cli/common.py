"""What the sub-commands share: exit codes, the console, usage errors, adapter loading, tables.

- exit codes and :class:`UsageError` (exit 2 with its message), the rich :func:`console`;
- :data:`DEFAULT_OUT`: where ``report``, ``merge``, ``selftest`` and ``bench`` write by
  default (``reports/latest``; ``reports/`` itself holds the committed reference report);
- adapter specs: :func:`adapter_specs`, :func:`resolve_adapters`, and :func:`cwd_importable`,
  which gives a ``mod:Class`` spec ``python -m`` semantics (the current directory first on
  ``sys.path``) for the command that names it;
- argument types, the progress bar, the results and conventions tables;
- the report writing of ``report`` and ``merge``: output options, formats, known
  deviations, the output directory check, the summary and the exit code (:func:`finish`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from gradoracle import options as shared
from gradoracle.reporting import FORMATS, normalize_formats
from gradoracle.reporting.json_report import result_record, summarize
from gradoracle.reporting.tables import (
    agrees_mark,
    convention_matrix,
    convention_rows,
    fmt_ratio,
    headline_ratio,
    summary_line,
)
from gradoracle.results import MODE_KINDS, CheckResult, Verdict, brief_message
from gradoracle.text import MESSAGE_LIMIT, clean_text

EXIT_OK, EXIT_NONCONFORMANCE, EXIT_USAGE = 0, 1, 2
#: Exit code of a run stopped by Ctrl-C (128 + SIGINT, the shell's convention).
EXIT_INTERRUPTED = 130

#: Default ``--out`` of the commands that write files.  ``reports/`` holds the committed
#: reference report, so a user's run writes beside it and leaves a clone clean.
DEFAULT_OUT = Path("reports/latest")
OUT_HELP = "default reports/latest/; the committed reference report in reports/ is left alone"

#: Destinations of every option that takes an adapter spec (check, report, selftest, bench).
ADAPTER_OPTIONS: tuple[str, ...] = ("adapter", "correct_adapter", "base_adapter")

VERDICT_COLOUR = {"pass": "green", "fail": "red", "error": "magenta", "skip": "yellow", "xfail": "cyan"}


class UsageError(Exception):
    """A usage or configuration problem: exit code 2 with this message."""


def terminal_width(stream: Any = None) -> int | None:
    """The width to lay tables out for: ``COLUMNS`` when set, the terminal's, else 130 (a file, CI log)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    stream = stream or sys.stdout
    return None if stream.isatty() else 130


def console(stderr: bool = False) -> Console:
    """The rich console the CLI writes to (plain when not a terminal; ``COLUMNS`` honoured)."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, highlight=False, width=terminal_width(stream))


def add_verbosity_options(parser: argparse.ArgumentParser) -> None:
    """``-q`` / ``-v``: less (failures and the summary line) or more (conventions, tolerance formulas)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-q",
        "--quiet",
        dest="verbosity",
        action="store_const",
        const=-1,
        help="print only failures and the summary",
    )
    group.add_argument(
        "-v",
        "--verbose",
        dest="verbosity",
        action="store_const",
        const=1,
        help="also print the convention table and each failure's tolerance formula",
    )
    parser.set_defaults(verbosity=0)


def positive_int(text: str) -> int:
    """Argument type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


#: ``--jobs auto`` (the default): one worker per usable core, at most this many (each worker
#: imports the frameworks: about 1 GB with torch and JAX).
AUTO_JOBS_CAP = 4
#: The parsed value of ``--jobs auto``.
AUTO_JOBS = -1


def jobs_count(text: str) -> int:
    """Argument type of ``--jobs``: ``auto`` (:data:`AUTO_JOBS`), 0 (all usable cores) or a
    positive number of workers."""
    if str(text).strip().lower() == "auto":
        return AUTO_JOBS
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"--jobs {text!r}: expected a number of worker processes, 0 (one per usable core) or auto "
            f"(one per usable core, at most {AUTO_JOBS_CAP})"
        )
    return value


def add_isolation_options(parser: argparse.ArgumentParser) -> None:
    """``--jobs`` and ``--in-process`` of the commands that run checks (``check``, ``report``)."""
    parser.add_argument(
        "--jobs",
        type=jobs_count,
        default=AUTO_JOBS,
        metavar="N",
        help=f"worker processes (default auto: one per usable CPU core, at most {AUTO_JOBS_CAP}, 1 with "
        "--in-process; 0 = one per usable core; capped at the usable cores)",
    )
    parser.add_argument(
        "--in-process",
        dest="isolate",
        action="store_false",
        help="call the adapters in this process instead of worker processes: starts faster, but an "
        "adapter that crashes the interpreter (segfault, os._exit) ends the run without a report",
    )


def worker_count(requested: int, isolate: bool = True) -> int:
    """``--jobs`` capped at the usable cores (0: all of them; ``auto``: all of them up to
    :data:`AUTO_JOBS_CAP`, 1 in-process); a note on stderr when an explicit count is capped."""
    from gradoracle.isolation import effective_jobs, usable_cores

    if requested == AUTO_JOBS:
        return min(usable_cores(), AUTO_JOBS_CAP) if isolate else 1
    jobs, note = effective_jobs(requested)
    if note:
        console(stderr=True).print(f"note: {note}", markup=False, style="yellow")
    return jobs


def progress_bar(out: Console, *, spinner: bool = False) -> Progress:
    """The transient progress display of a command (disabled when ``out`` is not a terminal).

    A bar with ``done/total`` by default; a spinner for work of unknown length.
    """
    columns: list[ProgressColumn | str]
    if spinner:
        columns = [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
    else:
        columns = [
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        ]
    return Progress(*columns, console=out, transient=True, disable=not out.is_terminal)


# ------------------------------------------------------------------------ adapters


def _names_a_module_path(spec: str) -> bool:
    return ":" in spec.partition("?")[0]


def module_path_specs(args: argparse.Namespace) -> list[str]:
    """The adapter specs on the command line that are ``module:Class`` paths."""
    specs: list[str] = []
    for dest in ADAPTER_OPTIONS:
        value = getattr(args, dest, None)
        if isinstance(value, str):
            specs.append(value)
        elif value:
            specs.extend(str(v) for v in value)
    return [s for s in specs if _names_a_module_path(s)]


@contextlib.contextmanager
def cwd_importable(active: bool) -> Iterator[None]:
    """While the body runs, put the current directory first on ``sys.path`` when ``active``.

    ``gradoracle check --adapter mymod:MyAdapter`` then imports ``mymod.py`` from where the
    user stands, as ``python -m`` would; the console script alone has only its own folder
    there.  Spawned worker processes inherit the entry.  Only the CLI does this: the
    library imports adapter paths from ``sys.path`` as it is.
    """
    if not active:
        yield
        return
    cwd = os.getcwd()
    sys.path.insert(0, cwd)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(cwd)


def adapter_specs(values: Sequence[str]) -> tuple[list[str], bool]:
    """The adapters asked for, or every built-in one when none was given."""
    return (list(values), True) if values else (list(shared.DEFAULT_ADAPTERS), False)


def unavailable_message(spec: str, why: str) -> str:
    """The usage error of an adapter asked for by name that is not available here."""
    extra = spec.partition("?")[0]
    return (
        f"adapter {spec!r} was asked for but is not available: {why}. "
        f"Install it (pip install 'gradoracle[{extra}]') or drop --adapter {spec}."
    )


def resolve_adapters(names: Sequence[str], explicit: bool, timeout: float | None = 20.0) -> list[Any]:
    """Load adapters; an unknown one, or one asked for explicitly but not installed, is a UsageError.

    Each is loaded on its own thread and asked ``available()`` through its guard
    (:class:`gradoracle.guard.AdapterSession`), so an adapter whose import, constructor or
    ``available()`` hangs or exits is a usage error after ``timeout`` s, not a hung run.
    """
    from gradoracle.guard import process_session

    loaded = []
    for name in names:
        entry = process_session().get(name, timeout)
        if entry.facts is None:
            raise UsageError(entry.error or f"adapter {name!r} failed to load")
        if not entry.facts.available:
            if explicit:
                raise UsageError(unavailable_message(name, entry.facts.why))
            continue
        loaded.append(entry.adapter)
    if not loaded:
        raise UsageError("no adapter is available; install one (pip install 'gradoracle[torch]') or name one")
    return loaded


def checks_at_most(
    identities: Sequence[Any], specs: Sequence[str], dtypes: Sequence[str], modes: Sequence[str]
) -> int:
    """An upper bound on a run's checks: identities x adapters x dtypes x modes (every mode when
    none is named), known before any adapter is loaded."""
    from gradoracle.modes import MODES

    return len(identities) * len(specs) * len(dtypes) * (len(modes) or len(MODES))


def load_adapters(
    specs: Sequence[str],
    explicit: bool,
    out: Console,
    timeout: float | None = 20.0,
    pool: Any = None,
    checks: int | None = None,
) -> list[tuple[str, Any]]:
    """``(spec, adapter)`` for every spec; without explicit adapters, uninstalled ones are skipped.

    With a worker ``pool`` the adapters are loaded there (:class:`gradoracle.matrix.LoadJob`) and
    the pairs hold :class:`gradoracle.matrix.AdapterInfo`: an adapter whose import or
    constructor crashes ends a worker, not the run, and this process never imports a framework.
    Each adapter is loaded once, the adapters spread over the workers (one worker for a run of
    one check); a worker loads an adapter it has not loaded when a check of it comes its way.
    """
    loaded: list[tuple[str, Any]] = []
    skipped = "note: adapter {!r} is not installed here; skipped"
    if pool is not None:
        from gradoracle.matrix import LoadJob

        # each adapter once, spread over the workers (a run of one check loads them in one)
        spread = pool.workers > 1 and (checks is None or checks > 1)
        records = pool.run([LoadJob(spec, spread) for spec in specs])
        for i, spec in enumerate(specs):
            info = records[i].get("info")
            if info is not None and info.available:
                loaded.append((spec, info))
            elif explicit:
                raise UsageError(unavailable_message(spec, info.why) if info else records[i]["error"])
            else:
                out.print(clean_text(skipped.format(spec)), markup=False)
    else:
        for spec in specs:
            try:
                (adapter,) = resolve_adapters([spec], explicit, timeout)
            except UsageError:
                if explicit:
                    raise
                out.print(clean_text(skipped.format(spec)), markup=False)
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


# -------------------------------------------------------------------------- tables


def _number_column(table: Table, header: str, values: Sequence[str]) -> None:
    """A right-aligned column that never cuts a number: as wide as its longest value, no wrapping."""
    widest = max((len(v) for v in values), default=1)
    longest_word = max(len(w) for w in header.split("\n"))
    table.add_column(header, justify="right", no_wrap=True, min_width=max(widest, longest_word))


#: Below this many columns the results table puts identity, adapter and dtype in one cell.
COMPACT_BELOW = 110


def results_table(results: Sequence[Any], title: str, width: int | None = None) -> Table:
    """The compact table of verdicts and worst errors.

    Numbers are never cut: their columns are as wide as their longest value and do not wrap.
    Below :data:`COMPACT_BELOW` columns (``width``, the console's) the identity, adapter and
    dtype share one cell on two lines and the table has no vertical rules, so an 80-column
    terminal shows every number whole; names fold onto more lines rather than being cut.
    """
    compact = width is not None and width < COMPACT_BELOW
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD,
        padding=(0, 0) if compact else (0, 1),
        pad_edge=not compact,
    )
    rows = []
    for r in results:
        v = str(r.verdict)
        mode = str(getattr(r, "mode", "vjp"))
        analytic_kind, fd_kind = MODE_KINDS.get(mode, MODE_KINDS["vjp"])
        rows.append(
            (
                r.identity,
                r.adapter,
                r.dtype if mode == "vjp" else f"{r.dtype} {mode}",
                f"[{VERDICT_COLOUR.get(v, 'white')}]{escape(v)}[/]",
                ("" if str(r.fault) == "none" else str(r.fault)) + precision_note(r),
                f"{r.max_ratio():.2g}" if r.errors else "",
                f"{r.max_rel(analytic_kind):.1e}" if r.errors else "",
                f"{r.max_rel(fd_kind):.1e}" if r.errors else "",
                str(r.examples),
                f"{r.duration_s:.2f}s",
            )
        )
    if compact:
        table.add_column("check", overflow="fold", min_width=19)
    else:
        for col in ("identity", "adapter", "dtype"):
            table.add_column(col, overflow="fold")
    table.add_column("verdict", no_wrap=True, min_width=7)
    table.add_column("fault", overflow="fold", min_width=8 if compact else None)
    headers = ("err/tol", "rel err\nanalytic", "rel err\nFD", "exam-\nples", "time")
    for i, header in enumerate(headers, start=5):
        _number_column(table, header, [row[i] for row in rows])
    for row in rows:
        names = (escape(row[0]), escape(row[1]), escape(row[2]))
        lead = (f"{names[0]}\n  {names[1]} {names[2]}",) if compact else names
        table.add_row(*lead, row[3], escape(row[4]), *row[5:])
    return table


def conventions_table(probes: Sequence[Any]) -> Table:
    """The convention probes as a probe x framework table, the notes' answer in the last column.

    ``probes`` are :class:`gradoracle.conventions.ProbeResult` (or their dicts); a cell is what
    the framework returned (per dtype when its dtypes differ), marked ``(= notes)`` or
    ``(differs from the notes)`` where the notes give an answer.
    """
    m = convention_matrix([p.to_dict() if hasattr(p, "to_dict") else dict(p) for p in probes])
    table = Table(
        title="Conventions at non-differentiable points (inside the generalised gradient: a valid "
        "convention; outside: a failure)",
        title_justify="left",
        show_lines=True,
    )
    table.add_column("probe", overflow="fold")
    for adapter in m.adapters:
        table.add_column(adapter, overflow="fold")
    table.add_column("judged", overflow="fold")
    table.add_column("the notes", overflow="fold")
    for probe in m.probes:
        cells = []
        for adapter in m.adapters:
            cell = m.cell(probe["name"], adapter)
            cells.append("" if cell is None else escape(cell.text) + agrees_mark(cell.agrees))
        judged = escape(probe["judged"])
        judged = f"[bold red]{judged}[/]" if probe["judged"].startswith("FAILURE") else judged
        table.add_row(escape(probe["name"]), *cells, judged, escape(probe["notes_text"]))
    return table


def summary_table(results: Sequence[CheckResult], title: str, width: int | None = None) -> Table:
    """Counts per adapter and dtype, the worst error/tolerance and the time taken.

    Numbers never wrap or get cut; below :data:`COMPACT_BELOW` columns the table drops its
    vertical rules so an 80-column terminal holds it.
    """
    groups: dict[tuple[str, str], list[CheckResult]] = {}
    for r in results:
        groups.setdefault((r.adapter, r.dtype), []).append(r)
    compact = width is not None and width < COMPACT_BELOW
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD,
        padding=(0, 1),
        pad_edge=not compact,
    )
    verdicts = [str(v) for v in Verdict]
    rows = []
    for (adapter, dtype), rs in groups.items():
        errors = [e for e in (headline_ratio(result_record(r)) for r in rs) if e is not None]
        counts = [str(sum(1 for r in rs if r.verdict == v)) for v in verdicts]
        rows.append(
            (
                adapter,
                dtype,
                *counts,
                fmt_ratio(max(errors)) if errors else "",
                f"{sum(r.duration_s for r in rs):.1f}s",
            )
        )
    table.add_column("adapter", overflow="fold")
    table.add_column("dtype", overflow="fold")
    headers = [v.replace("-", "-\n") for v in verdicts] + ["worst\nerr/tol", "time"]
    for i, header in enumerate(headers, start=2):
        _number_column(table, header, [row[i] for row in rows])
    for row in rows:
        cells = [
            f"[{VERDICT_COLOUR.get(v, 'white')}]{n}[/]" if n != "0" else n
            for v, n in zip(verdicts, row[2 : 2 + len(verdicts)], strict=True)
        ]
        table.add_row(escape(row[0]), escape(row[1]), *cells, *row[2 + len(verdicts) :])
    return table


# ------------------------------------------------- report writing (report and merge)


def _formats(text: str) -> list[str]:
    try:
        return normalize_formats(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """``--out`` and ``--format`` of the commands that write report.json/.md/.html and junit.xml."""
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"directory the reports are written to ({OUT_HELP})",
    )
    parser.add_argument(
        "--format",
        dest="formats",
        type=_formats,
        action="append",
        metavar="LIST",
        help=f"comma-separated formats out of {','.join(FORMATS)}; repeatable (default: all four; html "
        "only where jinja2 and matplotlib are installed)",
    )


def chosen_formats(values: Sequence[Sequence[str]] | None) -> list[str]:
    """The formats asked for (all by default).

    HTML asked for with ``--format`` but without its libraries (jinja2, matplotlib: the
    ``[report]`` extra) is a usage error; by default it is left out with a note on stderr, so a
    core install (``pip install gradoracle``) still writes report.json, report.md and junit.xml.
    """
    formats = list(FORMATS) if not values else normalize_formats([f for group in values for f in group])
    missing = [m for m in ("jinja2", "matplotlib") if importlib.util.find_spec(m) is None]
    if "html" in formats and missing:
        needs = f"report.html needs {' and '.join(missing)}: pip install 'gradoracle[report]'"
        if values:
            raise UsageError(f"{needs}, or leave html out (--format json,md,junit)")
        console(stderr=True).print(f"note: {needs}; writing the other formats", markup=False, style="yellow")
        formats.remove("html")
    return formats


def load_deviation_entries(path: Path | None) -> list[Any] | None:
    """The known-deviations file's entries (``None`` without a file); a bad file is a UsageError."""
    from gradoracle.deviations import DeviationFileError, load_deviations

    if path is None:
        return None
    try:
        return load_deviations(path)
    except DeviationFileError as exc:
        raise UsageError(str(exc)) from exc
    except OSError as exc:
        raise UsageError(f"known-deviations file {str(path)!r} cannot be read: {exc}") from exc


def check_out_dir(path: Path, stack: contextlib.ExitStack | None = None) -> None:
    """Fail before any work when the reports could not be written to ``path``.

    With ``stack``, also take the directory's lock for as long as ``stack`` is open: a
    second run on the same ``--out`` stops here with a usage error naming the first.
    """
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {str(path)!r} is a file, not a directory; name a directory for the reports")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {str(path)!r}: cannot create the report directory: {exc}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"--out {str(path)!r}: the directory is not writable; choose another with --out")
    if stack is not None:
        from gradoracle.reporting.reportset import ReportDirLocked, report_dir_lock

        try:
            stack.enter_context(report_dir_lock(path))
        except ReportDirLocked as exc:
            raise UsageError(str(exc)) from exc
        except OSError as exc:
            raise UsageError(f"--out {str(path)!r}: cannot lock the report directory: {exc}") from exc


def write_report_files(
    results: Sequence[CheckResult],
    probes: Sequence[Any],
    out_dir: Path,
    formats: Sequence[str],
    meta: dict[str, Any],
    deviations: Any,
) -> dict[str, Path]:
    """:func:`gradoracle.reporting.write_reports`; a file-system error (disk full) is a UsageError.

    The report set is written as a unit, so the message can say the previous reports are intact.
    """
    from gradoracle.reporting import write_reports

    try:
        return write_reports(results, probes, out_dir, formats, meta=meta, deviations=deviations)
    except OSError as exc:
        raise UsageError(
            f"could not write the reports to {str(out_dir)!r}: {exc}; the reports that were there are "
            "unchanged (a report set is written as a unit)"
        ) from exc


def _print_conventions(probes: Sequence[Any], out: Console, verbosity: int = 1) -> None:
    """The convention table (with ``-v``) and, at any verbosity, every probe judged a failure."""
    if not probes:
        return
    dicts = [p.to_dict() if hasattr(p, "to_dict") else dict(p) for p in probes]
    if verbosity > 0:
        out.print(conventions_table(dicts))
    for r in convention_rows(dicts):
        if r["is_failure"]:
            out.print(
                f"\n{r['probe']} [{r['adapter']}-{r['dtype']}]: fail (outside-subdifferential)",
                markup=False,
                style="bold red",
            )
            out.print(f"  outside: {r['outside']}\n  allowed: {r['allowed']}", markup=False, soft_wrap=True)
            if r["repro"]:
                out.print(
                    "  repro:\n" + "\n".join("    " + line for line in r["repro"].splitlines()),
                    markup=False,
                    soft_wrap=True,
                )


def print_failures(results: Sequence[CheckResult], out: Console, verbosity: int) -> None:
    """Each failure's message (the tolerance formula only with ``-v``; only the id line with ``-q``)."""
    for r in results:
        if r.verdict in (Verdict.FAIL, Verdict.ERROR):
            if verbosity < 0:
                # the fault line of a check's message; a message of one line (a worker that
                # died, an adapter that failed to load) is its own summary
                first = r.message.split("\n", 2)
                reason = clean_text(first[1] if len(first) > 1 else first[0], MESSAGE_LIMIT).strip()
                line = f"{r.id}: {r.verdict} - {reason}"
                out.print(line, markup=False, soft_wrap=True)
                continue
            out.print(f"\n[bold red]{escape(r.id)}[/]: {r.verdict}")
            # the message keeps its own lines; the terminal wraps long ones (never cut mid-number)
            out.print(
                clean_text(brief_message(r.message, verbosity > 0), MESSAGE_LIMIT),
                markup=False,
                soft_wrap=True,
            )


def finish(
    results: Sequence[CheckResult],
    probes: Sequence[Any],
    outcome: Any,
    written: dict[str, Path],
    interrupted: bool,
    title: str,
    out: Console,
    verbosity: int = 0,
) -> int:
    """Print the summary, the warnings and the files written; the exit code.

    ``verbosity`` -1 (``-q``): failures as one line each and the summary line; 0: the table of
    checks that did not pass, the failures and the summary table; 1 (``-v``): also the
    convention table and each failure's tolerance formula.
    """
    not_ok = [r for r in results if r.verdict not in (Verdict.PASS,)]
    _print_conventions(probes, out, verbosity)
    if not_ok and verbosity >= 0:
        out.print(results_table(not_ok, "checks that did not pass", out.size.width))
    print_failures(results, out, verbosity)
    if verbosity >= 0:
        out.print(summary_table(results, title, out.size.width))
    err = console(stderr=True)
    if outcome is not None:
        for line in outcome.warnings():
            err.print(f"warning: {clean_text(line)}", markup=False, style="yellow")
    not_run = [r for r in results if r.verdict == Verdict.NOT_RUN]
    if interrupted or not_run:
        err.print(
            f"interrupted: {len(not_run)} check(s) did not run; they are marked not-run in the reports",
            markup=False,
            style="bold yellow",
        )
    out.print(summary_line({"summary": summarize(results)}), markup=False, soft_wrap=True)
    out.print("wrote " + ", ".join(str(p) for p in written.values()), markup=False, soft_wrap=True)
    from gradoracle.conventions import probe_failures

    failed_probes = probe_failures([p.to_dict() if hasattr(p, "to_dict") else dict(p) for p in probes])
    if failed_probes:
        out.print(
            f"{len(failed_probes)} convention probe(s) outside the generalised gradient "
            "(outside-subdifferential)",
            markup=False,
            soft_wrap=True,
        )
    bad = any(r.verdict in (Verdict.FAIL, Verdict.ERROR) for r in results) or bool(failed_probes)
    if bad:
        return EXIT_NONCONFORMANCE
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK


def precision_note(result: Any) -> str:
    """`` (tf32, 10.8 bits)`` for a reduced-precision finding, ``""`` otherwise."""
    precision = getattr(result, "precision", None) or {}
    if not precision.get("mode"):
        return ""
    return f" ({precision['mode']}, {float(precision['bits']):.1f} bits)"
