"""Effective precision of float32 checks, and the reduced-precision modes it reveals.

For every element ``i`` of a result ``g`` computed by a framework, ``r`` the float64 closed
form and ``m_i`` the magnitude of the terms ``g_i`` is a sum of (the scale of its rounding
error), the number of correct mantissa bits is

    bits = -log2( max_i |g_i - r_i| / m_i )        (capped at 24, float32's significand)

Full float32 arithmetic gives ~20-24 bits; a framework that rounds the operands of its
matrix products or convolutions to TF32 (10 explicit mantissa bits, e.g. cuDNN/cuBLAS with
``allow_tf32``) gives ~11-13 (measured on the simulated adapter
:class:`gradoracle.adapters.reduced_precision.SimulatedTF32Adapter`: 11.9-12.8 over the
matmul, MLP and convolution identities), bf16 operands (7 explicit bits) ~8-9 (7.9-8.9):
each product of two rounded operands is off by up to ``2^-b`` relative to its terms, and a
sum of such products by up to ``2^-b`` relative to the sum of their magnitudes.  The bands
below split at 10.25 bits.  A float32 check that
fails with bits in that band, on an example the same adapter gets right in float64, is a
*reduced-precision* finding (``Fault.PRECISION``) named after the band: a distinct finding
with the measured bits, never a silent pass, never "backward is wrong"; a project that
accepts it lists it in the known-deviations file (``fault = "reduced-precision"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

#: float32's significand (23 explicit bits + the implicit one): the cap of the measure.
FLOAT32_BITS = 24.0
#: Below this many bits an error is not a precision mode but a wrong result.
MIN_REDUCED_BITS = 5.0
#: Above this many bits a float32 failure is not explained by a lower-precision format.
MAX_REDUCED_BITS = 16.0


@dataclass(frozen=True)
class PrecisionMode:
    """A known reduced-precision format and the band of effective bits it produces."""

    name: str
    explicit_bits: int
    low: float
    high: float
    text: str


#: Known reduced-precision modes, by the effective bits they leave (``low <= bits < high``).
PRECISION_MODES: tuple[PrecisionMode, ...] = (
    PrecisionMode(
        "bf16",
        7,
        MIN_REDUCED_BITS,
        10.25,
        "bfloat16-like (7 explicit mantissa bits): bf16 autocast or bf16 matmul/conv inputs",
    ),
    PrecisionMode(
        "tf32",
        10,
        10.25,
        15.0,
        "TF32-like (10 explicit mantissa bits): TF32 matmuls/convolutions (torch allow_tf32, JAX default "
        "matmul precision on GPUs) or fp16 operands",
    ),
    PrecisionMode(
        "reduced",
        0,
        15.0,
        MAX_REDUCED_BITS,
        "reduced precision of no named format (a few bits short of float32)",
    ),
)


#: The floor of the magnitude in the measure: float32's smallest normal number over its epsilon,
#: 2^-126 / 2^-23 = 2^-103 (9.9e-32).  A result below 2^-126 is subnormal, or flushed to zero (XLA
#: on CPU flushes subnormals): its absolute error is up to 2^-126 whatever its size (sigmoid'(-95)
#: = 5.5e-42 comes back as 0), which relative to a subnormal magnitude would read as 0 bits.  With
#: the floor, an error of up to 2^-126 counts as one ulp; an error above the floor is still
#: measured against the magnitude (and the tolerance's own absolute floor, ``atol = eps^2`` =
#: 1.4e-14 in float32, is far above it).
SUBNORMAL_FLOOR = float(np.finfo(np.float32).tiny / np.finfo(np.float32).eps)


def records_bits(dtype: str) -> bool:
    """Whether a check in ``dtype`` records effective mantissa bits: float32 only, the dtype whose
    reduced-precision modes (TF32, bf16) the record names; float64 checks skip the computation."""
    return dtype == "float32"


def effective_bits(arrays: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    """``-log2(max_i |g_i - r_i| / (m_i + f))`` over every ``(got, reference, magnitude)`` array,
    ``f`` = :data:`SUBNORMAL_FLOOR` (an error of up to float32's smallest normal number, from
    subnormal or flushed results, is one ulp); exact elements count as 24 bits, a wrong one whose
    magnitude is zero as 0 bits or fewer than a few.
    """
    worst = 0.0
    for got, ref, mag in arrays.values():
        g = np.asarray(got, dtype=np.float64)
        r = np.asarray(ref, dtype=np.float64)
        m = np.broadcast_to(np.asarray(mag, dtype=np.float64), r.shape)
        err = np.abs(g - r)
        if not err.size:
            continue
        rel = err / (m + SUBNORMAL_FLOOR)
        worst = max(worst, float(np.max(rel)))
    if worst <= 0.0:
        return FLOAT32_BITS
    return float(min(FLOAT32_BITS, max(0.0, -math.log2(worst))))


def name_precision_mode(bits: float) -> PrecisionMode | None:
    """The reduced-precision mode whose band holds ``bits`` (``None``: not a precision effect)."""
    for mode in PRECISION_MODES:
        if mode.low <= bits < mode.high:
            return mode
    return None


def precision_record(bits: float | None, mode: PrecisionMode | None = None) -> dict[str, object] | None:
    """The JSON-able ``precision`` field of a result: bits and, for a finding, the named mode."""
    if bits is None:
        return None
    record: dict[str, object] = {"bits": round(float(bits), 2)}
    if mode is not None:
        record.update(mode=mode.name, explicit_mantissa_bits=mode.explicit_bits, text=mode.text)
    return record


def describe_finding(bits: float, mode: PrecisionMode, dtype: str = "float32") -> str:
    """The one-line finding for a report."""
    return (
        f"reduced precision: {bits:.1f} correct mantissa bits in {dtype} (float32 has {FLOAT32_BITS:.0f}); "
        f"{mode.text}; the same example conforms in float64"
    )


def reduced_precision_finding(
    outcome: Any, passes_in_float64: Callable[[], bool]
) -> tuple[float, PrecisionMode] | None:
    """``(bits, mode)`` when a failed float32 example is a reduced-precision effect, else ``None``.

    The evidence: the failure is in the values (forward, derivative; not a crash, contract or
    oracle fault), its effective bits fall in a known mode's band, and the same example
    conforms when the adapter runs it in float64 (``passes_in_float64``, called last: it
    costs one more evaluation).  A wrong derivative fails in float64 too, or leaves fewer
    than :data:`MIN_REDUCED_BITS` bits.
    """
    from gradoracle.results import Fault

    if outcome.crash or outcome.contract or outcome.bits is None:
        return None
    if outcome.fault not in (Fault.FORWARD, Fault.BACKWARD, Fault.FORWARD_MODE, Fault.SECOND_ORDER):
        return None
    mode = name_precision_mode(float(outcome.bits))
    if mode is None or not passes_in_float64():
        return None
    return float(outcome.bits), mode
