"""Deliberately broken adapters: one per fault a real adapter can have (issue 3, item 10).

Loadable by path (``broken_adapters:RaisingAdapter``) with ``tests/`` on ``sys.path``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np

from gradoracle.adapters.base import ForwardFn, VJPResult
from gradoracle.adapters.jax_adapter import JaxAdapter, JaxOps
from gradoracle.adapters.numpy_engine import NumpyEngineAdapter, Rules


class _Post(NumpyEngineAdapter):
    """The correct NumPy engine with its vjp result post-processed by ``mangle``."""

    def __init__(self) -> None:
        super().__init__(name=type(self).__name__)

    def mangle(self, result: VJPResult, dtype: str) -> VJPResult:
        raise NotImplementedError

    def vjp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangent: np.ndarray,
        dtype: str,
    ) -> VJPResult:
        return self.mangle(super().vjp(fn, inputs, wrt, cotangent, dtype), dtype)


class RaisingAdapter(_Post):
    """vjp raises, with a hostile message."""

    def mangle(self, result: VJPResult, dtype: str) -> VJPResult:
        raise RuntimeError("backward kernel exploded <script>alert('x')</script>")


class WrongShapeAdapter(_Post):
    """Gradients come back flattened."""

    def mangle(self, result: VJPResult, dtype: str) -> VJPResult:
        return VJPResult(
            result.output,
            {k: v.reshape(-1)[:-1] if v.size > 1 else v.reshape(1, 1) for k, v in result.grads.items()},
        )


class WrongDtypeAdapter(_Post):
    """Gradients come back in float16."""

    def mangle(self, result: VJPResult, dtype: str) -> VJPResult:
        return VJPResult(result.output, {k: v.astype(np.float16) for k, v in result.grads.items()})


class MissingGradAdapter(_Post):
    """The last input's gradient is missing."""

    def mangle(self, result: VJPResult, dtype: str) -> VJPResult:
        grads = dict(result.grads)
        grads.pop(sorted(grads)[-1])
        return VJPResult(result.output, grads)


class NaNAdapter(_Post):
    """One gradient element is NaN."""

    def mangle(self, result: VJPResult, dtype: str) -> VJPResult:
        grads = {k: v.copy() for k, v in result.grads.items()}
        first = sorted(grads)[0]
        grads[first].reshape(-1)[0] = np.nan
        return VJPResult(result.output, grads)


class HangingAdapter(_Post):
    """vjp never returns (well, not for an hour)."""

    def mangle(self, result: VJPResult, dtype: str) -> VJPResult:
        time.sleep(3600)
        return result


class ScaledAdapter(_Post):
    """Every gradient off by a factor 1 + 1e-3 (forward correct): a backward fault."""

    def mangle(self, result: VJPResult, dtype: str) -> VJPResult:
        return VJPResult(result.output, {k: v * v.dtype.type(1.001) for k, v in result.grads.items()})


