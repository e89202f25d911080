"""The default report's wall time: cold and warm JAX cache, ``--jobs 1`` and ``--jobs 2``, interleaved.

Each measurement runs ``gradoracle report`` (the default matrix unless told otherwise) as a
fresh process, so imports, JAX compilations and worker start-up are all counted, the way
a user waits for it:

- *cold*: JAX's persistent compilation cache points at a new, empty directory;
- *warm*: the same command again with the directory the cold run filled.

A round runs cold and warm with ``--jobs 1`` and with ``--jobs 2``, alternating which jobs
count goes first from round to round, so that every ratio (``jobs 1 / jobs 2``, ``cold /
warm``) is taken between runs minutes apart rather than a whole sweep apart on a machine
whose load changes.  Every run records the 1-minute load average before and after
(``os.getloadavg``), and how many programs JAX built in all its processes (compiled by
XLA or loaded from the cache; :mod:`gradoracle.adapters.jax_cache` writes the counts of
each process to ``$GRADORACLE_JAX_STATS_DIR``).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ReportRun", "ReportTiming", "time_report", "time_reports"]


@dataclass
class ReportRun:
    """One timed ``gradoracle report``."""

    cache: str  # "cold" or "warm"
    jobs: int
    round: int
    wall_s: float
    load_before: float
    load_after: float
    programs: int
    cache_hits: int
    exit_code: int
    tail: str = ""

    @property
    def xla_compiles(self) -> int:
        """Programs XLA compiled (not loaded from the persistent cache)."""
        return self.programs - self.cache_hits


@dataclass
class ReportTiming:
    """All runs, and the medians of the per-round ratios."""

    args: list[str]
    runs: list[ReportRun] = field(default_factory=list)

    def median_wall(self, cache: str, jobs: int) -> float | None:
        """Median wall seconds of the runs with that cache state and jobs count."""
        walls = [r.wall_s for r in self.runs if r.cache == cache and r.jobs == jobs and r.exit_code in (0, 1)]
        return float(statistics.median(walls)) if walls else None

    def ratio(self, num: tuple[str, int], den: tuple[str, int]) -> float | None:
        """Median over rounds of ``wall(num) / wall(den)`` (each ratio within one round)."""
        out = []
        for rnd in sorted({r.round for r in self.runs}):
            a = [r.wall_s for r in self.runs if (r.cache, r.jobs, r.round) == (*num, rnd)]
            b = [r.wall_s for r in self.runs if (r.cache, r.jobs, r.round) == (*den, rnd)]
            if a and b and b[0] > 0:
                out.append(a[0] / b[0])
        return float(statistics.median(out)) if out else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record."""
        return {
            "args": self.args,
            "runs": [{**asdict(r), "xla_compiles": r.xla_compiles} for r in self.runs],
            "median_wall_s": {
                f"{cache} jobs {jobs}": self.median_wall(cache, jobs)
                for cache in ("cold", "warm")
                for jobs in sorted({r.jobs for r in self.runs})
            },
            "ratios": {
                "jobs 1 / jobs 2, cold": self.ratio(("cold", 1), ("cold", 2)),
                "jobs 1 / jobs 2, warm": self.ratio(("warm", 1), ("warm", 2)),
                "cold / warm, jobs 1": self.ratio(("cold", 1), ("warm", 1)),
            },
        }


def _stats(directory: Path) -> tuple[int, int]:
    programs = hits = 0
    for f in directory.glob("jax-stats-*.json"):
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        programs += int(data.get("programs", 0))
        hits += int(data.get("cache_hits", 0))
    return programs, hits


def time_report(
    jobs: int, cache_dir: Path, cache: str, rnd: int, args: Sequence[str], work: Path, timeout_s: float = 3600
) -> ReportRun:
    """Run ``gradoracle report --jobs N ARGS`` once with JAX's cache in ``cache_dir``; time it."""
    stats_dir = Path(tempfile.mkdtemp(prefix="stats-", dir=work))
    env = {
        **os.environ,
        "GRADORACLE_JAX_CACHE": str(cache_dir),
        "GRADORACLE_JAX_STATS_DIR": str(stats_dir),
    }
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    out_dir = Path(tempfile.mkdtemp(prefix="report-", dir=work))
    cmd = [sys.executable, "-m", "gradoracle", "report", "--out", str(out_dir), "--format", "json"]
    cmd += ["--jobs", str(jobs), *args]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        code, tail = proc.returncode, (proc.stdout + proc.stderr)[-400:]
    except subprocess.TimeoutExpired:
        code, tail = 124, f"timed out after {timeout_s:g} s"
    wall = time.perf_counter() - start
    programs, hits = _stats(stats_dir)
    return ReportRun(cache, jobs, rnd, wall, load_before, os.getloadavg()[0], programs, hits, code, tail)


def time_reports(
    rounds: int = 1,
    jobs: Sequence[int] = (1, 2),
    args: Sequence[str] = (),
    on_run: Callable[[ReportRun], None] | None = None,
) -> ReportTiming:
    """``rounds`` rounds of cold and warm runs for each jobs count, interleaved (module docstring)."""
    timing = ReportTiming(list(args))
    with tempfile.TemporaryDirectory(prefix="gradoracle-bench-") as tmp:
        work = Path(tmp)
        for rnd in range(rounds):
            order = list(jobs) if rnd % 2 == 0 else list(reversed(jobs))
            for j in order:
                cache_dir = Path(tempfile.mkdtemp(prefix=f"jax-cache-{rnd}-{j}-", dir=work))
                for cache in ("cold", "warm"):
                    run = time_report(j, cache_dir, cache, rnd, args, work)
                    timing.runs.append(run)
                    if on_run is not None:
                        on_run(run)
    return timing
