"""The layer mutants (issue 14): each bug shows under its one hyper-parameter, and only there.

- every layer hyper-parameter of :data:`PARAMETERS` has mutants, in the NumPy engine and in
  the PyTorch and JAX adapters, and every layer mutant names the parameter it needs;
- a mutant with its parameter *off* computes the correct adapter's output and gradients (the
  same framework, float64, to rounding) on drawn examples: a kill in the self-test comes from
  the parameter, not from a bug that shows everywhere;
- with the parameter *on*, some drawn example tells the mutant from the correct adapter (the
  self-test's kill matrix, tests/test_selftest.py, then shows the oracle notices it);
- the predicates themselves, on hand-made configurations (negative controls for the test
  above: a wrong "off" predicate would make it vacuous).
"""

from __future__ import annotations

import dataclasses
from importlib.util import find_spec
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

from gradoracle import runner
from gradoracle.adapters import load_adapter
from gradoracle.identities import get_identity
from gradoracle.selftest.layer_parameters import PARAMETERS, parameter_on, rows, windows_overlap
from gradoracle.selftest.mutants import CATALOGUE, all_mutants

HAS = {fw: find_spec(fw) is not None for fw in ("torch", "jax")}
LAYER_MUTANTS = [m for m in all_mutants() if m.parameter]
#: Examples compared per target identity with the parameter off, and at most with it on
#: (fewer for PyTorch and JAX: every new shape costs JAX an eager compilation).
OFF_CHECKS = 8
FRAMEWORK_CHECKS = 5


def _correct(framework: str) -> Any:
    return load_adapter(framework)


def _per_input(name: str, example: Any, good: Any, bad: Any) -> dict[str, float]:
    """The relative difference between the two adapters' output and each gradient."""
    ident = get_identity(name)
    fn = runner.forward_for(ident, example.params)
    out = ident.reference_forward(example.inputs, example.params)
    u = np.random.default_rng(0).uniform(-1, 1, np.shape(out))
    a = good.vjp(fn, example.inputs, ident.wrt, u, "float64")
    b = bad.vjp(fn, example.inputs, ident.wrt, u, "float64")
    pairs = {"output": (a.output, b.output), **{k: (a.grads[k], b.grads[k]) for k in ident.wrt}}
    out_diff = {}
    for key, (x, y) in pairs.items():
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape, (name, key)
        scale = max(float(np.max(np.abs(x), initial=0.0)), 1e-300)
        out_diff[key] = float(np.max(np.abs(x - y), initial=0.0)) / scale
    return out_diff


def _differences(mutant: Any, name: str, example: Any, good: Any, bad: Any) -> float:
    """The largest relative difference between the two adapters' output and gradients."""
    return max(_per_input(name, example, good, bad).values())


