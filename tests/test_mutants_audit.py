"""The second adversarial audit: the configurations and values that its surviving mutants needed
are drawn by default (each with a negative control showing the draw is what catches them)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gradoracle import layer_strategies as L
from gradoracle import runner, strategies
from gradoracle.adapters import load_adapter
from gradoracle.identities import convolution_nd, get_identity, pooling_nd
from gradoracle.reference_layers import conv_pads
from gradoracle.selftest.common import draw_examples
from gradoracle.selftest.kill_matrix import mutant_settings
from gradoracle.selftest.layer_parameters import parameter_on
from gradoracle.selftest.mutants import CATALOGUE


def _examples(name: str, count: int = 40) -> list[Any]:
    return draw_examples(name, count, seed=0)


@pytest.mark.parametrize(("name", "scale"), [("elementwise-tanh", 3.0), ("elementwise-sigmoid", 4.0)])
def test_elementwise_draws_reach_the_tails_and_ordinary_draws_do_not(name: str, scale: float) -> None:
    tails = [e for e in _examples(name) if np.max(np.abs(e.inputs["x"])) > scale]
    assert len(tails) >= 5
    with strategies.ordinary_draws():  # negative control: the bulk alone never leaves [-scale, scale]
        assert all(np.max(np.abs(e.inputs["x"])) <= scale for e in _examples(name))


def test_a_tail_bug_is_caught_and_a_bulk_only_draw_misses_it() -> None:
    mutant = CATALOGUE["tanh-derivative-zero-beyond-3"].build()
    result = runner.check("elementwise-tanh", mutant, "float64", mutant_settings(30, 0))
    assert result.fault.value == "backward"
    with strategies.ordinary_draws():
        result = runner.check("elementwise-tanh", mutant, "float64", mutant_settings(30, 0))
    assert result.verdict.value == "pass"


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_every_convolution_pool_has_asymmetric_padding_on_a_read_input_and_five_rows(rank: int) -> None:
    pool = convolution_nd._space(rank).pool(8)
    asymmetric = [
        c
        for c in pool.configurations
        if any(
            lo != hi
            for lo, hi in conv_pads(c["params"]["padding"], c["shapes"]["K"][2:], c["params"]["dilation"])
        )
    ]
    assert asymmetric, [c["params"] for c in pool.configurations]
    assert any(("asymmetric padding, input read", "True") in f for f in pool.facets)
    assert any(c["shapes"]["X"][0] == 5 for c in pool.configurations)


def test_the_same_pad_mutant_shows_on_the_pools_asymmetric_configuration() -> None:
    mutant = CATALOGUE["torch-conv-input-same-pad-swapped"]
    pytest.importorskip("torch")
    good, bad = load_adapter("torch"), mutant.build()
    ident = get_identity("conv2d-layer")
    pool = convolution_nd._space(2).pool(8)
    rng = np.random.default_rng(0)
    shown = []
    for config in pool.configurations:
        inputs = {k: rng.uniform(-1, 1, s) for k, s in config["shapes"].items()}
        params = config["params"]
        fn = runner.forward_for(ident, params)
        u = rng.uniform(-1, 1, np.shape(ident.reference_forward(inputs, params)))
        a = good.vjp(fn, inputs, ident.wrt, u, "float64").grads["X"]
        b = bad.vjp(fn, inputs, ident.wrt, u, "float64").grads["X"]
        differs = bool(np.max(np.abs(a - b)) > 1e-9)
        if differs:  # the bug shows only where the padding is asymmetric
            assert parameter_on("asymmetric padding", "conv2d-layer", inputs, params)
        shown.append(differs)
    assert any(shown) and not all(shown)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_pools_hold_partial_ceil_windows_and_overlapping_windows(kind: str) -> None:
    name = f"{kind}-pool-layer"
    pool = pooling_nd._SPACES[kind].pool(8)
    on = {
        parameter: sum(
            parameter_on(parameter, name, {"X": np.zeros(c["shape"])}, c["params"])
            for c in pool.configurations
        )
        for parameter in ("ceil_mode", "overlapping windows", "padding > 0")
    }
    assert all(count >= 2 for count in on.values()), on


def test_a_draw_picker_ignores_notes() -> None:
    class Draw:
        def __call__(self, strategy: Any) -> Any:
            raise AssertionError("note() must not draw")

    L.DrawPicker(Draw()).note("anything", True)
