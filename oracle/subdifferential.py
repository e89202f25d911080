"""Generalised (Clarke) gradients at kinks, and the test that a framework's value lies in one.

At a point where a function is not differentiable there is no single right gradient, but
there is a right *set*: the Clarke generalised gradient, the convex hull of the limits of
gradients taken at nearby differentiable points.  For the kinks of the notes and of the ops
namespace (:mod:`gradoracle.ops`):

=========================  ==========================================================
kink                       generalised gradient
=========================  ==========================================================
relu at 0                  ``[0, 1]``  (one-sided derivatives 0 and 1)
leaky_relu at 0            ``[0.01, 1]``
abs at 0                   ``[-1, 1]``
maximum(x, 0) at 0         ``[0, 1]``;  clamp(x, min=0) at 0: ``[0, 1]``
clamp(x, lo, hi)           ``[0, 1]`` at ``x = lo`` and at ``x = hi``
maximum(a, b) at a = b     ``{(t, 1 - t): t in [0, 1]}``
max pool, ties             every window sends its cotangent to its tied maxima with
                           non-negative weights summing to one; overlapping windows
                           add up (the set is the sum over windows)
=========================  ==========================================================

Where the function is differentiable the set is the single gradient, so a probe that also
looks just off a kink (a few ulps away) checks the one-sided derivatives exactly: a rule
written ``x > eps`` instead of ``x > 0`` falls outside.

Each set is an :class:`AllowedSet`; :meth:`AllowedSet.judge` says whether gradients lie in
it, with room for rounding of ``128 eps`` relative (the conformance ``rtol`` of
:mod:`gradoracle.tolerances`), and names the worst element outside.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from gradoracle.tolerances import tolerance_for


@dataclass(frozen=True)
class Judgement:
    """Whether gradients lie in an allowed set; if not, where and by how much."""

    inside: bool
    where: str = ""  # the worst element outside, in words
    excess: float = 0.0  # its distance to the set, in units of the rounding room


def _room(dtype: str, magnitude: np.ndarray | float) -> np.ndarray:
    """Rounding room ``atol + 128 eps m`` (the conformance tolerance without the eta term)."""
    return np.asarray(tolerance_for(dtype).allowed(magnitude, 0.0), dtype=np.float64)


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def _index(idx: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


class AllowedSet:
    """A set of allowed gradients (one array per differentiated input)."""

    def describe(self) -> str:  # pragma: no cover - every subclass overrides it
        """The set in words."""
        raise NotImplementedError

    def judge(self, grads: Mapping[str, np.ndarray], dtype: str) -> Judgement:  # pragma: no cover
        """Whether ``grads`` lie in the set, up to rounding in ``dtype``."""
        raise NotImplementedError


@dataclass(frozen=True)
class Intervals(AllowedSet):
    """Elementwise ``lo_i <= g_i <= hi_i`` for one input (a point where ``lo_i = hi_i``).

    ``labels[i]`` names element ``i`` in messages (e.g. ``x = 0``).
    """

    name: str
    lo: np.ndarray
    hi: np.ndarray
    labels: tuple[str, ...] = ()

    def describe(self) -> str:
        """``d/dx at x=-1: {0}; at x=0: [0, 1]; ...``."""
        parts = []
        for i, (a, b) in enumerate(zip(self.lo.reshape(-1), self.hi.reshape(-1), strict=True)):
            label = self.labels[i] if i < len(self.labels) else f"{self.name}{_index((i,))}"
            parts.append(f"{label}: " + ("{" + _fmt(a) + "}" if a == b else f"[{_fmt(a)}, {_fmt(b)}]"))
        return "; ".join(parts)

    def judge(self, grads: Mapping[str, np.ndarray], dtype: str) -> Judgement:
        """``lo - room <= g <= hi + room`` elementwise, ``room = atol + 128 eps max(|lo|, |hi|)``."""
        g = np.asarray(grads[self.name], dtype=np.float64).reshape(-1)
        lo, hi = self.lo.reshape(-1), self.hi.reshape(-1)
        room = _room(dtype, np.maximum(np.abs(lo), np.abs(hi)))
        below, above = lo - g, g - hi
        dist = np.maximum(np.maximum(below, above), 0.0)
        dist = np.where(np.isfinite(g), dist, np.inf)
        ratio = dist / room
        k = int(np.argmax(ratio)) if ratio.size else 0
        if not ratio.size or ratio[k] <= 1.0:
            return Judgement(True)
        label = self.labels[k] if k < len(self.labels) else f"{self.name}{_index((k,))}"
        allowed = "{" + _fmt(lo[k]) + "}" if lo[k] == hi[k] else f"[{_fmt(lo[k])}, {_fmt(hi[k])}]"
        return Judgement(False, f"{label}: got {_fmt(g[k])}, allowed {allowed}", float(ratio[k]))


@dataclass(frozen=True)
class TieSplits(AllowedSet):
    """``maximum(a, b)`` with cotangent ``c``: ``(c, 0)`` where ``a > b``, ``(0, c)`` where ``a < b``,
    and ``(t c, (1 - t) c)``, ``t in [0, 1]``, at a tie."""

    a: np.ndarray
    b: np.ndarray
    cotangent: np.ndarray
    names: tuple[str, str] = ("a", "b")

    def describe(self) -> str:
        """Per element: the larger argument's gradient, or the split at a tie."""
        na, nb = self.names
        parts = []
        for i, (x, y, c) in enumerate(
            zip(self.a.reshape(-1), self.b.reshape(-1), self.cotangent.reshape(-1), strict=True)
        ):
            if x > y:
                parts.append(f"[{i}] ({_fmt(c)}, 0)")
            elif x < y:
                parts.append(f"[{i}] (0, {_fmt(c)})")
            else:
                parts.append(f"[{i}] tie: (t*{_fmt(c)}, (1-t)*{_fmt(c)}), t in [0, 1]")
        return f"(d/d{na}, d/d{nb}) " + "; ".join(parts)

    def judge(self, grads: Mapping[str, np.ndarray], dtype: str) -> Judgement:
        """Both shares between 0 and ``c`` (up to rounding) and summing to ``c``."""
        na, nb = self.names
        ga = np.asarray(grads[na], dtype=np.float64).reshape(-1)
        gb = np.asarray(grads[nb], dtype=np.float64).reshape(-1)
        a, b, c = self.a.reshape(-1), self.b.reshape(-1), self.cotangent.reshape(-1)
        room = _room(dtype, np.abs(c))
        lo_a = np.where(a > b, c, np.where(a < b, 0.0, np.minimum(c, 0.0)))
        hi_a = np.where(a > b, c, np.where(a < b, 0.0, np.maximum(c, 0.0)))
        lo_b = np.where(a < b, c, np.where(a > b, 0.0, np.minimum(c, 0.0)))
        hi_b = np.where(a < b, c, np.where(a > b, 0.0, np.maximum(c, 0.0)))
        dist = np.maximum.reduce(
            [lo_a - ga, ga - hi_a, lo_b - gb, gb - hi_b, np.abs(ga + gb - c), np.zeros_like(c)]
        )
        dist = np.where(np.isfinite(ga) & np.isfinite(gb), dist, np.inf)
        ratio = dist / room
        k = int(np.argmax(ratio)) if ratio.size else 0
        if not ratio.size or ratio[k] <= 1.0:
            return Judgement(True)
        state = "a tie" if a[k] == b[k] else (f"{na} > {nb}" if a[k] > b[k] else f"{na} < {nb}")
        return Judgement(
            False,
            f"[{k}] ({na} = {_fmt(a[k])}, {nb} = {_fmt(b[k])}, {state}): got "
            f"(d/d{na}, d/d{nb}) = ({_fmt(ga[k])}, {_fmt(gb[k])}), allowed "
            + (
                f"(t*{_fmt(c[k])}, (1-t)*{_fmt(c[k])}) with t in [0, 1]"
                if a[k] == b[k]
                else f"({_fmt(hi_a[k])}, {_fmt(hi_b[k])})"
            ),
            float(ratio[k]),
        )


