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
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gradoracle.identities import Identity, get_identity
from gradoracle.strategies import Example, push_preactivation_from_kinks, separate_window_maxima

#: The ops of the bench, in table order, and the identity each one checks.
OP_IDENTITY: dict[str, str] = {
    "linear": "matvec-weight-grad",
    "conv": "conv-input",
    "mlp": "mlp",
    "max-pool": "max-pool",
    "avg-pool": "avg-pool",
}
BENCH_OPS: tuple[str, ...] = tuple(OP_IDENTITY)
DEFAULT_SIZES: dict[str, tuple[int, ...]] = {
    "linear": (8, 32, 128, 512),
    "conv": (16, 32, 64, 128),
    "mlp": (8, 32, 128),
    "max-pool": (16, 32, 64, 128),
    "avg-pool": (16, 32, 64, 128),
}
QUICK_SIZES: dict[str, tuple[int, ...]] = {
    "linear": (8, 32),
    "conv": (16,),
    "mlp": (8,),
    "max-pool": (16,),
    "avg-pool": (16,),
}
CONV_K = 3
POOL_K = 2
MLP_CLASSES = 10

GRADORACLE_ADAPTERS: tuple[str, ...] = ("numpy", "torch", "jax")
#: Every tool, in column order: the gradoracle adapters, then the frameworks' own checkers.
REFERENCE_TOOLS: tuple[str, ...] = ("gradcheck", "gradcheck-fast", "check_grads")
#: The framework whose forward+backward is the unit of cost of each tool.
TOOL_FRAMEWORK: dict[str, str] = {
    "gradcheck": "torch",
    "gradcheck-fast": "torch",
    "check_grads": "jax",
}
FRAMEWORKS: tuple[str, ...] = ("numpy", "torch", "jax")
#: Relative gradient errors tried for detection power, largest first.
DETECTION_GRID: tuple[float, ...] = tuple(10.0 ** (-k) for k in range(1, 15))
#: The issue's target: one check at most this many forward+backwards at these cases.
TARGET_RATIO = 5.0
TARGET_CASES: tuple[tuple[str, int], ...] = (("linear", 128), ("conv", 64))
#: The issue's target for a new input shape in JAX, seconds.
TARGET_NEW_SHAPE_S = 0.005


class BenchError(ValueError):
    """A bench configuration that cannot run (unknown op or tool, bad size); says what fits."""


# ======================================================================================
# Cases
# ======================================================================================


@dataclass(frozen=True)
class BenchCase:
    """One op at one size; its float64 example is deterministic (seed 0)."""

    op: str
    size: int

    def __post_init__(self) -> None:
        if self.op not in OP_IDENTITY:
            raise BenchError(f"unknown bench op {self.op!r}; choose from {', '.join(BENCH_OPS)}")
        smallest = {"conv": CONV_K, "max-pool": POOL_K, "avg-pool": POOL_K}.get(self.op, 1)
        if self.size < smallest:
            raise BenchError(f"{self.op} size {self.size} is too small: use a size >= {smallest}")

    @property
    def identity(self) -> Identity:
        """The catalogue identity this case checks."""
        return get_identity(OP_IDENTITY[self.op])

    @property
    def label(self) -> str:
        """What the case computes, e.g. ``linear W 128x128``."""
        n = self.size
        return {
            "linear": f"linear W {n}x{n}",
            "conv": f"conv {n}x{n} k={CONV_K}",
            "mlp": f"mlp {n}-{n}-{MLP_CLASSES}",
            "max-pool": f"max-pool {n}x{n} k={POOL_K}",
            "avg-pool": f"avg-pool {n}x{n} k={POOL_K}",
        }[self.op]

    def example(self) -> Example:
        """The inputs (float64), drawn from ``default_rng(size)`` like the identity's strategy."""
        n, rng = self.size, np.random.default_rng(self.size)
        if self.op == "linear":
            return Example({"W": rng.uniform(-1, 1, (n, n)), "x": rng.uniform(-1, 1, n)}, {}, 0)
        if self.op == "conv":
            return Example(
                {"X": rng.uniform(-1, 1, (n, n)), "K": rng.uniform(-1, 1, (CONV_K, CONV_K))}, {}, 0
            )
        if self.op == "mlp":
            x = rng.uniform(-1, 1, n)
            W1 = rng.uniform(-1, 1, (n, n)) / math.sqrt(n)
            b1 = push_preactivation_from_kinks(W1 @ x, rng.uniform(-0.5, 0.5, n))
            W2 = rng.uniform(-1, 1, (MLP_CLASSES, n)) / math.sqrt(n)
            y = np.zeros(MLP_CLASSES)
            y[int(rng.integers(0, MLP_CLASSES))] = 1.0
            inputs = {"x": x, "W1": W1, "b1": b1, "W2": W2, "b2": rng.uniform(-0.5, 0.5, MLP_CLASSES), "y": y}
            return Example(inputs, {"soft_target": False}, 0)
        X = rng.uniform(-1, 1, (n, n))
        if self.op == "max-pool":
            X = separate_window_maxima(X, POOL_K)
        return Example({"X": X}, {"k": POOL_K}, 0)

    @property
    def elements(self) -> int:
        """How many input elements the gradient is taken with respect to."""
        ex = self.example()
        return int(sum(ex.inputs[n].size for n in self.identity.wrt))


