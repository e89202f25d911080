"""The ``gradoracle`` command line: list | explain | check | report | merge | selftest | bench.

Exit codes: 0 everything conforms, 1 a nonconformance, 2 a usage or configuration error.
Each sub-command lives in a module with a ``register(subparsers)`` function; this module
only dispatches.  Heavy imports (torch, jax, matplotlib) happen inside the commands.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from collections.abc import Sequence
from typing import Any

from gradoracle import __version__
from gradoracle import options as shared
from gradoracle.identities import UnknownIdentityError, all_identities, get_identity
from rich.console import Console
from rich.table import Table

EXIT_OK, EXIT_NONCONFORMANCE, EXIT_USAGE = 0, 1, 2

#: Modules contributing sub-commands beyond list / explain / check.
COMMAND_MODULES: tuple[str, ...] = (
    "gradoracle.cli.report",
    "gradoracle.cli.selftest",
    "gradoracle.cli.bench",
)


class UsageError(Exception):
    """A usage or configuration problem: exit code 2 with this message."""


def console(stderr: bool = False) -> Console:
    """The rich console the CLI writes to (plain when not a terminal)."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, highlight=False, width=None if stream.isatty() else 130)


# ------------------------------------------------------------------------- list


def cmd_list(args: argparse.Namespace) -> int:
    """Print the catalogue as a table, or as JSON with ``--json``."""
    idents = all_identities()
    if args.json:
        rows = [
            {
                "name": i.name,
                "source": i.source,
                "family": i.family,
                "formula": i.formula,
                "wrt": list(i.wrt),
                "ops": sorted(i.ops),
                "nondifferentiable": i.nondifferentiable,
                "kink_policy": i.kink_policy,
            }
            for i in idents
        ]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return EXIT_OK
    table = Table(title=f"gradoracle identities ({len(idents)})", show_lines=False)
    table.add_column("name", style="bold")
    table.add_column("source")
    table.add_column("gradient w.r.t.")
    table.add_column("formula", overflow="fold")
    for i in idents:
        table.add_row(i.name, i.source, ", ".join(i.wrt), i.formula)
    console().print(table)
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    """Print one identity's formula, source, inputs and non-differentiable points."""
    ident = get_identity(args.name)
    out = console()
    out.print(f"[bold]{ident.name}[/bold]  ({ident.source}, family {ident.family})")
    out.print(f"  formula:            {ident.formula}")
    out.print(f"  gradient w.r.t.:    {', '.join(ident.wrt)}")
    out.print(f"  ops used:           {', '.join(sorted(ident.ops)) or '(none)'}")
    out.print(f"  non-differentiable: {ident.nondifferentiable}")
    out.print(f"  policy:             {ident.kink_policy}")
    ref = ident.reference_gradient
    doc = (ref.__doc__ or "").strip()
    if doc:
        out.print(f"  reference:          {doc}")
    if ident.reference_jacobian is not None:
        out.print("  full Jacobian:      yes (identities 1-4: u^T J is computed from the Jacobian)")
    return EXIT_OK


# ------------------------------------------------------------------------ check


def resolve_adapters(names: Sequence[str], explicit: bool) -> list[Any]:
    """Load adapters; an unknown one, or one asked for explicitly but not installed, is a UsageError."""
    from gradoracle.adapters import AdapterLoadError, load_adapter

    loaded = []
    for name in names:
        try:
            adapter = load_adapter(name)
        except AdapterLoadError as exc:
            raise UsageError(str(exc)) from exc
        ok, why = adapter.available()
        if not ok:
            if explicit:
                extra = name.partition("?")[0]
                raise UsageError(
                    f"adapter {name!r} was asked for but is not available: {why}. "
                    f"Install it (pip install 'gradoracle[{extra}]') or drop --adapter {name}."
                )
            continue
        loaded.append(adapter)
    if not loaded:
        raise UsageError("no adapter is available; install one (pip install 'gradoracle[torch]') or name one")
    return loaded


def adapter_specs(values: Sequence[str]) -> tuple[list[str], bool]:
    """The adapters asked for, or every built-in one when none was given."""
    return (list(values), True) if values else (list(shared.DEFAULT_ADAPTERS), False)


