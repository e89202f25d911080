"""The oracle's self-test: mutants it must kill, correct adapters it must pass, two campaigns.

**Mutants** (``gradoracle selftest``).  Every mutant of :mod:`gradoracle.selftest.mutants` runs on
each of its target identities and dtypes through the normal runner
(:func:`gradoracle.matrix.run_matrix` -> :func:`gradoracle.runner.check`) with the default
settings except ``shrink=False``: shrinking only makes the counterexample smaller, and
without it ``CheckResult.examples - 1`` is exactly the number of examples drawn until
the first failing one (Hypothesis replays a failing example once to report it).  A
mutant is *killed* when every (target, dtype) fails with the expected fault; *survived*
when one passes; *mislocalised* when one fails with another fault.  The correct adapters
(NumPy engine, PyTorch, JAX when installed) run every identity in every dtype with the
default settings.  The result is a kill matrix, written as ``selftest.json`` and
``selftest.md``.

**False-positive campaign** (``--campaign fp``).  Correct adapters, many examples per
identity x adapter x dtype: each example goes through :func:`gradoracle.runner.evaluate_example`
(the runner's per-example three-way comparison), and the error/tolerance ratio of every
comparison is recorded in a log-histogram (20 bins per decade) per dtype and kind.  Work
is cut into units of ``chunk`` examples, each persisted to ``fp_campaign.parts.jsonl`` as
it finishes, so a run can be stopped and resumed; the report (``fp_campaign.json/md``)
aggregates every unit in that file.

**Detection threshold** (``--campaign threshold``).  A correct adapter is wrapped so
that its gradients are perturbed: ``g (1 + eps)`` (``scale``) or ``g + eps ||g||_2 n /
||n||_2`` with ``n`` Gaussian (``noise``).  For each family and dtype, the smallest eps on
the grid ``10^(k/4)`` (1e-16 .. 1e-1) that is caught in at least 99% of independent
checks is found by bisection (assuming the catch rate grows with eps), stopping a grid
point early once more than 1% of its checks missed.  The same is measured for
``torch.autograd.gradcheck`` and ``jax.test_util.check_grads`` on the same perturbed
functions, and every tool's false-failure rate at ``eps = 0``.  Written as
``thresholds.json/md``.

Nothing here prints; front-ends pass callbacks for progress.
"""

from __future__ import annotations

import base64
import json
import math
import multiprocessing
import signal
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gradoracle.identities import Identity, all_identities, get_identity
from gradoracle.results import CheckResult, Fault, Verdict
from gradoracle.runner import DTYPES, CheckSettings, evaluate_example

#: The correct adapters of the default self-test.  JAX runs eagerly: the runner builds a
#: fresh forward closure per example, so ``jit="auto"`` would compile once per example
#: (measured 0.7 s per mlp example vs 0.03 s eager); the arithmetic is the same.
DEFAULT_CORRECT_ADAPTERS: tuple[str, ...] = ("numpy", "torch", "jax?jit=never")

SELFTEST_FILES = ("selftest.json", "selftest.md")
FP_FILES = ("fp_campaign.json", "fp_campaign.md")
FP_PARTS = "fp_campaign.parts.jsonl"
THRESHOLD_FILES = ("thresholds.json", "thresholds.md")
THRESHOLD_PARTS = "thresholds.parts.jsonl"

Callback = Callable[..., None]


# ======================================================================================
# Small helpers
# ======================================================================================


def _write(path: Path, text: str) -> Path:
    from gradoracle.reporting.atomic import atomic_write_text

    return atomic_write_text(path, text)


def _versions() -> dict[str, str | None]:
    from gradoracle.reporting.environment import package_versions

    return package_versions()


#: Modules whose source decides every campaign's numbers: the runner and everything it
#: uses.  With the module of the adapter under test (:func:`adapter_modules`) their hash
#: tags every saved unit, so units computed by other code are never mixed into a report
#: (and a resumed run recomputes them); an edit to another adapter does not invalidate
#: them.  This module's own report-writing code is deliberately not part of it.
FINGERPRINT_MODULES: tuple[str, ...] = (
    "gradoracle.runner",
    "gradoracle.tolerances",
    "gradoracle.identities",
    "gradoracle.finite_differences",
    "gradoracle.strategies",
    "gradoracle.reference_ops",
    "gradoracle.ops",
    "gradoracle.adapters.base",
)
#: What the threshold tools other than gradoracle run on.
TOOL_MODULES: dict[str, tuple[str, ...]] = {
    "gradcheck": ("gradoracle.adapters.torch_adapter",),
    "gradcheck-tuned": ("gradoracle.adapters.torch_adapter",),
    "check_grads": ("gradoracle.adapters.jax_adapter",),
}
_FINGERPRINTS: dict[tuple[str, ...], str] = {}


def code_fingerprint(extra: Sequence[str] = ()) -> str:
    """sha256 (12 hex digits) of the source of :data:`FINGERPRINT_MODULES` plus ``extra`` modules.

    Computed once per process and module set, i.e. for the code this process imported
    (a file edited later does not change it, which is the point).
    """
    key = tuple(sorted(set(extra)))
    if key not in _FINGERPRINTS:
        import hashlib
        import importlib.util

        digest = hashlib.sha256()
        for name in (*FINGERPRINT_MODULES, *key):
            spec = importlib.util.find_spec(name)
            origin = spec.origin if spec is not None else None
            digest.update(name.encode())
            if origin and Path(origin).is_file():
                digest.update(Path(origin).read_bytes())
        _FINGERPRINTS[key] = digest.hexdigest()[:12]
    return _FINGERPRINTS[key]


def adapter_modules(spec: str) -> tuple[str, ...]:
    """The modules that define the adapter ``spec`` names (for a mutant, also its real adapter's)."""
    from gradoracle.adapters import load_adapter

    adapter = load_adapter(spec)
    modules = {type(adapter).__module__}
    inner = getattr(adapter, "inner", None)
    if inner is not None:
        modules.add(type(inner).__module__)
        modules.update(c.__module__ for c in type(inner).__mro__ if c.__module__.startswith("adapters."))
    return tuple(sorted(m for m in modules if m.startswith("adapters.") or m.startswith("oracle.")))