def plan_cases(
    ops: Sequence[str] | None = None, sizes: Mapping[str, Sequence[int]] | None = None, quick: bool = False
) -> list[BenchCase]:
    """The cases to run: ``ops`` (default all) at ``sizes`` (default :data:`DEFAULT_SIZES`)."""
    table = dict(QUICK_SIZES if quick else DEFAULT_SIZES)
    for op, values in (sizes or {}).items():
        if op not in OP_IDENTITY:
            raise BenchError(f"--size names unknown op {op!r}; choose from {', '.join(BENCH_OPS)}")
        table[op] = tuple(values)
    chosen = list(ops) if ops else list(BENCH_OPS)
    for op in chosen:
        if op not in OP_IDENTITY:
            raise BenchError(f"unknown bench op {op!r}; choose from {', '.join(BENCH_OPS)}")
    return [BenchCase(op, n) for op in chosen for n in sorted(set(table[op]))]


def noise_for(case: BenchCase) -> dict[str, np.ndarray]:
    """The Gaussian directions ``n`` of the detection perturbation (seed 0), per input."""
    rng = np.random.default_rng(0)
    ex = case.example()
    return {n: rng.standard_normal(ex.inputs[n].shape) for n in case.identity.wrt}


def perturb(g: np.ndarray, eps: float, noise: np.ndarray) -> np.ndarray:
    """``g + eps ||g||_2 n / ||n||_2``, in float64, back in ``g``'s dtype; ``g`` itself for eps 0."""
    g64 = np.asarray(g, dtype=np.float64)
    nn = float(np.linalg.norm(noise))
    if eps == 0 or nn == 0:
        return np.array(g, copy=True)
    return (g64 + (eps * float(np.linalg.norm(g64)) / nn) * noise).astype(np.asarray(g).dtype)


def cotangent_for(case: BenchCase, out_shape: tuple[int, ...]) -> np.ndarray:
    """The cotangent ``u`` the plain forward+backward baselines pull back (seed 1)."""
    return np.random.default_rng(1).uniform(-1.0, 1.0, size=out_shape)


# ======================================================================================
# Tools: each knows how to run one check, count its evaluations and be perturbed
# ======================================================================================


class _Counter:
    """Counts framework evaluations made through it."""

    def __init__(self) -> None:
        self.count = 0


class _CountingAdapter:
    """An adapter proxy that counts ``forward`` and ``vjp`` calls."""

    def __init__(self, base: Any, counter: _Counter) -> None:
        self.base, self.counter = base, counter

    def __getattr__(self, attr: str) -> Any:
        if attr in ("base", "counter"):
            raise AttributeError(attr)
        return getattr(self.base, attr)

    def forward(self, fn: Any, inputs: Mapping[str, np.ndarray], dtype: str) -> np.ndarray:
        self.counter.count += 1
        return np.asarray(self.base.forward(fn, inputs, dtype))

    def vjp(
        self, fn: Any, inputs: Mapping[str, np.ndarray], wrt: Sequence[str], cotangent: Any, dtype: str
    ) -> Any:
        self.counter.count += 1
        return self.base.vjp(fn, inputs, wrt, cotangent, dtype)


