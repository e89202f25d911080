"""``report.json``: the versioned, machine-readable report, and the document every format renders.

The document (schema: ``oracle/report.schema.json``)::

    schema_version   "MAJOR.MINOR"; readers accept the same MAJOR
    generator        {"name": "gradoracle", "version": ...}
    created          UTC time the report was written (ISO 8601)
    environment      Python, platform, package versions, device, threads, BLAS,
                     seed and the Hypothesis settings (see gradoracle.reporting.environment);
                     frameworks: {adapter: {distribution: version}} of the adapters that ran
    run              what was run: adapters, identities, dtypes, examples, seed, jobs,
                     shard, planned_checks, interrupted, duration_s, command, ...
    run_id           the id of the report set this file belongs to (every file of the set
                     carries it; see gradoracle.reporting.reportset)
    summary          total, counts per verdict, status (conform | nonconformance | incomplete;
                     a merge that accepted missing shards is incomplete)
    results          one CheckResult.to_dict() per identity x adapter x dtype, plus
                     max_errors = {kind: {max_abs, max_rel, max_ratio}} over all inputs
    conventions      the convention probes (ProbeResult.to_dict())
    known_deviations {file, entries, matched, stale, unmatched} or null

JSON has no infinity: a non-finite number is written as the string "Infinity",
"-Infinity" or "NaN" and read back as a float.  Only ``created``, ``run_id``,
``run.duration_s`` and ``results[].duration_s`` change between two runs with the same seed
and versions.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gradoracle.deviations import DeviationOutcome
from gradoracle.results import KINDS, CheckResult, Verdict
from gradoracle.text import MESSAGE_LIMIT, clean_strings

SCHEMA_VERSION = "1.0"
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "report.schema.json"

#: Fields that hold timings or timestamps: the only ones two identical runs may differ in.
VOLATILE_FIELDS: tuple[str, ...] = ("created", "run_id", "run.duration_s", "results[].duration_s")

_NONFINITE = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}
_NUMERIC_KEYS = frozenset(
    {"max_abs", "max_rel", "max_ratio", "abs_error", "allowed", "autodiff", "analytic", "fd", "duration_s"}
)


class ReportFormatError(ValueError):
    """A file that is not a gradoracle report this version can read; the message says why."""


# ------------------------------------------------------------------------ encoding


def _encode(obj: Any) -> Any:
    """A JSON-safe copy: dataclasses as dicts, enums as strings, non-finite floats as strings."""
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, bool | int | str) or obj is None:
        return str(obj) if isinstance(obj, str) else obj  # StrEnum -> its value
    if isinstance(obj, Mapping):
        return {str(k): _encode(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_encode(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _encode(dataclasses.asdict(obj))
    if hasattr(obj, "tolist"):  # NumPy scalars and arrays
        return _encode(obj.tolist())
    if hasattr(obj, "__fspath__"):
        return str(obj)
    return str(obj)


def _decode_numbers(obj: Any) -> Any:
    """Inverse of the non-finite encoding, for the numeric fields of results."""
    if isinstance(obj, Mapping):
        return {
            k: (
                _NONFINITE[v]
                if k in _NUMERIC_KEYS and isinstance(v, str) and v in _NONFINITE
                else _decode_numbers(v)
            )
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_decode_numbers(v) for v in obj]
    return obj


# ------------------------------------------------------------------------ document


def max_errors(result: CheckResult) -> dict[str, dict[str, float]]:
    """``{kind: {max_abs, max_rel, max_ratio}}``: each comparison's worst over all inputs."""
    out: dict[str, dict[str, float]] = {}
    for kind in KINDS:
        stats = list(result.errors.get(kind, {}).values())
        if stats:
            out[kind] = {
                "max_abs": max(s.max_abs for s in stats),
                "max_rel": max(s.max_rel for s in stats),
                "max_ratio": max(s.max_ratio for s in stats),
            }
    return out


def result_record(result: CheckResult) -> dict[str, Any]:
    """One result as the report stores it: ``to_dict()`` plus ``max_errors``."""
    record = result.to_dict()
    record["max_errors"] = max_errors(result)
    return record


def summarize(results: Sequence[CheckResult]) -> dict[str, Any]:
    """Counts per verdict and the overall status."""
    counts = {str(v): sum(1 for r in results if r.verdict == v) for v in Verdict}
    if counts["fail"] or counts["error"]:
        status = "nonconformance"
    elif counts["not-run"]:
        status = "incomplete"
    else:
        status = "conform"
    return {"total": len(results), "counts": counts, "status": status}


def _probe_dict(probe: Any) -> dict[str, Any]:
    if hasattr(probe, "to_dict"):
        return dict(probe.to_dict())
    return dict(probe)


