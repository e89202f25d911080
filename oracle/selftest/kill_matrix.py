"""The kill matrix: every mutant must be killed, every correct adapter must pass.

Every mutant of :mod:`gradoracle.selftest.mutants` runs on each of its target identities and
dtypes through the normal runner (:func:`gradoracle.matrix.run_matrix` ->
:func:`gradoracle.runner.check`) with the default settings except ``shrink=False``:
shrinking only makes the counterexample smaller (``CheckResult.first_failure`` is the
index of the first failing example either way).  A mutant is *killed* when every (target, dtype) fails
with the expected fault; *survived* when one passes; *mislocalised* when one fails with
another fault.  The correct adapters (NumPy engine, PyTorch, JAX when installed) run every
identity in every dtype with the default settings.  The result is written as
``selftest.json`` and ``selftest.md``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gradoracle.identities import get_identity
from gradoracle.results import CheckResult, Fault, Verdict
from gradoracle.runner import DTYPES, CheckSettings
from gradoracle.selftest.common import Callback, _fmt, _md_table, _versions, _write, code_fingerprint

#: The correct adapters of the default self-test, each with its default settings (JAX with
#: its default jit policy, as users run it).
DEFAULT_CORRECT_ADAPTERS: tuple[str, ...] = ("numpy", "torch", "jax")

SELFTEST_FILES = ("selftest.json", "selftest.md")


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
            return "killed" if self.fault in self.expected_fault.split("|") else "mislocalised"
        if self.verdict == Verdict.PASS:
            return "survived"
        return "not-run"  # skip (adapter unavailable) or interrupted


def row_from_result(result: CheckResult, expected: Fault | str) -> MutantRow:
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
        first_failure=result.first_failure if caught else None,
        duration_s=round(result.duration_s, 4),
        message=head,
        repro=result.repro,
    )


#: Kill-matrix rows of convention probes are named ``probe:<name>``.
PROBE_PREFIX = "probe:"


def row_from_probe(result: Any, expected: Fault, duration_s: float) -> MutantRow:
    """The kill-matrix row of one mutant on one convention probe (judged once, no examples)."""
    failed = result.verdict in ("fail", "error")
    verdict = {"fail": Verdict.FAIL, "error": Verdict.ERROR, "convention": Verdict.PASS}.get(
        result.verdict, Verdict.SKIP
    )
    return MutantRow(
        identity=PROBE_PREFIX + result.probe,
        dtype=result.dtype,
        verdict=str(verdict),
        fault=str(result.fault if result.verdict == "fail" else (Fault.ADAPTER if failed else Fault.NONE)),
        expected_fault=str(expected),
        examples=1,
        first_failure=1 if failed else None,
        duration_s=round(duration_s, 4),
        message=(result.outside or result.error or result.convention or ""),
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
    mode: str = "vjp"  # the mode it is killed in (vjp, jvp, hvp)
    parameter: str = ""  # a layer mutant's hyper-parameter (gradoracle.selftest.layer_parameters)

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
    #: the convention probes of the correct adapters (every value must be a valid convention)
    correct_probes: list[Any] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        """One line per problem: a surviving or mislocalised mutant, a failing correct check or probe."""
        out = [f"mutant {m.name}: {m.status}" for m in self.mutants if m.status not in ("killed", "skipped")]
        out += [f"correct adapter {r.id}: {r.verdict} ({r.fault})" for r in self.correct if not r.ok]
        out += [
            f"correct adapter {p.adapter} probe {p.probe} {p.dtype}: {p.verdict} ({p.outside or p.error})"
            for p in self.correct_probes
            if p.verdict in ("fail", "error")
        ]
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
            "correct_probes": len(self.correct_probes),
            "correct_probe_failures": sum(1 for p in self.correct_probes if p.verdict in ("fail", "error")),
            "ok": self.ok,
        }

    def parameters(self) -> dict[str, dict[str, list[str]]]:
        """Per layer hyper-parameter, its mutants by status: what proves the parameter is checked."""
        out: dict[str, dict[str, list[str]]] = {}
        for m in self.mutants:
            if m.parameter:
                out.setdefault(m.parameter, {}).setdefault(m.status, []).append(m.name)
        return out

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
            "parameters": self.parameters(),
            "correct": [r.to_dict() for r in self.correct],
            "correct_probes": [p.to_dict() for p in self.correct_probes],
        }


def select_mutants(names: Sequence[str] | None) -> list[Any]:
    """The named mutants (controls allowed), or the whole default catalogue."""
    from gradoracle.selftest.mutants import all_mutants, get_mutant

    if not names:
        return all_mutants()
    return [get_mutant(n) for n in dict.fromkeys(names)]


def mutant_settings(examples: int = 30, seed: int = 0) -> CheckSettings:
    """The settings mutants run with: the defaults, ``examples`` and ``seed``, no shrinking."""
    return CheckSettings(examples=examples, seed=seed, shrink=False, oracle_every=1)


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
    owners: list[tuple[MutantReport, str]] = []
    for m in chosen:
        report = MutantReport(
            m.name,
            m.description,
            m.rule,
            m.framework,
            m.expected_faults,
            list(m.targets),
            [d for d in m.dtypes if d in dtypes],
            m.control,
            mode=getattr(m, "mode", "vjp"),
            parameter=getattr(m, "parameter", ""),
        )
        ok, why = m.available()
        if not ok:
            report.skipped = why
        else:
            for target in m.targets:
                ident = get_identity(target)
                for dtype in report.dtypes:
                    tasks.append(
                        CheckTask(
                            ident.name, ident.source, m.spec, m.adapter_name, dtype, getattr(m, "mode", "vjp")
                        )
                    )
                    owners.append((report, m.expected_faults))
        reports.append(report)

    outcome = run_matrix(tasks, mutant_settings(examples, seed), jobs, on_start, on_result)
    for result, (report, expected) in zip(outcome.results, owners, strict=True):
        report.rows.append(row_from_result(result, expected))
    _run_mutant_probes(chosen, reports, dtypes)

    unavailable: dict[str, str] = {}
    pairs: list[tuple[str, Any]] = []
    for spec in correct_adapters:
        adapter = load_adapter(spec)
        ok, why = adapter.available()
        if ok:
            pairs.append((spec, adapter))  # every mode the adapter supports (vjp, jvp, hvp)
        else:
            unavailable[spec] = why
    correct: list[CheckResult] = []
    correct_probes: list[Any] = []
    interrupted = outcome.interrupted
    if pairs and not interrupted:
        from gradoracle.conventions import run_probes

        for spec, _ in pairs:
            correct_probes.extend(run_probes([load_adapter(spec)], dtypes))
        n = correct_examples or examples
        plan = plan_tasks(select_identities(list(identities or [])), pairs, dtypes)
        correct_outcome = run_matrix(
            plan, CheckSettings(examples=n, seed=seed, oracle_every=1), jobs, on_start, on_result
        )
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
        correct_probes=correct_probes,
    )


def _run_mutant_probes(chosen: Sequence[Any], reports: Sequence[MutantReport], dtypes: Sequence[str]) -> None:
    """Each mutant's convention probes, in every dtype it applies to (in this process: they are quick)."""
    from gradoracle.adapters import load_adapter
    from gradoracle.conventions import get_probe, run_probe

    for m, report in zip(chosen, reports, strict=True):
        names = getattr(m, "probes", ())
        if report.skipped or not names:
            continue
        report.targets = [*report.targets, *(PROBE_PREFIX + n for n in names)]
        adapter = load_adapter(m.spec)
        for name in names:
            for dtype in report.dtypes:
                begin = time.perf_counter()
                result = run_probe(get_probe(name), adapter, dtype, m.spec)
                report.rows.append(
                    row_from_probe(result, Fault.OUTSIDE_SUBDIFFERENTIAL, time.perf_counter() - begin)
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
            m.mode,
            m.expected_fault,
            kill_cell(m, "float64"),
            kill_cell(m, "float32"),
            m.description,
        )
        for m in report.mutants
    ]
    lines += _md_table(("mutant", "adapter", "rule", "mode", "expected", "float64", "float32", "bug"), rows)
    parameters = report.parameters()
    if parameters:
        lines += [
            "",
            "## Layer parameters",
            "",
            "Each layer mutant's bug shows only under its hyper-parameter (its gradient is right with the "
            "parameter off): a killed mutant proves the parameter is checked.",
            "",
        ]
        prows = []
        for name, by_status in parameters.items():
            killed = by_status.get("killed", [])
            frameworks = sorted({m.framework for m in report.mutants if m.name in killed})
            others = [
                f"{n} ({status})" for status, names in by_status.items() if status != "killed" for n in names
            ]
            prows.append(
                (
                    name,
                    ", ".join(f"`{n}`" for n in killed) or "-",
                    ", ".join(frameworks) or "-",
                    ", ".join(others) or "-",
                )
            )
        lines += _md_table(("parameter", "killed mutants", "adapters", "not killed"), prows)
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
    if report.correct_probes:
        pgroups: dict[tuple[str, str], list[Any]] = {}
        for p in report.correct_probes:
            pgroups.setdefault((p.adapter, p.dtype), []).append(p)
        prows = [
            (
                adapter,
                dtype,
                f"{sum(p.verdict == 'convention' for p in ps)}/{len(ps)}",
                ", ".join(p.probe for p in ps if p.verdict in ("fail", "error")) or "-",
            )
            for (adapter, dtype), ps in pgroups.items()
        ]
        lines += [
            "",
            "Convention probes of the correct adapters (every value must be a valid convention):",
            "",
        ]
        lines += _md_table(("adapter", "dtype", "valid conventions", "outside / error"), prows)
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
