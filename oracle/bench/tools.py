"""The bench's tools: each knows how to run one check, count its evaluations and be perturbed.

The plain forward+backward baselines (NumPy engine, PyTorch, JAX), a gradoracle check per
adapter, ``torch.autograd.gradcheck`` and ``jax.test_util.check_grads``; torch and jax are
imported only when a tool is built.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from gradoracle.bench.cases import TOOL_FRAMEWORK, BenchCase, BenchError, cotangent_for, noise_for, perturb


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

    def detection_problem(self) -> str:
        """Why :meth:`caught` must not be run on this case ('' when it can be)."""
        return ""


def steady_state_spec(spec: str) -> str:
    """The adapter spec the bench times for ``spec``: ``jax`` becomes ``jax?combine=off``.

    The bench repeats one reverse-mode check at one shape, a long run's steady state, in which
    the JAX adapter answers each kind with its own program (``COMBINE_HOT_ROWS``); timing the
    combined program there would time its warm-up.  The default report's combined programs
    are what ``--report-timing`` measures."""
    return "jax?combine=off" if spec.strip() == "jax" else spec


class GradoracleTool(Tool):
    """One :func:`gradoracle.runner.evaluate_example` at the default settings, float64."""

    def __init__(self, case: BenchCase, spec: str) -> None:
        from gradoracle.adapters import load_adapter
        from gradoracle.runner import CheckSettings

        super().__init__(case)
        self.spec = spec
        self.adapter = load_adapter(steady_state_spec(spec))
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


#: Examples a ``gradoracle-batch[...]`` tool evaluates per call (its cost is per example).
BATCH_EXAMPLES = 32
#: At most this many input elements over the examples of one batched call: the examples'
#: finite-difference points are all held at once (32 examples of linear 1024, 1M elements
#: each, took over 20 GB), and above 65k elements per example the runner answers them one
#: call at a time anyway, so fewer examples measure the same per-example cost.
BATCH_MAX_ELEMENTS = 1 << 21


def batch_examples(elements: int) -> int:
    """Examples per batched call for inputs of ``elements``: ``min(32, 2^21 // elements)``, >= 1."""
    return max(1, min(BATCH_EXAMPLES, BATCH_MAX_ELEMENTS // max(elements, 1)))


class GradoracleBatchTool(GradoracleTool):
    """:func:`batch_examples` examples (32 up to 65k input elements) of the case's shape evaluated
    as one batch (:func:`gradoracle.runner.evaluate_examples`); the timing is divided by their
    number, so the cost is per example, as in a check of that many examples.  The examples share
    the case's inputs and differ in their seed: each has its own cotangent and directions."""

    examples_per_call = BATCH_EXAMPLES

    def __init__(self, case: BenchCase, spec: str) -> None:
        super().__init__(case, spec)
        self.name = f"gradoracle-batch[{self.framework}]"
        base = self.example
        self.examples_per_call = batch_examples(case.elements)
        self.examples = [type(base)(base.inputs, base.params, i) for i in range(self.examples_per_call)]

    def _outcomes(self, adapter: Any) -> list[Any]:
        from gradoracle.runner import evaluate_examples

        return evaluate_examples(self.ident, adapter, "float64", self.examples, self.settings)

    def run(self) -> bool:
        return all(o.passed for o in self._outcomes(self.adapter))

    def evaluations(self) -> int:
        counter = _Counter()
        self._outcomes(_CountingAdapter(self.adapter, counter))
        return round(counter.count / self.examples_per_call)

    def caught(self, eps: float) -> bool:
        return not all(
            o.passed for o in self._outcomes(_PerturbedAdapter(self.adapter, eps, noise_for(self.case)))
        )


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

    def detection_problem(self) -> str:
        """Fast mode that rejects a gradient builds the full numerical and analytical Jacobians
        for its error message (torch's slow mode): too large to hold beyond
        :data:`JACOBIAN_MAX_BYTES` (linear 1024: 8.6 GB each)."""
        out = self.ident.reference_forward(self.example.inputs, self.example.params)
        size = 8 * self.case.elements * max(int(np.size(out)), 1)
        if self.fast and size > JACOBIAN_MAX_BYTES:
            return (
                f"detection not measured: a failing fast gradcheck builds the full Jacobian for its "
                f"message ({size / 2**30:.1f} GiB in float64)"
            )
        return ""


#: The largest Jacobian (bytes, float64) the bench lets gradcheck build while measuring detection.
JACOBIAN_MAX_BYTES = 1 << 31


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
    if name.startswith("gradoracle-batch[") and name.endswith("]"):
        return GradoracleBatchTool(case, name[len("gradoracle-batch[") : -1])
    if name.startswith("gradoracle[") and name.endswith("]"):
        return GradoracleTool(case, name[len("gradoracle[") : -1])
    if name in ("gradcheck", "gradcheck-fast"):
        return GradcheckTool(case, fast=name == "gradcheck-fast")
    if name == "check_grads":
        return CheckGradsTool(case)
    raise BenchError(f"unknown bench tool {name!r}")


def tool_framework(name: str) -> str:
    """The framework whose forward+backward is ``name``'s unit of cost."""
    if name.startswith(("fwd+bwd[", "gradoracle[", "gradoracle-batch[")):
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
