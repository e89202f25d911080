"""The third reverse-mode audit ("audit3"): framework backward passes wrong in one configuration
only, each caught at the default mutant settings (30 examples, seed 0) with the expected fault;
the correct adapters pass the same targets; and each draw change the audit made has a negative
control (the mutants it catches survive under the old draw).  The mutants:
:mod:`gradoracle.selftest.mutant_audit3`."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest

from gradoracle import layer_strategies as L
from gradoracle import runner, strategies
from gradoracle.adapters import load_adapter
from gradoracle.conventions import PROBES, run_probe
from gradoracle.identities import convolution_nd, get_identity, mlp_batch
from gradoracle.results import Verdict
from gradoracle.selftest.common import draw_examples
from gradoracle.selftest.kill_matrix import mutant_settings
from gradoracle.selftest.mutant_audit3 import MUTANTS, MUTANTS_BY_NAME, SURVIVORS, AuditMutant, available

DEFAULT = mutant_settings(30, 0)


def _check(mutant: AuditMutant) -> Any:
    if not available(mutant):
        pytest.skip(f"{mutant.framework} is not installed")
    return runner.check(mutant.target, mutant.build(), mutant.dtype, DEFAULT, "vjp")


def test_the_audit_has_at_least_30_one_configuration_mutants() -> None:
    assert len(MUTANTS) >= 30 and len(MUTANTS_BY_NAME) == len(MUTANTS)
    assert {m.framework for m in MUTANTS} == {"torch", "jax", "numpy"}
    assert all(get_identity(m.target).name == m.target for m in MUTANTS)
    # each description names its one configuration first: "[the configuration] what is wrong"
    assert all(m.description.startswith("[") and "] " in m.description for m in MUTANTS), [
        m.name for m in MUTANTS if not m.description.startswith("[")
    ]


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_each_mutant_is_caught_with_the_expected_fault(mutant: AuditMutant) -> None:
    if mutant.probe is not None:  # a tie: judged where the convention probes sit on it
        if not available(mutant):
            pytest.skip(f"{mutant.framework} is not installed")
        probe = next(p for p in PROBES if p.name == mutant.probe)
        result = run_probe(probe, mutant.build(), mutant.dtype)
        assert result.verdict == "fail" and result.fault == mutant.fault.value, result.outside
        return
    result = _check(mutant)
    assert result.verdict == Verdict.FAIL, result.message
    assert result.fault == mutant.fault, result.message


_GUARDS = sorted({(m.framework, m.target, m.dtype) for m in MUTANTS if m.probe is None})


@pytest.mark.parametrize(("framework", "target", "dtype"), _GUARDS, ids=["-".join(g) for g in _GUARDS])
def test_the_correct_adapter_passes_every_target(framework: str, target: str, dtype: str) -> None:
    # the negative control of every kill above: the same draws, the framework's own gradients
    if framework != "numpy" and importlib.util.find_spec(framework) is None:
        pytest.skip(f"{framework} is not installed")
    result = runner.check(target, load_adapter(framework), dtype, DEFAULT, "vjp")
    assert result.verdict == Verdict.PASS, result.message


def test_the_tie_probe_passes_the_correct_adapter() -> None:
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    probe = next(p for p in PROBES if p.name == "max-pool-tie-in-window")
    assert run_probe(probe, load_adapter("torch"), "float64").verdict == "convention"


# ------------------------------------------------- the draws the audit changed, with controls


def _survives(name: str) -> bool:
    return bool(_check(MUTANTS_BY_NAME[name]).verdict == Verdict.PASS)


@pytest.mark.parametrize("name", ["elementwise-tanh", "elementwise-sin", "elementwise-gelu"])
def test_smooth_elementwise_draws_hold_exact_zeros_of_both_signs(name: str) -> None:
    def drawn() -> np.ndarray:  # all but Hypothesis's simplest example (all zeros: the runner skips it)
        return np.concatenate([e.inputs["x"] for e in draw_examples(name, 30, seed=0) if e.inputs["x"].any()])

    x = drawn()
    zeros = x[x == 0]
    assert np.signbit(zeros).any() and not np.signbit(zeros).all(), zeros
    with strategies.ordinary_draws():  # negative control: the uniform bulk never lands on 0
        assert not (drawn() == 0).any()


@pytest.mark.parametrize(
    "name", ["torch-tanh-derivative-zero-at-exact-zero", "torch-gelu-derivative-at-negative-zero"]
)
def test_an_exact_zero_bug_survives_the_ordinary_draws(name: str) -> None:
    assert not _survives(name)
    with strategies.ordinary_draws():
        assert _survives(name)


def test_the_old_accelerator_sizes_miss_the_tile_and_tail_bugs(monkeypatch: pytest.MonkeyPatch) -> None:
    # negative control: the sizes before the audit (4-16 rows; widths and channels 16, 32, 64: whole
    # blocks) build pools in which no configuration crosses a blocking boundary
    names = [
        "torch-linear-weight-grad-first-row-tile",
        "torch-linear-input-grad-width-tail-16",
        "torch-cross-entropy-classes-width-tail-16",
        "torch-avg-pool-channel-tail-16",
    ]
    assert not any(_survives(n) for n in names)
    monkeypatch.setattr(L, "_POOLS", {})
    monkeypatch.setattr(L, "LARGE_ROWS", 4)
    monkeypatch.setattr(L, "LARGE_WIDTHS", ((16, 32), (64, 16), (32, 64)))
    monkeypatch.setattr(L, "LARGE_CHANNELS", (16, 32, 64))
    monkeypatch.setattr(mlp_batch, "LARGE_CLASSES", 64)
    assert all(_survives(n) for n in names)


def test_accelerator_sized_configurations_cross_a_blocking_boundary() -> None:
    assert L.LARGE_ROWS > 32
    widths = [w for pair in L.LARGE_WIDTHS for w in pair] + list(L.LARGE_CHANNELS) + [mlp_batch.LARGE_CLASSES]
    assert all(w > 16 and w % 16 for w in widths), widths
    assert all(c_out > 32 and c_out % 32 for _, _, c_out in L.LARGE_CONV_CHANNELS)


_NEW_NOTES = (
    "stride past the kernel, 2+ outputs",
    "strided 1x1 kernel, 2+ outputs",
    "depthwise (groups = C_in > 1)",
    "C_in/groups past a block of 16",  # the accelerator-sized configuration's: preferred, not required
)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_every_convolution_pool_holds_the_required_facets_within_its_size(rank: int) -> None:
    pool = convolution_nd._space(rank).pool(8)
    # the drawn configurations within the size; a late combination adds a top-up only one
    assert pool.drawable <= 8 and len(pool.configurations) <= pool.drawable + len(pool.late)
    # the one accelerator-sized configuration of conv1d's pool is depthwise: no channel tail per group
    for label in _NEW_NOTES if rank > 1 else _NEW_NOTES[:3]:
        assert any((label, "True") in f for f in pool.facets), (
            label,
            [c["params"] for c in pool.configurations],
        )


def test_without_the_required_facets_the_stride_and_channel_bugs_survive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (the general stride mutant and the depthwise one are caught without the notes too, by
    # configurations the pool happens to hold; the notes make those configurations required)
    names = ["torch-conv-input-pointwise-stride-ignored", "torch-conv-filter-channel-tail-16"]
    assert not any(_survives(n) for n in names)
    note = L.RandomPicker.note

    def old_note(self: L.RandomPicker, label: str, value: object) -> None:
        if label not in _NEW_NOTES:
            note(self, label, value)

    monkeypatch.setattr(L, "_POOLS", {})
    monkeypatch.setattr(L.RandomPicker, "note", old_note)
    _without_later_conv_choices(monkeypatch)
    assert all(_survives(n) for n in names)


def _without_later_conv_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    """The convolution pools as this audit built them: no bias choice (every layer with its bias,
    no generator draw spent on it) and no stride-with-dilation note (both came later)."""
    one, note = L.RandomPicker.one, L.RandomPicker.note

    def no_bias_choice(self: L.RandomPicker, label: str, menu: Any, cover: bool = True) -> Any:
        return menu[0] if label == "bias" else one(self, label, menu, cover)

    def no_later_note(self: L.RandomPicker, label: str, value: object) -> None:
        if not label.startswith("stride and dilation"):
            note(self, label, value)

    monkeypatch.setattr(L, "_POOLS", {})
    monkeypatch.setattr(L.RandomPicker, "one", no_bias_choice)
    monkeypatch.setattr(L.RandomPicker, "note", no_later_note)


@pytest.mark.parametrize("mutant", [m for m, _ in SURVIVORS], ids=[m.name for m, _ in SURVIVORS])
def test_a_survivor_not_chased_still_survives_the_default_check(mutant: AuditMutant) -> None:
    # the record of a known gap: when a draw change catches it at every one of seeds 0-4, move it
    # to MUTANTS.  Survival at seed 0 alone is not a stable record: a seeded check's draws differ
    # from the 7th example on with the pytest plugin loaded or not (measured: survives at seeds 0,
    # 1, 2 without it, 1 and 2 with it), so this test's verdict at one seed depended on how it ran
    assert dict(SURVIVORS)[mutant]
    if not available(mutant):
        pytest.skip(f"{mutant.framework} is not installed")
    verdicts = [
        runner.check(mutant.target, mutant.build(), mutant.dtype, mutant_settings(30, seed), "vjp").verdict
        for seed in range(5)
    ]
    assert Verdict.PASS in verdicts, verdicts


def _always_bias(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every configuration keeps its bias (the same generator draws: the bias choice still consumed)."""
    one = L.RandomPicker.one

    def always_bias(self: L.RandomPicker, label: str, menu: Any, cover: bool = True) -> Any:
        value = one(self, label, menu, cover)
        return True if label == "bias" else value

    monkeypatch.setattr(L, "_POOLS", {})
    monkeypatch.setattr(L.RandomPicker, "one", always_bias)


