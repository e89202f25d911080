"""Hypothesis strategies for the layer identities: hyper-parameters drawn with the shapes.

Every hyper-parameter comes from a small menu whose first entry is the simplest value
(``stride=1``, ``padding=0``, ``dilation=1``, ``groups=1``, ``N=1``, ``ceil_mode=False``,
``reduction="mean"``, ``label_smoothing=0``), so Hypothesis shrinks a failure to the
simplest configuration that still fails, and each example is kept valid by construction
(the spatial size is drawn *after* the kernel, stride, padding and dilation, as the
smallest size that fits plus a drawn extra).  Widths and channel counts of 20-68 with 40
rows, the sizes real models run on accelerators, are drawn in about one example in
:data:`LARGE_ONE_IN` (the default test run stays fast); ``GRADORACLE_LARGE_SHAPES=1`` draws
them in every example (a GPU run's profile).  Each of those sizes crosses a kernel's blocking
boundary by a remainder (rows past a tile of 32, widths past a block of 16 or 32 with 4 over):
a blocked kernel's tail, wrong while every whole block is right, shows only there (the third
reverse-mode audit, :mod:`gradoracle.selftest.mutant_audit3`).

A layer identity's inputs are drawn in two halves (:class:`ConfigSpace`): its
*configuration* (every hyper-parameter and shape: what a compiled framework program is
specialised to) by a function of a :class:`Picker`, then the *values* by Hypothesis.  A
check draws the configuration either freely (``configurations=0``: Hypothesis picks every
hyper-parameter, as above) or from a fixed covering pool of at most ``n`` configurations
(:func:`covering_pool`, the default): every menu value of every hyper-parameter occurs in
the pool, then as many pairs of values as the size allows, the simplest configuration first.
The values stay free in both, so a check draws new arrays for every example; the pool only
bounds how many distinct programs a compiling framework (JAX) builds per check.
"""

from __future__ import annotations

import os
import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Protocol, TypeVar

import numpy as np
from hypothesis import strategies as st

from gradoracle import strategies as S

#: About one example in this many draws the accelerator-sized shapes (widths and channels 20-68).
LARGE_ONE_IN = 12
#: The environment variable that makes every example accelerator-sized.
LARGE_ENV = "GRADORACLE_LARGE_SHAPES"

#: Leading batch shapes of a linear layer's input: one row first, then several, two batch axes.
BATCH_SHAPES: tuple[tuple[int, ...], ...] = ((1,), (2,), (3,), (2, 3), (5,), (2, 1, 3))
#: Batch sizes N of the layers (the first is the simplest; N > 1 shows a missing batch sum).
BATCH_SIZES: tuple[int, ...] = (1, 2, 3, 4, 5)
#: Rows (batch rows, flattened) of an accelerator-sized layer: past one row tile of 32.
LARGE_ROWS = 40
#: (in, out) widths of an accelerator-sized linear layer: each past a block of 16 (20, 36 and 68
#: also past blocks of 32 and 64) by a remainder, the tail a blocked kernel handles apart.
LARGE_WIDTHS: tuple[tuple[int, int], ...] = ((20, 36), (68, 20), (36, 68))
#: (inputs n, hidden h, classes m) of an accelerator-sized MLP (widths as :data:`LARGE_WIDTHS`).
LARGE_MLP: tuple[tuple[int, int, int], ...] = ((20, 36, 10), (68, 36, 20), (36, 68, 10))
#: (groups, C_in, C_out) of an accelerator-sized convolution: dense, grouped, depthwise; C_in per
#: group 20 or 18 where it is over 16 and every C_out 36 or 68 (past a block of 32 by 4).
LARGE_CONV_CHANNELS: tuple[tuple[int, int, int], ...] = ((1, 20, 36), (2, 36, 68), (36, 36, 36), (68, 68, 68))
#: Channel counts of an accelerator-sized pooling layer.
LARGE_CHANNELS: tuple[int, ...] = (20, 36, 68)


