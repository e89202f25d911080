"""The false-positive campaign's report: ratio histograms, aggregation and Markdown.

Every error/tolerance ratio of a correct adapter's comparisons goes into a log-histogram
(20 bins per decade) per dtype and kind; :class:`FPCampaignReport` aggregates the saved
units into ``fp_campaign.json`` and :func:`fp_markdown` into ``fp_campaign.md``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gradoracle.runner import DTYPES
from gradoracle.selftest.common import _fmt, _md_table, _versions

BINS_PER_DECADE = 20
#: Histograms per kind of comparison: ``analytic``, ``fd`` and ``oracle`` hold every mode's
#: (J v and H v against the closed form, finite differences, the oracle's self-test);
#: ``transpose`` is forward mode's ``u^T (J v) = (u^T J) v`` and ``methods`` second order's
#: reverse-over-reverse against forward-over-reverse.
FP_KINDS: tuple[str, ...] = ("all", "forward", "analytic", "fd", "oracle", "transpose", "methods")


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

    def _distinct(self) -> dict[tuple[str, str, str, str], tuple[int, int]]:
        """Per (identity, adapter, dtype, mode): distinct examples and distinct failing examples."""
        seen: dict[tuple[str, str, str, str], set[bytes]] = {}
        failing: dict[tuple[str, str, str, str], set[str]] = {}
        for p in self.parts:
            key = (p["identity"], p["adapter_name"], p["dtype"], _mode(p))
            raw = base64.b64decode(p.get("digests", ""))
            seen.setdefault(key, set()).update(raw[i : i + 6] for i in range(0, len(raw), 6))
            failing.setdefault(key, set()).update(p.get("failing_digests", []))
        return {k: (len(v), len(failing[k])) for k, v in seen.items()}

    @property
    def false_failures(self) -> int:
        """Examples a correct adapter failed (each one is a false positive)."""
        return sum(int(p["failures"]) for p in self.parts)

    def histograms(
        self, dtype: str, adapter: str | None = None, mode: str | None = None
    ) -> dict[str, RatioHistogram]:
        """Merged histograms per kind for one dtype (and optionally one adapter, one mode)."""
        out = {k: RatioHistogram() for k in FP_KINDS}
        for p in self.parts:
            if p["dtype"] == dtype and adapter in (None, p["adapter_name"]) and mode in (None, _mode(p)):
                for k, h in p["histograms"].items():
                    out[k].merge(RatioHistogram.from_dict(h))
        return out

    def per_check(self) -> list[dict[str, Any]]:
        """Examples, failures and the max ratio per identity x adapter x dtype x mode."""
        acc: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        for p in self.parts:
            key = (p["identity"], p["adapter_name"], p["dtype"], _mode(p))
            row = acc.setdefault(
                key,
                {
                    "identity": key[0],
                    "adapter": key[1],
                    "dtype": key[2],
                    "mode": key[3],
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

    def modes(self) -> list[str]:
        """The modes present, in report order (vjp, jvp, hvp)."""
        present = {_mode(p) for p in self.parts}
        return [m for m in ("vjp", "jvp", "hvp") if m in present] + sorted(present - {"vjp", "jvp", "hvp"})

    def distribution(self, dtype: str, adapter: str | None = None, mode: str | None = None) -> dict[str, Any]:
        """Per kind: count, zeros, max, median, p99, p99.9 and counts per decade."""
        out: dict[str, Any] = {}
        for kind, h in self.histograms(dtype, adapter, mode).items():
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
            "distribution_by_mode": {
                m: {d: self.distribution(d, mode=m)["all"] for d in self.dtypes()} for m in self.modes()
            },
            "false_failures_by_mode": {
                m: sum(int(p["failures"]) for p in self.parts if _mode(p) == m) for m in self.modes()
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
        "Each example is one call of `gradoracle.runner.evaluate_example` (vjp) or of "
        "`gradoracle.modes.EVALUATORS[mode]` (jvp, hvp) at the default settings; "
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
    lines += ["", "## Per mode", ""]
    mrows = [
        (m, dt, f"{s['count']:,}", d["false_failures_by_mode"][m], _fmt(s["max"], 3), _fmt(s["p999"]))
        for m, by in d["distribution_by_mode"].items()
        for dt, s in by.items()
        if s["count"]
    ]
    lines += _md_table(("mode", "dtype", "examples", "false failures", "max", "p99.9 <="), mrows)
    lines += ["", "## Per identity x adapter x dtype x mode", ""]
    crows = [
        (
            c["identity"],
            c["adapter"],
            c["dtype"],
            c["mode"],
            f"{c['examples']:,}",
            f"{c['distinct']:,}",
            c["failures"],
            _fmt(c["max_ratio"], 3),
        )
        for c in d["per_check"]
    ]
    lines += _md_table(
        (
            "identity",
            "adapter",
            "dtype",
            "mode",
            "examples",
            "distinct",
            "false failures",
            "max error/tolerance",
        ),
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
                f"- {f['identity']} / {f['adapter']} / {f['dtype']} / {f.get('mode', 'vjp')}: "
                f"fault {f['fault']}, {f['kind']} on "
                f"{f['input']!r}, ratio {_fmt(f['ratio'], 3)}, shapes {f['shapes']}, params {f['params']}, "
                f"example seed {f['example_seed']} ({f['crash'] or ''})"
            )
    return "\n".join(lines) + "\n"


def _mode(part: Mapping[str, Any]) -> str:
    """A saved unit's mode (units saved before the modes existed are reverse mode)."""
    return str(part.get("mode", "vjp"))
