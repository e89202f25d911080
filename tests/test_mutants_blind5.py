"""The blind round ("blind5"): one-configuration framework bugs written before reading the
existing mutant lists (:mod:`gradoracle.selftest.mutant_blind5`), each caught in its mode with
the expected fault at the default mutant settings (30 examples, seed 0), and the correct
adapters passing the same targets.  ``GRADORACLE_BLIND5_SEEDS=1,2,3,4`` runs seeds 1-4 too
(each mutant is caught at every one of them, or is an expected survivor)."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import pytest

from gradoracle import runner
from gradoracle.adapters import load_adapter
from gradoracle.conventions import run_probes
from gradoracle.identities import get_identity
from gradoracle.results import Fault, Verdict
from gradoracle.selftest.kill_matrix import mutant_settings
from gradoracle.selftest.mutant_blind5 import (
    EXPECTED_SURVIVORS,
    MUTANTS,
    MUTANTS_BY_NAME,
    expected_to_survive,
)
from gradoracle.selftest.mutant_modes3 import ModeMutant, available

SEEDS = [0] + [int(s) for s in os.environ.get("GRADORACLE_BLIND5_SEEDS", "").split(",") if s.strip()]


def _params() -> list[Any]:
    out = []
    for m in MUTANTS:
        for seed in SEEDS:
            why = expected_to_survive(m.name, seed)
            marks = [pytest.mark.xfail(strict=True, reason=why)] if why else []
            out.append(pytest.param(m, seed, id=f"{m.name}-s{seed}", marks=marks))
    return out


def _caught(mutant: ModeMutant, seed: int) -> tuple[bool, str]:
    """Whether the oracle reports the mutant's expected fault (a probe failure for a tie bug)."""
    if not available(mutant):
        pytest.skip(f"{mutant.framework} is not installed")
    adapter = mutant.build()
    if mutant.fault == Fault.OUTSIDE_SUBDIFFERENTIAL:  # ties: judged by the convention probes
        probes = [p for p in run_probes([adapter]) if p.probe.startswith("max-pool")]
        failed = [p for p in probes if p.fault == str(Fault.OUTSIDE_SUBDIFFERENTIAL)]
        return bool(failed), str([(p.probe, p.verdict) for p in probes])
    result = runner.check(mutant.target, adapter, mutant.dtype, mutant_settings(30, seed), mutant.mode)
    ok = result.verdict == Verdict.FAIL and result.fault == mutant.fault and result.mode == mutant.mode
    return ok, result.message


def test_the_round_is_spread_over_the_three_modes() -> None:
    assert 30 <= len(MUTANTS) <= 45 and len(MUTANTS_BY_NAME) == len(MUTANTS)
    counts = {mode: sum(m.mode == mode for m in MUTANTS) for mode in ("vjp", "jvp", "hvp")}
    assert min(counts.values()) >= 10, counts
    assert all(get_identity(m.target).name == m.target for m in MUTANTS)
    assert all(m.description.startswith("[") or m.description.startswith("JAX [") for m in MUTANTS)
    assert set(EXPECTED_SURVIVORS) <= set(MUTANTS_BY_NAME)


@pytest.mark.parametrize(("mutant", "seed"), _params())
def test_each_blind_mutant_is_caught_in_its_mode(mutant: ModeMutant, seed: int) -> None:
    ok, message = _caught(mutant, seed)
    assert ok, message


TARGETS = sorted(
    {(m.target, m.mode, m.dtype, m.framework) for m in MUTANTS if m.fault != Fault.OUTSIDE_SUBDIFFERENTIAL}
)


@pytest.mark.parametrize(
    ("target", "mode", "dtype", "framework"), TARGETS, ids=["-".join(t) for t in TARGETS]
)
def test_the_correct_adapter_passes_the_same_targets(
    target: str, mode: str, dtype: str, framework: str
) -> None:
    # the guard: what catches a mutant is its bug, not the check failing the framework itself
    if importlib.util.find_spec(framework) is None:
        pytest.skip(f"{framework} is not installed")
    result = runner.check(target, load_adapter(framework), dtype, mutant_settings(30, 0), mode)
    assert result.verdict == Verdict.PASS, result.message


def test_the_correct_torch_max_pool_passes_the_tie_probes() -> None:
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    probes = [p for p in run_probes([load_adapter("torch")]) if p.probe.startswith("max-pool")]
    assert probes and all(p.fault != str(Fault.OUTSIDE_SUBDIFFERENTIAL) for p in probes)


# ------------------------------- a draw blind spot: a batch of one with several output channels


def _batch1_channels(pool: Any) -> list[int]:
    return [
        i for i, c in enumerate(pool.configurations) if c["shapes"]["X"][0] == 1 and c["shapes"]["K"][0] > 1
    ]


def test_a_pool_that_covers_a_batch_of_one_with_several_channels_catches_the_batch1_mutant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # conv1d-layer's drawn configurations have N = 1 only in the simplest one (one channel); the
    # combination "N = 1, C_out > 1" is a late facet (Picker.late): one top-up only configuration
    # holds it, evaluated by every check and drawn by none, so no drawn example moved
    import os

    from gradoracle import layer_strategies as L

    mutant = MUTANTS_BY_NAME["b5-conv-vjp-batch1-drops-last-channel"]
    if not available(mutant):
        pytest.skip("torch is not installed")
    space = get_identity(mutant.target).configurations
    pool = space.pool(8)
    assert pool.drawable == 8 and _batch1_channels(pool) == [8]  # the top-up only configuration
    result = runner.check(mutant.target, mutant.build(), mutant.dtype, mutant_settings(30, 0), mutant.mode)
    assert result.verdict == Verdict.FAIL and result.fault == mutant.fault, result.message
    # negative control: without the late facet the pool is the 8 drawn configurations, and the
    # mutant passes
    monkeypatch.setattr(L.RandomPicker, "late", lambda self, label, value: None)
    bare = L.covering_pool(space.name, space.configure, 8)
    assert not _batch1_channels(bare) and bare.configurations == pool.configurations[:8]
    monkeypatch.setitem(L._POOLS, (space, 8, os.environ.get(L.LARGE_ENV, "")), bare)
    result = runner.check(mutant.target, mutant.build(), mutant.dtype, mutant_settings(30, 0), mutant.mode)
    assert result.verdict == Verdict.PASS, result.message