def large_forced() -> bool:
    """Whether ``GRADORACLE_LARGE_SHAPES`` asks for accelerator-sized shapes in every example."""
    return os.environ.get(LARGE_ENV, "") not in ("", "0")


@st.composite
def large(draw: st.DrawFn) -> bool:
    """True in about one example in :data:`LARGE_ONE_IN` (always under ``GRADORACLE_LARGE_SHAPES=1``)."""
    if large_forced():
        return True
    return bool(draw(st.integers(0, LARGE_ONE_IN - 1)) == LARGE_ONE_IN - 1)


T = TypeVar("T")

#: Candidates drawn at random when a covering pool is built (deterministic, per identity).
POOL_CANDIDATES = 400


class Picker(Protocol):
    """Chooses a configuration's hyper-parameters, one menu at a time (the first entry of
    each menu is the simplest value).  ``label`` names the hyper-parameter in coverage;
    ``cover=False`` marks a choice that a covering pool need not vary (sizes inside the
    rare accelerator-sized branch)."""

    def one(self, label: str, menu: Sequence[T], cover: bool = True) -> T:
        """One entry of ``menu``."""
        ...

    def axes(self, label: str, menu: Sequence[T], rank: int) -> tuple[T, ...]:
        """One entry of ``menu`` per spatial axis (``label[i]`` for axis i)."""
        ...

    def boolean(self, label: str) -> bool:
        """False or True (False is the simpler)."""
        ...

    def large(self) -> bool:
        """Whether this configuration is accelerator-sized (:func:`large`)."""
        ...

    def note(self, label: str, value: object) -> None:
        """Record a property that earlier choices combine into (asymmetric ``same`` padding,
        a partial ceil-mode window): a facet a covering pool must cover too, chosen by nobody."""
        ...

    def late(self, label: str, value: object) -> None:
        """Record a combination a covering pool must hold (a batch of one with several output
        channels) without steering the pool's other choices: where no configuration chosen for the
        facets and pairs holds it, one that does is appended as a top-up only configuration,
        evaluated by every check and drawn by none, so adding one moves no drawn example."""
        ...