def example_digest(example: Any) -> bytes:
    """6 bytes identifying an example (its seed, params and input values)."""
    import hashlib

    h = hashlib.blake2b(digest_size=6)
    h.update(repr((example.seed, sorted(example.params.items()))).encode())
    for name in sorted(example.inputs):
        h.update(name.encode())
        h.update(np.ascontiguousarray(example.inputs[name], dtype=np.float64).tobytes())
    return h.digest()


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "n/a"
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.{digits}g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.{digits - 1}e}"


def _md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(str(c) for c in row) + " |" for row in rows)
    return lines


def draw_examples(identity: Identity | str, count: int, seed: int) -> list[Any]:
    """``count`` examples of ``identity`` drawn by its Hypothesis strategy (generation only)."""
    from hypothesis import HealthCheck, Phase, given
    from hypothesis import seed as hypothesis_seed
    from hypothesis import settings as hypothesis_settings

    ident = get_identity(identity)
    out: list[Any] = []

    def body(example: Any) -> None:
        out.append(example)

    test = given(ident.strategy())(body)
    test = hypothesis_settings(
        max_examples=count,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )(test)
    hypothesis_seed(seed)(test)()
    return out


def _spawn_pool(
    worker: Callable[..., Any],
    items: Sequence[Any],
    jobs: int,
    on_done: Callable[[Any, Any], None],
    should_stop: Callable[[], bool] = lambda: False,
) -> bool:
    """Run ``worker(item)`` for every item (in ``jobs`` spawned processes when ``jobs > 1``).

    ``on_done(item, result)`` is called in this process as each finishes; no new item
    starts once ``should_stop()`` is true.  Returns True when every item ran.
    """
    if jobs <= 1:
        for item in items:
            if should_stop():
                return False
            on_done(item, worker(item))
        return True
    context = multiprocessing.get_context("spawn")
    executor = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_ignore_sigint)
    pending = list(items)[::-1]
    inflight: dict[Future[Any], Any] = {}
    complete = True
    try:
        while pending or inflight:
            while pending and len(inflight) < jobs and not should_stop():
                item = pending.pop()
                inflight[executor.submit(worker, item)] = item
            if not inflight:
                complete = not pending
                break
            finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
            for future in finished:
                item = inflight.pop(future)
                on_done(item, future.result())
    except BaseException:
        processes = list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        raise
    executor.shutdown(wait=True)
    return complete and not pending


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ======================================================================================
# Mutants and correct adapters
# ======================================================================================


@dataclass
class MutantRow:
    """One mutant on one target identity in one dtype."""

    identity: str
    dtype: str
    verdict: str
    fault: str
    expected_fault: str
    examples: int
    first_failure: int | None
    duration_s: float
    message: str = ""
    repro: str | None = None

    @property
    def caught(self) -> bool:
        """The check failed (or errored): the bug was seen."""
        return self.verdict in (Verdict.FAIL, Verdict.ERROR)

    @property
    def status(self) -> str:
        """killed | mislocalised | survived | not-run."""
        if self.caught:
            return "killed" if self.fault == self.expected_fault else "mislocalised"
        if self.verdict == Verdict.PASS:
            return "survived"
        return "not-run"  # skip (adapter unavailable) or interrupted


def row_from_result(result: CheckResult, expected: Fault) -> MutantRow:
    """The kill-matrix row of one mutant check (run with ``shrink=False``)."""
    caught = result.verdict in (Verdict.FAIL, Verdict.ERROR)
    head = result.message.split("\n  repro:")[0]
    return MutantRow(
        identity=result.identity,
        dtype=result.dtype,
        verdict=str(result.verdict),
        fault=str(result.fault),
        expected_fault=str(expected),
        examples=result.examples,
        # Hypothesis replays the failing example once to report it (shrinking is off).
        first_failure=max(result.examples - 1, 1) if caught and result.examples else None,
        duration_s=round(result.duration_s, 4),
        message=head,
        repro=result.repro,
    )


STATUS_ORDER = ("survived", "mislocalised", "not-run", "killed")


def _combine(statuses: Iterable[str]) -> str:
    seen = set(statuses)
    for status in STATUS_ORDER:
        if status in seen:
            return status
    return "n/a"


