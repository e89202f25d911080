"""The README's worked example: HIPS autograd, a framework outside the core, under test.

``adapters/autograd_adapter.py`` (``gradoracle.adapters.autograd_adapter``) is one adapter class
written the way another project would write it, shipped as an example and selectable as
``autograd``.  These tests run the whole conformance suite against it through the pytest plugin
(as its users would: ``pytest --gradoracle-adapter autograd``, and as a copied file loaded by
``module:Class``), check a deliberately wrong variant is caught (negative
control), and pin down the conventions the adapter's docstring reports for autograd at
non-differentiable points.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("autograd", reason="HIPS autograd is not installed (pip install autograd)")

from gradoracle.adapters import autograd_adapter, load_adapter
from gradoracle.results import Fault, Verdict
from gradoracle.runner import CheckSettings, check

pytest_plugins = ["pytester"]

ADAPTER_FILE = Path(autograd_adapter.__file__)


def test_selectable_by_short_name() -> None:
    assert type(load_adapter("autograd")) is autograd_adapter.AutogradAdapter


def test_whole_conformance_suite_through_the_plugin(pytester: pytest.Pytester) -> None:
    """Every notes identity in float64 and float32, 30 examples each: all pass, no known deviations;
    the layer identities skip (the example adapter implements the notes' ops only)."""
    shutil.copy(ADAPTER_FILE, pytester.path / "autograd_adapter.py")
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--gradoracle-adapter", "autograd_adapter:AutogradAdapter"
    )
    result.assert_outcomes(passed=56, skipped=20)
    result.stdout.fnmatch_lines(
        ["*autograd*autograd*", "*float64*float32*", "*conv-input*pass*pass*", "56 pass, 20 skip"]
    )


class ConvolutionNotCorrelation(autograd_adapter.AutogradOps):  # type: ignore[misc,name-defined]
    """A classic port bug: a true convolution (flipped kernel) where the notes mean cross-correlation."""

    def conv2d(self, x: Any, k: Any) -> Any:
        return super().conv2d(x, k[::-1, ::-1])


class FlippedAutograd(autograd_adapter.AutogradAdapter):  # type: ignore[misc,name-defined]
    name = "autograd-flipped"

    @property
    def ops(self) -> Any:
        return ConvolutionNotCorrelation()


@pytest.mark.parametrize("identity", ["conv-filter", "conv-input"])
def test_negative_control_a_flipped_kernel_is_a_forward_fault(identity: str) -> None:
    settings = CheckSettings(examples=20)
    assert check(identity, autograd_adapter.AutogradAdapter(), "float64", settings).verdict == Verdict.PASS
    result = check(identity, FlippedAutograd(), "float64", settings)
    assert result.verdict == Verdict.FAIL
    # autograd differentiates what it computes, so the backward matches FD: the forward is blamed
    assert result.fault == Fault.FORWARD
    assert "adapter autograd-flipped" in result.message


def _grad(op: str, x: np.ndarray, dtype: str = "float64", **kw: Any) -> np.ndarray:
    adapter = autograd_adapter.AutogradAdapter()

    def fn(ops: Any, a: Any) -> Any:
        return getattr(ops, op)(a["x"], **kw)

    out = adapter.forward(fn, {"x": x}, dtype)
    return np.asarray(adapter.vjp(fn, {"x": x}, ["x"], np.ones_like(out), dtype).grads["x"])


def test_autograd_conventions_at_kinks_as_the_docstring_says() -> None:
    kinks = np.array([-1.0, 0.0, 1.0])
    assert _grad("relu", kinks).tolist() == [0.0, 0.5, 1.0]  # np.maximum: balanced_eq splits the tie
    assert _grad("maximum_zero", kinks).tolist() == [0.0, 0.5, 1.0]
    assert _grad("abs", kinks).tolist() == [-1.0, 0.0, 1.0]
    assert _grad("clamp_min_zero", kinks).tolist() == [0.0, 0.0, 1.0]
    # max pool: delta split evenly among the tied maxima of a window
    tie3 = np.array([[1.0, 1.0], [0.0, 1.0]])
    assert np.allclose(_grad("max_pool2d", tie3, k=2), [[1 / 3, 1 / 3], [0.0, 1 / 3]])
    # no tie: all of delta to the one maximum
    assert _grad("max_pool2d", np.array([[1.0, 2.0], [0.0, 1.0]]), k=2).tolist() == [[0.0, 1.0], [0.0, 0.0]]


def test_float32_gradients_stay_float32() -> None:
    x = np.array([[1.0, -2.0, 3.0, 0.5], [0.2, 0.1, -1.0, 2.0]])
    for op, kw in [("relu", {}), ("gelu", {}), ("max_pool2d", {"k": 2}), ("avg_pool2d", {"k": 2})]:
        assert _grad(op, x, "float32", **kw).dtype == np.float32, op
