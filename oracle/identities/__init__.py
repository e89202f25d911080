"""The catalogue: every identity of ``notes/gradient-notes.md`` as a declarative record.

The records live beside this registry, one module per section of the notes:

- :mod:`~gradoracle.identities.record`: the :class:`Identity` record and its errors;
- :mod:`~gradoracle.identities.linear`: identities 1, 2, 3 (Jacobians of ``W x``, ``x W``,
  ``x``) and 5, 6 (``dJ/dW`` for ``z = W x`` and ``z = x W``);
- :mod:`~gradoracle.identities.elementwise`: identity 4, one record per elementwise ``f``;
- :mod:`~gradoracle.identities.mlp`: the one-hidden-layer MLP and its steps A-E;
- :mod:`~gradoracle.identities.convolution` and :mod:`~gradoracle.identities.pooling`;

then the same rules as frameworks ship the layers (batches, channels, strides, padding,
dilation, groups), each naming the sections it generalises:

- :mod:`~gradoracle.identities.linear_layers`: ``X W^T + b`` and ``X W + b`` with batches;
- :mod:`~gradoracle.identities.mlp_batch`: the MLP with a batch, reductions, smoothing;
- :mod:`~gradoracle.identities.convolution_nd`: 1-D, 2-D and 3-D convolution layers;
- :mod:`~gradoracle.identities.pooling_nd`: max, average and global average pooling layers.

This module assembles them, in the notes' order, into :data:`IDENTITIES` and looks
identities up by name, ``family:`` selector, ``notes:`` source label or glob.
"""

from __future__ import annotations

import difflib
from fnmatch import fnmatchcase

from gradoracle.identities import (
    convolution,
    convolution_nd,
    elementwise,
    linear,
    linear_layers,
    mlp,
    mlp_batch,
    pooling,
    pooling_nd,
)
from gradoracle.identities.elementwise import ELEMENTWISE, Elementwise
from gradoracle.identities.record import (
    Arrays,
    ForwardFn,
    Identity,
    InvalidShapeError,
    JacobianFn,
    Params,
    PatternFn,
    ReferenceFn,
    UnknownIdentityError,
)

__all__ = [
    "ELEMENTWISE",
    "IDENTITIES",
    "SOURCES",
    "Arrays",
    "Elementwise",
    "ForwardFn",
    "Identity",
    "InvalidShapeError",
    "JacobianFn",
    "Params",
    "PatternFn",
    "ReferenceFn",
    "UnknownIdentityError",
    "all_identities",
    "get_identity",
    "select_identities",
]


def _build() -> dict[str, Identity]:
    ids: list[Identity] = [
        *linear.JACOBIAN_RECORDS,  # identities 1, 2, 3
        *elementwise.RECORDS,  # identity 4
        *linear.WEIGHT_GRADIENT_RECORDS,  # identities 5, 6
        *mlp.RECORDS,
        *convolution.RECORDS,
        *pooling.RECORDS,
        # the layers as frameworks ship them
        *linear_layers.RECORDS,
        *mlp_batch.RECORDS,
        *convolution_nd.RECORDS,
        *pooling_nd.RECORDS,
    ]
    return {i.name: i for i in ids}


IDENTITIES: dict[str, Identity] = _build()

#: The notes' section labels, in the order of the notes.
SOURCES: tuple[str, ...] = (
    "notes:identity-1",
    "notes:identity-2",
    "notes:identity-3",
    "notes:identity-4",
    "notes:identity-5",
    "notes:identity-6",
    "notes:mlp",
    "notes:conv-filter",
    "notes:conv-input",
    "notes:max-pool",
    "notes:avg-pool",
)


def all_identities() -> list[Identity]:
    """Every identity in the catalogue, in the notes' order."""
    return list(IDENTITIES.values())


def get_identity(name: str | Identity) -> Identity:
    """The identity called ``name`` (or a source label naming exactly one); suggests close names."""
    if isinstance(name, Identity):
        return name
    if name in IDENTITIES:
        return IDENTITIES[name]
    close = difflib.get_close_matches(name, list(IDENTITIES), n=4, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownIdentityError(f"unknown identity {name!r}.{hint} Run 'gradoracle list' for the catalogue.")


def _families() -> list[str]:
    return list(dict.fromkeys(i.family for i in IDENTITIES.values()))


def _select_one(pattern: str) -> list[Identity]:
    """The identities one selector names (see :func:`select_identities`)."""
    if pattern in IDENTITIES:
        return [IDENTITIES[pattern]]
    if pattern.startswith("family:"):
        family = pattern.partition(":")[2]
        found = [i for i in IDENTITIES.values() if fnmatchcase(i.family, family)]
        if not found:
            raise UnknownIdentityError(
                f"no identity family matches {family!r}; families: {', '.join(_families())}"
            )
        return found
    if pattern.startswith("notes:"):
        found = [i for i in IDENTITIES.values() if fnmatchcase(i.source, pattern)]
        if not found:
            raise UnknownIdentityError(
                f"no identity has the source label {pattern!r}; labels: {', '.join(SOURCES)}"
            )
        return found
    if any(c in pattern for c in "*?["):
        found = [i for i in IDENTITIES.values() if fnmatchcase(i.name, pattern)]
        if not found:
            raise UnknownIdentityError(
                f"the pattern {pattern!r} matches no identity name. Run 'gradoracle list' for the catalogue; "
                "'family:NAME' selects a family"
            )
        return found
    found = [i for i in IDENTITIES.values() if i.family == pattern]
    return found or [get_identity(pattern)]


def select_identities(names: list[str] | None) -> list[Identity]:
    """Identities named by the selectors, in the selectors' order; all when ``names`` is empty.

    A selector is an identity name (``mlp`` is that identity alone), ``family:NAME`` (a
    family, ``family:mlp`` the six MLP identities; globs allowed), a ``notes:`` source label,
    a glob over names (``elementwise-*``, ``mlp*``), or a family name that is no identity's
    name (``elementwise``).  A selector that matches nothing raises
    :class:`UnknownIdentityError` with the choices.
    """
    if not names:
        return all_identities()
    chosen: dict[str, Identity] = {}
    for name in names:
        chosen.update((i.name, i) for i in _select_one(name.strip()))
    return list(chosen.values())
