"""The layer identities (batches, channels, strides, padding, dilation, groups) prove themselves.

Every closed form against projected central differences of the reference forward over
Hypothesis-drawn hyper-parameters; negative controls (a transposed convolution without the
stride dilation, a bias gradient not summed over the batch, a ceil-mode divisor off by the
clipped count, a mean without its 1/N, overlapping max-pool windows that overwrite) rejected
by the same check *only* when their parameter is on; shrinking to the simplest failing
configuration; the strategies' validity; and a constant number of framework evaluations per
check whatever the layer's size.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, find, given, settings

from gradoracle import runner
from gradoracle.adapters.numpy_engine import NumpyEngineAdapter
from gradoracle.identities import (
    Identity,
    InvalidShapeError,
    all_identities,
    convolution_nd,
    get_identity,
    mlp_batch,
    pooling_nd,
)
from gradoracle.reference_layers import (
    conv_output_shape,
    conv_pads,
    crop,
    offset_slices,
    offsets,
    pool_geometry,
)
from gradoracle.selftest import mutant_rules as M
from gradoracle.strategies import KINK_MARGIN, Example

LAYERS = [i.name for i in all_identities() if i.generalises]
PROOF = settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None
)


def projected_error(ident: Identity, ex: Example, directions: int = 3, h: float = 1e-6) -> float:
    """Worst ``|u^T J v (central differences) - <closed form, v>| / sum |g| |v|`` over random v."""
    rng = np.random.default_rng(ex.seed)
    out = ident.reference_forward(ex.inputs, ex.params)
    u = rng.uniform(-1, 1, size=out.shape)
    grads = ident.gradient(ex.inputs, ex.params, u)
    worst = 0.0
    for name in ident.wrt:
        for _ in range(directions):
            v = rng.uniform(-1, 1, size=ex.inputs[name].shape)
            plus = ident.reference_forward({**ex.inputs, name: ex.inputs[name] + h * v}, ex.params)
            minus = ident.reference_forward({**ex.inputs, name: ex.inputs[name] - h * v}, ex.params)
            numeric = float(np.sum(u * (plus - minus))) / (2 * h)
            analytic = float(np.sum(grads[name] * v))
            scale = float(np.sum(np.abs(grads[name]) * np.abs(v))) + 1e-3
            worst = max(worst, abs(numeric - analytic) / scale)
    return worst


def test_the_layer_identities_are_registered_with_their_parameters() -> None:
    assert set(LAYERS) == {
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
    for name in LAYERS:
        ident = get_identity(name)
        assert ident.parameters and ident.derivation and ident.generalises[0] == ident.source, name
    out = subprocess.run(
        [sys.executable, "-m", "gradoracle", "list", "--json"], capture_output=True, text=True, check=True
    )
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert {"stride", "padding", "dilation", "groups"} <= set(rows["conv2d-layer"]["parameters"])
    assert "transposed conv" in rows["conv2d-layer"]["formula"]
    assert rows["mlp-batch"]["generalises"][0] == "notes:mlp"


# ------------------------------------------- closed forms against finite differences


@pytest.mark.parametrize("name", LAYERS)
def test_closed_form_equals_projected_finite_differences(name: str) -> None:
    ident = get_identity(name)

    @PROOF
    @given(ident.strategy())
    def prop(ex: Example) -> None:
        ident.check_shapes(ex.inputs, ex.params)
        assert projected_error(ident, ex) < 1e-6, ex

    prop()


@pytest.mark.parametrize("name", LAYERS)
def test_drawn_examples_are_valid_and_keep_their_kink_margin(name: str) -> None:
    ident = get_identity(name)

    @PROOF
    @given(ident.strategy())
    def prop(ex: Example) -> None:
        ident.check_shapes(ex.inputs, ex.params)  # raises InvalidShapeError if not
        out = ident.reference_forward(ex.inputs, ex.params)
        assert np.all(np.isfinite(out)) and out.size > 0
        if name == "mlp-batch":
            z1 = ex.inputs["X"] @ ex.inputs["W1"].T + ex.inputs["b1"]
            assert np.min(np.abs(z1)) >= 2 * KINK_MARGIN - 1e-9
        if name == "max-pool-layer":
            assert pooling_nd.window_gap(ex.inputs, ex.params) >= 2 * KINK_MARGIN - 1e-9

    prop()


# ------------------------------------------------------------ negative controls


def _conv_geometry(a: dict[str, np.ndarray], p: dict[str, Any]) -> tuple[Any, ...]:
    K = a["K"]
    pads = conv_pads(p["padding"], K.shape[2:], p["dilation"])
    out = conv_output_shape(a["X"].shape[2:], K.shape[2:], p["stride"], pads, p["dilation"])
    return pads, out


def _transposed_conv_without_stride_dilation(a: Any, p: Any, delta: np.ndarray) -> dict[str, np.ndarray]:
    """dJ/dX scattered at p + a d instead of p s + a d: delta never dilated by the stride."""
    g = convolution_nd._grad_conv(a, p, delta)
    X, K, groups = a["X"], a["K"], p["groups"]
    pads, out = _conv_geometry(a, p)
    n, c_in = X.shape[:2]
    c_out, cg = K.shape[:2]
    og = c_out // groups
    dxp = np.zeros((n, c_in, *(s + lo + hi for s, (lo, hi) in zip(X.shape[2:], pads, strict=True))))
    for off in offsets(K.shape[2:]):
        index = (slice(None), slice(None), *offset_slices(off, p["dilation"], (1,) * len(out), out))
        k_off = K[(slice(None), slice(None), *off)].reshape(groups, og, cg)
        dxp[index] += np.einsum("ngop,goc->ngcp", delta.reshape(n, groups, og, -1), k_off).reshape(
            n, c_in, *out
        )
    return {**g, "X": crop(dxp, pads)}


def _filter_grad_without_stride_dilation(a: Any, p: Any, delta: np.ndarray) -> dict[str, np.ndarray]:
    """dJ/dK sampled from Xpad at p + a d: delta not dilated by the stride."""
    g = convolution_nd._grad_conv(a, p, delta)
    X, K = a["X"], a["K"]
    pads, out = _conv_geometry(a, p)
    xp = np.pad(X, ((0, 0), (0, 0), *pads))
    n, groups = X.shape[0], p["groups"]
    dK = np.zeros((groups, K.shape[0] // groups, *K.shape[1:]))
    dg = delta.reshape(n, groups, K.shape[0] // groups, -1)
    for off in offsets(K.shape[2:]):
        index = (slice(None), slice(None), *offset_slices(off, p["dilation"], (1,) * len(out), out))
        dK[(Ellipsis, *off)] = np.einsum("ngop,ngcp->goc", dg, xp[index].reshape(n, groups, K.shape[1], -1))
    return {**g, "K": dK.reshape(K.shape)}


def _bias_not_summed(a: Any, p: Any, delta: np.ndarray) -> dict[str, np.ndarray]:
    """dJ/db = delta of the first batch row only."""
    g = get_identity("linear-layer").reference_gradient(a, p, delta)  # type: ignore[misc]
    return {**g, "b": delta.reshape(-1, delta.shape[-1])[0]}


def _ceil_divisor_full_window(a: Any, p: Any, delta: np.ndarray) -> dict[str, np.ndarray]:
    """Every window divided by the full window size, the clipped count of a partial window ignored."""
    X = a["X"]
    window, stride = p["window"], p["stride"]
    out, pads = pool_geometry(X.shape[2:], window, stride, p["padding"], (1,) * len(window), p["ceil_mode"])
    dxp = np.zeros((*X.shape[:2], *(s + lo + hi for s, (lo, hi) in zip(X.shape[2:], pads, strict=True))))
    for off in offsets(window):
        dxp[(slice(None), slice(None), *offset_slices(off, (1,) * len(window), stride, out))] += (
            delta / np.prod(window)
        )
    return {"X": crop(dxp, pads)}


def _mean_without_one_over_n(a: Any, p: Any, delta: np.ndarray) -> dict[str, np.ndarray]:
    """dJ/dZ = softmax(Z) - T~ under mean: the 1/N forgotten."""
    g = mlp_batch._grad_logits(a, p, delta)
    return {"Z": g["Z"] * a["Z"].shape[0]} if p["reduction"] == "mean" else g


def _overlap_overwrites(a: Any, p: Any, delta: np.ndarray) -> dict[str, np.ndarray]:
    """Overlapping windows sharing a maximum overwrite its gradient instead of adding to it."""
    X = a["X"]
    window, stride, dilation = p["window"], p["stride"], p["dilation"]
    out, pads = pool_geometry(X.shape[2:], window, stride, p["padding"], dilation, p["ceil_mode"])
    xp = np.pad(X, ((0, 0), (0, 0), *pads), constant_values=-np.inf)
    index = [(slice(None), slice(None), *offset_slices(o, dilation, stride, out)) for o in offsets(window)]
    z = np.max([xp[i] for i in index], axis=0)
    dxp = np.zeros(xp.shape)
    for i in index:
        dxp[i] = np.where(xp[i] == z, delta, dxp[i])
    return {"X": crop(dxp, pads)}


def _conv_example(stride: tuple[int, int], padding: Any = (1, 0)) -> Example:
    rng = np.random.default_rng(7)
    inputs = {
        "X": rng.uniform(-1, 1, (2, 4, 7, 6)),
        "K": rng.uniform(-1, 1, (4, 2, 3, 2)),
        "b": rng.uniform(-1, 1, 4),
    }
    return Example(inputs, {"stride": stride, "padding": padding, "dilation": (1, 2), "groups": 2}, 7)


def _linear_example(rows: int) -> Example:
    rng = np.random.default_rng(3)
    return Example(
        {"X": rng.uniform(-1, 1, (rows, 3)), "W": rng.uniform(-1, 1, (4, 3)), "b": rng.uniform(-1, 1, 4)},
        {},
        3,
    )


def _avg_example(ceil_mode: bool) -> Example:
    rng = np.random.default_rng(5)
    params = {
        "window": (3, 2),
        "stride": (2, 2),
        "padding": (1, 0),
        "ceil_mode": ceil_mode,
        "count_include_pad": True,
    }
    return Example({"X": rng.uniform(-1, 1, (2, 2, 6, 5))}, params, 5)


def _logits_example(reduction: str) -> Example:
    rng = np.random.default_rng(9)
    params = {"target": "index", "reduction": reduction, "label_smoothing": 0.1}
    return Example({"Z": rng.uniform(-2, 2, (3, 4)), "T": np.array([0.0, 3.0, 1.0])}, params, 9)


def _max_example(stride: tuple[int, int]) -> Example:
    X = np.zeros((1, 1, 3, 3))
    X[0, 0] = [[0.0, 0.1, 0.2], [0.3, 1.0, 0.4], [0.5, 0.6, 0.7]]  # the centre is every window's maximum
    params = {"window": (2, 2), "stride": stride, "padding": (0, 0), "dilation": (1, 1), "ceil_mode": False}
    return Example({"X": X}, params, 1)


#: bug -> (identity, wrong closed form, example with the parameter on, example with it off)
NEGATIVE_CONTROLS = {
    "transposed convolution without the stride dilation": (
        "conv2d-layer",
        _transposed_conv_without_stride_dilation,
        _conv_example((2, 2)),
        _conv_example((1, 1)),
    ),
    "filter gradient without the stride dilation": (
        "conv2d-layer",
        _filter_grad_without_stride_dilation,
        _conv_example((2, 1)),
        _conv_example((1, 1), "same"),
    ),
    "bias gradient not summed over the batch": (
        "linear-layer",
        _bias_not_summed,
        _linear_example(3),
        _linear_example(1),
    ),
    "ceil-mode divisor off by the clipped count": (
        "avg-pool-layer",
        _ceil_divisor_full_window,
        _avg_example(True),
        _avg_example(False),
    ),
    "mean reduction missing its 1/N": (
        "cross-entropy-batch",
        _mean_without_one_over_n,
        _logits_example("mean"),
        _logits_example("sum"),
    ),
    "overlapping max-pool windows overwrite": (
        "max-pool-layer",
        _overlap_overwrites,
        _max_example((1, 1)),
        _max_example((2, 2)),
    ),
}


@pytest.mark.parametrize("bug", list(NEGATIVE_CONTROLS))
def test_wrong_closed_form_is_rejected_exactly_when_its_parameter_is_on(bug: str) -> None:
    name, wrong_ref, on, off = NEGATIVE_CONTROLS[bug]
    ident = get_identity(name)
    wrong = dataclasses.replace(ident, reference_gradient=wrong_ref)
    assert projected_error(ident, on) < 1e-6  # the right closed form passes with the parameter on
    assert projected_error(wrong, on) > 1e-2  # the wrong one is rejected by the same check
    assert projected_error(wrong, off) < 1e-6  # and only the parameter exposes it


# ------------------------------------------------------- shrinking to the simplest case


def _engine_differs(rules: Any, name: str) -> Any:
    ident = get_identity(name)
    good, bad = NumpyEngineAdapter(), NumpyEngineAdapter(rules=rules)
    fn = runner.forward_for(ident, {})

    def differs(ex: Example) -> bool:
        fn = runner.forward_for(ident, ex.params)
        u = np.random.default_rng(0).uniform(-1, 1, ident.reference_forward(ex.inputs, ex.params).shape)
        g = good.vjp(fn, ex.inputs, ident.wrt, u, "float64").grads
        b = bad.vjp(fn, ex.inputs, ident.wrt, u, "float64").grads
        return any(not np.allclose(g[k], b[k], rtol=1e-9, atol=1e-12) for k in ident.wrt)

    del fn
    return differs


SHRINK = settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None
)


def test_a_stride_bug_shrinks_to_stride_2_and_nothing_else() -> None:
    ident = get_identity("conv2d-layer")
    ex = find(ident.strategy(), _engine_differs(M.ConvInputStrideNotDilated(), ident.name), settings=SHRINK)
    p = ex.params
    assert sorted(p["stride"]) == [1, 2], p  # one axis strided, by 2
    assert p["padding"] == (0, 0) and p["dilation"] == (1, 1) and p["groups"] == 1, p
    assert ex.inputs["X"].shape[:2] == (1, 1) and ex.inputs["K"].shape[:2] == (1, 1)


def test_a_ceil_mode_bug_shrinks_to_ceil_mode_alone() -> None:
    ident = get_identity("avg-pool-layer")
    ex = find(
        ident.strategy(), _engine_differs(M.AvgPoolCeilDivisorFullWindow(), ident.name), settings=SHRINK
    )
    p = ex.params
    assert p["ceil_mode"] is True and p["count_include_pad"] is True, p
    assert set(p["padding"]) == {0} and ex.inputs["X"].shape[:2] == (1, 1), (p, ex.inputs["X"].shape)


def test_a_batch_bug_shrinks_to_two_rows() -> None:
    ident = get_identity("linear-layer")
    ex = find(ident.strategy(), _engine_differs(M.LinearBiasGradFirstRow(), ident.name), settings=SHRINK)
    assert ex.inputs["X"].shape[:-1] == (2,), ex


# ------------------------------------------------------------------ cost stays flat


class CountingEngine(NumpyEngineAdapter):
    """The NumPy engine, counting the framework evaluations a check makes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = {"forward": 0, "vjp": 0}

    def forward(self, fn: Any, inputs: Any, dtype: str) -> np.ndarray:
        self.calls["forward"] += 1
        return super().forward(fn, inputs, dtype)

    def vjp(self, fn: Any, inputs: Any, wrt: Any, cotangent: np.ndarray, dtype: str) -> Any:
        self.calls["vjp"] += 1
        return super().vjp(fn, inputs, wrt, cotangent, dtype)