class NoRot180Rules(Rules):
    """Input gradient of conv as a full correlation with K instead of rot180(K)."""

    def conv2d_input_grad(self, delta: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        return super().conv2d_input_grad(delta, x, k[::-1, ::-1])


class NoRot180Adapter(NumpyEngineAdapter):
    def __init__(self) -> None:
        super().__init__(rules=NoRot180Rules(), name="no-rot180")


class TrueConvolutionRules(Rules):
    """Forward is a true convolution (kernel flipped) and the backward is consistent with it:
    a different function than the notes' cross-correlation, so the fault is the forward."""

    def conv2d_forward(self, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        return super().conv2d_forward(x, k[::-1, ::-1])

    def conv2d_input_grad(self, delta: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        return super().conv2d_input_grad(delta, x, k[::-1, ::-1])

    def conv2d_filter_grad(self, delta: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        return super().conv2d_filter_grad(delta, x, k)[::-1, ::-1]


class TrueConvolutionAdapter(NumpyEngineAdapter):
    def __init__(self) -> None:
        super().__init__(rules=TrueConvolutionRules(), name="true-convolution")


class LastIndexMaxPoolRules(Rules):
    """Max-pool router sends delta to the window's last pixel instead of its maximum."""

    def max_pool2d_backward(self, delta: np.ndarray, x: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        good = super().max_pool2d_backward(delta, x, *args, **kwargs)
        return np.roll(good, 1, axis=1)


class WrongPixelMaxPoolAdapter(NumpyEngineAdapter):
    def __init__(self) -> None:
        super().__init__(rules=LastIndexMaxPoolRules(), name="wrong-pixel")


class UnavailableAdapter(NumpyEngineAdapter):
    """Says its framework is not installed."""

    def available(self) -> tuple[bool, str]:
        return False, "frobnicate is not installed (pip install frobnicate)"


class WrongSigmoidJaxAdapter(JaxAdapter):
    """The JAX adapter with ``sigmoid`` a ``jax.custom_vjp`` whose backward forgot ``(1 - s)``.

    With the default jit policy: a compiled vjp of the built-in ``jax`` adapter must never
    be reused for this one (nor this one's for ``jax``), whatever ran first.
    """

    name = "jax-wrong-sigmoid"

    @cached_property
    def ops(self) -> Any:
        import jax

        @jax.custom_vjp
        def sigmoid(x: Any) -> Any:
            return jax.nn.sigmoid(x)

        def fwd(x: Any) -> tuple[Any, Any]:
            s = jax.nn.sigmoid(x)
            return s, s

        def bwd(s: Any, g: Any) -> tuple[Any]:
            return (g * s,)

        sigmoid.defvjp(fwd, bwd)

        class Ops(JaxOps):
            def sigmoid(self, x: Any) -> Any:
                return sigmoid(x)

        return Ops()


# ------------------------------------------------------------------ issue 11, part A (iso)
# One hostile adapter per failure the guard and the process isolation must contain.


class SegfaultAdapter(_Post):
    """vjp crashes the interpreter (SIGSEGV)."""

    def mangle(self, result: VJPResult, dtype: str) -> VJPResult:
        import ctypes

        ctypes.string_at(0)  # reads address 0: a segmentation fault
        return result


class ExitAdapter(_Post):
    """vjp ends the process with ``os._exit(3)`` (no exception, no cleanup)."""

    def mangle(self, result: VJPResult, dtype: str) -> VJPResult:
        os._exit(3)


class SystemExitAdapter(_Post):
    """vjp raises ``SystemExit(4)`` (``sys.exit`` inside the framework)."""

    def mangle(self, result: VJPResult, dtype: str) -> VJPResult:
        raise SystemExit(4)


class KeyboardInterruptAdapter(_Post):
    """vjp raises ``KeyboardInterrupt`` itself (nobody pressed Ctrl-C)."""

    def mangle(self, result: VJPResult, dtype: str) -> VJPResult:
        raise KeyboardInterrupt


class _Unprintable(RuntimeError):
    def __str__(self) -> str:
        raise ValueError("__str__ of this exception raises")

    def __repr__(self) -> str:
        raise ValueError("__repr__ of this exception raises")


class UnprintableExceptionAdapter(_Post):
    """vjp raises an exception whose ``__str__`` and ``__repr__`` raise."""

    def mangle(self, result: VJPResult, dtype: str) -> VJPResult:
        raise _Unprintable()


class ZeroDimGradAdapter(_Post):
    """Gradients come back as 0-d arrays (the probes used to crash formatting them)."""

    def mangle(self, result: VJPResult, dtype: str) -> VJPResult:
        return VJPResult(result.output, {k: np.asarray(v.reshape(-1)[0]) for k, v in result.grads.items()})


class HangingAvailableAdapter(NumpyEngineAdapter):
    """``available()`` never returns."""

    def __init__(self) -> None:
        super().__init__(name="hanging-available")

    def available(self) -> tuple[bool, str]:
        time.sleep(3600)
        return True, ""


class GILHoldingHangAdapter(_Post):
    """vjp blocks in a C call that holds the interpreter lock (no thread can time it out)."""

    def mangle(self, result: VJPResult, dtype: str) -> VJPResult:
        import ctypes

        ctypes.PyDLL(None).sleep(3600)  # PyDLL: the GIL stays held during the call
        return result


class OsEntropyNoiseAdapter(_Post):
    """Gradients carry noise from the OS (``os.urandom``): a different answer every call."""

    def mangle(self, result: VJPResult, dtype: str) -> VJPResult:
        def noisy(v: np.ndarray) -> np.ndarray:
            noise = np.frombuffer(os.urandom(8 * v.size), dtype=np.uint64).reshape(v.shape)
            scale = (noise / np.float64(2**64) - 0.5) * 1e-3
            return (v * (1 + scale)).astype(v.dtype)

        return VJPResult(result.output, {k: noisy(v) for k, v in result.grads.items()})


class NumpyRandomNoiseAdapter(_Post):
    """Gradients carry tiny noise from ``np.random`` (within tolerance; Hypothesis reseeds it)."""

    def mangle(self, result: VJPResult, dtype: str) -> VJPResult:
        def noisy(v: np.ndarray) -> np.ndarray:
            return (v * (1 + 4 * np.finfo(v.dtype).eps * np.random.standard_normal(v.shape))).astype(v.dtype)

        return VJPResult(result.output, {k: noisy(v) for k, v in result.grads.items()})


class DocumentedNoiseAdapter(NumpyRandomNoiseAdapter):
    """The same tiny noise, documented: ``nondeterminism_rtol`` allows it."""

    nondeterminism_rtol = 1e-12


class PromotingRules(Rules):
    """leaky_relu returns float64 whatever it is given (MyGrad's leaky ReLU does this)."""

    def leaky_relu_forward(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(super().leaky_relu_forward(x), dtype=np.float64)

    def leaky_relu_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return np.asarray(super().leaky_relu_backward(delta, x, z), dtype=np.float64)


class PromotingAdapter(NumpyEngineAdapter):
    def __init__(self) -> None:
        super().__init__(rules=PromotingRules(), name="promoting")


class ThreadBoundAdapter(NumpyEngineAdapter):
    """Works only on the thread that made it (tinygrad's SQLite cache is bound to one thread)."""

    def __init__(self) -> None:
        super().__init__(name="thread-bound")
        self._owner = threading.get_ident()

    def _same_thread(self) -> None:
        if threading.get_ident() != self._owner:
            raise RuntimeError("SQLite objects created in a thread can only be used in that same thread")

    def available(self) -> tuple[bool, str]:
        self._same_thread()
        return True, ""

    def supported_ops(self) -> frozenset[str]:
        self._same_thread()
        return super().supported_ops()

    def forward(self, fn: ForwardFn, inputs: Mapping[str, np.ndarray], dtype: str) -> np.ndarray:
        self._same_thread()
        return super().forward(fn, inputs, dtype)

    def vjp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangent: np.ndarray,
        dtype: str,
    ) -> VJPResult:
        self._same_thread()
        return super().vjp(fn, inputs, wrt, cotangent, dtype)


# ---------------------------------------------------------------------------------------------
# Issue 11 part B (clean text, load failures): hostile text and adapters that fail to load.
# Loaded by tests/test_report_integrity.py; the modules that fail at import are written there.

#: What the hostile adapter puts in its name and errors: rich markup, an ANSI colour, an OSC
#: window-title sequence, an 8-bit CSI, a bidi override, a lone surrogate (os.fsdecode of a
#: non-UTF-8 name) and a carriage return that would overwrite the line.
HOSTILE_TEXT = "[/][bold red]x[/] \x1b[31mred\x1b[0m \x1b]0;pwned\x07 \x9b2J \u202eevil \udcff \rgone"
#: Length of the hostile adapter's exception message (1 MB).
HUGE_MESSAGE_CHARS = 1_000_000


class HostileTextAdapter(NumpyEngineAdapter):
    """Name and vjp errors made of markup, terminal escapes, a lone surrogate and 1 MB of text."""

    def __init__(self) -> None:
        super().__init__(name="hostile[/]\x1b[31m")

    def vjp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangent: np.ndarray,
        dtype: str,
    ) -> VJPResult:
        filler = "y" * (HUGE_MESSAGE_CHARS - 2 * len(HOSTILE_TEXT))
        raise RuntimeError(HOSTILE_TEXT + filler + HOSTILE_TEXT)


class ConstructorRaisesAdapter(NumpyEngineAdapter):
    """The constructor raises something other than TypeError/ValueError."""

    def __init__(self) -> None:
        raise RuntimeError("cannot open the device\nsecond line of the cause")


class AvailableRaisesAdapter(NumpyEngineAdapter):
    """available() raises instead of answering."""

    def available(self) -> tuple[bool, str]:
        raise OSError("libfrobnicate.so: cannot open shared object file")


class PlanRaisesAdapter(NumpyEngineAdapter):
    """The optional plan_modes hint raises."""

    def plan_modes(self, modes: Any) -> None:
        raise RuntimeError("cannot plan for these modes")


class SegfaultingConstructorAdapter(NumpyEngineAdapter):
    """The constructor crashes the interpreter (a framework's native import gone wrong)."""

    def __init__(self) -> None:
        import ctypes

        ctypes.string_at(0)


class ExitingConstructorAdapter(NumpyEngineAdapter):
    """The constructor calls sys.exit (a CLI script turned adapter)."""

    def __init__(self) -> None:
        raise SystemExit(4)


# ---------------------------------------------------------------------------------------------
# Adapters that print: captured by the worker, never on the terminal (shown for failures only).

#: What the printing adapters write: from Python to stdout, with an ANSI colour and an OSC title.
PRINTED_TEXT = "debug: vjp of the printing adapter \x1b[31mred\x1b[0m \x1b]0;pwned\x07"
#: What they write from "C" (straight to file descriptor 2, under Python's sys.stderr).
PRINTED_FD2 = b"native stderr line from the printing adapter\n"


class PrintingAdapter(_Post):
    """A correct vjp that prints on every call, from Python and at the file-descriptor level."""

    def mangle(self, result: VJPResult, dtype: str) -> VJPResult:
        print(PRINTED_TEXT, flush=True)
        os.write(2, PRINTED_FD2)
        return result


class PrintingWrongAdapter(PrintingAdapter):
    """Prints like :class:`PrintingAdapter`, and its gradients are 1.5x too large."""

    def mangle(self, result: VJPResult, dtype: str) -> VJPResult:
        result = super().mangle(result, dtype)
        return VJPResult(result.output, {k: v * 1.5 for k, v in result.grads.items()})


class PrintingSegfaultAdapter(_Post):
    """Prints a last word, then crashes the interpreter."""

    def mangle(self, result: VJPResult, dtype: str) -> VJPResult:
        import ctypes

        print("last words before the crash", flush=True)
        ctypes.string_at(0)
        return result
