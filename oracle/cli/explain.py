"""``gradoracle explain NAME``: one identity's formula, source, inputs and non-differentiable points."""

from __future__ import annotations

import argparse
from typing import Any

from gradoracle.cli.common import EXIT_OK, console
from gradoracle.identities import get_identity


def register(subparsers: Any) -> None:
    """Add the ``explain`` sub-command."""
    p = subparsers.add_parser(
        "explain", help="show one identity's formula, source and non-differentiable points"
    )
    p.add_argument("name", help="identity name (see 'gradoracle list')")
    p.set_defaults(func=cmd_explain)


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
    if ident.generalises:
        out.print(f"  generalises:        {', '.join(ident.generalises)}")
    if ident.derivation:
        out.print(f"  derivation:         {ident.derivation}")
    for name, drawn in ident.parameters:
        out.print(f"  parameter {name}: {drawn}")
    ref = ident.reference_gradient
    doc = (ref.__doc__ or "").strip()
    if doc:
        out.print(f"  reference:          {doc}")
    if ident.reference_jacobian is not None:
        out.print("  full Jacobian:      yes (identities 1-4: u^T J is computed from the Jacobian)")
    return EXIT_OK
