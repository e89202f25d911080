"""``gradoracle explain NAME``: one identity's formula, source, inputs, non-differentiable points,
and the passage of the notes (the specification, shipped in the package) that its ``notes:`` label names."""

from __future__ import annotations

import argparse
from typing import Any

from gradoracle.cli.common import EXIT_OK, console
from gradoracle.identities import get_identity
from gradoracle.options import DEFAULT_CONFIGURATIONS, configurations_count
from gradoracle.specification import UnknownNotesLabelError, passage, source_words


def register(subparsers: Any) -> None:
    """Add the ``explain`` sub-command."""
    p = subparsers.add_parser(
        "explain", help="show one identity's formula, source and non-differentiable points"
    )
    p.add_argument("name", help="identity name (see 'gradoracle list')")
    p.add_argument(
        "--configurations",
        type=configurations_count,
        default=DEFAULT_CONFIGURATIONS,
        metavar="N|all",
        help=f"show the covering set of configurations a check with --configurations N draws from "
        f"(default {DEFAULT_CONFIGURATIONS})",
    )
    p.add_argument(
        "--no-notes", dest="notes", action="store_false", help="do not print the notes' passage for the label"
    )
    p.set_defaults(func=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    """Print one identity's formula, source, inputs and non-differentiable points."""
    ident = get_identity(args.name)
    out = console()
    lines = [
        f"{ident.name}  ({ident.source}, family {ident.family})",
        f"  notes section:      {source_words(ident.source)}",
        f"  formula:            {ident.formula}",
        f"  gradient w.r.t.:    {', '.join(ident.wrt)}",
        f"  ops used:           {', '.join(sorted(ident.ops)) or '(none)'}",
        f"  non-differentiable: {ident.nondifferentiable}",
        f"  policy:             {ident.kink_policy}",
    ]
    if ident.generalises:
        lines.append(f"  generalises:        {', '.join(ident.generalises)}")
    if ident.derivation:
        lines.append(f"  derivation:         {ident.derivation}")
    lines.extend(f"  parameter {name}: {drawn}" for name, drawn in ident.parameters)
    if ident.configurations is not None:
        if args.configurations:
            pool = ident.configurations.pool(args.configurations)
            lines.append(
                f"  configurations:     {len(pool.configurations)} (--configurations {args.configurations}): "
                f"{len(pool.covered)} of {len(pool.universe)} hyper-parameter values, {pool.pairs} pairs; "
                "every check evaluates each of them at least once (a top-up example for one its examples "
                "did not draw), the arrays drawn anew in every example"
            )
            late = ", ".join(label for label, _ in sorted(pool.late))
            lines.extend(
                f"    {k + 1}. {_config_text(c)}"
                + (f"  (top-up only, drawn by no example: holds {late})" if k >= pool.drawable else "")
                for k, c in enumerate(pool.configurations)
            )
        else:
            lines.append("  configurations:     all (--configurations all: Hypothesis draws every one)")
    doc = (ident.reference_gradient.__doc__ or "").strip()
    if doc:
        lines.append(f"  reference:          {doc}")
    if ident.reference_jacobian is not None:
        lines.append("  full Jacobian:      yes (identities 1-4: u^T J is computed from the Jacobian)")
    for line in lines:  # identity texts are data: never rich markup
        out.print(line, markup=False, highlight=False)
    if args.notes:
        for label in _notes_labels(ident.source):
            try:
                p = passage(label)
            except UnknownNotesLabelError:
                continue
            out.print()
            out.print(f"{label} - the notes, {p.title}:", markup=False, highlight=False, style="bold")
            for text_line in p.text.splitlines():
                out.print(f"  {text_line}", markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK


def _config_text(config: dict[str, Any]) -> str:
    """``key=value`` pairs of a configuration, nested dicts flattened."""
    parts: list[str] = []
    for key, value in config.items():
        if isinstance(value, dict):
            parts.extend(f"{k}={v}" for k, v in value.items())
        else:
            parts.append(f"{key}={value}")
    return ", ".join(parts).replace("'", "")


def _notes_labels(source: str) -> list[str]:
    """Every ``notes:`` label named in an identity's source text, in order, without repeats."""
    found: list[str] = []
    for token in source.replace(",", " ").replace("(", " ").replace(")", " ").split():
        if token.startswith("notes:") and token not in found:
            found.append(token)
    return found
