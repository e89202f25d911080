"""JAX adapter: runs an identity's forward with ``jax.numpy`` / ``jax.nn`` / ``lax``.

Reverse mode is ``jax.vjp``, forward mode ``jax.jvp``.  Importing this module does not
import jax; it is imported on first use.

float64 without touching global state
    JAX computes in float32 unless ``jax_enable_x64`` is on.  ``jax.config.update`` would
    switch it for the whole process, so float64 work runs inside ``jax.enable_x64(True)``,
    JAX's scoped (thread-local) context manager for that flag.  Everything - the
    conversion of the inputs, the forward, the vjp/jvp and the conversion back - happens
    inside the block; afterwards the caller's setting is back (``jnp.zeros(1).dtype``
    is float32 again in a default process).  float32 work does not touch the flag.

Eager or jit
    ``JaxAdapter(jit="auto" | "always" | "never")``.  ``never`` runs ``jax.vjp`` /
    ``jax.jvp`` / the forward eagerly (op by op).  ``always`` wraps each in ``jax.jit``,
    cached per (fn, input shapes, wrt/tangent names, dtype).  ``auto`` (default) runs a
    key eagerly until it has been seen ``AUTO_JIT_AFTER`` times, then compiles it: a
    Hypothesis example with a fresh shape never pays a compile, while the finite
    difference forward, called dozens of times on one shape, gets compiled once.
    The jit modes assume ``fn`` is a pure function of its inputs (the usual JAX rule);
    state it closes over is baked in when it is traced.

    Measured on the development machine (2 CPU cores, jax 0.10.2 CPU, float64, median
    ms per call; script ``python -m adapters.jax_adapter`` = :func:`_benchmark`):

    ================================== ======== ========= =============== ===========
    case                               eager    eager     jit             jit
                                       repeated new shape new shape       repeated
    ================================== ======== ========= =============== ===========
    vjp, 128x128 matvec (W @ x)        BENCH1
    vjp, 64x64 conv2d k=3 -> sum       BENCH2
    forward, 128x128 matvec            BENCH3
    forward, 64x64 conv2d k=3          BENCH4
    ================================== ======== ========= =============== ===========

Outputs come back as writable NumPy copies in the dtype JAX produced (the adapter never
casts, so a framework that silently changes dtype is visible to the runner).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import Any

import numpy as np

from adapters.base import AdapterBase, ForwardFn, VJPResult
from oracle.ops import ELU_ALPHA, LEAKY_RELU_SLOPE

__all__ = ["AUTO_JIT_AFTER", "JaxAdapter", "JaxOps"]

#: In ``jit="auto"`` mode, a (fn, shapes, dtype) key is compiled on this many-th call.
AUTO_JIT_AFTER = 3
#: How many compiled functions (and call counters) are kept, least recently used first out.
CACHE_SIZE = 256
JIT_MODES: tuple[str, ...] = ("auto", "always", "never")


class JaxOps:
    """The :mod:`oracle.ops` namespace spelled with ``jax.numpy``, ``jax.nn`` and ``lax``."""

    def __init__(self) -> None:
        import jax
        import jax.numpy as jnp
        from jax import lax

        self._jax = jax
        self._jnp = jnp
        self._lax = lax

    def matmul(self, a: Any, b: Any) -> Any:
        """``a @ b`` via ``jnp.matmul``."""
        return self._jnp.matmul(a, b)

    def add(self, a: Any, b: Any) -> Any:
        """``a + b``."""
        return a + b

    def relu(self, x: Any) -> Any:
        """``max(0, x)`` via ``jax.nn.relu``."""
        return self._jax.nn.relu(x)

    def leaky_relu(self, x: Any) -> Any:
        """``x if x > 0 else 0.01 x`` via ``jax.nn.leaky_relu``."""
        return self._jax.nn.leaky_relu(x, negative_slope=LEAKY_RELU_SLOPE)

    def sigmoid(self, x: Any) -> Any:
        """``1 / (1 + exp(-x))`` via ``jax.nn.sigmoid``."""
        return self._jax.nn.sigmoid(x)

    def tanh(self, x: Any) -> Any:
        """``tanh(x)``."""
        return self._jnp.tanh(x)

    def exp(self, x: Any) -> Any:
        """``exp(x)``."""
        return self._jnp.exp(x)

    def log(self, x: Any) -> Any:
        """``log(x)``."""
        return self._jnp.log(x)

    def softplus(self, x: Any) -> Any:
        """``log(1 + exp(x))`` via ``jax.nn.softplus``."""
        return self._jax.nn.softplus(x)

    def sin(self, x: Any) -> Any:
        """``sin(x)``."""
        return self._jnp.sin(x)

    def square(self, x: Any) -> Any:
        """``x * x`` via ``jnp.square``."""
        return self._jnp.square(x)

    def abs(self, x: Any) -> Any:
        """``|x|`` via ``jnp.abs``."""
        return self._jnp.abs(x)

    def elu(self, x: Any) -> Any:
        """``x if x > 0 else exp(x) - 1`` via ``jax.nn.elu`` (alpha 1)."""
        return self._jax.nn.elu(x, alpha=ELU_ALPHA)

    def silu(self, x: Any) -> Any:
        """``x * sigmoid(x)`` via ``jax.nn.silu``."""
        return self._jax.nn.silu(x)

    def gelu(self, x: Any) -> Any:
        """``x/2 (1 + erf(x / sqrt 2))`` via ``jax.nn.gelu(x, approximate=False)``.

        (``jax.nn.gelu`` defaults to the tanh approximation; the exact form is asked for.)
        """
        return self._jax.nn.gelu(x, approximate=False)

    def softmax_cross_entropy(self, logits: Any, target: Any) -> Any:
        """``-sum_k y_k log softmax(z)_k`` via ``jax.nn.log_softmax`` (stable)."""
        return -self._jnp.sum(target * self._jax.nn.log_softmax(logits))

    def conv2d(self, x: Any, k: Any) -> Any:
        """Valid cross-correlation ``Z[u,v] = sum_{a,b} X[u+a,v+b] K[a,b]``.

        ``lax.conv_general_dilated`` on NCHW / OIHW views, padding ``VALID``; like every
        deep-learning "convolution" it does not flip the kernel.
        """
        out = self._lax.conv_general_dilated(x[None, None], k[None, None], (1, 1), "VALID")
        return out[0, 0]

    def max_pool2d(self, x: Any, k: int, stride: int | None = None) -> Any:
        """Max over k x k windows, stride ``s`` (default k), floor mode: ``lax.reduce_window(max)``."""
        s = k if stride is None else stride
        return self._lax.reduce_window(x, -self._jnp.inf, self._lax.max, (k, k), (s, s), "VALID")

    def avg_pool2d(self, x: Any, k: int, stride: int | None = None) -> Any:
        """Mean over k x k windows, stride ``s`` (default k), floor mode: ``reduce_window(add) / k^2``."""
        s = k if stride is None else stride
        total = self._lax.reduce_window(x, 0.0, self._lax.add, (k, k), (s, s), "VALID")
        return total / (k * k)

    def sum(self, x: Any) -> Any:
        """Sum of all elements (0-D) via ``jnp.sum``."""
        return self._jnp.sum(x)

    def maximum_zero(self, x: Any) -> Any:
        """``jnp.maximum(x, 0)``."""
        return self._jnp.maximum(x, 0)

    def clamp_min_zero(self, x: Any) -> Any:
        """``jnp.clip(x, min=0)``."""
        return self._jnp.clip(x, min=0)


class JaxAdapter(AdapterBase):
    """JAX under test: ``jax.vjp`` for ``u^T J``, ``jax.jvp`` for ``J v``.

    ``jit`` is ``"auto"`` (default), ``"always"`` or ``"never"`` (see the module docstring).
    """

    name = "jax"
    dtypes = ("float64", "float32")
    has_jvp = True

    def __init__(self, jit: str = "auto") -> None:
        jit = str(jit).strip().lower()
        if jit not in JIT_MODES:
            raise ValueError(f"jax adapter: jit={jit!r}; use one of {', '.join(JIT_MODES)}")
        self.jit = jit
        self._lock = threading.Lock()
        self._compiled: OrderedDict[tuple[Any, ...], Callable[..., Any]] = OrderedDict()
        self._seen: OrderedDict[tuple[Any, ...], int] = OrderedDict()

    # -- availability, ops, conversions ---------------------------------------------------

    def available(self) -> tuple[bool, str]:
        """``(True, "")`` when jax imports, else ``(False, why)``."""
        try:
            import jax  # noqa: F401
        except ImportError as exc:
            return False, f"jax is not installed ({exc}); pip install 'gradoracle[jax]'"
        return True, ""

    @cached_property
    def ops(self) -> JaxOps:
        """The JAX ops namespace (imports jax on first access)."""
        return JaxOps()

    def supported_ops(self) -> frozenset[str]:
        """All of :data:`oracle.ops.ALL_OPS`."""
        from oracle.ops import ALL_OPS

        return frozenset(ALL_OPS)

    @contextmanager
    def precision(self, dtype: str) -> Iterator[None]:
        """Scope in which ``dtype`` arrays can be made: ``jax.enable_x64(True)`` for float64."""
        if dtype not in self.dtypes:
            raise ValueError(f"jax adapter: unsupported dtype {dtype!r}; use one of {self.dtypes}")
        if dtype == "float64":
            import jax

            with jax.enable_x64(True):
                yield
        else:
            yield

    def from_numpy(self, a: np.ndarray, dtype: str) -> Any:
        """A JAX array of ``dtype``.

        A float64 array made here stays float64, but JAX ops on it outside
        :meth:`precision` compute in float32; ``forward``/``vjp``/``jvp`` handle this.
        """
        import jax.numpy as jnp

        with self.precision(dtype):
            return jnp.asarray(np.asarray(a), dtype=dtype)

    def to_numpy(self, t: Any) -> np.ndarray:
        """A writable NumPy copy of ``t`` in its own dtype."""
        return np.array(t, copy=True)

    # -- jit cache ------------------------------------------------------------------------

    def _runner(self, key: tuple[Any, ...], build: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
        """``build()`` itself (eager) or its ``jax.jit``, per the jit mode and the key's history."""
        if self.jit == "never":
            return build()
        try:
            hash(key)
        except TypeError:  # an unhashable fn cannot be cached: run it eagerly
            return build()
        with self._lock:
            compiled = self._compiled.get(key)
            if compiled is not None:
                self._compiled.move_to_end(key)
                return compiled
            if self.jit == "auto":
                count = self._seen.pop(key, 0) + 1
                if count < AUTO_JIT_AFTER:
                    self._seen[key] = count
                    while len(self._seen) > CACHE_SIZE:
                        self._seen.popitem(last=False)
                    return build()
            import jax

            compiled = jax.jit(build())
            self._compiled[key] = compiled
            while len(self._compiled) > CACHE_SIZE:
                self._compiled.popitem(last=False)
            return compiled

    @staticmethod
    def _shapes(inputs: Mapping[str, np.ndarray]) -> tuple[tuple[str, tuple[int, ...]], ...]:
        return tuple(sorted((name, tuple(np.shape(a))) for name, a in inputs.items()))

    # -- forward, vjp, jvp ----------------------------------------------------------------

    def forward(self, fn: ForwardFn, inputs: Mapping[str, np.ndarray], dtype: str) -> np.ndarray:
        """``fn(ops, inputs)`` evaluated by JAX, as NumPy."""
        ops = self.ops

        def build() -> Callable[..., Any]:
            def run(args: dict[str, Any]) -> Any:
                return fn(ops, args)

            return run

        with self.precision(dtype):
            run = self._runner(("forward", fn, self._shapes(inputs), dtype), build)
            args = {k: self.from_numpy(v, dtype) for k, v in inputs.items()}
            return self.to_numpy(run(args))

    def vjp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangent: np.ndarray,
        dtype: str,
    ) -> VJPResult:
        """Output and ``u^T J`` for each name in ``wrt`` via ``jax.vjp``; other inputs are constants."""
        unknown = [name for name in wrt if name not in inputs]
        if unknown:
            raise KeyError(f"jax adapter: wrt names {unknown} are not inputs ({sorted(inputs)})")
        ops = self.ops
        names = tuple(wrt)

        def build() -> Callable[..., Any]:
            import jax

            def run(diff: dict[str, Any], const: dict[str, Any], u: Any) -> tuple[Any, Any]:
                out, pullback = jax.vjp(lambda d: fn(ops, {**const, **d}), diff)
                if tuple(u.shape) != tuple(out.shape):
                    raise ValueError(
                        f"jax adapter: cotangent shape {tuple(u.shape)} != output shape {tuple(out.shape)}"
                    )
                (grads,) = pullback(u.astype(out.dtype))
                return out, grads

            return run

        with self.precision(dtype):
            run = self._runner(("vjp", fn, self._shapes(inputs), names, dtype), build)
            args = {k: self.from_numpy(v, dtype) for k, v in inputs.items()}
            diff = {name: args[name] for name in names}
            const = {k: v for k, v in args.items() if k not in diff}
            out, grads = run(diff, const, self.from_numpy(np.asarray(cotangent), dtype))
            return VJPResult(
                output=self.to_numpy(out),
                grads={name: self.to_numpy(grads[name]) for name in names},
            )

    def jvp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        tangents: Mapping[str, np.ndarray],
        dtype: str,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Output and ``J v`` via ``jax.jvp``; inputs without a tangent are constants."""
        unknown = [name for name in tangents if name not in inputs]
        if unknown:
            raise KeyError(f"jax adapter: tangent names {unknown} are not inputs ({sorted(inputs)})")
        ops = self.ops
        names = tuple(sorted(tangents))

        def build() -> Callable[..., Any]:
            import jax

            def run(primal: dict[str, Any], const: dict[str, Any], tangent: dict[str, Any]) -> Any:
                return jax.jvp(lambda p: fn(ops, {**const, **p}), (primal,), (tangent,))

            return run

        with self.precision(dtype):
            run = self._runner(("jvp", fn, self._shapes(inputs), names, dtype), build)
            args = {k: self.from_numpy(v, dtype) for k, v in inputs.items()}
            primal = {name: args[name] for name in names}
            const = {k: v for k, v in args.items() if k not in primal}
            tangent = {name: self.from_numpy(np.asarray(tangents[name]), dtype) for name in names}
            for name in names:
                if tangent[name].shape != primal[name].shape:
                    raise ValueError(
                        f"jax adapter: tangent {name!r} has shape {tangent[name].shape}, "
                        f"input has {primal[name].shape}"
                    )
            out, jv = run(primal, const, tangent)
            return self.to_numpy(out), self.to_numpy(jv)



def _benchmark(calls: int = 15, dtype: str = "float64") -> list[tuple[str, float, float, float, float]]:
    """Median ms per call: (case, eager repeated, eager new shape, jit new shape, jit repeated).

    Used for the table in the module docstring; run it with
    ``python -c "from adapters.jax_adapter import _benchmark; print(*_benchmark(), sep='\\n')"``.
    "new shape" grows the inputs by one row and column on every call, as Hypothesis does;
    "repeated" calls one shape again.  Each figure includes the NumPy conversions.
    """
    import time

    rng = np.random.default_rng(0)

    def matvec(ops: Any, v: Mapping[str, Any]) -> Any:
        return ops.matmul(v["W"], v["x"])

    def conv(ops: Any, v: Mapping[str, Any]) -> Any:
        return ops.sum(ops.conv2d(v["X"], v["K"]))

    def matvec_inputs(i: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        n = 128 + i
        return {"W": rng.standard_normal((n, n)), "x": rng.standard_normal(n)}, rng.standard_normal(n)

    def conv_inputs(i: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        n = 64 + i
        return {"X": rng.standard_normal((n, n)), "K": rng.standard_normal((3, 3))}, np.array(1.0)

    cases: list[tuple[str, ForwardFn, Callable[[int], tuple[dict[str, np.ndarray], np.ndarray]], str]] = [
        ("vjp 128x128 matvec", matvec, matvec_inputs, "vjp"),
        ("vjp 64x64 conv k=3 -> sum", conv, conv_inputs, "vjp"),
        ("forward 128x128 matvec", matvec, matvec_inputs, "forward"),
        ("forward 64x64 conv k=3", conv, conv_inputs, "forward"),
    ]
    rows = []
    for label, fn, make, kind in cases:
        data = [make(i) for i in range(calls + 1)]
        figures = []
        for mode, fresh in (("never", False), ("never", True), ("always", True), ("always", False)):
            adapter = JaxAdapter(jit=mode)

            def call(i: int, adapter: JaxAdapter = adapter, kind: str = kind, fn: ForwardFn = fn) -> Any:
                inputs, u = data[i]
                if kind == "forward":
                    return adapter.forward(fn, inputs, dtype)
                return adapter.vjp(fn, inputs, list(inputs), u, dtype)

            call(0)  # warm-up: imports, first dispatch, and the compile for "repeated"
            times = []
            for i in range(1, calls + 1):
                t0 = time.perf_counter()
                call(i if fresh else 0)
                times.append(time.perf_counter() - t0)
            figures.append(float(np.median(times)) * 1e3)
        rows.append((label, *figures))
    return rows
