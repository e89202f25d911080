"""Known deviations in reports: apply them remembering what they hid, and undo them for merges.

:func:`gradoracle.deviations.apply_deviations` turns matched failures into ``xfail``.  A
report also keeps the verdict each one had (``deviation["original_verdict"]``), so
``gradoracle merge`` can undo the shards' matching and match the whole sweep at once:
an entry unmatched in one shard may match in another, and "stale" only makes sense
for the union.
"""

from __future__ import annotations

from collections.abc import Sequence

from gradoracle.deviations import Deviation, DeviationOutcome, apply_deviations
from gradoracle.results import CheckResult, Fault, Verdict


def apply_known_deviations(results: Sequence[CheckResult], entries: Sequence[Deviation]) -> DeviationOutcome:
    """:func:`apply_deviations`, recording each matched result's verdict before it became xfail."""
    before = {id(r): r.verdict for r in results}
    outcome = apply_deviations(results, entries)
    for r in results:
        if r.verdict == Verdict.XFAIL and r.deviation is not None and before[id(r)] != Verdict.XFAIL:
            r.deviation = {**r.deviation, "original_verdict": str(before[id(r)])}
    return outcome


def undo_known_deviations(results: Sequence[CheckResult]) -> None:
    """Give every ``xfail`` back the verdict it had before a deviation matched it (in place).

    Reports written without ``original_verdict`` (by another front-end) fall back on the
    runner's rule: a crash (adapter fault with no worst element) was an error, else a failure.
    """
    for r in results:
        if r.verdict != Verdict.XFAIL:
            continue
        original = (r.deviation or {}).get("original_verdict")
        if original in (Verdict.FAIL, Verdict.ERROR):
            r.verdict = Verdict(original)
        else:
            crashed = r.fault in (Fault.ADAPTER, Fault.NONE) and r.worst is None
            r.verdict = Verdict.ERROR if crashed else Verdict.FAIL
        r.deviation = None


def entries_from_dicts(items: Sequence[dict[str, object]]) -> list[Deviation]:
    """Deviation entries from a report's ``known_deviations.entries`` (duplicates dropped)."""
    out: list[Deviation] = []
    for item in items:
        dev = Deviation(
            identity=str(item["identity"]),
            adapter=str(item["adapter"]),
            reason=str(item.get("reason", "")),
            dtype=str(item.get("dtype", "*")),
            link=str(item.get("link", "") or ""),
        )
        if dev not in out:
            out.append(dev)
    return out
