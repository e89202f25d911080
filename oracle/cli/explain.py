"""``gradoracle explain NAME``: one identity's formula, its notes section and passage, inputs, kinks."""

from __future__ import annotations

import argparse
import re
from typing import Any

from gradoracle.cli.common import EXIT_OK, console
from gradoracle.identities import get_identity
from gradoracle.specification import UnknownNotesLabelError, passage, source_words


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
    out.print(f"  notes section:      {source_words(ident.source)}", markup=False)
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
    for label in dict.fromkeys(re.findall(r"notes:[a-z0-9-]+", ident.source)):
        try:
            text = passage(label)
        except UnknownNotesLabelError as exc:
            out.print(f"  (the notes' passage cannot be shown: {exc})", markup=False)
            continue
        out.print(f"\n[bold]{label}: {text.title}[/bold] (from the notes)")
        out.print(text.text, markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK
