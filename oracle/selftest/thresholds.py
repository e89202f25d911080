"""The detection-threshold campaign (``gradoracle selftest --campaign threshold``).

A correct adapter is wrapped so that its gradients are perturbed
(:mod:`gradoracle.selftest.perturbations`): ``g (1 + eps)`` (``scale``) or
``g + eps ||g||_2 n / ||n||_2`` with ``n`` Gaussian (``noise``).  For each family and dtype,
the smallest eps on the grid ``10^(k/4)`` (1e-16 .. 1e-1) that is caught in at least 99% of
independent checks is found by bisection (assuming the catch rate grows with eps), stopping
a grid point early once more than 1% of its checks missed.  The same is measured for
``torch.autograd.gradcheck`` and ``jax.test_util.check_grads`` on the same perturbed
functions, and every tool's false-failure rate at ``eps = 0``.  Written as
``thresholds.json/md``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradoracle.identities import Identity, all_identities
from gradoracle.results import Fault, Verdict
from gradoracle.runner import DTYPES, CheckSettings, evaluate_example
from gradoracle.selftest.common import (
    TOOL_MODULES,
    Callback,
    _md_table,
    _read_parts,
    _versions,
    _write,
    adapter_modules,
    code_fingerprint,
    draw_examples,
    run_resumable,
)
from gradoracle.selftest.perturbations import (
    CHECK_GRADS_SETTINGS,
    GRADCHECK_DEFAULTS,
    GRADCHECK_TUNED_FLOAT32,
    PERTURBATIONS,
    PerturbedAdapter,
    _check_grads_caught,
    _gradcheck_caught,
    _tool_available,
)
from gradoracle.strategies import ordinary_draws

THRESHOLD_FILES = ("thresholds.json", "thresholds.md")
THRESHOLD_PARTS = "thresholds.parts.jsonl"

#: The eps grid: 10^(k/4) from 1e-16 to 1e-1.
GRID: tuple[float, ...] = tuple(float(10.0 ** (k / 4)) for k in range(-64, -3))
CATCH_TARGET = 0.99
TOOLS: tuple[str, ...] = ("gradoracle", "gradoracle-1ex", "gradcheck", "gradcheck-tuned", "check_grads")

#: The single-example tools draw their examples from one pool per (family, seed), shared by
#: every tool and every eps; examples whose Jacobian is identically zero (e.g. every ReLU
#: unit off) are left out of it, since perturbing a zero gradient changes nothing.
TOOL_TEXT: dict[str, str] = {
    "gradoracle": "gradoracle `check()` at the default settings (30 examples, shrinking off)",
    "gradoracle-1ex": "gradoracle's three-way comparison (`evaluate_example`, default settings) on "
    "the single example the other tools get",
    "gradcheck": "torch.autograd.gradcheck defaults (eps 1e-6, atol 1e-5, rtol 1e-3), one example per check",
    "gradcheck-tuned": "gradcheck tuned for float32 (eps 1e-3, atol 1e-3, rtol 1e-3), one example per check",
    "check_grads": "jax.test_util.check_grads(order=1, modes=['rev']), JAX defaults (eps 1e-4, "
    "atol = rtol = 2e-3 float32, 1e-5 float64), one example per check",
}


@dataclass(frozen=True)
class ThresholdUnit:
    """One threshold measurement: a tool on one family in one dtype under one perturbation."""

    tool: str
    family: str
    dtype: str
    kind: str
    checks: int
    fp_checks: int
    seed: int
    base_adapter: str
    code: str = ""

    @property
    def key(self) -> str:
        """Identifies the unit in the parts file."""
        return "|".join(str(v) for v in asdict(self).values())


def families() -> list[str]:
    """The identity families, in the notes' order."""
    return list(dict.fromkeys(i.family for i in all_identities()))


def _family_identities(family: str) -> list[Identity]:
    members = [i for i in all_identities() if i.family == family]
    if not members:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(families())}")
    return members


