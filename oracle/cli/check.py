"""``gradoracle check``: run the conformance checks in this process and print the verdicts.

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
    add_verbosity_options,
    console,
    conventions_table,
    print_failures,
    progress_bar,
    resolve_adapters,
    results_table,
)
from gradoracle.text import MESSAGE_LIMIT, clean_text, markup_safe


def register(subparsers: Any) -> None:
    """Add the ``check`` sub-command."""
    p = subparsers.add_parser("check", help="run conformance checks and print a table of verdicts")
    shared.add_to_argparse(p, exclude=("known_deviations",))
    p.add_argument(
        "--no-conventions",
        dest="conventions",
        action="store_false",
        help="do not run the convention probes (they run, and are shown, with -v)",
    )
    add_verbosity_options(p)
    p.set_defaults(func=cmd_check)


def run_with_progress(
    identities: Sequence[Any], adapters: Sequence[Any], dtypes: Sequence[str], settings: Any, out: Console
) -> list[Any]:
    """Run every check with a rich progress bar (transient; plain text when not a terminal)."""
    from gradoracle.runner import check

    results = []
    total = len(identities) * len(adapters) * len(dtypes)
    with progress_bar(out) as progress:
        task = progress.add_task("checking", total=total)
        for adapter in adapters:
            for dtype in dtypes:
                for ident in identities:
                    progress.update(task, description=markup_safe(f"{ident.name} [{adapter.name}-{dtype}]"))
                    results.append(check(ident, adapter, dtype, settings))
                    progress.advance(task)
    return results


def cmd_check(args: argparse.Namespace) -> int:
    """Run the conformance checks and print the verdicts; exit 1 on any nonconformance."""
    from gradoracle.conventions import run_probes
    from gradoracle.identities import select_identities

    config = shared.run_config(vars(args))
    specs, explicit = adapter_specs(config.adapters)
    adapters = resolve_adapters(specs, explicit)
    identities = select_identities(list(config.identities))
    out = console()
    results = run_with_progress(identities, adapters, config.dtypes, config.settings, out)
    verbosity = int(getattr(args, "verbosity", 0))
    if verbosity >= 0:
        title = f"gradoracle check: {len(results)} checks, {config.examples} examples each"
        out.print(results_table(results, title, out.size.width))
    print_failures(results, out, verbosity)
    outside: list[Any] = []
    if args.conventions:
        probes = run_probes(adapters, config.dtypes)
        if verbosity > 0:
            out.print(conventions_table(probes))
        outside = [p for p in probes if p.failed]
        for p in outside:  # a value outside the generalised gradient is a failure (#13), at any verbosity
            out.print(f"\n{p.probe} [{p.adapter}-{p.dtype}]: fail", style="bold red", markup=False)
            out.print(clean_text(p.message(), MESSAGE_LIMIT), markup=False, soft_wrap=True)
    bad = [r for r in results if not r.ok]
    counts = {v: sum(1 for r in results if r.verdict == v) for v in ("pass", "fail", "error", "skip")}
    line = ", ".join(f"{n} {v}" for v, n in counts.items())
    if outside:
        line += f"; {len(outside)} convention probe(s) outside the generalised gradient"
    out.print(line, soft_wrap=True)
    return EXIT_NONCONFORMANCE if bad or outside else EXIT_OK
