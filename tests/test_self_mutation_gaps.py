"""Gaps in the tests of the oracle's own code, found by mutating it (``tests/tools/mutate.py``).

Each test here kills mutants of the oracle's reference code that the rest of the suite let
through (``docs/self-mutation.md`` lists them).  Expected values come from definitions
written independently of the code under test (``tests/naive_layers.py``, the semantics
table of ``tests/test_framework_adapters.py``, finite differences of the forward), and
every check has a negative control: a deliberately wrong variant the same check rejects.
"""

from __future__ import annotations

from typing import Any

import naive_layers as naive
import numpy as np
import pytest
from test_framework_adapters import OP_CASES

from gradoracle.ops import ALL_OPS
from gradoracle.reference_ops import REFERENCE_OPS, ReferenceOps

# ------------------------------------------------------------ the reference forward (reference_ops.py)

_Z = np.array([[0.3, -1.1, 2.0, 0.4], [1.5, 0.2, -0.7, -2.2], [0.0, 0.9, 0.1, -0.4]])
_IDX = np.array([2.0, 0.0, 3.0])

# The defaults of the reference's layer ops (not exercised by the table: it passes every argument)
DEFAULT_CASES: dict[str, list[tuple[tuple[Any, ...], dict[str, Any], np.ndarray]]] = {
    "cross_entropy": [((_Z, _IDX), {}, naive.cross_entropy(_Z, _IDX, "mean", 0.0))],
}


def semantic_mismatches(ops: Any) -> list[str]:
    """The ops of ``ops`` whose forward differs from the documented semantics on any case
    (``|got - expected| <= 1e-12 (1 + |expected|)`` elementwise, same shape)."""
    bad = []
    for op in sorted(ALL_OPS):
        for args, kwargs, expected in OP_CASES[op] + DEFAULT_CASES.get(op, []):
            got = np.asarray(getattr(ops, op)(*args, **kwargs), dtype=np.float64)
            if got.shape != np.shape(expected) or not np.all(
                np.abs(got - expected) <= 1e-12 * (1 + np.abs(expected))
            ):
                bad.append(op)
                break
    return bad


def test_the_reference_forward_of_every_op_follows_its_documented_semantics() -> None:
    """The oracle's own forward (the reference a framework's forward is compared with, and what
    its finite differences differentiate) against expected values written from the semantics in
    :mod:`gradoracle.ops`: the kink ops (maximum, clamp, clamp_min_zero) and the argument order
    of the layer ops were reached by no other test."""
    assert semantic_mismatches(REFERENCE_OPS) == []


class _WrongReference(ReferenceOps):
    """Negative control: one wrong op per family the check must catch."""

    def maximum(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.minimum(a, b)

    def clamp_min_zero(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x, 1, None)

    def conv_nd(self, x: Any, k: Any, b: Any, stride: Any, padding: Any, dilation: Any, groups: int) -> Any:
        if isinstance(padding, str):
            return ReferenceOps.conv_nd(self, x, k, b, stride, padding, dilation, groups)
        return ReferenceOps.conv_nd(self, x, k, b, padding, stride, dilation, groups)

    def avg_pool_nd(
        self, x: Any, window: Any, stride: Any, padding: Any, ceil_mode: bool, count_include_pad: bool
    ) -> Any:
        return ReferenceOps.avg_pool_nd(self, x, window, stride, padding, count_include_pad, ceil_mode)

    def cross_entropy(
        self, logits: Any, target: Any, reduction: str = "mean", label_smoothing: float = 0.1
    ) -> Any:
        return ReferenceOps.cross_entropy(self, logits, target, reduction, label_smoothing)


def test_a_wrong_reference_forward_is_caught_by_the_semantics_check() -> None:
    assert semantic_mismatches(_WrongReference()) == sorted(
        ["avg_pool_nd", "conv_nd", "cross_entropy", "clamp_min_zero", "maximum"]
    )


@pytest.mark.parametrize("op", ["maximum", "clamp_min_zero", "conv_nd", "avg_pool_nd", "cross_entropy"])
def test_each_wrong_op_of_the_control_is_caught_on_its_own(op: str) -> None:
    wrong = _WrongReference()
    only = type("OneWrong", (ReferenceOps,), {op: getattr(type(wrong), op)})()
    assert semantic_mismatches(only) == [op]