def results_table(results: Sequence[Any], title: str) -> Table:
    """The compact table of verdicts and worst errors."""
    table = Table(title=title)
    for col in (
        "identity",
        "adapter",
        "dtype",
        "verdict",
        "fault",
        "rel err (analytic)",
        "rel err (FD)",
        "err/tol",
        "examples",
        "time",
    ):
        table.add_column(col, justify="right" if col in ("examples", "time", "err/tol") else "left")
    colour = {"pass": "green", "fail": "red", "error": "magenta", "skip": "yellow", "xfail": "cyan"}
    for r in results:
        v = str(r.verdict)
        table.add_row(
            r.identity,
            r.adapter,
            r.dtype,
            f"[{colour.get(v, 'white')}]{v}[/]",
            "" if str(r.fault) == "none" else str(r.fault),
            f"{r.max_rel('analytic'):.1e}" if r.errors else "",
            f"{r.max_rel('fd'):.1e}" if r.errors else "",
            f"{r.max_ratio():.2g}" if r.errors else "",
            str(r.examples),
            f"{r.duration_s:.2f}s",
        )
    return table


def conventions_table(rows: Sequence[Any]) -> Table:
    """The convention probes: what each framework returns at its kinks."""
    table = Table(title="Conventions at non-differentiable points (not conformance failures)")
    for col in ("probe", "adapter", "dtype", "observed convention", "notes' formula", "agrees"):
        table.add_column(col, overflow="fold")
    for r in rows:
        agrees = "" if r.agrees_with_notes is None else ("yes" if r.agrees_with_notes else "no")
        table.add_row(r.probe, r.adapter, r.dtype, r.error or r.convention, r.notes_text, agrees)
    return table


def run_with_progress(
    identities: Sequence[Any], adapters: Sequence[Any], dtypes: Sequence[str], settings: Any, out: Console
) -> list[Any]:
    """Run every check with a rich progress bar (transient; plain text when not a terminal)."""
    from gradoracle.runner import check
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    results = []
    total = len(identities) * len(adapters) * len(dtypes)
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=True,
        disable=not out.is_terminal,
    ) as progress:
        task = progress.add_task("checking", total=total)
        for adapter in adapters:
            for dtype in dtypes:
                for ident in identities:
                    progress.update(task, description=f"{ident.name} [{adapter.name}-{dtype}]")
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
    out.print(
        results_table(results, f"gradoracle check: {len(results)} checks, {config.examples} examples each")
    )
    for r in results:
        if r.verdict in ("fail", "error"):
            out.print(f"\n[bold red]{r.id}[/]: {r.verdict}", markup=True)
            out.print(r.message, markup=False)
    if args.conventions:
        out.print(conventions_table(run_probes(adapters, config.dtypes)))
    bad = [r for r in results if not r.ok]
    counts = {v: sum(1 for r in results if r.verdict == v) for v in ("pass", "fail", "error", "skip")}
    out.print(", ".join(f"{n} {v}" for v, n in counts.items()))
    return EXIT_NONCONFORMANCE if bad else EXIT_OK


# ----------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="gradoracle",
        description="Gradient-verification oracle: checks framework gradients against the notes' "
        "closed forms and finite differences.",
    )
    parser.add_argument("--version", action="version", version=f"gradoracle {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list the identities of the catalogue")
    p.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("explain", help="show one identity's formula, source and non-differentiable points")
    p.add_argument("name", help="identity name (see 'gradoracle list')")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("check", help="run conformance checks and print a table of verdicts")
    shared.add_to_argparse(p, exclude=("known_deviations",))
    p.add_argument(
        "--no-conventions", dest="conventions", action="store_false", help="do not run the convention probes"
    )
    p.set_defaults(func=cmd_check)

    for module_name in COMMAND_MODULES:
        if importlib.util.find_spec(module_name) is not None:
            importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gradoracle`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except UnknownIdentityError as exc:
        console(stderr=True).print(f"gradoracle: error: {exc}", markup=False)
        return EXIT_USAGE
    except UsageError as exc:
        console(stderr=True).print(f"gradoracle: error: {exc}", markup=False)
        return EXIT_USAGE
    return code


if __name__ == "__main__":
    sys.exit(main())
