"""``gradoracle bench``: the cost of a gradient check side by side with gradcheck and check_grads.

Runs :mod:`gradoracle.bench` (linear n in 8, 32, 128, 512, 1024; conv input 16..128 with k=3; the
MLP; both poolings), prints the table of costs as multiples of one forward+backward, the
evaluations and detection power per check and the issue's targets, and writes
``bench.json`` and ``bench.md`` into ``--out`` (default ``reports/latest/``; the committed
``reports/bench.md`` is not touched).

Exit codes: 0 the bench ran (a tool that failed is a record in the tables, not an exit
code); 2 a usage error.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from gradoracle.cli.common import (
    DEFAULT_OUT,
    EXIT_OK,
    OUT_HELP,
    UsageError,
    console,
    positive_int,
    progress_bar,
    resolve_adapters,
)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _size(text: str) -> tuple[str, list[int]]:
    """``OP=N,N,...`` -> (op, [N, ...])."""
    op, sep, values = text.partition("=")
    try:
        sizes = [int(v) for v in values.replace(" ", "").split(",") if v]
    except ValueError:
        sizes = []
    if not sep or not op or not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"--size takes OP=N[,N...] with positive sizes, e.g. linear=8,128; got {text!r}"
        )
    return op, sizes


def register(subparsers: Any) -> None:
    """Add the ``bench`` sub-command."""
    from gradoracle.bench import BENCH_OPS, GRADORACLE_ADAPTERS, REFERENCE_TOOLS

    p = subparsers.add_parser(
        "bench",
        help="time a gradient check against gradcheck and check_grads, as multiples of forward+backward",
        description="Measure, side by side on the same ops and sizes (float64), the cost of one gradoracle "
        "check per adapter, of torch.autograd.gradcheck (slow and fast), of jax.test_util.check_grads and of "
        "one plain forward+backward; show detection power beside the cost; write bench.json and bench.md.",
    )
    p.add_argument(
        "--op", action="append", default=[], choices=BENCH_OPS, help="op to bench; repeatable (default: all)"
    )
    p.add_argument(
        "--size",
        action="append",
        default=[],
        type=_size,
        metavar="OP=N[,N...]",
        help="sizes of one op, e.g. linear=8,128; repeatable (defaults: linear 8,32,128,512,1024; conv, "
        "max-pool, avg-pool 16,32,64,128; mlp 8,32,128)",
    )
    p.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="SPEC",
        help=f"gradoracle adapter to time; repeatable (default: {', '.join(GRADORACLE_ADAPTERS)})",
    )
    p.add_argument(
        "--tool",
        action="append",
        default=[],
        choices=REFERENCE_TOOLS,
        help="reference tool to time; repeatable (default: all)",
    )
    p.add_argument("--no-reference-tools", action="store_true", help="time only gradoracle and the baselines")
    p.add_argument(
        "--repeats", type=positive_int, default=5, metavar="N", help="timed batches per tool (default 5)"
    )
    p.add_argument(
        "--max-seconds",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="time budget per tool and case; a slow gradcheck predicted to take longer is not run "
        "(default 10)",
    )
    p.add_argument("--no-detection", action="store_true", help="skip the detection-power measurement")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        metavar="N",
        help="torch intra-op threads during the bench (default 1: tiny ops, shared machine)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small smoke configuration: one or two small sizes per op, 3 repeats, short budget",
    )
    p.add_argument(
        "--no-batch", action="store_true", help="skip the gradoracle-batch[...] columns (examples as a batch)"
    )
    p.add_argument(
        "--report-timing",
        action="store_true",
        help="also time the default 'gradoracle report' as a user runs it: cold and warm JAX cache, "
        "--jobs 1 and --jobs 2, interleaved, with load averages and JAX programs (minutes); writes "
        "report_timing.json and report_timing.md",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="only the report timing (no per-op cases); implies --report-timing",
    )
    p.add_argument(
        "--report-rounds",
        type=positive_int,
        default=1,
        metavar="N",
        help="rounds of report timings (default 1)",
    )
    p.add_argument(
        "--report-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for the timed 'gradoracle report' (e.g. --report-arg=--examples=10); repeatable",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"output directory for bench.json and bench.md ({OUT_HELP})",
    )
    p.add_argument(
        "--drawing-cost",
        action="store_true",
        help="instead: time every identity's check (NumPy engine, float64 and float32) with values that "
        "shrink against seed-drawn values, interleaved; prints the median per-round ratio (target <= 1.10)",
    )
    p.add_argument("--rounds", type=int, default=5, metavar="N", help="rounds for --drawing-cost (default 5)")
    p.set_defaults(func=cmd_bench)


def cmd_drawing_cost(args: argparse.Namespace) -> int:
    """``gradoracle bench --drawing-cost``: what values that shrink cost (:mod:`gradoracle.bench.drawing`)."""
    import json
    import os

    from gradoracle.bench.drawing import DRAWING_TARGET, drawing_cost

    out = console()
    load_before = os.getloadavg()
    cost = drawing_cost(rounds=max(1, int(args.rounds)))
    load_after = os.getloadavg()
    out.print(
        f"{cost.identities} identities x {', '.join(cost.adapters)} x {', '.join(cost.dtypes)}, "
        f"{cost.examples} examples, {len(cost.ratios)} interleaved rounds (process CPU s):"
    )
    for old, new in zip(cost.seed_drawn_s, cost.shrinkable_s, strict=True):
        out.print(f"  seed-drawn {old:7.2f}  shrinkable {new:7.2f}  ratio {new / old:.3f}")
    met = "met" if cost.median_ratio <= DRAWING_TARGET else "NOT met"
    out.print(f"median ratio {cost.median_ratio:.3f} (target <= {DRAWING_TARGET:.2f}: {met})")
    out.print(f"load average {load_before[0]:.2f} -> {load_after[0]:.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "drawing-cost.json"
    record = {**cost.to_dict(), "load_average": {"start": load_before, "end": load_after}}
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    out.print(f"wrote {path}")
    return EXIT_OK


def _config(args: argparse.Namespace) -> Any:
    from gradoracle.bench import GRADORACLE_ADAPTERS, REFERENCE_TOOLS, BenchConfig, BenchError, plan_cases

    sizes: dict[str, list[int]] = {}
    for op, values in args.size:
        sizes.setdefault(op, []).extend(values)
    try:
        cases = plan_cases(args.op or None, sizes, quick=args.quick)
    except BenchError as exc:
        raise UsageError(str(exc)) from exc
    adapters = tuple(args.adapter) or GRADORACLE_ADAPTERS
    if args.adapter:
        resolve_adapters(adapters, explicit=True)  # an unknown or missing adapter is a usage error
    else:
        from gradoracle.bench import framework_available

        adapters = tuple(a for a in adapters if framework_available(a)[0])
    tools = () if args.no_reference_tools else (tuple(args.tool) or REFERENCE_TOOLS)
    return BenchConfig(
        cases=cases,
        adapters=adapters,
        reference_tools=tools,
        repeats=3 if args.quick and args.repeats == 5 else args.repeats,
        max_seconds=min(args.max_seconds, 5.0) if args.quick else args.max_seconds,
        detection=not args.no_detection,
        threads=args.threads,
        batched=not args.no_batch,
        interleaved=True,
    )


def cost_table(report: Any) -> Table:
    """Cases x tools: the baselines' times and every check's cost in forward+backwards."""
    from gradoracle.bench import _tool_columns, fmt_ratio, fmt_seconds

    tools = _tool_columns(report)
    table = Table(title="Cost of one check (float64, CPU time) as a multiple of one forward+backward")
    table.add_column("case")
    for t in tools:
        table.add_column(escape(t), justify="right")
    for c in report.cases:
        cells = []
        for t in tools:
            m = c.measurements.get(t)
            cells.append(fmt_seconds(m.cpu_s) if t.startswith("fwd+bwd") and m is not None else fmt_ratio(m))
        table.add_row(escape(c.label), *(escape(cell) for cell in cells))
    return table


def detection_table(report: Any) -> Table:
    """Cases x checks: evaluations per check and the smallest relative gradient error caught."""
    from gradoracle.bench import _tool_columns, fmt_detect

    tools = [t for t in _tool_columns(report) if not t.startswith("fwd+bwd")]
    table = Table(title="Evaluations per check / smallest relative gradient error caught")
    table.add_column("case")
    for t in tools:
        table.add_column(escape(t), justify="right")
    for c in report.cases:
        cells = []
        for t in tools:
            m = c.measurements.get(t)
            evals = "" if m is None or m.evals is None else str(m.evals)
            cells.append(f"{evals} / {fmt_detect(m)}" if m is not None and m.status == "ok" else "")
        table.add_row(escape(c.label), *(escape(cell) for cell in cells))
    return table


def targets_table(report: Any) -> Table:
    """The issue's targets with the measured value and whether each is met."""
    from gradoracle.bench import fmt_seconds, targets

    table = Table(title="Targets (issues 7 and 16) measured by this run")
    table.add_column("issue")
    table.add_column("target", overflow="fold")
    table.add_column("measured", justify="right")
    table.add_column("met")
    for t in targets(report):
        v = t["value"]
        shown = "" if v is None else (fmt_seconds(v) if t["unit"] == "s" else f"{v:.3g}")
        met = "n/a" if t["met"] is None else ("[green]yes[/]" if t["met"] else "[red]no[/]")
        table.add_row(str(t.get("issue", "")), escape(t["target"]), shown, met)
    return table


