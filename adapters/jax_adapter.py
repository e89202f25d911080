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
    ``JaxAdapter(jit="auto" | "always" | "never")`` (``--adapter 'jax?jit=always'``).
    ``never`` runs ``jax.vjp`` / ``jax.jvp`` / the forward eagerly, op by op.  ``always``
    wraps each in ``jax.jit`` on its first call, cached per (fn object, input shapes,
    wrt/tangent names, dtype).  ``auto`` (default) compiles a key once it has been
    called :data:`AUTO_JIT_AFTER` times (now 1: on its first call, see below) and runs a
    ``fn`` that jit cannot trace (Python ``if`` on array values) eagerly from then on;
    ``always`` raises JAX's ``ConcretizationTypeError`` for it.  Compiled functions, call
    counts and untraceable fns are kept per ops namespace: a compiled vjp bakes in the ops
    namespace it was traced with, so two adapters (say ``jax`` and a subclass whose
    ``sigmoid`` is a ``jax.custom_vjp``) must never share one, whatever ``fn`` and shapes
    they are handed.  Plain ``JaxAdapter`` instances with the stock ops share one cache per
    (jit mode, conv padding) in a process, so the checks of a report (a fresh adapter each)
    reuse what earlier checks compiled; a subclass, or an instance whose ops were replaced,
    keeps its own (``JaxAdapter._jit_cache``).  The jit
    modes assume ``fn`` is a pure function of its inputs: state it closes over is baked
    in when it is traced.

    What decided it (jax 0.10.2 CPU, float64, a shared 2-core machine at load 5-7, so
    process CPU time in ms; ``_benchmark()`` at the bottom of this module)::

        per call (median of 15)       eager      eager       jit         jit
                                      repeated   new shape   new shape   repeated
        vjp 128x128 matvec              0.84       83          60         0.20
        forward 128x128 matvec          0.13       28          29         0.13
        vjp 64x64 conv k=3 -> sum       3.1       263         132         0.34
        forward 64x64 conv k=3 -> sum   0.32        9.4        56         0.16

        per Hypothesis-like example   never      always      auto
        (new fn object, small shapes
        that sometimes recur, 1 vjp +
        40 forwards; mean of 40-60)
        MLP, dims 1..8                145-180    230-270     150-190
        conv, k 1..4, H,W k..10       145-225    115-150     150-230

    Eager JAX compiles every primitive once per new shape (a new shape costs an eager
    vjp more than one jit compile of the whole vjp), but those per-primitive caches are
    global, while a jit cache entry belongs to one ``fn`` object and one shape.  With
    Hypothesis' small, recurring shapes and a new ``fn`` per example the two come out
    within ~1.5x of each other, eager ahead on the multi-op MLP and jit on the conv; the
    finite-difference forward never amortises a compile over the ~10-200 calls an
    example makes.  For scale, the torch adapter spends ~7-9 ms CPU on the same
    examples: XLA compilation is JAX's whole cost here.

    That table was for a new ``fn`` per example and every size in a range.  The runner
    now passes one ``fn`` per (identity, parameters) and :mod:`gradoracle.strategies` draws
    shapes from small menus, so keys recur, and compiling on the first call wins.
    Measured (process CPU, load 2.5-3.5) on relu, gelu, matvec-weight-grad, mlp,
    mlp-a-logits, conv-input, max-pool and avg-pool x float64, float32 x 100 examples,
    a fresh adapter per check as a report runs them::

        eager (never)                                  35.3 s
        auto, eager for the first 32 vjp / 256 fwd    36.6 s
        auto, eager for the first 2 calls              48.2 s   (eager compiles every
                                                                  primitive, then jit
                                                                  compiles it all again)
        jit on the first call (auto now, always)       25.0 s
          with XLA_FLAGS below                         12.3 s   (never: 25.7 s)

    ``XLA_FLAGS="--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true
    --xla_cpu_use_fusion_emitters=false"`` makes each XLA compilation ~3x cheaper (vjp of
    the MLP 159 -> 53 ms, of conv-input 87 -> 25 ms; forward 80 -> 33 ms).  It changes
    how XLA generates code (LLVM optimisation off, legacy fusion emitters), not what the
    program computes; the adapter never sets it (it is process-wide and must be set
    before JAX starts): a front-end or the user may.  JAX's persistent compilation cache
    cuts a repeated run's compilations ~10x (a jitted vjp at a new shape 231 -> 23 ms); it
    is on by default in the user's cache directory (:mod:`gradoracle.adapters.jax_cache`:
    ``GRADORACLE_JAX_CACHE=off`` turns it off, a path moves it).