@dataclass
class MutantReport:
    """What the self-test found for one mutant."""

    name: str
    description: str
    rule: str
    framework: str
    expected_fault: str
    targets: list[str]
    dtypes: list[str]
    control: bool = False
    skipped: str = ""
    rows: list[MutantRow] = field(default_factory=list)

    @property
    def status(self) -> str:
        """killed | survived | mislocalised | not-run | skipped (framework not installed)."""
        return "skipped" if self.skipped else _combine(r.status for r in self.rows)

    def dtype_status(self, dtype: str) -> str:
        """The status over the targets in one dtype ("n/a" where the mutant does not apply)."""
        if dtype not in self.dtypes:
            return "n/a"
        if self.skipped:
            return "skipped"
        return _combine(r.status for r in self.rows if r.dtype == dtype)

    def first_failure(self, dtype: str) -> int | None:
        """The most examples any target needed in ``dtype`` until its first failure."""
        values = [r.first_failure for r in self.rows if r.dtype == dtype and r.first_failure]
        return max(values) if values else None

    def faults(self, dtype: str) -> list[str]:
        """The faults reported in ``dtype`` (distinct, in target order)."""
        return list(dict.fromkeys(r.fault for r in self.rows if r.dtype == dtype and r.caught))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, with the derived status fields."""
        d = asdict(self)
        d["status"] = self.status
        d["by_dtype"] = {
            dt: {
                "status": self.dtype_status(dt),
                "first_failure": self.first_failure(dt),
                "faults": self.faults(dt),
            }
            for dt in DTYPES
        }
        for row, rd in zip(self.rows, d["rows"], strict=True):
            rd["status"] = row.status
        return d


@dataclass
class SelftestReport:
    """The kill matrix and the correct adapters' verdicts."""

    mutants: list[MutantReport]
    correct: list[CheckResult]
    examples: int
    correct_examples: int
    seed: int
    correct_adapters: list[str]
    unavailable: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    duration_s: float = 0.0

    @property
    def failures(self) -> list[str]:
        """One line per problem: a surviving or mislocalised mutant, a failing correct check."""
        out = [f"mutant {m.name}: {m.status}" for m in self.mutants if m.status not in ("killed", "skipped")]
        out += [f"correct adapter {r.id}: {r.verdict} ({r.fault})" for r in self.correct if not r.ok]
        if self.interrupted:
            out.append("interrupted: some checks did not run")
        return out

    @property
    def ok(self) -> bool:
        """Every mutant killed (or skipped: framework missing) and every correct check passed."""
        return not self.failures

    def summary(self) -> dict[str, Any]:
        """Counts by status."""
        counts = {s: sum(1 for m in self.mutants if m.status == s) for s in (*STATUS_ORDER, "skipped")}
        return {
            "mutants": len(self.mutants),
            **counts,
            "mutant_checks": sum(len(m.rows) for m in self.mutants),
            "correct_checks": len(self.correct),
            "correct_passed": sum(1 for r in self.correct if r.verdict == Verdict.PASS),
            "correct_failed": sum(1 for r in self.correct if not r.ok),
            "correct_skipped": sum(1 for r in self.correct if r.verdict == Verdict.SKIP),
            "ok": self.ok,
        }

    def to_dict(self) -> dict[str, Any]:
        """The whole report as JSON-able data."""
        return {
            "kind": "gradoracle-selftest",
            "version": 1,
            "code": code_fingerprint(),
            "settings": {
                "examples": self.examples,
                "correct_examples": self.correct_examples,
                "seed": self.seed,
                "shrink_mutants": False,
                "note": "first_failure = examples drawn until the first failing one (1-based)",
            },
            "summary": self.summary(),
            "failures": self.failures,
            "correct_adapters": self.correct_adapters,
            "unavailable": self.unavailable,
            "interrupted": self.interrupted,
            "duration_s": round(self.duration_s, 2),
            "versions": _versions(),
            "mutants": [m.to_dict() for m in self.mutants],
            "correct": [r.to_dict() for r in self.correct],
        }


def select_mutants(names: Sequence[str] | None) -> list[Any]:
    """The named mutants (controls allowed), or the whole default catalogue."""
    from gradoracle.selftest.mutants import all_mutants, get_mutant

    if not names:
        return all_mutants()
    return [get_mutant(n) for n in dict.fromkeys(names)]


def mutant_settings(examples: int = 30, seed: int = 0) -> CheckSettings:
    """The settings mutants run with: the defaults, ``examples`` and ``seed``, no shrinking."""
    return CheckSettings(examples=examples, seed=seed, shrink=False)


def run_selftest(
    mutants: Sequence[Any] | None = None,
    examples: int = 30,
    seed: int = 0,
    correct_adapters: Sequence[str] = DEFAULT_CORRECT_ADAPTERS,
    correct_examples: int | None = None,
    identities: Sequence[str] | None = None,
    dtypes: Sequence[str] = DTYPES,
    jobs: int = 1,
    on_start: Callback | None = None,
    on_result: Callback | None = None,
) -> SelftestReport:
    """Run the mutants on their targets and the correct adapters on every identity.

    ``examples`` is the per-check example budget of the mutant checks;
    ``correct_examples`` (default: the same) that of the correct adapters.  A mutant
    whose framework is not installed is reported as skipped; so is a correct adapter
    that is not available (listed in ``unavailable``).
    """
    from gradoracle.adapters import load_adapter
    from gradoracle.identities import select_identities
    from gradoracle.matrix import CheckTask, plan_tasks, run_matrix

    start = time.perf_counter()
    chosen = list(mutants) if mutants is not None else select_mutants(None)
    reports: list[MutantReport] = []
    tasks: list[CheckTask] = []
    owners: list[tuple[MutantReport, Fault]] = []
    for m in chosen:
        report = MutantReport(
            m.name,
            m.description,
            m.rule,
            m.framework,
            str(m.expected_fault),
            list(m.targets),
            [d for d in m.dtypes if d in dtypes],
            m.control,
        )
        ok, why = m.available()
        if not ok:
            report.skipped = why
        else:
            for target in m.targets:
                ident = get_identity(target)
                for dtype in report.dtypes:
                    tasks.append(CheckTask(ident.name, ident.source, m.spec, m.adapter_name, dtype))
                    owners.append((report, m.expected_fault))
        reports.append(report)

    outcome = run_matrix(tasks, mutant_settings(examples, seed), jobs, on_start, on_result)
    for result, (report, expected) in zip(outcome.results, owners, strict=True):
        report.rows.append(row_from_result(result, expected))

    unavailable: dict[str, str] = {}
    pairs: list[tuple[str, str]] = []
    for spec in correct_adapters:
        adapter = load_adapter(spec)
        ok, why = adapter.available()
        if ok:
            pairs.append((spec, adapter.name))
        else:
            unavailable[spec] = why
    correct: list[CheckResult] = []
    interrupted = outcome.interrupted
    if pairs and not interrupted:
        n = correct_examples or examples
        plan = plan_tasks(select_identities(list(identities or [])), pairs, dtypes)
        correct_outcome = run_matrix(plan, CheckSettings(examples=n, seed=seed), jobs, on_start, on_result)
        correct = correct_outcome.results
        interrupted = correct_outcome.interrupted
    return SelftestReport(
        mutants=reports,
        correct=correct,
        examples=examples,
        correct_examples=correct_examples or examples,
        seed=seed,
        correct_adapters=list(correct_adapters),
        unavailable=unavailable,
        interrupted=interrupted,
        duration_s=time.perf_counter() - start,
    )


_MARK = {
    "killed": "killed",
    "survived": "**SURVIVED**",
    "mislocalised": "**MISLOCALISED**",
    "not-run": "not run",
    "skipped": "skipped",
    "n/a": "-",
}


