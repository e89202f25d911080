"""The functions' tails: the draws reach where a textbook backward through ``exp(|x|)`` overflows
in float32 (88.7; 44.4 for ``e^2x``), the correct engines stay inside the tolerance there, and
each unstable-backward mutant is caught by a default check (with the negative control: the bulk
draws alone miss it)."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest

from gradoracle import runner
from gradoracle import strategies as S
from gradoracle.adapters import load_adapter
from gradoracle.identities import get_identity
from gradoracle.identities.elementwise import ELEMENTWISE, SOFTPLUS_LINEAR_TAIL_GAP
from gradoracle.precision import SUBNORMAL_FLOOR, effective_bits
from gradoracle.results import Fault
from gradoracle.selftest.common import draw_examples
from gradoracle.selftest.kill_matrix import MutantRow, mutant_settings
from gradoracle.selftest.mutants import CATALOGUE
from gradoracle.tolerances import tolerance_for

#: float32's exp overflows past log(float32 max) = 88.72
EXP_OVERFLOW_32 = float(np.log(np.finfo(np.float32).max))
TAIL_MUTANTS = (
    "sigmoid-unstable-overflow",
    "softplus-unstable-overflow",
    "tanh-unstable-overflow",
    "silu-unstable-sigmoid",
    "gelu-cached-phi-ratio",
    "softmax-ce-without-max-subtraction",
    "cross-entropy-without-max-subtraction",
)


def _examples(name: str, count: int = 60) -> list[Any]:
    return draw_examples(name, count, seed=0)


def _values(name: str, key: str, count: int = 60) -> np.ndarray:
    return np.concatenate([np.asarray(e.inputs[key]).reshape(-1) for e in _examples(name, count)])


@pytest.mark.parametrize(
    ("name", "beyond"),
    [
        ("elementwise-sigmoid", EXP_OVERFLOW_32),
        ("elementwise-softplus", EXP_OVERFLOW_32),
        ("elementwise-silu", EXP_OVERFLOW_32),
        ("elementwise-tanh", EXP_OVERFLOW_32 / 2),
    ],
)
def test_overflow_tails_reach_past_float32_exp_overflow_on_both_sides(name: str, beyond: float) -> None:
    x = _values(name, "x")
    assert np.sum(x > beyond) >= 5 and np.sum(x < -beyond) >= 5
    assert np.max(np.abs(x)) <= 100.0
    with S.ordinary_draws():  # negative control: the bulk alone stays far from the overflow
        assert np.max(np.abs(_values(name, "x"))) < 10


def test_softplus_tails_skip_the_window_where_torchs_linearisation_shows_in_float64() -> None:
    low, high = SOFTPLUS_LINEAR_TAIL_GAP
    x = _values("elementwise-softplus", "x", 200)
    assert not np.any((x > low) & (x < high))
    assert np.any((x >= high) & (x < EXP_OVERFLOW_32)) and np.any(x < -low)
    # The gap covers where the linearisation (softplus' = 1 above the threshold) is outside the
    # float64 tolerance of the true derivative sigma(x): just past the threshold it is, from the
    # gap's end on it is not (a gap ending too early would fail a correct PyTorch).
    tol = tolerance_for("float64")

    def linearisation_error_allowed(x: float) -> bool:
        sigma = 1.0 / (1.0 + np.exp(-x))
        return abs(1.0 - sigma) <= float(tol.allowed(sigma, 0.0))

    assert linearisation_error_allowed(high) and linearisation_error_allowed(high + 10)
    assert not linearisation_error_allowed(low + 0.5)


def test_with_tails_moves_one_entry_to_the_far_end_and_honours_the_gap() -> None:
    for seed in range(50):
        rng = np.random.default_rng(seed)
        x = S.with_tails(rng, np.zeros(6), 4.0, 100.0, gap=(20.0, 37.0))
        moved = x[x != 0]
        assert moved.size >= 1 and np.max(np.abs(moved)) >= 90.0
        assert np.all((np.abs(moved) >= 4.0) & (np.abs(moved) <= 100.0))
        assert not np.any((x > 20.0) & (x < 37.0))
    assert S.with_tails(np.random.default_rng(0), np.ones(3), 4.0, 0.0).tolist() == [1.0, 1.0, 1.0]


def test_logit_tails_shift_rows_by_one_offset_and_reach_the_overflow() -> None:
    rng = np.random.default_rng(3)
    z = rng.uniform(-4, 4, size=(5, 7))
    shifted = S.logit_tails(rng, z, 4.0, "shifted")
    offsets = shifted - z
    assert np.allclose(offsets, offsets[:, :1]) and np.max(np.abs(offsets)) >= 90.0
    assert S.logit_tails(rng, z, 4.0, "bulk") is z
    with pytest.raises(ValueError, match="logit kind"):
        S.logit_tails(rng, z, 4.0, "huge")
    for name, key in (("mlp-a-logits", "z2"), ("cross-entropy-batch", "Z")):
        values = _values(name, key)
        assert np.max(values) > EXP_OVERFLOW_32 and np.min(values) < -EXP_OVERFLOW_32, name
        with S.ordinary_draws():
            assert np.max(np.abs(_values(name, key))) <= 16, name


# ------------------------------------------------------------------ correct engines at the tails

_TAIL_X = np.array([-100.0, -95.0, -60.0, -45.0, -1.5, 0.5, 45.0, 60.0, 95.0, 100.0])
_ADAPTERS = ["numpy"] + [a for a in ("torch", "jax") if importlib.util.find_spec(a) is not None]


@pytest.mark.parametrize("adapter", _ADAPTERS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op", ["sigmoid", "tanh", "softplus", "silu", "gelu"])
def test_correct_engines_conform_at_the_tails(adapter: str, dtype: str, op: str) -> None:
    f = next(e for e in ELEMENTWISE if e.op == op)
    x = _TAIL_X[np.abs(_TAIL_X) <= max(f.tail, 2.0)]
    if f.tail_gap is not None:
        x = np.concatenate([x, [f.tail_gap[0] - 1.0, f.tail_gap[1] + 1.0]])
    example = S.Example({"x": x}, {}, 7)
    outcome = runner.evaluate_example(f"elementwise-{op}", load_adapter(adapter), dtype, example)
    assert outcome.passed, (outcome.fault, outcome.contract, [c.ratio for c in outcome.failures])


@pytest.mark.parametrize("adapter", _ADAPTERS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_correct_engines_conform_on_shifted_and_tailed_logits(adapter: str, dtype: str) -> None:
    z = np.array([[95.0, 93.5, 90.0, 96.0], [-100.0, -97.0, -101.5, -99.0], [100.0, -100.0, 2.0, 0.5]])
    for name, inputs in (
        ("mlp-a-logits", {"z2": z[0], "y": np.array([0.25, 0.25, 0.5, 0.0])}),
        ("mlp-a-logits", {"z2": z[2], "y": np.array([0.0, 1.0, 0.0, 0.0])}),
        ("cross-entropy-batch", {"Z": z, "T": np.array([1.0, 2.0, 3.0])}),
    ):
        params = {"target": "index", "reduction": "mean", "label_smoothing": 0.0} if "T" in inputs else {}
        outcome = runner.evaluate_example(name, load_adapter(adapter), dtype, S.Example(inputs, params, 3))
        assert outcome.passed, (name, outcome.fault, outcome.contract, [c.ratio for c in outcome.failures])


@pytest.mark.parametrize("name", TAIL_MUTANTS)
def test_unstable_backward_mutant_breaks_at_the_tail_and_is_right_in_the_bulk(name: str) -> None:
    mutant = CATALOGUE[name]
    adapter, ident = mutant.build(), get_identity(mutant.targets[0])
    if ident.name.startswith("elementwise"):
        bulk, tail = {"x": np.array([-2.0, -0.5, 0.25, 1.5])}, {"x": np.array([-95.0, 1.0, 95.0])}
        params: dict[str, Any] = {}
    elif ident.name == "mlp-a-logits":
        y = np.array([0.5, 0.5, 0.0])
        bulk, tail = {"z2": np.array([1.0, -2.0, 0.5]), "y": y}, {"z2": np.array([95.0, 90.0, 1.0]), "y": y}
        params = {}
    else:
        t = np.array([0.0, 2.0])
        bulk = {"Z": np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]), "T": t}
        tail = {"Z": np.array([[95.0, 90.0, 1.0], [0.0, 3.0, -1.0]]), "T": t}
        params = {"target": "index", "reduction": "mean", "label_smoothing": 0.0}
    for dtype in mutant.dtypes:
        right = runner.evaluate_example(ident, adapter, dtype, S.Example(bulk, params, 5))
        assert right.passed, (dtype, right.fault, right.contract)
        wrong = runner.evaluate_example(ident, adapter, dtype, S.Example(tail, params, 5))
        assert str(wrong.fault) in mutant.expected_faults.split("|"), (dtype, wrong.fault)
        assert "not finite" in (wrong.contract or ""), wrong.contract


@pytest.mark.parametrize("name", TAIL_MUTANTS)
def test_unstable_backward_mutant_is_caught_by_a_default_check_and_missed_by_the_bulk(name: str) -> None:
    mutant = CATALOGUE[name]
    dtype = mutant.dtypes[-1]
    result = runner.check(mutant.targets[0], mutant.build(), dtype, mutant_settings(30, 0))
    assert str(result.fault) in mutant.expected_faults.split("|"), (result.verdict, result.message)
    if name != "gelu-cached-phi-ratio":  # Phi(x) underflows from x = -5.4: past GELU's bulk of 3
        with S.ordinary_draws():  # negative control: without the tails the bug is never drawn
            result = runner.check(mutant.targets[0], mutant.build(), dtype, mutant_settings(30, 0))
        assert result.verdict.value == "pass", result.message


def test_the_gelu_ratio_mutant_is_missed_without_the_tails() -> None:
    # the bulk of GELU's draws is |x| <= 3, where Phi(x) >= 1.3e-3: the ratio form is right there
    mutant = CATALOGUE["gelu-cached-phi-ratio"]
    with S.ordinary_draws():
        result = runner.check("elementwise-gelu", mutant.build(), "float64", mutant_settings(30, 0))
    assert result.verdict.value == "pass", result.message


# ------------------------------------------------------------------ the subnormal floor


def test_effective_bits_count_a_subnormal_or_flushed_result_as_one_ulp() -> None:
    ref = np.array([5.5e-42, 1.0e-39, 0.5])  # sigmoid'(-95), a subnormal and a normal gradient
    flushed = np.array([0.0, 0.0, 0.5])  # XLA on CPU flushes subnormal results to zero
    assert effective_bits({"g": (flushed, ref, np.abs(ref))}) >= 23.0
    assert SUBNORMAL_FLOOR == 2.0**-103
    # negative controls: an error above the floor still reads as wrong, at any magnitude
    assert effective_bits({"g": (np.array([1e-20, 0.0, 0.5]), ref, np.abs(ref))}) == 0.0
    assert effective_bits({"g": (np.array([0.0, 0.0, 0.5 * (1 + 2.0**-11)]), ref, np.abs(ref))}) == (
        pytest.approx(11.0, abs=0.01)
    )


def test_a_mutant_may_be_killed_under_any_of_its_accepted_localisations() -> None:
    mutant = CATALOGUE["softmax-ce-without-max-subtraction"]
    assert mutant.expected_faults == "adapter|reduced-precision"
    row = MutantRow(
        "mlp-a-logits", "float32", "fail", "reduced-precision", mutant.expected_faults, 30, 1, 0.0
    )
    assert row.status == "killed"
    assert MutantRow(
        "mlp-a-logits", "float32", "fail", "backward", mutant.expected_faults, 30, 1, 0.0
    ).status == ("mislocalised")
    assert CATALOGUE["sigmoid-unstable-overflow"].expected_faults == str(Fault.ADAPTER)
