"""Tolerances per dtype: the model, and why it is safe.

**What is compared.**  A gradient ``g`` from a framework against the closed-form
reference ``r`` (float64, on the very same inputs: the dtype-rounded inputs are
upcast exactly), norm-wise:

    max_i |g_i - r_i|  <=  atol + rtol * ||r||_inf + kappa * eta * eps_dtype / eps_32.

Element-wise relative error is meaningless where a gradient element is a small
difference of large terms (``yhat - y``, a correlation of signed values); norm-wise
error is the quantity floating-point error analysis bounds.

**The rounding noise term** ``eta``.  A correct float32 implementation's error depends on
the conditioning of the particular input (cancellation in ``yhat - y`` when the
prediction is nearly right; long signed sums in a large correlation).  The oracle
measures that conditioning on the spot: ``eta = ||r_32 - r||_inf`` where ``r_32`` is the
same closed form evaluated in float32 arithmetic.  Any correct float32 framework
suffers rounding of the same order as the oracle's own float32 evaluation (different
summation orders change it by small factors, which ``kappa`` covers); for float64 checks
``eta`` is scaled down by ``eps_64 / eps_32``.

**rtol** is ``128 eps``: room for ``O(sqrt(n))`` accumulated rounding in sums of up to
thousands of terms plus differences in library elementary functions (a few ulps).
float64: 2.8e-14; float32: 1.5e-5.  **atol** is ``eps^2``: exact zeros (a masked ReLU,
an edge pixel in floor-mode pooling) must come out as zeros, up to denormal noise.

**Why it is safe and still sharp.**  The bound sits at least two orders of magnitude above
the errors correct frameworks produce (measured by the false-positive campaign: see the
README for the error/tolerance distribution) and at least two orders of magnitude below
the effect of any real bug: a missing transpose, a missing rot180 or a wrong pool
divisor changes the gradient by O(1) relative; a gradient off by a factor ``1 + 1e-3``
is caught in float32 and float64 alike.

**Finite differences** are compared with their own tolerance (``fd_rtol``, relative to
``sum_i |g_i v_i|``): they run in float64 whenever the adapter supports it, where the
truncation and rounding error of ``D(h)`` is ``~eps^(2/3) = 4e-11`` relative.  A direction
that misses the fast bound gets a Richardson error estimate before it is declared a
failure (see :mod:`oracle.finite_differences`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)


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

    def allowed(self, ref_norm: float, noise: float) -> float:
        """``atol + rtol ||r||_inf + kappa eta eps / eps_32``."""
        return self.atol + self.rtol * ref_norm + self.kappa * noise * (self.eps / EPS32)

    def fd_allowed(self, magnitude: float, error_estimate: float = 0.0) -> float:
        """``fd_rtol * sum|g v| + fd_safety * (Richardson error estimate)`` for one direction."""
        return self.fd_rtol * magnitude + self.fd_safety * error_estimate + self.atol

    def describe(self) -> str:
        """One line naming the numbers, for failure messages."""
        return (
            f"{self.dtype}: |g - r|_inf <= {self.atol:.1e} + {self.rtol:.1e}*||r||_inf "
            f"+ {self.kappa:g}*eta*{self.eps / EPS32:.1e} (eta = the oracle's own {self.dtype} rounding); "
            f"finite differences: {self.fd_rtol:.1e} relative"
        )

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
        # D(h) is accurate to ~eps_fd^(2/3) relative; allow 1e3 times that (4e-8 in float64),
        # but never less than what the gradient's own rounding (128 eps) can explain.
        fd_rtol=max(1e3 * fd_eps ** (2.0 / 3.0), 128 * eps),
        fd_safety=4.0,
    )
