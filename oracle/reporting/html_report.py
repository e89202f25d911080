"""``report.html``: one self-contained page (no network): verdict matrix, conventions, failure pictures.

- The matrix shows the **verdict first**: each cell's colour is its verdict (pass, xfail,
  fail, error, skip, not-run; :data:`VERDICT_COLOURS`) with an inline-SVG icon and the verdict's
  word, so it reads the same on any machine (no emoji font needed); **the error second**:
  ``error / tolerance`` (:func:`gradoracle.reporting.tables.headline_ratio`), a number and a
  small logarithmic bar, so float32 and float64 cells compare like with like (a check
  fails above 1).  The relative error is in the cell's tooltip.
- The conventions are a probe x framework table with the notes' answer as the last column
  (:func:`gradoracle.reporting.tables.convention_matrix`).
- For every failure whose counterexample carries its gradients (see
  :mod:`gradoracle.reporting.gradients`) three panels are drawn with matplotlib (Agg, no
  display): the analytic gradient, the framework's gradient and their difference; matrices
  and images as images (leading axes sliced at 0), vectors as stem plots; only where a
  picture adds something to the numbers of the message (:func:`worth_drawing`).  PNGs are
  embedded as ``data:`` URIs and scale down with the page.
- The page is rendered by jinja2 with autoescaping on: every text from gradoracle.adapters and
  exceptions is HTML-escaped, and a deviation's link is only a link when it is http(s).
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gradoracle.reporting.tables import (
    DETAILED_VERDICTS,
    build_matrix,
    convention_matrix,
    fmt_error,
    fmt_ratio,
    headline_error,
    headline_ratio,
    message_without_repro,
    repro_needs,
    summary_line,
    versions_line,
)
from gradoracle.specification import source_words

#: Cell colours per verdict: (background, text).  Verdict first; the error is the number and bar.
VERDICT_COLOURS: dict[str, dict[str, str]] = {
    "pass": {"background": "#d4efd9", "text": "#0b5a1f"},
    "xfail": {"background": "#fde9a8", "text": "#6b4e00"},
    "fail": {"background": "#f7c4c4", "text": "#8c0000"},
    "error": {"background": "#e4cdf2", "text": "#5a1380"},
    "skip": {"background": "#e6e6e6", "text": "#444444"},
    "not-run": {"background": "#f2f2f2", "text": "#666666"},
}
#: The ratio bar: log10(error / tolerance) from RATIO_LOG_MIN (empty) to 0 (full: the limit).
RATIO_LOG_MIN = -8.0
#: At most this many inputs are drawn per failure (the worst input first).
MAX_PICTURES_PER_FAILURE = 4
#: An input with fewer elements than this is not drawn: its numbers are in the message.
MIN_ELEMENTS_TO_DRAW = 4


def ratio_bar(ratio: float | None) -> int:
    """Width in percent of the error/tolerance bar: log scale from 1e-8 (0%) to 1 (100%)."""
    if ratio is None or math.isnan(ratio) or ratio <= 0:
        return 0
    value = (math.log10(ratio) - RATIO_LOG_MIN) / -RATIO_LOG_MIN if math.isfinite(ratio) else 1.0
    return round(100 * min(max(value, 0.0), 1.0))


# ---------------------------------------------------------------------------- pictures


def _as_2d(a: np.ndarray) -> tuple[np.ndarray, str]:
    if a.ndim == 2:
        return a, ""
    lead = a.shape[:-2]
    return a.reshape(-1, *a.shape[-2:])[0], "[" + ", ".join("0" for _ in lead) + ", :, :]"


def worth_drawing(autodiff: np.ndarray, analytic: np.ndarray) -> str | None:
    """None when a picture of this gradient adds something; else why it is left out.

    A gradient of fewer than :data:`MIN_ELEMENTS_TO_DRAW` elements is all in the message's
    numbers (a picture of one element is a single dot); one that is zero everywhere in both
    has no shape to show.
    """
    if autodiff.size < MIN_ELEMENTS_TO_DRAW:
        return f"{autodiff.size} element(s): the values are in the message above"
    if not np.any(autodiff) and not np.any(analytic):
        return "zero everywhere in both gradients"
    return None


def _vector_view(a: np.ndarray) -> np.ndarray | None:
    """``a`` as a vector when it is one (1-D, or a single row or column), else None."""
    if a.ndim == 1:
        return a
    if a.ndim == 2 and 1 in a.shape:
        return a.reshape(-1)
    return None


def gradient_figure(
    name: str, autodiff: np.ndarray, analytic: np.ndarray, worst_index: Sequence[int] | None
) -> str:
    """A PNG (base64) of analytic, autodiff and autodiff - analytic for one input.

    Vectors (and single rows/columns) as stem plots with integer ticks; matrices and images
    as images with colour bars (leading axes sliced at 0); the worst element marked.  Fonts
    of 10 pt at 100 dpi, so the picture stays legible when the page scales it down.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    diff = autodiff - analytic
    fig = Figure(figsize=(11.0, 3.3), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    titles = ("analytic (notes)", "framework gradient", "difference (framework - analytic)")
    vectors = [_vector_view(v) for v in (analytic, autodiff, diff)]
    if all(v is not None for v in vectors):
        n = autodiff.size
        x = np.arange(n)
        flat_worst = None
        if worst_index and len(worst_index) == autodiff.ndim:
            flat_worst = int(np.ravel_multi_index(tuple(worst_index), autodiff.shape))
        for ax, data, title in zip(axes, vectors, titles, strict=True):
            assert data is not None
            ax.axhline(0.0, color="#999999", linewidth=0.8)
            ax.vlines(x, 0.0, data, color="#1f77b4", linewidth=1.2)
            ax.plot(x, data, "o", color="#1f77b4", markersize=4 if n <= 64 else 2)
            ax.set_title(f"{name}: {title}", fontsize=10)
            ax.set_xlabel("element (flat index)" if autodiff.ndim > 1 else "element", fontsize=10)
            ax.set_xlim(-0.5 - 0.02 * n, n - 0.5 + 0.02 * n)
        if flat_worst is not None and vectors[2] is not None:
            axes[2].plot(
                [flat_worst],
                [vectors[2][flat_worst]],
                "s",
                markersize=11,
                markeredgecolor="red",
                fillstyle="none",
                markeredgewidth=1.5,
            )
    else:
        a2, label = _as_2d(analytic)
        g2, _ = _as_2d(autodiff)
        d2, _ = _as_2d(diff)
        lo = min(float(np.min(a2)), float(np.min(g2)))
        hi = max(float(np.max(a2)), float(np.max(g2)))
        dlim = max(float(np.max(np.abs(d2))), 1e-300)
        scales = ((lo, hi, "viridis"), (lo, hi, "viridis"), (-dlim, dlim, "RdBu_r"))
        for ax, data, title, (vmin, vmax, cmap) in zip(axes, (a2, g2, d2), titles, scales, strict=True):
            im = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
            ax.set_title(f"{name}{label}: {title}", fontsize=10)
            fig.colorbar(im, ax=ax, shrink=0.85).ax.tick_params(labelsize=9)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
        if worst_index and len(worst_index) == autodiff.ndim and all(i == 0 for i in worst_index[:-2]):
            r, c = worst_index[-2], worst_index[-1]
            axes[2].plot(
                [c], [r], "s", markersize=11, markeredgecolor="red", fillstyle="none", markeredgewidth=1.5
            )
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
        ax.tick_params(labelsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


#: Width in CSS pixels of a picture at its natural size (the page scales it down, never up).
PICTURE_WIDTH = 1100


def failure_pictures(record: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """``([{"input", "shape", "png", "max_diff", "width"}], [why an input was not drawn])``.

    The worst input first; inputs whose gradients agree exactly, and those where a picture
    adds nothing to the message's numbers (:func:`worth_drawing`), are left out.
    """
    ce = record.get("counterexample") or {}
    grads = ce.get("gradients") or {}
    worst = record.get("worst") or {}
    names = sorted(grads, key=lambda n: n != worst.get("input"))
    pictures: list[dict[str, Any]] = []
    skipped: list[str] = []
    for name in names:
        autodiff = np.asarray(grads[name]["autodiff"], dtype=np.float64)
        analytic = np.asarray(grads[name]["analytic"], dtype=np.float64)
        if autodiff.shape != analytic.shape or autodiff.ndim == 0 or autodiff.size == 0:
            continue
        if name != worst.get("input") and np.array_equal(autodiff, analytic):
            continue  # an input whose gradient matched exactly: nothing to see
        why = worth_drawing(autodiff, analytic)
        if why is not None:
            skipped.append(f"{name} {list(autodiff.shape)}: not drawn ({why})")
            continue
        if len(pictures) == MAX_PICTURES_PER_FAILURE:
            break
        index = worst.get("index") if worst.get("input") == name else None
        pictures.append(
            {
                "input": name,
                "shape": list(autodiff.shape),
                "max_diff": float(np.max(np.abs(autodiff - analytic))),
                "png": gradient_figure(name, autodiff, analytic, index),
                "width": PICTURE_WIDTH,
                "label": "framework",
            }
        )
    return pictures, skipped


# ------------------------------------------------------------------------------- page


def _safe_link(link: Any) -> str | None:
    text = str(link or "")
    return text if text.startswith(("https://", "http://")) else None


def _cell(record: Mapping[str, Any]) -> dict[str, Any]:
    verdict = str(record["verdict"])
    rel = headline_error(record)
    ratio = headline_ratio(record) if verdict not in ("skip", "not-run") else None
    colours = VERDICT_COLOURS.get(verdict, VERDICT_COLOURS["skip"])
    return {
        "id": record["id"],
        "verdict": verdict,
        "error": fmt_error(rel),
        "rel": "" if rel is None else repr(rel),
        "ratio": fmt_ratio(ratio),
        "ratio_raw": "" if ratio is None else repr(ratio),
        "bar": ratio_bar(ratio),
        "style": f"background: {colours['background']}; color: {colours['text']}",
        "detailed": verdict in DETAILED_VERDICTS,
        "fault": record.get("fault", "none"),
    }


def render_html(document: Mapping[str, Any]) -> str:
    """The self-contained HTML page of a document."""
    import jinja2

    results = document["results"]
    m = build_matrix(results)
    rows = []
    for identity, source in m.rows:
        cells: list[dict[str, Any] | None] = []
        for col in m.columns:
            record = m.cell(identity, col)
            cells.append(None if record is None else _cell(record))
        rows.append({"identity": identity, "source": source, "section": source_words(source), "cells": cells})
    failures = []
    for record in results:
        if record["verdict"] not in DETAILED_VERDICTS:
            continue
        deviation = record.get("deviation") or None
        pictures, skipped = failure_pictures(record)
        failures.append(
            {
                "record": record,
                "message": message_without_repro(record),
                "deviation": deviation,
                "link": _safe_link(deviation.get("link")) if deviation else None,
                "pictures": pictures,
                "no_picture": "; ".join(skipped),
                "repro_needs": repro_needs(record.get("repro")),
            }
        )
    cm = convention_matrix(document.get("conventions") or [])
    conventions = {
        "adapters": cm.adapters,
        "probes": cm.probes,
        "rows": [{**probe, "cells": [cm.cell(probe["name"], a) for a in cm.adapters]} for probe in cm.probes],
    }
    known = document.get("known_deviations")
    env = document.get("environment") or {}
    loader = jinja2.PackageLoader("gradoracle", "templates")
    jenv = jinja2.Environment(loader=loader, autoescape=True, trim_blocks=True, lstrip_blocks=True)
    template = jenv.get_template("report.html.j2")
    return template.render(
        summary=summary_line(document),
        status=document["summary"]["status"],
        versions=versions_line(document),
        document=document,
        env=env,
        run=document.get("run") or {},
        columns=m.columns,
        rows=rows,
        colours=VERDICT_COLOURS,
        conventions=conventions,
        failures=failures,
        known=known,
        env_json=json.dumps(env, indent=2, ensure_ascii=False),
        run_json=json.dumps(document.get("run") or {}, indent=2, ensure_ascii=False),
        not_run=sum(1 for r in results if r["verdict"] == "not-run"),
    )
