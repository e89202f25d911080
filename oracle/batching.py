"""Examples evaluated as a batch: one vectorised framework call for many adapter calls.

The runner writes one example's evaluation as a generator that *asks* for adapter work
instead of calling the adapter: it yields a :class:`VjpCall` (one ``u^T J`` at one input)
or a :class:`ForwardCall` (the forward at several finite-difference points) and is sent
the answer.  :func:`drive` runs many such generators in lockstep and answers all the
requests that can share a call at once:

- every ``VjpCall`` with the same forward, input shapes, ``wrt`` and dtype becomes one
  ``adapter.vjp_batch`` call (inputs and cotangents stacked on a new leading axis);
- every ``ForwardCall`` with the same forward, shapes and dtype - all the finite-difference
  points of all the examples of a group - becomes one ``adapter.forward_batch`` call;
- every :class:`JvpCall` (forward mode, ``J v``) and :class:`HvpCall` (second order,
  ``H v`` by one method) with the same forward, shapes, names and dtype becomes one
  ``adapter.jvp_batch`` / ``adapter.hvp_batch`` call.

The batched methods are optional (:func:`supports_batching`): an adapter without them, or one
that overrides ``vjp``/``forward``/``jvp``/``hvp`` without overriding the batched method too (a subclass,
a proxy that perturbs or counts), gets the same requests one call at a time (``vjp``,
``forward``, ``jvp``, ``hvp``), so third-party adapters keep working unchanged.  A batched call that
raises, or returns the wrong shape, is answered one call at a time instead (and that
forward is not batched again for this adapter), so an error is reported against the
example that caused it, exactly as without batching.  The answers are the adapter's
own: the oracle's comparisons and tolerances are the same whichever way a request was
answered.

The runner (:func:`gradoracle.runner.check`) lets Hypothesis choose the examples as
before, evaluates those that share shapes together, and replays (and shrinks) one at a
time only when one failed: see its docstring.
"""

from __future__ import annotations

import collections
import threading
import warnings
import weakref
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ForwardCall",
    "HvpCall",
    "JvpCall",
    "Request",
    "VjpCall",
    "batches_anything",
    "drive",
    "run_one",
    "supports_batching",
]


@dataclass
class VjpCall:
    """Ask for ``adapter.vjp(fn, inputs, wrt, cotangent, dtype)``; answered with its result."""

    fn: Any
    inputs: Mapping[str, np.ndarray]
    wrt: tuple[str, ...]
    cotangent: np.ndarray
    dtype: str

    def key(self) -> tuple[Any, ...]:
        return ("vjp", id(self.fn), _signature(self.inputs), self.wrt, self.dtype, self.cotangent.shape)


@dataclass
class ForwardCall:
    """Ask for the forward at each of ``points`` (same names and shapes); answered with a list."""

    fn: Any
    points: list[dict[str, np.ndarray]]
    dtype: str

    def key(self) -> tuple[Any, ...]:
        return ("forward", id(self.fn), _signature(self.points[0]) if self.points else (), self.dtype)


@dataclass
class JvpCall:
    """Ask for ``adapter.jvp(fn, inputs, tangents, dtype)``; answered with ``(output, J v)``."""

    fn: Any
    inputs: Mapping[str, np.ndarray]
    tangents: Mapping[str, np.ndarray]
    dtype: str

    def key(self) -> tuple[Any, ...]:
        return ("jvp", id(self.fn), _signature(self.inputs), _signature(self.tangents), self.dtype)


@dataclass
class HvpCall:
    """Ask for ``adapter.hvp(fn, inputs, wrt, cotangent, tangents, dtype, method)``; answered
    with its dict name -> ``H v``."""

    fn: Any
    inputs: Mapping[str, np.ndarray]
    wrt: tuple[str, ...]
    cotangent: np.ndarray
    tangents: Mapping[str, np.ndarray]
    dtype: str
    method: str

    def key(self) -> tuple[Any, ...]:
        return (
            "hvp",
            id(self.fn),
            _signature(self.inputs),
            self.wrt,
            _signature(self.tangents),
            self.dtype,
            self.cotangent.shape,
            self.method,
        )


Request = VjpCall | ForwardCall | JvpCall | HvpCall
#: An example's evaluation: yields requests, is sent their answers, returns its outcome.
Evaluation = Generator[Request, Any, Any]


def _signature(arrays: Mapping[str, np.ndarray]) -> tuple[tuple[str, tuple[int, ...], np.dtype[Any]], ...]:
    """``(name, shape, dtype)`` of each array, by name: requests with equal signatures share a call."""
    out = []
    for k, v in arrays.items():
        a = v if isinstance(v, np.ndarray) else np.asarray(v)
        out.append((k, a.shape, a.dtype))
    out.sort(key=lambda item: item[0])
    return tuple(out)


