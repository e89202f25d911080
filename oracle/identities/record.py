"""The :class:`Identity` record every section module fills in, and what they share.

An :class:`Identity` holds the forward (written once against the ops namespace of
:mod:`gradoracle.ops`, so every adapter runs literally the same computation), the
closed-form reference gradient written from the notes' formula in NumPy (never from
autodiff), a Hypothesis strategy for its inputs, and its non-differentiable points with
the policy for them.  Reference gradients are vector-Jacobian products: given the
cotangent ``u = dJ/dz`` (the notes' ``delta``) they return ``dJ/d input`` for every
differentiable input.  Where the full Jacobian is provided, :func:`vjp_from_jacobian`
turns it into that VJP (``u^T J``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from gradoracle import strategies as S
from gradoracle.reference_ops import REFERENCE_OPS

Arrays = Mapping[str, np.ndarray]
Params = Mapping[str, Any]
ForwardFn = Callable[[Any, Arrays, Params], Any]
ReferenceFn = Callable[[Arrays, Params, np.ndarray], dict[str, np.ndarray]]
JacobianFn = Callable[[Arrays, Params], dict[str, np.ndarray]]
PatternFn = Callable[[Arrays, Params], np.ndarray]


class UnknownIdentityError(KeyError):
    """An identity name that is not in the catalogue; the message suggests close names."""

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidShapeError(ValueError):
    """Input shapes an identity cannot work with; the message says why and what fits."""


@dataclass(frozen=True)
class Identity:
    """One identity of the notes: forward, closed-form gradient, inputs, kinks."""

    name: str
    source: str
    family: str
    formula: str
    forward: ForwardFn
    wrt: tuple[str, ...]
    reference_gradient: ReferenceFn | None  # None: no closed form (ad-hoc checks; FD only)
    strategy: Callable[[], st.SearchStrategy[S.Example]]
    ops: frozenset[str]
    nondifferentiable: str = "none: smooth everywhere on the drawn domain"
    kink_policy: str = "none needed"
    reference_jacobian: JacobianFn | None = None
    magnitude: ReferenceFn | None = None
    forward_magnitude: Callable[[Arrays, Params], np.ndarray] | None = None
    smooth_pattern: PatternFn | None = None
    validate: Callable[[Arrays, Params], None] | None = None
    doc: str = ""
    #: The hyper-parameters the strategy draws, ``(name, what is drawn)`` (layer identities).
    parameters: tuple[tuple[str, str], ...] = ()
    #: The notes' sections a general identity generalises (``source`` is the first).
    generalises: tuple[str, ...] = ()
    #: How the closed form follows from the notes' rules (shown by ``gradoracle explain``).
    derivation: str = ""

    def run_forward(self, ops: Any, inputs: Arrays, params: Params | None = None) -> Any:
        """``forward(ops, inputs, params)``: the identity's forward on any ops namespace."""
        return self.forward(ops, inputs, params or {})

    def reference_forward(self, inputs: Arrays, params: Params | None = None) -> np.ndarray:
        """The forward in NumPy (the dtype of ``inputs``) with the oracle's reference ops."""
        return np.asarray(self.forward(REFERENCE_OPS, inputs, params or {}))

    def check_shapes(self, inputs: Arrays, params: Params | None = None) -> None:
        """Raise :class:`InvalidShapeError` for inputs this identity cannot work with."""
        missing = [n for n in self.wrt if n not in inputs]
        if missing:
            raise InvalidShapeError(f"{self.name}: missing input(s) {', '.join(missing)}")
        if self.validate is not None:
            self.validate(inputs, params or {})

    def gradient_magnitude(
        self, inputs: Arrays, params: Params | None, cotangent: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Per element, the magnitude of the terms the gradient is computed from.

        This is the scale of the componentwise rounding-error bound
        ``|fl(g)_i - g_i| <= c eps sum_k |t_ik|`` (``g_i = sum_k t_ik``).  For identities made
        of sums of products (matmul, conv, average pooling) it is the closed form applied to
        ``|inputs|`` and ``|u|``; identities with cancellation in a derivative formula
        (``yhat - y``, ``1 - tanh^2``, ...) or with kinks supply their own ``magnitude``.
        """
        params = params or {}
        u = np.asarray(cotangent)
        if self.magnitude is not None:
            return {k: np.abs(v) for k, v in self.magnitude(inputs, params, u).items()}
        if self.reference_gradient is None:
            raise ValueError(f"identity {self.name!r} has no closed form, hence no magnitude")
        absolute = {k: np.abs(v) for k, v in inputs.items()}
        return {k: np.abs(v) for k, v in self.reference_gradient(absolute, params, np.abs(u)).items()}

    def output_magnitude(self, inputs: Arrays, params: Params | None = None) -> np.ndarray:
        """Per element, the magnitude of the terms the forward output is computed from."""
        params = params or {}
        if self.forward_magnitude is not None:
            return np.abs(self.forward_magnitude(inputs, params))
        return np.abs(self.reference_forward({k: np.abs(v) for k, v in inputs.items()}, params))

    def gradient(self, inputs: Arrays, params: Params | None, cotangent: np.ndarray) -> dict[str, np.ndarray]:
        """Closed-form ``dJ/d input`` for every name in ``wrt`` given ``u = dJ/dz``."""
        if self.reference_gradient is None:
            raise ValueError(
                f"identity {self.name!r} has no closed-form reference gradient; it is checked against "
                "finite differences only"
            )
        self.check_shapes(inputs, params)
        return self.reference_gradient(inputs, params or {}, np.asarray(cotangent))


# --------------------------------------------------------------------------- helpers


def vjp_from_jacobian(jac: JacobianFn) -> ReferenceFn:
    """``u^T J`` reshaped to the input's shape, from a full Jacobian ``J`` (out x in)."""

    def vjp(inputs: Arrays, params: Params, u: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name, J in jac(inputs, params).items():
            out[name] = (u.reshape(-1) @ J).reshape(inputs[name].shape)
        return out

    vjp.__doc__ = f"``u^T J`` from the full Jacobian. {jac.__doc__}"
    return vjp
