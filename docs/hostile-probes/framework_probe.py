"""The loop the framework-function probes share (``torch_functions.py``, ``jax_functions.py``):
each function checked with ``check_gradients(..., framework=...)`` in float64 and float32,
reverse and forward mode, 30 examples at seed 1; one line per check, then the process's memory
maps (Linux) and peak resident memory."""

from __future__ import annotations

import resource
import time
from typing import Any

from gradoracle.user_checks import GradientMismatch, check_gradients


def run(framework: str, functions: dict[str, tuple[Any, dict[str, Any]]], names: list[str]) -> None:
    """Check ``functions[name] = (function, inputs)`` for each of ``names`` (all when empty)."""
    for name in names or list(functions):
        f, spec = functions[name]
        for dtype in ("float64", "float32"):
            for mode in ("vjp", "jvp"):
                t = time.time()
                try:
                    check_gradients(
                        f, spec, framework=framework, dtypes=dtype, modes=mode, examples=30, seed=1
                    )
                    verdict = "pass"
                except GradientMismatch as e:
                    verdict = "FAIL " + " | ".join(line.strip()[:200] for line in str(e).split("\n")[:3])
                except Exception as e:  # a probe reports whatever happens
                    verdict = f"ERR {type(e).__name__}: {str(e)[:300]}"
                print(f"{name:13s} {dtype} {mode} {time.time() - t:5.1f}s {verdict}", flush=True)
    try:
        with open("/proc/self/maps") as maps_file:
            maps: int | str = sum(1 for _ in maps_file)
    except OSError:
        maps = "n/a"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"memory maps at the end: {maps}; peak resident memory: {peak} MB")