#: The one gradient each layer mutant's bug touches on a single-layer identity (plus the output
#: for the forward-fault mutant); on mlp-batch a wrong loss gradient flows into every input.
TOUCHES = {
    "linear-bias-grad-first-row": {"b"},
    "dense-weight-grad-first-row": {"W"},
    "cross-entropy-mean-missing-1-over-n": {"Z"},
    "cross-entropy-smoothing-ignored": {"Z"},
    "conv-input-stride-not-dilated": {"X"},
    "conv-filter-stride-not-dilated": {"K"},
    "conv-filter-dilation-ignored": {"K"},
    "conv-input-cropped-at-wrong-border": {"X"},
    "conv-filter-groups-crossed": {"K"},
    "conv-bias-grad-first-sample": {"b"},
    "max-pool-overlap-overwrites": {"X"},
    "max-pool-padding-not-cropped": {"X"},
    "avg-pool-ceil-divisor-full-window": {"X"},
    "avg-pool-pad-counted-when-excluded": {"X"},
    "avg-pool-flax-ceil-divisor": {"output", "X"},
    "global-avg-pool-last-axis-only": {"X"},
    "torch-conv-input-stride-not-dilated": {"X"},
    "torch-conv-filter-dilation-ignored": {"K"},
    "torch-linear-bias-grad-mean": {"b"},
    "torch-cross-entropy-mean-missing-1-over-n": {"Z"},
    "torch-avg-pool-count-include-pad-ignored": {"X"},
    "jax-max-pool-overlap-overwrites": {"X"},
    "jax-conv-filter-groups-offset-dropped": {"K"},
    "jax-conv-input-cropped-at-origin": {"X"},
    "jax-avg-pool-ceil-overhang-counted": {"X"},
    "jax-cross-entropy-smoothing-ignored": {"Z"},
    # the second audit (oracle/selftest/mutant_audit.py)
    "torch-conv-input-dilation-ignored": {"X"},
    "torch-conv-input-groups-crossed": {"X"},
    "torch-conv-input-same-pad-swapped": {"X"},
    "torch-conv-input-first-axis-stride": {"X"},
    "torch-conv-input-kernel-axes-swapped": {"X"},
    "torch-conv-input-batch-mean": {"X"},
    "torch-conv-filter-channels-reversed": {"K"},
    "torch-conv-filter-batch-mean": {"K"},
    "torch-conv-filter-first-four-samples": {"K"},
    "torch-conv-bias-grad-spatial-mean": {"b"},
    "torch-max-pool-ceil-window-dropped": {"X"},
    "torch-max-pool-dilation-ignored": {"X"},
    "torch-linear-weight-grad-batch-mean": {"W"},
    "torch-cross-entropy-sum-divided-by-n": {"Z"},
    "torch-cross-entropy-smoothing-over-c-minus-1": {"Z"},
    "torch-cross-entropy-soft-target-argmax": {"Z"},
}


def test_every_layer_parameter_has_mutants_in_the_engine_and_the_frameworks() -> None:
    named = {m.parameter for m in LAYER_MUTANTS}
    assert named <= set(PARAMETERS), named - set(PARAMETERS)
    assert named == set(PARAMETERS), f"parameters without a mutant: {set(PARAMETERS) - named}"
    assert set(TOUCHES) == {m.name for m in LAYER_MUTANTS}
    by_framework = {fw: {m.parameter for m in LAYER_MUTANTS if m.framework == fw} for fw in ("torch", "jax")}
    # the bugs that only the framework mutants carry (custom autograd.Function / custom_vjp)
    assert len(by_framework["torch"]) >= 5 and len(by_framework["jax"]) >= 5, by_framework
    framework_params = by_framework["torch"] | by_framework["jax"]
    assert {
        "N > 1",
        "reduction=mean",
        "label_smoothing > 0",
        "stride > 1",
        "dilation > 1",
        "padding > 0",
        "groups > 1",
        "overlapping windows",
        "ceil_mode",
        "count_include_pad=False",
    } <= framework_params
    for m in LAYER_MUTANTS:
        assert m.description.split("]")[0].count("[") == 1, m.name  # says its parameter in brackets


def _draw(mutant: Any, target: str, on: bool, count: int) -> list[Any]:
    """``count`` examples of ``target`` drawn by its strategy filtered to the mutant's parameter
    ``on`` (or off): Hypothesis explores the rest of the configuration around it."""
    ident = get_identity(target)
    out: list[Any] = []

    def keep(e: Any) -> bool:
        return parameter_on(mutant.parameter, target, e.inputs, e.params) is on

    @hypothesis_seed(0)
    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(ident.strategy().filter(keep))
    def body(example: Any) -> None:
        out.append(example)

    body()
    return out


@pytest.mark.parametrize("name", [m.name for m in LAYER_MUTANTS])
def test_a_layer_mutant_is_right_when_its_parameter_is_off(name: str) -> None:
    mutant = CATALOGUE[name]
    if mutant.framework != "numpy" and not HAS[mutant.framework]:
        pytest.skip(f"{mutant.framework} not installed")
    good, bad = _correct(mutant.framework), mutant.build()
    for target in mutant.targets:
        checks = OFF_CHECKS if mutant.framework == "numpy" else FRAMEWORK_CHECKS
        off = _draw(mutant, target, False, checks)
        assert len(off) >= checks // 2, (target, len(off))
        for example in off:
            diff = _differences(mutant, target, example, good, bad)
            assert diff < 1e-10, (target, example.params, diff)
        # with the parameter on, the bug shows on some drawn example
        # (up to twice as many examples where the first ones happen to hide it: a parameter's
        # bug needs more than the parameter on, e.g. two outputs on the strided axis)
        shown: list[set[str]] = []
        for i, e in enumerate(_draw(mutant, target, True, 2 * checks)):
            if i >= checks and any(shown):
                break
            shown.append({k for k, v in _per_input(target, e, good, bad).items() if v > 1e-6})
        assert any(shown), target
        if target != "mlp-batch":  # the bug touches its one gradient, nothing else
            assert all(keys <= TOUCHES[name] for keys in shown), (target, shown)


