"""``gradoracle bench``: what one gradient check costs, side by side with gradcheck and check_grads.

For each op and size (linear ``z = W x`` with ``W`` n x n; a valid 2-D convolution of an
n x n input with a 3 x 3 kernel; the notes' MLP with n inputs, n hidden units and 10
classes; max- and average-pooling of an n x n input with 2 x 2 windows) the bench times,
in one process and on the same float64 inputs:

- one plain forward+backward in each framework (the unit of cost): PyTorch eager
  ``autograd.grad``, JAX ``jax.jit(vjp)`` compiled once, the NumPy engine's ``vjp``;
- one gradoracle check of that input per adapter: :func:`gradoracle.runner.evaluate_example`
  with the default :class:`gradoracle.runner.CheckSettings` (the three-way comparison of one
  Hypothesis example: autodiff vs closed form vs finite differences, and the oracle's
  own finite-difference self-test);
- ``torch.autograd.gradcheck`` (slow mode, the default, and ``fast_mode=True``) and
  ``jax.test_util.check_grads(order=1, modes=["rev"])`` of a jitted function, each at
  its default tolerances.

Costs are process CPU time per call (all threads; robust on a shared machine), the
median of ``repeats`` timings, each long enough to be above the clock's noise; the
first (cold) call is timed apart: for JAX it holds the compilation for a new shape.
Ratios divide by the forward+backward of the tool's own framework.  ``evals`` counts
the framework calls one check makes (forward and backward evaluations).

Detection power, beside the cost: every tool is run again with the op's gradient
replaced by ``g + eps ||g||_2 n / ||n||_2`` (``n`` Gaussian, seed 0) for ``eps = 1e-1,
1e-2, ..., 1e-14``; the smallest ``eps`` it still rejects is reported (a cheaper check that
misses bugs is no win).  Slow gradcheck calls predicted to take longer than
``max_seconds`` (from the previous size: its cost is quadratic in the number of input
elements) are not run; the prediction is shown, marked as an estimate.

Nothing here prints; :mod:`gradoracle.cli.bench` renders the tables and writes the files.

The package, one module per job: :mod:`~gradoracle.bench.cases` (ops, sizes, cases),
:mod:`~gradoracle.bench.tools`, :mod:`~gradoracle.bench.timing`, :mod:`~gradoracle.bench.report`
(records and targets) and :mod:`~gradoracle.bench.markdown`; running the cases
(:func:`run_case`, :func:`run_bench`) is here, and looks the tools, the timer and the
framework check up in this namespace, so tests can replace them.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

from gradoracle.bench.cases import (
    BATCH_GROWTH,
    BATCH_GROWTH_SIZES,
    BATCH_TARGET_FRAMEWORKS,
    BATCH_TARGETS,
    BENCH_OPS,
    CONV_K,
    DEFAULT_SIZES,
    DETECTION_GRID,
    FRAMEWORKS,
    GRADORACLE_ADAPTERS,
    MLP_CLASSES,
    OP_IDENTITY,
    POOL_K,
    QUICK_SIZES,
    REFERENCE_TOOLS,
    TARGET_CASES,
    TARGET_NEW_SHAPE_S,
    TARGET_RATIO,
    TOOL_FRAMEWORK,
    BenchCase,
    BenchError,
    cotangent_for,
    noise_for,
    perturb,
    plan_cases,
)
from gradoracle.bench.markdown import _tool_columns as _tool_columns
from gradoracle.bench.markdown import fmt_detect, fmt_ratio, fmt_seconds, markdown, write_bench
from gradoracle.bench.report import (
    FLAT_GROWTH,
    BenchConfig,
    BenchReport,
    CaseResult,
    Measurement,
    batch_targets,
    targets,
)
from gradoracle.bench.timing import Timing, interleaved_ratio, time_calls
from gradoracle.bench.tools import (
    CheckGradsTool,
    GradcheckTool,
    GradoracleBatchTool,
    GradoracleTool,
    JaxFwdBwd,
    NumpyFwdBwd,
    Tool,
    TorchFwdBwd,
    framework_available,
    make_tool,
    tool_framework,
)

__all__ = [
    "BATCH_GROWTH",
    "BATCH_GROWTH_SIZES",
    "BATCH_TARGETS",
    "BATCH_TARGET_FRAMEWORKS",
    "BENCH_OPS",
    "CONV_K",
    "DEFAULT_SIZES",
    "DETECTION_GRID",
    "FLAT_GROWTH",
    "FRAMEWORKS",
    "GRADORACLE_ADAPTERS",
    "MLP_CLASSES",
    "OP_IDENTITY",
    "POOL_K",
    "QUICK_SIZES",
    "REFERENCE_TOOLS",
    "TARGET_CASES",
    "TARGET_NEW_SHAPE_S",
    "TARGET_RATIO",
    "TOOL_FRAMEWORK",
    "BenchCase",
    "BenchConfig",
    "BenchError",
    "BenchReport",
    "CaseResult",
    "CheckGradsTool",
    "GradcheckTool",
    "GradoracleBatchTool",
    "GradoracleTool",
    "JaxFwdBwd",
    "Measurement",
    "NumpyFwdBwd",
    "Timing",
    "Tool",
    "TorchFwdBwd",
    "batch_targets",
    "cotangent_for",
    "fmt_detect",
    "fmt_ratio",
    "fmt_seconds",
    "framework_available",
    "interleaved_ratio",
    "make_tool",
    "markdown",
    "noise_for",
    "perturb",
    "plan_cases",
    "run_bench",
    "run_case",
    "targets",
    "time_calls",
    "tool_framework",
    "torch_threads",
    "write_bench",
]


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _estimate(prev: CaseResult | None, tool: str, case: BenchCase) -> float | None:
    """Predicted cost of ``tool`` on ``case`` from the previous size: quadratic in the input
    elements (slow gradcheck perturbs each element and each forward touches them all)."""
    if prev is None:
        return None
    m = prev.measurements.get(tool)
    if m is None:
        return None
    t_prev = m.cpu_s if m.cpu_s is not None else m.estimate_s
    if t_prev is None:
        return None
    return t_prev * (case.elements / max(prev.elements, 1)) ** 2


def _detect(tool: Tool, m: Measurement, budget_s: float, per_call: int = 1) -> None:
    """Walk :data:`DETECTION_GRID` down until the tool misses; record the smallest caught.
    ``per_call``: examples one ``tool.caught`` evaluates (``m.cpu_s`` is per example)."""
    if m.cpu_s is not None and m.cpu_s * per_call * len(DETECTION_GRID) > budget_s:
        m.detect_status = "not measured"
        m.note = (m.note + "; " if m.note else "") + "detection not measured (too slow)"
        return
    if not m.passed:
        m.detect_status = "false failure"
        return
    smallest = None
    for eps in DETECTION_GRID:
        if not tool.caught(eps):
            break
        smallest = eps
    m.detect_eps = smallest
    m.detect_status = "measured" if smallest is not None else "never caught"


def run_case(
    case: BenchCase,
    config: BenchConfig,
    prev: CaseResult | None = None,
    on_tool: Callable[[BenchCase, str], None] | None = None,
) -> CaseResult:
    """Measure every tool of ``config`` on ``case``; failures become records, never exceptions."""
    result = CaseResult(case.op, case.size, case.label, case.identity.name, case.elements, load=_load())
    base_tools: dict[str, Tool] = {}
    for name in config.tools:
        if on_tool is not None:
            on_tool(case, name)
        fw = tool_framework(name)
        ok, why = framework_available(fw)
        if not ok:
            result.measurements[name] = Measurement(name, fw, "unavailable", note=why)
            continue
        base = result.baseline(fw)
        m = Measurement(name, fw, "ok")
        result.measurements[name] = m
        if name == "gradcheck":
            est = _estimate(prev, name, case)
            if est is not None and est > config.max_seconds:
                m.status, m.estimate_s = "skipped", est
                m.note = f"not run: estimated {est:.0f} s per call > --max-seconds {config.max_seconds:g}"
                if base is not None and base.cpu_s:
                    m.ratio, m.ratio_method = est / base.cpu_s, "estimate"
                continue
        try:
            tool = make_tool(name, case)
            per = int(getattr(tool, "examples_per_call", 1))
            timing = time_calls(tool.run, config.repeats, config.min_time_s, config.max_seconds)
            m.cpu_s, m.wall_s, m.first_cpu_s, m.passed = (
                timing.cpu_s / per,
                timing.wall_s / per,
                timing.first_cpu_s / per,
                timing.passed,
            )
            if m.cpu_s * per < config.max_seconds / 3:
                m.evals = tool.evaluations()
            if base is not None and base.cpu_s and not name.startswith("fwd+bwd"):
                m.ratio, m.ratio_method = m.cpu_s / base.cpu_s, "sequential"
                baseline = base_tools.get(fw)
                if (
                    config.interleaved
                    and baseline is not None
                    and m.cpu_s * per * config.repeats < config.max_seconds
                ):
                    # numerator and denominator timed alternately, round by round
                    m.ratio = (
                        interleaved_ratio(tool.run, baseline.run, config.repeats, config.min_time_s) / per
                    )
                    m.ratio_method = "interleaved"
            elif name.startswith("fwd+bwd"):
                m.ratio = 1.0
                base_tools[fw] = tool
            if config.detection and not name.startswith("fwd+bwd"):
                _detect(tool, m, config.max_seconds, per)
        except Exception as exc:  # one broken tool never stops the bench
            m.status, m.note = "error", f"{type(exc).__name__}: {exc}"
    return result


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``torch.set_num_threads(threads)`` when torch is installed; restore afterwards."""
    ok, _ = framework_available("torch")
    if threads is None or not ok:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_bench(
    config: BenchConfig,
    on_tool: Callable[[BenchCase, str], None] | None = None,
    on_case: Callable[[CaseResult], None] | None = None,
) -> BenchReport:
    """Run every case of ``config`` in order; ``on_tool``/``on_case`` report progress."""
    from gradoracle.reporting.environment import collect_environment

    start = time.perf_counter()
    load_start = _load()
    results: list[CaseResult] = []
    prev: dict[str, CaseResult] = {}
    with torch_threads(config.threads):
        for case in config.cases:
            res = run_case(case, config, prev.get(case.op), on_tool)
            prev[case.op] = res
            results.append(res)
            if on_case is not None:
                on_case(res)
        env = collect_environment()
    cfg = {
        "cases": [[c.op, c.size] for c in config.cases],
        "adapters": list(config.adapters),
        "reference_tools": list(config.reference_tools),
        "repeats": config.repeats,
        "min_time_s": config.min_time_s,
        "max_seconds": config.max_seconds,
        "detection": config.detection,
        "torch_threads": config.threads,
        "dtype": "float64",
        "clock": "process CPU time (all threads), median per call",
    }
    return BenchReport(cfg, env, results, time.perf_counter() - start, {"start": load_start, "end": _load()})
