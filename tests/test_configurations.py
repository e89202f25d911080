"""The covering pool of layer configurations (``--configurations``, gradoracle.layer_strategies).

A layer identity's check draws its hyper-parameter configuration from a fixed pool in which
every value of every hyper-parameter occurs (then pairs, up to N), and its arrays freely.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings

from gradoracle import layer_strategies as L
from gradoracle.identities import all_identities, get_identity
from gradoracle.options import DEFAULT_CONFIGURATIONS, configurations_count, run_config
from gradoracle.runner import CheckSettings, check

LAYERS = [i for i in all_identities() if i.configurations is not None]


def _signature(config: dict[str, Any]) -> str:
    return repr(sorted(config.items()))


def test_every_layer_identity_has_a_configuration_space() -> None:
    names = {i.name for i in LAYERS}
    assert names == {
        "linear-layer",
        "dense-layer",
        "mlp-batch",
        "cross-entropy-batch",
        "conv1d-layer",
        "conv2d-layer",
        "conv3d-layer",
        "max-pool-layer",
        "avg-pool-layer",
        "global-avg-pool",
    }
    # the notes' own identities draw from their (small) shape menus as before
    assert get_identity("matvec-jacobian").configurations is None


@pytest.mark.parametrize("ident", LAYERS, ids=lambda i: i.name)
def test_the_pool_covers_every_value_of_every_hyper_parameter(ident: Any) -> None:
    space = ident.configurations
    pool = space.pool(DEFAULT_CONFIGURATIONS)
    assert pool.universe, "no facets recorded: the configure function picks nothing"
    assert pool.universe <= pool.covered, sorted(pool.universe - pool.covered)
    # every value a free draw can produce (outside the rare accelerator-sized branch) is a facet
    import random

    rng = random.Random(7)
    for _ in range(300):
        picker = L.RandomPicker(rng)
        space.configure(picker)
        if ("large", "True") not in picker.facets:
            assert picker.facets <= pool.universe, sorted(picker.facets - pool.universe)
    # the simplest configuration (every menu's first entry) is first: failures shrink to it
    simplest = L.RandomPicker(random.Random(0), simplest=True)
    assert _signature(pool.configurations[0]) == _signature(space.configure(simplest))
    # one accelerator-sized configuration, last of those drawn (a top-up only one may follow)
    assert ("large", "True") in pool.facets[pool.drawable - 1]
    assert sum(("large", "True") in f for f in pool.facets) == 1
    assert len({_signature(c) for c in pool.configurations}) == len(pool.configurations)


def test_a_pool_without_one_configuration_misses_values() -> None:
    """Negative control: the coverage assertion above can fail (each configuration is needed
    for some value in at least one identity's pool)."""
    needed = 0
    for ident in LAYERS:
        pool = ident.configurations.pool(1)  # the covering minimum
        for k in range(1, len(pool.facets) - 1):
            rest = frozenset().union(*(f for j, f in enumerate(pool.facets) if j != k))
            needed += not pool.universe <= rest
    assert needed > 0


def test_a_larger_size_adds_pairs_and_keeps_the_cover() -> None:
    space = get_identity("conv2d-layer").configurations
    small, large = space.pool(1), space.pool(16)
    assert len(large.configurations) == 16 > len(small.configurations)
    assert large.pairs > small.pairs
    assert large.universe <= large.covered
    assert _signature(large.configurations[0]) == _signature(small.configurations[0])
    with pytest.raises(ValueError, match="at least 1"):
        L.covering_pool("x", space.configure, 0)


def test_large_shapes_env_makes_every_configuration_large(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(L.LARGE_ENV, "1")
    pool = get_identity("conv2d-layer").configurations.pool(8)
    assert all(("large", "True") in f for f in pool.facets)
    assert all(max(c["shapes"]["X"][1], c["shapes"]["K"][0]) >= 16 for c in pool.configurations)


def test_the_pool_is_the_same_in_every_process() -> None:
    code = (
        "import json; from gradoracle.identities import get_identity as g; "
        "print(json.dumps([repr(sorted(c.items())) for n in ('conv3d-layer', 'max-pool-layer', 'mlp-batch') "
        "for c in g(n).configurations.pool(8).configurations]))"
    )
    runs = [
        json.loads(
            subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        )
        for _ in range(2)
    ]
    here = [
        _signature(c)
        for n in ("conv3d-layer", "max-pool-layer", "mlp-batch")
        for c in get_identity(n).configurations.pool(8).configurations
    ]
    assert runs[0] == runs[1] == here


def _drawn_configurations(space: L.ConfigSpace, size: int, n: int) -> list[str]:
    seen: list[str] = []

    def values(draw: Any, config: Any) -> Any:
        seen.append(_signature(config))
        return space.values(draw, config)

    recording = dataclasses.replace(space, values=values)

    @seed(3)
    @settings(
        max_examples=n,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(recording.pooled(size))
    def run(example: Any) -> None:
        assert example.inputs

    run()
    return seen


@pytest.mark.parametrize("name", ["conv2d-layer", "avg-pool-layer", "linear-layer"])
def test_a_check_draws_only_the_pool_and_all_draws_more(name: str) -> None:
    space = get_identity(name).configurations
    pool = {_signature(c) for c in space.pool(DEFAULT_CONFIGURATIONS).configurations}
    pooled = _drawn_configurations(space, DEFAULT_CONFIGURATIONS, 60)
    assert set(pooled) <= pool
    assert len(set(pooled)) >= 3  # the examples spread over the pool
    free = _drawn_configurations(space, 0, 60)  # --configurations all: Hypothesis draws them
    assert set(free) - pool, "drawing freely never left the pool"


def test_the_arrays_are_drawn_anew_within_one_configuration() -> None:
    space = get_identity("conv1d-layer").configurations
    by_config: dict[str, set[bytes]] = {}

    @seed(5)
    @settings(max_examples=80, database=None, phases=[Phase.generate], deadline=None)
    @given(space.pooled(8))
    def run(example: Any) -> None:
        key = repr([(k, v.shape) for k, v in sorted(example.inputs.items())]) + repr(
            sorted(example.params.items())
        )
        by_config.setdefault(key, set()).add(example.inputs["X"].tobytes())

    run()
    assert len(by_config) >= 4
    assert max(len(v) for v in by_config.values()) >= 3


def test_configurations_option() -> None:
    assert configurations_count("all") == 0
    assert configurations_count("0") == 0
    assert configurations_count("12") == 12
    for bad in ("-1", "x", ""):
        with pytest.raises(Exception, match="number of configurations"):
            configurations_count(bad)
    assert run_config({}).settings.configurations == DEFAULT_CONFIGURATIONS
    assert run_config({"configurations": "all"}).settings.configurations == 0
    assert run_config({"configurations": "3"}).configurations == 3  # an ini value is a string
    assert CheckSettings().configurations == DEFAULT_CONFIGURATIONS


def test_a_mutant_wrong_only_under_a_rare_value_is_caught_by_the_default_pool() -> None:
    """The pool exists to keep every hyper-parameter value in every check: an adapter whose
    conv input gradient is wrong only when stride = 3 on the last axis fails the default check
    (and would pass a pool that lacked the value)."""
    import numpy as np

    from gradoracle.adapters.numpy_engine import NumpyEngineAdapter

    class StrideThreeWrong(NumpyEngineAdapter):
        name = "stride-3-wrong"

        def vjp(self, fn: Any, inputs: Any, wrt: Any, cotangent: Any, dtype: str) -> Any:
            result = super().vjp(fn, inputs, wrt, cotangent, dtype)
            if self._stride_last == 3 and "X" in result.grads:
                grads = dict(result.grads)
                grads["X"] = grads["X"] * np.asarray(1.5, dtype=grads["X"].dtype)
                return dataclasses.replace(result, grads=grads)
            return result

        _stride_last = 0

    adapter = StrideThreeWrong()
    ident = get_identity("conv2d-layer")
    real_forward = ident.forward

    def spying(ops: Any, a: Any, p: Any) -> Any:
        adapter._stride_last = p["stride"][-1]
        return real_forward(ops, a, p)

    spy = dataclasses.replace(ident, forward=spying)
    result = check(spy, adapter, "float64", CheckSettings(examples=30, batch=1, shrink=False))
    assert result.verdict.value == "fail", result.message
    assert any(c["params"]["stride"][-1] == 3 for c in ident.configurations.pool(8).configurations)
    # negative control: a "pool" of the simplest configuration alone (stride 1) lets it pass
    import random

    space = ident.configurations
    narrow = L.ConfigSpace(
        "conv2d-simplest-only",
        lambda p: space.configure(L.RandomPicker(random.Random(0), simplest=True)),
        space.values,
    )
    passing = check(
        dataclasses.replace(spy, configurations=narrow),
        adapter,
        "float64",
        CheckSettings(examples=30, batch=1),
    )
    assert passing.verdict.value == "pass", passing.message