class _PerturbedAdapter(_CountingAdapter):
    """An adapter whose vjp gradients are perturbed by :func:`perturb` (forward unchanged)."""

    def __init__(self, base: Any, eps: float, noise: Mapping[str, np.ndarray]) -> None:
        super().__init__(base, _Counter())
        self.eps, self.noise = eps, noise

    def vjp(
        self, fn: Any, inputs: Mapping[str, np.ndarray], wrt: Sequence[str], cotangent: Any, dtype: str
    ) -> Any:
        from gradoracle.adapters.base import VJPResult

        result = self.base.vjp(fn, inputs, wrt, cotangent, dtype)
        grads = {n: perturb(np.asarray(result.grads[n]), self.eps, self.noise[n]) for n in wrt}
        return VJPResult(result.output, grads)


class Tool:
    """One way of checking (or just computing) a gradient, set up for one case."""

    name = "tool"
    framework = "numpy"

    def __init__(self, case: BenchCase) -> None:
        self.case = case
        self.ident = case.identity
        self.example = case.example()

    def run(self) -> bool:
        """One check; ``True`` when it accepts the gradient."""
        raise NotImplementedError

    def evaluations(self) -> int | None:
        """Framework evaluations (forward and backward calls) of one check."""
        return None

    def caught(self, eps: float) -> bool:
        """Whether the check rejects the gradient perturbed by ``eps`` (see :func:`perturb`)."""
        raise NotImplementedError


class GradoracleTool(Tool):
    """One :func:`gradoracle.runner.evaluate_example` at the default settings, float64."""

    def __init__(self, case: BenchCase, spec: str) -> None:
        from gradoracle.adapters import load_adapter
        from gradoracle.runner import CheckSettings

        super().__init__(case)
        self.spec = spec
        self.adapter = load_adapter(spec)
        self.framework = str(getattr(self.adapter, "name", spec)).partition("?")[0]
        self.name = f"gradoracle[{self.framework}]"
        self.settings = CheckSettings()

    def _outcome(self, adapter: Any) -> Any:
        from gradoracle.runner import evaluate_example

        return evaluate_example(self.ident, adapter, "float64", self.example, self.settings)

    def run(self) -> bool:
        return bool(self._outcome(self.adapter).passed)

    def evaluations(self) -> int:
        counter = _Counter()
        self._outcome(_CountingAdapter(self.adapter, counter))
        return counter.count

    def caught(self, eps: float) -> bool:
        return not self._outcome(_PerturbedAdapter(self.adapter, eps, noise_for(self.case))).passed


class NumpyFwdBwd(Tool):
    """The NumPy engine's forward+backward (its ``vjp``): the unit of cost of gradoracle[numpy]."""

    name = "fwd+bwd[numpy]"
    framework = "numpy"

    def __init__(self, case: BenchCase) -> None:
        from gradoracle.adapters import load_adapter
        from gradoracle.runner import forward_for

        super().__init__(case)
        self.adapter = load_adapter("numpy")
        self.fn = forward_for(self.ident, self.example.params)
        out = self.ident.reference_forward(self.example.inputs, self.example.params)
        self.u = cotangent_for(case, np.shape(out))

    def run(self) -> bool:
        self.adapter.vjp(self.fn, self.example.inputs, self.ident.wrt, self.u, "float64")
        return True

    def evaluations(self) -> int:
        return 1


class _TorchBase(Tool):
    framework = "torch"

    def __init__(self, case: BenchCase) -> None:
        import torch
        from gradoracle.adapters.torch_adapter import TorchOps

        super().__init__(case)
        self.torch = torch
        self.ops = TorchOps()
        self.names = list(self.ident.wrt)
        inputs = self.example.inputs
        self.consts: dict[str, Any] = {n: torch.tensor(v) for n, v in inputs.items() if n not in self.names}
        self.args = tuple(torch.tensor(inputs[n], requires_grad=True) for n in self.names)
        self.params = self.example.params

    def f(self, *xs: Any) -> Any:
        """The identity's forward as a function of the differentiated inputs."""
        return self.ident.forward(
            self.ops, {**self.consts, **dict(zip(self.names, xs, strict=True))}, self.params
        )

    def _wrapped(self, eps: float, counter: _Counter | None) -> Callable[..., Any]:
        """``f`` as an autograd Function whose backward is perturbed by ``eps`` and counted."""
        torch, f, names = self.torch, self.f, self.names
        noise = noise_for(self.case) if eps else {}

        function: Any = torch.autograd.Function

        class Wrapped(function):
            @staticmethod
            def forward(ctx: Any, *xs: Any) -> Any:
                if counter is not None:
                    counter.count += 1
                with torch.enable_grad():
                    leaves = [x.detach().requires_grad_(True) for x in xs]
                    out = f(*leaves)
                ctx.leaves, ctx.out = leaves, out
                return out.detach().clone()

            @staticmethod
            def backward(ctx: Any, g: Any) -> Any:
                if counter is not None:
                    counter.count += 1
                grads = torch.autograd.grad(ctx.out, ctx.leaves, g, retain_graph=True, allow_unused=True)
                out = []
                for name, leaf, gr in zip(names, ctx.leaves, grads, strict=True):
                    arr = np.zeros(tuple(leaf.shape)) if gr is None else gr.detach().numpy()
                    out.append(torch.tensor(perturb(arr, eps, noise[name]) if eps else arr))
                return tuple(out)

        return Wrapped.apply