@pytest.mark.parametrize("size", [(1, 2, 6, 6), (4, 16, 32, 32)])
def test_a_convolution_check_costs_a_constant_number_of_evaluations(size: tuple[int, ...]) -> None:
    c = size[1]
    rng = np.random.default_rng(1)
    ex = Example(
        {
            "X": rng.uniform(-1, 1, size),
            "K": rng.uniform(-1, 1, (c, c // 2, 3, 3)),
            "b": rng.uniform(-1, 1, c),
        },
        {"stride": (2, 1), "padding": (1, 1), "dilation": (1, 2), "groups": 2},
        1,
    )
    engine = CountingEngine()
    outcome = runner.evaluate_example("conv2d-layer", engine, "float64", ex)
    assert outcome.fault.value == "none", outcome
    # two vjps (the second shows whether it repeats itself) and two projected directions
    # (over X, K and b at once) of two forwards each, for 2 x 6 x 6 inputs and for N=4,
    # C=16, 32 x 32 alike
    assert engine.calls == {"vjp": 2, "forward": 2 * 2}, engine.calls


# ------------------------------------------------------------------ clear errors


@pytest.mark.parametrize(
    ("name", "inputs", "params", "match"),
    [
        (
            "conv2d-layer",
            {"X": np.zeros((1, 3, 5, 5)), "K": np.zeros((2, 2, 3, 3)), "b": np.zeros(2)},
            {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 2},
            "groups=2 needs C_in",
        ),
        (
            "conv2d-layer",
            {"X": np.zeros((1, 2, 5, 5)), "K": np.zeros((2, 2, 3, 3)), "b": np.zeros(2)},
            {"stride": (2, 1), "padding": "same", "dilation": (1, 1), "groups": 1},
            "stride 1 only",
        ),
        (
            "conv1d-layer",
            {"X": np.zeros((1, 1, 2)), "K": np.zeros((1, 1, 3)), "b": np.zeros(1)},
            {"stride": (1,), "padding": (0,), "dilation": (2,), "groups": 1},
            "does not fit",
        ),
        (
            "max-pool-layer",
            {"X": np.zeros((1, 1, 6, 6))},
            {"window": (2, 2), "stride": (2, 2), "padding": (2, 0), "dilation": (1, 1), "ceil_mode": False},
            "at most half the window",
        ),
        (
            "cross-entropy-batch",
            {"Z": np.zeros((2, 3)), "T": np.array([0.0, 3.0])},
            {"reduction": "mean", "label_smoothing": 0.0},
            r"integers in \[0, 3\)",
        ),
        ("linear-layer", {"X": np.zeros(3), "W": np.zeros((2, 3)), "b": np.zeros(2)}, {}, "batch axis"),
        ("dense-layer", {"X": np.zeros((2, 3)), "W": np.zeros((2, 3)), "b": np.zeros(3)}, {}, r"\(in, out\)"),
    ],
)
def test_impossible_layer_inputs_are_rejected_with_a_reason(
    name: str, inputs: dict, params: dict, match: str
) -> None:
    with pytest.raises(InvalidShapeError, match=match):
        get_identity(name).gradient(inputs, params, np.zeros(1))


# ------------------------------------------------------------------ convention probes


@pytest.mark.parametrize("adapter", ["numpy", "torch", "jax"])
def test_layer_probes_name_the_convention_each_adapter_follows(adapter: str) -> None:
    from gradoracle.adapters import load_adapter
    from gradoracle.conventions import LAYER_PROBES, PROBES, run_probe

    assert {p.name for p in LAYER_PROBES} <= {p.name for p in PROBES}
    ad = load_adapter(adapter)
    if not ad.available()[0]:
        pytest.skip(f"{adapter} not installed")
    rows = {p.name: run_probe(p, ad, "float64") for p in LAYER_PROBES}
    assert all(r.error is None and r.verdict == "convention" for r in rows.values()), rows
    # gradoracle.ops follows PyTorch: the partial ceil-mode window is divided by its clipped count
    assert rows["avg-pool-ceil-partial-window"].convention.startswith("pytorch divisor")
    assert rows["avg-pool-ceil-padded-window"].convention.startswith("pytorch divisor")


def test_a_full_window_divisor_is_a_named_convention_and_a_wrong_one_is_outside() -> None:
    """Negative control: the Flax-style engine is reported by name; a divisor off by one is outside."""
    from gradoracle.conventions import LAYER_PROBES, run_probe

    probe = next(p for p in LAYER_PROBES if p.name == "avg-pool-ceil-partial-window")
    flax = run_probe(probe, NumpyEngineAdapter(rules=M.AvgPoolFlaxCeilDivisor()), "float64")
    assert flax.verdict == "convention" and flax.convention.startswith("full window divisor"), flax

    class OffByOne(M.Rules):
        def avg_pool_nd_backward(self, delta: Any, x: Any, padding: Any, cache: Any) -> Any:
            positions, count, shape = cache
            return super().avg_pool_nd_backward(delta, x, padding, (positions, count + 1, shape))

    wrong = run_probe(probe, NumpyEngineAdapter(rules=OffByOne()), "float64")
    assert wrong.verdict != "convention", wrong