def build_document(
    results: Sequence[CheckResult],
    conventions: Sequence[Any],
    meta: Mapping[str, Any] | None = None,
    deviations: DeviationOutcome | None = None,
) -> dict[str, Any]:
    """The report document (see the module docstring).

    ``meta`` becomes the ``run`` section, except three keys: ``environment`` (default:
    :func:`collect_environment` of this process), ``created`` (default: now) and
    ``known_deviations`` (``{"file", "entries"}`` to record next to ``deviations``, a
    :class:`gradoracle.deviations.DeviationOutcome`).
    """
    from gradoracle import __version__
    from gradoracle.reporting.environment import collect_environment, hypothesis_settings

    run = dict(_encode(dict(meta or {})))
    environment = run.pop("environment", None) or collect_environment()
    created = run.pop("created", None) or datetime.now(UTC).isoformat(timespec="seconds")
    run_id = run.pop("run_id", None)
    known = run.pop("known_deviations", None)
    frameworks = run.pop("frameworks", None)  # {adapter: {distribution: version}} of what ran
    if isinstance(frameworks, Mapping):
        environment = {**environment, "frameworks": dict(frameworks)}
    run.pop("summary", None)  # recomputed from the results
    summary = summarize(results)
    merge = run.get("merge")
    if isinstance(merge, Mapping) and merge.get("complete") is False and summary["status"] == "conform":
        summary["status"] = "incomplete"  # a merge that accepted missing shards is not a full verdict
    settings: Mapping[str, Any] = run["settings"] if isinstance(run.get("settings"), Mapping) else {}
    environment.setdefault("seed", run.get("seed", settings.get("seed")))
    environment.setdefault("hypothesis", hypothesis_settings(settings))
    known_section: dict[str, Any] | None = None
    if deviations is not None or known:
        known_section = {"file": None, "entries": [], "matched": [], "stale": [], "unmatched": []}
        if deviations is not None:
            known_section.update(_encode(deviations.to_dict()))
        if known:
            keep = ("file", "entries") if deviations is not None else tuple(known_section)
            known_section.update({k: v for k, v in known.items() if k in keep and v is not None})
        if not known_section["entries"]:
            seen: list[dict[str, Any]] = []
            for entry in (
                *({k: v for k, v in m.items() if k != "id"} for m in known_section["matched"]),
                *known_section["stale"],
                *known_section["unmatched"],
            ):
                if entry not in seen:
                    seen.append(entry)
            known_section["entries"] = seen
    probes = [_encode(_probe_dict(p)) for p in conventions]
    failed_probes = sum(1 for p in probes if p.get("verdict") == "fail")
    summary["convention_failures"] = failed_probes
    if failed_probes:  # a gradient outside the generalised gradient is a failure, not a convention
        summary["status"] = "nonconformance"
    document = {
        "schema_version": SCHEMA_VERSION,
        "generator": {"name": "gradoracle", "version": __version__},
        "created": created,
        "run_id": run_id,
        "environment": _encode(environment),
        "run": run,
        "summary": summary,
        "results": [_encode(result_record(r)) for r in results],
        "conventions": probes,
        "known_deviations": known_section,
    }
    # every string is data (no control characters, no lone surrogates, bounded), whatever made it
    cleaned: dict[str, Any] = clean_strings(document, MESSAGE_LIMIT)
    return cleaned


def render_json(document: Mapping[str, Any]) -> str:
    """The document as indented, strict JSON (no NaN/Infinity literals)."""
    return json.dumps(document, indent=2, allow_nan=False, ensure_ascii=False) + "\n"


# ------------------------------------------------------------------------- reading


def load_schema() -> dict[str, Any]:
    """The JSON Schema of ``report.json``."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


def validate_document(document: Mapping[str, Any], origin: str = "<report>") -> None:
    """Raise :class:`ReportFormatError` unless ``document`` is a readable report.

    The schema version's major number must match; the full JSON Schema is checked when
    ``jsonschema`` is installed (a ``dev`` extra), the required top-level keys otherwise.
    """
    version = document.get("schema_version") if isinstance(document, Mapping) else None
    if version is None:
        raise ReportFormatError(f"{origin}: not a gradoracle report (no 'schema_version')")
    if not isinstance(version, str):
        raise ReportFormatError(
            f"{origin}: 'schema_version' is {version!r} ({type(version).__name__}), not a version "
            f"string such as {SCHEMA_VERSION!r}: not a report gradoracle wrote"
        )
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise ReportFormatError(
            f"{origin}: report schema {version} cannot be read by this gradoracle (schema {SCHEMA_VERSION}); "
            "regenerate it with this version"
        )
    try:
        import jsonschema
    except ImportError:
        missing = [
            k for k in ("environment", "run", "summary", "results", "conventions") if k not in document
        ]
        if missing:
            raise ReportFormatError(f"{origin}: missing key(s) {', '.join(missing)}") from None
        return
    try:
        jsonschema.validate(document, load_schema())
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ReportFormatError(
            f"{origin}: does not match the report schema at {where}: {exc.message}"
        ) from exc


def load_report(path: str | Path) -> tuple[list[CheckResult], list[Any], dict[str, Any]]:
    """``(results, conventions, meta)`` of a ``report.json`` (or of a directory holding one).

    ``conventions`` are :class:`gradoracle.conventions.ProbeResult`; ``meta`` is the ``run``
    section plus ``environment``, ``created``, ``known_deviations`` and ``summary``, so
    ``write_reports(results, conventions, out, meta=meta)`` writes the report again.
    """
    from gradoracle.conventions import ProbeResult
    from gradoracle.reporting.reportset import settle, verify_report_set

    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    settle(path.parent)  # finish a switch of report sets that its writer left half done
    problem = verify_report_set(path.parent, [path.name])
    if problem is not None:
        raise ReportFormatError(problem)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ReportFormatError(f"{path}: no such report file") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportFormatError(f"{path}: cannot be read as JSON: {exc}") from exc
    validate_document(document, str(path))
    fields = {f.name for f in dataclasses.fields(ProbeResult)}
    try:
        results = [CheckResult.from_dict(_decode_numbers(r)) for r in document["results"]]
        conventions = [
            ProbeResult(**{k: v for k, v in p.items() if k in fields}) for p in document["conventions"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportFormatError(f"{path}: a result or convention record is malformed: {exc}") from exc
    meta = dict(document.get("run") or {})
    meta["environment"] = document.get("environment")
    meta["created"] = document.get("created")
    meta["run_id"] = document.get("run_id")
    meta["known_deviations"] = document.get("known_deviations")
    meta["summary"] = document.get("summary")
    return results, conventions, meta
