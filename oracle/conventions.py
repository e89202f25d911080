"""Convention probes: what each framework does at non-differentiable points.

ReLU at 0, tied maxima in a max-pool window and the like have no single right
gradient.  Conformance checks keep away from them; these probes hit them on purpose
and record what each framework returns next to what the notes' formula gives when read
literally (``1(z > 0)`` for ReLU, "delta to every x_ij = max(window)" for max pooling).
They form a table in the report and are never conformance failures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from gradoracle.text import FIELD_LIMIT, NAME_LIMIT, CleanText

ProbeForward = Callable[[Any, Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Probe:
    """One non-differentiable point, its input, and the notes' literal answer."""

    name: str
    op: str
    description: str
    x: tuple[tuple[float, ...], ...] | tuple[float, ...]
    forward: ProbeForward
    notes: tuple[Any, ...] | None
    notes_text: str
    pool: bool = False


def _el(op: str) -> ProbeForward:
    return lambda ops, a: getattr(ops, op)(a["x"])


def _pool(k: int, stride: int | None) -> ProbeForward:
    return lambda ops, a: ops.max_pool2d(a["x"], k, stride)


PROBES: tuple[Probe, ...] = (
    Probe(
        "relu-at-0",
        "relu",
        "relu'(x) at x = -1, 0, 1",
        (-1.0, 0.0, 1.0),
        _el("relu"),
        (0.0, 0.0, 1.0),
        "1(z > 0): relu'(0) = 0",
    ),
    Probe(
        "leaky-relu-at-0",
        "leaky_relu",
        "leaky_relu'(x), slope 0.01, at x = -1, 0, 1",
        (-1.0, 0.0, 1.0),
        _el("leaky_relu"),
        None,
        "not in the notes (one-sided derivatives 0.01 and 1)",
    ),
    Probe(
        "abs-at-0",
        "abs",
        "abs'(x) at x = -1, 0, 1",
        (-1.0, 0.0, 1.0),
        _el("abs"),
        None,
        "not in the notes (one-sided derivatives -1 and 1)",
    ),
    Probe(
        "maximum-zero-at-0",
        "maximum_zero",
        "d/dx maximum(x, 0) at x = -1, 0, 1",
        (-1.0, 0.0, 1.0),
        _el("maximum_zero"),
        (0.0, 0.0, 1.0),
        "ReLU written as maximum(x, 0); notes' 1(z > 0) gives 0",
    ),
    Probe(
        "clamp-min-zero-at-0",
        "clamp_min_zero",
        "d/dx clamp(x, min=0) at x = -1, 0, 1",
        (-1.0, 0.0, 1.0),
        _el("clamp_min_zero"),
        (0.0, 0.0, 1.0),
        "ReLU written as clamp(x, min=0); notes' 1(z > 0) gives 0",
    ),
    Probe(
        "max-pool-tie-in-window",
        "max_pool2d",
        "2x2 window [[1, 1], [0, 0]], k=2: two tied maxima",
        ((1.0, 1.0), (0.0, 0.0)),
        _pool(2, None),
        ((1.0, 1.0), (0.0, 0.0)),
        "read literally, delta goes to every x_ij = max(window)",
        pool=True,
    ),
    Probe(
        "max-pool-all-equal-window",
        "max_pool2d",
        "2x2 window of equal values, k=2",
        ((2.0, 2.0), (2.0, 2.0)),
        _pool(2, None),
        ((1.0, 1.0), (1.0, 1.0)),
        "read literally, delta goes to every x_ij = max(window)",
        pool=True,
    ),
    Probe(
        "max-pool-overlapping-windows",
        "max_pool2d",
        "3x3 input, k=2, stride 1: the centre is the maximum of all four windows",
        ((0.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 0.0)),
        _pool(2, 1),
        ((0.0, 0.0, 0.0), (0.0, 4.0, 0.0), (0.0, 0.0, 0.0)),
        "every window routes its delta to the centre: gradients accumulate to 4",
        pool=True,
    ),
    Probe(
        "max-pool-ties-across-windows",
        "max_pool2d",
        "3x3 input, k=2, stride 1, two tied maxima shared by overlapping windows",
        ((0.0, 0.0, 0.0), (0.0, 1.0, 1.0), (0.0, 0.0, 0.0)),
        _pool(2, 1),
        ((0.0, 0.0, 0.0), (0.0, 3.0, 2.0), (0.0, 0.0, 0.0)),
        "read literally, each window gives delta to each of its tied maxima",
        pool=True,
    ),
)


