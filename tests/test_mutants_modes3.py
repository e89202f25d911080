"""The modes audit ("modes3"): forward-mode and second-order mutants at the default mutant
settings (30 examples, seed 0), each caught in its mode with the expected fault, and the check
the audit added (the transpose identity at the kinks of the identity's ops) with its negative
controls.  The mutants: :mod:`gradoracle.selftest.mutant_modes3`."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest

from gradoracle import modes, runner
from gradoracle.adapters import load_adapter
from gradoracle.identities import get_identity
from gradoracle.results import Fault, Verdict
from gradoracle.selftest.kill_matrix import mutant_settings
from gradoracle.selftest.mutant_modes3 import MUTANTS, MUTANTS_BY_NAME, ModeMutant, available

DEFAULT = mutant_settings(30, 0)
HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_JAX = importlib.util.find_spec("jax") is not None


def _check(mutant: ModeMutant, target: str | None = None, mode: str | None = None) -> Any:
    if not available(mutant):
        pytest.skip(f"{mutant.framework} is not installed")
    return runner.check(target or mutant.target, mutant.build(), mutant.dtype, DEFAULT, mode or mutant.mode)


def test_the_audit_has_at_least_25_mutants_in_both_new_modes() -> None:
    assert len(MUTANTS) >= 25 and len(MUTANTS_BY_NAME) == len(MUTANTS)
    assert {m.mode for m in MUTANTS} == {"jvp", "hvp"}
    assert {m.framework for m in MUTANTS} == {"torch", "jax"}
    assert all(get_identity(m.target).name == m.target for m in MUTANTS)


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_each_mutant_is_caught_in_its_mode_with_the_expected_fault(mutant: ModeMutant) -> None:
    result = _check(mutant)
    assert result.verdict == Verdict.FAIL, result.message
    assert result.fault == mutant.fault, result.message
    assert result.mode == mutant.mode and f"mode {mutant.mode}" in result.message


@pytest.mark.parametrize(
    "name",
    [
        "torch-max-pool-jvp-last-maximum-on-ties",
        "torch-relu-jvp-tangent-at-zero",
        "torch-silu-jvp-missing-product-term",
    ],
)
def test_forward_mode_mutants_leave_reverse_mode_right(name: str) -> None:
    # the bug is in J v only: reverse mode conforms (the kink mutants' backward is PyTorch's own)
    assert _check(MUTANTS_BY_NAME[name], mode="vjp").verdict == Verdict.PASS


# --------------------------------------------- the transpose identity at the ops' kinks


def test_kink_probes_are_the_convention_probes_of_the_identitys_ops() -> None:
    names = {
        i: [p.name for p in modes.kink_probes(get_identity(i))] for i in ("max-pool", "elementwise-relu")
    }
    assert "max-pool-tie-in-window" in names["max-pool"] and "max-pool-of-copies" not in names["max-pool"]
    assert names["elementwise-relu"] == ["relu-at-0"]
    assert "max-pool-layer-ties-across-windows" in [
        p.name for p in modes.kink_probes(get_identity("max-pool-layer"))
    ]
    assert modes.kink_probes(get_identity("elementwise-sin")) == ()  # smooth: nothing to probe


@pytest.mark.parametrize(
    "name", ["torch-max-pool-jvp-last-maximum-on-ties", "torch-relu-jvp-tangent-at-zero"]
)
def test_a_forward_mode_that_disagrees_with_reverse_mode_at_a_kink_is_caught_there_only(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mutant = MUTANTS_BY_NAME[name]
    result = _check(mutant)
    assert result.fault == Fault.FORWARD_MODE
    assert result.worst is not None and result.worst.kind == "transpose"
    assert result.worst.input.startswith(modes.KINK_TRANSPOSE), result.worst.input
    # negative control: the drawn examples alone (no kink probes) never see the kink
    monkeypatch.setattr(modes, "kink_probes", lambda ident: ())
    assert _check(mutant).verdict == Verdict.PASS


def _consistent_torch_relu(name: str) -> Any:
    """relu whose jvp and backward both pass the derivative 1 at 0 (a convention, the same in both modes)."""
    import torch

    from gradoracle.adapters.torch_adapter import TorchOps
    from gradoracle.selftest.mutant_frameworks import _torch_adapter

    class Relu(torch.autograd.Function):
        @staticmethod
        def forward(x: Any) -> Any:
            return torch.relu(x)

        @staticmethod
        def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
            ctx.save_for_backward(inputs[0])
            ctx.save_for_forward(inputs[0])

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            (x,) = ctx.saved_tensors
            return g * (x >= 0).to(g.dtype)

        @staticmethod
        def jvp(ctx: Any, v: Any) -> Any:
            (x,) = ctx.saved_tensors
            return v * (x >= 0).to(v.dtype)

    class Ops(TorchOps):
        def relu(self, x: Any) -> Any:
            return Relu.apply(x)

    return _torch_adapter(name, Ops)


def _consistent_jax_relu(name: str) -> Any:
    """A jax.custom_jvp relu with rule v 1(x >= 0): JAX transposes the rule, so both modes agree."""
    import jax

    from gradoracle.adapters.jax_adapter import JaxOps
    from gradoracle.selftest.mutant_frameworks import _jax_adapter

    @jax.custom_jvp
    def relu(x: Any) -> Any:
        return jax.nn.relu(x)

    @relu.defjvp
    def rule(primals: Any, tangents: Any) -> Any:
        (x,), (v,) = primals, tangents
        return relu(x), v * (x >= 0).astype(v.dtype)

    class Ops(JaxOps):
        def relu(self, x: Any) -> Any:
            return relu(x)

    return _jax_adapter(name, Ops)


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_negative_control_one_convention_in_both_modes_passes(framework: str) -> None:
    if importlib.util.find_spec(framework) is None:
        pytest.skip(f"{framework} is not installed")
    build = _consistent_torch_relu if framework == "torch" else _consistent_jax_relu
    adapter = build(f"relu-ge-{framework}")
    for identity in ("elementwise-relu", "mlp-d-relu-mask"):
        result = runner.check(identity, adapter, "float64", DEFAULT, "jvp")
        assert result.verdict == Verdict.PASS, result.message
        kinks = [k for k in result.errors.get("transpose", {}) if k.startswith(modes.KINK_TRANSPOSE)]
        assert kinks  # the kink was probed, and the two modes agreed there


@pytest.mark.parametrize("identity", ["max-pool", "max-pool-layer", "elementwise-abs", "mlp"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_correct_torch_agrees_with_itself_at_every_kink_probe(identity: str, dtype: str) -> None:
    if not HAVE_TORCH:
        pytest.skip("torch is not installed")
    result = runner.check(identity, load_adapter("torch"), dtype, mutant_settings(6, 0), "jvp")
    assert result.verdict == Verdict.PASS, result.message
    kinks = {
        k: s.max_ratio for k, s in result.errors["transpose"].items() if k.startswith(modes.KINK_TRANSPOSE)
    }
    assert kinks and max(kinks.values()) < 0.1, kinks  # rounding only: two orders below the bound


def test_a_wrong_backward_everywhere_is_still_charged_to_the_backward() -> None:
    # the drawn examples' transpose identity fails too: reverse mode is the rule to look at
    from gradoracle.selftest.catalogue import get_mutant

    mutant = get_mutant("torch-tanh-backward-wrong-jvp-right")
    if not mutant.available()[0]:
        pytest.skip("torch is not installed")
    result = runner.check("elementwise-tanh", mutant.build(), "float64", DEFAULT, "jvp")
    assert result.fault == Fault.BACKWARD


def test_the_kink_comparison_is_scaled_by_the_terms_it_sums() -> None:
    # p = u^T (J v) and q = (u^T J) v at the probe; allowed: tol(sum |u J v|) + tol(sum |g v|)
    from gradoracle.tolerances import tolerance_for

    if not HAVE_TORCH:
        pytest.skip("torch is not installed")
    evaluation = modes._kink_transposes(
        get_identity("elementwise-relu"), "float32", np.random.default_rng(0), tolerance_for("float32")
    )
    cmp = modes._one(load_adapter("torch"), evaluation)
    assert cmp.kind == "transpose" and cmp.input == f"{modes.KINK_TRANSPOSE} relu-at-0"
    assert 0 < cmp.allowed < 1e-4 and cmp.ratio < 1
