"""Known deviations: failures a project has decided to accept, with a reason.

A TOML file of entries::

    [[deviation]]
    identity = "max-pool"          # name or glob (fnmatch); required
    adapter = "mylib"              # name or glob; required
    dtype = "float32"              # optional, default "*"
    mode = "jvp"                   # optional: vjp, jvp, hvp or a glob; default "*" (every mode)
    fault = "reduced-precision"    # optional: accept only this kind of failure; default "*"
    reason = "ties route to the last index; fixed in mylib 2.1"   # required
    link = "https://example.org/issue/12"                         # optional

A failing (or erroring) result matched by an entry becomes ``xfail`` with that reason.
An entry whose matches all pass is *stale* (the deviation is gone: delete the entry);
an entry that matches no result of the run is *unmatched* (a typo, or not selected).
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from gradoracle.results import CheckResult, Verdict
from gradoracle.text import NAME_LIMIT, clean_text


def _shown(value: Any) -> str:
    return clean_text(repr(value), 80)


class StaleDeviationWarning(UserWarning):
    """A known deviation whose check now passes (``-W error::gradoracle.StaleDeviationWarning``
    turns it into a failure)."""


class DeviationFileError(ValueError):
    """A known-deviations file that cannot be used; the message names the entry and field."""


@dataclass(frozen=True)
class Deviation:
    """One accepted deviation."""

    identity: str
    adapter: str
    reason: str
    dtype: str = "*"
    link: str = ""
    mode: str = "*"
    fault: str = "*"

    def matches(self, result: CheckResult) -> bool:
        """True when identity, adapter, dtype and mode all match (globs allowed)."""
        return (
            fnmatchcase(result.identity, self.identity)
            and fnmatchcase(result.adapter, self.adapter)
            and fnmatchcase(result.dtype, self.dtype)
            and fnmatchcase(getattr(result, "mode", "vjp"), self.mode)
        )

    def accepts(self, result: CheckResult) -> bool:
        """True when the entry accepts this result's kind of failure (``fault``, glob)."""
        return fnmatchcase(str(result.fault), self.fault)

    def label(self) -> str:
        parts = [self.identity, self.adapter, self.dtype]
        if self.mode != "*":
            parts.append(f"mode {self.mode}")
        if self.fault != "*":
            parts.append(f"fault {self.fault}")
        return " / ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("mode", "fault"):  # the defaults are left out (files and reports before modes)
            if d[key] == "*":
                del d[key]
        return d


@dataclass
class DeviationOutcome:
    """How a run's results met the known-deviations file."""

    matched: list[tuple[str, Deviation]] = field(default_factory=list)  # (result id, entry)
    stale: list[Deviation] = field(default_factory=list)
    unmatched: list[Deviation] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "matched": [{"id": rid, **d.to_dict()} for rid, d in self.matched],
            "stale": [d.to_dict() for d in self.stale],
            "unmatched": [d.to_dict() for d in self.unmatched],
        }

    def warnings(self) -> list[str]:
        """Human-readable lines for stale and unmatched entries."""
        out = [f"stale known deviation (now passes; remove it): {d.label()}" for d in self.stale]
        out += [f"known deviation matches no check in this run: {d.label()}" for d in self.unmatched]
        return out


def parse_deviations(data: dict[str, Any], origin: str = "<toml>") -> list[Deviation]:
    """Entries from parsed TOML (``[[deviation]]`` tables)."""
    entries = data.get("deviation", [])
    unknown = sorted(set(data) - {"deviation"})
    if unknown:
        raise DeviationFileError(f"{origin}: unknown top-level key(s) {unknown}; use [[deviation]] tables")
    if not isinstance(entries, list):
        raise DeviationFileError(f"{origin}: 'deviation' must be an array of tables ([[deviation]])")
    out = []
    allowed = {"identity", "adapter", "dtype", "reason", "link", "mode", "fault"}
    for n, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise DeviationFileError(f"{origin}: deviation #{n} is not a table")
        extra = sorted(set(entry) - allowed)
        if extra:
            raise DeviationFileError(
                f"{origin}: deviation #{n} has unknown field(s) {extra}; allowed: {sorted(allowed)}"
            )
        for key in ("identity", "adapter", "reason"):
            if key not in entry:
                raise DeviationFileError(f"{origin}: deviation #{n} needs a non-empty string '{key}'")
        for key, value in entry.items():
            if not isinstance(value, str):
                raise DeviationFileError(
                    f"{origin}: deviation #{n}, key '{key}': expected a string (a name or glob), got "
                    f'{type(value).__name__} {_shown(value)}; write {key} = "..." '
                    "(one entry per value if several are meant)"
                )
            if key != "link" and not value.strip():
                raise DeviationFileError(f"{origin}: deviation #{n} needs a non-empty string '{key}'")
        out.append(
            Deviation(
                identity=entry["identity"],
                adapter=entry["adapter"],
                reason=entry["reason"],
                dtype=entry.get("dtype", "*"),
                link=entry.get("link", ""),
                mode=entry.get("mode", "*"),
                fault=entry.get("fault", "*"),
            )
        )
    return out


def load_deviations(path: str | Path) -> list[Deviation]:
    """Read a known-deviations TOML file; a missing or malformed file is a DeviationFileError."""
    path = Path(path)
    shown = clean_text(str(path), NAME_LIMIT)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DeviationFileError(f"known-deviations file {shown!r} does not exist") from exc
    except IsADirectoryError as exc:
        raise DeviationFileError(f"known-deviations file {shown!r} is a directory; name a TOML file") from exc
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise DeviationFileError(
            f"known-deviations file {shown!r} is not UTF-8 text (line {line}, byte {exc.start}: "
            f"{exc.reason}); "
            "save it as UTF-8"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise DeviationFileError(f"known-deviations file {shown!r} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise DeviationFileError(f"known-deviations file {shown!r} cannot be read: {exc}") from exc
    return parse_deviations(data, shown)


def apply_deviations(results: Sequence[CheckResult], deviations: Sequence[Deviation]) -> DeviationOutcome:
    """Turn matched failures into ``xfail`` (in place) and classify every entry."""
    outcome = DeviationOutcome()
    for dev in deviations:
        hits = [r for r in results if dev.matches(r)]
        if not hits:
            outcome.unmatched.append(dev)
            continue
        failing = [
            r for r in hits if r.verdict in (Verdict.FAIL, Verdict.ERROR, Verdict.XFAIL) and dev.accepts(r)
        ]
        for r in failing:
            r.verdict = Verdict.XFAIL
            r.deviation = dev.to_dict()
            outcome.matched.append((r.id, dev))
        if not failing and all(r.verdict == Verdict.PASS for r in hits):
            outcome.stale.append(dev)
    return outcome
