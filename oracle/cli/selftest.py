"""``gradoracle selftest``: kill the mutant catalogue, pass the correct adapters, run campaigns.

``--campaign mutants`` (default) runs every mutant of :mod:`gradoracle.selftest.mutants` on its
targets and the correct adapters on every identity, prints the kill matrix and writes
``selftest.json``/``selftest.md`` into ``--out`` (default ``reports/latest/``; the committed
reports in ``reports/`` are not touched).  ``--campaign fp`` runs the
false-positive campaign, ``--campaign threshold`` the detection-threshold measurement
(both resumable: rerunning the same command continues where it stopped).

Exit codes: 0 every mutant killed with the expected fault and every correct check
passed (fp: no false failure; threshold: gradoracle had no false failure); 1 otherwise;
2 a usage error.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from gradoracle.cli.common import (
    DEFAULT_OUT,
    EXIT_NONCONFORMANCE,
    EXIT_OK,
    OUT_HELP,
    UsageError,
    console,
    positive_int,
    progress_bar,
)
from gradoracle.identities import all_identities
from gradoracle.runner import DTYPES
from gradoracle.text import MESSAGE_LIMIT, clean_text, markup_safe


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.replace(",", " ").split()]
    except ValueError:
        seeds = []
    if not seeds:
        raise argparse.ArgumentTypeError(
            f"--seeds takes integers separated by commas (e.g. 0,1,2), got {text!r}"
        )
    return seeds


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes, got {text!r}")
    return value


def register(subparsers: Any) -> None:
    """Add the ``selftest`` sub-command."""
    from gradoracle.selftest import PERTURBATIONS, TOOLS

    p = subparsers.add_parser(
        "selftest",
        help="kill the mutant catalogue (deliberately wrong backward passes) and pass the correct adapters",
        description="Run every mutant of the catalogue on its target identities through the normal runner, "
        "check that each is caught with the expected localisation, and that the correct adapters pass every "
        "identity; or run the false-positive (--campaign fp) or detection-threshold (--campaign threshold) "
        "campaign. Exit 0: all killed and passed; 1: a mutant survived or was mislocalised, or a correct "
        "adapter failed; 2: usage error.",
    )
    p.add_argument(
        "--campaign",
        choices=("mutants", "fp", "threshold"),
        default="mutants",
        help="what to run (default: mutants, plus the correct adapters)",
    )
    p.add_argument(
        "--mutant", action="append", default=[], metavar="NAME", help="run only this mutant; repeatable"
    )
    p.add_argument("--list-mutants", action="store_true", help="print the mutant catalogue and exit")
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="mutants campaign: leave out the kill table; print only what failed (a surviving or "
        "mislocalised mutant, a correct check that failed) and the summary lines",
    )
    p.add_argument(
        "--examples",
        type=positive_int,
        default=30,
        metavar="N",
        help="examples per mutant check (default 30)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="S", help="Hypothesis seed (default 0)")
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"output directory ({OUT_HELP}); the fp and threshold campaigns resume from it",
    )
    p.add_argument("--jobs", type=positive_int, default=1, metavar="N", help="worker processes (default 1)")
    p.add_argument(
        "--dtype", action="append", default=[], choices=DTYPES, help="dtype to run; repeatable (default both)"
    )
    g = p.add_argument_group("mutants campaign")
    g.add_argument(
        "--correct-adapter",
        action="append",
        default=[],
        metavar="SPEC",
        help="correct adapter that must pass every identity; repeatable (default numpy, torch, jax "
        "when installed)",
    )
    g.add_argument("--no-correct", action="store_true", help="run only the mutants")
    g.add_argument(
        "--correct-examples",
        type=positive_int,
        metavar="N",
        help="examples per correct check (default --examples)",
    )
    g = p.add_argument_group("fp and threshold campaigns")
    g.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="SPEC",
        help="fp: correct adapters to run (default numpy, torch, jax when installed)",
    )
    g.add_argument(
        "--identity", action="append", default=[], metavar="NAME", help="fp: identities (default all)"
    )
    g.add_argument(
        "--mode",
        action="append",
        default=[],
        metavar="MODE",
        help="fp: modes (vjp, jvp, hvp; repeatable or comma-separated); default: every mode each adapter "
        "supports (numpy: vjp; torch, jax: vjp, jvp, hvp)",
    )
    g.add_argument(
        "--examples-per-check",
        type=positive_int,
        default=10_000,
        metavar="N",
        help="fp: examples per identity x adapter x dtype, split across --seeds (default 10000)",
    )
    g.add_argument(
        "--seeds", type=_seeds, default=[0], metavar="LIST", help="fp: seeds, e.g. 0,1,2 (default 0)"
    )
    g.add_argument(
        "--chunk",
        type=positive_int,
        default=500,
        metavar="N",
        help="fp: examples per work unit (default 500)",
    )
    g.add_argument(
        "--tool",
        action="append",
        default=[],
        choices=TOOLS,
        help="threshold: tools; repeatable (default all)",
    )
    g.add_argument(
        "--family",
        action="append",
        default=[],
        metavar="NAME",
        help="threshold: identity families (default all)",
    )
    g.add_argument(
        "--perturbation",
        action="append",
        default=[],
        choices=PERTURBATIONS,
        help="threshold: repeatable (default both)",
    )
    g.add_argument(
        "--checks",
        type=positive_int,
        default=200,
        metavar="N",
        help="threshold: checks per eps (default 200)",
    )
    g.add_argument(
        "--fp-checks", type=positive_int, metavar="N", help="threshold: checks at eps = 0 (default --checks)"
    )
    g.add_argument(
        "--base-adapter",
        metavar="SPEC",
        help="threshold: adapter gradoracle perturbs (default torch, else numpy)",
    )
    g.add_argument(
        "--time-budget", type=_minutes, metavar="MIN", help="start no new work unit after MIN minutes"
    )
    g.add_argument("--fresh", action="store_true", help="discard the saved units of an earlier run")
    g.add_argument(
        "--report-only", action="store_true", help="run nothing: rewrite the report from the saved units"
    )
    p.set_defaults(func=cmd_selftest)


def cmd_selftest(args: argparse.Namespace) -> int:
    """Dispatch on ``--campaign``."""
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {str(args.out)!r} is a file; name a directory for the reports")
    if args.list_mutants:
        return _list_mutants()
    if args.campaign == "fp":
        return _fp(args)
    if args.campaign == "threshold":
        return _threshold(args)
    return _mutants(args)


def _progress(out: Console, total: int, label: str) -> Any:
    progress = progress_bar(out)
    task = progress.add_task(label, total=total)
    return progress, task


# --------------------------------------------------------------------------- mutants


def _list_mutants() -> int:
    from gradoracle.selftest.mutants import CONTROLS, all_mutants

    table = Table(title="gradoracle mutant catalogue")
    table.add_column("mutant", no_wrap=True)
    for col in ("adapter", "rule", "expected", "dtypes", "targets", "bug"):
        table.add_column(col, overflow="fold")
    for m in [*all_mutants(), *CONTROLS.values()]:
        table.add_row(
            m.name + (" (control)" if m.control else ""),
            m.framework,
            m.rule,
            str(m.expected_fault),
            ", ".join(m.dtypes),
            ", ".join(m.targets),
            m.description,
        )
    console().print(table)
    return EXIT_OK


def kill_table(report: Any) -> Table:
    """The kill matrix as a rich table."""
    from gradoracle.selftest import kill_cell

    colour = {"killed": "green", "survived": "red", "mislocalised": "red", "skipped": "yellow"}
    table = Table(title=f"Kill matrix: {len(report.mutants)} mutants")
    for col in ("mutant", "adapter", "mode", "expected", "float64", "float32", "status"):
        table.add_column(col)
    for m in report.mutants:
        table.add_row(
            m.name,
            m.framework,
            getattr(m, "mode", "vjp"),
            m.expected_fault,
            kill_cell(m, "float64").replace("**", ""),
            kill_cell(m, "float32").replace("**", ""),
            f"[{colour.get(m.status, 'white')}]{m.status}[/]",
        )
    return table


def _correct_specs(values: Sequence[str]) -> list[str]:
    from gradoracle.selftest import DEFAULT_CORRECT_ADAPTERS

    if values:
        return list(values)
    return [
        s
        for s in DEFAULT_CORRECT_ADAPTERS
        if importlib.util.find_spec(s.partition("?")[0]) is not None or s == "numpy"
    ]


def _mutants(args: argparse.Namespace) -> int:
    from gradoracle.adapters import AdapterLoadError, describe_failure, load_adapter
    from gradoracle.selftest import run_selftest, select_mutants, write_selftest
    from gradoracle.selftest.mutants import UnknownMutantError

    try:
        mutants = select_mutants(args.mutant)
    except UnknownMutantError as exc:
        raise UsageError(str(exc)) from exc
    specs = [] if args.no_correct else _correct_specs(args.correct_adapter)
    for spec in args.correct_adapter:
        try:
            adapter = load_adapter(spec)
        except (AdapterLoadError, ValueError) as exc:
            raise UsageError(f"--correct-adapter {spec!r}: {exc}") from exc
        try:
            ok, why = adapter.available()
        except (Exception, SystemExit) as exc:  # available() must answer, not raise
            raise UsageError(
                f"--correct-adapter {spec!r}: available() raised {describe_failure(exc)}; "
                "it must return (True, '') or (False, 'why')"
            ) from exc
        if not ok:
            raise UsageError(f"--correct-adapter {spec!r} is not available: {why}")
    dtypes = tuple(dict.fromkeys(args.dtype)) or DTYPES
    out = console()
    n_tasks = sum(len(m.targets) * len([d for d in m.dtypes if d in dtypes]) for m in mutants)
    n_tasks += len(all_identities()) * len(specs) * len(dtypes)
    progress, task = _progress(out, n_tasks, "selftest")

    def on_start(t: Any) -> None:
        progress.update(task, description=markup_safe(f"{t.identity} [{t.adapter_name}-{t.dtype}]"))

    def on_result(r: Any) -> None:
        progress.advance(task)

    with progress:
        report = run_selftest(
            mutants,
            examples=args.examples,
            seed=args.seed,
            correct_adapters=specs,
            correct_examples=args.correct_examples,
            dtypes=dtypes,
            jobs=args.jobs,
            on_start=on_start,
            on_result=on_result,
        )
    if not args.quiet:
        out.print(kill_table(report))
    s = report.summary()
    if report.correct:
        out.print(
            f"correct adapters ({', '.join(specs)}): "
            f"{s['correct_passed']}/{s['correct_checks']} checks passed"
            + (f", {s['correct_failed']} failed" if s["correct_failed"] else "")
        )
        for r in report.correct:
            if not r.ok:
                out.print(f"\n[bold red]{markup_safe(r.id)}[/]: {r.verdict}")
                out.print(clean_text(r.message, MESSAGE_LIMIT), markup=False)
    for spec, why in report.unavailable.items():
        out.print(f"[yellow]correct adapter {markup_safe(spec)} not run: {markup_safe(why)}[/]")
    for m in report.mutants:
        for row in m.rows:
            if row.status in ("survived", "mislocalised"):
                out.print(
                    f"\n[bold red]{markup_safe(m.name)}[/] on {markup_safe(row.identity)} {row.dtype}: "
                    f"{row.status} (verdict {row.verdict}, fault {row.fault}, expected {row.expected_fault})"
                )
                if row.message:
                    out.print(clean_text(row.message, MESSAGE_LIMIT), markup=False)
    paths = write_selftest(report, args.out)
    out.print(
        f"{s['killed']}/{s['mutants']} mutants killed, {s['survived']} survived, "
        f"{s['mislocalised']} mislocalised, "
        f"{s['skipped']} skipped; wrote {', '.join(str(p) for p in paths)} ({report.duration_s:.0f} s)"
    )
    return EXIT_OK if report.ok else EXIT_NONCONFORMANCE


# ---------------------------------------------------------------------------- campaigns


def _fp(args: argparse.Namespace) -> int:
    from gradoracle.identities import select_identities
    from gradoracle.selftest import aggregate_fp, plan_fp_units, run_fp_campaign

    specs = _correct_specs(args.adapter)
    try:
        identities = [i.name for i in select_identities(list(args.identity))]
    except KeyError as exc:
        raise UsageError(str(exc)) from exc
    dtypes = tuple(dict.fromkeys(args.dtype)) or DTYPES
    from gradoracle.modes import MODES, UnknownModeError, parse_modes

    try:
        modes = parse_modes(args.mode) or MODES
    except UnknownModeError as exc:
        raise UsageError(str(exc)) from exc
    try:
        units = plan_fp_units(
            specs, dtypes, identities, args.examples_per_check, args.seeds, args.chunk, modes
        )
    except (ValueError, KeyError) as exc:
        raise UsageError(f"--adapter/--mode: {exc}") from exc
    if not units and not args.report_only:
        raise UsageError(
            f"no adapter of {specs} supports the mode(s) {', '.join(modes)} (numpy: vjp only; torch, jax: "
            "vjp, jvp, hvp): add --adapter torch or --adapter jax, or choose --mode vjp"
        )
    out = console()
    progress, task = _progress(out, len(units), "fp campaign")

    def on_unit(unit: Any, record: Any, done: int, total: int) -> None:
        progress.update(
            task,
            completed=done,
            description=markup_safe(f"{unit.identity} [{record['adapter_name']}-{unit.dtype}-{unit.mode}]"),
        )

    if args.report_only:
        report = aggregate_fp(args.out)
    else:
        with progress:
            report = run_fp_campaign(
                units,
                args.out,
                jobs=args.jobs,
                time_budget_s=args.time_budget * 60 if args.time_budget else None,
                fresh=args.fresh,
                on_unit=on_unit,
            )
    d = report.to_dict()
    table = Table(
        title=f"False-positive campaign: {d['examples']:,} examples, {d['false_failures']} false failures"
    )
    for col in (
        "mode",
        "dtype",
        "examples",
        "false failures",
        "max error/tol",
        "p99.9 <=",
        "p99 <=",
        "median <=",
    ):
        table.add_column(col, justify="right")
    failures: dict[tuple[str, str], int] = {}
    for c in d["per_check"]:
        failures[(c["mode"], c["dtype"])] = failures.get((c["mode"], c["dtype"]), 0) + int(c["failures"])
    for (mode, dtype), s in (
        ((m, dt), s) for m, by in d["distribution_by_mode"].items() for dt, s in by.items() if s["count"]
    ):
        table.add_row(
            mode,
            dtype,
            f"{s['count']:,}",
            str(failures.get((mode, dtype), 0)),
            f"{s['max']:.3g}",
            f"{s['p999']:.2g}",
            f"{s['p99']:.2g}",
            f"{s['p50']:.2g}",
        )
    out.print(table)
    status = "complete" if report.complete else "stopped early (rerun the same command to resume)"
    if args.report_only:
        status = "report rewritten from the saved units"
    else:
        status = f"this command's {d['planned_units']} units {status}"
    out.print(f"{d['units']} units in the report; {status}; wrote {args.out}/fp_campaign.json and .md")
    return EXIT_NONCONFORMANCE if report.false_failures else EXIT_OK


def _threshold(args: argparse.Namespace) -> int:
    from gradoracle.selftest import (
        PERTURBATIONS,
        TOOLS,
        aggregate_thresholds,
        families,
        plan_threshold_units,
        run_threshold_campaign,
    )

    base = args.base_adapter or ("torch" if importlib.util.find_spec("torch") else "numpy")
    try:
        units = plan_threshold_units(
            args.tool or list(TOOLS),
            args.family or families(),
            tuple(dict.fromkeys(args.dtype)) or DTYPES,
            args.perturbation or list(PERTURBATIONS),
            args.checks,
            args.fp_checks or args.checks,
            args.seed,
            base,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    out = console()
    progress, task = _progress(out, len(units), "threshold campaign")

    def on_unit(unit: Any, record: Any, done: int, total: int) -> None:
        progress.update(
            task, completed=done, description=f"{unit.tool} {unit.family} {unit.dtype} {unit.kind}"
        )

    if args.report_only:
        report = aggregate_thresholds(args.out)
    else:
        with progress:
            report = run_threshold_campaign(
                units,
                args.out,
                jobs=args.jobs,
                time_budget_s=args.time_budget * 60 if args.time_budget else None,
                fresh=args.fresh,
                on_unit=on_unit,
            )
    table = Table(title="Detection thresholds (smallest eps caught in >= 99% of checks)")
    for col in ("tool", "family", "dtype", "perturbation", "threshold", "false failures at eps=0"):
        table.add_column(col)
    for p in report.parts:
        if p.get("skipped"):
            table.add_row(p["tool"], p["family"], p["dtype"], p["kind"], "not run", p["skipped"])
            continue
        thr = "> 1e-01" if p["threshold"] is None else f"{p['threshold']:.1e}"
        table.add_row(
            p["tool"], p["family"], p["dtype"], p["kind"], thr, f"{p['zero']['caught']}/{p['zero']['run']}"
        )
    out.print(table)
    out.print(f"wrote {args.out}/thresholds.json and .md")
    own = [p for p in report.parts if p["tool"].startswith("gradoracle") and p.get("false_failures")]
    return EXIT_NONCONFORMANCE if own else EXIT_OK