class TorchFwdBwd(_TorchBase):
    """PyTorch eager forward + ``torch.autograd.grad``: the unit of cost of torch-based tools."""

    name = "fwd+bwd[torch]"

    def __init__(self, case: BenchCase) -> None:
        super().__init__(case)
        with self.torch.no_grad():
            shape = tuple(self.f(*self.args).shape)
        self.u = self.torch.tensor(cotangent_for(case, shape))

    def run(self) -> bool:
        out = self.f(*self.args)
        self.torch.autograd.grad(out, self.args, self.u)
        return True

    def evaluations(self) -> int:
        return 1


class GradcheckTool(_TorchBase):
    """``torch.autograd.gradcheck`` at its defaults (eps 1e-6, atol 1e-5, rtol 1e-3), slow or fast."""

    def __init__(self, case: BenchCase, fast: bool) -> None:
        super().__init__(case)
        self.fast = fast
        self.name = "gradcheck-fast" if fast else "gradcheck"

    def _check(self, fn: Callable[..., Any]) -> bool:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(
                self.torch.autograd.gradcheck(fn, self.args, fast_mode=self.fast, raise_exception=False)
            )

    def run(self) -> bool:
        return self._check(self.f)

    def evaluations(self) -> int:
        counter = _Counter()
        self._check(self._wrapped(0.0, counter))
        return counter.count

    def caught(self, eps: float) -> bool:
        return not self._check(self._wrapped(eps, None))


@contextlib.contextmanager
def _x64() -> Iterator[None]:
    import jax

    with jax.enable_x64(True):
        yield


class _JaxBase(Tool):
    framework = "jax"

    def __init__(self, case: BenchCase) -> None:
        import jax
        import jax.numpy as jnp
        from gradoracle.adapters.jax_adapter import JaxOps

        super().__init__(case)
        self.jax, self.jnp = jax, jnp
        self.ops = JaxOps()
        self.names = list(self.ident.wrt)
        inputs = self.example.inputs
        with _x64():
            self.consts: dict[str, Any] = {
                n: jnp.asarray(v) for n, v in inputs.items() if n not in self.names
            }
            self.args = tuple(jnp.asarray(inputs[n]) for n in self.names)

    def f(self, *xs: Any) -> Any:
        """The identity's forward as a function of the differentiated inputs."""
        return self.ident.forward(
            self.ops, {**self.consts, **dict(zip(self.names, xs, strict=True))}, self.example.params
        )


class JaxFwdBwd(_JaxBase):
    """``jax.jit`` of ``jax.vjp`` (compiled once, not timed): the unit of cost of JAX-based tools."""

    name = "fwd+bwd[jax]"

    def __init__(self, case: BenchCase) -> None:
        super().__init__(case)
        jax, f = self.jax, self.f
        with _x64():
            out_shape = jax.eval_shape(f, *self.args).shape
            self.u = self.jnp.asarray(cotangent_for(case, tuple(out_shape)))

            def fwd_bwd(args: Any, u: Any) -> Any:
                out, pullback = jax.vjp(f, *args)
                return out, pullback(u)

            self.compiled = jax.jit(fwd_bwd)

    def run(self) -> bool:
        with _x64():
            self.jax.block_until_ready(self.compiled(self.args, self.u))
        return True

    def evaluations(self) -> int:
        return 1