def kill_cell(m: MutantReport, dtype: str) -> str:
    """One cell of the kill matrix: status, examples to first failure, faults reported."""
    status = m.dtype_status(dtype)
    if status in ("n/a", "skipped", "not-run"):
        return _MARK[status]
    faults = "/".join(m.faults(dtype)) or "-"
    first = m.first_failure(dtype)
    return f"{_MARK[status]} ({first if first else '-'} ex, {faults})"


def selftest_markdown(report: SelftestReport) -> str:
    """The kill matrix and the correct adapters' verdicts as Markdown."""
    s = report.summary()
    verdict = "PASS" if report.ok else "FAIL"
    lines = [
        "# gradoracle selftest",
        "",
        f"**{verdict}**: {s['killed']} of {s['mutants']} mutants killed with the expected localisation "
        f"({s['survived']} survived, {s['mislocalised']} mislocalised, {s['skipped']} skipped); "
        f"correct adapters: {s['correct_passed']} of {s['correct_checks']} checks passed "
        f"({s['correct_failed']} failed, {s['correct_skipped']} skipped).",
        "",
        f"Mutant checks: {report.examples} examples per check at most, seed {report.seed}, shrinking off "
        "(each cell: status, the most examples any target needed until its first failure, the fault "
        f"reported).  Correct adapters: {report.correct_examples} examples per check.  "
        f"Run time {report.duration_s:.0f} s.",
        "",
        "## Kill matrix",
        "",
    ]
    rows = [
        (
            f"`{m.name}`",
            m.framework,
            m.rule.removeprefix("notes:"),
            m.expected_fault,
            kill_cell(m, "float64"),
            kill_cell(m, "float32"),
            m.description,
        )
        for m in report.mutants
    ]
    lines += _md_table(("mutant", "adapter", "rule", "expected", "float64", "float32", "bug"), rows)
    lines += ["", "## Per target", ""]
    detail = [
        (f"`{m.name}`", r.identity, r.dtype, r.verdict, r.fault, r.first_failure or "-", _MARK[r.status])
        for m in report.mutants
        for r in m.rows
    ]
    lines += _md_table(("mutant", "identity", "dtype", "verdict", "fault", "first failure", "status"), detail)
    lines += ["", "## Correct adapters", ""]
    if report.unavailable:
        lines += [
            f"Not available (not run): {', '.join(f'{k} ({v})' for k, v in report.unavailable.items())}",
            "",
        ]
    groups: dict[tuple[str, str], list[CheckResult]] = {}
    for r in report.correct:
        groups.setdefault((r.adapter, r.dtype), []).append(r)
    crows = []
    for (adapter, dtype), results in groups.items():
        bad = [r.identity for r in results if not r.ok]
        crows.append(
            (
                adapter,
                dtype,
                f"{sum(r.verdict == Verdict.PASS for r in results)}/{len(results)}",
                _fmt(max((r.max_ratio() for r in results), default=0.0)),
                ", ".join(bad) or "-",
            )
        )
    lines += _md_table(("adapter", "dtype", "passed", "max error/tolerance", "failed"), crows)
    if report.failures:
        lines += ["", "## Problems", "", *(f"- {f}" for f in report.failures)]
    return "\n".join(lines) + "\n"


def write_selftest(report: SelftestReport, out: Path) -> list[Path]:
    """Write ``selftest.json`` and ``selftest.md`` atomically into ``out``."""
    out = Path(out)
    return [
        _write(out / SELFTEST_FILES[0], json.dumps(report.to_dict(), indent=2, default=str) + "\n"),
        _write(out / SELFTEST_FILES[1], selftest_markdown(report)),
    ]


# ======================================================================================
# False-positive campaign
# ======================================================================================

BINS_PER_DECADE = 20
FP_KINDS: tuple[str, ...] = ("all", "forward", "analytic", "fd", "oracle")