class _Trials:
    """One check per call: ``caught(eps, j)`` -> (caught?, error text or '')."""

    def __init__(self, unit: ThresholdUnit) -> None:
        self.unit = unit
        self.members = _family_identities(unit.family)
        self._pool: dict[str, list[Any]] = {}
        self._base: Any = None

    def _example(self, j: int) -> tuple[Identity, Any]:
        """Example ``j`` of the single-example tools: the same pool for every tool and eps."""
        ident = self.members[j % len(self.members)]
        if ident.name not in self._pool:
            need = math.ceil(max(self.unit.checks, self.unit.fp_checks) / len(self.members)) + 1
            with ordinary_draws():  # FD-based tools cannot difference next to a kink
                drawn = draw_examples(ident, 2 * need + 10, self.unit.seed)
            self._pool[ident.name] = [ex for ex in drawn if _has_gradient(ident, ex)][:need] or drawn
        pool = self._pool[ident.name]
        return ident, pool[(j // len(self.members)) % len(pool)]

    def caught(self, eps: float, j: int) -> tuple[bool, str]:
        tool = self.unit.tool
        if tool == "gradoracle":
            return self._gradoracle(eps, j)
        ident, example = self._example(j)
        noise_seed = self.unit.seed * 100_003 + j
        if tool == "gradoracle-1ex":
            return self._gradoracle_example(ident, example, eps, noise_seed)
        try:
            if tool in ("gradcheck", "gradcheck-tuned"):
                return _gradcheck_caught(
                    ident, example, self.unit.dtype, eps, self.unit.kind, noise_seed, tool
                ), ""
            if tool == "check_grads":
                return _check_grads_caught(
                    ident, example, self.unit.dtype, eps, self.unit.kind, noise_seed
                ), ""
        except Exception as exc:  # the tool itself failed in an unexpected way: counted, reported
            return True, f"{type(exc).__name__}: {exc}"
        raise ValueError(f"unknown tool {tool!r}; choose from {', '.join(TOOLS)}")

    def _adapter(self) -> Any:
        from gradoracle.adapters import load_adapter

        if self._base is None:
            self._base = load_adapter(self.unit.base_adapter)
        return self._base

    def _gradoracle(self, eps: float, j: int) -> tuple[bool, str]:
        """One :func:`gradoracle.runner.check` at the default settings (shrinking off)."""
        from gradoracle.runner import check

        ident = self.members[j % len(self.members)]
        adapter = PerturbedAdapter(self._adapter(), eps, self.unit.kind, seed=self.unit.seed * 100_003 + j)
        settings = CheckSettings(seed=self.unit.seed * 7919 + j, shrink=False)
        result = check(ident, adapter, self.unit.dtype, settings)
        caught = result.verdict in (Verdict.FAIL, Verdict.ERROR)
        odd = result.verdict == Verdict.ERROR or (caught and result.fault != Fault.BACKWARD)
        return caught, (f"{result.verdict}/{result.fault}: {result.message[:200]}" if odd else "")

    def _gradoracle_example(self, ident: Identity, example: Any, eps: float, seed: int) -> tuple[bool, str]:
        """One :func:`gradoracle.runner.evaluate_example` on the single-example tools' example."""
        adapter = PerturbedAdapter(self._adapter(), eps, self.unit.kind, seed=seed)
        outcome = evaluate_example(ident, adapter, self.unit.dtype, example, CheckSettings())
        odd = outcome.fault not in (Fault.NONE, Fault.BACKWARD)
        return not outcome.passed, (f"{outcome.fault}: {outcome.crash or outcome.contract}" if odd else "")


def _has_gradient(ident: Identity, example: Any) -> bool:
    """Whether ``u^T J`` is non-zero for a random ``u`` (else J = 0: no perturbation of it exists)."""
    out = ident.reference_forward(example.inputs, example.params)
    u = np.random.default_rng(example.seed).uniform(0.5, 1.0, size=np.shape(out))
    grads = ident.gradient(example.inputs, example.params, u)
    return any(bool(np.any(np.asarray(g) != 0)) for g in grads.values())


def _catch_rate(trials: _Trials, eps: float, n: int, early_stop: bool) -> dict[str, Any]:
    """Run up to ``n`` checks at ``eps``; stop once more than 1% missed (when ``early_stop``)."""
    allowed = n - math.ceil(CATCH_TARGET * n)
    caught = run = 0
    errors: list[str] = []
    for j in range(n):
        hit, err = trials.caught(eps, j)
        run += 1
        caught += hit
        if err and len(errors) < 3:
            errors.append(err)
        if early_stop and run - caught > allowed:
            break
    return {
        "eps": eps,
        "checks": n,
        "run": run,
        "caught": caught,
        "rate": caught / run if run else 0.0,
        "reaches_target": run == n and caught >= math.ceil(CATCH_TARGET * n),
        "stopped_early": run < n,
        "errors": errors,
    }


def _threshold_code(unit_or_tool: ThresholdUnit | str, base_adapter: str = "") -> str:
    """The code fingerprint of a threshold unit: the core plus what its tool runs on."""
    if isinstance(unit_or_tool, ThresholdUnit):
        tool, base_adapter = unit_or_tool.tool, unit_or_tool.base_adapter
    else:
        tool = unit_or_tool
    extra = TOOL_MODULES.get(tool) or adapter_modules(base_adapter)
    return code_fingerprint(extra)


def run_threshold_unit(unit: ThresholdUnit) -> dict[str, Any]:
    """False-failure rate at eps = 0, then the bisection for the 99% threshold on :data:`GRID`."""
    start = time.perf_counter()
    ok, why = _tool_available(unit.tool)
    record: dict[str, Any] = {"key": unit.key, **asdict(unit), "code_at_run": _threshold_code(unit)}
    if not ok:
        return {**record, "skipped": why, "duration_s": 0.0}
    trials = _Trials(unit)
    zero = _catch_rate(trials, 0.0, unit.fp_checks, early_stop=False)
    points: dict[int, dict[str, Any]] = {}
    hi = len(GRID) - 1
    points[hi] = _catch_rate(trials, GRID[hi], unit.checks, early_stop=True)
    threshold: float | None = None
    below: float | None = None
    if points[hi]["reaches_target"]:
        lo = -1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            points[mid] = _catch_rate(trials, GRID[mid], unit.checks, early_stop=True)
            if points[mid]["reaches_target"]:
                hi = mid
            else:
                lo = mid
        threshold = GRID[hi]
        below = GRID[lo] if lo >= 0 else None
    return {
        **record,
        "skipped": "",
        "false_failures": zero["caught"],
        "false_failure_rate": zero["rate"],
        "zero": zero,
        "threshold": threshold,
        "largest_missed": below,
        "points": [points[i] for i in sorted(points)],
        "duration_s": round(time.perf_counter() - start, 2),
    }


def plan_threshold_units(
    tools: Sequence[str],
    family_names: Sequence[str],
    dtypes: Sequence[str],
    kinds: Sequence[str],
    checks: int,
    fp_checks: int,
    seed: int,
    base_adapter: str,
) -> list[ThresholdUnit]:
    """Every tool x family x dtype x perturbation (gradcheck-tuned only in float32)."""
    for t in tools:
        if t not in TOOLS:
            raise ValueError(f"unknown tool {t!r}; choose from {', '.join(TOOLS)}")
    for k in kinds:
        if k not in PERTURBATIONS:
            raise ValueError(f"unknown perturbation {k!r}; choose from {', '.join(PERTURBATIONS)}")
    for f in family_names:
        _family_identities(f)
    return [
        ThresholdUnit(t, f, d, k, checks, fp_checks, seed, base_adapter, _threshold_code(t, base_adapter))
        for k in kinds
        for f in family_names
        for d in dtypes
        for t in tools
        if not (t == "gradcheck-tuned" and d != "float32")
    ]


@dataclass
class ThresholdReport:
    """Aggregated threshold units."""

    parts: list[dict[str, Any]]
    complete: bool = True
    duration_s: float = 0.0
    stale_units: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Every unit plus the tool descriptions and settings."""
        return {
            "kind": "gradoracle-thresholds",
            "version": 1,
            "code": code_fingerprint(),
            "code_note": "core fingerprint now; each unit's code_at_run (core + its tool's adapter module) "
            "is the code it ran with; units_other_code counts units whose code is not the tree now",
            "units_other_code": self.stale_units,
            "grid": "10^(k/4), 1e-16 .. 1e-1",
            "catch_target": CATCH_TARGET,
            "tools": TOOL_TEXT,
            "gradcheck_defaults": GRADCHECK_DEFAULTS,
            "gradcheck_tuned_float32": GRADCHECK_TUNED_FLOAT32,
            "check_grads": CHECK_GRADS_SETTINGS,
            "complete": self.complete,
            "duration_s": round(self.duration_s, 1),
            "versions": _versions(),
            "units": self.parts,
        }


def _threshold_cell(p: Mapping[str, Any]) -> str:
    if p.get("skipped"):
        return "not run"
    rate = p.get("false_failure_rate", 0.0)
    cell = f"> {GRID[-1]:.0e}" if p["threshold"] is None else f"{p['threshold']:.1e}"
    if rate >= 1 - CATCH_TARGET:
        cell += f" (fails {rate:.0%} of correct)"
    return cell


def threshold_markdown(report: ThresholdReport) -> str:
    """Threshold and false-failure tables per perturbation, family, dtype and tool."""
    lines = [
        "# Detection thresholds",
        "",
        f"Smallest relative perturbation eps (grid 10^(k/4)) caught in >= {CATCH_TARGET:.0%} of independent "
        "checks; 'fails x% of correct' marks a tool whose false-failure rate at eps = 0 is >= 1%, which "
        "makes its threshold meaningless.",
        "",
        *(f"- **{t}**: {text}" for t, text in TOOL_TEXT.items()),
        "",
    ]
    codes = sorted({str(p.get("code_at_run")) for p in report.parts})
    lines += [f"Code fingerprints of the units: {', '.join(codes)}."]
    if report.stale_units:
        lines += [
            f"**{report.stale_units} units ran with code other than the tree now**; rerun the command to "
            "refresh them."
        ]
    lines.append("")
    parts = [p for p in report.parts]
    tools = [t for t in TOOLS if any(p["tool"] == t for p in parts)]
    for kind in PERTURBATIONS:
        kparts = [p for p in parts if p["kind"] == kind]
        if not kparts:
            continue
        checks = sorted({p["checks"] for p in kparts})
        lines += [
            f"## Perturbation `{kind}` ({'g (1 + eps)' if kind == 'scale' else 'g + eps ||g|| n/||n||'}); "
            f"{'/'.join(map(str, checks))} checks per grid point",
            "",
        ]
        rows = []
        for fam in families():
            for dt in DTYPES:
                cells = []
                for t in tools:
                    match = [p for p in kparts if p["family"] == fam and p["dtype"] == dt and p["tool"] == t]
                    cells.append(_threshold_cell(match[0]) if match else "-")
                if any(c != "-" for c in cells):
                    rows.append((fam, dt, *cells))
        lines += _md_table(("family", "dtype", *tools), rows)
        lines += ["", f"False failures at eps = 0 (correct gradients), `{kind}` units:", ""]
        frows = []
        for t in tools:
            for dt in DTYPES:
                sel = [p for p in kparts if p["tool"] == t and p["dtype"] == dt and not p.get("skipped")]
                if sel:
                    n = sum(p["zero"]["run"] for p in sel)
                    f = sum(p["zero"]["caught"] for p in sel)
                    frows.append((t, dt, f"{f}/{n}", f"{f / n:.2%}" if n else "n/a"))
        lines += _md_table(("tool", "dtype", "false failures / checks", "rate"), frows)
        lines.append("")
    return "\n".join(lines) + "\n"


def aggregate_thresholds(out: Path, complete: bool = True, duration_s: float = 0.0) -> ThresholdReport:
    """Aggregate ``out/thresholds.parts.jsonl`` into ``thresholds.json/md``.

    Several runs may share the parts file: per tool x family x dtype x perturbation the
    unit with the most checks (then the latest) is reported.
    """
    latest: dict[str, dict[str, Any]] = {}
    parts = _read_parts(Path(out) / THRESHOLD_PARTS)
    for p in parts:  # one unit per measurement: the one with the most checks, then the latest
        slot = f"{p['tool']}|{p['family']}|{p['dtype']}|{p['kind']}"
        kept = latest.get(slot)
        if kept is None or (p["checks"], p["fp_checks"]) >= (kept["checks"], kept["fp_checks"]):
            latest[slot] = p
    other = sum(
        1 for p in latest.values() if p.get("code_at_run") != _threshold_code(p["tool"], p["base_adapter"])
    )
    report = ThresholdReport(list(latest.values()), complete, duration_s, other)
    _write(Path(out) / THRESHOLD_FILES[0], json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    _write(Path(out) / THRESHOLD_FILES[1], threshold_markdown(report))
    return report


def run_threshold_campaign(
    units: Sequence[ThresholdUnit],
    out: Path,
    jobs: int = 1,
    time_budget_s: float | None = None,
    fresh: bool = False,
    on_unit: Callback | None = None,
) -> ThresholdReport:
    """Run the threshold units not yet in the parts file, then aggregate and write the report."""
    out = Path(out)
    complete, elapsed = run_resumable(
        run_threshold_unit, units, out / THRESHOLD_PARTS, jobs, time_budget_s, fresh, on_unit
    )
    return aggregate_thresholds(out, complete, elapsed)