class CheckGradsTool(_JaxBase):
    """``jax.test_util.check_grads(jit(f), order=1, modes=["rev"])`` at JAX's default tolerances."""

    name = "check_grads"

    def __init__(self, case: BenchCase) -> None:
        super().__init__(case)
        with _x64():
            self.jitted = self.jax.jit(self.f)

    def _check(self, fn: Callable[..., Any]) -> bool:
        from jax.test_util import check_grads

        with _x64():
            try:
                check_grads(fn, self.args, order=1, modes=["rev"])
            except AssertionError:
                return False
        return True

    def run(self) -> bool:
        return self._check(self.jitted)

    def evaluations(self) -> int:
        counter = _Counter()
        jitted = self.jitted

        def counted(*xs: Any) -> Any:
            counter.count += 1
            return jitted(*xs)

        self._check(counted)
        return counter.count

    def caught(self, eps: float) -> bool:
        jax, jnp, f = self.jax, self.jnp, self.f
        noise = noise_for(self.case)
        with _x64():

            @jax.custom_vjp
            def g(*xs: Any) -> Any:
                return f(*xs)

            def g_fwd(*xs: Any) -> tuple[Any, Any]:
                return f(*xs), xs

            def g_bwd(xs: Any, ct: Any) -> tuple[Any, ...]:
                _, pullback = jax.vjp(f, *xs)
                grads = pullback(ct)
                out = []
                for name, gr in zip(self.names, grads, strict=True):
                    n = jnp.asarray(noise[name])
                    out.append(gr + eps * jnp.linalg.norm(gr) / jnp.linalg.norm(n) * n)
                return tuple(out)

            g.defvjp(g_fwd, g_bwd)
            return not self._check(jax.jit(g))


def make_tool(name: str, case: BenchCase) -> Tool:
    """The tool called ``name`` (a baseline ``fwd+bwd[fw]``, ``gradoracle[spec]`` or a reference tool)."""
    if name == "fwd+bwd[numpy]":
        return NumpyFwdBwd(case)
    if name == "fwd+bwd[torch]":
        return TorchFwdBwd(case)
    if name == "fwd+bwd[jax]":
        return JaxFwdBwd(case)
    if name.startswith("gradoracle[") and name.endswith("]"):
        return GradoracleTool(case, name[len("gradoracle[") : -1])
    if name in ("gradcheck", "gradcheck-fast"):
        return GradcheckTool(case, fast=name == "gradcheck-fast")
    if name == "check_grads":
        return CheckGradsTool(case)
    raise BenchError(f"unknown bench tool {name!r}")


def tool_framework(name: str) -> str:
    """The framework whose forward+backward is ``name``'s unit of cost."""
    if name.startswith(("fwd+bwd[", "gradoracle[")):
        return name[name.index("[") + 1 : -1].partition("?")[0]
    return TOOL_FRAMEWORK[name]


def framework_available(framework: str) -> tuple[bool, str]:
    """Whether the framework imports here; why not otherwise."""
    import importlib.util

    if framework not in ("torch", "jax"):  # the NumPy engine, or an adapter spec that loads itself
        return True, ""
    if importlib.util.find_spec(framework) is None:
        return False, f"{framework} is not installed"
    return True, ""


# ======================================================================================
# Timing
# ======================================================================================


@dataclass
class Timing:
    """Per-call cost: median CPU and wall seconds, and the first (cold) call apart."""

    cpu_s: float
    wall_s: float
    first_cpu_s: float
    first_wall_s: float
    calls: int
    passed: bool