def _batched_method(adapter: Any, single: str, batched: str) -> bool:
    """Whether ``adapter``'s class defines ``batched`` at least as derived as ``single``.

    An adapter that overrides ``vjp`` (or wraps another adapter and forwards unknown
    attributes to it) but not ``vjp_batch`` must be answered by its own ``vjp``: the
    inherited or forwarded batched method would bypass what the override does (a
    perturbation, a count, a fix).  Methods set on the instance count as overrides.
    """
    if single in getattr(adapter, "__dict__", {}):
        return False
    cls = type(adapter)
    owner_batched = next((k for k in cls.__mro__ if batched in k.__dict__), None)
    if owner_batched is None or not callable(getattr(adapter, batched, None)):
        return False
    owner_single = next((k for k in cls.__mro__ if single in k.__dict__), None)
    return owner_single is None or issubclass(owner_batched, owner_single)


def supports_batching(adapter: Any) -> tuple[bool, bool]:
    """``(forward_batch usable, vjp_batch usable)`` for ``adapter`` (see :func:`_batched_method`)."""
    return (
        _batched_method(adapter, "forward", "forward_batch"),
        _batched_method(adapter, "vjp", "vjp_batch"),
    )


def batches_anything(adapter: Any) -> bool:
    """Whether ``adapter`` has any usable batched method (forward, vjp, jvp or hvp)."""
    return any(supports_batching(adapter)) or any(
        _batched_method(adapter, single, f"{single}_batch") for single in ("jvp", "hvp")
    )