def test_the_off_check_rejects_a_mutant_whose_bug_shows_without_its_parameter() -> None:
    # negative control: the batch bug declared as a stride bug shows on stride-1 examples
    mutant = dataclasses.replace(CATALOGUE["conv-bias-grad-first-sample"], parameter="stride > 1")
    good, bad = _correct("numpy"), mutant.build()
    off = _draw(mutant, "conv2d-layer", False, OFF_CHECKS)
    assert any(_differences(mutant, "conv2d-layer", e, good, bad) > 1e-6 for e in off)


# ------------------------------------------------- the predicates, on hand-made examples


def _pool(window: int, stride: int, dilation: int = 1, padding: int = 0) -> dict[str, Any]:
    return {
        "window": (window,),
        "stride": (stride,),
        "padding": (padding,),
        "dilation": (dilation,),
        "ceil_mode": False,
        "count_include_pad": True,
    }


@pytest.mark.parametrize(
    ("window", "stride", "dilation", "overlap"),
    [(2, 2, 1, False), (3, 3, 1, False), (2, 1, 1, True), (3, 2, 1, True), (2, 2, 2, True), (2, 4, 2, False)],
)
def test_windows_overlap_when_they_share_a_position(
    window: int, stride: int, dilation: int, overlap: bool
) -> None:
    x = np.zeros((1, 1, 9))
    assert windows_overlap({"X": x}, _pool(window, stride, dilation)) is overlap


def test_rows_count_every_batch_axis_of_a_linear_layer_and_the_leading_axis_elsewhere() -> None:
    assert rows("linear-layer", {"X": np.zeros((2, 1, 3, 4))}) == 6
    assert rows("linear-layer", {"X": np.zeros((1, 4))}) == 1
    assert rows("conv2d-layer", {"X": np.zeros((3, 4, 5, 5))}) == 3
    assert rows("cross-entropy-batch", {"Z": np.zeros((2, 5)), "T": np.zeros(2)}) == 2


def test_padding_is_the_leading_padding_with_same_resolved_as_pytorch() -> None:
    conv = {"stride": (1,), "dilation": (1,), "groups": 1}
    x = np.zeros((1, 1, 6))
    assert not parameter_on(
        "padding > 0", "conv1d-layer", {"X": x, "K": np.zeros((1, 1, 2))}, {**conv, "padding": "same"}
    )
    assert parameter_on(
        "padding > 0", "conv1d-layer", {"X": x, "K": np.zeros((1, 1, 3))}, {**conv, "padding": "same"}
    )
    assert parameter_on(
        "padding > 0", "conv1d-layer", {"X": x, "K": np.zeros((1, 1, 2))}, {**conv, "padding": (1,)}
    )
    assert not parameter_on(
        "count_include_pad=False", "avg-pool-layer", {"X": x}, {**_pool(2, 2), "count_include_pad": False}
    )
    assert parameter_on(
        "count_include_pad=False",
        "avg-pool-layer",
        {"X": x},
        {**_pool(2, 2, padding=1), "count_include_pad": False},
    )
    mean = {"reduction": "mean", "label_smoothing": 0.0}
    assert not parameter_on("reduction=mean", "cross-entropy-batch", {"Z": np.zeros((1, 3))}, mean)
    assert parameter_on("reduction=mean", "cross-entropy-batch", {"Z": np.zeros((2, 3))}, mean)
    assert not parameter_on(
        "reduction=mean", "cross-entropy-batch", {"Z": np.zeros((2, 3))}, {**mean, "reduction": "sum"}
    )
