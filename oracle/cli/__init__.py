"""The ``gradoracle`` command line: list | explain | check | report | merge | selftest | bench.

Exit codes: 0 everything conforms, 1 a nonconformance, 2 a usage or configuration error
(``report`` also 130: interrupted).  Each sub-command is a module of this package with a
``register(subparsers)`` function (``listing`` for ``list``); what two of them share is in
:mod:`gradoracle.cli.common`.  This module only builds the parser and dispatches.  Heavy
imports (torch, jax, matplotlib) happen inside the commands.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gradoracle import __version__
from gradoracle.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_NONCONFORMANCE,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    adapter_specs,
    console,
    conventions_table,
    cwd_importable,
    module_path_specs,
    resolve_adapters,
    results_table,
)
from gradoracle.identities import UnknownIdentityError
from gradoracle.text import clean_text

__all__ = [
    "COMMAND_MODULES",
    "EXIT_NONCONFORMANCE",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "adapter_specs",
    "build_parser",
    "console",
    "conventions_table",
    "main",
    "resolve_adapters",
    "results_table",
]

#: The sub-command modules, in the order ``gradoracle --help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "gradoracle.cli.listing",
    "gradoracle.cli.explain",
    "gradoracle.cli.check",
    "gradoracle.cli.report",
    "gradoracle.cli.merge",
    "gradoracle.cli.selftest",
    "gradoracle.cli.bench",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="gradoracle",
        description="Gradient-verification oracle: checks framework gradients against the notes' "
        "closed forms and finite differences.",
    )
    parser.add_argument("--version", action="version", version=f"gradoracle {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gradoracle`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # an adapter given as mod:Class imports mod.py from the current directory (python -m semantics)
        with cwd_importable(bool(module_path_specs(args))):
            code: int = args.func(args)
    except (UnknownIdentityError, UsageError) as exc:
        console(stderr=True).print(
            f"gradoracle: error: {clean_text(exc, None)}", markup=False, soft_wrap=True
        )
        return EXIT_USAGE
    except KeyboardInterrupt:  # report: a second Ctrl-C (the first one marks checks not-run and writes)
        writes = args.command in ("report", "merge")
        console(stderr=True).print(
            "gradoracle: interrupted; no report set was left half written (the previous one, if any, "
            "is unchanged)"
            if writes
            else f"gradoracle {args.command}: interrupted",
            markup=False,
            soft_wrap=True,
        )
        return EXIT_INTERRUPTED
    return code


if __name__ == "__main__":
    sys.exit(main())