def time_calls(
    call: Callable[[], bool], repeats: int = 5, min_time_s: float = 0.02, budget_s: float = 30.0
) -> Timing:
    """Time ``call``: one cold call, then ``repeats`` batches of ``k`` calls (``k`` so that a
    batch takes >= ``min_time_s``), within ``budget_s``; the medians per call.

    A call that takes more than half the budget is not repeated: when the cold call
    already does, it is the measurement; otherwise one more call is.
    """
    c0, w0 = time.process_time(), time.perf_counter()
    passed = call()
    first_cpu, first_wall = time.process_time() - c0, time.perf_counter() - w0
    if first_cpu >= budget_s / 2:  # too slow to repeat: the cold call is the measurement
        return Timing(first_cpu, first_wall, first_cpu, first_wall, 1, bool(passed))
    c0, w0 = time.process_time(), time.perf_counter()
    passed = call() and passed
    one_cpu, one_wall = max(time.process_time() - c0, 1e-9), time.perf_counter() - w0
    cpu, wall, calls = [one_cpu], [one_wall], 2
    if one_cpu < budget_s / 2:
        per_batch = max(1, math.ceil(min_time_s / one_cpu))
        batches = max(1, min(repeats, int(budget_s // (one_cpu * per_batch))))
        cpu, wall = [], []
        for _ in range(batches):
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(per_batch):
                call()
            cpu.append((time.process_time() - c0) / per_batch)
            wall.append((time.perf_counter() - w0) / per_batch)
        calls += batches * per_batch
    return Timing(
        cpu_s=float(statistics.median(cpu)),
        wall_s=float(statistics.median(wall)),
        first_cpu_s=first_cpu,
        first_wall_s=first_wall,
        calls=calls,
        passed=bool(passed),
    )


# ======================================================================================
# Results
# ======================================================================================


@dataclass
class Measurement:
    """One tool on one case."""

    tool: str
    framework: str
    status: str  # ok | skipped | unavailable | error
    cpu_s: float | None = None
    wall_s: float | None = None
    first_cpu_s: float | None = None
    estimate_s: float | None = None  # predicted cost of a call that was not run
    ratio: float | None = None  # cpu_s (or estimate_s) / the framework's forward+backward
    evals: int | None = None
    passed: bool | None = None  # the check accepted the correct gradient
    detect_eps: float | None = None  # smallest relative gradient error caught
    detect_status: str = "not measured"  # measured | not measured | never caught | false failure
    note: str = ""

    @property
    def new_shape_s(self) -> float | None:
        """Extra cost of the first call at a new shape (compilation, caches)."""
        if self.first_cpu_s is None or self.cpu_s is None:
            return None
        return max(self.first_cpu_s - self.cpu_s, 0.0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["new_shape_s"] = self.new_shape_s
        return d


@dataclass
class CaseResult:
    """Every tool on one case."""

    op: str
    size: int
    label: str
    identity: str
    elements: int
    measurements: dict[str, Measurement] = field(default_factory=dict)

    def baseline(self, framework: str) -> Measurement | None:
        """The forward+backward measurement of ``framework``."""
        m = self.measurements.get(f"fwd+bwd[{framework}]")
        return m if m is not None and m.status == "ok" else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "size": self.size,
            "label": self.label,
            "identity": self.identity,
            "elements": self.elements,
            "tools": {k: m.to_dict() for k, m in self.measurements.items()},
        }


@dataclass
class BenchConfig:
    """What the bench runs."""

    cases: list[BenchCase]
    adapters: tuple[str, ...] = GRADORACLE_ADAPTERS
    reference_tools: tuple[str, ...] = REFERENCE_TOOLS
    repeats: int = 5
    min_time_s: float = 0.02
    max_seconds: float = 10.0
    detection: bool = True
    threads: int | None = 1

    @property
    def tools(self) -> list[str]:
        """Column order: baselines, gradoracle per adapter, reference tools."""
        frameworks = [
            f
            for f in FRAMEWORKS
            if f in {a.partition("?")[0] for a in self.adapters}
            or any(TOOL_FRAMEWORK[t] == f for t in self.reference_tools)
        ]
        return (
            [f"fwd+bwd[{f}]" for f in frameworks]
            + [f"gradoracle[{a}]" for a in self.adapters]
            + list(self.reference_tools)
        )


@dataclass
class BenchReport:
    """The whole bench: environment, settings, per-case results, the targets."""

    config: dict[str, Any]
    environment: dict[str, Any]
    cases: list[CaseResult]
    duration_s: float
    load_average: dict[str, list[float] | None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "gradoracle-bench/1",
            "config": self.config,
            "environment": self.environment,
            "load_average": self.load_average,
            "duration_s": self.duration_s,
            "cases": [c.to_dict() for c in self.cases],
            "targets": targets(self),
        }


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# ======================================================================================
# Running
# ======================================================================================


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


def _detect(tool: Tool, m: Measurement, budget_s: float) -> None:
    """Walk :data:`DETECTION_GRID` down until the tool misses; record the smallest caught."""
    if m.cpu_s is not None and m.cpu_s * len(DETECTION_GRID) > budget_s:
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
    result = CaseResult(case.op, case.size, case.label, case.identity.name, case.elements)
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
                    m.ratio = est / base.cpu_s
                continue
        try:
            tool = make_tool(name, case)
            timing = time_calls(tool.run, config.repeats, config.min_time_s, config.max_seconds)
            m.cpu_s, m.wall_s, m.first_cpu_s, m.passed = (
                timing.cpu_s,
                timing.wall_s,
                timing.first_cpu_s,
                timing.passed,
            )
            if m.cpu_s < config.max_seconds / 3:
                m.evals = tool.evaluations()
            if base is not None and base.cpu_s and not name.startswith("fwd+bwd"):
                m.ratio = m.cpu_s / base.cpu_s
            elif name.startswith("fwd+bwd"):
                m.ratio = 1.0
            if config.detection and not name.startswith("fwd+bwd"):
                _detect(tool, m, config.max_seconds)
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


# ======================================================================================
# Targets and rendering
# ======================================================================================


def _cpu(case: CaseResult, tool: str) -> float | None:
    m = case.measurements.get(tool)
    return m.cpu_s if m is not None and m.status == "ok" else None


#: "Flat as sizes grow": the check's ratio at the largest size at most this multiple of the
#: ratio at the smallest size (and the same number of evaluations at every size).
FLAT_GROWTH = 1.5


def _target(text: str, value: float | None, unit: str, met: bool | None) -> dict[str, Any]:
    return {"target": text, "value": value, "unit": unit, "met": met}


def targets(report: BenchReport) -> list[dict[str, Any]]:
    """The issue's cost targets that a bench run measures, each with its value and verdict."""
    out: list[dict[str, Any]] = []
    adapters = [a.partition("?")[0] for a in report.config.get("adapters", [])]
    by_key = {(c.op, c.size): c for c in report.cases}
    for op, size in TARGET_CASES:
        case = by_key.get((op, size))
        for a in adapters if case is not None else []:
            assert case is not None
            m = case.measurements.get(f"gradoracle[{a}]")
            ratio = m.ratio if m is not None and m.status == "ok" else None
            text = f"gradoracle[{a}] check <= {TARGET_RATIO:g}x forward+backward at {case.label}"
            out.append(_target(text, ratio, "x", None if ratio is None else ratio <= TARGET_RATIO))
    for a in adapters:
        tool = f"gradoracle[{a}]"
        for op in dict.fromkeys(c.op for c in report.cases):
            ms = [c.measurements[tool] for c in report.cases if c.op == op and tool in c.measurements]
            ms = [m for m in ms if m.status == "ok" and m.ratio is not None and m.evals is not None]
            sizes = [c.size for c in report.cases if c.op == op and tool in c.measurements]
            if len(ms) < 2 or not ms[0].ratio:
                continue
            growth = float(ms[-1].ratio or 0.0) / float(ms[0].ratio)
            evals = [m.evals for m in ms]
            text = (
                f"{tool} flat as {op} grows ({sizes[0]} -> {sizes[-1]}): evaluations "
                f"{evals[0]} -> {evals[-1]}, ratio {ms[0].ratio:.3g}x -> {ms[-1].ratio:.3g}x "
                f"(growth <= {FLAT_GROWTH:g})"
            )
            out.append(_target(text, growth, "growth", len(set(evals)) == 1 and growth <= FLAT_GROWTH))
    news = [
        m.new_shape_s
        for c in report.cases
        for m in [c.measurements.get("gradoracle[jax]")]
        if m is not None and m.new_shape_s is not None
    ]
    if news:
        worst = max(news)
        text = (
            f"JAX: a new input shape costs <= {TARGET_NEW_SHAPE_S * 1e3:g} ms (worst case: first "
            "gradoracle[jax] check at a shape minus a repeated one)"
        )
        out.append(_target(text, worst, "s", worst <= TARGET_NEW_SHAPE_S))
    return out


def fmt_seconds(s: float | None) -> str:
    """``12 us``, ``3.4 ms``, ``1.2 s``."""
    if s is None:
        return ""
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def fmt_ratio(m: Measurement | None) -> str:
    """The cost cell of a tool: ``12x``, ``~3e4x (est.)``, or the status."""
    if m is None:
        return ""
    if m.status == "skipped" and m.ratio is not None:
        return f"~{m.ratio:.2g}x est."
    if m.status != "ok":
        return m.status
    if m.ratio is None:
        return fmt_seconds(m.cpu_s)
    text = f"{m.ratio:.3g}x" if m.ratio < 1000 else f"{m.ratio:,.0f}x"
    return text if m.passed in (True, None) else f"{text} (FAILED)"


def fmt_detect(m: Measurement | None) -> str:
    """The detection cell: the smallest relative gradient error caught."""
    if m is None or m.status != "ok":
        return ""
    if m.detect_status == "measured" and m.detect_eps is not None:
        floor = m.detect_eps <= DETECTION_GRID[-1]  # caught all the way down the grid
        return f"{'<=' if floor else ''}{m.detect_eps:.0e}"
    return {"never caught": "none", "false failure": "false fail", "not measured": "-"}.get(
        m.detect_status, ""
    )


def markdown(report: BenchReport, command: str = "gradoracle bench") -> str:
    """``bench.md``: the side-by-side tables, the targets, how it was measured."""
    tools = _tool_columns(report)
    lines = [
        "# gradoracle bench",
        "",
        f"Command: `{command}`; float64; {report.config.get('clock')}; torch threads "
        f"{report.config.get('torch_threads')}; load average at start {report.load_average.get('start')}, "
        f"at end {report.load_average.get('end')}; {report.duration_s:.0f} s in all.",
        "",
        "## Cost of one check, as a multiple of one forward+backward of the same op",
        "",
        "Each cell: CPU time of one check / CPU time of one plain forward+backward in the tool's "
        "framework (PyTorch eager autograd; JAX `jit(vjp)`, compiled once; the NumPy engine's vjp). "
        "`est.`: not run, predicted from the previous size.",
        "",
    ]
    base_cols = [t for t in tools if t.startswith("fwd+bwd")]
    check_cols = [t for t in tools if not t.startswith("fwd+bwd")]
    header = ["case", "elements", *base_cols, *check_cols]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in report.cases:
        row = [c.label, str(c.elements)]
        row += [fmt_seconds(_cpu(c, t)) for t in base_cols]
        row += [fmt_ratio(c.measurements.get(t)) for t in check_cols]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "## Evaluations per check and detection power",
        "",
        "Evaluations: framework calls (forwards and backwards) of one check.  Detection: the smallest "
        "relative gradient error `eps` (gradient replaced by `g + eps ||g|| n/||n||`) the check still "
        "rejects, on the grid 1e-1 .. 1e-14 (`<=1e-14`: caught down to the grid's end; `none`: not even "
        "1e-1; `-`: not measured).",
        "",
    ]
    header = ["case", *[f"{t} evals" for t in check_cols], *[f"{t} catches" for t in check_cols]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in report.cases:
        ms = [c.measurements.get(t) for t in check_cols]
        row = [c.label]
        row += ["" if m is None or m.evals is None else str(m.evals) for m in ms]
        row += [fmt_detect(m) for m in ms]
        lines.append("| " + " | ".join(row) + " |")
    new_shape = [(c.label, c.measurements.get("gradoracle[jax]")) for c in report.cases]
    if any(m is not None and m.new_shape_s is not None for _, m in new_shape):
        lines += ["", "## JAX: first check at a new shape (compilation) minus a repeated check", ""]
        lines += ["| case | first check | repeated check | new-shape cost |", "|---|---|---|---|"]
        for label, m in new_shape:
            if m is not None and m.status == "ok":
                lines.append(
                    f"| {label} | {fmt_seconds(m.first_cpu_s)} | {fmt_seconds(m.cpu_s)} | "
                    f"{fmt_seconds(m.new_shape_s)} |"
                )
    lines += ["", "## Targets (issue 7)", "", "| target | measured | met |", "|---|---|---|"]
    for t in targets(report):
        value = t["value"]
        shown = "" if value is None else (fmt_seconds(value) if t["unit"] == "s" else f"{value:.3g}")
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "no")
        lines.append(f"| {t['target']} | {shown} | {met} |")
    notes = [(c.label, m.tool, m.note) for c in report.cases for m in c.measurements.values() if m.note]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {label}, {tool}: {note}" for label, tool, note in notes]
    return "\n".join(lines) + "\n"


def _tool_columns(report: BenchReport) -> list[str]:
    seen: dict[str, None] = {}
    for c in report.cases:
        for t in c.measurements:
            seen.setdefault(t, None)
    return list(seen)


def write_bench(report: BenchReport, out: Path, command: str = "gradoracle bench") -> list[Path]:
    """Write ``bench.json`` and ``bench.md`` into ``out`` (atomically)."""
    import json

    from gradoracle.reporting.atomic import atomic_write_text

    data = report.to_dict()
    data["command"] = command
    return [
        atomic_write_text(out / "bench.json", json.dumps(data, indent=2, default=str) + "\n"),
        atomic_write_text(out / "bench.md", markdown(report, command)),
    ]