class DrawPicker:
    """Hypothesis draws every choice (each one shrinks to its menu's first entry): the same
    choice sequence as drawing the strategies inline."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def one(self, label: str, menu: Sequence[T], cover: bool = True) -> T:
        """``draw(sampled_from(menu))``."""
        return self.draw(st.sampled_from(menu))

    def axes(self, label: str, menu: Sequence[T], rank: int) -> tuple[T, ...]:
        """``draw(per_axis(menu, rank))``."""
        return tuple(self.draw(per_axis(tuple(menu), rank)))

    def boolean(self, label: str) -> bool:
        """``draw(booleans())``."""
        return bool(self.draw(st.booleans()))

    def large(self) -> bool:
        """``draw(large())``."""
        return bool(self.draw(large()))

    def note(self, label: str, value: object) -> None:
        """Nothing: Hypothesis draws the choices the property is made of."""

    def late(self, label: str, value: object) -> None:
        """Nothing: Hypothesis draws the choices the combination is made of."""


@dataclass
class RandomPicker:
    """Uniform choices from a seeded generator, recording each ``(label, value)`` facet."""

    rng: random.Random
    simplest: bool = False  # every choice its menu's first entry
    facets: set[tuple[str, str]] = field(default_factory=set)
    #: the combinations :meth:`late` found true (``(label, "True")``)
    late_facets: set[tuple[str, str]] = field(default_factory=set)

    def one(self, label: str, menu: Sequence[T], cover: bool = True) -> T:
        """A uniform entry of ``menu`` (its first with ``simplest``)."""
        value = menu[0] if self.simplest else menu[self.rng.randrange(len(menu))]
        if cover:
            self.facets.add((label, repr(value)))
        return value

    def axes(self, label: str, menu: Sequence[T], rank: int) -> tuple[T, ...]:
        """One uniform entry per axis."""
        return tuple(self.one(f"{label}[{i}]", menu) for i in range(rank))

    def boolean(self, label: str) -> bool:
        """False or True, uniformly."""
        return self.one(label, (False, True))

    def large(self) -> bool:
        """True in about one configuration in :data:`LARGE_ONE_IN` (always under
        ``GRADORACLE_LARGE_SHAPES=1``)."""
        if large_forced():
            value = True
        else:
            value = not self.simplest and self.rng.randrange(LARGE_ONE_IN) == LARGE_ONE_IN - 1
        self.facets.add(("large", repr(value)))
        return value

    def note(self, label: str, value: object) -> None:
        """Record ``(label, value)`` as a facet (outside the accelerator-sized branch too)."""
        self.facets.add((label, repr(value)))

    def late(self, label: str, value: object) -> None:
        """Record ``(label, "True")`` among :attr:`late_facets` where ``value`` holds."""
        if value:
            self.late_facets.add((label, "True"))


Configuration = dict[str, Any]


Facets = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class CoveringPool:
    """The configurations a check draws from, with the facets each covers."""

    configurations: tuple[Configuration, ...]
    facets: tuple[Facets, ...]
    #: every ``(hyper-parameter, value)`` facet among the candidates the pool had to cover
    universe: Facets
    #: how many of the configurations (the first ones) an example draws from; the rest hold a
    #: combination none of those did (:meth:`Picker.late`) and are evaluated as top-ups only
    drawable: int = -1
    #: the late combinations (:meth:`Picker.late`) some configuration of the pool holds
    late: Facets = frozenset()

    def __post_init__(self) -> None:
        if self.drawable < 0:
            object.__setattr__(self, "drawable", len(self.configurations))

    @property
    def covered(self) -> Facets:
        """The facets some configuration of the pool has."""
        return frozenset().union(*self.facets)

    @property
    def pairs(self) -> int:
        """How many pairs of facets (of different hyper-parameters) some configuration has."""
        return len(frozenset().union(*(_pairs(f) for f in self.facets)))


def _pairs(facets: Facets) -> frozenset[tuple[tuple[str, str], tuple[str, str]]]:
    return frozenset((a, b) for a, b in combinations(sorted(facets), 2) if a[0] != b[0])


def covering_pool(
    name: str, configure: Callable[[Picker], Configuration], size: int, candidates: int = POOL_CANDIDATES
) -> CoveringPool:
    """The configurations a check draws from: the simplest first; then, greedily, the
    candidate that adds the most uncovered ``(hyper-parameter, value)`` facets (ties: the
    most uncovered pairs of facets, then the earlier candidate) until every facet drawn
    among the candidates is covered, whatever ``size``; then the candidates that add the
    most pairs while the pool is smaller than ``size``; last, one accelerator-sized
    configuration (:func:`large`): among the cheaper half of those drawn, the one that adds
    the most (every configuration is large under ``GRADORACLE_LARGE_SHAPES=1``).

    The candidates (``candidates`` draws, every choice uniform) come from a generator seeded
    by ``name`` and ``GRADORACLE_LARGE_SHAPES``, so every process and every run builds the
    same pool: a compiling framework's programs are reused across workers and through its
    persistent cache."""
    if size < 1:
        raise ValueError(f"a covering pool needs at least 1 configuration; got {size}")
    key = f"{name}|{os.environ.get(LARGE_ENV, '')}"
    rng = random.Random(zlib.crc32(key.encode()))
    first = RandomPicker(rng, simplest=True)
    drawn: list[tuple[Configuration, Facets]] = [(configure(first), frozenset(first.facets))]
    lates: list[Facets] = [frozenset(first.late_facets)]
    seen = {repr(sorted(drawn[0][0].items()))}
    for _ in range(candidates):
        picker = RandomPicker(rng)
        config = configure(picker)
        signature = repr(sorted(config.items()))
        if signature not in seen:
            seen.add(signature)
            drawn.append((config, frozenset(picker.facets)))
            lates.append(frozenset(picker.late_facets))
    forced_large = large_forced()
    big = [i for i, (_, facets) in enumerate(drawn) if ("large", "True") in facets]
    small = [i for i in range(len(drawn)) if i not in big]
    # One accelerator-sized configuration takes the last place; the others cover the small
    # menus.  Under GRADORACLE_LARGE_SHAPES=1 every one is large.
    reserve_large = bool(big) and not forced_large and bool(small)
    pool_of = big if forced_large or not small else small
    pairs = [_pairs(facets) for _, facets in drawn]
    universe: set[tuple[str, str]] = set().union(*(drawn[i][1] for i in pool_of))
    if reserve_large:
        universe.add(("large", "True"))
    chosen = [0]
    singles_done, pairs_done = set(drawn[0][1]), set(pairs[0])

    def add(i: int) -> None:
        chosen.append(i)
        singles_done.update(drawn[i][1])
        pairs_done.update(pairs[i])

    def best(among: list[int]) -> tuple[int, tuple[int, int]]:
        top, top_gain = -1, (0, 0)
        for i in among:
            if i in chosen:
                continue
            gain = (len(drawn[i][1] - singles_done), len(pairs[i] - pairs_done))
            if gain > top_gain:
                top, top_gain = i, gain
        return top, top_gain

    while True:  # every facet once
        i, gain = best(pool_of)
        if i < 0 or gain[0] == 0:
            break
        add(i)
    room = size - 1 if reserve_large else size
    while len(chosen) < room:  # then pairs, up to the size asked for
        i, gain = best(pool_of)
        if i < 0:
            break
        add(i)
    if reserve_large:
        cheaper = sorted(big, key=lambda i: (_elements(drawn[i][0]), i))[: max(1, len(big) // 2)]
        large_one = max(
            cheaper, key=lambda i: (len(drawn[i][1] - singles_done), len(pairs[i] - pairs_done), -i)
        )
        add(large_one)
        # facets only the accelerator-sized branch reaches (a channel tail past a block of 16)
        # count among the values the pool covers, so ``covered`` never exceeds ``universe``
        universe.update(drawn[large_one][1])
    drawable = len(chosen)
    # late combinations no chosen configuration holds: one top-up only configuration each (the
    # candidate with the most pairs not yet covered, then the earlier), after the drawable ones
    held: set[tuple[str, str]] = set().union(*(lates[i] for i in chosen))
    for facet in sorted(set().union(*(lates[i] for i in pool_of)) - held):
        having = [i for i in pool_of if facet in lates[i] and i not in chosen]
        i = max(having, key=lambda i: (len(pairs[i] - pairs_done), -i))
        add(i)
        held.update(lates[i])
    return CoveringPool(
        tuple(drawn[i][0] for i in chosen),
        tuple(drawn[i][1] for i in chosen),
        frozenset(universe),
        drawable,
        frozenset(held),
    )


def _elements(value: Any) -> int:
    """A configuration's size: the element counts of the shapes (int tuples) it holds."""
    if isinstance(value, dict):
        return sum(_elements(v) for v in value.values())
    if isinstance(value, tuple) and value and all(isinstance(v, int) for v in value):
        return int(np.prod(value))
    if isinstance(value, (tuple, list)):
        return sum(_elements(v) for v in value)
    return 0


