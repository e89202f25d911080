"""Report writers: ``report.json``, ``report.md``, ``report.html`` and ``junit.xml``.

:func:`write_reports` is the one entry point (the CLI's ``report``/``merge`` and the
pytest plugin's ``--gradoracle-report DIR`` call it); :func:`load_report` reads a
``report.json`` back for ``gradoracle merge``.  The files of one run are a set,
written as a unit (:mod:`gradoracle.reporting.reportset`).  Importing this package imports neither torch, jax,
matplotlib nor jinja2; the HTML writer imports the last two when it runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gradoracle.deviations import DeviationOutcome
from gradoracle.reporting.json_report import (
    SCHEMA_PATH,
    SCHEMA_VERSION,
    ReportFormatError,
    build_document,
    load_report,
    load_schema,
    render_json,
    validate_document,
)
from gradoracle.results import CheckResult

#: Format name -> file name, in the order they are written.
FILE_NAMES: dict[str, str] = {
    "json": "report.json",
    "md": "report.md",
    "html": "report.html",
    "junit": "junit.xml",
}
FORMATS: tuple[str, ...] = tuple(FILE_NAMES)

__all__ = [
    "FILE_NAMES",
    "FORMATS",
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "ReportFormatError",
    "build_document",
    "load_report",
    "load_schema",
    "normalize_formats",
    "validate_document",
    "write_reports",
]


def normalize_formats(formats: Sequence[str] | str) -> list[str]:
    """Format names from a list and/or comma-separated strings; ``ValueError`` for unknown ones."""
    items = [formats] if isinstance(formats, str) else list(formats)
    names = [p.strip().lower() for item in items for p in str(item).split(",") if p.strip()]
    aliases = {"markdown": "md", "xml": "junit"}
    names = [aliases.get(n, n) for n in names]
    unknown = sorted(set(names) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown report format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    if not names:
        raise ValueError(f"no report format given; choose from {', '.join(FORMATS)}")
    return [f for f in FORMATS if f in names]


def write_reports(
    results: Sequence[CheckResult],
    conventions: Sequence[Any],
    out_dir: Path,
    formats: Sequence[str] = FORMATS,
    meta: Mapping[str, Any] | None = None,
    deviations: DeviationOutcome | None = None,
) -> dict[str, Path]:
    """Write the reports of ``results`` into ``out_dir`` as one set; ``{format: path}`` of the files.

    ``conventions`` are :class:`gradoracle.conventions.ProbeResult` (or their dicts);
    ``meta`` describes the run (see :func:`build_document`); ``deviations`` is the
    :class:`gradoracle.deviations.DeviationOutcome` of the run, if a known-deviations file
    was used.  Failures without gradients in their counterexample get them first (by
    re-running the counterexample on the adapter named in the repro) for the HTML pictures.

    Every file is rendered before any is written; then the set is switched in as a unit
    (:func:`gradoracle.reporting.reportset.write_report_set`: the directory holds the whole
    previous set or the whole new one, files of formats not written this time are removed,
    and a second run writing the same directory is refused with
    :class:`gradoracle.reporting.reportset.ReportDirLocked`).
    """
    from gradoracle.reporting.reportset import new_run_id, write_report_set

    chosen = normalize_formats(formats)
    out = Path(out_dir)
    if "html" in chosen:
        from gradoracle.reporting.gradients import attach_gradients

        for r in results:
            attach_gradients(r)
    run_id = new_run_id()
    document = build_document(results, conventions, {**dict(meta or {}), "run_id": run_id}, deviations)
    rendered: dict[str, bytes] = {}
    for fmt in chosen:
        if fmt == "json":
            rendered[FILE_NAMES[fmt]] = render_json(document).encode("utf-8")
        elif fmt == "md":
            from gradoracle.reporting.markdown import render_markdown

            rendered[FILE_NAMES[fmt]] = render_markdown(document).encode("utf-8")
        elif fmt == "html":
            from gradoracle.reporting.html_report import render_html

            rendered[FILE_NAMES[fmt]] = render_html(document).encode("utf-8")
        else:
            from gradoracle.reporting.junit import render_junit

            rendered[FILE_NAMES[fmt]] = render_junit(document)
    paths = write_report_set(out, rendered, run_id, owned=FILE_NAMES.values())
    return {fmt: paths[FILE_NAMES[fmt]] for fmt in chosen}