@dataclass
class RatioHistogram:
    """Counts of error/tolerance ratios in log bins of 1/20 decade (plus exact zeros and the max)."""

    counts: dict[int, int] = field(default_factory=dict)
    zeros: int = 0
    total: int = 0
    max: float = 0.0

    def add(self, ratio: float) -> None:
        """Record one ratio (bin ``floor(20 log10 r)``)."""
        self.total += 1
        if not ratio > 0:
            self.zeros += 1
            return
        self.max = max(self.max, ratio)
        b = math.floor(math.log10(ratio) * BINS_PER_DECADE) if math.isfinite(ratio) else 10**6
        self.counts[b] = self.counts.get(b, 0) + 1

    def merge(self, other: RatioHistogram) -> None:
        """Add another histogram's counts into this one."""
        for b, n in other.counts.items():
            self.counts[b] = self.counts.get(b, 0) + n
        self.zeros += other.zeros
        self.total += other.total
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float:
        """An upper bound of the ``q``-quantile: the upper edge of its bin (0 if it is a zero)."""
        if self.total == 0:
            return 0.0
        rank = q * self.total
        seen = float(self.zeros)
        if rank <= seen:
            return 0.0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return min(10 ** ((b + 1) / BINS_PER_DECADE), self.max)
        return self.max

    def decades(self) -> dict[int, int]:
        """Counts per decade: ``{d: count of ratios in [10^d, 10^(d+1))}``."""
        out: dict[int, int] = {}
        for b, n in self.counts.items():
            d = b // BINS_PER_DECADE
            out[d] = out.get(d, 0) + n
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (bin keys as strings)."""
        return {
            "counts": {str(k): v for k, v in sorted(self.counts.items())},
            "zeros": self.zeros,
            "total": self.total,
            "max": self.max,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RatioHistogram:
        """Inverse of :meth:`to_dict`."""
        return cls({int(k): int(v) for k, v in d.get("counts", {}).items()}, d["zeros"], d["total"], d["max"])


@dataclass(frozen=True)
class FPUnit:
    """A chunk of the campaign: ``size`` examples of one identity x adapter x dtype."""

    adapter: str
    dtype: str
    identity: str
    seed: int
    chunk: int
    size: int
    code: str = ""

    @property
    def key(self) -> str:
        """Identifies the unit in the parts file (resumption skips keys already there)."""
        return f"{self.adapter}|{self.dtype}|{self.identity}|{self.seed}|{self.chunk}|{self.size}|{self.code}"

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
) -> list[FPUnit]:
    """Units covering ``examples_per_check`` examples per identity x adapter x dtype.

    The examples are split evenly across ``seeds``, each share cut into chunks of at
    most ``chunk``.  Units come chunk-major (every check's first chunk, then every
    second chunk, ...), so a run stopped early leaves every check with similar counts.
    """
    if examples_per_check < 1 or chunk < 1 or not seeds:
        raise ValueError("examples_per_check and chunk must be >= 1 and at least one seed given")
    per_seed = [
        examples_per_check // len(seeds) + (i < examples_per_check % len(seeds)) for i in range(len(seeds))
    ]
    layers: list[list[FPUnit]] = []
    for seed, total in zip(seeds, per_seed, strict=True):
        for c in range(math.ceil(total / chunk)):
            size = min(chunk, total - c * chunk)
            while len(layers) <= c:
                layers.append([])
            layers[c].extend(
                FPUnit(a, d, i, seed, c, size, code_fingerprint(adapter_modules(a)))
                for a in adapters
                for d in dtypes
                for i in identities
            )
    return [u for layer in layers for u in layer]


def run_fp_unit(unit: FPUnit) -> dict[str, Any]:
    """Evaluate ``unit.size`` Hypothesis-drawn examples; histogram every error/tolerance ratio."""
    from gradoracle.adapters import load_adapter
    from hypothesis import HealthCheck, Phase, given
    from hypothesis import seed as hypothesis_seed
    from hypothesis import settings as hypothesis_settings

    start = time.perf_counter()
    ident = get_identity(unit.identity)
    adapter = load_adapter(unit.adapter)
    code = code_fingerprint(adapter_modules(unit.adapter))  # now: the code just imported
    settings = CheckSettings()
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
        outcome = evaluate_example(ident, adapter, unit.dtype, example, settings)
        state["examples"] += 1
        state["skipped_directions"] += outcome.skipped_directions
        per_kind: dict[str, float] = {}
        for c in outcome.comparisons:
            per_kind[c.kind] = max(per_kind.get(c.kind, 0.0), c.ratio)
        for kind, ratio in per_kind.items():
            hists[kind].add(ratio)
        hists["all"].add(max(per_kind.values(), default=0.0))
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


def _read_parts(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    parts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            parts.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill mid-write: that unit simply reruns
    return parts


def _append_part(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line with a single ``write`` on an ``O_APPEND`` descriptor.

    Campaigns running at the same time can share a parts file: their lines never interleave.
    """
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(record, default=str) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        while written < len(data):  # not expected for regular files; finish the line anyway
            written += os.write(fd, data[written:])
    finally:
        os.close(fd)