@dataclass(frozen=True)
class ConfigSpace:
    """A layer identity's inputs in two halves: ``configure(picker)`` chooses the
    hyper-parameters and shapes, ``values(draw, configuration)`` draws the arrays."""

    name: str
    configure: Callable[[Picker], Configuration]
    values: Callable[[st.DrawFn, Configuration], S.Example]

    def free(self) -> st.SearchStrategy[S.Example]:
        """Hypothesis draws the configuration and the values (every choice shrinks)."""

        @st.composite
        def drawn(draw: st.DrawFn) -> S.Example:
            return self.values(draw, self.configure(DrawPicker(draw)))

        return drawn()

    def pool(self, size: int) -> CoveringPool:
        """The covering pool for ``size`` configurations (:func:`covering_pool`; cached per process)."""
        return _pool(self, size, os.environ.get(LARGE_ENV, ""))

    def pooled(
        self, size: int, only: int | None = None, seen: Callable[[int], None] | None = None
    ) -> st.SearchStrategy[S.Example]:
        """The configuration from :meth:`pool` (its index is one integer choice in ``[0, n)``,
        which shrinks to 0, the simplest), the values drawn freely; ``size <= 0``: :meth:`free`.

        ``only=k`` fixes the configuration to the pool's ``k``-th (a check's top-up of a
        configuration its examples did not draw): the index is still one integer choice, in
        ``[k, k]``, so an example's choice sequence (a ``@reproduce_failure`` blob, an example
        database entry) means the same example under both strategies.  ``seen(k)`` is called
        with the index of every configuration drawn."""
        if size <= 0:
            if only is not None:
                raise ValueError(
                    "only= needs a covering pool (size >= 1); configurations drawn freely have none"
                )
            return self.free()
        pool = self.pool(size)
        configs = pool.configurations
        if only is not None and not 0 <= only < len(configs):
            raise ValueError(
                f"only={only}: the pool of {self.name!r} has {len(configs)} configurations (0-based)"
            )
        choice: st.SearchStrategy[int] = (
            st.sampled_from(range(pool.drawable)) if only is None else st.integers(only, only)
        )

        @st.composite
        def drawn(draw: st.DrawFn) -> S.Example:
            index = draw(choice)
            if seen is not None:
                seen(index)
            return self.values(draw, dict(configs[index]))

        return drawn()