@pytest.mark.parametrize(
    "name",
    [
        "torch-conv2d-no-bias-filter-grad-last-row",
        "torch-linear-no-bias-weight-grad-last-row",
        "jax-dense-no-bias-weight-grad-first-row",
    ],
)
def test_a_bias_less_layer_bug_needs_configurations_without_bias(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the conv and linear pools hold configurations whose op gets b=None (PyTorch's bias=False,
    # Flax's use_bias=False); a weight gradient wrong only on that path is caught, and survives
    # (negative control) when every configuration keeps its bias
    assert not _survives(name)
    _always_bias(monkeypatch)
    assert _survives(name)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_every_convolution_pool_holds_layers_with_and_without_bias(rank: int) -> None:
    pool = convolution_nd._space(rank).pool(8)
    assert {c["params"]["bias"] for c in pool.configurations} == {True, False}
    assert pool.configurations[0]["params"]["bias"] is True  # the simplest keeps its bias


@pytest.mark.parametrize("name", ["linear-layer", "dense-layer"])
def test_every_linear_pool_holds_layers_with_and_without_bias(name: str) -> None:
    pool = get_identity(name).configurations.pool(8)  # type: ignore[union-attr]
    assert {c["params"]["bias"] for c in pool.configurations} == {True, False}
    assert pool.configurations[0]["params"]["bias"] is True  # the simplest keeps its bias
    # a bias-less configuration with more than one row (where a batch reduction can go wrong)
    assert any(not c["params"]["bias"] and np.prod(c["shapes"]["X"][:-1]) > 1 for c in pool.configurations)


@pytest.mark.parametrize(("name", "op"), [("linear-layer", "linear"), ("dense-layer", "dense")])
def test_a_linear_layer_without_bias_passes_none_and_has_a_zero_bias_gradient(name: str, op: str) -> None:
    from gradoracle.reference_ops import ReferenceOps

    seen: list[Any] = []

    class Ops(ReferenceOps):
        def linear(self, x: Any, w: Any, b: Any) -> Any:
            seen.append(b)
            return super().linear(x, w, b)

        def dense(self, x: Any, w: Any, b: Any) -> Any:
            seen.append(b)
            return super().dense(x, w, b)

    ident = get_identity(name)
    rng = np.random.default_rng(0)
    w_shape = (3, 4) if op == "linear" else (4, 3)
    a = {"X": rng.normal(size=(2, 5, 4)), "W": rng.normal(size=w_shape), "b": rng.normal(size=3)}
    p = {"bias": False}
    z = ident.forward(Ops(), a, p)
    assert seen == [None]
    assert np.allclose(z, ident.forward(Ops(), {**a, "b": np.zeros(3)}, {"bias": True}))
    assert not np.allclose(z, ident.forward(Ops(), a, {"bias": True}))  # control: b is added with a bias
    delta = rng.normal(size=z.shape)
    grads = ident.reference_gradient(a, p, delta)
    with_bias = ident.reference_gradient(a, {"bias": True}, delta)
    assert not grads["b"].any() and np.allclose(with_bias["b"], delta.sum(axis=(0, 1)))
    assert np.array_equal(grads["X"], with_bias["X"]) and np.array_equal(grads["W"], with_bias["W"])
    assert ident.reference_jvp is not None and ident.reference_hvp is not None
    t = {"b": np.ones(3)}
    assert not ident.reference_jvp(a, p, t).any()  # no b term: a tangent of b moves nothing
    assert ident.reference_jvp(a, {"bias": True}, t).any()
    v = {"X": rng.normal(size=(2, 5, 4)), "W": rng.normal(size=w_shape), "b": np.ones(3)}
    hv, hv_bias = ident.reference_hvp(a, p, delta, v), ident.reference_hvp(a, {"bias": True}, delta, v)
    assert all(np.array_equal(hv[k], hv_bias[k]) for k in "XWb") and hv["W"].any() and not hv["b"].any()
    with pytest.raises(Exception, match="bias="):
        ident.validate(a, {"bias": "no"})


def test_an_adapter_whose_linear_needs_a_bias_is_told_the_protocol_allows_none() -> None:
    # a linear written as `x @ w.T + b` raises on a layer without bias: an adapter error whose
    # message says the op got b=None on purpose; a bias-less layer that it handles gets no error
    from gradoracle.adapters.numpy_engine import NumpyEngineAdapter, TapeOps
    from gradoracle.results import Fault

    class NeedsBias(TapeOps):
        def linear(self, x: Any, w: Any, b: Any) -> Any:
            if b is None:
                raise TypeError("unsupported operand type(s) for +: 'Tensor' and 'NoneType'")
            return super().linear(x, w, b)

    adapter = NumpyEngineAdapter(name="needs-bias")
    adapter._ops = NeedsBias(adapter.rules)
    result = runner.check("linear-layer", adapter, "float64", DEFAULT, "vjp")
    assert result.verdict == Verdict.ERROR and result.fault == Fault.ADAPTER, result.message
    assert "bias=False" in result.message and "ops.linear" in result.message, result.message
    fine = NumpyEngineAdapter(name="engine")
    assert runner.check("linear-layer", fine, "float64", DEFAULT, "vjp").verdict == Verdict.PASS


def test_a_layer_without_bias_passes_none_to_the_op_and_has_a_zero_bias_gradient() -> None:
    seen: list[Any] = []

    class Ops:
        def conv_nd(self, x: Any, k: Any, b: Any, *geometry: Any) -> Any:
            seen.append(b)
            from gradoracle.reference_layers import conv_nd

            return conv_nd(x, k, b, *geometry)

    ident = get_identity("conv1d-layer")
    rng = np.random.default_rng(0)
    a = {"X": rng.normal(size=(2, 2, 5)), "K": rng.normal(size=(3, 2, 2)), "b": rng.normal(size=3)}
    p = {"stride": (1,), "padding": (0,), "dilation": (1,), "groups": 1, "bias": False}
    z = ident.forward(Ops(), a, p)
    assert seen == [None]
    assert np.allclose(z, ident.forward(Ops(), {**a, "b": np.zeros(3)}, {**p, "bias": True}))
    delta = rng.normal(size=z.shape)
    grads = ident.reference_gradient(a, p, delta)
    assert not grads["b"].any()
    with_bias = ident.reference_gradient(a, {**p, "bias": True}, delta)
    assert np.allclose(with_bias["b"], delta.sum(axis=(0, 2)))  # control: the bias term's gradient
    assert np.array_equal(grads["X"], with_bias["X"]) and np.array_equal(grads["K"], with_bias["K"])
    t = {"b": np.ones(3)}
    assert not ident.reference_jvp(a, p, t).any()  # no b term: a tangent of b moves nothing
    assert ident.reference_jvp(a, {**p, "bias": True}, t).any()
    with pytest.raises(Exception, match="bias="):
        ident.validate(a, {**p, "bias": "no"})


def test_a_strided_dilated_kernel_is_a_required_facet(monkeypatch: pytest.MonkeyPatch) -> None:
    # stride > 1 and dilation > 1 on one axis of a kernel wider than 1: every pool holds it, and
    # without the note (negative control) conv1d's pool, redrawn with the bias choice, holds it
    # only on 1-wide kernels and the bug that lives there survives
    label = "stride and dilation > 1 on one axis, kernel > 1"
    for rank in (1, 2, 3):
        assert any((label, "True") in f for f in convolution_nd._space(rank).pool(8).facets), rank
    name = "torch-conv1d-input-dilation-with-stride"
    assert not _survives(name)
    note = L.RandomPicker.note

    def without(self: L.RandomPicker, key: str, value: object) -> None:
        if key != label:
            note(self, key, value)

    monkeypatch.setattr(L, "_POOLS", {})
    monkeypatch.setattr(L.RandomPicker, "note", without)
    assert _survives(name)


def test_an_adapter_that_needs_a_bias_is_told_the_protocol_allows_none() -> None:
    # a conv_nd written as `z + b` (a bias always there) raises on a layer without bias: the
    # check is an adapter error whose message says the op got b=None on purpose; an adapter that
    # raises on another configuration gets no such hint (negative control)
    from gradoracle.adapters.numpy_engine import NumpyEngineAdapter, TapeOps
    from gradoracle.results import Fault

    class NeedsBias(TapeOps):
        def conv_nd(self, x: Any, k: Any, b: Any, *rest: Any) -> Any:
            if b is None:
                raise TypeError("unsupported operand type(s) for +: 'Tensor' and 'NoneType'")
            return super().conv_nd(x, k, b, *rest)

    class StrideTwoFails(TapeOps):
        def conv_nd(self, x: Any, k: Any, b: Any, stride: Any, *rest: Any) -> Any:
            if 2 in tuple(stride):
                raise TypeError("stride 2 is not implemented")
            return super().conv_nd(x, k, b, stride, *rest)

    def engine(ops: type[TapeOps], name: str) -> NumpyEngineAdapter:
        adapter = NumpyEngineAdapter(name=name)
        adapter._ops = ops(adapter.rules)
        return adapter

    result = runner.check("conv2d-layer", engine(NeedsBias, "needs-bias"), "float64", DEFAULT, "vjp")
    assert result.verdict == Verdict.ERROR and result.fault == Fault.ADAPTER, result.message
    assert "bias=False" in result.message and "b=None" in result.message, result.message
    other = runner.check("conv2d-layer", engine(StrideTwoFails, "stride-2"), "float64", DEFAULT, "vjp")
    assert other.fault == Fault.ADAPTER and "b=None" not in other.message, other.message
