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
from typing import TYPE_CHECKING, Any

import numpy as np
from hypothesis import strategies as st

from gradoracle import strategies as S
from gradoracle.reference_ops import REFERENCE_OPS

if TYPE_CHECKING:
    from gradoracle.layer_strategies import ConfigSpace

Arrays = Mapping[str, np.ndarray]
Params = Mapping[str, Any]
ForwardFn = Callable[[Any, Arrays, Params], Any]
ReferenceFn = Callable[[Arrays, Params, np.ndarray], dict[str, np.ndarray]]
JacobianFn = Callable[[Arrays, Params], dict[str, np.ndarray]]
PatternFn = Callable[[Arrays, Params], np.ndarray]
#: ``(inputs, params, tangents) -> J v`` (the output's shape); tangents for names in ``wrt``.
JvpFn = Callable[[Arrays, Params, Arrays], np.ndarray]
#: ``(inputs, params, u, tangents) -> H v`` per name of the second-order inputs, where
#: ``H`` is the Hessian of ``s(x) = <u, f(x)>``.
HvpFn = Callable[[Arrays, Params, np.ndarray, Arrays], dict[str, np.ndarray]]


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
    #: Closed-form ``J v`` (forward mode); ``None``: forward mode has no closed form here
    #: (it is then checked against finite differences and the transpose identity only).
    reference_jvp: JvpFn | None = None
    #: Per output element, the magnitude of the terms of ``J v`` (default: see
    #: :meth:`jvp_term_magnitude`).
    jvp_magnitude: JvpFn | None = None
    #: Closed-form Hessian-vector product of ``s(x) = <u, f(x)>``; ``None``: second order
    #: is not checked for this identity (reported as such, never passed).
    reference_hvp: HvpFn | None = None
    #: Per element, the magnitude of the terms of ``H v`` (default: the closed form on
    #: ``|inputs|``, ``|u|``, ``|v|``).
    hvp_magnitude: HvpFn | None = None
    #: The inputs the Hessian is taken over (default: ``wrt``).
    hvp_wrt: tuple[str, ...] | None = None
    #: What is checked at the kinks in second order (ReLU, max pooling, ...).
    second_order_note: str = ""
    #: Per input of the Hessian, the elements where ``H v`` is not defined (a jump of the
    #: second derivative, ELU's f'' at 0): any value is accepted there, finite differences
    #: never straddle them (``smooth_pattern``).
    hvp_undefined: Callable[[Arrays, Params], dict[str, np.ndarray]] | None = None
    #: The inputs in two halves, configuration then values (layer identities): a check
    #: draws the configuration from a covering pool (``configurations=n``) or freely (0);
    #: ``strategy`` is the free drawing.  ``None``: ``strategy`` alone.
    configurations: ConfigSpace | None = None
    #: For an example on which an adapter raised, what the example asks of the adapter that an
    #: implementation may have missed (a convolution without bias passes ``b=None``), or "".
    crash_hint: Callable[[Params], str] | None = None

    def examples(
        self, configurations: int = 0, only: int | None = None, seen: Callable[[int], None] | None = None
    ) -> st.SearchStrategy[S.Example]:
        """The inputs a check draws: from a covering pool of at most ``configurations``
        hyper-parameter configurations where the identity has them (:mod:`gradoracle.layer_strategies`),
        else (or with 0) :attr:`strategy`.  ``only=k``: the pool's ``k``-th configuration alone
        (values still drawn); ``seen(k)``: called with the pool index of each configuration drawn
        (:meth:`gradoracle.layer_strategies.ConfigSpace.pooled`)."""
        if self.configurations is not None and configurations > 0:
            return self.configurations.pooled(configurations, only=only, seen=seen)
        if only is not None:
            raise ValueError(
                f"identity {self.name!r} draws no configuration from a pool: only={only} has no meaning"
            )
        return self.strategy()

    def pool_size(self, configurations: int) -> int:
        """How many configurations a check with ``configurations`` draws from: the size of the
        covering pool (at most ``configurations``; more where covering every value needs more),
        0 where there is no pool (not a layer identity, or ``configurations <= 0``: drawn freely)."""
        if self.configurations is None or configurations <= 0:
            return 0
        return len(self.configurations.pool(configurations).configurations)

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

    # ------------------------------------------------------------------ forward mode

    @property
    def second_order_wrt(self) -> tuple[str, ...]:
        """The inputs the Hessian-vector product is taken over (``hvp_wrt`` or ``wrt``)."""
        return self.hvp_wrt if self.hvp_wrt is not None else self.wrt

    def jvp(self, inputs: Arrays, params: Params | None, tangents: Arrays) -> np.ndarray:
        """Closed-form ``J v = sum_n (df/dx_n) v_n`` over the names in ``tangents``."""
        if self.reference_jvp is None:
            raise ValueError(f"identity {self.name!r} has no closed-form J v")
        self.check_shapes(inputs, params)
        return np.asarray(self.reference_jvp(inputs, params or {}, tangents))

    def jvp_term_magnitude(self, inputs: Arrays, params: Params | None, tangents: Arrays) -> np.ndarray:
        """Per output element, the magnitude of the terms ``J v`` is computed from.

        ``jvp_magnitude`` when the identity has one; for a scalar output the terms are
        ``sum_n <m_n(|u| = 1), |v_n|>`` with ``m_n`` the gradient's term magnitudes (the
        derivative of a scalar is its gradient); otherwise the closed form applied to
        ``|inputs|`` and ``|v|`` (right for sums of products: matmul, conv, pooling sums).
        """
        params = params or {}
        absv = {k: np.abs(v) for k, v in tangents.items()}
        if self.jvp_magnitude is not None:
            return np.abs(np.asarray(self.jvp_magnitude(inputs, params, tangents)))
        out_shape = self.reference_forward(
            {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()}, params
        ).shape
        if int(np.prod(out_shape)) == 1 and (self.magnitude is not None or self.reference_gradient):
            m = self.gradient_magnitude(inputs, params, np.ones(out_shape))
            return np.asarray(
                sum(float(np.sum(m[n] * absv[n])) for n in absv if n in m), dtype=np.float64
            ).reshape(out_shape)
        if self.reference_jvp is None:
            raise ValueError(f"identity {self.name!r} has no closed-form J v, hence no magnitude")
        absolute = {k: np.abs(v) for k, v in inputs.items()}
        return np.abs(np.asarray(self.reference_jvp(absolute, params, absv)))

    # ------------------------------------------------------------------- second order

    def hvp(
        self, inputs: Arrays, params: Params | None, cotangent: np.ndarray, tangents: Arrays
    ) -> dict[str, np.ndarray]:
        """Closed-form ``H v`` of ``s(x) = <u, f(x)>`` for every name in :attr:`second_order_wrt`."""
        if self.reference_hvp is None:
            raise ValueError(f"identity {self.name!r} has no closed-form Hessian-vector product")
        self.check_shapes(inputs, params)
        return self.reference_hvp(inputs, params or {}, np.asarray(cotangent), tangents)

    def hvp_term_magnitude(
        self, inputs: Arrays, params: Params | None, cotangent: np.ndarray, tangents: Arrays
    ) -> dict[str, np.ndarray]:
        """Per element, the magnitude of the terms of ``H v`` (``hvp_magnitude`` or |closed form|)."""
        params = params or {}
        u = np.asarray(cotangent)
        if self.hvp_magnitude is not None:
            return {k: np.abs(v) for k, v in self.hvp_magnitude(inputs, params, u, tangents).items()}
        if self.reference_hvp is None:
            raise ValueError(f"identity {self.name!r} has no closed-form H v, hence no magnitude")
        absolute = {k: np.abs(v) for k, v in inputs.items()}
        absv = {k: np.abs(v) for k, v in tangents.items()}
        return {k: np.abs(v) for k, v in self.reference_hvp(absolute, params, np.abs(u), absv).items()}


