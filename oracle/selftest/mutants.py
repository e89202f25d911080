"""The mutant catalogue: deliberately wrong adapters that ``gradoracle selftest`` must kill.

A test oracle is worth what it catches.  Each :class:`Mutant` is one realistic gradient
bug: a named, documented variant of an adapter whose backward (or, for a few, forward)
breaks one rule of ``notes/gradient-notes.md``.  It carries

- ``targets``: the identities it must be caught on (where the broken rule is exercised);
- ``expected_fault``: the localisation the runner must report (:class:`gradoracle.results.Fault`):
  ``BACKWARD`` for a wrong backward rule, ``FORWARD`` for a forward that computes another
  function (its backward consistent with it), ``ADAPTER`` for a rule whose gradient has
  the wrong shape (the engine refuses it);
- ``dtypes``: where the bug exists (the float16-accumulation bug is float32-only);
- a factory building the adapter.

Most mutants are :class:`gradoracle.adapters.numpy_engine.Rules` subclasses run by the in-house
engine; some wrap one op of the PyTorch adapter in a ``torch.autograd.Function`` with a
wrong backward, or one op of the JAX adapter in a ``jax.custom_vjp``.  torch and jax are
imported only inside the factories, so importing this module stays light.

Loading by spec string (for repro snippets, ``--jobs`` workers and ``gradoracle check``)::

    load_adapter("gradoracle.selftest.mutants:MutantAdapter?name=relu-mask-missing")

:data:`CONTROLS` holds negative controls that are *not* bugs (a correct engine under a
mutant's name); they are left out of the default catalogue and must *survive*.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gradoracle.selftest.catalogue import (
    BOTH,
    CATALOGUE,
    CONTROLS,
    SPEC_PREFIX,
    Mutant,
    UnknownMutantError,
    all_mutants,
    get_mutant,
    mutant_spec,
)

__all__ = [
    "BOTH",
    "CATALOGUE",
    "CONTROLS",
    "SOURCE_MODULES",
    "SPEC_PREFIX",
    "Mutant",
    "MutantAdapter",
    "UnknownMutantError",
    "all_mutants",
    "get_mutant",
    "mutant_spec",
]

#: The modules that define the mutants: an edit to any of them changes every mutant's
#: code fingerprint (:func:`gradoracle.selftest.common.adapter_modules`).
SOURCE_MODULES: tuple[str, ...] = (
    "gradoracle.selftest.mutants",
    "gradoracle.selftest.catalogue",
    "gradoracle.selftest.mutant_rules",
    "gradoracle.selftest.mutant_frameworks",
    "gradoracle.selftest.mutant_audit",
)


class MutantAdapter:
    """``load_adapter`` entry for mutants: ``gradoracle.selftest.mutants:MutantAdapter?name=<mutant>``.

    Delegates every member of the adapter protocol to the mutant's real adapter.
    """

    name: str = "mutant"
    source_modules: tuple[str, ...] = SOURCE_MODULES

    def __init__(self, name: str) -> None:
        self.mutant = get_mutant(name)
        self.inner = self.mutant.build()
        self.name = self.inner.name

    @property
    def dtypes(self) -> tuple[str, ...]:
        """The real adapter's dtypes."""
        return tuple(self.inner.dtypes)

    @property
    def has_jvp(self) -> bool:
        """Whether the real adapter has forward mode."""
        return bool(self.inner.has_jvp)

    @property
    def hvp_methods(self) -> tuple[str, ...]:
        """The real adapter's Hessian-vector-product methods."""
        return tuple(getattr(self.inner, "hvp_methods", ()) or ())

    @property
    def ops(self) -> Any:
        """The real adapter's (mutated) ops namespace."""
        return self.inner.ops

    def available(self) -> tuple[bool, str]:
        """The real adapter's availability."""
        ok, why = self.inner.available()
        return bool(ok), str(why)

    def supported_ops(self) -> frozenset[str]:
        """The real adapter's ops."""
        return frozenset(self.inner.supported_ops())

    def from_numpy(self, a: np.ndarray, dtype: str) -> Any:
        """Delegated."""
        return self.inner.from_numpy(a, dtype)

    def to_numpy(self, t: Any) -> np.ndarray:
        """Delegated."""
        return np.asarray(self.inner.to_numpy(t))

    def forward(self, fn: Any, inputs: Mapping[str, np.ndarray], dtype: str) -> np.ndarray:
        """Delegated."""
        return np.asarray(self.inner.forward(fn, inputs, dtype))

    def vjp(
        self, fn: Any, inputs: Mapping[str, np.ndarray], wrt: Sequence[str], cotangent: np.ndarray, dtype: str
    ) -> Any:
        """Delegated."""
        return self.inner.vjp(fn, inputs, wrt, cotangent, dtype)

    def jvp(
        self, fn: Any, inputs: Mapping[str, np.ndarray], tangents: Mapping[str, np.ndarray], dtype: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Delegated."""
        out, jv = self.inner.jvp(fn, inputs, tangents, dtype)
        return np.asarray(out), np.asarray(jv)

    def hvp(
        self,
        fn: Any,
        inputs: Mapping[str, np.ndarray],
        wrt: Sequence[str],
        cotangent: np.ndarray,
        tangents: Mapping[str, np.ndarray],
        dtype: str,
        method: str,
    ) -> dict[str, np.ndarray]:
        """Delegated."""
        return dict(self.inner.hvp(fn, inputs, wrt, cotangent, tangents, dtype, method))

    def __repr__(self) -> str:
        return f"<MutantAdapter {self.mutant.name!r}>"
