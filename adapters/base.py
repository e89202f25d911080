"""The adapter protocol: how a framework is put under test.

An adapter wraps one framework.  It receives an identity's forward as a plain Python
callable ``fn(ops, inputs) -> output`` (``inputs`` maps names to the framework's arrays)
and runs it with its own ops namespace.  Everything that crosses the boundary is a
NumPy array; conversion happens inside the adapter.

A third party puts their framework under test by writing one class with these members
(subclassing :class:`AdapterBase` is optional but saves the boilerplate) and passing
``package.module:Class`` to ``gradoracle check --adapter`` or ``--gradoracle-adapter``,
or by registering it in the ``gradoracle.adapters`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: A forward pass as the oracle hands it to an adapter: ``fn(ops, inputs) -> output``.
ForwardFn = Callable[[Any, Mapping[str, Any]], Any]

SUPPORTED_DTYPES: tuple[str, ...] = ("float64", "float32")


@dataclass(frozen=True)
class VJPResult:
    """The output of a forward pass and the vector-Jacobian products ``u^T J`` per input."""

    output: np.ndarray
    grads: dict[str, np.ndarray]


@runtime_checkable
class Adapter(Protocol):
    """What the runner needs from a framework.

    - ``name``: short name used in ids and reports (``torch``, ``jax``, ``numpy``).
    - ``dtypes``: the dtype names it supports, out of ``"float64"``, ``"float32"``.
    - ``available()``: ``(True, "")`` when the framework imports, else ``(False, why)``.
    - ``supported_ops()``: names out of :data:`gradoracle.ops.ALL_OPS` its ops implement.
    - ``ops``: the ops namespace (built lazily; only touched after ``available()``).
    - ``from_numpy(a, dtype)`` / ``to_numpy(t)``: conversions at the boundary.
    - ``forward(fn, inputs, dtype)``: run ``fn`` on NumPy inputs, return a NumPy output.
    - ``vjp(fn, inputs, wrt, cotangent, dtype)``: output and ``u^T J`` for every name in
      ``wrt``, where ``u`` is ``cotangent`` (same shape as the output).
    - ``jvp(fn, inputs, tangents, dtype)``: output and ``J v`` (optional: adapters without
      forward mode set ``has_jvp = False``).
    - ``hvp(fn, inputs, wrt, cotangent, tangents, dtype, method)``: the Hessian-vector
      product ``H v`` of ``s(x) = <u, fn(x)>`` over the names in ``wrt`` as a dict name ->
      array, by ``method`` out of ``hvp_methods`` (``"reverse-over-reverse"``,
      ``"forward-over-reverse"``); optional: adapters without second order leave
      ``hvp_methods = ()`` (not part of the runtime-checked protocol).
    """

    name: str
    dtypes: tuple[str, ...]
    has_jvp: bool

    def available(self) -> tuple[bool, str]: ...
    def supported_ops(self) -> frozenset[str]: ...
    @property
    def ops(self) -> Any: ...
    def from_numpy(self, a: np.ndarray, dtype: str) -> Any: ...
    def to_numpy(self, t: Any) -> np.ndarray: ...
    def forward(self, fn: ForwardFn, inputs: Mapping[str, np.ndarray], dtype: str) -> np.ndarray: ...
    def vjp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangent: np.ndarray,
        dtype: str,
    ) -> VJPResult: ...
    def jvp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        tangents: Mapping[str, np.ndarray],
        dtype: str,
    ) -> tuple[np.ndarray, np.ndarray]: ...


def check_wrt_names(adapter: str, inputs: Mapping[str, Any], wrt: Sequence[str]) -> None:
    """Raise ``KeyError`` naming the ``wrt`` names that are not inputs (``wrt`` must be a subset)."""
    unknown = [name for name in wrt if name not in inputs]
    if unknown:
        raise KeyError(f"{adapter} adapter: wrt names {unknown} are not inputs ({sorted(inputs)})")


def check_tangent_names(adapter: str, inputs: Mapping[str, Any], tangents: Mapping[str, Any]) -> None:
    """Raise ``KeyError`` naming the tangents that belong to no input (``tangents`` keys must be inputs)."""
    unknown = [name for name in tangents if name not in inputs]
    if unknown:
        raise KeyError(f"{adapter} adapter: tangent names {unknown} are not inputs ({sorted(inputs)})")


def check_hvp_request(
    adapter: str,
    methods: Sequence[str],
    method: str,
    inputs: Mapping[str, Any],
    wrt: Sequence[str],
    tangents: Mapping[str, Any],
) -> None:
    """Raise ``ValueError`` for a ``method`` not in ``methods`` and ``KeyError`` for names of
    ``wrt`` without both an input and a tangent (``H v`` needs ``x`` and ``v`` per name)."""
    if method not in methods:
        raise ValueError(f"{adapter} adapter: unknown hvp method {method!r}; use one of {tuple(methods)}")
    unknown = [name for name in wrt if name not in inputs or name not in tangents]
    if unknown:
        raise KeyError(f"{adapter} adapter: hvp names {unknown} need an input and a tangent")


class AdapterBase:
    """Convenience base: ``forward`` via ``from_numpy``/``ops``/``to_numpy``, no ``jvp``."""

    name: str = "unnamed"
    dtypes: tuple[str, ...] = SUPPORTED_DTYPES
    has_jvp: bool = False
    #: the Hessian-vector-product methods :meth:`hvp` implements (none by default)
    hvp_methods: tuple[str, ...] = ()

    def available(self) -> tuple[bool, str]:
        """Whether the framework can be used here; the reason when it cannot."""
        return True, ""

    def supported_ops(self) -> frozenset[str]:
        """Names of the ops this adapter's namespace implements (default: all it defines)."""
        from gradoracle.ops import ALL_OPS

        return frozenset(op for op in ALL_OPS if callable(getattr(self.ops, op, None)))

    @property
    def ops(self) -> Any:
        raise NotImplementedError(f"adapter {self.name!r} defines no ops namespace")

    def from_numpy(self, a: np.ndarray, dtype: str) -> Any:
        raise NotImplementedError

    def to_numpy(self, t: Any) -> np.ndarray:
        raise NotImplementedError

    def forward(self, fn: ForwardFn, inputs: Mapping[str, np.ndarray], dtype: str) -> np.ndarray:
        """``fn(ops, inputs)`` evaluated with the framework, returned as NumPy."""
        args = {k: self.from_numpy(v, dtype) for k, v in inputs.items()}
        return self.to_numpy(fn(self.ops, args))

    def jvp(
        self,
        fn: ForwardFn,
        inputs: Mapping[str, np.ndarray],
        tangents: Mapping[str, np.ndarray],
        dtype: str,
    ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError(f"adapter {self.name!r} has no forward mode")

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
        """``H v`` of ``s(x) = <u, fn(x)>`` for each name in ``wrt`` (none by default)."""
        raise NotImplementedError(f"adapter {self.name!r} has no Hessian-vector products")

    def plan_modes(self, modes: Iterable[str]) -> None:
        """A hint given before a run's checks: the modes (``vjp``, ``jvp``, ``hvp``) it will ask
        of this adapter, so that it can prepare for exactly those (the JAX adapter compiles one
        program for them).  Optional; the default does nothing."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
