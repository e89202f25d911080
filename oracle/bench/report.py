"""The bench's records (:class:`Measurement`, :class:`CaseResult`, :class:`BenchConfig`,
:class:`BenchReport`) and the issue's cost targets a run measures (:func:`targets`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from gradoracle.bench.cases import (
    BATCH_GROWTH,
    BATCH_GROWTH_SIZES,
    BATCH_TARGET_FRAMEWORKS,
    BATCH_TARGETS,
    FRAMEWORKS,
    GRADORACLE_ADAPTERS,
    REFERENCE_TOOLS,
    TARGET_CASES,
    TARGET_NEW_SHAPE_S,
    TARGET_RATIO,
    TOOL_FRAMEWORK,
    BenchCase,
)


@dataclass
class Measurement:
    """One tool on one case."""

    tool: str
    framework: str
    status: str  # ok | skipped | unavailable | error
    cpu_s: float | None = None
    wall_s: float | None = None
    first_cpu_s: float | None = None
    estimate_s: float | None = None  # predicted cost of a call that was not run
    ratio: float | None = None  # cpu_s (or estimate_s) / the framework's forward+backward
    #: how ``ratio`` was measured: "interleaved" (median of per-round ratios, check and
    #: forward+backward timed alternately), "sequential" (medians timed one after the other:
    #: a check too slow to repeat), "estimate" (not run), "" (no ratio)
    ratio_method: str = ""
    evals: int | None = None
    passed: bool | None = None  # the check accepted the correct gradient
    detect_eps: float | None = None  # smallest relative gradient error caught
    detect_status: str = "not measured"  # measured | not measured | never caught | false failure
    note: str = ""

    @property
    def new_shape_s(self) -> float | None:
        """Extra cost of the first call at a new shape (compilation, caches)."""
        if self.first_cpu_s is None or self.cpu_s is None:
            return None
        return max(self.first_cpu_s - self.cpu_s, 0.0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["new_shape_s"] = self.new_shape_s
        return d


@dataclass
class CaseResult:
    """Every tool on one case."""

    op: str
    size: int
    label: str
    identity: str
    elements: int
    measurements: dict[str, Measurement] = field(default_factory=dict)
    load: list[float] | None = None  # the machine's load average when the case started

    def baseline(self, framework: str) -> Measurement | None:
        """The forward+backward measurement of ``framework``."""
        m = self.measurements.get(f"fwd+bwd[{framework}]")
        return m if m is not None and m.status == "ok" else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "size": self.size,
            "label": self.label,
            "identity": self.identity,
            "elements": self.elements,
            "load_average": self.load,
            "tools": {k: m.to_dict() for k, m in self.measurements.items()},
        }


@dataclass
class BenchConfig:
    """What the bench runs."""

    cases: list[BenchCase]
    adapters: tuple[str, ...] = GRADORACLE_ADAPTERS
    reference_tools: tuple[str, ...] = REFERENCE_TOOLS
    repeats: int = 5
    min_time_s: float = 0.02
    max_seconds: float = 10.0
    detection: bool = True
    threads: int | None = 1
    batched: bool = False  # also time gradoracle-batch[adapter] (examples as a batch; the CLI's default)
    interleaved: bool = False  # ratios from alternating rounds of check and baseline (the CLI's default)

    @property
    def tools(self) -> list[str]:
        """Column order: baselines, gradoracle per adapter, reference tools."""
        frameworks = [
            f
            for f in FRAMEWORKS
            if f in {a.partition("?")[0] for a in self.adapters}
            or any(TOOL_FRAMEWORK[t] == f for t in self.reference_tools)
        ]
        return (
            [f"fwd+bwd[{f}]" for f in frameworks]
            + [f"gradoracle[{a}]" for a in self.adapters]
            + ([f"gradoracle-batch[{a}]" for a in self.adapters] if self.batched else [])
            + list(self.reference_tools)
        )


@dataclass
class BenchReport:
    """The whole bench: environment, settings, per-case results, the targets."""

    config: dict[str, Any]
    environment: dict[str, Any]
    cases: list[CaseResult]
    duration_s: float
    load_average: dict[str, list[float] | None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "gradoracle-bench/1",
            "config": self.config,
            "environment": self.environment,
            "load_average": self.load_average,
            "duration_s": self.duration_s,
            "cases": [c.to_dict() for c in self.cases],
            "targets": targets(self),
        }


def _cpu(case: CaseResult, tool: str) -> float | None:
    m = case.measurements.get(tool)
    return m.cpu_s if m is not None and m.status == "ok" else None


#: "Flat as sizes grow": the check's ratio at the largest size at most this multiple of the
#: ratio at the smallest size (and the same number of evaluations at every size).
FLAT_GROWTH = 1.5


def _target(text: str, value: float | None, unit: str, met: bool | None, issue: int = 7) -> dict[str, Any]:
    return {"issue": issue, "target": text, "value": value, "unit": unit, "met": met}


def _ok_ratio(case: CaseResult | None, tool: str) -> float | None:
    m = None if case is None else case.measurements.get(tool)
    return m.ratio if m is not None and m.status == "ok" else None


def batch_targets(report: BenchReport) -> list[dict[str, Any]]:
    """Issue 16's one-check targets on the ``gradoracle-batch[...]`` columns (cost per example
    of a check whose examples are evaluated as one batch), in PyTorch and JAX:
    ``ratio <= BATCH_TARGETS[case]`` and ``ratio(linear 1024) / ratio(linear 8) <= BATCH_GROWTH``."""
    out: list[dict[str, Any]] = []
    adapters = {a.partition("?")[0] for a in report.config.get("adapters", [])}
    by_key = {(c.op, c.size): c for c in report.cases}
    for fw in BATCH_TARGET_FRAMEWORKS:
        tool = f"gradoracle-batch[{fw}]"
        if fw not in adapters or not any(tool in c.measurements for c in report.cases):
            continue
        for (op, size), limit in BATCH_TARGETS.items():
            case = by_key.get((op, size))
            if case is None:
                continue
            ratio = _ok_ratio(case, tool)
            text = f"{tool}: one check, per example, <= {limit:g}x forward+backward at {case.label}"
            out.append(_target(text, ratio, "x", None if ratio is None else ratio <= limit, 16))
        small, large = (by_key.get(("linear", n)) for n in BATCH_GROWTH_SIZES)
        if small is None or large is None:
            continue
        r0, r1 = _ok_ratio(small, tool), _ok_ratio(large, tool)
        growth = None if r0 is None or r1 is None or not r0 else r1 / r0
        text = (
            f"{tool}: ratio at {large.label} <= {BATCH_GROWTH:g} x the ratio at {small.label} "
            f"({'n/a' if r0 is None else f'{r0:.3g}x'} -> {'n/a' if r1 is None else f'{r1:.3g}x'})"
        )
        out.append(_target(text, growth, "growth", None if growth is None else growth <= BATCH_GROWTH, 16))
    return out


def targets(report: BenchReport) -> list[dict[str, Any]]:
    """The issues' cost targets that a bench run measures, each with its value and verdict:
    issue 7's (one check one example at a time) and issue 16's (:func:`batch_targets`)."""
    out: list[dict[str, Any]] = batch_targets(report)
    adapters = [a.partition("?")[0] for a in report.config.get("adapters", [])]
    by_key = {(c.op, c.size): c for c in report.cases}
    for op, size in TARGET_CASES:
        case = by_key.get((op, size))
        for a in adapters if case is not None else []:
            assert case is not None
            m = case.measurements.get(f"gradoracle[{a}]")
            ratio = m.ratio if m is not None and m.status == "ok" else None
            text = f"gradoracle[{a}] check <= {TARGET_RATIO:g}x forward+backward at {case.label}"
            out.append(_target(text, ratio, "x", None if ratio is None else ratio <= TARGET_RATIO))
    for a in adapters:
        tool = f"gradoracle[{a}]"
        for op in dict.fromkeys(c.op for c in report.cases):
            ms = [c.measurements[tool] for c in report.cases if c.op == op and tool in c.measurements]
            ms = [m for m in ms if m.status == "ok" and m.ratio is not None and m.evals is not None]
            sizes = [c.size for c in report.cases if c.op == op and tool in c.measurements]
            if len(ms) < 2 or not ms[0].ratio:
                continue
            growth = float(ms[-1].ratio or 0.0) / float(ms[0].ratio)
            evals = [m.evals for m in ms]
            text = (
                f"{tool} flat as {op} grows ({sizes[0]} -> {sizes[-1]}): evaluations "
                f"{evals[0]} -> {evals[-1]}, ratio {ms[0].ratio:.3g}x -> {ms[-1].ratio:.3g}x "
                f"(growth <= {FLAT_GROWTH:g})"
            )
            out.append(_target(text, growth, "growth", len(set(evals)) == 1 and growth <= FLAT_GROWTH))
    news = [
        m.new_shape_s
        for c in report.cases
        for m in [c.measurements.get("gradoracle[jax]")]
        if m is not None and m.new_shape_s is not None
    ]
    if news:
        worst = max(news)
        text = (
            f"JAX: a new input shape costs <= {TARGET_NEW_SHAPE_S * 1e3:g} ms (worst case: first "
            "gradoracle[jax] check at a shape minus a repeated one)"
        )
        out.append(_target(text, worst, "s", worst <= TARGET_NEW_SHAPE_S))
    return out