One program for every mode
    ``JaxAdapter(combine=True)`` (default; ``--adapter 'jax?combine=off'``): with jit on, an
    example of at most :data:`COMBINE_MAX_ELEMENTS` input elements is answered by one compiled
    program per (fn, input shapes, differentiated names, dtype) that returns the output, the
    vjp, the jvp and both Hessian-vector products, each computed by the same JAX
    transformation as when asked alone; the reverse, forward and second-order checks of a
    shape then build one program, not four.  A fn it cannot serve (a ``custom_vjp`` has no
    jvp) gets one program per kind from its first failure on, and errors are those of the
    per-kind program.

    A run that checks fewer modes says so (:meth:`JaxAdapter.plan_modes`, called by the
    runner with the modes of its matrix): the combined program then holds only those modes'
    parts, and a run of one mode builds no combined program at all (its own program is that
    mode's).  A reverse-mode-only report of the notes' identities spent most of its JAX time
    tracing the forward-mode and second-order parts it never used.

    The finite differences of a reverse-mode check evaluate the forward at many points in
    float64 (``forward_batch``).  With ``combine`` on, a small float64 input's ``vjp_batch``
    runs a vmapped program whatever its number of rows, and that program with a zero
    cotangent answers the ``forward_batch`` of the same fn and shapes: its output is the
    forward JAX computes under ``jax.vjp``.  A shape then builds one float64 program where it
    built two (the vjp, then the forward for the finite differences): about a third of a
    reverse-mode report's programs (:data:`SHARED_FD_ELEMENTS`).

Seen at non-differentiable points (jax 0.10.2, vjp): relu'(0) = 0, leaky_relu'(0) = 1,
abs'(0) = 1, elu'(0) = 1, ``jnp.maximum(x, 0)`` and ``jnp.clip(x, min=0)`` at 0 split
0.5/0.5; a ``reduce_window`` max-pool window with tied maxima routes the whole gradient
to the first maximum in row-major order (vjp and jvp alike).

Outputs come back as writable NumPy copies in the dtype JAX produced (the adapter never
casts, so a framework that silently changes dtype is visible to the runner).
"""

from __future__ import annotations

import functools
import gc
import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import Any, TypeVar

import numpy as np

from gradoracle.adapters.base import (
    AdapterBase,
    ForwardFn,
    VJPResult,
    check_hvp_request,
    check_tangent_names,
    check_wrt_names,
)
from gradoracle.adapters.jax_cache import configure_persistent_cache
from gradoracle.ops import ELU_ALPHA, LEAKY_RELU_SLOPE

T = TypeVar("T")


def _settles(method: Callable[..., T]) -> Callable[..., T]:
    """A batched method made once more when the combined program gave up on its ``fn`` during it.

    A ``fn`` the combined program cannot serve (a ``jax.custom_vjp`` op has no jvp) is found out
    by its first call, whose rows are then answered by the per-example programs; every later call
    of those shapes runs the vmapped program of its own kind, whose last bits may differ, so the
    two calls the runner makes of one example (does the vjp repeat itself?) disagreed: a correct
    ``custom_vjp`` reported as a nondeterministic adapter.  Calling again answers this call as
    every later one is answered (once per ``fn``)."""

    @functools.wraps(method)
    def settled(self: JaxAdapter, fn: ForwardFn, *args: Any, **kwargs: Any) -> T:
        before = self._gave_up_on(fn)
        result = method(self, fn, *args, **kwargs)
        if not before and self._gave_up_on(fn):
            result = method(self, fn, *args, **kwargs)
        return result

    return settled


__all__ = [
    "AUTO_JIT_AFTER",
    "CONV_PADDING_MODES",
    "JIT_MODES",
    "JaxAdapter",
    "JaxOps",
    "batch_chunk",
    "clear_cache",
]

#: In ``jit="auto"`` mode, the call (1 = first) on which a (fn, shapes, dtype) key of
#: ``vjp``/``jvp`` and of ``forward`` is compiled (module docstring: first call is best).
AUTO_JIT_AFTER: dict[str, int] = {
    "vjp": 1,
    "jvp": 1,
    "hvp": 1,
    "forward": 1,
    "vjp_batch": 1,
    "forward_batch": 1,
    "jvp_batch": 1,
    "hvp_batch": 1,
    "combined": 1,
    "combined_batch": 1,
}
#: How many compiled functions (and call counters) are kept, least recently used first out.
CACHE_SIZE = 1024
#: A count alone does not bound what compiled programs hold: XLA's CPU code for one program
#: takes memory maps per kernel (about 140 for ``jax.scipy.linalg.expm`` of a 3x3 matrix), and a
#: process past the kernel's limit (``vm.max_map_count``, 65,530 by default on Linux) aborts in
#: LLVM ("Unable to allocate section memory"), taking every result of the run with it.  So every
#: :data:`MAP_CHECK_EVERY` programs a cache counts the process's maps, and past
#: :data:`MAP_SHARE` of the limit it drops its least recently used half (:func:`_relieve_maps`).
MAP_SHARE = 0.5
MAP_CHECK_EVERY = 8
JIT_MODES: tuple[str, ...] = ("auto", "always", "never")
#: How ``conv_nd`` passes explicit zero padding: ``pad`` (default) pads the input with
#: ``jnp.pad`` and convolves ``VALID``; ``lax`` hands the pads to ``conv_general_dilated``.
#: They compute the same function, but with ``lax`` the input gradient of some strided
#: convolutions aborts the process in XLA (jax 0.10.2, CPU, float32 and float64, eager and
#: jit): ``jax.vjp(lambda x: lax.conv_general_dilated(x, K, (2, 2), [(0, 0), (1, 1)]), x)``
#: with x (1, 1, 5, 4), K (1, 1, 3, 2), then calling the vjp ends in ``Check failed:
#: computation->Accept(this) ... Window dimensions do not match RHS shape``.  An abort cannot
#: be caught in-process, so the default keeps a one-process report alive;
#: ``--adapter 'jax?conv_padding=lax'`` (with ``--jobs 2``, which pins a dead worker on its
#: check) puts lax's own padding under test.
CONV_PADDING_MODES: tuple[str, ...] = ("pad", "lax")


#: Rows per batched call (examples or finite-difference points) at most, and the number of
#: input elements a chunk may hold before it gets fewer rows (:func:`batch_chunk`).
BATCH_ROWS = 32
BATCH_ELEMENTS = 2**18


#: One example whose inputs hold at most this many elements is differentiated by one compiled
#: program per (fn, input shapes, differentiated names, dtype) that returns the output, the vjp,
#: the jvp and both Hessian-vector products at once (``combine``, on by default): the reverse,
#: forward and second-order checks of a shape then share one program instead of building four,
#: and building one program has a fixed cost (tracing, MLIR lowering, XLA compilation or a
#: persistent-cache load) that dominates at these sizes.  Measured on an MLP forward of 20
#: shapes (jax 0.10.2, CPU, float64, median per shape, load ~2.8): four programs 711 ms cold /
#: 76-90 ms with a warm persistent cache, the combined one 415 ms / 35-38 ms; the vjp alone
#: 20 ms warm, so a run that checks reverse mode only pays ~1.7x more for its programs
#: (``--adapter 'jax?combine=off'`` avoids that).  Each call still computes what it
#: asks for with JAX's own transformations (``jax.vjp``, ``jax.jvp``, the two Hessian-vector
#: product compositions); the unused results of a call cost microseconds at this size, and
#: larger inputs get a program per kind as before.
COMBINE_MAX_ELEMENTS = 2**12
#: A kind (vjp, jvp, hvp) at one (fn, shapes, dtype) leaves the combined program for a program
#: of its own once the combined one has answered this many of its examples: the combined
#: program saves building programs, but each of its calls computes every part (a vjp call at
#: linear 32x32 made a batched reverse-mode check 69x one forward+backward instead of 21x in
#: ``gradoracle bench``), so a long run at one shape - the false-positive campaign, a
#: benchmark, thousands of examples - pays one more program and then runs each kind alone.
#: The default report stays below it: at most 443 examples of one kind at one shape (the
#: finite differences of the second-order check ask for many vjps in float64).
COMBINE_HOT_ROWS = 1024
#: The kinds a combined program serves; in ``auto`` mode it is used only while each of them is
#: compiled on its first call (:data:`AUTO_JIT_AFTER`).
_COMBINED_KINDS = ("vjp", "jvp", "hvp", "vjp_batch", "jvp_batch", "hvp_batch", "combined", "combined_batch")
#: The modes whose parts a combined program can hold (:meth:`JaxAdapter.plan_modes`).
_COMBINABLE_MODES = ("vjp", "jvp", "hvp")
_ON = frozenset({"1", "on", "true", "yes"})
_OFF = frozenset({"0", "off", "false", "no"})


#: Below this many input elements per chunk, padding costs nothing worth a second program.
SMALL_CHUNK_ELEMENTS = 2**14
#: A batched call of a (kind, fn, shapes, dtype) whose *first* call brings fewer rows than
#: this runs the single-example program row by row, then and on every later call (so each
#: kind and shape still builds one program, which the other modes' calls reuse); one whose
#: first call brings more uses a ``vmap``-ed program.  XLA compiles a vmapped program
#: 1.2-1.9x slower than the plain one (vjp of conv3d-layer 6.5 s vs 3.8 s for six
#: configurations, hvp 9.4 vs 5.8 s; one process), and most hyper-parameter configurations
#: of a layer identity occur once per check, so for a few rows the plain program is the
#: cheaper one to build; running it row by row costs ~0.1-0.5 ms per row.
VMAP_MIN_ROWS = 8
#: A float64 ``vjp_batch`` of inputs whose full chunk holds at most this many elements runs
#: its vmapped program even for a few rows, and that program answers the finite-difference
#: ``forward_batch`` of the same fn and shapes (zero cotangent; ``combine`` on, module
#: docstring): per shape one program, 16-17 ms to build with a warm persistent cache and
#: 68-85 ms cold, in place of the plain vjp and the vmapped forward, 21-24 ms and 106-129 ms
#: (jax 0.10.2 CPU, an MLP and gelu on 12 shapes each, median per shape, load below 1).
SHARED_FD_ELEMENTS = SMALL_CHUNK_ELEMENTS


def _rows(tree: Any) -> int:
    """The leading (batch) dimension of the first array of a pytree of NumPy arrays."""
    if isinstance(tree, Mapping):
        return _rows(next(iter(tree.values()))) if tree else 0
    return int(np.shape(tree)[0])


def _row(arrays: Mapping[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    return {k: np.asarray(v)[i] for k, v in arrays.items()}


def _full_chunk(shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, int]:
    """``(rows of a full chunk, input elements per row)`` for one example's input shapes: the
    largest power of two rows, at most :data:`BATCH_ROWS`, within :data:`BATCH_ELEMENTS`."""
    per_row = max(1, sum(int(np.prod(s)) for s in shapes.values()))
    full = 1
    while full * 2 <= BATCH_ROWS and full * 2 * per_row <= BATCH_ELEMENTS:
        full *= 2
    return full, per_row


def batch_chunk(shapes: Mapping[str, tuple[int, ...]], rows: int | None = None) -> int:
    """Rows per batched call for one example's input shapes: a power of two, at most
    :data:`BATCH_ROWS`, with at most :data:`BATCH_ELEMENTS` input elements per call.

    Small inputs (every identity of the default report: a full chunk holds at most
    :data:`SMALL_CHUNK_ELEMENTS` elements) always get the full chunk, padded, so each
    shape compiles one batched program whatever the number of ``rows``; larger inputs get
    the smallest power of two that holds ``rows`` (a 128x128 matrix at most 8, a
    1024x1024 one 1), since there the arithmetic padding would multiply is the cost."""
    full, per_row = _full_chunk(shapes)
    if rows is None or full * per_row <= SMALL_CHUNK_ELEMENTS:
        return full
    need = 1
    while need < min(rows, full):
        need *= 2
    return need


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    """``cache[key] = value`` as the most recent entry, dropping the oldest past :data:`CACHE_SIZE`."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > CACHE_SIZE:
        cache.popitem(last=False)


class _JitCache:
    """One adapter's compiled functions, call counts (``auto`` mode) and fns jit cannot trace."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.compiled: OrderedDict[tuple[Any, ...], Callable[..., Any]] = OrderedDict()
        self.seen: OrderedDict[tuple[Any, ...], int] = OrderedDict()
        self.untraceable: OrderedDict[Any, bool] = OrderedDict()
        self.vmapped: OrderedDict[tuple[Any, ...], bool] = OrderedDict()
        #: fns whose combined program failed (a ``custom_vjp`` has no jvp): one program per kind
        self.uncombined: OrderedDict[Any, bool] = OrderedDict()
        #: examples answered by a combined program per (kind, fn, per-row shapes, dtype)
        self.uses: OrderedDict[tuple[Any, ...], int] = OrderedDict()
        #: output shape per (fn, input shapes, dtype), for a combined jvp's unused cotangent
        self.out_shapes: OrderedDict[tuple[Any, ...], tuple[int, ...]] = OrderedDict()
        #: (wrt names, output shape) of the vmapped float64 vjp program per (fn, per-row
        #: shapes, dtype) that also answers finite-difference forwards (SHARED_FD_ELEMENTS)
        self.fd_vjp: OrderedDict[tuple[Any, ...], tuple[tuple[str, ...], tuple[int, ...]]] = OrderedDict()
        #: programs compiled, and how often the memory maps' budget dropped half of them
        self.compiles = 0
        self.relieved = 0

    def clear(self) -> None:
        """Forget everything."""
        with self.lock:
            self.compiled.clear()
            self.seen.clear()
            self.untraceable.clear()
            self.vmapped.clear()
            self.uncombined.clear()
            self.uses.clear()
            self.out_shapes.clear()
            self.fd_vjp.clear()


#: What a stock :class:`JaxOps` holds in its instance dict (its padding, cached modules).
_STOCK_OPS_STATE = frozenset({"conv_padding", "_jax", "_jnp", "_lax"})
_SHARED_CACHES: dict[tuple[str, str], _JitCache] = {}
_SHARED_LOCK = threading.Lock()


def _shared_cache(jit: str, conv_padding: str) -> _JitCache:
    """The process-wide cache of plain :class:`JaxAdapter` instances with these options."""
    with _SHARED_LOCK:
        cache = _SHARED_CACHES.get((jit, conv_padding))
        if cache is None:
            cache = _SHARED_CACHES[(jit, conv_padding)] = _JitCache()
        return cache


def _compile(
    cache: _JitCache, key: tuple[Any, ...], build: Callable[[], Callable[..., Any]]
) -> Callable[..., Any]:
    """``jax.jit(build())``, remembered under ``key`` (the caller holds ``cache.lock``)."""
    import jax

    cache.compiles += 1
    if cache.compiles % MAP_CHECK_EVERY == 0:
        _relieve_maps(cache)
    compiled: Callable[..., Any] = jax.jit(build())
    _remember(cache.compiled, key, compiled)
    return compiled


@functools.cache
def _map_limit() -> int | None:
    """The kernel's limit on a process's memory maps (``/proc/sys/vm/max_map_count``), or None
    where there is none to read (not Linux)."""
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _memory_maps() -> tuple[int, int] | None:
    """``(maps this process holds, the kernel's limit)`` on Linux, else None."""
    limit = _map_limit()
    if limit is None:
        return None
    try:
        with open("/proc/self/maps", "rb") as f:
            return f.read().count(b"\n"), limit
    except OSError:
        return None


def _relieve_maps(cache: _JitCache) -> None:
    """Past :data:`MAP_SHARE` of the kernel's limit on memory maps, drop the least recently used
    half of ``cache``'s compiled programs (their code is unmapped once nothing holds them); a
    dropped program is compiled again if asked for (from JAX's persistent cache when it is on)."""
    maps = _memory_maps()
    if maps is None or maps[0] <= MAP_SHARE * maps[1]:
        return
    for _ in range(len(cache.compiled) // 2):
        cache.compiled.popitem(last=False)
    cache.relieved += 1
    gc.collect()  # jit objects in reference cycles would keep their code mapped until then


def _cast(arrays: Mapping[str, Any], dtype: str) -> dict[str, np.ndarray]:
    """Each array as NumPy in ``dtype`` (no copy when it already is)."""
    return {k: np.asarray(v, dtype=dtype) for k, v in arrays.items()}


def _primal_const_tangent(
    inputs: Mapping[str, np.ndarray],
    tangents: Mapping[str, np.ndarray],
    names: Sequence[str],
    dtype: str,
    batched: bool | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``inputs`` cast to ``dtype`` and split into the differentiated ``names`` (primal) and the
    rest (constants), with their tangents cast alike.  With ``batched`` set, a tangent whose shape
    is not its input's raises ``ValueError`` (shapes named per example when ``batched``)."""
    args = _cast(inputs, dtype)
    primal = {name: args[name] for name in names}
    const = {k: v for k, v in args.items() if k not in primal}
    tangent = _cast({name: tangents[name] for name in names}, dtype)
    if batched is not None:
        skip = 1 if batched else 0
        for name in names:
            if tangent[name].shape != primal[name].shape:
                raise ValueError(
                    f"jax adapter: tangent {name!r} has shape {tangent[name].shape[skip:]}, "
                    f"input has {primal[name].shape[skip:]}"
                )
    return primal, const, tangent


def _to_jax(tree: Any) -> Any:
    """The NumPy arrays of a pytree as JAX arrays (in the current precision scope)."""
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(jnp.asarray, tree)


def _tree_to_numpy(adapter: JaxAdapter, tree: Any) -> Any:
    """A result part (an array or a dict name -> array) as writable NumPy copies."""
    if isinstance(tree, Mapping):
        return {k: adapter.to_numpy(v) for k, v in tree.items()}
    return adapter.to_numpy(tree)


def clear_cache(adapter: JaxAdapter) -> None:
    """Forget every compiled function, call count and untraceable fn of ``adapter``."""
    adapter._jit_cache.clear()


class JaxOps:
    """The :mod:`gradoracle.ops` namespace spelled with ``jax.numpy``, ``jax.nn`` and ``lax``."""

    def __init__(self, conv_padding: str = "pad") -> None:
        self.conv_padding = conv_padding

    # jax is imported on the first op, not when the namespace is made: merely looking at an
    # adapter's ``ops`` (``hasattr(adapter, "ops")``) must not import the framework.

    @cached_property
    def _jax(self) -> Any:
        import jax

        return jax

    @cached_property
    def _jnp(self) -> Any:
        import jax.numpy as jnp

        return jnp

    @cached_property
    def _lax(self) -> Any:
        from jax import lax

        return lax

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

    # ---- layers as frameworks ship them (gradoracle.ops.LAYER_OPS) ---------------------
    # Written as a Flax/optax user writes them: ``x @ w + b``, ``log_softmax`` with one-hot
    # targets smoothed like ``optax.smooth_labels``, ``lax.conv_general_dilated`` and
    # ``lax.reduce_window``.  JAX has no ``ceil_mode`` or ``count_include_pad``: they are
    # spelled with explicit padding and a divisor counted by a ``reduce_window`` over ones
    # (PyTorch's divisors, which gradoracle.ops adopts; Flax's ``avg_pool`` divides a
    # partial window by the full window instead, see the convention probes).

    def linear(self, x: Any, w: Any, b: Any) -> Any:
        """``x @ w^T + b`` (w is (out, in), PyTorch's layout; b None: no bias)."""
        z = self._jnp.matmul(x, w.T)
        return z if b is None else z + b

    def dense(self, x: Any, w: Any, b: Any) -> Any:
        """``x @ w + b`` (w is (in, out)), as ``flax.linen.Dense`` computes it (``lax.dot_general``;
        b None: ``use_bias=False``, no bias added)."""
        y = self._lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))
        return y if b is None else y + b

    def cross_entropy(
        self, logits: Any, target: Any, reduction: str = "mean", label_smoothing: float = 0.0
    ) -> Any:
        """``-sum t~ log_softmax(z)`` per row, then mean or sum; indices one-hot via ``jax.nn.one_hot``."""
        jnp = self._jnp
        classes = logits.shape[-1]
        if target.ndim == 1:
            t = self._jax.nn.one_hot(target.astype(jnp.int32), classes, dtype=logits.dtype)
        else:
            t = target
        if label_smoothing:
            t = (1.0 - label_smoothing) * t + label_smoothing / classes
        losses = -jnp.sum(t * self._jax.nn.log_softmax(logits, axis=-1), axis=-1)
        return jnp.mean(losses) if reduction == "mean" else jnp.sum(losses)

    def conv_nd(
        self,
        x: Any,
        k: Any,
        b: Any,
        stride: tuple[int, ...],
        padding: tuple[int, ...] | str,
        dilation: tuple[int, ...],
        groups: int,
    ) -> Any:
        """``lax.conv_general_dilated`` (N C spatial / O I spatial), "SAME" or explicit pads, plus bias."""
        if isinstance(padding, str):
            pads: Any = "SAME"
        elif self.conv_padding == "lax":
            pads = [(int(p), int(p)) for p in padding]
        else:  # zero-pad first, then a VALID convolution (see CONV_PADDING_MODES)
            x = self._jnp.pad(x, [(0, 0), (0, 0), *((int(p), int(p)) for p in padding)])
            pads = "VALID"
        z = self._lax.conv_general_dilated(
            x, k, tuple(stride), pads, rhs_dilation=tuple(dilation), feature_group_count=groups
        )
        if b is None:
            return z
        return z + b.reshape((1, -1) + (1,) * (x.ndim - 2))

    @staticmethod
    def _pool_pads(
        spatial: tuple[int, ...],
        window: tuple[int, ...],
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        dilation: tuple[int, ...],
        ceil_mode: bool,
    ) -> list[tuple[int, int]]:
        """``(p, p + overhang)`` per axis: ceil mode as extra right padding (PyTorch's output length)."""
        pads = []
        for n, w, s, p, d in zip(spatial, window, stride, padding, dilation, strict=True):
            span = n + 2 * p - d * (w - 1) - 1
            out = (-(-span // s) if ceil_mode else span // s) + 1
            if ceil_mode and (out - 1) * s >= n + p:
                out -= 1
            pads.append((p, p + max(0, (out - 1) * s + d * (w - 1) + 1 - (n + 2 * p))))
        return pads

    def max_pool_nd(
        self,
        x: Any,
        window: tuple[int, ...],
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        dilation: tuple[int, ...],
        ceil_mode: bool,
    ) -> Any:
        """``lax.reduce_window(max)`` with -inf padding; with dilation, a max over shifted slices.

        jax 0.10.2 has no VJP for ``reduce_window`` max with ``window_dilation > 1``
        (``NotImplementedError: VJP not implemented for select_and_gather (MaxPool) with
        window dilation``), so a dilated window is spelled as a JAX user works around it:
        ``jnp.max`` over the stacked strided slices ``Xpad[..., a d : : s]`` (its gradient
        splits a tie evenly instead of routing it to the first maximum).
        """
        jnp = self._jnp
        pads = self._pool_pads(tuple(x.shape[2:]), window, stride, padding, dilation, ceil_mode)
        if any(d > 1 for d in dilation):
            xp = jnp.pad(x, [(0, 0), (0, 0), *pads], constant_values=-jnp.inf)
            out = [
                (n + lo + hi - d * (w - 1) - 1) // s + 1
                for n, (lo, hi), w, s, d in zip(x.shape[2:], pads, window, stride, dilation, strict=True)
            ]
            slices = []
            for offset in itertools.product(*(range(w) for w in window)):
                index = tuple(
                    slice(a * d, a * d + s * (o - 1) + 1, s)
                    for a, d, s, o in zip(offset, dilation, stride, out, strict=True)
                )
                slices.append(xp[(slice(None), slice(None), *index)])
            return jnp.max(jnp.stack(slices), axis=0)
        return self._lax.reduce_window(
            x,
            -self._jnp.inf,
            self._lax.max,
            (1, 1, *window),
            (1, 1, *stride),
            [(0, 0), (0, 0), *pads],
            window_dilation=(1, 1, *dilation),
        )

    def avg_pool_nd(
        self,
        x: Any,
        window: tuple[int, ...],
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> Any:
        """``reduce_window(add)`` divided by a ``reduce_window(add)`` over ones (padding counted or not)."""
        jnp, lax = self._jnp, self._lax
        spatial = tuple(x.shape[2:])
        pads = self._pool_pads(spatial, window, stride, padding, (1,) * len(window), ceil_mode)
        total = lax.reduce_window(x, 0.0, lax.add, (1, 1, *window), (1, 1, *stride), [(0, 0), (0, 0), *pads])
        if count_include_pad:  # ones over [-p, S + p): the padding counts, the ceil-mode overhang does not
            ones = jnp.ones(tuple(n + 2 * p for n, p in zip(spatial, padding, strict=True)), dtype=x.dtype)
            count_pads = [(0, hi - lo) for lo, hi in pads]
        else:
            ones = jnp.ones(spatial, dtype=x.dtype)
            count_pads = pads
        count = lax.reduce_window(ones, 0.0, lax.add, tuple(window), tuple(stride), count_pads)
        return total / count

    def global_avg_pool(self, x: Any) -> Any:
        """``jnp.mean`` over the spatial axes."""
        return self._jnp.mean(x, axis=tuple(range(2, x.ndim)))

    # ---- kinks (#13) -----------------------------------------------------------------

    def maximum(self, a: Any, b: Any) -> Any:
        """``jnp.maximum(a, b)`` (a tie splits the gradient 1/2 : 1/2)."""
        return self._jnp.maximum(a, b)

    def clamp(self, x: Any, lo: float, hi: float) -> Any:
        """``jnp.clip(x, lo, hi)`` (1/2 at a bound)."""
        return self._jnp.clip(x, lo, hi)


class JaxAdapter(AdapterBase):
    """JAX under test: ``jax.vjp`` for ``u^T J``, ``jax.jvp`` for ``J v``.

    ``jit`` is ``"auto"`` (default), ``"always"`` or ``"never"`` (see the module docstring).
    ``combine`` (default on; ``--adapter 'jax?combine=off'``): small inputs get one compiled
    program for vjp, jvp and both Hessian-vector products (:data:`COMBINE_MAX_ELEMENTS`).
    """

    name = "jax"
    dtypes = ("float64", "float32")
    has_jvp = True
    hvp_methods = ("reverse-over-reverse", "forward-over-reverse")
    #: the modes the combined program serves (:meth:`plan_modes`); all of them by default
    _planned_modes: tuple[str, ...] = _COMBINABLE_MODES

    def __init__(self, jit: str = "auto", conv_padding: str = "pad", combine: bool | str = True) -> None:
        flag = str(combine).strip().lower()
        if flag not in _ON | _OFF:
            raise ValueError(
                f"jax adapter: combine={combine!r}; use on or off (e.g. --adapter 'jax?combine=off')"
            )
        self.combine = flag in _ON
        jit = str(jit).strip().lower()
        if jit not in JIT_MODES:
            raise ValueError(f"jax adapter: jit={jit!r}; use one of {', '.join(JIT_MODES)}")
        self.jit = jit
        conv_padding = str(conv_padding).strip().lower()
        if conv_padding not in CONV_PADDING_MODES:
            raise ValueError(
                f"jax adapter: conv_padding={conv_padding!r}; use one of {', '.join(CONV_PADDING_MODES)}"
            )
        self.conv_padding = conv_padding
        # This adapter's own jit state, used unless it is a plain JaxAdapter (_jit_cache).
        self._own_cache = _JitCache()

    def plan_modes(self, modes: Iterable[str]) -> None:
        """Prepare for checks of ``modes`` (of vjp, jvp, hvp): the combined program holds the
        parts of these modes only, and none is built for a single mode.  Unknown names are
        ignored; none known restores the default (every mode)."""
        asked = set(modes)
        planned = tuple(m for m in _COMBINABLE_MODES if m in asked)
        self._planned_modes = planned or _COMBINABLE_MODES

    @property
    def _jit_cache(self) -> _JitCache:
        """Where this adapter keeps its compiled functions.

        A plain :class:`JaxAdapter` whose ops namespace is the stock :class:`JaxOps` shares one
        cache per (jit mode, conv padding) with every other such instance in the process: the
        functions it compiles hold the same ops, so a report's checks (one fresh adapter per
        check) reuse what earlier checks compiled instead of compiling each program again.
        Anything else - a subclass (its ops may differ: a ``custom_vjp`` sigmoid), an instance
        whose ``ops`` or op methods were replaced - keeps its own (module docstring).
        """
        if type(self) is JaxAdapter:
            ops = self.__dict__.get("ops")
            if ops is None or (
                type(ops) is JaxOps
                and set(vars(ops)) <= _STOCK_OPS_STATE
                and ops.conv_padding == self.conv_padding
            ):
                return _shared_cache(self.jit, self.conv_padding)
        return self._own_cache

    @property
    def _compiled(self) -> OrderedDict[tuple[Any, ...], Callable[..., Any]]:
        return self._jit_cache.compiled

    @property
    def _untraceable(self) -> OrderedDict[Any, bool]:
        return self._jit_cache.untraceable

    # -- availability, ops, conversions ---------------------------------------------------

    def available(self) -> tuple[bool, str]:
        """``(True, "")`` when jax imports, else ``(False, why)``."""
        try:
            import jax  # noqa: F401
        except ImportError as exc:
            return False, f"jax is not installed ({exc}); pip install 'gradoracle[jax]'"
        configure_persistent_cache()
        return True, ""

    @cached_property
    def ops(self) -> JaxOps:
        """The JAX ops namespace (jax is imported by its first op)."""
        return JaxOps(self.conv_padding)

    def supported_ops(self) -> frozenset[str]:
        """All of :data:`gradoracle.ops.ALL_OPS`."""
        from gradoracle.ops import ALL_OPS

        return frozenset(ALL_OPS)

    @contextmanager
    def precision(self, dtype: str) -> Iterator[None]:
        """Scope in which ``dtype`` arrays can be made: ``jax.enable_x64(True)`` for float64."""
        if dtype not in self.dtypes:
            raise ValueError(f"jax adapter: unsupported dtype {dtype!r}; use one of {self.dtypes}")
        configure_persistent_cache()  # before JAX's first compilation (idempotent, cheap)
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

    def _call(self, key: tuple[Any, ...], build: Callable[[], Callable[..., Any]], *args: Any) -> Any:
        """``build()(*args)``, eagerly or through a cached ``jax.jit`` per the mode (module docstring).

        ``args`` are pytrees of NumPy arrays already in the dtype: a compiled function
        takes them as they are (jit's own transfer is ~50 us cheaper per call than
        ``jnp.asarray`` of each input), the eager path converts them to JAX arrays first
        (so that every op is JAX's).  Call inside :meth:`precision`.

        ``key`` is ``(kind, fn, shapes, names..., dtype)`` in this adapter's own cache
        (never another adapter's: the compiled code holds this adapter's ops).  In
        ``auto`` mode a ``fn`` that jit cannot trace (Python control flow on array values)
        runs eagerly from then on.
        """
        if self.jit == "never":
            return build()(*_to_jax(args))
        kind, fn = key[0], key[1]
        try:
            hash(key)
        except TypeError:  # an unhashable fn cannot be cached: run it eagerly
            return build()(*_to_jax(args))
        cache = self._jit_cache
        with cache.lock:
            compiled = cache.compiled.get(key)
            if compiled is not None:
                cache.compiled.move_to_end(key)
            elif self.jit == "auto":
                count = cache.seen.pop(key, 0) + 1
                if fn in cache.untraceable or count < AUTO_JIT_AFTER.get(kind, 1):
                    _remember(cache.seen, key, count)
                else:
                    compiled = _compile(cache, key, build)
            else:
                compiled = _compile(cache, key, build)
        if compiled is None:
            return build()(*_to_jax(args))
        if self.jit == "always":
            return compiled(*args)
        import jax

        untraceable = (
            jax.errors.ConcretizationTypeError,
            jax.errors.TracerArrayConversionError,
            jax.errors.TracerIntegerConversionError,
        )
        try:
            return compiled(*args)
        except untraceable:
            with cache.lock:
                cache.compiled.pop(key, None)
                _remember(cache.untraceable, fn, True)
            return build()(*_to_jax(args))

    @staticmethod
    def _shapes(inputs: Mapping[str, np.ndarray], skip: int = 0) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """(name, shape) of each input, by name; ``skip=1``: per row of a batch."""
        return tuple(sorted((name, tuple(np.shape(a))[skip:]) for name, a in inputs.items()))

    # -- forward, vjp, jvp ----------------------------------------------------------------

    def forward(self, fn: ForwardFn, inputs: Mapping[str, np.ndarray], dtype: str) -> np.ndarray:
        """``fn(ops, inputs)`` evaluated by JAX, as NumPy."""
        ops = self.ops

        def build() -> Callable[..., Any]:
            def run(args: dict[str, Any]) -> Any:
                return fn(ops, args)

            return run

        with self.precision(dtype):
            args = _cast(inputs, dtype)
            return self.to_numpy(
                self._call(("forward", fn, self._shapes(inputs), dtype, self.conv_padding), build, args)
            )

    def vjp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangent: np.ndarray,
        dtype: str,
    ) -> VJPResult:
        """Output and ``u^T J`` for each name in ``wrt`` via ``jax.vjp``; other inputs are constants."""
        check_wrt_names("jax", inputs, wrt)
        names = tuple(wrt)
        both = self._combined(fn, inputs, names, cotangent, None, dtype, "vjp", ("out", "grads"))
        if both is not None:
            return VJPResult(output=both["out"], grads={n: both["grads"][n] for n in names})

        def build() -> Callable[..., Any]:
            return self._vjp_function(fn)

        with self.precision(dtype):
            args = _cast(inputs, dtype)
            diff = {name: args[name] for name in names}
            const = {k: v for k, v in args.items() if k not in diff}
            u = np.asarray(cotangent, dtype=dtype)
            out, grads = self._call(
                ("vjp", fn, self._shapes(inputs), names, dtype, self.conv_padding), build, diff, const, u
            )
            return VJPResult(
                output=self.to_numpy(out),
                grads={name: self.to_numpy(grads[name]) for name in names},
            )

    # -- batches (gradoracle.batching) ------------------------------------------------------

    def _vmap(
        self, kind: str, fn: ForwardFn, inputs: Mapping[str, np.ndarray], *extra: Any, always: bool = False
    ) -> bool:
        """Whether a batched call runs a vmapped program (see :data:`VMAP_MIN_ROWS`; ``always``:
        whatever the rows): decided by the first call of this kind, fn, per-row shapes and
        ``extra``, then kept."""
        rows = _rows(inputs)
        key = (kind, fn, self._shapes(inputs, 1), *extra)
        cache = self._jit_cache
        try:
            with cache.lock:
                decided = cache.vmapped.get(key)
                if decided is None:
                    decided = always or rows >= VMAP_MIN_ROWS
                _remember(cache.vmapped, key, decided)
        except TypeError:  # an unhashable fn: nothing is cached for it anyway
            return always or rows >= VMAP_MIN_ROWS
        return decided

    def _shares_fd(self, inputs: Mapping[str, np.ndarray], dtype: str) -> bool:
        """Whether the vmapped vjp program of this batch's per-row shapes also answers the
        finite-difference forwards (:data:`SHARED_FD_ELEMENTS`): float64, jit and ``combine`` on."""
        if dtype != "float64" or not self.combine or self.jit == "never":
            return False
        full, per_row = _full_chunk({k: tuple(np.shape(v))[1:] for k, v in inputs.items()})
        return full * per_row <= SHARED_FD_ELEMENTS

    def _fd_vjp(self, fn: ForwardFn, inputs: Mapping[str, np.ndarray], dtype: str) -> Any:
        """``(names, output shape)`` of the vmapped vjp program that answers this forward batch,
        or ``None`` (no such program: the forward gets its own)."""
        if not self._shares_fd(inputs, dtype):
            return None
        try:
            with self._jit_cache.lock:
                return self._jit_cache.fd_vjp.get((fn, self._shapes(inputs, 1), dtype))
        except TypeError:  # an unhashable fn
            return None

    def _in_chunks(
        self,
        kind: str,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        build: Callable[[], Callable[..., Any]],
        extra: tuple[Any, ...],
        dtype: str,
        *batched: Any,
    ) -> list[Any]:
        """``jit(vmap(...))`` over rows of ``batched`` pytrees, in chunks of one fixed size.

        Every call of a shape uses the same chunk size (:func:`batch_chunk`), the last
        chunk padded by repeating its first row, so a shape costs one compiled program
        however many examples or points a call brings (a size per call would compile a
        program per size).  Returns each chunk's outputs, padding removed.
        """
        import jax

        rows = int(np.shape(jax.tree_util.tree_leaves(batched[0])[0])[0])
        chunk = batch_chunk({k: np.shape(v)[1:] for k, v in inputs.items()}, rows)
        key = (kind, fn, self._shapes(inputs, 1), *extra, chunk, dtype)
        outs = []
        for start in range(0, rows, chunk):
            stop = min(start + chunk, rows)

            def take(a: np.ndarray, start: int = start, stop: int = stop) -> np.ndarray:
                part = a[start:stop]
                if stop - start < chunk:
                    part = np.concatenate([part, np.repeat(part[:1], chunk - (stop - start), axis=0)])
                return part

            args = jax.tree_util.tree_map(take, batched)
            out = self._call(key, build, *args)
            outs.append(jax.tree_util.tree_map(lambda t, n=stop - start: np.asarray(t)[:n], out))
        return outs

    def forward_batch(self, fn: ForwardFn, inputs: Mapping[str, np.ndarray], dtype: str) -> np.ndarray:
        """``fn`` at each of the ``B`` points stacked on axis 0 of ``inputs``: ``(B, *output)``.

        ``jax.jit(jax.vmap(fn))`` per the jit mode, in chunks of :func:`batch_chunk` rows.
        """
        import jax

        rows = _rows(inputs)
        shared = self._fd_vjp(fn, inputs, dtype)
        if shared is not None:  # the vmapped vjp program of these shapes, zero cotangent
            names, out_shape = shared
            outs = self._vjp_chunks(fn, inputs, names, np.zeros((rows, *out_shape), dtype), dtype)
            return np.concatenate([o for o, _ in outs])
        if not self._vmap("forward", fn, inputs, dtype, self.conv_padding):
            return np.stack([JaxAdapter.forward(self, fn, _row(inputs, i), dtype) for i in range(rows)])
        ops = self.ops

        def build() -> Callable[..., Any]:
            def run(args: dict[str, Any]) -> Any:
                return fn(ops, args)

            return jax.vmap(run)

        with self.precision(dtype):
            args = _cast(inputs, dtype)
            outs = self._in_chunks("forward_batch", fn, inputs, build, (), dtype, args)
            return np.concatenate(outs)

    @_settles
    def vjp_batch(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangents: np.ndarray,
        dtype: str,
    ) -> VJPResult:
        """:meth:`vjp` of ``B`` examples stacked on axis 0: ``jax.vmap`` of ``jax.vjp``, jitted.

        Output and gradients carry the batch axis first.
        """
        check_wrt_names("jax", inputs, wrt)
        names = tuple(wrt)
        rows = _rows(inputs)
        combined = self._combinable(fn, inputs, True, "vjp", dtype)
        shares_fd = not combined and self._shares_fd(inputs, dtype)
        if combined and self._vmap("combined", fn, inputs, tuple(sorted(names)), dtype, self.conv_padding):
            got = self._combined(fn, inputs, names, cotangents, None, dtype, "vjp", ("out", "grads"), True)
            if got is not None:
                return VJPResult(output=got["out"], grads={n: got["grads"][n] for n in names})
        elif combined or not self._vmap("vjp", fn, inputs, names, dtype, self.conv_padding, always=shares_fd):
            each = [
                JaxAdapter.vjp(self, fn, _row(inputs, i), names, cotangents[i], dtype) for i in range(rows)
            ]
            return VJPResult(
                output=np.stack([r.output for r in each]),
                grads={n: np.stack([r.grads[n] for r in each]) for n in names},
            )

        outs = self._vjp_chunks(fn, inputs, names, cotangents, dtype)
        output = np.concatenate([o for o, _ in outs])
        if shares_fd:
            self._note_fd_vjp(fn, inputs, dtype, names, tuple(output.shape[1:]))
        return VJPResult(output=output, grads={n: np.concatenate([g[n] for _, g in outs]) for n in names})

    def _vjp_chunks(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        names: tuple[str, ...],
        cotangents: np.ndarray,
        dtype: str,
    ) -> list[Any]:
        """``(output, grads)`` per chunk of the vmapped vjp program over ``names`` (one program per
        per-row shapes, :meth:`_in_chunks`): the examples' vjps and, with zero cotangents, the
        finite-difference forwards (:data:`SHARED_FD_ELEMENTS`)."""
        import jax

        def build() -> Callable[..., Any]:
            return jax.vmap(self._vjp_function(fn))

        with self.precision(dtype):
            args = _cast(inputs, dtype)
            diff = {name: args[name] for name in names}
            const = {k: v for k, v in args.items() if k not in diff}
            u = np.asarray(cotangents, dtype=dtype)
            return self._in_chunks("vjp_batch", fn, inputs, build, (names,), dtype, diff, const, u)

    def _note_fd_vjp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        dtype: str,
        names: tuple[str, ...],
        out: tuple[int, ...],
    ) -> None:
        """Remember the vmapped vjp program of these shapes for finite-difference forwards."""
        try:
            with self._jit_cache.lock:
                _remember(self._jit_cache.fd_vjp, (fn, self._shapes(inputs, 1), dtype), (names, out))
        except TypeError:  # an unhashable fn
            pass

    @_settles
    def jvp_batch(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        tangents: Mapping[str, np.ndarray],
        dtype: str,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`jvp` of ``B`` examples stacked on axis 0: ``jax.vmap`` of ``jax.jvp``, jitted.

        Output and ``J v`` carry the batch axis first.
        """
        import jax

        check_tangent_names("jax", inputs, tangents)
        rows = _rows(inputs)
        names = tuple(sorted(tangents))
        combined = self._combinable(fn, inputs, True, "jvp", dtype)
        if combined and self._vmap("combined", fn, inputs, names, dtype, self.conv_padding):
            got = self._combined(fn, inputs, names, None, tangents, dtype, "jvp", ("out", "jv"), True)
            if got is not None:
                return got["out"], got["jv"]
        elif combined or not self._vmap("jvp", fn, inputs, names, dtype, self.conv_padding):
            each = [JaxAdapter.jvp(self, fn, _row(inputs, i), _row(tangents, i), dtype) for i in range(rows)]
            return np.stack([o for o, _ in each]), np.stack([t for _, t in each])

        def build() -> Callable[..., Any]:
            return jax.vmap(self._jvp_function(fn))

        with self.precision(dtype):
            primal, const, tangent = _primal_const_tangent(inputs, tangents, names, dtype, batched=True)
            outs = self._in_chunks(
                "jvp_batch", fn, inputs, build, (names, self.conv_padding), dtype, primal, const, tangent
            )
            return np.concatenate([o for o, _ in outs]), np.concatenate([t for _, t in outs])

    @_settles
    def hvp_batch(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangents: np.ndarray,
        tangents: Mapping[str, np.ndarray],
        dtype: str,
        method: str,
    ) -> dict[str, np.ndarray]:
        """:meth:`hvp` of ``B`` examples stacked on axis 0: ``jax.vmap`` of the same method, jitted."""
        import jax

        check_hvp_request("jax", self.hvp_methods, method, inputs, wrt, tangents)
        names = tuple(wrt)
        combined = self._combinable(fn, inputs, True, "hvp", dtype) and method in self._combined_methods()
        if combined and self._vmap("combined", fn, inputs, tuple(sorted(names)), dtype, self.conv_padding):
            got = self._combined(fn, inputs, names, cotangents, tangents, dtype, "hvp", (method,), True)
            if got is not None:
                return {n: got[method][n] for n in names}
        elif combined or not self._vmap("hvp", fn, inputs, names, method, dtype, self.conv_padding):
            rows = _rows(inputs)
            each = [
                JaxAdapter.hvp(
                    self, fn, _row(inputs, i), names, cotangents[i], _row(tangents, i), dtype, method
                )
                for i in range(rows)
            ]
            return {n: np.stack([h[n] for h in each]) for n in names}

        def build() -> Callable[..., Any]:
            return jax.vmap(self._hvp_function(fn, method))

        with self.precision(dtype):
            primal, const, tangent = _primal_const_tangent(inputs, tangents, names, dtype)
            u = np.asarray(cotangents, dtype=dtype)
            outs = self._in_chunks(
                "hvp_batch",
                fn,
                inputs,
                build,
                (names, method, self.conv_padding),
                dtype,
                primal,
                const,
                u,
                tangent,
            )
            return {name: np.concatenate([o[name] for o in outs]) for name in names}

    def _jvp_function(self, fn: ForwardFn) -> Callable[..., Any]:
        """``(primal, const, tangent) -> (fn(x), J v)`` over ``primal`` (:meth:`jvp`; vmapped in
        :meth:`jvp_batch`)."""
        import jax

        ops = self.ops

        def run(primal: dict[str, Any], const: dict[str, Any], tangent: dict[str, Any]) -> Any:
            return jax.jvp(lambda p: fn(ops, {**const, **p}), (primal,), (tangent,))

        return run

    def _hvp_function(self, fn: ForwardFn, method: str) -> Callable[..., Any]:
        """``(primal, const, u, tangent) -> H v`` of ``s = <u, fn>`` over ``primal`` by ``method``."""
        import jax

        ops = self.ops

        def run(primal: dict[str, Any], const: dict[str, Any], u: Any, tangent: dict[str, Any]) -> Any:
            def gradient(p: dict[str, Any]) -> Any:
                out, pullback = jax.vjp(lambda q: fn(ops, {**const, **q}), p)
                (g,) = pullback(u.astype(out.dtype))
                return g

            if method == "reverse-over-reverse":
                _, pullback = jax.vjp(gradient, primal)
                (hv,) = pullback(tangent)
                return hv
            return jax.jvp(gradient, (primal,), (tangent,))[1]

        return run

    def _vjp_function(self, fn: ForwardFn) -> Callable[..., Any]:
        """``(diff, const, u) -> (fn(x), u^T J)`` over ``diff`` (:meth:`vjp`; vmapped in
        :meth:`vjp_batch`)."""
        import jax

        ops = self.ops

        def run(diff: dict[str, Any], const: dict[str, Any], u: Any) -> tuple[Any, Any]:
            out, pullback = jax.vjp(lambda d: fn(ops, {**const, **d}), diff)
            if tuple(u.shape) != tuple(out.shape):
                raise ValueError(
                    f"jax adapter: cotangent shape {tuple(u.shape)} != output shape {tuple(out.shape)}"
                )
            (grads,) = pullback(u.astype(out.dtype))
            return out, grads

        return run

    # -- one program for every mode (small inputs, COMBINE_MAX_ELEMENTS) ----------------------

    def _combined_methods(self) -> tuple[str, ...]:
        """The Hessian-vector-product methods the combined program holds (none without hvp)."""
        if "hvp" not in self._planned_modes:
            return ()
        return tuple(m for m in ("reverse-over-reverse", "forward-over-reverse") if m in self.hvp_methods)

    def _combined_function(
        self, fn: ForwardFn, modes: tuple[str, ...], methods: tuple[str, ...]
    ) -> Callable[..., Any]:
        """``(primal, const, u, v) -> {out: fn(x), grads: u^T J, jv: J v, <method>: H v}`` (the
        parts of ``modes``): the functions of :meth:`vjp`, :meth:`jvp` and :meth:`hvp`, each as
        JAX computes it alone, in one program."""
        vjp_run = self._vjp_function(fn) if "vjp" in modes else None
        jvp_run = self._jvp_function(fn) if "jvp" in modes else None
        hvps = {m: self._hvp_function(fn, m) for m in methods}

        def run(primal: dict[str, Any], const: dict[str, Any], u: Any, tangent: dict[str, Any]) -> Any:
            # at least two modes (_combinable), so vjp or jvp is one of them and gives "out"
            parts: dict[str, Any] = {}
            if jvp_run is not None:
                parts["out"], parts["jv"] = jvp_run(primal, const, tangent)
            if vjp_run is not None:
                parts["out"], parts["grads"] = vjp_run(primal, const, u)
            parts.update({m: h(primal, const, u, tangent) for m, h in hvps.items()})
            return parts

        return run

    def _combinable(
        self, fn: ForwardFn, inputs: Mapping[str, np.ndarray], batched: bool, kind: str, dtype: str
    ) -> bool:
        """Whether a ``kind`` call on ``inputs`` goes to the combined program: ``combine`` on, jit
        on, at most :data:`COMBINE_MAX_ELEMENTS` input elements per example, fewer than
        :data:`COMBINE_HOT_ROWS` examples of this kind answered by it at these shapes, ``fn``
        hashable, traceable and not known to fail there (a ``custom_vjp`` has no jvp)."""
        if not self.combine or self.jit == "never":
            return False
        if len(self._planned_modes) < 2 or kind not in self._planned_modes:
            return False  # one mode planned: its own program is the same program
        if self.jit == "auto" and any(AUTO_JIT_AFTER.get(k, 1) > 1 for k in _COMBINED_KINDS):
            return False  # some kind runs eagerly first: each keeps its own program
        skip = 1 if batched else 0
        if sum(int(np.prod(np.shape(a)[skip:])) for a in inputs.values()) > COMBINE_MAX_ELEMENTS:
            return False
        cache = self._jit_cache
        use = (kind, fn, self._shapes(inputs, skip), dtype)
        try:
            with cache.lock:
                return (
                    fn not in cache.untraceable
                    and fn not in cache.uncombined
                    and cache.uses.get(use, 0) < COMBINE_HOT_ROWS
                )
        except TypeError:  # an unhashable fn is never compiled
            return False

    def _count_use(self, kind: str, fn: ForwardFn, shapes: tuple[Any, ...], dtype: str, rows: int) -> None:
        """``rows`` more examples of ``kind`` answered by the combined program at these per-row shapes."""
        cache = self._jit_cache
        with cache.lock:
            key = (kind, fn, shapes, dtype)
            _remember(cache.uses, key, cache.uses.get(key, 0) + rows)

    def _gave_up_on(self, fn: ForwardFn) -> bool:
        """Whether the combined program has given up on ``fn`` (:meth:`_give_up_combining`)."""
        try:
            with self._jit_cache.lock:
                return fn in self._jit_cache.uncombined
        except TypeError:  # an unhashable fn is never combined
            return False

    def _give_up_combining(self, fn: ForwardFn, key: tuple[Any, ...] | None = None) -> None:
        cache = self._jit_cache
        with cache.lock:
            if key is not None:
                cache.compiled.pop(key, None)
            _remember(cache.uncombined, fn, True)

    def _out_shape(
        self, fn: ForwardFn, shapes: tuple[Any, ...], dtype: str, primal: Any, const: Any
    ) -> tuple[int, ...]:
        """The output shape of ``fn`` at these input shapes (remembered; ``jax.eval_shape`` once)."""
        cache = self._jit_cache
        with cache.lock:
            known = cache.out_shapes.get((fn, shapes, dtype))
        if known is None:
            import jax

            ops = self.ops
            known = tuple(jax.eval_shape(lambda p, c: fn(ops, {**c, **p}), primal, const).shape)
            self._note_out_shape(fn, shapes, dtype, known)
        return known

    def _note_out_shape(
        self, fn: ForwardFn, shapes: tuple[Any, ...], dtype: str, shape: tuple[int, ...]
    ) -> None:
        cache = self._jit_cache
        with cache.lock:
            _remember(cache.out_shapes, (fn, shapes, dtype), tuple(shape))

    def _combined(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        names: Sequence[str],
        cotangent: np.ndarray | None,
        tangents: Mapping[str, np.ndarray] | None,
        dtype: str,
        kind: str,
        want: tuple[str, ...],
        batched: bool = False,
    ) -> dict[str, Any] | None:
        """The parts ``want`` (``out``, ``grads``, ``jv``, a method's ``H v``) of one example, or
        of ``B`` stacked on axis 0 when ``batched`` (``jax.vmap``-ed in chunks), from the combined
        program of (fn, shapes, names, dtype); ``None`` when it cannot serve the call (the caller
        then runs the program of its own kind, which raises what it raises).

        A missing ``cotangent`` or ``tangents`` is zeros: the parts computed from it are unused."""
        if not self._combinable(fn, inputs, batched, kind, dtype):
            return None
        names = tuple(sorted(names))
        modes, methods = self._planned_modes, self._combined_methods()
        skip = 1 if batched else 0
        shapes = self._shapes(inputs, skip)
        key = ("combined", fn, shapes, names, modes, methods, dtype, self.conv_padding)

        def build() -> Callable[..., Any]:
            import jax

            run = self._combined_function(fn, modes, methods)
            return jax.vmap(run) if batched else run

        with self.precision(dtype):
            if tangents is None:
                tangents = {n: np.zeros(np.shape(inputs[n]), dtype) for n in names}
            primal, const, tangent = _primal_const_tangent(inputs, tangents, names, dtype, batched=batched)
            rows = _rows(inputs) if batched else None
            try:
                if batched:
                    first = {k: v[0] for k, v in primal.items()}, {k: v[0] for k, v in const.items()}
                else:
                    first = primal, const
                u = self._cotangent(fn, shapes, dtype, *first, cotangent, rows)
                if u is None:
                    return None
                if batched:
                    extra = (names, modes, methods, self.conv_padding)
                    outs = self._in_chunks(
                        "combined_batch", fn, inputs, build, extra, dtype, primal, const, u, tangent
                    )
                else:
                    outs = [self._run_combined(key, build, primal, const, u, tangent)]
            except Exception:
                self._give_up_combining(fn, None if batched else key)
                return None
            self._note_out_shape(fn, shapes, dtype, tuple(np.shape(outs[0]["out"]))[skip:])
            self._count_use(kind, fn, shapes, dtype, rows or 1)
            parts: dict[str, Any] = {}
            for w in want:
                if not batched:
                    parts[w] = _tree_to_numpy(self, outs[0][w])
                elif isinstance(outs[0][w], Mapping):
                    parts[w] = {n: np.concatenate([o[w][n] for o in outs]) for n in outs[0][w]}
                else:
                    parts[w] = np.concatenate([o[w] for o in outs])
            return parts

    def _cotangent(
        self,
        fn: ForwardFn,
        shapes: tuple[Any, ...],
        dtype: str,
        primal: Any,
        const: Any,
        cotangent: np.ndarray | None,
        rows: int | None,
    ) -> np.ndarray | None:
        """The combined program's cotangent: zeros of the output shape (``rows`` of them when
        batched) for a call without one; ``None`` when the output shape is known and the given
        cotangent's differs (the caller's own program then reports the mismatch)."""
        if cotangent is None:
            shape = self._out_shape(fn, shapes, dtype, primal, const)
            return np.zeros(shape if rows is None else (rows, *shape), dtype)
        with self._jit_cache.lock:
            known = self._jit_cache.out_shapes.get((fn, shapes, dtype))
        if known is not None and known != tuple(np.shape(cotangent))[0 if rows is None else 1 :]:
            return None
        return np.asarray(cotangent, dtype=dtype)

    def _run_combined(self, key: tuple[Any, ...], build: Callable[[], Callable[..., Any]], *args: Any) -> Any:
        """The compiled combined program of ``key`` (compiled on its first call) applied to ``args``."""
        cache = self._jit_cache
        with cache.lock:
            compiled = cache.compiled.get(key)
            if compiled is None:
                compiled = _compile(cache, key, build)
            else:
                cache.compiled.move_to_end(key)
        return compiled(*args)

    def jvp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        tangents: Mapping[str, np.ndarray],
        dtype: str,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Output and ``J v`` via ``jax.jvp``; inputs without a tangent are constants."""
        check_tangent_names("jax", inputs, tangents)
        names = tuple(sorted(tangents))
        both = self._combined(fn, inputs, names, None, tangents, dtype, "jvp", ("out", "jv"))
        if both is not None:
            return both["out"], both["jv"]

        def build() -> Callable[..., Any]:
            return self._jvp_function(fn)

        with self.precision(dtype):
            primal, const, tangent = _primal_const_tangent(inputs, tangents, names, dtype, batched=False)
            key = ("jvp", fn, self._shapes(inputs), names, dtype, self.conv_padding)
            out, jv = self._call(key, build, primal, const, tangent)
            return self.to_numpy(out), self.to_numpy(jv)

    def hvp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangent: np.ndarray,
        tangents: Mapping[str, np.ndarray],
        dtype: str,
        method: str,
    ) -> dict[str, np.ndarray]:
        """``H v`` of ``s(x) = <u, fn(x)>`` over ``wrt``.

        With ``g(x) = jax.vjp(f, x)[1](u)`` (the gradient map): ``reverse-over-reverse`` is
        ``jax.vjp(g, x)[1](v)`` (``H^T v = H v``), ``forward-over-reverse`` is
        ``jax.jvp(g, (x,), (v,))``.
        """
        check_hvp_request("jax", self.hvp_methods, method, inputs, wrt, tangents)
        names = tuple(wrt)
        if method in self._combined_methods():
            both = self._combined(fn, inputs, names, cotangent, tangents, dtype, "hvp", (method,))
            if both is not None:
                return {n: both[method][n] for n in names}

        def build() -> Callable[..., Any]:
            return self._hvp_function(fn, method)

        with self.precision(dtype):
            primal, const, tangent = _primal_const_tangent(inputs, tangents, names, dtype)
            u = np.asarray(cotangent, dtype=dtype)
            key = ("hvp", fn, self._shapes(inputs), names, method, dtype)
            hv = self._call(key, build, primal, const, u, tangent)
            return {name: self.to_numpy(hv[name]) for name in names}


def _benchmark(
    clock: str = "cpu", calls: int = 15, examples: int = 40, forwards: int = 40, dtype: str = "float64"
) -> dict[str, list[float]]:
    """Timings (ms) behind the table in the module docstring.

    Run ``python -c "from gradoracle.adapters.jax_adapter import _benchmark as b;
    print(*b().items(), sep='\\n')"`` (one line).
    ``clock="cpu"`` (process CPU time, all threads) is robust on a shared machine;
    ``"wall"`` is what a user waits.

    - ``"vjp <case>"`` / ``"forward <case>"``: median per call of [eager repeated shape,
      eager new shape, jit new shape, jit repeated shape]; "new shape" grows every input
      by one row and column per call.  The first call of a series is not timed.
    - ``"example <case>"``: mean per Hypothesis-like example for jit modes [never, always,
      auto]: small random shapes as :mod:`gradoracle.strategies` draws them (so shapes
      recur), a new ``fn`` object per example, then 1 vjp + ``forwards`` forwards.
      Compilation caches are cleared before each mode.
    """
    import time

    import jax

    tick = time.process_time if clock == "cpu" else time.perf_counter
    rng = np.random.default_rng(0)
    Inputs = tuple[dict[str, np.ndarray], np.ndarray]

    def matvec(ops: Any, v: Mapping[str, Any]) -> Any:
        return ops.matmul(v["W"], v["x"])

    def conv(ops: Any, v: Mapping[str, Any]) -> Any:
        return ops.sum(ops.conv2d(v["X"], v["K"]))

    def mlp(ops: Any, v: Mapping[str, Any]) -> Any:
        h = ops.relu(ops.add(ops.matmul(v["W1"], v["x"]), v["b1"]))
        return ops.softmax_cross_entropy(ops.add(ops.matmul(v["W2"], h), v["b2"]), v["y"])

    def big_matvec(i: int) -> Inputs:
        n = 128 + i
        return {"W": rng.standard_normal((n, n)), "x": rng.standard_normal(n)}, rng.standard_normal(n)

    def big_conv(i: int) -> Inputs:
        n = 64 + i
        return {"X": rng.standard_normal((n, n)), "K": rng.standard_normal((3, 3))}, np.array(1.0)

    def small_mlp(i: int) -> Inputs:
        n, h, m = (int(d) for d in rng.integers(1, 9, size=3))
        shapes = {"W1": (h, n), "x": (n,), "b1": (h,), "W2": (m, h), "b2": (m,)}
        inputs = {k: rng.standard_normal(shape) for k, shape in shapes.items()}
        return {**inputs, "y": np.eye(m)[0]}, np.array(1.0)

    def small_conv(i: int) -> Inputs:
        k = int(rng.integers(1, 5))
        H, W = (int(d) for d in rng.integers(k, 11, size=2))
        return {"X": rng.standard_normal((H, W)), "K": rng.standard_normal((k, k))}, np.array(1.0)

    def wrt(inputs: Mapping[str, np.ndarray]) -> list[str]:
        return [k for k in inputs if k != "y"]

    rows: dict[str, list[float]] = {}
    micro: list[tuple[str, ForwardFn, Callable[[int], Inputs]]] = [
        ("128x128 matvec", matvec, big_matvec),
        ("64x64 conv k=3 -> sum", conv, big_conv),
    ]
    for label, fn, make in micro:
        data = [make(i) for i in range(calls + 1)]
        for kind in ("vjp", "forward"):
            row = rows.setdefault(f"{kind} {label}", [])
            for mode, fresh in (("never", False), ("never", True), ("always", True), ("always", False)):
                adapter = JaxAdapter(jit=mode)

                def step(
                    i: int, a: JaxAdapter = adapter, k: str = kind, f: ForwardFn = fn, d: list[Inputs] = data
                ) -> object:
                    inputs, u = d[i]
                    if k == "forward":
                        return a.forward(f, inputs, dtype)
                    return a.vjp(f, inputs, wrt(inputs), u, dtype)

                step(0)
                times = []
                for i in range(1, calls + 1):
                    t0 = tick()
                    step(i if fresh else 0)
                    times.append(tick() - t0)
                row.append(float(np.median(times)) * 1e3)

    realistic: list[tuple[str, ForwardFn, Callable[[int], Inputs]]] = [
        ("MLP, dims 1..8", mlp, small_mlp),
        ("conv k 1..4, H,W k..10", conv, small_conv),
    ]
    for label, fn, make in realistic:
        data = [make(i) for i in range(examples)]
        row = rows.setdefault(f"example {label}", [])
        for mode in ("never", "always", "auto"):
            jax.clear_caches()
            adapter = JaxAdapter(jit=mode)
            adapter.forward(fn, data[0][0], dtype)  # imports and first dispatch, not timed
            t0 = tick()
            for inputs, u in data:

                def g(ops: Any, v: Mapping[str, Any], f: ForwardFn = fn) -> Any:
                    return f(ops, v)

                adapter.vjp(g, inputs, wrt(inputs), u, dtype)
                for _ in range(forwards):
                    adapter.forward(g, inputs, dtype)
            row.append((tick() - t0) / examples * 1e3)
    return rows
