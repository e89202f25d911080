"""``gradoracle list``: the catalogue of identities, as a table or as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.table import Table

from gradoracle.cli.common import EXIT_OK, console
from gradoracle.identities import all_identities


def register(subparsers: Any) -> None:
    """Add the ``list`` sub-command."""
    p = subparsers.add_parser("list", help="list the identities of the catalogue")
    p.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    p.set_defaults(func=cmd_list)


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
                "parameters": {name: drawn for name, drawn in i.parameters},
                "generalises": list(i.generalises),
                "derivation": i.derivation,
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
