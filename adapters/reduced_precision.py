"""A simulated reduced-precision adapter: the NumPy engine with TF32-like products.

Recent GPUs multiply float32 matrices and convolutions in TF32 (cuBLAS/cuDNN with
``torch.backends.cuda.matmul.allow_tf32`` / ``cudnn.allow_tf32``, JAX's default matmul
precision): the operands of every product are rounded to 10 explicit mantissa bits, the
sums accumulate in float32.  This adapter does the same on the CPU so the oracle's
effective-precision measure (:mod:`gradoracle.precision`) can be tested without a GPU:
in float32 every operand of a matmul or a convolution, forward and backward, is rounded
to ``mantissa_bits`` explicit bits (round to nearest, ties to even) before the product;
float64 is left at full precision (as TF32 leaves float64 alone).

``--adapter 'gradoracle.adapters.reduced_precision:SimulatedTF32Adapter'`` (10 bits);
``...:SimulatedTF32Adapter?mantissa_bits=7`` simulates bf16 operands.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradoracle.adapters.numpy_engine import NumpyEngineAdapter, Rules

__all__ = ["RoundedProductRules", "SimulatedTF32Adapter", "round_mantissa"]

FLOAT32_MANTISSA_BITS = 23


def round_mantissa(x: np.ndarray, bits: int) -> np.ndarray:
    """``x`` (float32) rounded to ``bits`` explicit mantissa bits, nearest-even; other dtypes unchanged.

    ``fl_b(x) = x (1 + d)``, ``|d| <= 2^-(bits+1)``: the bit pattern's low ``23 - bits`` bits
    are rounded away (carry into the exponent handled by the integer addition).
    """
    a = np.asarray(x)
    if a.dtype != np.float32 or bits >= FLOAT32_MANTISSA_BITS:
        return a
    drop = FLOAT32_MANTISSA_BITS - bits
    raw = np.ascontiguousarray(a).view(np.uint32).astype(np.uint64)
    half = np.uint64((1 << (drop - 1)) - 1)
    lsb = (raw >> np.uint64(drop)) & np.uint64(1)
    rounded = ((raw + half + lsb) >> np.uint64(drop)) << np.uint64(drop)
    out = (rounded & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.float32)
    finite = np.isfinite(a)
    return np.where(finite, out, a).reshape(a.shape)


class RoundedProductRules(Rules):
    """The engine's rules with the operands of every matmul and convolution rounded (float32)."""

    def __init__(self, mantissa_bits: int = 10) -> None:
        self.mantissa_bits = int(mantissa_bits)

    def _r(self, *arrays: np.ndarray) -> list[np.ndarray]:
        return [round_mantissa(a, self.mantissa_bits) for a in arrays]

    def matmul_forward(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``fl_b(a) @ fl_b(b)``."""
        return super().matmul_forward(*self._r(a, b))

    def matmul_backward(
        self, delta: np.ndarray, a: np.ndarray, b: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The notes' outer products and transposes on rounded operands."""
        d, ra, rb = self._r(delta, a, b)
        return super().matmul_backward(d, ra, rb)

    def conv2d_forward(self, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Valid correlation of rounded operands."""
        return super().conv2d_forward(*self._r(x, k))

    def conv2d_filter_grad(self, delta: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        """``X * delta`` on rounded operands."""
        d, rx, rk = self._r(delta, x, k)
        return super().conv2d_filter_grad(d, rx, rk)

    def conv2d_input_grad(self, delta: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        """``pad(delta) * rot180(K)`` on rounded operands."""
        d, rx, rk = self._r(delta, x, k)
        return super().conv2d_input_grad(d, rx, rk)


class SimulatedTF32Adapter(NumpyEngineAdapter):
    """The NumPy engine computing float32 products at ``mantissa_bits`` explicit bits (TF32: 10)."""

    def __init__(self, mantissa_bits: Any = 10, name: str | None = None) -> None:
        bits = int(mantissa_bits)
        if not 1 <= bits <= FLOAT32_MANTISSA_BITS:
            raise ValueError(
                f"mantissa_bits={mantissa_bits!r}: use 1..{FLOAT32_MANTISSA_BITS} (TF32: 10, bf16: 7)"
            )
        super().__init__(rules=RoundedProductRules(bits), name=name or f"numpy-sim-{bits}bit")
        self.mantissa_bits = bits
