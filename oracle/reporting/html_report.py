"""``report.html``: one self-contained page (no network): heatmap, conventions, failure pictures.

- The matrix is a heatmap: each cell's colour is ``log10`` of its relative error
  (:func:`gradoracle.reporting.tables.headline_error`) on a fixed scale from 1e-16 to 1
  (viridis), so two reports' colours mean the same; failing cells are outlined in red.
- For every failure whose counterexample carries its gradients (see
  :mod:`gradoracle.reporting.gradients`) three panels are drawn with matplotlib (Agg, no
  display): the analytic gradient, the framework's gradient and their difference;
  matrices and images as images (leading axes sliced at 0), vectors as curves.  PNGs
  are embedded as ``data:`` URIs.
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
    VERDICT_ICON,
    agrees_text,
    build_matrix,
    convention_rows,
    fmt_error,
    headline_error,
    message_without_repro,
    summary_line,
    versions_line,
)

#: The colour scale of the heatmap: log10(relative error) from LOG_MIN to LOG_MAX.
LOG_MIN, LOG_MAX = -16.0, 0.0
#: At most this many inputs are drawn per failure (the worst input first).
MAX_PICTURES_PER_FAILURE = 4
COLORMAP = "viridis"


def _hex(rgba: Sequence[float]) -> str:
    return "#" + "".join(f"{round(float(c) * 255):02x}" for c in rgba[:3])


def _text_colour(rgba: Sequence[float]) -> str:
    r, g, b = (float(c) for c in rgba[:3])
    return "#000000" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "#ffffff"


def heat_colour(rel_error: float | None) -> tuple[str, str] | None:
    """``(background, text colour)`` of a cell with this relative error; None when there is none."""
    if rel_error is None or math.isnan(rel_error):
        return None
    from matplotlib import colormaps

    value = LOG_MIN if rel_error <= 0 else min(max(math.log10(rel_error), LOG_MIN), LOG_MAX)
    rgba = colormaps[COLORMAP]((value - LOG_MIN) / (LOG_MAX - LOG_MIN))
    return _hex(rgba), _text_colour(rgba)


def _legend() -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps[COLORMAP]
    stops = ", ".join(f"{_hex(cmap(i / 10))} {i * 10}%" for i in range(11))
    ticks = [f"1e{v}" for v in range(int(LOG_MIN), int(LOG_MAX) + 1, 4)]  # evenly spaced on the bar
    return {"gradient": f"linear-gradient(to right, {stops})", "ticks": ticks}


# ---------------------------------------------------------------------------- pictures


def _as_2d(a: np.ndarray) -> tuple[np.ndarray, str]:
    if a.ndim == 2:
        return a, ""
    lead = a.shape[:-2]
    return a.reshape(-1, *a.shape[-2:])[0], "[" + ", ".join("0" for _ in lead) + ", :, :]"


def gradient_figure(
    name: str, autodiff: np.ndarray, analytic: np.ndarray, worst_index: Sequence[int] | None
) -> str:
    """A PNG (base64) of analytic, autodiff and autodiff - analytic for one input."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    diff = autodiff - analytic
    fig = Figure(figsize=(10.5, 2.9), dpi=80, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    titles = ("analytic (notes)", "framework autodiff", "difference (autodiff - analytic)")
    if autodiff.ndim == 1:
        x = np.arange(autodiff.size)
        for ax, data, title in zip(axes, (analytic, autodiff, diff), titles, strict=True):
            ax.plot(x, data, marker="o", markersize=3, linewidth=1)
            ax.set_title(f"{name}: {title}", fontsize=9)
            ax.set_xlabel("index", fontsize=8)
        if worst_index:
            axes[2].plot([worst_index[0]], [diff[worst_index[0]]], "rs", markersize=8, fillstyle="none")
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
            ax.set_title(f"{name}{label}: {title}", fontsize=9)
            fig.colorbar(im, ax=ax, shrink=0.85)
        if worst_index and len(worst_index) == autodiff.ndim and all(i == 0 for i in worst_index[:-2]):
            r, c = worst_index[-2], worst_index[-1]
            axes[2].plot([c], [r], "s", markersize=10, markeredgecolor="red", fillstyle="none")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if autodiff.ndim > 1:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def failure_pictures(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``[{"input", "shape", "png", "max_diff"}]`` for a failure's gradients.

    The worst input first; scalars and inputs whose gradients agree exactly are left out.
    """
    ce = record.get("counterexample") or {}
    grads = ce.get("gradients") or {}
    worst = record.get("worst") or {}
    names = sorted(grads, key=lambda n: n != worst.get("input"))
    pictures: list[dict[str, Any]] = []
    for name in names:
        autodiff = np.asarray(grads[name]["autodiff"], dtype=np.float64)
        analytic = np.asarray(grads[name]["analytic"], dtype=np.float64)
        if autodiff.shape != analytic.shape or autodiff.ndim == 0 or autodiff.size == 0:
            continue
        if name != worst.get("input") and np.array_equal(autodiff, analytic):
            continue  # an input whose gradient matched exactly: nothing to see
        if len(pictures) == MAX_PICTURES_PER_FAILURE:
            break
        index = worst.get("index") if worst.get("input") == name else None
        pictures.append(
            {
                "input": name,
                "shape": list(autodiff.shape),
                "max_diff": float(np.max(np.abs(autodiff - analytic))),
                "png": gradient_figure(name, autodiff, analytic, index),
            }
        )
    return pictures


# ------------------------------------------------------------------------------- page


def _safe_link(link: Any) -> str | None:
    text = str(link or "")
    return text if text.startswith(("https://", "http://")) else None


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
            if record is None:
                cells.append(None)
                continue
            rel = headline_error(record)
            colours = heat_colour(rel) if record["verdict"] not in ("skip", "not-run") else None
            cells.append(
                {
                    "id": record["id"],
                    "verdict": record["verdict"],
                    "icon": VERDICT_ICON.get(record["verdict"], ""),
                    "error": fmt_error(rel),
                    "rel": "" if rel is None else repr(rel),
                    "background": colours[0] if colours else None,
                    "colour": colours[1] if colours else None,
                    "detailed": record["verdict"] in DETAILED_VERDICTS,
                    "fault": record.get("fault", "none"),
                }
            )
        rows.append({"identity": identity, "source": source, "cells": cells})
    failures = []
    for record in results:
        if record["verdict"] not in DETAILED_VERDICTS:
            continue
        deviation = record.get("deviation") or None
        failures.append(
            {
                "record": record,
                "message": message_without_repro(record),
                "deviation": deviation,
                "link": _safe_link(deviation.get("link")) if deviation else None,
                "pictures": failure_pictures(record),
            }
        )
    conventions = [
        {**row, "agrees_text": agrees_text(row["agrees"])}
        for row in convention_rows(document.get("conventions") or [])
    ]
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
        legend=_legend(),
        conventions=conventions,
        failures=failures,
        known=known,
        env_json=json.dumps(env, indent=2, ensure_ascii=False),
        run_json=json.dumps(document.get("run") or {}, indent=2, ensure_ascii=False),
        not_run=sum(1 for r in results if r["verdict"] == "not-run"),
        icons=VERDICT_ICON,
    )
