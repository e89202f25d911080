"""The false-positive campaign (``gradoracle selftest --campaign fp``): planning and running.

Correct adapters, many examples per identity x adapter x dtype x mode: each example goes
through the runner's per-example comparison of its mode (:func:`gradoracle.runner.evaluate_example`
for ``vjp``, :data:`gradoracle.modes.EVALUATORS` for ``jvp`` and ``hvp``), and the
error/tolerance ratio of every comparison is recorded in a
:class:`~gradoracle.selftest.fp_report.RatioHistogram` per dtype and kind.  Work is cut into
units of ``chunk`` examples, each persisted to ``fp_campaign.parts.jsonl`` as it finishes,
so a run can be stopped and resumed; the report (``fp_campaign.json/md``) aggregates every
unit in that file.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradoracle.identities import get_identity
from gradoracle.modes import EVALUATORS
from gradoracle.runner import CheckSettings, evaluate_example
from gradoracle.selftest.common import (
    Callback,
    _read_parts,
    _write,
    adapter_modules,
    code_fingerprint,
    example_digest,
    run_resumable,
)
from gradoracle.selftest.fp_report import FP_KINDS, FPCampaignReport, RatioHistogram, fp_markdown

FP_FILES = ("fp_campaign.json", "fp_campaign.md")
FP_PARTS = "fp_campaign.parts.jsonl"


#: Each comparison kind of the modes, by the histogram it goes into (:data:`FP_KINDS`).
KIND_HISTOGRAM: dict[str, str] = {
    "forward": "forward",
    "analytic": "analytic",
    "fd": "fd",
    "oracle": "oracle",
    "jvp-analytic": "analytic",
    "jvp-fd": "fd",
    "jvp-oracle": "oracle",
    "transpose": "transpose",
    "hvp-analytic": "analytic",
    "hvp-fd": "fd",
    "hvp-oracle": "oracle",
    "hvp-methods": "methods",
}


@dataclass(frozen=True)
class FPUnit:
    """A chunk of the campaign: ``size`` examples of one identity x adapter x dtype x mode."""

    adapter: str
    dtype: str
    identity: str
    seed: int
    chunk: int
    size: int
    code: str = ""
    #: vjp (reverse mode), jvp (forward mode) or hvp (second order)
    mode: str = "vjp"

    @property
    def key(self) -> str:
        """Identifies the unit in the parts file (resumption skips keys already there);
        reverse-mode keys are those of campaigns run before the modes existed."""
        key = f"{self.adapter}|{self.dtype}|{self.identity}|{self.seed}|{self.chunk}|{self.size}|{self.code}"
        return key if self.mode == "vjp" else f"{key}|{self.mode}"

    @property
    def hypothesis_seed(self) -> int:
        """The Hypothesis seed of this chunk: distinct per (seed, chunk)."""
        return self.seed * 1_000_003 + self.chunk


def plan_fp_units(
    adapters: Sequence[str],
    dtypes: Sequence[str],
    identities: Sequence[str],
    examples_per_check: int,
    seeds: Sequence[int],
    chunk: int = 500,
    modes: Sequence[str] = ("vjp",),
) -> list[FPUnit]:
    """Units covering ``examples_per_check`` examples per identity x adapter x dtype x mode.

    The examples are split evenly across ``seeds``, each share cut into chunks of at
    most ``chunk``.  Units come chunk-major (every check's first chunk, then every
    second chunk, ...), so a run stopped early leaves every check with similar counts.
    ``modes``: each adapter runs those of them it supports (:func:`gradoracle.modes.adapter_modes`);
    an identity without a closed form for a mode (:func:`gradoracle.modes.identity_mode_gap`)
    is left out of that mode.
    """
    if examples_per_check < 1 or chunk < 1 or not seeds:
        raise ValueError("examples_per_check and chunk must be >= 1 and at least one seed given")
    per_seed = [
        examples_per_check // len(seeds) + (i < examples_per_check % len(seeds)) for i in range(len(seeds))
    ]
    supported = {a: _supported_modes(a, modes) for a in adapters}
    gaps = {(i, m) for i in identities for m in modes if _mode_gap(i, m)}
    layers: list[list[FPUnit]] = []
    for seed, total in zip(seeds, per_seed, strict=True):
        for c in range(math.ceil(total / chunk)):
            size = min(chunk, total - c * chunk)
            while len(layers) <= c:
                layers.append([])
            layers[c].extend(
                FPUnit(a, d, i, seed, c, size, code_fingerprint(adapter_modules(a)), m)
                for a in adapters
                for d in dtypes
                for i in identities
                for m in supported[a]
                if (i, m) not in gaps
            )
    return [u for layer in layers for u in layer]


def _supported_modes(spec: str, modes: Sequence[str]) -> tuple[str, ...]:
    """The modes of ``modes`` the adapter ``spec`` supports (reverse mode needs no loading)."""
    from gradoracle.modes import MODES, adapter_modes

    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    if tuple(modes) == ("vjp",):
        return ("vjp",)
    from gradoracle.adapters import load_adapter

    have = adapter_modes(load_adapter(spec))
    return tuple(m for m in MODES if m in modes and m in have)


def _mode_gap(identity: str, mode: str) -> str:
    from gradoracle.modes import identity_mode_gap

    return identity_mode_gap(get_identity(identity), mode)


def run_fp_unit(unit: FPUnit) -> dict[str, Any]:
    """Evaluate ``unit.size`` Hypothesis-drawn examples in ``unit.mode``; histogram every
    error/tolerance ratio."""
    from hypothesis import HealthCheck, Phase, given
    from hypothesis import seed as hypothesis_seed
    from hypothesis import settings as hypothesis_settings

    from gradoracle.adapters import load_adapter

    start = time.perf_counter()
    ident = get_identity(unit.identity)
    adapter = load_adapter(unit.adapter)
    code = code_fingerprint(adapter_modules(unit.adapter))  # now: the code just imported
    settings = CheckSettings(oracle_every=1)  # the campaign histograms every comparison
    evaluate = evaluate_example if unit.mode == "vjp" else EVALUATORS[unit.mode]
    hists = {k: RatioHistogram() for k in FP_KINDS}
    failures: list[dict[str, Any]] = []
    state = {"examples": 0, "failures": 0, "skipped_directions": 0, "repeats": 0}
    digests: list[bytes] = []
    seen: set[bytes] = set()
    failing: list[bytes] = []

    def body(example: Any) -> None:
        digest = example_digest(example)
        if digest in seen:  # Hypothesis repeats simple examples; one evaluation is enough
            state["repeats"] += 1
            return
        seen.add(digest)
        digests.append(digest)
        outcome = evaluate(ident, adapter, unit.dtype, example, settings)
        state["examples"] += 1
        state["skipped_directions"] += outcome.skipped_directions
        per_kind: dict[str, float] = {}
        worst_ratio = 0.0
        for c in outcome.comparisons:
            worst_ratio = max(worst_ratio, c.ratio)
            kind = KIND_HISTOGRAM.get(c.kind)
            if kind is not None:
                per_kind[kind] = max(per_kind.get(kind, 0.0), c.ratio)
        for kind, ratio in per_kind.items():
            hists[kind].add(ratio)
        hists["all"].add(worst_ratio)
        if not outcome.passed:
            state["failures"] += 1
            failing.append(digest)
            if len(failures) < 5:
                worst = max(outcome.failures, key=lambda c: c.ratio, default=None)
                failures.append(
                    {
                        "identity": ident.name,
                        "adapter": adapter.name,
                        "dtype": unit.dtype,
                        "mode": unit.mode,
                        "fault": str(outcome.fault),
                        "kind": worst.kind if worst else None,
                        "input": worst.input if worst else None,
                        "ratio": worst.ratio if worst else None,
                        "crash": outcome.crash or outcome.contract,
                        "shapes": {k: list(np.shape(v)) for k, v in example.inputs.items()},
                        "params": dict(example.params),
                        "example_seed": example.seed,
                        "unit": unit.key,
                        "inputs": {k: np.asarray(v).tolist() for k, v in example.inputs.items()},
                    }
                )

    test = given(ident.strategy())(body)
    test = hypothesis_settings(
        max_examples=unit.size,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )(test)
    hypothesis_seed(unit.hypothesis_seed)(test)()
    return {
        "key": unit.key,
        **asdict(unit),
        "code_at_run": code,
        "adapter_name": adapter.name,
        "examples": state["examples"],
        "repeats_skipped": state["repeats"],
        "digests": base64.b64encode(b"".join(digests)).decode("ascii"),
        "failing_digests": [d.hex() for d in failing],
        "failures": state["failures"],
        "failure_details": failures,
        "skipped_directions": state["skipped_directions"],
        "histograms": {k: h.to_dict() for k, h in hists.items()},
        "duration_s": round(time.perf_counter() - start, 3),
    }


def aggregate_fp(
    out: Path, planned_units: int = 0, complete: bool = True, duration_s: float = 0.0
) -> FPCampaignReport:
    """Aggregate ``out/fp_campaign.parts.jsonl`` and write ``fp_campaign.json/md``.

    Units computed by different code (different :func:`code_fingerprint`) are never
    mixed: per adapter, the code version with the most examples is reported, and the
    report says whether it is the code in the tree now; other versions are listed apart.
    """
    parts = _read_parts(Path(out) / FP_PARTS)
    chosen: dict[str, str] = {}
    for spec in dict.fromkeys(p["adapter"] for p in parts):
        counts: dict[str, int] = {}
        for p in parts:
            if p["adapter"] == spec:
                code = str(p.get("code_at_run"))
                counts[code] = counts.get(code, 0) + int(p["examples"])
        chosen[spec] = max(counts, key=lambda c: counts[c])
    current = [p for p in parts if str(p.get("code_at_run")) == chosen[p["adapter"]]]
    stale = [p for p in parts if str(p.get("code_at_run")) != chosen[p["adapter"]]]
    notes = []
    for spec, code in chosen.items():
        now = code_fingerprint(adapter_modules(spec))
        notes.append(f"{spec} {code}" + (" (the tree now)" if code == now else f" (the tree now: {now})"))
    report = FPCampaignReport(
        current, planned_units, complete, duration_s, len(stale), "; ".join(notes), stale
    )
    _write(Path(out) / FP_FILES[0], json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    _write(Path(out) / FP_FILES[1], fp_markdown(report))
    return report


def run_fp_campaign(
    units: Sequence[FPUnit],
    out: Path,
    jobs: int = 1,
    time_budget_s: float | None = None,
    fresh: bool = False,
    on_unit: Callback | None = None,
) -> FPCampaignReport:
    """Run the units not yet in the parts file, then aggregate and write the report.

    ``on_unit(unit, record, done, total)`` after each unit.  No unit starts after
    ``time_budget_s``; Ctrl-C stops the run.  Either way the report covers every unit
    finished so far (and rerunning the same command resumes).
    """
    out = Path(out)
    complete, elapsed = run_resumable(run_fp_unit, units, out / FP_PARTS, jobs, time_budget_s, fresh, on_unit)
    return aggregate_fp(out, len(units), complete, elapsed)