@dataclass
class FPCampaignReport:
    """The aggregated false-positive campaign."""

    parts: list[dict[str, Any]]
    planned_units: int = 0
    complete: bool = True
    duration_s: float = 0.0
    stale_units: int = 0
    code: str = ""
    stale: list[dict[str, Any]] = field(default_factory=list)

    def other_code(self) -> list[dict[str, Any]]:
        """Units computed by other code, summarised per (adapter, code, dtype): kept, not mixed in."""
        groups: dict[tuple[str, str, str], dict[str, Any]] = {}
        for p in self.stale:
            key = (p.get("adapter_name", p["adapter"]), str(p.get("code_at_run")), p["dtype"])
            g = groups.setdefault(
                key,
                {
                    "adapter": key[0],
                    "code": key[1],
                    "dtype": key[2],
                    "examples": 0,
                    "failures": 0,
                    "max_ratio": 0.0,
                },
            )
            g["examples"] += int(p["examples"])
            g["failures"] += int(p["failures"])
            g["max_ratio"] = max(g["max_ratio"], float(p["histograms"]["all"]["max"]))
            g["checks"] = len({q["identity"] for q in self.stale if q["dtype"] == key[2]})
        return list(groups.values())

    @property
    def examples(self) -> int:
        """Examples evaluated in total (an example repeated by another unit counts twice)."""
        return sum(int(p["examples"]) for p in self.parts)

    def _distinct(self) -> dict[tuple[str, str, str], tuple[int, int]]:
        """Per (identity, adapter, dtype): distinct examples and distinct failing examples."""
        seen: dict[tuple[str, str, str], set[bytes]] = {}
        failing: dict[tuple[str, str, str], set[str]] = {}
        for p in self.parts:
            key = (p["identity"], p["adapter_name"], p["dtype"])
            raw = base64.b64decode(p.get("digests", ""))
            seen.setdefault(key, set()).update(raw[i : i + 6] for i in range(0, len(raw), 6))
            failing.setdefault(key, set()).update(p.get("failing_digests", []))
        return {k: (len(v), len(failing[k])) for k, v in seen.items()}

    @property
    def false_failures(self) -> int:
        """Examples a correct adapter failed (each one is a false positive)."""
        return sum(int(p["failures"]) for p in self.parts)

    def histograms(self, dtype: str, adapter: str | None = None) -> dict[str, RatioHistogram]:
        """Merged histograms per kind for one dtype (and optionally one adapter)."""
        out = {k: RatioHistogram() for k in FP_KINDS}
        for p in self.parts:
            if p["dtype"] == dtype and adapter in (None, p["adapter_name"]):
                for k, h in p["histograms"].items():
                    out[k].merge(RatioHistogram.from_dict(h))
        return out

    def per_check(self) -> list[dict[str, Any]]:
        """Examples, failures and the max ratio per identity x adapter x dtype."""
        acc: dict[tuple[str, str, str], dict[str, Any]] = {}
        for p in self.parts:
            key = (p["identity"], p["adapter_name"], p["dtype"])
            row = acc.setdefault(
                key,
                {
                    "identity": key[0],
                    "adapter": key[1],
                    "dtype": key[2],
                    "examples": 0,
                    "failures": 0,
                    "max_ratio": 0.0,
                },
            )
            row["examples"] += p["examples"]
            row["failures"] += p["failures"]
            row["max_ratio"] = max(row["max_ratio"], p["histograms"]["all"]["max"])
        for key, (distinct, distinct_failing) in self._distinct().items():
            acc[key]["distinct"] = distinct
            acc[key]["distinct_failures"] = distinct_failing
        return list(acc.values())

    def dtypes(self) -> list[str]:
        """The dtypes present, float64 first."""
        present = {p["dtype"] for p in self.parts}
        return [d for d in DTYPES if d in present] + sorted(present - set(DTYPES))

    def adapters(self) -> list[str]:
        """The adapter names present."""
        return list(dict.fromkeys(p["adapter_name"] for p in self.parts))

    def distribution(self, dtype: str, adapter: str | None = None) -> dict[str, Any]:
        """Per kind: count, zeros, max, median, p99, p99.9 and counts per decade."""
        out: dict[str, Any] = {}
        for kind, h in self.histograms(dtype, adapter).items():
            out[kind] = {
                "count": h.total,
                "zeros": h.zeros,
                "max": h.max,
                "p50": h.quantile(0.5),
                "p99": h.quantile(0.99),
                "p999": h.quantile(0.999),
                "decades": {f"1e{d}": n for d, n in h.decades().items()},
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything, aggregated (not the raw histograms of every unit)."""
        checks = self.per_check()
        return {
            "kind": "gradoracle-fp-campaign",
            "version": 1,
            "code": self.code,
            "examples": self.examples,
            "distinct_examples": sum(c["distinct"] for c in checks),
            "false_failures": self.false_failures,
            "distinct_false_failures": sum(c["distinct_failures"] for c in checks),
            "units": len(self.parts),
            "units_other_code": self.stale_units,
            "planned_units": self.planned_units,
            "complete": self.complete,
            "duration_s": round(self.duration_s, 1),
            "examples_per_check": {
                "min": min((c["examples"] for c in checks), default=0),
                "max": max((c["examples"] for c in checks), default=0),
                "distinct_min": min((c["distinct"] for c in checks), default=0),
                "distinct_max": max((c["distinct"] for c in checks), default=0),
            },
            "seeds": sorted({int(p["seed"]) for p in self.parts}),
            "versions": _versions(),
            "distribution": {d: self.distribution(d) for d in self.dtypes()},
            "distribution_by_adapter": {
                a: {d: self.distribution(d, a)["all"] for d in self.dtypes()} for a in self.adapters()
            },
            "per_check": checks,
            "failure_details": [f for p in self.parts for f in p.get("failure_details", [])][:50],
            "other_code": self.other_code(),
        }


def fp_markdown(report: FPCampaignReport) -> str:
    """The campaign's summary, error/tolerance distribution per dtype and per-check counts."""
    d = report.to_dict()
    stale = d["units_other_code"]
    stale_note = f"; {stale} units computed by other code versions listed apart" if stale else ""
    lines = [
        "# gradoracle false-positive campaign",
        "",
        f"**{d['false_failures']} false failures ({d['distinct_false_failures']} distinct) in "
        f"{d['examples']:,} examples ({d['distinct_examples']:,} distinct)** on correct adapters "
        f"({d['units']} units"
        f"{f'; the last run planned {p} and ' if (p := d['planned_units']) else ''}"
        f"{('completed them' if d['complete'] else 'stopped early') if d['planned_units'] else ''}; "
        f"{d['examples_per_check']['min']:,} to {d['examples_per_check']['max']:,} examples "
        f"({d['examples_per_check']['distinct_min']:,} to {d['examples_per_check']['distinct_max']:,} "
        f"distinct) per identity x adapter x dtype; seeds {d['seeds']}; code: {d['code']}"
        f"{stale_note}).",
        "",
        "An example Hypothesis draws twice within a unit is evaluated once; one drawn again by another "
        "unit is evaluated again and counted again ('distinct' counts each once).",
        "",
        "Each example is one call of `gradoracle.runner.evaluate_example` at the default settings; "
        "the ratio is "
        "error / tolerance of a comparison (a check fails above 1).  'all' is the worst comparison of "
        "the example.",
        "",
        "## Error/tolerance per dtype",
        "",
    ]
    rows = []
    for dtype, kinds in d["distribution"].items():
        for kind in FP_KINDS:
            s = kinds[kind]
            rows.append(
                (
                    dtype,
                    kind,
                    f"{s['count']:,}",
                    _fmt(s["max"], 3),
                    _fmt(s["p999"]),
                    _fmt(s["p99"]),
                    _fmt(s["p50"]),
                    s["zeros"],
                )
            )
    lines += _md_table(
        ("dtype", "comparison", "count", "max", "p99.9 <=", "p99 <=", "median <=", "exact 0"), rows
    )
    lines += ["", "## Histogram by decade (worst comparison per example)", ""]
    decades = sorted(
        {int(k[2:]) for kinds in d["distribution"].values() for k in kinds["all"]["decades"]}, reverse=True
    )
    header = ["error/tolerance in", *d["distribution"]]
    hrows = []
    for dec in decades:
        hrows.append(
            (
                f"[1e{dec}, 1e{dec + 1})",
                *(f"{kinds['all']['decades'].get(f'1e{dec}', 0):,}" for kinds in d["distribution"].values()),
            )
        )
    hrows.append(("exactly 0", *(f"{kinds['all']['zeros']:,}" for kinds in d["distribution"].values())))
    lines += _md_table(header, hrows)
    lines += ["", "## Per adapter", ""]
    arows = [
        (a, dt, f"{s['count']:,}", _fmt(s["max"], 3), _fmt(s["p999"]))
        for a, by in d["distribution_by_adapter"].items()
        for dt, s in by.items()
    ]
    lines += _md_table(("adapter", "dtype", "examples", "max", "p99.9 <="), arows)
    lines += ["", "## Per identity x adapter x dtype", ""]
    crows = [
        (
            c["identity"],
            c["adapter"],
            c["dtype"],
            f"{c['examples']:,}",
            f"{c['distinct']:,}",
            c["failures"],
            _fmt(c["max_ratio"], 3),
        )
        for c in d["per_check"]
    ]
    lines += _md_table(
        ("identity", "adapter", "dtype", "examples", "distinct", "false failures", "max error/tolerance"),
        crows,
    )
    if d["other_code"]:
        lines += [
            "",
            "## Units computed by other code versions (not included above)",
            "",
            "Units run with another version of the runner, identities, tolerances or adapter source "
            "(another fingerprint) than the one reported above; rerun the campaign command to "
            "recompute them with the code in the tree.",
            "",
        ]
        orows = [
            (
                o["adapter"],
                o["code"],
                o["dtype"],
                f"{o['examples']:,}",
                o["failures"],
                _fmt(o["max_ratio"], 3),
            )
            for o in d["other_code"]
        ]
        lines += _md_table(
            ("adapter", "code", "dtype", "examples", "false failures", "max error/tolerance"), orows
        )
    if d["failure_details"]:
        lines += ["", "## False failures (first ones)", ""]
        for f in d["failure_details"][:20]:
            lines.append(
                f"- {f['identity']} / {f['adapter']} / {f['dtype']}: fault {f['fault']}, {f['kind']} on "
                f"{f['input']!r}, ratio {_fmt(f['ratio'], 3)}, shapes {f['shapes']}, params {f['params']}, "
                f"example seed {f['example_seed']} ({f['crash'] or ''})"
            )
    return "\n".join(lines) + "\n"


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
    parts_path = out / FP_PARTS
    if fresh and parts_path.exists():
        parts_path.unlink()
    done_keys = {p["key"] for p in _read_parts(parts_path)}
    todo = [u for u in units if u.key not in done_keys]
    start = time.perf_counter()
    counter = {"done": len(units) - len(todo)}

    def on_done(unit: FPUnit, record: dict[str, Any]) -> None:
        _append_part(parts_path, record)
        counter["done"] += 1
        if on_unit is not None:
            on_unit(unit, record, counter["done"], len(units))

    def should_stop() -> bool:
        return time_budget_s is not None and time.perf_counter() - start > time_budget_s

    complete = False
    try:
        complete = _spawn_pool(run_fp_unit, todo, jobs, on_done, should_stop)
    except KeyboardInterrupt:
        complete = False
    return aggregate_fp(out, len(units), complete, time.perf_counter() - start)


# ======================================================================================
# Detection threshold
# ======================================================================================

#: The eps grid: 10^(k/4) from 1e-16 to 1e-1.
GRID: tuple[float, ...] = tuple(float(10.0 ** (k / 4)) for k in range(-64, -3))
CATCH_TARGET = 0.99
PERTURBATIONS: tuple[str, ...] = ("scale", "noise")
TOOLS: tuple[str, ...] = ("gradoracle", "gradoracle-1ex", "gradcheck", "gradcheck-tuned", "check_grads")

#: torch.autograd.gradcheck as shipped (torch 2.x defaults).
GRADCHECK_DEFAULTS: dict[str, float] = {"eps": 1e-6, "atol": 1e-5, "rtol": 1e-3}
#: gradcheck with float32 settings tuned by hand (float32 only): step 1e-3 (near the float32
#: central-difference optimum) and the tightest tolerances tried that raised no false failure
#: on 2,800 correct float32 examples (100 per identity); atol 1e-4 instead raised 3.8%.
GRADCHECK_TUNED_FLOAT32: dict[str, float] = {"eps": 1e-3, "atol": 1e-3, "rtol": 1e-3}
#: jax.test_util.check_grads as called (order 1, reverse mode, JAX's default step and tolerances).
CHECK_GRADS_SETTINGS: dict[str, Any] = {
    "order": 1,
    "modes": ["rev"],
    "eps": 1e-4,
    "atol_rtol": {"float32": 2e-3, "float64": 1e-5},
}

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


def perturb(g: np.ndarray, eps: float, kind: str, noise: np.ndarray | None = None) -> np.ndarray:
    """``g (1 + eps)`` (scale) or ``g + eps ||g||_2 n / ||n||_2`` (noise), computed in float64."""
    g64 = np.asarray(g, dtype=np.float64)
    if eps == 0:
        return np.array(g, copy=True)
    if kind == "scale":
        out = g64 * (1.0 + eps)
    elif kind == "noise":
        n = np.asarray(noise, dtype=np.float64) if noise is not None else np.zeros_like(g64)
        nn = float(np.linalg.norm(n))
        out = g64 + (eps * float(np.linalg.norm(g64)) / nn) * n if nn > 0 else g64
    else:
        raise ValueError(f"unknown perturbation {kind!r}; use one of {', '.join(PERTURBATIONS)}")
    return out.astype(np.asarray(g).dtype)


class PerturbedAdapter:
    """An adapter whose vjp gradients are perturbed by :func:`perturb`; forward unchanged.

    The noise of one vjp is seeded by ``seed`` and the bytes of its inputs and
    cotangent, so replaying an example perturbs it identically.
    """

    def __init__(self, base: Any, eps: float, kind: str = "scale", seed: int = 0) -> None:
        if kind not in PERTURBATIONS:
            raise ValueError(f"unknown perturbation {kind!r}; use one of {', '.join(PERTURBATIONS)}")
        self.base, self.eps, self.kind, self.seed = base, float(eps), kind, int(seed)
        self.name = f"{base.name}~{kind}{eps:.2g}"

    def __getattr__(self, attr: str) -> Any:
        if attr == "base":
            raise AttributeError(attr)
        return getattr(self.base, attr)

    def vjp(
        self, fn: Any, inputs: Mapping[str, np.ndarray], wrt: Sequence[str], cotangent: np.ndarray, dtype: str
    ) -> Any:
        """The base vjp with every gradient perturbed."""
        from gradoracle.adapters.base import VJPResult

        result = self.base.vjp(fn, inputs, wrt, cotangent, dtype)
        crc = zlib.crc32(np.asarray(cotangent, dtype=np.float64).tobytes())
        for name in sorted(inputs):
            crc = zlib.crc32(np.asarray(inputs[name], dtype=np.float64).tobytes(), crc)
        rng = np.random.default_rng([self.seed, crc])
        grads = {}
        for name in wrt:
            g = np.asarray(result.grads[name])
            grads[name] = perturb(g, self.eps, self.kind, rng.standard_normal(g.shape))
        return VJPResult(result.output, grads)


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


def _torch_function(
    ident: Identity, example: Any, dtype: str, eps: float, kind: str, noise_seed: int
) -> tuple[Any, list[Any]]:
    """The identity's forward (PyTorch ops) as a torch function whose backward is perturbed."""
    import torch
    from gradoracle.adapters.torch_adapter import TorchOps

    ops = TorchOps()
    tdtype = getattr(torch, dtype)
    names = list(ident.wrt)
    consts: dict[str, Any] = {
        n: torch.tensor(v, dtype=tdtype) for n, v in example.inputs.items() if n not in names
    }
    rng = np.random.default_rng(noise_seed)
    noise = {n: rng.standard_normal(np.shape(example.inputs[n])) for n in names}
    params = example.params

    class Perturbed(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, *xs: Any) -> Any:
            with torch.enable_grad():
                leaves = [x.detach().requires_grad_(True) for x in xs]
                out = ident.forward(ops, {**consts, **dict(zip(names, leaves, strict=True))}, params)
            ctx.leaves, ctx.out = leaves, out
            return out.detach().clone()

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            grads = torch.autograd.grad(ctx.out, ctx.leaves, g, retain_graph=True, allow_unused=True)
            out = []
            for name, leaf, gr in zip(names, ctx.leaves, grads, strict=True):
                arr = np.zeros(tuple(leaf.shape), dtype=dtype) if gr is None else gr.detach().numpy()
                out.append(torch.tensor(perturb(arr, eps, kind, noise[name]), dtype=tdtype))
            return tuple(out)

    args = [torch.tensor(example.inputs[n], dtype=tdtype, requires_grad=True) for n in names]
    return Perturbed.apply, args


def _gradcheck_caught(
    ident: Identity, example: Any, dtype: str, eps: float, kind: str, noise_seed: int, tool: str
) -> bool:
    """Whether ``torch.autograd.gradcheck`` rejects the perturbed function at ``example``."""
    import warnings

    import torch

    fn, args = _torch_function(ident, example, dtype, eps, kind, noise_seed)
    cfg = GRADCHECK_TUNED_FLOAT32 if tool == "gradcheck-tuned" else GRADCHECK_DEFAULTS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ok = torch.autograd.gradcheck(
            fn, tuple(args), eps=cfg["eps"], atol=cfg["atol"], rtol=cfg["rtol"], raise_exception=False
        )
    return not ok


def _check_grads_caught(
    ident: Identity, example: Any, dtype: str, eps: float, kind: str, noise_seed: int
) -> bool:
    """Whether ``jax.test_util.check_grads(order=1, modes=["rev"])`` rejects the perturbed function."""
    import contextlib

    import jax
    import jax.numpy as jnp
    from gradoracle.adapters.jax_adapter import JaxOps
    from jax.test_util import check_grads

    ops = JaxOps()
    names = list(ident.wrt)
    params = example.params
    rng = np.random.default_rng(noise_seed)
    noise = {n: rng.standard_normal(np.shape(example.inputs[n])) for n in names}
    scope = jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()
    with scope:
        consts: dict[str, Any] = {
            n: jnp.asarray(v, dtype=dtype) for n, v in example.inputs.items() if n not in names
        }

        def plain(*xs: Any) -> Any:
            return ident.forward(ops, {**consts, **dict(zip(names, xs, strict=True))}, params)

        @jax.custom_vjp
        def f(*xs: Any) -> Any:
            return plain(*xs)

        def fwd(*xs: Any) -> tuple[Any, Any]:
            return plain(*xs), xs

        def bwd(xs: Any, g: Any) -> tuple[Any, ...]:
            _, pullback = jax.vjp(plain, *xs)
            grads = pullback(g)
            if eps == 0:
                return tuple(grads)
            if kind == "scale":
                return tuple(gr * (1.0 + eps) for gr in grads)
            out = []
            for name, gr in zip(names, grads, strict=True):
                n = jnp.asarray(noise[name], dtype=gr.dtype)
                nn = jnp.linalg.norm(n)
                out.append(gr + jnp.where(nn > 0, eps * jnp.linalg.norm(gr) / nn, 0.0) * n)
            return tuple(out)

        f.defvjp(fwd, bwd)
        args = tuple(jnp.asarray(example.inputs[n], dtype=dtype) for n in names)
        try:
            check_grads(f, args, order=1, modes=["rev"])
        except AssertionError:
            return True
    return False


def _tool_available(tool: str) -> tuple[bool, str]:
    import importlib.util

    need = {"gradcheck": "torch", "gradcheck-tuned": "torch", "check_grads": "jax"}.get(tool)
    if need and importlib.util.find_spec(need) is None:
        return False, f"{need} is not installed"
    return True, ""


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
    parts_path = out / THRESHOLD_PARTS
    if fresh and parts_path.exists():
        parts_path.unlink()
    done_keys = {p["key"] for p in _read_parts(parts_path)}
    todo = [u for u in units if u.key not in done_keys]
    start = time.perf_counter()
    counter = {"done": len(units) - len(todo)}

    def on_done(unit: ThresholdUnit, record: dict[str, Any]) -> None:
        _append_part(parts_path, record)
        counter["done"] += 1
        if on_unit is not None:
            on_unit(unit, record, counter["done"], len(units))

    def should_stop() -> bool:
        return time_budget_s is not None and time.perf_counter() - start > time_budget_s

    complete = False
    try:
        complete = _spawn_pool(run_threshold_unit, todo, jobs, on_done, should_stop)
    except KeyboardInterrupt:
        complete = False
    return aggregate_thresholds(out, complete, time.perf_counter() - start)
