"""The oracle's reference at finite-difference points past float64's range does not warn.

A replayed Hypothesis example near float64's largest values puts a point ``x +- h v`` at inf; the
reference forward then computes inf * 0 (nan) in a matmul.  The finite differences judge such a
point (an input-domain or overflow finding); a NumPy ``RuntimeWarning`` there would become an
error of the oracle's in a suite run with ``-W error``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gradoracle import modes, runner
from gradoracle.identities import get_identity

POINT = {"X": np.array([[np.inf, 1.0]]), "W": np.array([[0.0, 1.0], [1.0, 0.0]]), "b": np.zeros(2)}


def test_reverse_mode_reference_points_do_not_warn() -> None:
    ident = get_identity("dense-layer")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (out,) = runner._reference_at(ident, {}, [POINT])
    assert not np.all(np.isfinite(out))


def test_modes_reference_points_do_not_warn() -> None:
    ident = get_identity("dense-layer")
    at = modes._local(lambda p: ident.reference_forward(p, {}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gen = at([POINT])
        with pytest.raises(StopIteration) as stop:
            next(gen)
    assert not np.all(np.isfinite(stop.value.value[0]))


def test_negative_control_the_bare_reference_warns() -> None:
    ident = get_identity("dense-layer")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning):
            ident.reference_forward(POINT, {})


BEYOND_FLOAT32 = {"X": np.array([[1e39, 1.0]]), "W": np.array([[0.0, 1.0], [1.0, 0.0]]), "b": np.zeros(2)}


def test_the_float32_rounding_sample_of_a_value_past_float32s_range_does_not_warn() -> None:
    # the sample of the oracle's own rounding (eta) evaluates the reference in float32, where
    # 1e39 is inf and inf * 0 is nan in the matmul: a DB-replayed example warned in the suite
    from gradoracle.adapters import load_adapter
    from gradoracle.strategies import Example

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outcome = runner.evaluate_example(
            "dense-layer", load_adapter("numpy"), "float64", Example(BEYOND_FLOAT32, {}, 0)
        )
    assert outcome.crash is None


def test_negative_control_the_bare_float32_sample_warns() -> None:
    ident = get_identity("dense-layer")
    x32 = {k: v.astype(np.float32) for k, v in BEYOND_FLOAT32.items() if k != "X"}
    with np.errstate(over="ignore"):
        x32["X"] = BEYOND_FLOAT32["X"].astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning):
            ident.reference_forward(x32, {})