def pool_windows(shape: tuple[int, int], k: int, stride: int) -> list[list[tuple[int, int]]]:
    """The pixels of every ``k x k`` window with ``stride`` (floor mode), row-major window order."""
    h, w = shape
    out = []
    for u in range(0, h - k + 1, stride):
        for v in range(0, w - k + 1, stride):
            out.append([(u + i, v + j) for i in range(k) for j in range(k)])
    return out


@dataclass(frozen=True)
class WindowRoutings(AllowedSet):
    """Max pooling with cotangent ``c_w >= 0`` per window: ``g = sum_w c_w p_w`` where ``p_w`` is a
    probability vector on window ``w``'s maxima (ties: any split; overlapping windows add up).

    Membership is a transportation problem (windows supply ``c_w``, pixels take ``g_p``,
    window ``w`` may only send to its maxima): by the supply-demand theorem it is feasible iff
    ``g >= 0``, ``g = 0`` off every window's maxima, ``sum g = sum c`` and every set ``S`` of
    windows sends at most what the maxima they can reach take: ``sum_{w in S} c_w <= sum_{p in
    N(S)} g_p`` (checked for every set within each connected group of windows).
    """

    x: np.ndarray
    k: int
    stride: int
    cotangent: np.ndarray
    name: str = "x"
    _maxima: list[list[tuple[int, int]]] = field(default_factory=list, compare=False)

    def _window_maxima(self) -> list[list[tuple[int, int]]]:
        if self._maxima:
            return self._maxima
        out = []
        for pixels in pool_windows(self.x.shape, self.k, self.stride):
            values = [self.x[p] for p in pixels]
            top = max(values)
            out.append([p for p, v in zip(pixels, values, strict=True) if v == top])
        object.__setattr__(self, "_maxima", out)
        return out

    def describe(self) -> str:
        """Which pixels each window may route to."""
        maxima = self._window_maxima()
        c = self.cotangent.reshape(-1)
        parts = []
        for i, m in enumerate(maxima):
            where = ", ".join(_index(p) for p in m)
            parts.append(
                f"window {i} sends {_fmt(c[i])} to {where}"
                if len(m) == 1
                else f"window {i} splits {_fmt(c[i])} over its tied maxima {where} (weights >= 0, sum 1)"
            )
        return "; ".join(parts) + "; overlapping windows add up"

    def judge(self, grads: Mapping[str, np.ndarray], dtype: str) -> Judgement:
        """The supply-demand conditions, each up to ``room`` (rounding of the accumulated sums)."""
        g = np.asarray(grads[self.name], dtype=np.float64)
        c = self.cotangent.reshape(-1).astype(np.float64)
        maxima = self._window_maxima()
        total = float(np.sum(np.abs(c)))
        room = float(_room(dtype, max(total, 1.0)))
        if not np.all(np.isfinite(g)):
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(g))[0])
            return Judgement(False, f"{self.name}{_index(bad)}: got {g[bad]}", np.inf)
        reachable = {p for m in maxima for p in m}
        for p in itertools.product(*(range(n) for n in g.shape)):
            if p not in reachable and abs(g[p]) > room:
                return Judgement(
                    False,
                    f"{self.name}{_index(p)}: got {_fmt(g[p])}, allowed {{0}} (not a maximum of any window)",
                    abs(g[p]) / room,
                )
        for p in sorted(reachable):
            if g[p] < -room:
                return Judgement(
                    False,
                    f"{self.name}{_index(p)}: got {_fmt(g[p])}, a negative routing weight",
                    -g[p] / room,
                )
        if abs(float(np.sum(g)) - float(np.sum(c))) > room:
            return Judgement(
                False,
                f"the gradient sums to {_fmt(float(np.sum(g)))}, but the windows route "
                f"{_fmt(float(np.sum(c)))} in all (a tie's weights must sum to one)",
                abs(float(np.sum(g)) - float(np.sum(c))) / room,
            )
        for group in _groups(maxima):
            if len(group) > 16:  # 2^16 subsets at most; larger groups are checked by the sums above
                continue
            for r in range(1, len(group) + 1):
                for subset in itertools.combinations(group, r):
                    supply = float(sum(c[w] for w in subset))
                    near = {p for w in subset for p in maxima[w]}
                    take = float(sum(max(g[p], 0.0) for p in near))
                    if supply > take + room:
                        where = ", ".join(_index(p) for p in sorted(near))
                        return Judgement(
                            False,
                            f"windows {list(subset)} route {_fmt(supply)} but their maxima {where} "
                            f"receive only {_fmt(take)}",
                            (supply - take) / room,
                        )
        return Judgement(True)


def _groups(maxima: Sequence[Sequence[tuple[int, int]]]) -> list[list[int]]:
    """Windows connected through shared maxima (union-find)."""
    parent = list(range(len(maxima)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[tuple[int, int], int] = {}
    for w, m in enumerate(maxima):
        for p in m:
            if p in owner:
                parent[find(w)] = find(owner[p])
            else:
                owner[p] = w
    groups: dict[int, list[int]] = {}
    for w in range(len(maxima)):
        groups.setdefault(find(w), []).append(w)
    return list(groups.values())


@dataclass(frozen=True)
class AllOf(AllowedSet):
    """Several independent sets (one per input or per part): inside when inside each."""

    parts: tuple[AllowedSet, ...]

    def describe(self) -> str:
        """The parts' descriptions."""
        return " | ".join(p.describe() for p in self.parts)

    def judge(self, grads: Mapping[str, np.ndarray], dtype: str) -> Judgement:
        """The first part that is violated, else inside."""
        worst = Judgement(True)
        for p in self.parts:
            j = p.judge(grads, dtype)
            if not j.inside and (worst.inside or j.excess > worst.excess):
                worst = j
        return worst
