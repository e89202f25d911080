"""A failing example prints compactly and exactly (``Example``'s repr and Hypothesis's report of it).

Hypothesis prints a dataclass field by field (its pretty printer ignores ``__repr__``), so before
``Example._repr_pretty_`` an accelerator-sized example (``GRADORACLE_LARGE_SHAPES=1``: 40 rows,
widths 20/36/68) printed every array as numpy's ``repr``: 31 kB, 537 lines for ``linear-layer``,
and Hypothesis's "Generating overly large repr" warning on every failing check.  Now the arrays
beyond :data:`~gradoracle.strategies.PRINTED_VALUES` values per example print as shape, dtype,
digest and first values; a small example still prints every value, as Python that rebuilds it
exactly.  Each check has its negative control: the old, field-by-field printing of the same
example (a plain dataclass, or ``Example`` without ``_repr_pretty_``) warns and is over the limit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisWarning

import gradoracle
from gradoracle import strategies as S
from gradoracle.identities import get_identity
from gradoracle.layer_strategies import LARGE_ENV
from gradoracle.strategies import (
    LEADING_VALUES,
    PRINTED_VALUES,
    ArraySummary,
    ArrayValues,
    Example,
    array_digest,
)

#: The length at which Hypothesis warns "Generating overly large repr" (its ``repr_call``).
HYPOTHESIS_REPR_LIMIT = 30_000
#: What a large layer example may print in: two or three summaries (about 120 characters each),
#: a bias of at most 68 values in full (at most 26 characters each), the params and the seed.
LARGE_EXAMPLE_LIMIT = 4_000
OVERLY_LARGE = "overly large repr"


@dataclasses.dataclass(frozen=True)
class FieldByField:
    """An ``Example`` as Hypothesis printed it before ``_repr_pretty_``: a plain dataclass."""

    inputs: dict[str, np.ndarray]
    params: dict[str, Any]
    seed: int


def falsifying_report(strategy: st.SearchStrategy[Any]) -> tuple[str, list[str], list[Any]]:
    """(the failing test case Hypothesis reports, the warnings raised, the examples the test saw)
    for a test that fails on every example of ``strategy`` with a nonzero value (Hypothesis's first
    example has only zeros, which any printing keeps short): no shrinking, the first such example."""
    seen: list[Any] = []

    @settings(
        max_examples=20,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(strategy)
    def always_fails(example: Any) -> None:
        seen.append(example)
        if any(np.any(a) for a in example.inputs.values()):
            raise AssertionError("a gradient mismatch")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(AssertionError) as info:
            always_fails()
    notes = [n for n in getattr(info.value, "__notes__", []) if "example=" in n]
    assert len(notes) == 1, getattr(info.value, "__notes__", [])
    return notes[0], [str(w.message) for w in caught], seen


def large_layer_examples(identity: str, monkeypatch: pytest.MonkeyPatch) -> st.SearchStrategy[Example]:
    monkeypatch.setenv(LARGE_ENV, "1")
    return get_identity(identity).examples(configurations=8)


@pytest.mark.parametrize("identity", ["linear-layer", "conv2d-layer"])
def test_a_large_failing_example_prints_shapes_digests_and_seed_compactly(
    identity: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    strategy = large_layer_examples(identity, monkeypatch)
    note, caught, seen = falsifying_report(strategy)
    example = seen[-1]
    assert max(a.size for a in example.inputs.values()) > PRINTED_VALUES  # an accelerator-sized example
    assert not [w for w in caught if OVERLY_LARGE in w], caught
    assert len(note) < LARGE_EXAMPLE_LIMIT, (len(note), note[:500])
    assert f"seed={example.seed}" in note
    for name, a in example.inputs.items():
        if a.size > PRINTED_VALUES:  # a summary: dtype, shape, digest, the first values exactly
            head = ", ".join(repr(v) for v in a.reshape(-1)[:LEADING_VALUES].tolist())
            summary = f"'{name}': <float64{list(a.shape)} sha256={array_digest(a)}"
            assert summary in note and head in note.replace("\n", " ").replace("  ", ""), (summary, note)
    # negative control: the same example printed field by field, as before, warns and is far longer
    old_note, _, _ = falsifying_report(strategy.map(lambda ex: FieldByField(ex.inputs, ex.params, ex.seed)))
    # (whether it reaches Hypothesis's warning depends on the draw: numpy summarises arrays beyond
    # 1,000 values; see test_numpys_own_threshold_... and the check below for the warning itself)
    assert len(old_note) > 2 * LARGE_EXAMPLE_LIMIT, len(old_note)


def _example_text(note: str) -> str:
    start = note.index("Example(")
    depth = 0
    for i in range(start, len(note)):
        depth += {"(": 1, ")": -1}.get(note[i], 0)
        if depth == 0 and note[i] == ")":
            return note[start : i + 1]
    raise AssertionError(note)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("identity", ["linear-layer", "max-pool-layer", "elementwise-tanh"])
def test_a_small_failing_example_prints_every_value_as_python_that_rebuilds_it(
    identity: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(LARGE_ENV, raising=False)
    # a small configuration (the covering pool's first) and the identity's ordinary draws
    ident = get_identity(identity)
    strategy = ident.examples(configurations=8, only=0) if ident.configurations else ident.examples()
    note, caught, seen = falsifying_report(strategy)
    example = seen[-1]
    assert sum(a.size for a in example.inputs.values()) <= PRINTED_VALUES
    assert not caught
    assert "sha256=" not in note
    rebuilt = eval(_example_text(note), {"np": np, "Example": Example})  # what a user copies
    assert rebuilt.seed == example.seed and rebuilt.params == example.params
    assert list(rebuilt.inputs) == list(example.inputs)
    for name, a in example.inputs.items():
        assert _same_bits(rebuilt.inputs[name], a), name  # every bit: -0.0, the last digit
    # negative control: numpy's repr (what the field-by-field print used) rounds to 8 digits
    old_note, _, _ = falsifying_report(strategy.map(lambda ex: FieldByField(ex.inputs, ex.params, ex.seed)))
    old_arrays = re.findall(r"array\(\[[^()]*\]\)", old_note, flags=re.S)
    assert old_arrays
    drawn = np.concatenate([a.reshape(-1) for a in example.inputs.values()])
    printed = np.concatenate([np.asarray(eval(t, {"array": np.array})).reshape(-1) for t in old_arrays])
    assert not _same_bits(printed, drawn)


def test_repr_is_one_line_of_the_same_text() -> None:
    small = Example({"x": np.array([0.5, -0.0, np.inf, np.nan]), "W": np.zeros((0, 3))}, {"k": (2, 2)}, 7)
    text = repr(small)
    assert text == (
        "Example(inputs={'x': np.array([0.5, -0.0, np.inf, np.nan]), 'W': np.zeros((0, 3))}, "
        "params={'k': (2, 2)}, seed=7)"
    )
    rebuilt = eval(text, {"np": np, "Example": Example})
    assert _same_bits(rebuilt.inputs["x"], small.inputs["x"]) and rebuilt.inputs["W"].shape == (0, 3)
    ints = ArrayValues(np.arange(3))
    assert _same_bits(eval(repr(ints), {"np": np}), np.arange(3))  # a dtype other than float64 is named
    # negative control: a one-ulp change shows in the full values and in a summary's digest
    nudged = np.nextafter(0.5, 1.0)
    assert repr(Example({"x": np.array([nudged])})) != repr(Example({"x": np.array([0.5])}))
    big = np.linspace(0.0, 1.0, PRINTED_VALUES + 1)
    other = big.copy()
    other[-1] = np.nextafter(1.0, 0.0)
    assert repr(ArraySummary(big)) != repr(ArraySummary(other))
    assert repr(ArraySummary(big)) == (
        f"<float64[{PRINTED_VALUES + 1}] sha256={array_digest(big)} [0.0, {float(big[1])!r}, {float(big[2])!r}, ...]>"
    )


def test_the_digest_is_the_documented_sha256_of_the_values() -> None:
    a = np.random.default_rng(0).uniform(-1, 1, (4, 5))
    assert array_digest(a) == hashlib.sha256(np.ascontiguousarray(a, dtype="<f8").tobytes()).hexdigest()[:16]
    assert array_digest(np.asfortranarray(a)) == array_digest(a)  # C order, whatever the layout
    assert array_digest(a.astype(">f8")) == array_digest(a)  # little-endian, whatever the byte order
    # negative control: the transpose (same values, another order) and a one-ulp change differ
    assert array_digest(a.T) != array_digest(a)
    b = a.copy()
    b[3, 4] = np.nextafter(b[3, 4], 2.0)
    assert array_digest(b) != array_digest(a)


def _worst_values(n: int) -> np.ndarray:
    """``n`` values with the longest float64 repr (24 characters)."""
    return np.full(n, -2.2250738585072014e-308)


@pytest.mark.parametrize("shapes", [[(256,)], [(4, 4, 4, 4)], [(2, 2, 2, 2, 2, 2, 2, 2)], [(128,), (8, 16)]])
def test_the_budget_keeps_the_worst_example_under_hypothesiss_limit(shapes: list[tuple[int, ...]]) -> None:
    inputs = {f"a{i}": _worst_values(int(np.prod(s))).reshape(s) for i, s in enumerate(shapes)}
    assert sum(a.size for a in inputs.values()) == PRINTED_VALUES
    note, caught, _ = falsifying_report(st.just(Example(inputs, {"stride": (1, 1)}, 2**32 - 1)))
    assert "sha256=" not in note  # every value printed
    assert not caught and len(note) < HYPOTHESIS_REPR_LIMIT / 2, len(note)
    assert max(len(line) for line in note.splitlines()) <= 79  # lines broken at Hypothesis's width
    # one value more: the largest array becomes a summary, the rest still print in full
    grown = dict(inputs, extra=_worst_values(1))
    shown = S.shown_arrays(grown)
    last = sorted(grown, key=lambda k: grown[k].size)[-1]  # the largest (the last of equal sizes)
    assert isinstance(shown[last], ArraySummary)
    assert all(isinstance(v, ArrayValues) for k, v in shown.items() if k != last)


def test_numpys_own_threshold_would_not_keep_an_example_under_the_limit() -> None:
    """Negative control for the budget: three arrays of numpy's 1,000 values each, printed in full
    by numpy (``threshold`` 1,000), warn; the same arrays in an ``Example`` do not."""
    arrays = {k: np.random.default_rng(1).uniform(-1, 1, 1000) for k in "XWb"}
    note, caught, _ = falsifying_report(st.just(FieldByField(arrays, {}, 0)))
    assert [w for w in caught if OVERLY_LARGE in w] and len(note) > HYPOTHESIS_REPR_LIMIT
    note, caught, _ = falsifying_report(st.just(Example(arrays, {}, 0)))
    assert not caught and len(note) < 1_000


def _checked(monkeypatch: pytest.MonkeyPatch, identity: str) -> tuple[gradoracle.CheckResult, list[str]]:
    from broken_adapters import ScaledAdapter

    monkeypatch.setenv(LARGE_ENV, "1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = gradoracle.check(
            identity, ScaledAdapter(), "float64", gradoracle.CheckSettings(examples=3, seed=1)
        )
    return result, [str(w.message) for w in caught if issubclass(w.category, HypothesisWarning)]


def test_a_failing_large_check_raises_no_overly_large_repr_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """The path of ``gradoracle check``, the pytest plugin and the Python API (all run
    :func:`gradoracle.runner.check`): a wrong backward on a large ``linear-layer``."""
    from broken_adapters import ScaledAdapter

    result, caught = _checked(monkeypatch, "linear-layer")
    assert result.verdict is gradoracle.Verdict.FAIL
    assert not [w for w in caught if OVERLY_LARGE in w], caught
    # the record still holds every value (report.json's counterexample), and it replays the failure
    ce = result.counterexample
    assert ce is not None and np.asarray(ce["inputs"]["X"]).size > PRINTED_VALUES
    with pytest.raises(gradoracle.GradientMismatch):
        gradoracle.reproduce(
            "linear-layer", ScaledAdapter(), "float64", ce["inputs"], ce["params"], ce["seed"]
        )
    # negative control: Example printed field by field again (no _repr_pretty_) brings the warning back
    monkeypatch.delattr(Example, "_repr_pretty_")
    result, caught = _checked(monkeypatch, "linear-layer")
    assert result.verdict is gradoracle.Verdict.FAIL
    assert [w for w in caught if OVERLY_LARGE in w], caught
