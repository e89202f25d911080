"""PyTorch adapter: runs an identity's forward with the functions PyTorch users call.

The ops namespace (:class:`TorchOps`) is written with the public API a model author
uses (``x @ W``, ``torch.relu``, ``F.conv2d``, ``F.cross_entropy``, ...), so the
gradients under test are the ones those calls produce.  Reverse mode is
``torch.autograd.grad``; forward mode is ``torch.func.jvp``.

Importing this module, constructing a CPU adapter or reading its ``ops`` does not
import torch: it is imported by ``available()``, the first op or the first
conversion, so ``gradoracle list`` and the pytest plugin stay cheap and work without
torch installed.  Torch's global settings (default dtype, grad mode outside our own
``no_grad`` blocks) are never changed.

Intra-op threads: each call runs torch with ``threads`` intra-op threads (default 1;
``--adapter 'torch?threads=N'``, 0 = torch's own setting) and gives the caller's setting
back when it returns.  The checks' arrays are small, where a second thread gains nothing,
and OpenMP's workers spin-wait at each parallel region: with another process on the cores
(``--jobs 2`` on two cores, a shared CI runner) a float64 double backward of a
``(2, 4, 2)`` grouped conv1d took 200 ms with torch's default 2 threads against 0.17 ms with
one (median of 20 calls, 2-core machine at load 4.3).

Notes for the report:

- ``softmax_cross_entropy`` is ``F.cross_entropy(z[None], y[None])``: a batch of one
  row with class-probability targets (float ``y`` of the logits' shape).  With the
  default ``reduction="mean"`` the batch mean over one row is that row's
  ``-sum_k y_k log softmax(z)_k``; ``label_smoothing`` stays 0.
- An input named in ``wrt`` that the output does not depend on gets zeros (torch's
  ``allow_unused=True`` answers ``None`` for it).  If torch ever answered ``None`` for
  an input the output does use, the zeros disagree with finite differences and the
  runner reports it: the adapter never invents a non-zero gradient.
- ``F.softplus`` (beta 1) returns ``x`` itself for ``x > 20`` (its ``threshold``), so
  there it differs from ``log(1 + exp(x))`` by ``log1p(exp(-x)) < 2.1e-9`` and its
  derivative is exactly 1 instead of ``sigmoid(x)``.
- Seen at non-differentiable points (torch 2.13, vjp): relu'(0) = 0, leaky_relu'(0) =
  0.01, abs'(0) = 0, elu'(0) = 1, ``maximum(x, 0)`` at 0 splits 0.5/0.5,
  ``clamp(x, min=0)``'(0) = 1; a max-pool window with tied maxima routes the whole
  gradient to the first maximum in row-major order (vjp and jvp alike).
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any, TypeVar, cast

import numpy as np

from gradoracle.adapters.base import (
    AdapterBase,
    ForwardFn,
    VJPResult,
    check_hvp_request,
    check_tangent_names,
    check_wrt_names,
)
from gradoracle.ops import ELU_ALPHA, LEAKY_RELU_SLOPE

__all__ = ["TorchAdapter", "TorchOps"]

_DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:\d+)?)$")


def _import_torch() -> tuple[Any, Any]:
    """``(torch, torch.nn.functional)``, imported on demand."""
    import torch
    import torch.nn.functional as F

    return torch, F


@contextlib.contextmanager
def _quiet_jit_script() -> Iterator[None]:
    """Silence one warning: torch's forward-AD decompositions are built with ``torch.jit.script``
    on first use, which warns about its own deprecation (torch's warning, not the user's)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning
        )
        yield


_THREADS_LOCK = threading.Lock()
_THREADS_DEPTH: dict[int, tuple[int, int]] = {}  # thread id -> (depth, the caller's setting)


