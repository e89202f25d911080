"""Probe: a ``@given`` test that calls ``check_gradients(..., framework="jax")`` once per example
(20 examples, one 3x3 input), and the JAX programs it leaves compiled.

Run: ``python docs/hostile-probes/jax_given_sharing.py {mlp|expm} {after|before}``; ``before``
makes one forward object per check, as gradoracle did before session 19 (the checks of one
function then compiled their programs again at every example).  Prints the seconds and the
number of programs.  Run each once first to warm JAX's persistent cache.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
from hypothesis import given, settings
from hypothesis import strategies as st

from gradoracle import user_checks
from gradoracle.adapters import jax_adapter
from gradoracle.user_checks import check_gradients


class _Forgetful(dict):  # type: ignore[type-arg]
    """A cache of user forwards that keeps nothing: one forward object per check."""

    def setdefault(self, key: Any, default: Any = None) -> Any:
        return {} if default is None else default


FUNCTIONS: dict[str, Any] = {
    "expm": jax.scipy.linalg.expm,
    "mlp": lambda A: jnp.tanh(A @ jnp.tanh(A)).sum(0),
}


def main(name: str, variant: str) -> None:
    """Time the ``@given`` test; print the seconds and the programs compiled."""
    if variant == "before":
        user_checks._USER_FORWARDS = _Forgetful()  # type: ignore[assignment]
    fn = FUNCTIONS[name]

    @settings(max_examples=20, deadline=None, database=None)
    @given(st.integers(0, 10**6))
    def test(k: int) -> None:
        check_gradients(fn, {"A": (3, 3)}, framework="jax", examples=1, seed=k)

    t = time.time()
    test()
    programs = sum(len(c.compiled) for c in jax_adapter._SHARED_CACHES.values())
    print(f"{name} {variant}: {time.time() - t:.1f} s, {programs} programs")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
