"""Tolerances per dtype: the model, and why it is safe.

**What is compared.**  A gradient ``g`` from a framework against the closed-form
reference ``r`` (float64, on the very same inputs: the dtype-rounded inputs are
upcast exactly), element by element:

    |g_i - r_i|  <=  atol + rtol * m_i + kappa * eta * eps_dtype / eps_32.

**The magnitude** ``m_i`` is the scale of the classical componentwise rounding-error
bound: if ``r_i = sum_k t_ik`` then any floating-point evaluation satisfies
``|fl(r_i) - r_i| <= gamma_n sum_k |t_ik|`` with ``gamma_n ~ n eps``.  The oracle computes
``m_i = sum_k |t_ik|`` for every identity (:meth:`gradoracle.identities.Identity.gradient_magnitude`:
the closed form applied to absolute values, with cancelling steps such as ``yhat - y`` or
``1 - tanh^2`` replaced by the sum of the magnitudes of their terms).  Where a gradient
element is a small difference of large terms (the MLP's ``yhat - y`` when the prediction
is nearly right, a correlation of signed values), ``m_i`` is large and so is the room a
correct float32 implementation needs; where there is no cancellation, ``m_i = |r_i|`` and
the bound is relative.  (A norm-wise ``||g - r|| <= rtol ||r||`` fails correct float32
frameworks in exactly the cancellation cases; an element-wise relative bound fails them
wherever a gradient element is near zero.)

**The rounding noise term** ``eta = ||r_32 - r||_inf``, where ``r_32`` is the same closed form
evaluated in float32 arithmetic, is a measured sample of the rounding for this input; it
covers conditioning the magnitudes miss (scaled by ``eps / eps_32`` for float64 checks).
A sample of exactly 0 (the example's float32 arithmetic was exact: zeros, small integers,
what Hypothesis draws first) measures nothing, so the comparisons of the gradient and the
output then take one float32 rounding of the largest sum of terms instead, ``eta =
eps_32 ||m||_inf`` (``exact_floor``).  Correct fast algorithms are only norm-wise accurate: a
stride-1 convolution through the FFT (cuDNN's FFT algorithms) spreads ``c eps ||x|| ||k||`` of
rounding over every output element, including those whose exact value is 0 (a filter tap or
an output that reads only padding, ``m_i = 0``), and on such examples a componentwise bound
alone failed it by 6e6-3e7 (float32) and 3e15-5e16 (float64).  A measured ``eta > 0`` is used
as it is: ``||m||_inf`` can be far above the rounding (a Hessian-vector product's magnitudes),
and flooring every sample at it cut the margin of a killed mutant from 1.6e3 to 1.1.

**rtol** is ``128 eps``: ``gamma_n`` for sums of up to ~100 terms in the worst case, and
for thousands of terms at the ``sqrt(n) eps`` that blocked and pairwise summation give, plus
a few ulps of difference in library elementary functions.  float64: 2.8e-14; float32:
1.5e-5.  **atol** is ``eps^2``: exact zeros (a masked ReLU, an edge pixel in floor-mode
pooling) must come out as zeros, up to denormal noise.

**Why it is safe and still sharp.**  Correct frameworks stay orders of magnitude below the
bound (the false-positive campaign records the error/tolerance distribution: see the
README), and a real bug is far above it: a missing transpose, a missing rot180 or a
wrong pool divisor changes a gradient by O(1) relative, and a gradient off by a factor
``1 + 1e-3`` is caught in float32 and float64 wherever ``m_i < 66 |r_i|``, i.e. unless
every element is a cancellation of terms 66 times larger than itself.

**Finite differences** are compared with their own tolerance (``fd_rtol``, relative to
``sum_i |g_i v_i|``, plus the analytic room projected on the direction): they run in
float64 whenever the adapter supports it, where the truncation and rounding error of
``D(h)`` is ``~eps^(2/3) = 4e-11`` relative.  A direction that misses the fast bound gets a
Richardson error estimate before it is declared a failure (see
:mod:`gradoracle.finite_differences`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)


def sci(x: float) -> str:
    """``1.3e-1``: two significant digits, the exponent without padding (``inf``/``nan`` as such)."""
    if not np.isfinite(x):
        return str(float(x))
    mantissa, _, exponent = f"{x:.1e}".partition("e")
    return f"{mantissa}e{int(exponent)}"


@dataclass(frozen=True)
class Tolerance:
    """The tolerance for one dtype; ``allowed`` implements the module's formula."""

    dtype: str
    eps: float
    rtol: float
    atol: float
    kappa: float
    fd_rtol: float
    fd_safety: float

    def allowed(self, magnitude: np.ndarray | float, noise: float, exact_floor: bool = False) -> np.ndarray:
        """Per element ``atol + rtol m_i + kappa eta eps / eps_32`` (``m_i``: magnitude of the terms,
        ``eta``: ``noise``); with ``exact_floor``, a ``noise`` of 0 is replaced by ``eps_32 ||m||_inf``
        (a sample from exact arithmetic; see the module docstring)."""
        m = np.asarray(magnitude, dtype=np.float64)
        if exact_floor and noise == 0 and m.size:
            largest = float(np.max(m))
            noise = EPS32 * largest if np.isfinite(largest) else 0.0
        return self.atol + self.rtol * m + self.kappa * noise * (self.eps / EPS32)

    def fd_allowed(self, magnitude: float, error_estimate: float = 0.0) -> float:
        """``fd_rtol * sum|g v| + fd_safety * (Richardson error estimate)`` for one direction."""
        return self.fd_rtol * magnitude + self.fd_safety * error_estimate + self.atol

    def describe(self) -> str:
        """One line naming the numbers, for failure messages."""
        return (
            f"{self.dtype}: |g_i - r_i| <= {self.atol:.1e} + {self.rtol:.1e}*m_i "
            f"+ {self.kappa:g}*eta*{self.eps / EPS32:.1e} (m_i = magnitude of the terms of element i, "
            f"eta = the oracle's own float32 rounding, {EPS32:.1e}*max_j m_j where that is 0); "
            f"finite differences: {self.fd_rtol:.1e} relative"
        )

    def explain(self, allowed: float, magnitude: float | None) -> str:
        """``allowed 3.7e-15 = 128 ulp x magnitude of the terms 1.3e-1`` for one element.

        ``allowed = atol + rtol m + kappa eta eps/eps_32``: the words name the term that
        makes the allowance, and the rest when it is more than a hundredth of it.
        """
        ulps = self.rtol / self.eps
        if magnitude is None:
            return f"allowed {sci(allowed)}"
        main = self.rtol * magnitude
        text = f"allowed {sci(allowed)} = {ulps:g} ulp x magnitude of the terms {sci(magnitude)}"
        rest = allowed - main
        if rest > 0.01 * allowed:
            text += f" + rounding room {sci(rest)}"
        return text

    def explain_fd(self, allowed: float, scale: float) -> str:
        """``allowed 1.2e-8 = 1.5e-7 x size of the directional derivative 8.0e-2`` (+ rounding/step room)."""
        main = self.fd_rtol * scale
        text = (
            f"allowed {sci(allowed)} = finite-difference accuracy {sci(self.fd_rtol)} "
            f"x size of the directional derivative {sci(scale)}"
        )
        rest = allowed - main
        if rest > 0.01 * allowed:
            text += f" + {sci(rest)} for the step's rounding and truncation error"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The fields and the formula as a JSON-able dict."""
        return {**asdict(self), "formula": self.describe()}


def tolerance_for(dtype: str, fd_dtype: str | None = None) -> Tolerance:
    """The tolerance for checks in ``dtype`` whose finite differences run in ``fd_dtype``."""
    eps = float(np.finfo(np.dtype(dtype)).eps)
    fd_eps = float(np.finfo(np.dtype(fd_dtype or dtype)).eps)
    return Tolerance(
        dtype=dtype,
        eps=eps,
        rtol=128 * eps,
        atol=eps * eps,
        kappa=16.0,
        # D(h) is accurate to ~eps_fd^(2/3) relative; allow 4e3 times that (1.5e-7 in float64),
        # but never less than what the gradient's own rounding (128 eps) can explain.
        fd_rtol=max(4e3 * fd_eps ** (2.0 / 3.0), 128 * eps),
        fd_safety=4.0,
    )
