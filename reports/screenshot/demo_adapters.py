"""Adapters for the report screenshot: a partial one (skips) beside the broken ones of tests/."""

from gradoracle.adapters.numpy_engine import NumpyEngineAdapter


class ElementwiseOnlyAdapter(NumpyEngineAdapter):
    """Implements the element-wise ops only: the other identities are skipped."""

    def __init__(self):
        super().__init__(name="partial")

    def supported_ops(self):
        return frozenset(op for op in super().supported_ops() if op not in ("matmul", "conv2d", "max_pool2d"))
