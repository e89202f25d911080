"""Joining shard reports (``gradoracle merge``) into the report of the whole sweep.

Results are keyed by id (``identity-adapter-dtype``) and put in the canonical order of
:func:`gradoracle.matrix.result_sort_key`, so merging the N shards of ``--shard K/N`` gives
the same results, in the same order, as the unsharded run.  A check present in two
reports is kept once when both agree (or one of them is ``not-run``); two different
verdicts for one check are a :class:`MergeError`.  Convention probes are deduplicated
by (probe, adapter, dtype).  Known deviations are undone and, by the caller, applied
again to the union.

A merge never calls an incomplete or inconsistent set conforming: :attr:`Merged.problems`
lists, by kind, what is wrong with the set (see :data:`PROBLEM_KINDS`), and ``gradoracle
merge`` refuses (exit 2) unless a flag accepts that kind; the report then says which
problems were accepted (``run.merge``) and an incomplete set is ``incomplete``, not
``conform``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gradoracle.results import CheckResult, Verdict


class MergeError(ValueError):
    """Reports that cannot be merged (contradicting verdicts for one check)."""


#: Kinds of problem a set of reports can have, and what each means.
PROBLEM_KINDS: dict[str, str] = {
    "missing": "shards or planned checks are missing: the merged report would be partial",
    "duplicate": "a shard or a check is in more than one report",
    "mixed": "the reports come from different sweeps (seeds, settings, versions, shardings or plans)",
}


@dataclass(frozen=True)
class MergeProblem:
    """One thing wrong with the set of reports being merged."""

    kind: str  # a key of PROBLEM_KINDS
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "detail": self.detail}


@dataclass
class LoadedReport:
    """One input of a merge: where it came from and what :func:`load_report` returned."""

    name: str
    results: list[CheckResult]
    conventions: list[Any]
    meta: dict[str, Any]


@dataclass
class Merged:
    """The merged results, probes and run metadata, and what the merge noticed."""

    results: list[CheckResult] = field(default_factory=list)
    conventions: list[Any] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    problems: list[MergeProblem] = field(default_factory=list)

    def problem_kinds(self) -> list[str]:
        """The kinds of the problems found, in :data:`PROBLEM_KINDS` order."""
        found = {p.kind for p in self.problems}
        return [k for k in PROBLEM_KINDS if k in found]


def _union(values: Sequence[Sequence[Any]]) -> list[Any]:
    out: list[Any] = []
    for seq in values:
        for v in seq or ():
            if v not in out:
                out.append(v)
    return out


def _shard_problems(reports: Sequence[LoadedReport]) -> list[MergeProblem]:
    """Missing, repeated or mismatched ``--shard K/N`` slices."""
    shards = [r.meta.get("shard") for r in reports]
    if not any(shards):
        return []
    listing = ", ".join(f"{r.name}: {s or 'unsharded'}" for r, s in zip(reports, shards, strict=True))
    counts = {str(s).partition("/")[2] for s in shards if s}
    if len(counts) != 1 or not all(shards):
        return [MergeProblem("mixed", f"the reports come from different shardings ({listing})")]
    n = int(counts.pop())
    seen: dict[int, str] = {}
    problems: list[MergeProblem] = []
    for report, shard in zip(reports, shards, strict=True):
        k = int(str(shard).partition("/")[0])
        if k in seen:
            problems.append(
                MergeProblem("duplicate", f"shard {k}/{n} is given twice ({seen[k]} and {report.name})")
            )
        else:
            seen[k] = report.name
    missing = sorted(set(range(1, n + 1)) - set(seen))
    if missing:
        problems.append(
            MergeProblem("missing", f"shard(s) {', '.join(f'{k}/{n}' for k in missing)} of {n} missing")
        )
    return problems


def _differ(reports: Sequence[LoadedReport], what: str, value: Any) -> MergeProblem | None:
    """A ``mixed`` problem when ``value(report)`` is not the same for every report."""
    values = [value(r) for r in reports]
    if all(v == values[0] for v in values[1:]):
        return None
    shown = "; ".join(f"{r.name}: {_short(v)}" for r, v in zip(reports, values, strict=True))
    return MergeProblem("mixed", f"the reports were made with different {what} ({shown})")


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 120 else text[:117] + "..."


def _package_diff(reports: Sequence[LoadedReport]) -> MergeProblem | None:
    packages = [dict((r.meta.get("environment") or {}).get("packages") or {}) for r in reports]
    names = sorted({n for p in packages for n in p})
    differing = [n for n in names if len({str(p.get(n)) for p in packages}) > 1]
    if not differing:
        return None
    parts = []
    for n in differing:
        versions = ", ".join(f"{r.name}: {p.get(n)}" for r, p in zip(reports, packages, strict=True))
        parts.append(f"{n} ({versions})")
    return MergeProblem("mixed", f"the reports were made with different package versions: {'; '.join(parts)}")


def set_problems(reports: Sequence[LoadedReport], merged_count: int) -> list[MergeProblem]:
    """What is wrong with ``reports`` as one sweep (empty for the complete shards of one run)."""
    problems: list[MergeProblem] = []
    names = [r.name for r in reports]
    for name in dict.fromkeys(n for n in names if names.count(n) > 1):
        problems.append(MergeProblem("duplicate", f"{name} is given {names.count(name)} times"))
    checks: list[tuple[str, Any]] = [
        ("seeds", lambda r: r.meta.get("seed")),
        ("examples per check", lambda r: r.meta.get("examples")),
        ("check settings", lambda r: r.meta.get("settings")),
    ]
    sharded = any(r.meta.get("shard") for r in reports)
    if sharded:  # the slices of one sweep share its plan
        checks += [
            ("adapters", lambda r: r.meta.get("adapters")),
            ("identities", lambda r: r.meta.get("identities")),
            ("dtypes", lambda r: r.meta.get("dtypes")),
            ("planned checks", lambda r: r.meta.get("planned_checks")),
        ]
    for what, value in checks:
        problem = _differ(reports, what, value)
        if problem is not None:
            problems.append(problem)
    package_problem = _package_diff(reports)
    if package_problem is not None:
        problems.append(package_problem)
    problems += _shard_problems(reports)
    planned = _union([[r.meta.get("planned_checks")] for r in reports])
    if sharded and len(planned) == 1 and isinstance(planned[0], int) and planned[0] > merged_count:
        problems.append(
            MergeProblem("missing", f"{merged_count} of the {planned[0]} planned checks are in the reports")
        )
    return problems


def merge_reports(reports: Sequence[LoadedReport]) -> Merged:
    """Join ``reports`` (see the module docstring)."""
    from gradoracle.matrix import result_sort_key

    if not reports:
        raise MergeError("nothing to merge: give at least one report.json")
    merged = Merged()
    by_id: dict[str, tuple[CheckResult, str]] = {}
    for report in reports:
        for r in report.results:
            if r.id not in by_id:
                by_id[r.id] = (r, report.name)
                continue
            kept, origin = by_id[r.id]
            if kept.verdict == Verdict.NOT_RUN and r.verdict != Verdict.NOT_RUN:
                by_id[r.id] = (r, report.name)
            elif r.verdict != Verdict.NOT_RUN and kept.verdict != r.verdict:
                raise MergeError(
                    f"check {r.id} is {kept.verdict} in {origin} but {r.verdict} in {report.name}; "
                    "merge the shards of one sweep (same seed, examples and versions)"
                )
            elif r.verdict != Verdict.NOT_RUN:
                merged.problems.append(
                    MergeProblem("duplicate", f"check {r.id} is in both {origin} and {report.name}")
                )
    merged.results = sorted((r for r, _ in by_id.values()), key=result_sort_key)

    seen: set[tuple[str, str, str]] = set()
    for report in reports:
        for probe in report.conventions:
            key = (probe.probe, probe.adapter, probe.dtype)
            if key not in seen:
                seen.add(key)
                merged.conventions.append(probe)

    first = reports[0].meta
    merged.problems += set_problems(reports, len(merged.results))

    meta: dict[str, Any] = {
        k: v
        for k, v in first.items()
        if k
        not in (
            "shard",
            "jobs",
            "duration_s",
            "interrupted",
            "summary",
            "created",
            "known_deviations",
            "run_id",
        )
    }
    meta["adapters"] = _union([r.meta.get("adapters") or [] for r in reports])
    meta["identities"] = _union([r.meta.get("identities") or [] for r in reports])
    meta["dtypes"] = _union([r.meta.get("dtypes") or [] for r in reports])
    meta["shard"] = None
    meta["interrupted"] = any(bool(r.meta.get("interrupted")) for r in reports)
    meta["duration_s"] = sum(float(r.meta.get("duration_s") or 0.0) for r in reports)
    meta["merged_from"] = [
        {
            "file": r.name,
            "shard": r.meta.get("shard"),
            "checks": len(r.results),
            "created": r.meta.get("created"),
            "environment": r.meta.get("environment"),
        }
        for r in reports
    ]
    merged.meta = meta
    return merged


def deviation_entries(reports: Sequence[LoadedReport]) -> tuple[list[dict[str, Any]], list[str]]:
    """The known-deviation entries the reports were made with (union), and their files."""
    entries: list[dict[str, Any]] = []
    files: list[str] = []
    for r in reports:
        known: Mapping[str, Any] | None = r.meta.get("known_deviations")
        if not known:
            continue
        entries = _union([entries, list(known.get("entries") or [])])
        if known.get("file") and known["file"] not in files:
            files.append(str(known["file"]))
    return entries, files