# Forwards whose batched call failed once, per adapter object: answered one call at a time.
_UNBATCHABLE: weakref.WeakKeyDictionary[Any, set[tuple[str, int]]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _unbatchable(adapter: Any, kind: str, fn: Any) -> bool:
    try:
        with _LOCK:
            return (kind, id(fn)) in _UNBATCHABLE.get(adapter, set())
    except TypeError:  # an adapter that cannot be weakly referenced
        return False


def _mark_unbatchable(adapter: Any, kind: str, fn: Any) -> None:
    try:
        with _LOCK:
            _UNBATCHABLE.setdefault(adapter, set()).add((kind, id(fn)))
    except TypeError:
        pass


#: Inputs above this many elements per example are sent one call at a time: there the
#: arithmetic dominates a framework call, and stacking copies (``np.stack``, vmap) would
#: only add to it (measured: torch linear 1024x1024, 112x one forward+backward batched
#: against 69x one call at a time).
LARGE_INPUT_ELEMENTS = 2**16


def _worth_batching(arrays: Mapping[str, np.ndarray]) -> bool:
    return sum(int(np.size(v)) for v in arrays.values()) <= LARGE_INPUT_ELEMENTS


def _fresh(arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Copies of ``arrays`` for one call into an adapter: an adapter that writes into its inputs
    (``x *= 2`` in its forward) changes only its own copy, never the oracle's points, which
    share unperturbed inputs with each other and, in float64, with the master inputs that the
    closed form and the oracle's own finite differences use."""
    return {k: np.array(v, copy=True) for k, v in arrays.items()}


def _stack(items: Sequence[Mapping[str, np.ndarray]], dtype: str) -> dict[str, np.ndarray]:
    return {name: np.stack([np.asarray(it[name], dtype=dtype) for it in items]) for name in items[0]}


def _forward_many(adapter: Any, calls: Sequence[ForwardCall]) -> list[list[np.ndarray]]:
    """The forward at every point of every call: one ``forward_batch`` call when possible."""
    fn, dtype = calls[0].fn, calls[0].dtype
    points = [p for c in calls for p in c.points]
    outs: list[np.ndarray] | None = None
    if (
        points
        and supports_batching(adapter)[0]
        and _worth_batching(points[0])
        and not _unbatchable(adapter, "forward", fn)
    ):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # frameworks' vmap performance notes
                batched = np.asarray(adapter.forward_batch(fn, _stack(points, dtype), dtype))
            if batched.ndim < 1 or batched.shape[0] != len(points):
                raise ValueError(f"forward_batch returned shape {batched.shape} for {len(points)} points")
            outs = list(batched)
        except Exception:  # answered one point at a time below; the error, if real, shows there
            _mark_unbatchable(adapter, "forward", fn)
            outs = None
    if outs is None:
        outs = [np.asarray(adapter.forward(fn, _fresh(p), dtype)) for p in points]
    answers, i = [], 0
    for c in calls:
        answers.append(outs[i : i + len(c.points)])
        i += len(c.points)
    return answers


def _vjp_many(adapter: Any, calls: Sequence[VjpCall]) -> list[Any] | None:
    """Every vjp in one ``vjp_batch`` call; ``None`` when that is not possible (then one by one)."""
    from gradoracle.adapters.base import VJPResult

    first = calls[0]
    if (
        not supports_batching(adapter)[1]
        or not _worth_batching(first.inputs)
        or _unbatchable(adapter, "vjp", first.fn)
    ):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = adapter.vjp_batch(
                first.fn,
                _stack([c.inputs for c in calls], first.dtype),
                first.wrt,
                np.stack([np.asarray(c.cotangent, dtype=first.dtype) for c in calls]),
                first.dtype,
            )
        out = np.asarray(res.output)
        grads = {n: np.asarray(res.grads[n]) for n in first.wrt}
        if out.shape[:1] != (len(calls),) or any(g.shape[:1] != (len(calls),) for g in grads.values()):
            raise ValueError("vjp_batch returned arrays without the batch axis")
    except Exception:
        _mark_unbatchable(adapter, "vjp", first.fn)
        return None
    return [VJPResult(output=out[i], grads={n: g[i] for n, g in grads.items()}) for i in range(len(calls))]


def _rows(tree: Any, count: int) -> bool:
    """Whether every array of ``tree`` (an array, a tuple or a dict of arrays) has ``count`` rows."""
    if isinstance(tree, Mapping):
        return all(_rows(v, count) for v in tree.values())
    if isinstance(tree, tuple | list):
        return all(_rows(v, count) for v in tree)
    arr = np.asarray(tree)
    return arr.ndim >= 1 and arr.shape[0] == count


def _jvp_many(adapter: Any, calls: Sequence[JvpCall]) -> list[Any] | None:
    """Every ``J v`` in one ``jvp_batch`` call; ``None`` when that is not possible (then one by one)."""
    first = calls[0]
    if (
        not _batched_method(adapter, "jvp", "jvp_batch")
        or not _worth_batching(first.inputs)
        or _unbatchable(adapter, "jvp", first.fn)
    ):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = adapter.jvp_batch(
                first.fn,
                _stack([c.inputs for c in calls], first.dtype),
                _stack([c.tangents for c in calls], first.dtype),
                first.dtype,
            )
        if not isinstance(res, tuple) or len(res) != 2:
            raise ValueError("jvp_batch did not return a pair (outputs, J v)")
        out, jv = np.asarray(res[0]), np.asarray(res[1])
        if not _rows((out, jv), len(calls)):
            raise ValueError("jvp_batch returned arrays without the batch axis")
    except Exception:
        _mark_unbatchable(adapter, "jvp", first.fn)
        return None
    return [(out[i], jv[i]) for i in range(len(calls))]


def _hvp_many(adapter: Any, calls: Sequence[HvpCall]) -> list[Any] | None:
    """Every ``H v`` in one ``hvp_batch`` call; ``None`` when that is not possible (then one by one)."""
    first = calls[0]
    if (
        not _batched_method(adapter, "hvp", "hvp_batch")
        or not _worth_batching(first.inputs)
        or _unbatchable(adapter, "hvp", first.fn)
    ):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = adapter.hvp_batch(
                first.fn,
                _stack([c.inputs for c in calls], first.dtype),
                first.wrt,
                np.stack([np.asarray(c.cotangent, dtype=first.dtype) for c in calls]),
                _stack([c.tangents for c in calls], first.dtype),
                first.dtype,
                first.method,
            )
        if not isinstance(res, Mapping) or any(n not in res for n in first.wrt):
            raise ValueError("hvp_batch did not return a dict name -> H v for every name")
        hv = {n: np.asarray(res[n]) for n in first.wrt}
        if not _rows(hv, len(calls)):
            raise ValueError("hvp_batch returned arrays without the batch axis")
    except Exception:
        _mark_unbatchable(adapter, "hvp", first.fn)
        return None
    return [{n: a[i] for n, a in hv.items()} for i in range(len(calls))]


def _single(adapter: Any, request: Request) -> Any:
    """The adapter's answer to one request, one call (or one call per point)."""
    if isinstance(request, ForwardCall):
        return [np.asarray(adapter.forward(request.fn, _fresh(p), request.dtype)) for p in request.points]
    if isinstance(request, VjpCall):
        return adapter.vjp(
            request.fn, _fresh(request.inputs), request.wrt, request.cotangent.copy(), request.dtype
        )
    if isinstance(request, JvpCall):
        return adapter.jvp(request.fn, _fresh(request.inputs), _fresh(request.tangents), request.dtype)
    return adapter.hvp(
        request.fn,
        _fresh(request.inputs),
        request.wrt,
        request.cotangent.copy(),
        _fresh(request.tangents),
        request.dtype,
        request.method,
    )


#: Set on an exception an adapter call raised before it is thrown into the evaluation that
#: asked, so an error of the oracle's own code is told apart from the adapter's.
ADAPTER_RAISED = "_gradoracle_adapter_raised"


#: The latest exceptions that refused the mark (a ``__setattr__`` that raises), held here instead.
_UNMARKABLE: collections.deque[BaseException] = collections.deque(maxlen=64)


def _adapter_raised(exc: BaseException) -> BaseException:
    """``exc`` marked as raised by an adapter call (:data:`ADAPTER_RAISED`)."""
    try:
        setattr(exc, ADAPTER_RAISED, True)
    except Exception:  # an exception that takes no attributes is remembered by identity
        _UNMARKABLE.append(exc)
    return exc


def _marked(exc: BaseException) -> bool:
    try:
        return getattr(exc, ADAPTER_RAISED, False) is True
    except Exception:  # a __getattr__ that raises
        return False


def raised_by_adapter(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception it was raised from or while handling, came out of an
    adapter call made through :func:`drive` or :func:`run_one`."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if _marked(current) or any(current is e for e in _UNMARKABLE):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def drive(adapter: Any, evaluations: Sequence[Evaluation]) -> list[Any]:
    """Run the evaluations in lockstep, answering their requests batched; their return values.

    An exception an adapter call raises is thrown into the evaluation that asked (which
    may catch it); an exception an evaluation lets escape is returned in its place.
    """
    results: list[Any] = [None] * len(evaluations)
    pending: dict[int, Request] = {}
    incoming: dict[int, tuple[bool, Any]] = {i: (True, None) for i in range(len(evaluations))}

    def advance(i: int, ok: bool, value: Any) -> None:
        gen = evaluations[i]
        try:
            request = gen.send(value) if ok else gen.throw(value)
        except StopIteration as stop:
            results[i] = stop.value
        except Exception as exc:  # the evaluation's own error: the caller decides
            results[i] = exc
        else:
            pending[i] = request

    while incoming:
        for i, (ok, value) in list(incoming.items()):
            advance(i, ok, value)
        incoming = {}
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, request in pending.items():
            groups.setdefault(request.key(), []).append(i)
        pending_now, pending = pending, {}
        for members in groups.values():
            reqs = [pending_now[i] for i in members]
            answers = _answer(adapter, reqs)
            for i, answer in zip(members, answers, strict=True):
                incoming[i] = answer
    return results


def _answer(adapter: Any, reqs: Sequence[Request]) -> list[tuple[bool, Any]]:
    """``(ok, value)`` per request: the answer, or the exception to throw into its evaluation."""
    first = reqs[0]
    if isinstance(first, ForwardCall):
        calls = [r for r in reqs if isinstance(r, ForwardCall)]
        try:
            return [(True, a) for a in _forward_many(adapter, calls)]
        except Exception:  # find out which request's points fail, one request at a time
            out: list[tuple[bool, Any]] = []
            for c in calls:
                try:
                    out.append(
                        (True, [np.asarray(adapter.forward(c.fn, _fresh(p), c.dtype)) for p in c.points])
                    )
                except Exception as exc:
                    out.append((False, _adapter_raised(exc)))
            return out
    batched: list[Any] | None = None
    if isinstance(first, VjpCall):
        batched = _vjp_many(adapter, [r for r in reqs if isinstance(r, VjpCall)])
    elif isinstance(first, JvpCall):
        batched = _jvp_many(adapter, [r for r in reqs if isinstance(r, JvpCall)])
    elif isinstance(first, HvpCall):
        batched = _hvp_many(adapter, [r for r in reqs if isinstance(r, HvpCall)])
    if batched is not None:
        return [(True, r) for r in batched]
    answers: list[tuple[bool, Any]] = []
    for r in reqs:
        try:
            answers.append((True, _single(adapter, r)))
        except Exception as exc:
            answers.append((False, _adapter_raised(exc)))
    return answers


def run_one(evaluation: Evaluation, answer: Callable[[Request], Any]) -> Any:
    """Run one evaluation answering each request with ``answer(request)`` (exceptions thrown in)."""
    try:
        request = next(evaluation)
        while True:
            try:
                value = answer(request)
            except Exception as exc:
                request = evaluation.throw(_adapter_raised(exc))
            else:
                request = evaluation.send(value)
    except StopIteration as stop:
        return stop.value