@contextlib.contextmanager
def _intra_op_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` on this thread, the caller's setting
    restored at the outermost exit (nested calls, as a subclass's ``vjp`` calling
    ``super().vjp``, keep it); ``n <= 0`` leaves torch's setting alone."""
    if n <= 0:
        yield
        return
    torch, _ = _import_torch()
    key = threading.get_ident()
    with _THREADS_LOCK:
        depth, saved = _THREADS_DEPTH.get(key, (0, 0))
        if depth == 0:
            saved = torch.get_num_threads()
            if saved != n:
                torch.set_num_threads(n)
        _THREADS_DEPTH[key] = (depth + 1, saved)
    try:
        yield
    finally:
        with _THREADS_LOCK:
            depth, saved = _THREADS_DEPTH[key]
            if depth == 1:
                del _THREADS_DEPTH[key]
                if saved != n:
                    torch.set_num_threads(saved)
            else:
                _THREADS_DEPTH[key] = (depth - 1, saved)


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _scoped_threads(method: _Method) -> _Method:
    """``method`` run under :func:`_intra_op_threads` with the adapter's ``threads``."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _intra_op_threads(int(getattr(self, "threads", 1))):
            return method(self, *args, **kwargs)

    return cast(_Method, wrapper)


def _check_tangent_shapes(
    tangents: Mapping[str, np.ndarray], args: Mapping[str, Any], names: Sequence[str]
) -> None:
    """Raise ``ValueError`` when a tangent's shape is not its input tensor's (``v`` lives where ``x``)."""
    for name in names:
        if tuple(np.shape(tangents[name])) != tuple(args[name].shape):
            raise ValueError(
                f"torch adapter: tangent {name!r} has shape {np.shape(tangents[name])}, "
                f"input has {tuple(args[name].shape)}"
            )


class TorchOps:
    """The :mod:`gradoracle.ops` namespace spelled with PyTorch's public API."""

    # torch is imported on the first op, not when the namespace is made: merely looking at
    # an adapter's ``ops`` (``hasattr(adapter, "ops")``) must not import the framework.

    @cached_property
    def _torch(self) -> Any:
        return _import_torch()[0]

    @cached_property
    def _F(self) -> Any:
        return _import_torch()[1]

    def matmul(self, a: Any, b: Any) -> Any:
        """``a @ b`` (the ``@`` operator, i.e. ``torch.matmul``)."""
        return a @ b

    def add(self, a: Any, b: Any) -> Any:
        """``a + b``."""
        return a + b

    def relu(self, x: Any) -> Any:
        """``max(0, x)`` via ``torch.relu``."""
        return self._torch.relu(x)

    def leaky_relu(self, x: Any) -> Any:
        """``x if x > 0 else 0.01 x`` via ``F.leaky_relu(x, 0.01)``."""
        return self._F.leaky_relu(x, LEAKY_RELU_SLOPE)

    def sigmoid(self, x: Any) -> Any:
        """``1 / (1 + exp(-x))`` via ``torch.sigmoid``."""
        return self._torch.sigmoid(x)

    def tanh(self, x: Any) -> Any:
        """``tanh(x)``."""
        return self._torch.tanh(x)

    def exp(self, x: Any) -> Any:
        """``exp(x)``."""
        return self._torch.exp(x)

    def log(self, x: Any) -> Any:
        """``log(x)``."""
        return self._torch.log(x)

    def softplus(self, x: Any) -> Any:
        """``log(1 + exp(x))`` via ``F.softplus`` (beta 1; linear above threshold 20)."""
        return self._F.softplus(x)

    def sin(self, x: Any) -> Any:
        """``sin(x)``."""
        return self._torch.sin(x)

    def square(self, x: Any) -> Any:
        """``x * x`` via ``torch.square``."""
        return self._torch.square(x)

    def abs(self, x: Any) -> Any:
        """``|x|`` via ``torch.abs``."""
        return self._torch.abs(x)

    def elu(self, x: Any) -> Any:
        """``x if x > 0 else exp(x) - 1`` via ``F.elu`` (alpha 1)."""
        return self._F.elu(x, alpha=ELU_ALPHA)

    def silu(self, x: Any) -> Any:
        """``x * sigmoid(x)`` via ``F.silu``."""
        return self._F.silu(x)

    def gelu(self, x: Any) -> Any:
        """``x/2 (1 + erf(x / sqrt 2))`` via ``F.gelu(x, approximate="none")``."""
        return self._F.gelu(x, approximate="none")

    def softmax_cross_entropy(self, logits: Any, target: Any) -> Any:
        """``-sum_k y_k log softmax(z)_k`` via ``F.cross_entropy`` with probability targets."""
        return self._F.cross_entropy(logits[None], target[None])

    def conv2d(self, x: Any, k: Any) -> Any:
        """Valid cross-correlation ``Z[u,v] = sum_{a,b} X[u+a,v+b] K[a,b]`` via ``F.conv2d``."""
        return self._F.conv2d(x[None, None], k[None, None])[0, 0]

    def max_pool2d(self, x: Any, k: int, stride: int | None = None) -> Any:
        """Max over k x k windows, stride ``s`` (default k), floor mode, via ``F.max_pool2d``."""
        s = k if stride is None else stride
        return self._F.max_pool2d(x[None, None], k, stride=s, ceil_mode=False)[0, 0]

    def avg_pool2d(self, x: Any, k: int, stride: int | None = None) -> Any:
        """Mean over k x k windows, stride ``s`` (default k), floor mode, via ``F.avg_pool2d``."""
        s = k if stride is None else stride
        return self._F.avg_pool2d(x[None, None], k, stride=s, ceil_mode=False)[0, 0]

    def sum(self, x: Any) -> Any:
        """Sum of all elements (0-D) via ``torch.sum``."""
        return self._torch.sum(x)

    def maximum_zero(self, x: Any) -> Any:
        """``torch.maximum(x, zeros_like(x))``."""
        return self._torch.maximum(x, self._torch.zeros_like(x))

    def clamp_min_zero(self, x: Any) -> Any:
        """``torch.clamp(x, min=0)``."""
        return self._torch.clamp(x, min=0)

    # ---- layers as frameworks ship them (gradoracle.ops.LAYER_OPS) ---------------------

    def linear(self, x: Any, w: Any, b: Any) -> Any:
        """``x @ w^T + b`` via ``F.linear`` (w is (out, in); b None: no bias, ``bias=False``)."""
        return self._F.linear(x, w, b)

    def dense(self, x: Any, w: Any, b: Any) -> Any:
        """``x @ w + b`` (w is (in, out), JAX/Flax's layout) with ``torch.matmul``; b None: ``x @ w``."""
        z = x @ w
        return z if b is None else z + b

    def cross_entropy(
        self, logits: Any, target: Any, reduction: str = "mean", label_smoothing: float = 0.0
    ) -> Any:
        """``F.cross_entropy``: class indices (``target.long()``) for a 1-D target, else probabilities."""
        t = target.long() if target.ndim == 1 else target
        return self._F.cross_entropy(logits, t, reduction=reduction, label_smoothing=label_smoothing)

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
        """``F.conv1d`` / ``F.conv2d`` / ``F.conv3d`` by the input's rank (padding "same" passed as is)."""
        conv = (self._F.conv1d, self._F.conv2d, self._F.conv3d)[x.ndim - 3]
        with warnings.catch_warnings():
            # 'same' with an even effective kernel pads asymmetrically; torch warns that it copies.
            warnings.filterwarnings("ignore", message=r".*padding='same'.*", category=UserWarning)
            return conv(
                x, k, b, stride=tuple(stride), padding=padding, dilation=tuple(dilation), groups=groups
            )

    def max_pool_nd(
        self,
        x: Any,
        window: tuple[int, ...],
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        dilation: tuple[int, ...],
        ceil_mode: bool,
    ) -> Any:
        """``F.max_pool1d`` / ``2d`` / ``3d`` by the input's rank."""
        pool = (self._F.max_pool1d, self._F.max_pool2d, self._F.max_pool3d)[x.ndim - 3]
        return pool(x, tuple(window), tuple(stride), tuple(padding), tuple(dilation), ceil_mode=ceil_mode)

    def avg_pool_nd(
        self,
        x: Any,
        window: tuple[int, ...],
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> Any:
        """``F.avg_pool1d`` / ``2d`` / ``3d`` by the input's rank."""
        pool = (self._F.avg_pool1d, self._F.avg_pool2d, self._F.avg_pool3d)[x.ndim - 3]
        return pool(
            x,
            tuple(window),
            tuple(stride),
            tuple(padding),
            ceil_mode=ceil_mode,
            count_include_pad=count_include_pad,
        )

    def global_avg_pool(self, x: Any) -> Any:
        """``F.adaptive_avg_pool{1,2,3}d(x, 1)`` flattened to (N, C)."""
        pool = (self._F.adaptive_avg_pool1d, self._F.adaptive_avg_pool2d, self._F.adaptive_avg_pool3d)[
            x.ndim - 3
        ]
        return pool(x, 1).reshape(x.shape[0], x.shape[1])

    # ---- kinks (#13) -----------------------------------------------------------------

    def maximum(self, a: Any, b: Any) -> Any:
        """``torch.maximum(a, b)`` (a tie splits the gradient 1/2 : 1/2)."""
        return self._torch.maximum(a, b)

    def clamp(self, x: Any, lo: float, hi: float) -> Any:
        """``torch.clamp(x, lo, hi)`` (a bound passes the gradient)."""
        return self._torch.clamp(x, min=lo, max=hi)


class TorchAdapter(AdapterBase):
    """PyTorch under test: ``torch.autograd.grad`` for ``u^T J``, ``torch.func.jvp`` for ``J v``.

    ``device`` is ``"cpu"`` (default), ``"cuda"`` or ``"cuda:N"``.  Asking for
    a device this machine does not have raises ``ValueError`` at construction (the user
    asked for it explicitly, so a silent skip would hide a misconfigured CI job); a
    missing torch installation is reported by :meth:`available` instead.  ``threads``:
    torch's intra-op threads during each call (default 1; 0 = torch's own setting; see the
    module docstring).
    """

    name = "torch"
    dtypes = ("float64", "float32")
    has_jvp = True
    hvp_methods = ("reverse-over-reverse", "forward-over-reverse")

    def __init__(self, device: str = "cpu", threads: int | str = 1) -> None:
        try:
            count = int(str(threads).strip())
        except ValueError:
            count = -1
        if count < 0:
            raise ValueError(
                f"torch adapter: threads={threads!r}; use a count >= 1, or 0 for torch's own setting "
                "(e.g. --adapter 'torch?threads=2')"
            )
        self.threads = count
        device = str(device).strip().lower()
        if not _DEVICE_PATTERN.match(device):
            raise ValueError(
                f"torch adapter: unknown device {device!r}; use device=cpu, device=cuda or "
                "device=cuda:N (e.g. --adapter 'torch?device=cuda')"
            )
        self.device = device
        if device != "cpu":
            problem = self._device_problem()
            if problem:
                raise ValueError(problem)

    def _device_problem(self) -> str:
        """Why ``self.device`` cannot be used here ('' when it can, or when torch is missing)."""
        try:
            torch, _ = _import_torch()
        except ImportError:
            return ""  # reported by available()
        if self.device.startswith("cuda"):
            if not torch.cuda.is_available():
                build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
                return (
                    f"torch adapter: device {self.device!r} requested but CUDA is not available "
                    f"(torch {torch.__version__}, {build}). Use device=cpu, or run on a machine "
                    "with a GPU and a CUDA build of torch."
                )
            index = int(self.device.partition(":")[2] or 0)
            if index >= torch.cuda.device_count():
                return (
                    f"torch adapter: device {self.device!r} requested but only "
                    f"{torch.cuda.device_count()} CUDA device(s) exist; use cuda:0 .. "
                    f"cuda:{torch.cuda.device_count() - 1}."
                )
        return ""

    def available(self) -> tuple[bool, str]:
        """``(True, "")`` when torch imports and the device exists, else ``(False, why)``."""
        try:
            _import_torch()
        except ImportError as exc:
            return False, f"torch is not installed ({exc}); pip install 'gradoracle[torch]'"
        problem = self._device_problem()
        return (not problem, problem)

    @cached_property
    def ops(self) -> TorchOps:
        """The PyTorch ops namespace (torch is imported by its first op)."""
        return TorchOps()

    def supported_ops(self) -> frozenset[str]:
        """All of :data:`gradoracle.ops.ALL_OPS`."""
        from gradoracle.ops import ALL_OPS

        return frozenset(ALL_OPS)

    def _torch_dtype(self, dtype: str) -> Any:
        torch, _ = _import_torch()
        if dtype not in self.dtypes:
            raise ValueError(f"torch adapter: unsupported dtype {dtype!r}; use one of {self.dtypes}")
        return getattr(torch, dtype)

    def from_numpy(self, a: np.ndarray, dtype: str) -> Any:
        """A fresh torch tensor of ``dtype`` on the adapter's device (never shares memory with ``a``)."""
        torch, _ = _import_torch()
        return torch.tensor(np.asarray(a), dtype=self._torch_dtype(dtype), device=self.device)

    def to_numpy(self, t: Any) -> np.ndarray:
        """A writable NumPy copy of tensor ``t`` (detached, on the CPU), in ``t``'s own dtype."""
        return np.array(t.detach().cpu().numpy(), copy=True)

    def _shared(self, a: np.ndarray, dtype: str) -> Any:
        """A tensor that shares memory with ``a`` where it can (CPU, ``a`` writable and already
        C-contiguous in ``dtype``), else a fresh copy: ``torch.from_numpy`` costs ~1 us where
        ``torch.tensor`` copies (the boundary copies were ~4 framework forward+backwards per
        check at 16k elements).  Only for arrays the framework cannot write into: leaves
        that require grad (torch refuses in-place ops on them) and arrays the caller made
        for this one call."""
        torch, _ = _import_torch()
        arr = np.asarray(a)
        if (
            self.device == "cpu"
            and arr.dtype == np.dtype(dtype)
            and arr.flags.c_contiguous
            and arr.flags.writeable
        ):
            return torch.from_numpy(arr)
        return self.from_numpy(arr, dtype)

    @staticmethod
    def _view(t: Any) -> np.ndarray:
        """``t`` as NumPy without a copy on the CPU (for tensors this adapter just made)."""
        return np.asarray(t.detach().cpu().numpy())

    @_scoped_threads
    def forward(self, fn: ForwardFn, inputs: Mapping[str, np.ndarray], dtype: str) -> np.ndarray:
        """``fn(ops, inputs)`` under ``torch.no_grad()`` (no graph is recorded).

        The input tensors are fresh copies (``fn`` may write into them); the output comes
        back as a fresh array.
        """
        torch, _ = _import_torch()
        args = {k: self.from_numpy(v, dtype) for k, v in inputs.items()}
        with torch.no_grad():
            out = fn(self.ops, args)
        return self.to_numpy(out)

    @_scoped_threads
    def vjp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangent: np.ndarray,
        dtype: str,
    ) -> VJPResult:
        """Output and ``u^T J`` for each name in ``wrt`` via ``torch.autograd.grad``.

        Inputs outside ``wrt`` are constant tensors (``requires_grad=False``).
        """
        torch, _ = _import_torch()
        check_wrt_names("torch", inputs, wrt)
        # wrt leaves share the caller's memory (an in-place op on a leaf that requires grad
        # is an error in torch, so fn cannot write into them); constants are copied.
        args = {
            k: (self._shared(v, dtype) if k in wrt else self.from_numpy(v, dtype)) for k, v in inputs.items()
        }
        leaves = [args[name].requires_grad_(True) for name in wrt]
        with torch.enable_grad():
            out = fn(self.ops, args)
        output = self.to_numpy(out)
        if tuple(np.shape(cotangent)) != tuple(out.shape):
            raise ValueError(
                f"torch adapter: cotangent shape {np.shape(cotangent)} != output shape {tuple(out.shape)}"
            )
        if not leaves:
            return VJPResult(output=output, grads={})
        if not out.requires_grad:
            # The output depends on none of the wrt inputs: every u^T J is zero.
            zeros = {name: np.zeros_like(self.to_numpy(args[name])) for name in wrt}
            return VJPResult(output=output, grads=zeros)
        u = torch.tensor(np.asarray(cotangent), dtype=out.dtype, device=out.device)
        raw = torch.autograd.grad(out, leaves, grad_outputs=u, allow_unused=True)
        grads: dict[str, np.ndarray] = {}
        for name, leaf, g in zip(wrt, leaves, raw, strict=True):
            # a gradient torch just made is nobody else's: no copy needed
            grads[name] = np.zeros(tuple(leaf.shape), dtype=dtype) if g is None else self._view(g)
        return VJPResult(output=output, grads=grads)

    def _batched_fn(self, fn: ForwardFn, names: Sequence[str]) -> Any:
        """``fn`` over inputs stacked on a leading axis: ``torch.func.vmap`` of ``fn``."""
        torch, _ = _import_torch()

        def one(*xs: Any) -> Any:
            return fn(self.ops, dict(zip(names, xs, strict=True)))

        return torch.func.vmap(one)

    @_scoped_threads
    def forward_batch(self, fn: ForwardFn, inputs: Mapping[str, np.ndarray], dtype: str) -> np.ndarray:
        """``fn`` at each of the ``B`` points stacked on axis 0 of ``inputs``: ``(B, *output)``.

        One ``torch.func.vmap`` call under ``no_grad``.  The stacked arrays are made for
        this call by the runner, so they are shared with torch rather than copied.
        """
        torch, _ = _import_torch()
        names = list(inputs)
        args = [self._shared(inputs[n], dtype) for n in names]
        with torch.no_grad():
            out = self._batched_fn(fn, names)(*args)
        return self._view(out)

    @_scoped_threads
    def vjp_batch(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangents: np.ndarray,
        dtype: str,
    ) -> VJPResult:
        """:meth:`vjp` of ``B`` examples stacked on axis 0, in one vectorised call.

        ``out = vmap(fn)(x)`` keeps the examples independent, so one
        ``torch.autograd.grad(out, x, u)`` gives every example's ``u_b^T J_b`` at once.
        Output and gradients carry the batch axis first.
        """
        torch, _ = _import_torch()
        check_wrt_names("torch", inputs, wrt)
        names = list(inputs)
        args = {
            k: (self._shared(v, dtype) if k in wrt else self.from_numpy(v, dtype)) for k, v in inputs.items()
        }
        leaves = [args[name].requires_grad_(True) for name in wrt]
        with torch.enable_grad():
            out = self._batched_fn(fn, names)(*[args[n] for n in names])
        output = self.to_numpy(out)
        if tuple(np.shape(cotangents)) != tuple(out.shape):
            raise ValueError(
                f"torch adapter: cotangent shape {np.shape(cotangents)} != output shape {tuple(out.shape)}"
            )
        if not out.requires_grad:
            return VJPResult(
                output=output, grads={n: np.zeros(tuple(args[n].shape), dtype=dtype) for n in wrt}
            )
        u = torch.tensor(np.asarray(cotangents), dtype=out.dtype, device=out.device)
        raw = torch.autograd.grad(out, leaves, grad_outputs=u, allow_unused=True)
        grads = {
            name: np.zeros(tuple(leaf.shape), dtype=dtype) if g is None else self._view(g)
            for name, leaf, g in zip(wrt, leaves, raw, strict=True)
        }
        return VJPResult(output=output, grads=grads)

    @_scoped_threads
    def jvp_batch(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        tangents: Mapping[str, np.ndarray],
        dtype: str,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`jvp` of ``B`` examples stacked on axis 0: ``torch.func.jvp`` of ``vmap(fn)``.

        The examples are independent along the batch axis, so the pushforward of the stacked
        tangents is every example's ``J_b v_b``.  Output and ``J v`` carry the batch axis first.
        """
        torch, _ = _import_torch()
        check_tangent_names("torch", inputs, tangents)
        everything = list(inputs)
        args = {k: self._shared(v, dtype) for k, v in inputs.items()}
        names = list(tangents)
        batched = self._batched_fn(fn, everything)
        if not names:
            with torch.no_grad():
                out = batched(*[args[n] for n in everything])
            output = self.to_numpy(out)
            return output, np.zeros_like(output)
        _check_tangent_shapes(tangents, args, names)

        def f(*xs: Any) -> Any:
            full = {**args, **dict(zip(names, xs, strict=True))}
            return batched(*[full[n] for n in everything])

        with _quiet_jit_script():
            out, jv = torch.func.jvp(
                f,
                tuple(args[n] for n in names),
                tuple(self._shared(tangents[n], dtype) for n in names),
            )
        return self._view(out), self._view(jv)

    @_scoped_threads
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
        """:meth:`hvp` of ``B`` examples stacked on axis 0, the same two methods on ``vmap(fn)``.

        ``s(X) = sum_b <u_b, f(x_b)>`` separates over the examples, so its Hessian is block
        diagonal and ``H V`` holds every example's ``H_b v_b``.
        """
        _import_torch()
        check_hvp_request("torch", self.hvp_methods, method, inputs, wrt, tangents)
        everything = list(inputs)
        args = {k: self._shared(v, dtype) for k, v in inputs.items()}
        names = list(wrt)
        u = self._shared(np.asarray(cotangents), dtype)
        tans = [self._shared(np.asarray(tangents[n]), dtype) for n in names]
        batched = self._batched_fn(fn, everything)

        def f(*xs: Any) -> Any:
            full = {**args, **dict(zip(names, xs, strict=True))}
            return batched(*[full[n] for n in everything])

        return self._hvp_of(f, args, names, u, tans, method)

    @_scoped_threads
    def jvp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        tangents: Mapping[str, np.ndarray],
        dtype: str,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Output and ``J v`` via ``torch.func.jvp``; inputs without a tangent are constants."""
        torch, _ = _import_torch()
        check_tangent_names("torch", inputs, tangents)
        args = {k: self.from_numpy(v, dtype) for k, v in inputs.items()}
        names = list(tangents)
        if not names:
            with torch.no_grad():
                out = fn(self.ops, args)
            output = self.to_numpy(out)
            return output, np.zeros_like(output)
        _check_tangent_shapes(tangents, args, names)
        primals = tuple(args[name] for name in names)
        tans = tuple(self.from_numpy(tangents[name], dtype) for name in names)

        def f(*xs: Any) -> Any:
            return fn(self.ops, {**args, **dict(zip(names, xs, strict=True))})

        with _quiet_jit_script():
            out, jv = torch.func.jvp(f, primals, tans)
        return self.to_numpy(out), self.to_numpy(jv)

    @_scoped_threads
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

        ``reverse-over-reverse``: ``torch.autograd.grad`` of ``<grad s, v>`` (the gradient
        built with ``create_graph=True``); ``forward-over-reverse``: ``torch.func.jvp`` of
        the gradient map ``x -> torch.func.vjp(f, x)(u)``.
        """
        _import_torch()
        check_hvp_request("torch", self.hvp_methods, method, inputs, wrt, tangents)
        args = {k: self.from_numpy(v, dtype) for k, v in inputs.items()}
        names = list(wrt)
        u = self.from_numpy(np.asarray(cotangent), dtype)
        tans = [self.from_numpy(np.asarray(tangents[n]), dtype) for n in names]

        def f(*xs: Any) -> Any:
            return fn(self.ops, {**args, **dict(zip(names, xs, strict=True))})

        return self._hvp_of(f, args, names, u, tans, method)

    def _hvp_of(
        self, f: Any, args: Mapping[str, Any], names: Sequence[str], u: Any, tans: Sequence[Any], method: str
    ) -> dict[str, np.ndarray]:
        """``H v`` of ``s(x) = <u, f(x)>`` over ``names`` (``f`` takes their tensors in order,
        ``args`` holds every input's tensor), by ``method``: :meth:`hvp` and :meth:`hvp_batch`
        (there ``f`` is ``vmap(fn)`` and every tensor has the batch axis first)."""
        torch, _ = _import_torch()
        if method == "reverse-over-reverse":
            leaves = [args[n].detach().clone().requires_grad_(True) for n in names]
            with torch.enable_grad():
                out = f(*leaves)
                if not out.requires_grad:
                    return {n: np.zeros_like(self.to_numpy(args[n])) for n in names}
                grads = torch.autograd.grad(out, leaves, grad_outputs=u, create_graph=True, allow_unused=True)
                inner = [
                    (g * t).sum()
                    for g, t in zip(grads, tans, strict=True)
                    if g is not None and g.requires_grad
                ]
                if not inner:
                    return {n: np.zeros_like(self.to_numpy(args[n])) for n in names}
                raw = torch.autograd.grad(sum(inner), leaves, allow_unused=True)
            return {
                n: np.zeros_like(self.to_numpy(args[n])) if g is None else self._dense_numpy(g)
                for n, g in zip(names, raw, strict=True)
            }

        def gradient(*xs: Any) -> Any:
            _, pullback = torch.func.vjp(f, *xs)
            return pullback(u)

        with _quiet_jit_script():
            _, hv = torch.func.jvp(gradient, tuple(args[n] for n in names), tuple(tans))
        return {n: self._dense_numpy(t) for n, t in zip(names, hv, strict=True)}

    def _dense_numpy(self, t: Any) -> np.ndarray:
        """``to_numpy`` that also takes torch's ``ZeroTensor`` (what second derivatives of
        piecewise-linear ops such as ``abs`` come back as)."""
        is_zero = getattr(t, "_is_zerotensor", None)
        if callable(is_zero) and is_zero():
            return np.zeros(tuple(t.shape), dtype=self.to_numpy(t.new_zeros(())).dtype)
        return self.to_numpy(t)
