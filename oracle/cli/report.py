"""``gradoracle report``: run the cross-framework conformance matrix and write the reports.

``report`` runs every identity x adapter x dtype (default: every installed built-in
adapter, float64 and float32) plus the convention probes and writes ``report.json``,
``report.md``, ``report.html`` and ``junit.xml`` into ``--out`` (default ``reports/latest/``;
the committed reference report in ``reports/`` is not touched).  ``--shard K/N`` runs one
slice; ``gradoracle merge`` (:mod:`gradoracle.cli.merge`) joins the slices.

Exit codes: 0 every check conforms (known deviations allowed), 1 a nonconformance
(a fail or error), 2 a usage or configuration error, 130 interrupted (Ctrl-C) with no
nonconformance among the checks that finished, 143 the same after SIGTERM (a CI job
cancelled or timed out).  An interrupted run still writes its reports, the rest marked
not-run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from rich.console import Console

from gradoracle import options as shared
from gradoracle.cli.common import (
    EXIT_INTERRUPTED,
    adapter_specs,
    add_isolation_options,
    add_output_options,
    add_verbosity_options,
    check_out_dir,
    checks_at_most,
    chosen_formats,
    console,
    finish,
    load_adapters,
    load_deviation_entries,
    progress_bar,
    worker_count,
    write_report_files,
)
from gradoracle.isolation import WorkerPool
from gradoracle.matrix import (
    CheckTask,
    Shard,
    ShardError,
    Terminated,
    parse_shard,
    plan_tasks,
    planned_modes,
    run_matrix,
    select_shard,
)
from gradoracle.reporting.environment import collect_environment, frameworks_that_ran
from gradoracle.results import CheckResult, Verdict
from gradoracle.text import NAME_LIMIT, clean_text, markup_safe

# ------------------------------------------------------------------- argument types


def _shard(text: str) -> Shard:
    try:
        return parse_shard(text)
    except ShardError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def register(subparsers: Any) -> None:
    """Add the ``report`` sub-command."""
    p = subparsers.add_parser(
        "report",
        help="run the conformance matrix and write report.json/.md/.html and junit.xml",
        description="Check every identity on every adapter in every dtype, run the convention probes, "
        "and write the reports. Exit 0: all conform; 1: a nonconformance; 2: usage error; 130: interrupted.",
    )
    shared.add_to_argparse(p)
    add_output_options(p)
    add_isolation_options(p)
    add_verbosity_options(p)
    p.add_argument(
        "--shard",
        type=_shard,
        default=None,
        metavar="K/N",
        help="run only the K-th of N deterministic slices of the matrix (join them with 'gradoracle merge')",
    )
    p.set_defaults(func=cmd_report)


# ------------------------------------------------------------------------- helpers


def _run_probes(
    adapters: Sequence[tuple[str, Any]], dtypes: Sequence[str], timeout: float | None, pool: Any
) -> tuple[list[Any], bool]:
    """Convention probes per adapter, guarded (in the pool when isolated): ``(probes, interrupted)``."""
    from gradoracle.matrix import run_probe_jobs

    try:
        return run_probe_jobs([(spec, str(ad.name)) for spec, ad in adapters], dtypes, timeout, pool), False
    except KeyboardInterrupt:
        return [], True


def _run_with_progress(
    tasks: Sequence[CheckTask],
    settings: Any,
    jobs: int,
    out: Console,
    pool: Any = None,
    max_hangs: int | None = 3,
) -> Any:
    """:func:`run_matrix` with a rich progress bar (a line per tenth of the run when not a terminal)."""
    total = len(tasks)
    state = {"done": 0, "bad": 0, "next": max(1, total // 10)}
    start = time.perf_counter()
    with progress_bar(out) as progress:
        bar = progress.add_task("checking", total=total)

        def on_start(task: CheckTask) -> None:
            progress.update(bar, description=markup_safe(task.id, NAME_LIMIT))

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

        return run_matrix(
            tasks,
            settings,
            jobs=jobs,
            on_start=on_start,
            on_result=on_result,
            isolate=pool is not None,
            pool=pool,
            max_hangs=max_hangs,
        )


#: Exit code after SIGTERM: 128 + 15, as a shell reports a process ended by it.
EXIT_TERMINATED = 128 + signal.SIGTERM


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[dict[str, bool]]:
    """SIGTERM (a CI job cancelled or past its time limit, ``kill``) handled like Ctrl-C.

    The handler raises :class:`KeyboardInterrupt` in the main thread, so the checks that
    finished are written and the rest marked not-run, as after Ctrl-C; the yielded dict's
    ``"terminated"`` says whether it fired.  The previous handler is given back on the way
    out.  Off the main thread (where no handler can be set) it does nothing.
    """
    state = {"terminated": False}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        if not state["terminated"]:  # a second SIGTERM while the reports are written is ignored
            state["terminated"] = True
            raise Terminated

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield state
    finally:
        signal.signal(signal.SIGTERM, previous)


# ------------------------------------------------------------------------- command


def cmd_report(args: argparse.Namespace) -> int:
    """Run the matrix and the probes, write the reports, print the summary."""
    # the --out directory's lock is held until the reports are written
    with sigterm_as_interrupt() as signalled, contextlib.ExitStack() as stack:
        code = _cmd_report(args, stack)
    if signalled["terminated"] and code == EXIT_INTERRUPTED:
        return int(EXIT_TERMINATED)
    return code


def _cmd_report(args: argparse.Namespace, stack: contextlib.ExitStack) -> int:
    from gradoracle.identities import select_identities
    from gradoracle.reporting.known_deviations import apply_known_deviations

    start = time.perf_counter()
    out = console()
    config = shared.run_config(vars(args))
    formats = chosen_formats(args.formats)
    entries = load_deviation_entries(config.known_deviations)
    specs, explicit = adapter_specs(config.adapters)
    jobs = worker_count(args.jobs, args.isolate)
    # the workers load the adapters (and keep them for their checks); closed on every way out
    pool = stack.enter_context(WorkerPool(jobs, config.timeout)) if args.isolate else None
    identities = select_identities(list(config.identities))
    at_most = checks_at_most(identities, specs, config.dtypes, config.modes)
    adapters = load_adapters(specs, explicit, out, config.timeout, pool, at_most)
    check_out_dir(args.out, stack)
    tasks = plan_tasks(identities, list(adapters), config.dtypes, config.modes)
    # the whole plan's modes, so that every shard of a run records (and compiles for) the same
    # a failing example too large to write out in its repro snippet saves its inputs under
    # --out (GRADORACLE_REPRO_DIR, when set, wins: gradoracle.runner.repro_directory)
    settings = config.settings.with_(
        modes=planned_modes(tasks), repro_dir=os.path.abspath(args.out / "repro")
    )
    planned = len(tasks)
    tasks = select_shard(tasks, args.shard)
    shard_note = f", shard {args.shard} ({len(tasks)} of {planned})" if args.shard else ""
    names = ", ".join(clean_text(ad.name, NAME_LIMIT) for _, ad in adapters)
    out.print(
        f"gradoracle report: {len(identities)} identities x {len(adapters)} adapters "
        f"({names}) x {len(config.dtypes)} dtypes x "
        f"modes {', '.join(config.modes) or 'each adapter supports'}{shard_note} = {planned} checks, "
        f"{config.examples} examples each, seed {config.seed}, {jobs} job(s)"
        f"{'' if args.isolate else ', in-process'}",
        markup=False,
    )

    try:
        outcome = _run_with_progress(tasks, settings, jobs, out, pool, config.max_hangs)
        results, interrupted = outcome.results, outcome.interrupted
        probes: list[Any] = []
        if not interrupted:  # after the checks: a Ctrl-C here loses only probes
            probes, interrupted = _run_probes(adapters, config.dtypes, config.timeout, pool)
    finally:
        if pool is not None:
            pool.close()
    deviations = apply_known_deviations(results, entries) if entries is not None else None

    meta: dict[str, Any] = {
        "adapters": [spec for spec, _ in adapters],
        "identities": [i.name for i in identities],
        "dtypes": list(config.dtypes),
        "examples": config.examples,
        "seed": config.seed,
        # where repro files go is not a setting of the checks (shards with their own --out merge)
        "settings": {k: v for k, v in dataclasses.asdict(settings).items() if k != "repro_dir"},
        "jobs": jobs,
        "isolation": "process" if args.isolate else "none",
        "shard": str(args.shard) if args.shard else None,
        "planned_checks": planned,
        "interrupted": interrupted,
        "duration_s": time.perf_counter() - start,
    }
    meta["frameworks"] = frameworks_that_ran([ad for _, ad in adapters], results)
    if pool is not None:  # torch's threads and JAX's devices as the workers saw them
        runtime: dict[str, Any] = {}
        for _, info in adapters:
            runtime.update({k: v for k, v in info.runtime.items() if v is not None})
        meta["environment"] = collect_environment(runtime)
    if entries is not None:
        meta["known_deviations"] = {
            "file": str(config.known_deviations),
            "entries": [e.to_dict() for e in entries],
        }
    written = write_report_files(results, probes, args.out, formats, meta, deviations)
    title = f"gradoracle report: {len(results)} checks, {config.examples} examples each"
    return finish(
        results, probes, deviations, written, interrupted, title, out, int(getattr(args, "verbosity", 0))
    )