_POOLS: dict[tuple[ConfigSpace, int, str], CoveringPool] = {}


def _pool(space: ConfigSpace, size: int, env: str) -> CoveringPool:
    key = (space, size, env)
    if key not in _POOLS:
        _POOLS[key] = covering_pool(space.name, space.configure, size)
    return _POOLS[key]


def per_axis(menu: tuple[Any, ...], rank: int) -> st.SearchStrategy[tuple[Any, ...]]:
    """One menu entry per spatial axis (rectangular kernels, strides, ...)."""
    return st.tuples(*(st.sampled_from(menu) for _ in range(rank)))


def bias_between_kinks(z: np.ndarray, b: np.ndarray, margin: float) -> np.ndarray:
    """A bias with ``|z[n, j] + b[j]| >= margin`` for every row n: ``b`` itself when it is far
    enough from every ``-z[n, j]``, else the middle of the gap between the ``-z[:, j]`` nearest to
    it that is wide enough, else above them all (the unit is on for the whole batch)."""
    out = np.array(b, dtype=float)
    for j in range(z.shape[1]):
        kinks = np.sort(-z[:, j])
        if np.all(np.abs(kinks - out[j]) >= margin):
            continue
        candidates = [kinks[0] - margin, kinks[-1] + margin]
        gaps = np.diff(kinks)
        candidates += [
            float((lo + hi) / 2)
            for lo, hi, g in zip(kinks[:-1], kinks[1:], gaps, strict=True)
            if g >= 2 * margin
        ]
        out[j] = min(candidates, key=lambda c: abs(c - out[j]))
    return out


def distinct_values(rng: S.ValueSource, shape: tuple[int, ...], gap: float) -> np.ndarray:
    """Values that differ pairwise by at least ``gap`` (a shuffled ladder centred on 0), so every
    pooling window, overlapping or not, has one maximum ahead of its runner-up by ``gap``."""
    size = int(np.prod(shape))
    ladder = (np.arange(size) - (size - 1) / 2) * gap
    return rng.permutation(ladder).reshape(shape) + rng.uniform(0, gap / 4)


def uniform(
    draw: st.DrawFn, seed: int, shapes: dict[str, tuple[int, ...]], scale: float
) -> dict[str, np.ndarray]:
    """Named arrays uniform in ``[-scale, scale]``, drawn through Hypothesis (they shrink) with ``seed``."""
    rng = S.values_for(draw, seed)
    return {name: S.uniform(rng, shape, scale) for name, shape in shapes.items()}
