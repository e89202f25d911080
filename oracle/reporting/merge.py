"""Joining shard reports (``gradoracle merge``) into the report of the whole sweep.

Results are keyed by id (``identity-adapter-dtype``) and put in the canonical order of
:func:`gradoracle.matrix.result_sort_key`, so merging the N shards of ``--shard K/N`` gives
the same results, in the same order, as the unsharded run.  A check present in two
reports is kept once when both agree (or one of them is ``not-run``); two different
verdicts for one check are a :class:`MergeError`.  Convention probes are deduplicated
by (probe, adapter, dtype).  Known deviations are undone and, by the caller, applied
again to the union.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gradoracle.results import CheckResult, Verdict


class MergeError(ValueError):
    """Reports that cannot be merged (contradicting verdicts for one check)."""


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


def _union(values: Sequence[Sequence[Any]]) -> list[Any]:
    out: list[Any] = []
    for seq in values:
        for v in seq or ():
            if v not in out:
                out.append(v)
    return out


def _shard_warnings(reports: Sequence[LoadedReport]) -> list[str]:
    shards = [r.meta.get("shard") for r in reports]
    if not any(shards):
        return []
    counts = {str(s).partition("/")[2] for s in shards if s}
    if len(counts) != 1 or not all(shards):
        return [f"the reports come from different shardings ({', '.join(str(s) for s in shards)})"]
    n = int(counts.pop())
    present = {int(str(s).partition("/")[0]) for s in shards}
    missing = sorted(set(range(1, n + 1)) - present)
    if missing:
        return [f"shard(s) {', '.join(f'{k}/{n}' for k in missing)} missing: the merged report is partial"]
    return []


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
                merged.warnings.append(f"check {r.id} is in both {origin} and {report.name}; kept the first")
    merged.results = sorted((r for r, _ in by_id.values()), key=result_sort_key)

    seen: set[tuple[str, str, str]] = set()
    for report in reports:
        for probe in report.conventions:
            key = (probe.probe, probe.adapter, probe.dtype)
            if key not in seen:
                seen.add(key)
                merged.conventions.append(probe)

    first = reports[0].meta
    for setting in ("seed", "examples"):
        values = _union([[r.meta.get(setting)] for r in reports])
        if len(values) > 1:
            merged.warnings.append(f"the reports were made with different {setting} values {values}")
    versions = _union([[(r.meta.get("environment") or {}).get("packages")] for r in reports])
    if len(versions) > 1:
        merged.warnings.append("the reports were made with different package versions (see run.merged_from)")
    merged.warnings += _shard_warnings(reports)
    planned = _union([[r.meta.get("planned_checks")] for r in reports])
    if len(planned) == 1 and isinstance(planned[0], int) and planned[0] > len(merged.results):
        merged.warnings.append(
            f"{len(merged.results)} of the {planned[0]} planned checks are in the merged report"
        )

    meta: dict[str, Any] = {
        k: v
        for k, v in first.items()
        if k not in ("shard", "jobs", "duration_s", "interrupted", "summary", "created", "known_deviations")
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