# --------------------------------------------------------------------------- helpers


def has_bias(p: Params) -> bool:
    """Whether a layer adds its bias (``params["bias"]``, True when absent)."""
    return bool(p.get("bias", True))


def validate_bias(p: Params) -> None:
    """Raise :class:`InvalidShapeError` unless ``params["bias"]`` (when given) is a bool."""
    if not isinstance(p.get("bias", True), (bool, np.bool_)):
        raise InvalidShapeError(
            f"bias={p['bias']!r}: use True (Z includes b) or False (no bias term: the op gets b=None)"
        )


def no_bias_hint(what: str, op: str, b_shape: str) -> Callable[[Params], str]:
    """A :attr:`Identity.crash_hint`: for an example of a layer without bias (``bias=False``), the
    sentence that ``op`` was given ``b=None`` on purpose, as the ops protocol allows."""
    hint = (
        f"this example's {what} has no bias (bias=False), so its forward passes b=None to "
        f"ops.{op}, as the ops protocol allows (b is {b_shape} or None, PyTorch's bias=False); "
        f"the adapter's {op} must accept None and add no bias"
    )

    def crash_hint(p: Params) -> str:
        return "" if has_bias(p) else hint

    return crash_hint


def vjp_from_jacobian(jac: JacobianFn) -> ReferenceFn:
    """``u^T J`` reshaped to the input's shape, from a full Jacobian ``J`` (out x in)."""

    def vjp(inputs: Arrays, params: Params, u: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name, J in jac(inputs, params).items():
            out[name] = (u.reshape(-1) @ J).reshape(inputs[name].shape)
        return out

    vjp.__doc__ = f"``u^T J`` from the full Jacobian. {jac.__doc__}"
    return vjp


def jvp_from_jacobian(jac: JacobianFn) -> JvpFn:
    """``J v`` reshaped to the output's shape, from a full Jacobian ``J`` (out x in)."""

    def jvp(inputs: Arrays, params: Params, tangents: Arrays) -> np.ndarray:
        total: np.ndarray | None = None
        for name, J in jac(inputs, params).items():
            if name in tangents:
                part = J @ np.asarray(tangents[name]).reshape(-1)
                total = part if total is None else total + part
        if total is None:
            raise ValueError("no tangent for any input of the Jacobian")
        return total

    jvp.__doc__ = f"``J v`` from the full Jacobian. {jac.__doc__}"
    return jvp


def zero_hvp(inputs: Arrays, params: Params, u: np.ndarray, tangents: Arrays) -> dict[str, np.ndarray]:
    """``H v = 0``: ``s(x) = <u, f(x)>`` is linear (or piecewise linear) in the inputs."""
    return {name: np.zeros_like(np.asarray(inputs[name])) for name in tangents}