def report_timing_table(timing: Any) -> Table:
    """Every timed report run: cache state, jobs, wall time, load average, JAX programs."""
    table = Table(title="The default report, timed as a user runs it (wall seconds)")
    for col in (
        "round",
        "JAX cache",
        "jobs",
        "wall",
        "load before -> after",
        "JAX programs",
        "from cache",
        "exit",
    ):
        table.add_column(col, justify="right")
    for r in timing.runs:
        table.add_row(
            str(r.round + 1),
            r.cache,
            str(r.jobs),
            f"{r.wall_s:.1f}",
            f"{r.load_before:.2f} -> {r.load_after:.2f}",
            str(r.programs),
            str(r.cache_hits),
            str(r.exit_code),
        )
    return table


def report_timing_markdown(timing: Any, command: str) -> str:
    """``report_timing.md``: the runs and the medians of the per-round ratios."""
    d = timing.to_dict()
    lines = [
        "# The default report, timed" if not timing.args else "# A report, timed (with --report-arg)",
        "",
        f"Command: `{command}`; each run is `gradoracle report --jobs N {' '.join(timing.args)}` in a fresh "
        "process; cold: JAX's persistent compilation cache in a new empty directory, warm: the same "
        "command again with that directory. Rounds alternate which jobs count runs first.",
        "",
        "| round | JAX cache | jobs | wall s | load before -> after | JAX programs | from cache | exit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in timing.runs:
        lines.append(
            f"| {r.round + 1} | {r.cache} | {r.jobs} | {r.wall_s:.1f} "
            f"| {r.load_before:.2f} -> {r.load_after:.2f} | {r.programs} | {r.cache_hits} | {r.exit_code} |"
        )
    lines += ["", "Medians of per-round ratios:", ""]
    for k, v in d["ratios"].items():
        lines.append(f"- {k}: {'n/a' if v is None else f'{v:.2f}x'}")
    return "\n".join(lines) + "\n"


def _run_report_timing(args: argparse.Namespace, out: Any, command: str) -> None:
    import json

    from gradoracle.bench.report_timing import time_reports
    from gradoracle.reporting.atomic import atomic_write_text

    with progress_bar(out, spinner=True) as progress:
        task = progress.add_task("report timing", total=None)

        def on_run(run: Any) -> None:
            progress.update(
                task, description=f"report timing: {run.cache} jobs {run.jobs}: {run.wall_s:.0f} s"
            )

        timing = time_reports(args.report_rounds, (1, 2), list(args.report_arg), on_run=on_run)
    out.print(report_timing_table(timing))
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        args.out / "report_timing.json", json.dumps({"command": command, **timing.to_dict()}, indent=2)
    )
    atomic_write_text(args.out / "report_timing.md", report_timing_markdown(timing, command))
    out.print(f"wrote {args.out / 'report_timing.json'}, {args.out / 'report_timing.md'}")


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the bench, print the side-by-side tables, write bench.json and bench.md."""
    from gradoracle.bench import run_bench, write_bench

    if getattr(args, "drawing_cost", False):
        return cmd_drawing_cost(args)

    config = _config(args)
    out = console()
    command = (
        "gradoracle " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "gradoracle bench"
    )
    if args.report_only:
        _run_report_timing(args, out, command)
        return EXIT_OK
    with progress_bar(out, spinner=True) as progress:
        task = progress.add_task("bench", total=None)

        def on_tool(case: Any, tool: str) -> None:
            progress.update(task, description=escape(f"{case.label}: {tool}"))

        report = run_bench(config, on_tool=on_tool)
    out.print(cost_table(report))
    out.print(detection_table(report))
    out.print(targets_table(report))
    paths = write_bench(report, args.out, command)
    out.print(
        f"load average {report.load_average['start']} -> {report.load_average['end']}; "
        f"{report.duration_s:.0f} s; wrote {', '.join(str(p) for p in paths)}"
    )
    if args.report_timing:
        _run_report_timing(args, out, command)
    return EXIT_OK
