"""``gradoracle check``: run the conformance checks and print the verdicts.

Checks and convention probes run in worker processes (``--jobs``, ``--in-process`` to
turn it off) through the adapter guard (:mod:`gradoracle.guard`, ``--timeout``), so an
adapter that crashes or hangs is a record, not the end of the run.

``-q`` prints the failures (one line each) and the counts; the default adds the table of
verdicts and each failure's message; ``-v`` adds the convention table and the tolerance
formulas.

Exit codes: 0 every check conforms, 1 a nonconformance, 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from rich.console import Console

from gradoracle import options as shared
from gradoracle.cli.common import (
    EXIT_NONCONFORMANCE,
    EXIT_OK,
    adapter_specs,
    add_isolation_options,
    add_verbosity_options,
    checks_at_most,
    console,
    conventions_table,
    load_adapters,
    print_failures,
    progress_bar,
    results_table,
    worker_count,
)
from gradoracle.text import MESSAGE_LIMIT, clean_text, markup_safe


def register(subparsers: Any) -> None:
    """Add the ``check`` sub-command."""
    p = subparsers.add_parser("check", help="run conformance checks and print a table of verdicts")
    shared.add_to_argparse(p, exclude=("known_deviations",))
    add_isolation_options(p)
    p.add_argument(
        "--no-conventions",
        dest="conventions",
        action="store_false",
        help="do not run the convention probes (they run, and are shown, with -v)",
    )
    add_verbosity_options(p)
    p.set_defaults(func=cmd_check)


def run_with_progress(
    identities: Sequence[Any],
    adapters: Sequence[tuple[str, Any]],
    dtypes: Sequence[str],
    settings: Any,
    out: Console,
    jobs: int = 1,
    pool: Any = None,
    modes: Sequence[str] = (),
    max_hangs: int | None = 3,
) -> list[Any]:
    """Run every check (in ``pool`` when given) with a rich progress bar (transient; off when not a terminal).

    The order is the command line's: adapter, then dtype, then identity, then mode; ``modes``
    empty: every mode each adapter supports.
    """
    from gradoracle.matrix import CheckTask, run_matrix
    from gradoracle.modes import adapter_modes

    tasks = [
        CheckTask(ident.name, ident.source, spec, str(adapter.name), dtype, mode)
        for spec, adapter in adapters
        for dtype in dtypes
        for ident in identities
        for mode in (tuple(modes) or adapter_modes(adapter))
    ]
    with progress_bar(out) as progress:
        bar = progress.add_task("checking", total=len(tasks))
        outcome = run_matrix(
            tasks,
            settings,
            jobs=jobs,
            on_start=lambda task: progress.update(
                bar,
                description=markup_safe(f"{task.identity} [{task.adapter_name}-{task.dtype}-{task.mode}]"),
            ),
            on_result=lambda result: progress.advance(bar),
            isolate=pool is not None,
            pool=pool,
            max_hangs=max_hangs,
        )
    if outcome.interrupted:
        raise KeyboardInterrupt
    return outcome.results


def cmd_check(args: argparse.Namespace) -> int:
    """Run the conformance checks and print the verdicts; exit 1 on any nonconformance."""
    from gradoracle.identities import select_identities
    from gradoracle.isolation import WorkerPool
    from gradoracle.matrix import run_probe_jobs

    config = shared.run_config(vars(args))
    specs, explicit = adapter_specs(config.adapters)
    jobs = worker_count(args.jobs, args.isolate)
    out = console()
    # the workers load the adapters (an adapter that crashes while loading ends a worker)
    pool = WorkerPool(jobs, config.timeout) if args.isolate else None
    try:
        identities = select_identities(list(config.identities))
        at_most = checks_at_most(identities, specs, config.dtypes, config.modes)
        adapters = load_adapters(specs, explicit, out, config.timeout, pool, at_most)
        results = run_with_progress(
            identities,
            adapters,
            config.dtypes,
            config.settings,
            out,
            jobs,
            pool,
            config.modes,
            config.max_hangs,
        )
        probes = (
            run_probe_jobs(
                [(spec, str(ad.name)) for spec, ad in adapters], config.dtypes, config.timeout, pool
            )
            if args.conventions
            else []
        )
    finally:
        if pool is not None:
            pool.close()
    verbosity = int(getattr(args, "verbosity", 0))
    if verbosity >= 0:
        title = f"gradoracle check: {len(results)} checks, {config.examples} examples each"
        out.print(results_table(results, title, out.size.width))
    print_failures(results, out, verbosity)
    outside: list[Any] = []
    if args.conventions:
        if verbosity > 0:
            out.print(conventions_table(probes))
        outside = [p for p in probes if p.failed]
        for p in outside:  # a value outside the generalised gradient is a failure (#13), at any verbosity
            out.print(
                clean_text(f"\n{p.probe} [{p.adapter}-{p.dtype}]: fail"), style="bold red", markup=False
            )
            out.print(clean_text(p.message(), MESSAGE_LIMIT), markup=False, soft_wrap=True)
    bad = [r for r in results if not r.ok]
    counts = {v: sum(1 for r in results if r.verdict == v) for v in ("pass", "fail", "error", "skip")}
    line = ", ".join(f"{n} {v}" for v, n in counts.items())
    if outside:
        line += f"; {len(outside)} convention probe(s) outside the generalised gradient"
    out.print(line, soft_wrap=True)
    return EXIT_NONCONFORMANCE if bad or outside else EXIT_OK