@dataclass
class ProbeResult(CleanText):
    """What one adapter returned for one probe in one dtype (text fields cleaned: gradoracle.text)."""

    _text_limits: ClassVar[dict[str, int]] = {
        "probe": NAME_LIMIT,
        "adapter": NAME_LIMIT,
        "dtype": NAME_LIMIT,
        "description": FIELD_LIMIT,
        "notes_text": FIELD_LIMIT,
        "convention": FIELD_LIMIT,
        "error": FIELD_LIMIT,
    }

    probe: str
    adapter: str
    dtype: str
    description: str
    observed: Any = None
    notes: Any = None
    notes_text: str = ""
    agrees_with_notes: bool | None = None
    convention: str = ""
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _describe_pool(x: np.ndarray, g: np.ndarray, notes: np.ndarray) -> str:
    if np.array_equal(g, notes):
        return "delta to every tied maximum (the notes' formula read literally)"
    flat = g.reshape(-1)
    nz = np.flatnonzero(flat)
    if x.shape == (2, 2):
        tied = np.flatnonzero(x.reshape(-1) == x.max())
        if nz.size == 1 and nz[0] == tied[0]:
            return "tie goes to the first maximum (row-major)"
        if nz.size == 1 and nz[0] == tied[-1]:
            return "tie goes to the last maximum (row-major)"
        if nz.size == tied.size and np.allclose(flat[nz], 1.0 / tied.size):
            return "delta split evenly between tied maxima"
    return "gradient " + np.array2string(g, separator=", ").replace("\n", "")


def _describe_elementwise(x: np.ndarray, g: np.ndarray, op: str) -> str:
    at0 = float(g[list(x).index(0.0)])
    return f"{op}'(0) = {at0:g}"


def run_probe(probe: Probe, adapter: Any, dtype: str) -> ProbeResult:
    """Evaluate one probe; adapter failures become a result with ``error`` set."""
    name = str(getattr(adapter, "name", "?"))
    res = ProbeResult(probe.name, name, dtype, probe.description, notes_text=probe.notes_text)
    x = np.asarray(probe.x, dtype=dtype)
    res.notes = None if probe.notes is None else np.asarray(probe.notes, dtype=np.float64).tolist()
    try:
        if probe.op not in adapter.supported_ops():
            res.error = f"adapter does not implement {probe.op}"
            return res
        out = np.asarray(adapter.forward(probe.forward, {"x": x}, dtype))
        vjp = adapter.vjp(probe.forward, {"x": x}, ("x",), np.ones(out.shape, dtype=dtype), dtype)
        g = np.asarray(vjp.grads["x"], dtype=np.float64)
    except Exception as exc:  # a probe that crashes is a finding, not a crash of the run
        res.error = f"{type(exc).__name__}: {exc}"
        return res
    res.observed = g.tolist()
    if probe.notes is not None:
        res.agrees_with_notes = bool(np.array_equal(g, np.asarray(probe.notes)))
    if probe.pool:
        res.convention = _describe_pool(np.asarray(probe.x), g, np.asarray(probe.notes))
    else:
        res.convention = _describe_elementwise(np.asarray(probe.x), g, probe.op)
    return res


def run_probes(adapters: Sequence[Any], dtypes: Sequence[str] = ("float64",)) -> list[ProbeResult]:
    """Every probe on every adapter (that is available) in every dtype."""
    out: list[ProbeResult] = []
    for adapter in adapters:
        ok, _ = adapter.available()
        if not ok:
            continue
        for dtype in dtypes:
            if dtype not in getattr(adapter, "dtypes", ("float64", "float32")):
                continue
            out.extend(run_probe(p, adapter, dtype) for p in PROBES)
    return out
