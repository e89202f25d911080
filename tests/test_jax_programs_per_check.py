"""A JAX user check compiles one forward program per input shape and dtype, however many times
the oracle evaluates the reference forward (its output, the finite-difference points, the
float32 rounding sample).  The reference used to hand JAX a new function object per call, and
JAX's jit compiles per function object: a program per evaluation (162 in one 30-example check
of ``jax.scipy.linalg.expm``; three such checks left 63,851 memory maps and 2.8 GB, and the
fourth aborted the whole process with ``LLVM ERROR: Unable to allocate section memory``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

pytest.importorskip("jax")

from gradoracle.adapters import jax_adapter
from gradoracle.adapters.jax_adapter import JaxAdapter
from gradoracle.user_checks import check_gradients


def _clear_shared() -> None:
    """Forget what earlier tests compiled in every plain adapter's cache (each jit mode's)."""
    for cache in jax_adapter._SHARED_CACHES.values():
        cache.clear()


def _forward_programs() -> Counter[tuple[Any, ...]]:
    """Compiled ``forward`` programs of the plain adapters, per (input shapes, dtype)."""
    count: Counter[tuple[Any, ...]] = Counter()
    for cache in jax_adapter._SHARED_CACHES.values():
        for key in cache.compiled:
            if key[0] == "forward":
                count[(key[2], key[3])] += 1
    return count


def test_a_user_check_compiles_one_forward_program_per_shape_and_dtype() -> None:
    import jax.numpy as jnp

    _clear_shared()
    check_gradients(lambda A: jnp.tanh(A) @ A, {"A": ("n", "n")}, framework="jax", examples=12, seed=1)
    programs = _forward_programs()
    shapes = {shapes for shapes, _ in programs}
    assert len(shapes) >= 3, programs  # the check drew several shapes: the count below means something
    assert max(programs.values()) == 1, programs


def test_a_new_function_per_reference_evaluation_is_what_the_count_catches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # the control
    import jax.numpy as jnp

    from gradoracle import user_checks

    _clear_shared()
    monkeypatch.setattr(
        user_checks, "forward_of", lambda forward, name, params: lambda ops, a: forward(ops, a, params)
    )
    check_gradients(lambda A: jnp.tanh(A) @ A, {"A": ("n", "n")}, framework="jax", examples=12, seed=1)
    assert max(_forward_programs().values()) > 1


def _in_given(examples: int) -> None:
    """A ``@given`` test that checks one function once per example (the pytest habit)."""
    import jax.numpy as jnp
    from hypothesis import given, settings
    from hypothesis import strategies as st

    def f(x: Any) -> Any:
        return jnp.tanh(x) * x

    @settings(max_examples=examples, deadline=None, database=None)
    @given(st.integers(0, 3))
    def test(k: int) -> None:
        check_gradients(f, {"x": (3,)}, framework="jax", examples=1, seed=k)

    test()


def test_the_checks_of_one_function_inside_a_given_test_share_their_programs() -> None:
    _clear_shared()
    _in_given(12)
    programs = sum(len(c.compiled) for c in jax_adapter._SHARED_CACHES.values())
    assert programs <= 3, programs  # one shape: the combined program, the forward in float64 and float32


def test_a_forward_per_check_is_what_the_given_count_catches(monkeypatch: pytest.MonkeyPatch) -> None:
    from gradoracle import user_checks

    _clear_shared()  # the control: one forward object per check, as before
    monkeypatch.setattr(user_checks, "_USER_FORWARDS", _Forgetful())
    _in_given(12)
    programs = sum(len(c.compiled) for c in jax_adapter._SHARED_CACHES.values())
    assert programs > 12, programs


class _Forgetful(dict):  # type: ignore[type-arg]
    """A cache of user forwards that keeps nothing."""

    def setdefault(self, key: Any, default: Any = None) -> Any:
        return {} if default is None else default


def _compile_programs(adapter: JaxAdapter, count: int) -> None:
    """``count`` forward programs, one per input length."""
    import numpy as np

    def f(ops: Any, a: Any) -> Any:
        return ops.tanh(a["x"])

    for n in range(1, count + 1):
        adapter.forward(f, {"x": np.ones(n)}, "float64")


def test_a_process_near_its_memory_maps_limit_drops_the_oldest_half_of_its_programs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # past vm.max_map_count, XLA's CPU compiler aborts the process: the cache gives programs back first
    adapter = JaxAdapter(jit="always")
    jax_adapter.clear_cache(adapter)
    cache = adapter._jit_cache
    relieved = cache.relieved
    monkeypatch.setattr(jax_adapter, "_memory_maps", lambda: (40_000, 65_530))
    _compile_programs(adapter, 3 * jax_adapter.MAP_CHECK_EVERY)
    assert cache.relieved > relieved
    assert len(cache.compiled) < 3 * jax_adapter.MAP_CHECK_EVERY
    newest = [key[2] for key in cache.compiled]
    assert (("x", (3 * jax_adapter.MAP_CHECK_EVERY,)),) in newest  # the recent ones are kept
    assert (("x", (1,)),) not in newest  # the oldest went


def test_a_process_well_inside_its_limit_keeps_every_program(monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = JaxAdapter(jit="always")  # the control: the same programs, few maps
    jax_adapter.clear_cache(adapter)
    cache = adapter._jit_cache
    relieved = cache.relieved
    monkeypatch.setattr(jax_adapter, "_memory_maps", lambda: (2_000, 65_530))
    _compile_programs(adapter, 3 * jax_adapter.MAP_CHECK_EVERY)
    assert cache.relieved == relieved
    assert len(cache.compiled) == 3 * jax_adapter.MAP_CHECK_EVERY


def test_the_memory_maps_are_read_where_the_kernel_has_them() -> None:
    import sys

    maps = jax_adapter._memory_maps()
    if not sys.platform.startswith("linux"):
        assert maps is None
        return
    assert maps is not None and 0 < maps[0] < maps[1]
