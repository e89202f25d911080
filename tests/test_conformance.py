"""The conformance suite: every identity x {numpy, torch, jax} x {float64, float32}.

Each test is a Hypothesis property run by the oracle's runner (derandomized: a fixed
seed, so CI is reproducible).  ``GRADORACLE_EXAMPLES`` raises the example count for a
longer sweep (default 25).  A framework that is not installed is skipped with the reason.
"""

from __future__ import annotations

import os

import pytest

from gradoracle import CheckSettings, Verdict, all_identities, check
from gradoracle.adapters import load_adapter
from gradoracle.conventions import PROBES, run_probes

ADAPTERS = ("numpy", "torch", "jax")
DTYPES = ("float64", "float32")
EXAMPLES = int(os.environ.get("GRADORACLE_EXAMPLES", "25"))
SETTINGS = CheckSettings(examples=EXAMPLES, seed=20261128)
#: The layer identities draw a new hyper-parameter configuration almost every example, and each
#: costs JAX a compilation (~0.2-0.5 s), so the default run checks fewer examples of them;
#: ``GRADORACLE_LAYER_EXAMPLES`` (or ``GRADORACLE_EXAMPLES``) raises it.
LAYER_EXAMPLES = int(os.environ.get("GRADORACLE_LAYER_EXAMPLES", os.environ.get("GRADORACLE_EXAMPLES", "4")))
LAYER_SETTINGS = CheckSettings(examples=LAYER_EXAMPLES, seed=20261128)
LAYERS = {i.name for i in all_identities() if i.generalises}

CASES = [
    pytest.param(ident.name, adapter, dtype, id=f"{ident.name}-{adapter}-{dtype}")
    for ident in all_identities()
    for adapter in ADAPTERS
    for dtype in DTYPES
]


def _adapter_or_skip(name: str):  # type: ignore[no-untyped-def]
    adapter = load_adapter(name)
    ok, why = adapter.available()
    if not ok:
        pytest.skip(f"{name} not installed: {why}")
    return adapter


@pytest.mark.parametrize(("identity", "adapter", "dtype"), CASES)
def test_conformance(identity: str, adapter: str, dtype: str) -> None:
    ad = _adapter_or_skip(adapter)
    settings = LAYER_SETTINGS if identity in LAYERS else SETTINGS
    result = check(identity, ad, dtype, settings)
    assert result.verdict == Verdict.PASS, result.message
    assert result.examples >= min(settings.examples, 5)
    assert result.max_ratio() < 1.0


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_convention_probes_run_and_relu_follows_the_notes(adapter: str) -> None:
    ad = _adapter_or_skip(adapter)
    rows = run_probes([ad], ["float64", "float32"])
    assert len(rows) == 2 * len(PROBES)
    assert all(r.error is None for r in rows), [r.error for r in rows if r.error]
    # every value of a correct framework lies in the generalised gradient: a convention
    assert all(r.verdict == "convention" for r in rows), [
        r.message() for r in rows if r.verdict != "convention"
    ]
    by_name = {r.probe: r for r in rows if r.dtype == "float64"}
    # every framework here takes relu'(0) = 0, the notes' indicator 1(z > 0), at x = -1, -2^-124, 0, 2^-124, 1
    assert by_name["relu-at-0"].observed == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert by_name["relu-at-0"].agrees_with_notes is True
    # overlapping windows accumulate into the shared maximum
    assert by_name["max-pool-overlapping-windows"].observed[1][1] == 4.0
    # no framework spreads a tie over every tied maximum: the notes' literal reading
    assert by_name["max-pool-tie-in-window"].agrees_with_notes is False
    assert "first maximum" in by_name["max-pool-tie-in-window"].convention
