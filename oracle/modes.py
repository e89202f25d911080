"""The check's modes: reverse (``vjp``), forward (``jvp``) and second order (``hvp``).

A mode is part of a check's identity (results, reports, plugin ids, deviations, shards).
The reverse mode is :func:`gradoracle.runner.evaluate_example`; this module holds the
other two, each comparing three ways like the reverse mode does:

``jvp`` (forward mode, the adapter's ``jvp``), for a random tangent ``v``:

1. ``J v`` against the closed-form directional derivative (``Identity.reference_jvp``);
2. ``u^T (J v)`` against central differences of the adapter's own forward along ``v``;
3. the transpose identity ``u^T (J v) = (u^T J) v`` between the adapter's forward mode and
   its own reverse mode (its ``vjp``): it localises a disagreement between the two rules;
4. the same identity at the kinks of the identity's ops (:func:`kink_probes`: the convention
   probes' points, ReLU at 0, tied maxima in a pooling window, ...), which the drawn examples
   avoid: there the derivative is a convention, but forward and reverse mode must choose the
   same one (an element of the generalised Jacobian and its transpose), as JAX's derived vjp
   does by construction.  Reverse mode's choice is the one the convention table judges, so a
   disagreement there is charged to forward mode;

and, as the oracle's self-test, the closed form against differences of the reference forward.

``hvp`` (second order, the adapter's ``hvp``): for ``s(x) = <u, f(x)>`` and a tangent
``v``, ``H v`` by every method the adapter has (``reverse-over-reverse``,
``forward-over-reverse``) against the closed form (``Identity.reference_hvp``), against
central differences of the adapter's own gradient along ``v`` (projected on a random
``w``), and the methods against each other; the oracle's self-test differences the
closed-form gradient.

An identity without a closed form for a mode: ``jvp`` is still checked against finite
differences and the transpose identity (the record says so); ``hvp`` is not checked
and the check is a ``skip`` that says why (never a silent pass).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from gradoracle import finite_differences as fd
from gradoracle.batching import ForwardCall, HvpCall, JvpCall, Request, VjpCall, drive, run_one
from gradoracle.guard import describe_exception
from gradoracle.identities import Identity, get_identity
from gradoracle.precision import effective_bits, records_bits
from gradoracle.results import AdapterContractError, Fault
from gradoracle.strategies import Example
from gradoracle.tolerances import Tolerance, tolerance_for

#: Every mode, in report order: reverse mode, forward mode, second order.
MODES: tuple[str, ...] = ("vjp", "jvp", "hvp")
DEFAULT_MODE = "vjp"
MODE_TEXT: dict[str, str] = {
    "vjp": "reverse mode: u^T J against the closed-form gradient and finite differences",
    "jvp": "forward mode: J v against the closed-form directional derivative, finite differences "
    "and the transpose identity u^T (J v) = (u^T J) v",
    "hvp": "second order: Hessian-vector products (reverse-over-reverse, forward-over-reverse) against "
    "the closed form and finite differences of the gradient",
}
#: The ways a framework computes a Hessian-vector product.
HVP_METHODS: tuple[str, ...] = ("reverse-over-reverse", "forward-over-reverse")


class UnknownModeError(ValueError):
    """A mode name that is not one of :data:`MODES`."""


def parse_modes(values: Sequence[str] | None) -> tuple[str, ...]:
    """Validated modes in :data:`MODES` order (``()`` for none given: the adapter's own).

    Accepts repeated values and comma-separated lists (``--mode vjp,jvp``).
    """
    names: list[str] = []
    for value in values or ():
        names += [v.strip().lower() for v in str(value).split(",") if v.strip()]
    unknown = [n for n in names if n not in MODES]
    if unknown:
        raise UnknownModeError(
            f"unknown mode(s) {', '.join(repr(n) for n in unknown)}; choose from {', '.join(MODES)} "
            "(vjp: reverse mode, jvp: forward mode, hvp: Hessian-vector products)"
        )
    return tuple(m for m in MODES if m in names)


def adapter_hvp_methods(adapter: Any) -> tuple[str, ...]:
    """The Hessian-vector-product methods an adapter declares (``hvp_methods``), known ones only."""
    methods = getattr(adapter, "hvp_methods", ()) or ()
    return tuple(m for m in HVP_METHODS if m in tuple(methods))


def adapter_modes(adapter: Any) -> tuple[str, ...]:
    """Modes an adapter supports: ``vjp`` always, ``jvp`` with ``has_jvp``, ``hvp`` with ``hvp_methods``."""
    modes = ["vjp"]
    if getattr(adapter, "has_jvp", False):
        modes.append("jvp")
    if adapter_hvp_methods(adapter):
        modes.append("hvp")
    return tuple(modes)


def unsupported_reason(adapter: Any, mode: str) -> str:
    """Why ``adapter`` cannot run ``mode`` ('' when it can)."""
    name = getattr(adapter, "name", "?")
    if mode == "jvp" and not getattr(adapter, "has_jvp", False):
        return f"adapter {name!r} has no forward mode (has_jvp = False): jvp not checked"
    if mode == "hvp" and not adapter_hvp_methods(adapter):
        return f"adapter {name!r} has no Hessian-vector products (no hvp_methods): hvp not checked"
    return ""


def identity_mode_gap(ident: Identity, mode: str) -> str:
    """Why ``ident`` cannot be checked in ``mode`` ('' when it can)."""
    if mode == "hvp" and ident.reference_hvp is None:
        return (
            f"identity {ident.name!r} has no closed-form Hessian-vector product: second order is not "
            "checked for it"
        )
    return ""


def check_id(identity: str, adapter: str, dtype: str, mode: str = DEFAULT_MODE) -> str:
    """``identity-adapter-dtype`` for reverse mode, ``identity-adapter-dtype-mode`` otherwise."""
    base = f"{identity}-{adapter}-{dtype}"
    return base if mode == DEFAULT_MODE else f"{base}-{mode}"


# ------------------------------------------------------------------------ shared bits


def _tangents(
    rng: np.random.Generator, inputs: Mapping[str, np.ndarray], names: Sequence[str]
) -> dict[str, np.ndarray]:
    return {n: np.asarray(rng.uniform(-1.0, 1.0, size=np.shape(inputs[n]))) for n in names}


def direction_step(h: float, direction: Mapping[str, np.ndarray]) -> float:
    """``h / max(1, ||v||_2)``: the finite-difference step ``h`` (:func:`fd.step_size`) is meant for a
    direction of unit 2-norm, as reverse mode's random directions and the basis vectors are; a
    tangent ``v`` with elements uniform in ``[-1, 1]`` has ``||v||_2 ~ sqrt(n / 3)``, so ``x + h v``
    would move ``x`` that many steps (sin at ``x = 1e6`` took a step of half its period)."""
    norm = float(
        np.sqrt(sum(float(np.sum(np.square(np.asarray(a, dtype=np.float64)))) for a in direction.values()))
    )
    return h / max(1.0, norm)


def _dot(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    return float(sum(float(np.sum(np.asarray(a[n], dtype=np.float64) * b[n])) for n in b))


def _validate_array(what: str, got: Any, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    if got is None:
        raise AdapterContractError(f"{what} is missing")
    arr = np.asarray(got)
    if tuple(arr.shape) != tuple(shape):
        raise AdapterContractError(f"{what} has shape {list(arr.shape)}, expected {list(shape)}")
    if arr.dtype != np.dtype(dtype):
        raise AdapterContractError(f"{what} has dtype {arr.dtype}, expected {dtype}")
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0].tolist() if arr.ndim else []
        raise AdapterContractError(f"{what} is not finite at {bad}")
    return arr


def _scalar_comparison(
    kind: str, name: str, got: float, ref: float, allowed: float, scale: float, fd_value: float | None = None
) -> Any:
    from gradoracle.runner import Comparison

    return Comparison(
        kind=kind,
        input=name,
        abs_error=abs(got - ref),
        scale=scale,
        allowed=allowed,
        index=[],
        autodiff=got,
        analytic=None if fd_value is not None else ref,
        fd=fd_value,
    )


Points = list[dict[str, np.ndarray]]
#: The function a finite difference is taken of, at several points: a generator that asks
#: for adapter work (:mod:`gradoracle.batching`) or answers at once (:func:`_answered`).
PointsFn = Callable[[Points], Generator[Request, Any, list[np.ndarray]]]


def _answered(values: list[np.ndarray]) -> Generator[Request, Any, list[np.ndarray]]:
    """An evaluation that asks the adapter for nothing and returns ``values``."""
    yield from ()
    return values


def _local(f: fd.Forward) -> PointsFn:
    """``f`` (the oracle's own reference) at each point, computed here; a point past the
    reference's range (inf or nan there) is judged by the finite differences, not warned about."""

    def at(points: Points) -> Any:
        with np.errstate(all="ignore"):
            values = [np.asarray(f(p)) for p in points]
        return _answered(values)

    return at


def _adapter_forward(fn: Any, fd_dtype: str) -> PointsFn:
    """The adapter's forward at each point: one :class:`ForwardCall` (batched across examples)."""

    def at(points: Points) -> Generator[Request, Any, list[np.ndarray]]:
        outs = yield ForwardCall(fn, points, fd_dtype)
        return [np.asarray(o) for o in outs]

    return at


def _adapter_gradient(fn: Any, names: Sequence[str], u: np.ndarray, fd_dtype: str) -> PointsFn:
    """The adapter's gradient of ``<u, f(x)>`` over ``names``, flattened, at each point: one
    :class:`VjpCall` per point (each batched across examples)."""

    def at(points: Points) -> Generator[Request, Any, list[np.ndarray]]:
        outs = []
        for p in points:
            res = yield VjpCall(fn, p, tuple(names), u, fd_dtype)
            outs.append(
                np.concatenate([np.asarray(res.grads[n], dtype=np.float64).reshape(-1) for n in names])
            )
        return outs

    return at


@dataclass(frozen=True)
class Along:
    """What :func:`_fd_check` compares along a second direction ``v'``: the checked value
    ``w^T F'(x) v'`` there, its term magnitude, its extra allowance (slack, rounding), and the
    closed form's value (``None`` without one)."""

    value: float
    mag: float
    extra: float
    analytic: float | None = None
    #: the direction actually measured (``v'`` rounded as the adapter got it); ``None``: ``v'``
    direction: Mapping[str, np.ndarray] | None = None


#: ``v' -> Along`` (a generator: it may ask the adapter for ``J v'`` or ``H v'``), or ``None``
#: when nothing can be measured along ``v'`` (a step there would cross a kink).
AlongFn = Callable[[Mapping[str, np.ndarray]], Generator[Request, Any, "Along | None"]]

#: Suffixes of a finite-difference comparison's input label saying how it was decided.
OWN_STEPS = " (each element at its own step)"
KINK_NOT_JUDGED = " (the step crosses a kink of your function: not judged along this direction)"


def _fd_check(
    kind: str,
    name: str,
    at: PointsFn,
    inputs: Mapping[str, np.ndarray],
    w: np.ndarray,
    direction: Mapping[str, np.ndarray],
    h: float,
    fd_dtype: str,
    value: float,
    mag: float,
    extra: float,
    tol: Tolerance,
    analytic: float | None = None,
    along: AlongFn | None = None,
    kinks: bool = False,
    rounding: float = 0.0,
) -> Generator[Request, Any, Any]:
    """``value`` against ``D(h) ~ w^T (d/dt) F(x + t v)``, Richardson when the plain one misses.

    ``D(h) = (s(h) - s(-h)) / 2h`` with ``s(t) = <w, F(x + t v)>`` in float64; Richardson:
    ``(4 D(h) - D(2h)) / 3`` with error ``|D(h) - D(2h)|`` (:func:`fd.richardson`).  ``F`` is
    ``at`` (the adapter's forward or gradient, or the oracle's reference), asked at both
    points of a step at once.

    Two second opinions, only where the plain ``D(h)`` misses (a correct derivative rarely gets
    there; a wrong one pays a few more evaluations):

    - ``along``: where the elements ``v`` moves differ in magnitude by :data:`SPREAD` or more
      (0.3 beside 1e6), the one step ``h = eps^(1/3) max(1, max |x|)`` moves the small ones far
      past their curvature, and Richardson's error estimate along ``v`` is then so wide that it
      would pass almost anything.  The comparison is made again along ``v' = v (.) w``,
      ``w_i = max(1, |x_i|) / max(1, max |x|)`` (:func:`gradoracle.runner.element_scaled`), which
      steps every element at its own scale, against ``along(v')`` (the checked derivative along
      ``v'``, its magnitude and allowance).  Where the two verdicts differ, the finer measurement
      along ``v'`` decides: it passes a correct derivative that ``v`` failed, and fails a wrong one
      that ``v``'s wide error estimate let through.
    - ``kinks`` (a user's function, whose kinks are unknown): if the one-sided slopes jump and the
      jump stays the same at steps ``h/4``, ``h`` and ``2h`` (:func:`gradoracle.runner._judge_kink`;
      curvature would scale it), along ``v`` or ``v'``, the direction crosses a kink and the
      central difference measures no derivative: it is not judged, and the label says so.
    """
    from gradoracle.runner import (
        FINER_MARGIN,
        MAX_REFINEMENTS,
        REFINEMENTS,
        RESOLUTION,
        SPREAD,
        Comparison,
        _judge_kink,
        _spread,
        bend,
        element_scaled,
        finer_step_taken,
        held_miss,
        search_step,
        snapped_steps,
    )

    w64 = np.asarray(w, dtype=np.float64)

    def s(out: np.ndarray) -> float:
        return float(np.sum(w64 * np.asarray(out, dtype=np.float64)))

    near = yield from at([fd.perturbed(inputs, direction, t, fd_dtype) for t in (h, -h)])
    d_h = (s(near[0]) - s(near[1])) / (2 * h)
    estimate, allowed = d_h, tol.fd_allowed(mag) + extra
    far: list[np.ndarray] = []
    if abs(value - estimate) > allowed:
        far = yield from at([fd.perturbed(inputs, direction, t, fd_dtype) for t in (2 * h, -2 * h)])
        d_2h = (s(far[0]) - s(far[1])) / (4 * h)
        estimate, allowed = (4 * d_h - d_2h) / 3, tol.fd_allowed(mag, abs(d_h - d_2h)) + extra
    error = abs(d_h - d_2h) if far else None
    label = name
    current = direction  # the direction whose numbers stand (v, or v' once it decides)
    along_v: dict[str, Any] = {
        "d": direction,
        "near": near,
        "far": far,
        "mag": mag,
        "extra": extra,
        "value": value,
    }
    # the second opinion's measurement along v', once it decides (the refinement and the kink
    # test go on from it)
    measured: dict[str, Any] = {"d": direction}
    if far and along is not None and _spread(inputs, direction) >= SPREAD:
        scaled = element_scaled(inputs, direction)
        there = yield from along(scaled)
        if there is not None:
            scaled = dict(there.direction) if there.direction is not None else scaled
            pts = yield from at([fd.perturbed(inputs, scaled, t, fd_dtype) for t in (h, -h, 2 * h, -2 * h)])
            s1, s2, s3, s4 = (s(p) for p in pts)
            d1, d2 = (s1 - s2) / (2 * h), (s3 - s4) / (4 * h)
            est_w = (4 * d1 - d2) / 3
            allowed_w = tol.fd_allowed(there.mag, abs(d1 - d2)) + there.extra
            agrees_w = abs(there.value - est_w) <= allowed_w
            agrees_v = abs(value - estimate) <= allowed
            decisive = agrees_w or abs(there.value - est_w) > FINER_MARGIN * allowed_w
            if agrees_w != agrees_v and decisive:  # the finer measurement decides
                value, mag, analytic, extra = there.value, there.mag, there.analytic, there.extra
                estimate, allowed, label = est_w, allowed_w, name + OWN_STEPS
                error, current = abs(d1 - d2), scaled
                measured = {
                    "d": scaled,
                    "near": pts[:2],
                    "far": pts[2:],
                    "mag": there.mag,
                    "extra": there.extra,
                    "value": there.value,
                }
    # failing, or passed only on a wide error estimate: measured again at steps 8, 64 and 512
    # times smaller (gradoracle.runner._refine_steps), the rounding allowance growing with them;
    # a failure whose numbers measured nothing (a step far past the function's scale) searches on,
    # down to h / 8^MAX_REFINEMENTS, as in reverse mode
    latest = along_v if current is direction else measured
    step = tried = h
    rounding_h = rounding * step / h  # the rounding allowance at h (``rounding`` is at ``step``)
    failed_first = error is not None and abs(value - estimate) > allowed
    searching = False
    for round_ in range(MAX_REFINEMENTS):
        miss = abs(value - estimate)
        failing = miss > allowed
        if error is None or not (failing or miss > tol.fd_allowed(mag) + extra):
            break
        if round_ >= REFINEMENTS and not searching:
            break
        a = tried = tried / 8
        t_value, t_mag, t_analytic, t_dir, t_base = value, mag, analytic, current, extra - rounding
        snapped, s_step = snapped_steps(inputs, current, a, fd_dtype)
        bent_by = bend(current, s_step, a)
        if bent_by > tol.fd_rtol / 16:
            # the inputs' floats bend the step (sin at 1e9 stepped by 0.02): measured along the
            # step they take, s / a, against the checked value there (one more jvp or hvp)
            if along is None or bent_by > RESOLUTION:
                break
            bent = {n: s_step[n] / a for n in current}
            there = yield from along(bent)
            if there is None or (
                there.direction is not None
                and not all(np.array_equal(np.asarray(there.direction[n]), bent[n]) for n in bent)
            ):
                break
            t_value, t_mag, t_analytic, t_dir = there.value, there.mag, there.analytic, bent
            t_base = there.extra - rounding_h
            pts = yield from at(snapped)
        else:
            pts = yield from at([fd.perturbed(inputs, current, t, fd_dtype) for t in (a, -a, 2 * a, -2 * a)])
        s1, s2, s3, s4 = (s(p) for p in pts)
        d1, d2 = (s1 - s2) / (2 * a), (s3 - s4) / (4 * a)
        rounding_a = rounding_h * h / a
        extra_a = t_base + rounding_a
        est_a, err_a = (4 * d1 - d2) / 3, abs(d1 - d2)
        allowed_a = tol.fd_allowed(t_mag, err_a) + extra_a
        fast_a = tol.fd_allowed(t_mag) + extra_a
        taken, searching = search_step(
            failed_first,
            searching,
            (estimate - value, error),
            (est_a - t_value, err_a),
            fast_a,
            rounding_a,
            max(t_mag, abs(est_a)),
            finer_step_taken(
                failing,
                abs(t_value - est_a),
                allowed_a,
                fast_a,
                err_a,
                error,
                held_miss(miss, allowed, error, estimate),
            ),
        )
        if taken is None:
            break
        if not taken:
            continue
        estimate, allowed, extra, error = est_a, allowed_a, extra_a, err_a
        value, mag, analytic, current = t_value, t_mag, t_analytic, t_dir
        rounding, step = rounding_a, a
        latest = {"d": current, "near": pts[:2], "far": pts[2:], "mag": mag, "extra": extra, "value": value}
    unresolved = None
    if searching and error is not None and tol.fd_allowed(mag) + extra < abs(value - estimate) <= allowed:
        # no step resolved it: it fails on the fast bound, and the message says why
        unresolved = (step, error, allowed)
        allowed = tol.fd_allowed(mag) + extra
    if abs(value - estimate) > allowed and kinks and far:
        # a kink keeps the one-sided slopes' jump the same at every step; curvature scales it with
        # the step.  Read at the last step taken (where a smooth function is in its quadratic
        # range); at the first step, where a wide step can bend a smooth function enough to pass
        # for a kink at h and 2h, the jump must also hold at h/4
        (base,) = yield from at([fd.perturbed(inputs, direction, 0.0, fd_dtype)])
        s0 = s(base)
        r: dict[str, Any] = {
            "h": step,
            "near": (s(latest["near"][0]), s(latest["near"][1])),
            "far": (s(latest["far"][0]), s(latest["far"][1])),
            "mag": latest["mag"],
            "extra": latest["extra"],
            "p": latest["value"],
        }
        kinked = _judge_kink(r, s0, tol, interval=False)
        if kinked and step == h:
            quarter = yield from at([fd.perturbed(inputs, latest["d"], t, fd_dtype) for t in (h / 4, -h / 4)])
            jump = (r["near"][0] - 2 * s0 + r["near"][1]) / h
            jump_q = (s(quarter[0]) - 2 * s0 + s(quarter[1])) / (h / 4)
            kinked = abs(jump_q - jump) <= 0.25 * abs(jump)
        if kinked:
            label = name + KINK_NOT_JUDGED
            estimate, allowed = value, tol.fd_allowed(mag, r["error"]) + extra
    return Comparison(
        kind=kind,
        input=label,
        abs_error=abs(value - estimate),
        scale=mag,
        allowed=allowed,
        index=[],
        autodiff=value if kind.endswith("-fd") else None,
        analytic=value if kind.endswith("-oracle") else analytic,
        fd=estimate,
        unresolved=unresolved,
    )


def _closed_form_along(
    closed: Callable[[Mapping[str, np.ndarray]], tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
    safe: Callable[[Mapping[str, np.ndarray]], bool],
    w: Mapping[str, np.ndarray],
    names: Sequence[str],
    rounding: float,
) -> AlongFn:
    """The oracle's own closed form along a second direction ``v'`` (its self-test's second
    opinion): ``closed(v') = (values, term magnitudes)`` by name, projected on ``w``:
    ``value = sum_n <w_n, values_n>``, ``mag = sum_n <|w_n|, max(magnitudes_n, |values_n|)>``."""

    def along(scaled: Mapping[str, np.ndarray]) -> Generator[Request, Any, Along | None]:
        yield from ()
        if not safe(scaled):
            return None
        values, mags = closed(scaled)
        value = sum(float(np.sum(w[n] * values[n])) for n in names)
        mag = float(sum(np.sum(np.abs(w[n]) * np.maximum(mags[n], np.abs(values[n]))) for n in names))
        return Along(value=value, mag=max(mag, abs(value)), extra=rounding, analytic=value)

    return along


def _safe_step(
    ident: Identity,
    inputs: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
    d: Mapping[str, np.ndarray],
    h: float,
) -> float | None:
    from gradoracle.runner import _kink_safe_step

    return _kink_safe_step(ident, inputs, params, d, h)


def _points(
    example: Example, dtype: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    master = {k: np.asarray(v, dtype=np.float64) for k, v in example.inputs.items()}
    x_d = {k: v.astype(dtype) for k, v in master.items()}
    x_d64 = {k: v.astype(np.float64) for k, v in x_d.items()}
    with np.errstate(over="ignore"):  # values beyond float32's range: inf there, no warning
        x_32 = {k: v.astype(np.float32) for k, v in x_d64.items()}
    return master, x_d, x_d64, x_32


#: The input label of forward mode's finite difference of ``u^T J v`` along ``v`` itself (its
#: second opinions append to it: each element at its own step, a kink not judged).
ALONG_V = "u^T J v"

#: The input label of the transpose identity at a kink (:func:`kink_probes`), the probe's name after it.
KINK_TRANSPOSE = "u^T (J v) vs (u^T J) v at the kink probe"


def _classify(outcome: Any, mode_fault: Fault) -> None:
    from gradoracle.runner import settle_undecided

    # finite differences no step resolved, beside a closed form: no finding (reverse mode alike)
    settle_undecided(outcome, "jvp-analytic", ("jvp-fd", "jvp-oracle"))
    settle_undecided(outcome, "hvp-analytic", ("hvp-fd", "hvp-oracle"))
    failed = {c.kind for c in outcome.failures}
    transposes = [c for c in outcome.failures if c.kind == "transpose"]
    if transposes and all(c.input.startswith(KINK_TRANSPOSE) for c in transposes):
        # at a kink forward mode is judged against reverse mode (whose choice the convention
        # table judges): only the kinks disagree, so forward mode's rule is the one to look at
        failed = (failed - {"transpose"}) | {"jvp-analytic"}
    if failed & {"oracle", "jvp-oracle", "hvp-oracle"}:
        outcome.fault = Fault.ORACLE
    elif "forward" in failed:
        outcome.fault = Fault.FORWARD
    elif failed & {"jvp-analytic", "jvp-fd", "hvp-analytic", "hvp-fd", "hvp-methods"}:
        outcome.fault = mode_fault
    elif "transpose" in failed:
        # forward mode matches the notes and finite differences; the reverse rule disagrees
        outcome.fault = Fault.BACKWARD


def _forward_comparison(
    ident: Identity,
    params: Mapping[str, Any],
    out: np.ndarray,
    ref_out: np.ndarray,
    x_d64: Mapping[str, np.ndarray],
    x_32: Mapping[str, np.ndarray],
    tol: Tolerance,
) -> tuple[Any, np.ndarray]:
    from gradoracle.runner import _compare_arrays, _rounding_sample, _sampled_noise

    # a user's function that cannot run in float32 (float64 only) gives no rounding sample
    out32 = _rounding_sample(
        ident, lambda: np.asarray(ident.reference_forward(x_32, params), dtype=np.float64)
    )
    eta_f = _sampled_noise(out32, ref_out)
    out_mag = np.maximum(ident.output_magnitude(x_d64, params), np.abs(ref_out))
    # a float64-only function gives no float32 sample (eta 0): floored as reverse mode floors it
    return _compare_arrays(
        "forward", "output", out, ref_out, tol.allowed(out_mag, eta_f, exact_floor=True)
    ), out_mag


# ------------------------------------------------------------------------ forward mode


def _one(adapter: Any, evaluation: Generator[Request, Any, Any]) -> Any:
    """Run one example's evaluation, its adapter calls through :func:`batching.drive` (so one
    example sees the same adapter path as a batch of them); raises what it raised."""
    (result,) = drive(adapter, [evaluation])
    if isinstance(result, BaseException):
        raise result
    return result


def evaluate_jvp_example(
    identity: Identity | str, adapter: Any, dtype: str, example: Example, settings: Any = None
) -> Any:
    """Forward mode on one example: closed form, finite differences, transpose identity."""
    from gradoracle.runner import CheckSettings

    return _one(
        adapter, jvp_evaluation(get_identity(identity), adapter, dtype, example, settings or CheckSettings())
    )


def jvp_evaluation(
    ident: Identity, adapter: Any, dtype: str, example: Example, settings: Any
) -> Generator[Request, Any, Any]:
    """:func:`evaluate_jvp_example` as an evaluation that asks for adapter work (batchable)."""
    from gradoracle.runner import (
        ExampleOutcome,
        _compare_arrays,
        _fd_domain_text,
        _fd_dtype,
        _not_finite,
        _overflow_text,
        _sampled_noise,
        forward_for,
        reference_output,
    )

    params = example.params
    ident.check_shapes(example.inputs, params)
    outcome = ExampleOutcome(example)
    fd_dtype = _fd_dtype(adapter, dtype, settings)
    tol = tolerance_for(dtype, fd_dtype)
    fn = forward_for(ident, params)
    rng = np.random.default_rng([int(example.seed) % (2**32), 1])
    master, x_d, x_d64, x_32 = _points(example, dtype)
    ref_out = reference_output(ident, x_d64, params, outcome)  # None: an input-domain finding
    if ref_out is None:
        return outcome
    v = _tangents(rng, x_d64, ident.wrt)
    v_d = {n: a.astype(dtype) for n, a in v.items()}
    v64 = {n: a.astype(np.float64) for n, a in v_d.items()}
    u = np.asarray(rng.uniform(-1.0, 1.0, size=ref_out.shape))
    u_d64 = u.astype(dtype).astype(np.float64)

    try:
        result = yield JvpCall(fn, x_d, v_d, dtype)
    except Exception as exc:  # any adapter failure becomes a record
        outcome.fault, outcome.crash = Fault.ADAPTER, f"jvp raised {describe_exception(exc)}"
        return outcome
    try:
        if not isinstance(result, tuple) or len(result) != 2:
            raise AdapterContractError(f"jvp returned {type(result).__name__}, not a pair (output, J v)")
        out = _validate_array("forward output", result[0], ref_out.shape, dtype)
        jv = _validate_array("forward-mode J v", result[1], ref_out.shape, dtype)
    except AdapterContractError as exc:
        overflow = (
            _overflow_text(SimpleNamespace(output=result[0]), ref_out, dtype)
            if ident.family == "user" and isinstance(result, tuple) and len(result) == 2
            else None
        )
        if overflow is not None:  # a user's forward past the dtype's range (exp(700) in float32)
            outcome.fault, outcome.domain = Fault.DOMAIN, overflow
            return outcome
        outcome.fault, outcome.contract = Fault.ADAPTER, str(exc)
        return outcome
    jv64 = np.asarray(jv, dtype=np.float64)

    forward_cmp, out_mag = _forward_comparison(ident, params, out, ref_out, x_d64, x_32, tol)
    outcome.comparisons.append(forward_cmp)

    # 1. the closed-form directional derivative
    if ident.reference_jvp is not None:
        ref_jv = ident.jvp(x_d64, params, v64).reshape(ref_out.shape)
        ref_jv32 = np.asarray(
            ident.jvp(x_32, params, {n: a.astype(np.float32) for n, a in v64.items()}), dtype=np.float64
        ).reshape(ref_out.shape)
        eta = _sampled_noise(ref_jv32, ref_jv)
        mag = np.maximum(ident.jvp_term_magnitude(x_d64, params, v64).reshape(ref_out.shape), np.abs(ref_jv))
        allowed_jv = tol.allowed(mag, eta)
        cmp = _compare_arrays("jvp-analytic", "J v", jv64, ref_jv, allowed_jv)
        outcome.comparisons.append(cmp)
        if records_bits(dtype):
            outcome.bits = effective_bits({"output": (out, ref_out, out_mag), "J v": (jv64, ref_jv, mag)})
        term_scale = float(np.sum(np.abs(u_d64) * mag))
        slack = float(np.sum(np.abs(u_d64) * allowed_jv))
    else:
        ref_jv = None
        term_scale = float(np.sum(np.abs(u_d64 * jv64)))
        slack = float(np.sum(np.abs(u_d64) * tol.allowed(np.abs(jv64), 0.0)))

    # 2. finite differences of the adapter's own forward along v (float64 when it can); when
    # every step along v crosses a kink (inputs drawn down to 2^-124 from one), small inputs
    # fall back to the basis directions that do not, each with its own forward-mode J e_j
    h0 = fd.step_size(fd_dtype, x_d64)
    adapter_forward = _adapter_forward(fn, fd_dtype)
    output_scale = float(np.sum(np.abs(u_d64) * out_mag))
    plan: list[tuple[dict[str, np.ndarray], float, np.ndarray, np.ndarray | None]] = []
    h = _safe_step(ident, x_d64, params, v64, direction_step(h0, v64))
    if h is not None:
        plan.append((v64, h, jv64, ref_jv))
    else:
        outcome.skipped_directions += 1
        try:
            plan += yield from _basis_plan(ident, fn, x_d, x_d64, params, dtype, h0, settings, ref_out.shape)
        except AdapterContractError as exc:
            outcome.fault, outcome.contract = Fault.ADAPTER, str(exc)
            return outcome
        except Exception as exc:
            outcome.fault, outcome.crash = Fault.ADAPTER, f"jvp raised {describe_exception(exc)}"
            return outcome

    def terms(d: Mapping[str, np.ndarray], jd: np.ndarray, ref_d: np.ndarray | None) -> tuple[float, float]:
        """``(scale, slack)`` of ``u^T J d``: its term magnitude and the allowance of ``J d``."""
        if ref_d is not None:
            mag_d = np.maximum(
                ident.jvp_term_magnitude(x_d64, params, d).reshape(ref_out.shape), np.abs(ref_d)
            )
            return (
                float(np.sum(np.abs(u_d64) * mag_d)),
                float(np.sum(np.abs(u_d64) * tol.allowed(mag_d, 0.0))),
            )
        return (
            float(np.sum(np.abs(u_d64 * jd))),
            float(np.sum(np.abs(u_d64) * tol.allowed(np.abs(jd), 0.0))),
        )

    def along_for(hd: float) -> AlongFn:
        """The adapter's ``u^T J v'`` along a second direction ``v'`` (one more jvp)."""

        def along(scaled: Mapping[str, np.ndarray]) -> Generator[Request, Any, Along | None]:
            if _safe_step(ident, x_d64, params, scaled, hd) != hd:
                return None
            vs_d = {n: np.asarray(a).astype(dtype) for n, a in scaled.items()}
            vs64 = {n: a.astype(np.float64) for n, a in vs_d.items()}
            try:
                res = yield JvpCall(fn, x_d, vs_d, dtype)
                jw = np.asarray(
                    _validate_array("forward-mode J v", res[1], ref_out.shape, dtype), dtype=np.float64
                )
            except Exception:  # a second opinion that cannot be had leaves the first one standing
                return None
            ref_w = ident.jvp(x_d64, params, vs64).reshape(ref_out.shape) if ref_jv is not None else None
            pw = float(np.sum(u_d64 * jw))
            scale_w, slack_w = terms(vs64, jw, ref_w)
            return Along(
                value=pw,
                mag=max(scale_w, abs(pw)),
                extra=slack_w + 16 * fd.machine_epsilon(fd_dtype) * output_scale / hd,
                analytic=None if ref_w is None else float(np.sum(u_d64 * ref_w)),
                direction=vs64,
            )

        return along

    # a user's function has no known kinks: a direction that crosses one is told by its one-sided
    # slopes; small inputs are then measured element by element (each judged against the
    # interval of its one-sided slopes), larger ones are not judged along that direction
    user_kinks = ident.family == "user" and ident.smooth_pattern is None
    small = sum(int(np.size(x_d64[n])) for n in ident.wrt) <= settings.full_jacobian_max
    worst_fd: Any = None
    along_v: Any = None  # the finite difference of u^T J v along v itself, where one was taken
    for d, hd, jd, ref_d in plan:
        pd = float(np.sum(u_d64 * jd))
        scale_d, slack_d = (term_scale, slack) if d is v64 else terms(d, jd, ref_d)
        try:
            cmp = yield from _fd_check(
                "jvp-fd",
                ALONG_V,
                adapter_forward,
                x_d64,
                u_d64,
                d,
                hd,
                fd_dtype,
                pd,
                max(scale_d, abs(pd)),
                slack_d + 16 * fd.machine_epsilon(fd_dtype) * output_scale / hd,
                tol,
                analytic=None if ref_d is None else float(np.sum(u_d64 * ref_d)),
                along=along_for(hd),
                kinks=user_kinks and not small,
                rounding=16 * fd.machine_epsilon(fd_dtype) * output_scale / hd,
            )
        except Exception as exc:  # the adapter's forward may fail on its own
            outcome.fault, outcome.crash = Fault.ADAPTER, f"forward raised {describe_exception(exc)}"
            return outcome
        if d is v64 and cmp.input == ALONG_V:
            along_v = cmp
        if worst_fd is None or cmp.ratio > worst_fd.ratio:
            worst_fd = cmp
    if worst_fd is not None and worst_fd.failed and user_kinks and small:
        try:
            opinion = yield from _jvp_by_elements(
                ident, fn, example, x_d, x_d64, params, u_d64, dtype, fd_dtype, tol, settings, output_scale
            )
        except AdapterContractError as exc:
            outcome.fault, outcome.contract = Fault.ADAPTER, str(exc)
            return outcome
        except Exception as exc:
            outcome.fault, outcome.crash = Fault.ADAPTER, f"jvp or forward raised {describe_exception(exc)}"
            return outcome
        if opinion is not None:
            worst_fd = opinion
    if worst_fd is not None:
        outcome.comparisons.append(worst_fd)
    p = float(np.sum(u_d64 * jv64))

    # 3. the transpose identity between the adapter's own forward and reverse modes
    try:
        rev = yield VjpCall(fn, x_d, tuple(ident.wrt), u_d64.astype(dtype), dtype)
        grads = {
            n: _validate_array(f"gradient for {n!r}", rev.grads.get(n), x_d[n].shape, dtype)
            for n in ident.wrt
        }
    except AdapterContractError as exc:
        outcome.fault, outcome.contract = Fault.ADAPTER, f"vjp (for the transpose identity): {exc}"
        return outcome
    except Exception as exc:
        outcome.fault, outcome.crash = Fault.ADAPTER, f"vjp raised {describe_exception(exc)}"
        return outcome
    q = _dot(grads, v64)
    gmag = (
        ident.gradient_magnitude(x_d64, params, u_d64)
        if ident.reference_gradient or ident.magnitude
        else None
    )
    rev_scale = (
        sum(float(np.sum(gmag[n] * np.abs(v64[n]))) for n in v64 if n in gmag)
        if gmag is not None
        else sum(float(np.sum(np.abs(np.asarray(grads[n], dtype=np.float64) * v64[n]))) for n in v64)
    )
    rev_allowed = float(tol.allowed(max(rev_scale, abs(q)), 0.0))
    allowed_t = float(tol.allowed(max(term_scale, abs(p)), 0.0)) + rev_allowed
    if ident.reference_jvp is None:
        # no closed form, so no term magnitudes: J v is rounded at least at the outputs' scale per
        # unit input (softmax at [0, 50] rounds 1 - 2e-22 to 1, and J v ~ 1e-22 has an error of
        # its own size); a wrong rule misses by the size of J v, far above this floor
        x_scale = max([1.0] + [float(np.max(np.abs(a))) for a in x_d64.values() if a.size])
        v_scale = max([0.0] + [float(np.max(np.abs(a))) for a in v64.values() if a.size])
        allowed_t += 32 * tol.eps * float(np.sum(np.abs(u_d64 * out))) * v_scale / x_scale
    if abs(p - q) > allowed_t and ident.reference_jvp is None and dtype == "float64":
        allowed_t += yield from _transpose_rounding(fn, ident, x_d64, u_d64, v64, p, q)
    transpose = _scalar_comparison(
        "transpose", "u^T (J v) vs (u^T J) v", p, q, allowed_t, max(term_scale, rev_scale)
    )
    # both sides estimate u^T J v: the finite difference along v, where one was taken, shown beside them
    transpose.fd = None if along_v is None else along_v.fd
    outcome.comparisons.append(transpose)

    # 3b. the transpose identity at the kinks of the identity's ops (the drawn examples avoid them)
    try:
        kink = yield from _kink_transposes(
            ident, dtype, np.random.default_rng([int(example.seed) % (2**32), 3]), tol
        )
    except AdapterContractError as exc:
        outcome.fault, outcome.contract = Fault.ADAPTER, str(exc)
        return outcome
    except Exception as exc:
        outcome.fault, outcome.crash = (
            Fault.ADAPTER,
            f"jvp or vjp at a kink probe raised {describe_exception(exc)}",
        )
        return outcome
    if kink is not None:
        outcome.comparisons.append(kink)

    # 4. the oracle itself: closed-form J v vs differences of the reference forward, float64
    if ref_jv is not None:
        ref_master = ident.jvp(master, params, v).reshape(ref_out.shape) if dtype != "float64" else ref_jv
        tol64 = tolerance_for("float64")
        hm = _safe_step(ident, master, params, v, direction_step(fd.step_size("float64", master), v))
        if hm is not None:
            mag64 = float(
                np.sum(np.abs(u) * ident.jvp_term_magnitude(master, params, v).reshape(ref_out.shape))
            )
            out_scale64 = float(
                np.sum(np.abs(u) * np.maximum(ident.output_magnitude(master, params), np.abs(ref_out)))
            )
            oracle_fd = _fd_check(
                "jvp-oracle",
                "u^T J v",
                _local(lambda a: ident.reference_forward(a, params)),
                master,
                u,
                v,
                hm,
                "float64",
                float(np.sum(u * ref_master)),
                mag64,
                16 * fd.machine_epsilon("float64") * out_scale64 / hm,
                tol64,
                along=_closed_form_along(
                    lambda vs: (
                        {"J v": ident.jvp(master, params, vs).reshape(ref_out.shape)},
                        {"J v": ident.jvp_term_magnitude(master, params, vs).reshape(ref_out.shape)},
                    ),
                    lambda vs: _safe_step(ident, master, params, vs, hm) == hm,
                    {"J v": u},
                    ("J v",),
                    16 * fd.machine_epsilon("float64") * out_scale64 / hm,
                ),
                rounding=16 * fd.machine_epsilon("float64") * out_scale64 / hm,
            )
            outcome.comparisons.append(run_one(oracle_fd, _no_adapter_work))

    blind = [c for c in outcome.failures if c.kind in ("jvp-fd", "jvp-oracle") and _not_finite(c.fd)]
    if ident.family == "user" and blind and len(blind) == len(outcome.failures):
        # finite differences that are not finite (a step across the edge of the function's
        # domain: log at 1e-6) judged nothing: an input-domain finding, as in reverse mode
        outcome.fault, outcome.domain = Fault.DOMAIN, _fd_domain_text(x_d64, fd_dtype)
        return outcome
    _classify(outcome, Fault.FORWARD_MODE)
    if outcome.fault == Fault.BACKWARD and ref_jv is None and not _reverse_refuted(along_v, q, rev_allowed):
        outcome.fault = Fault.MODES_DISAGREE
    return outcome


def _reverse_refuted(along_v: Any, q: float, rev_allowed: float) -> bool:
    """Whether finite differences refute reverse mode's ``q = (u^T J) v``, so that a failed
    transpose identity is the backward's fault.

    Without a closed form, forward mode's ``p = u^T (J v)`` passed against the central
    difference ``D ~ u^T J v`` along ``v`` within its allowance ``a`` (error and rounding of
    ``D``) and failed against ``q``.  Only ``|q - D| > a + r`` (``r``: ``q``'s own rounding)
    shows ``q`` wrong; where ``D`` is as consistent with ``q`` as with ``p`` (one step beside
    elements of 1e6 cannot resolve a 1% error in ``J v``), or was not taken along ``v``, the
    two modes disagree and nothing says which: :data:`Fault.MODES_DISAGREE`.
    """
    if along_v is None or along_v.fd is None or not np.isfinite(along_v.fd):
        return False
    return abs(q - float(along_v.fd)) > float(along_v.allowed) + rev_allowed


def kink_probes(ident: Identity) -> tuple[Any, ...]:
    """The convention probes (:data:`gradoracle.conventions.PROBES`) at kinks and ties built from
    ``ident``'s ops only: the points where forward mode is checked against reverse mode."""
    return _probes_of(ident.ops)


@functools.lru_cache(maxsize=256)
def _probes_of(ops: frozenset[str]) -> tuple[Any, ...]:
    from gradoracle.conventions import PROBES

    # "smooth" probes (ELU at 0, softplus at its threshold) look at differentiable points, where
    # the drawn examples' comparisons already apply
    return tuple(p for p in PROBES if p.kind != "smooth" and p.required_ops() <= ops)


def _kink_transposes(
    ident: Identity, dtype: str, rng: np.random.Generator, tol: Tolerance
) -> Generator[Request, Any, Any]:
    """The worst ``|u^T (J v) - (u^T J) v|`` over :func:`kink_probes`, random ``u`` and ``v``
    (``None`` without probes); allowed ``tol.allowed(sum |u| |J v|) + tol.allowed(sum |g| |v|)``
    (``g = u^T J``), as the drawn examples' transpose identity without a closed form."""
    worst: Any = None
    for probe in kink_probes(ident):
        x = {k: np.asarray(a, dtype=dtype) for k, a in probe.inputs.items()}
        v = {n: rng.uniform(-1.0, 1.0, size=x[n].shape).astype(dtype) for n in probe.wrt}
        where = f"at the kink probe {probe.name!r}"
        result = yield JvpCall(probe.forward, x, v, dtype)
        if not isinstance(result, tuple) or len(result) != 2:
            raise AdapterContractError(
                f"jvp {where} returned {type(result).__name__}, not a pair (output, J v)"
            )
        out = np.asarray(result[0])
        jv = _validate_array(f"forward-mode J v {where}", result[1], out.shape, dtype)
        u = rng.uniform(-1.0, 1.0, size=out.shape).astype(dtype)
        rev = yield VjpCall(probe.forward, x, tuple(probe.wrt), u, dtype)
        grads = {
            n: _validate_array(f"gradient for {n!r} {where}", rev.grads.get(n), x[n].shape, dtype)
            for n in probe.wrt
        }
        u64, v64 = u.astype(np.float64), {n: a.astype(np.float64) for n, a in v.items()}
        p = float(np.sum(u64 * jv))
        q = _dot(grads, v64)
        fwd_scale = float(np.sum(np.abs(u64 * jv)))
        rev_scale = float(sum(np.sum(np.abs(np.asarray(grads[n], dtype=np.float64) * v64[n])) for n in v64))
        allowed = float(tol.allowed(fwd_scale, 0.0)) + float(tol.allowed(rev_scale, 0.0))
        cmp = _scalar_comparison(
            "transpose", f"{KINK_TRANSPOSE} {probe.name}", p, q, allowed, max(fwd_scale, rev_scale)
        )
        if worst is None or cmp.ratio > worst.ratio:
            worst = cmp
    return worst


def _no_adapter_work(request: Request) -> Any:
    raise AssertionError(
        f"the oracle's own finite differences asked the adapter for {type(request).__name__}"
    )


def _basis_plan(
    ident: Identity,
    fn: Any,
    x_d: Mapping[str, np.ndarray],
    x_d64: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
    dtype: str,
    h0: float,
    settings: Any,
    out_shape: tuple[int, ...],
) -> Generator[Request, Any, list[tuple[dict[str, np.ndarray], float, np.ndarray, np.ndarray | None]]]:
    """Kink-safe basis directions ``e_j`` (inputs of at most ``full_jacobian_max`` elements),
    each with the adapter's ``J e_j`` and the closed form's: ``(e_j, h, J e_j, ref)``."""
    shapes = {n: tuple(np.shape(x_d64[n])) for n in ident.wrt}
    if sum(int(np.prod(s)) for s in shapes.values()) > settings.full_jacobian_max:
        return []
    out = []
    rng = np.random.default_rng(0)
    for d in fd.directions(rng, shapes, 0, settings.full_jacobian_max):
        h = _safe_step(ident, x_d64, params, d, h0)
        if h is None:
            continue
        result = yield JvpCall(fn, x_d, {n: a.astype(dtype) for n, a in d.items()}, dtype)
        if not isinstance(result, tuple) or len(result) != 2:
            raise AdapterContractError(f"jvp returned {type(result).__name__}, not a pair (output, J v)")
        jd = np.asarray(_validate_array("forward-mode J v", result[1], out_shape, dtype), dtype=np.float64)
        ref = ident.jvp(x_d64, params, d).reshape(out_shape) if ident.reference_jvp is not None else None
        out.append((d, h, jd, ref))
    return out


def _transpose_rounding(
    fn: Any,
    ident: Identity,
    x_d64: Mapping[str, np.ndarray],
    u_d64: np.ndarray,
    v64: Mapping[str, np.ndarray],
    p: float,
    q: float,
) -> Generator[Request, Any, float]:
    """The rounding room of ``u^T (J v) = (u^T J) v`` for a function with no closed form, measured.

    Without a closed form the terms ``J v`` and ``u^T J`` are summed from are unknown, and the
    results' own size understates them where they cancel (softmax at ``[0, 50]``: ``J v ~ 1e-22``
    from terms of order 1).  Both sides are evaluated again in float32 (a jvp and a vjp); their
    distance from the float64 ones is float32's rounding of those sums, so float64's is at most
    ``eps64 / eps32`` times it: the room is
    ``H (eps64 / eps32) (|p32 - p| + |q32 - q|)`` (``H`` = :data:`gradoracle.user_checks.MAGNITUDE_HEADROOM`).
    Asked only where the identity failed (a correct function's rounding; a wrong rule misses by
    its own error, far above it); 0 when the function cannot run in float32.
    """
    from gradoracle.user_checks import MAGNITUDE_HEADROOM

    x32 = {k: np.asarray(a, dtype=np.float32) for k, a in x_d64.items()}
    try:
        res = yield JvpCall(fn, x32, {n: np.asarray(a, dtype=np.float32) for n, a in v64.items()}, "float32")
        rev = yield VjpCall(fn, x32, tuple(ident.wrt), np.asarray(u_d64, dtype=np.float32), "float32")
        p32 = float(np.sum(u_d64 * np.asarray(res[1], dtype=np.float64)))
        q32 = _dot({n: np.asarray(rev.grads[n], dtype=np.float64) for n in ident.wrt}, v64)
    except Exception:  # a function that cannot run in float32: no room is measured
        return 0.0
    if not (np.isfinite(p32) and np.isfinite(q32)):
        return 0.0
    ratio = float(np.finfo(np.float64).eps / np.finfo(np.float32).eps)
    return MAGNITUDE_HEADROOM * ratio * (abs(p32 - p) + abs(q32 - q))


def _jvp_by_elements(
    ident: Identity,
    fn: Any,
    example: Example,
    x_d: Mapping[str, np.ndarray],
    x_d64: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
    u_d64: np.ndarray,
    dtype: str,
    fd_dtype: str,
    tol: Tolerance,
    settings: Any,
    output_scale: float,
) -> Generator[Request, Any, Any]:
    """A user's function whose finite difference along ``v`` failed, measured element by element.

    ``g_j = u^T (J e_j)`` from the adapter's forward mode for every basis vector ``e_j`` (inputs
    of at most ``full_jacobian_max`` elements), then compared with the central differences of its
    forward along each ``e_j`` exactly as reverse mode compares ``u^T J``
    (:func:`gradoracle.runner._fd_comparisons`: Richardson, each element at its own step, and at a
    kink the interval of the one-sided slopes, which holds every generalised derivative, with the
    kinked elements' sum judged too).  Returns the worst comparison (localised to an element).
    """
    from gradoracle.runner import (
        ExampleOutcome,
        _fd_comparisons,
        _float32_rounding_rejudge,
        largest_allowance,
    )

    h0 = fd.step_size(fd_dtype, x_d64)
    plan = yield from _basis_plan(ident, fn, x_d, x_d64, params, dtype, h0, settings, np.shape(u_d64))
    dirs = [d for d, _, _, _ in plan]
    g = _by_elements(x_d64, ident.wrt, [(d, jd) for d, _, jd, _ in plan], u_d64)
    slack = {n: largest_allowance(tol, a) for n, a in g.items()}
    sink = ExampleOutcome(example)
    yield from _fd_comparisons(
        "jvp-fd",
        fn,
        ident,
        x_d64,
        params,
        u_d64,
        g,
        dirs,
        fd_dtype,
        tol,
        slack,
        sink,
        output_scale=output_scale,
    )
    if sink.failures and dtype == "float32" and fd_dtype == "float64" and ident.reference_jvp is None:
        # a small difference of larger terms, rounded in float32: measured, as in reverse mode
        yield from _float32_rounding_rejudge(
            "jvp-fd",
            _basis_gradient_at(fn, tuple(ident.wrt), dirs, u_d64, np.shape(u_d64)),
            fn,
            ident,
            example,
            x_d64,
            params,
            u_d64,
            g,
            dirs,
            tol,
            sink,
            output_scale=output_scale,
        )
    return sink.comparisons[-1] if sink.comparisons else None


def _basis_gradient_at(
    fn: Any,
    wrt: tuple[str, ...],
    dirs: Sequence[Mapping[str, np.ndarray]],
    u: np.ndarray,
    out_shape: tuple[int, ...],
) -> Callable[[Mapping[str, np.ndarray], str], Generator[Request, Any, Mapping[str, np.ndarray]]]:
    """``gradient_at(point, dtype)`` for :func:`gradoracle.runner._float32_rounding_rejudge` in
    forward mode: ``u^T J`` element by element, ``u^T (J e_j)`` from one jvp per basis vector."""

    def at(point: Mapping[str, np.ndarray], dtype: str) -> Generator[Request, Any, Mapping[str, np.ndarray]]:
        arrays = {k: np.asarray(v, dtype=dtype) for k, v in point.items()}
        answers = []
        for d in dirs:
            result = yield JvpCall(fn, arrays, {n: a.astype(dtype) for n, a in d.items()}, dtype)
            answers.append((d, _validate_array("forward-mode J v", result[1], out_shape, dtype)))
        return _by_elements(arrays, wrt, answers, u)

    return at


def _by_elements(
    arrays: Mapping[str, np.ndarray],
    wrt: Sequence[str],
    answers: Sequence[tuple[Mapping[str, np.ndarray], np.ndarray]],
    u: np.ndarray,
) -> dict[str, np.ndarray]:
    """``u^T J`` shaped like the inputs ``wrt``, from ``(e_j, J e_j)`` for basis vectors ``e_j``:
    element ``j`` is ``u^T (J e_j)``, accumulated in float64 (elements without an answer are 0)."""
    g = {n: np.zeros(np.shape(arrays[n])) for n in wrt}
    for d, jd in answers:
        basis = fd.is_basis(d)
        if basis is None:  # fd.directions gives basis vectors for inputs this small
            raise ValueError("forward mode by elements takes basis directions only")
        g[basis[0]].reshape(-1)[basis[1]] = float(np.sum(u * np.asarray(jd, dtype=np.float64)))
    return g


# ------------------------------------------------------------------------ second order


def evaluate_hvp_example(
    identity: Identity | str, adapter: Any, dtype: str, example: Example, settings: Any = None
) -> Any:
    """Second order on one example: every HVP method against the closed form, finite
    differences of the adapter's gradient, and each other."""
    from gradoracle.runner import CheckSettings

    return _one(
        adapter, hvp_evaluation(get_identity(identity), adapter, dtype, example, settings or CheckSettings())
    )


def hvp_evaluation(
    ident: Identity, adapter: Any, dtype: str, example: Example, settings: Any
) -> Generator[Request, Any, Any]:
    """:func:`evaluate_hvp_example` as an evaluation that asks for adapter work (batchable)."""
    from gradoracle.runner import ExampleOutcome, _compare_arrays, _fd_dtype, _sampled_noise, forward_for

    params = example.params
    ident.check_shapes(example.inputs, params)
    outcome = ExampleOutcome(example)
    fd_dtype = _fd_dtype(adapter, dtype, settings)
    tol = tolerance_for(dtype, fd_dtype)
    fn = forward_for(ident, params)
    names = ident.second_order_wrt
    rng = np.random.default_rng([int(example.seed) % (2**32), 2])
    master, x_d, x_d64, x_32 = _points(example, dtype)
    ref_out = ident.reference_forward(x_d64, params)
    u = np.asarray(rng.uniform(-1.0, 1.0, size=ref_out.shape))
    u_d = u.astype(dtype)
    u_d64 = u_d.astype(np.float64)
    v = _tangents(rng, x_d64, names)
    v_d = {n: a.astype(dtype) for n, a in v.items()}
    v64 = {n: a.astype(np.float64) for n, a in v_d.items()}
    w = _tangents(rng, x_d64, names)  # projects the gradient for the finite differences

    ref = ident.hvp(x_d64, params, u_d64, v64)
    ref32 = ident.hvp(
        x_32, params, u_d64.astype(np.float32), {n: a.astype(np.float32) for n, a in v64.items()}
    )
    mags = ident.hvp_term_magnitude(x_d64, params, u_d64, v64)
    allowed: dict[str, np.ndarray] = {}
    for n in names:
        r = np.asarray(ref[n], dtype=np.float64)
        eta = _sampled_noise(ref32[n], r)
        allowed[n] = tol.allowed(np.maximum(mags[n], np.abs(r)), eta)

    got: dict[str, dict[str, np.ndarray]] = {}
    undefined = ident.hvp_undefined(x_d64, params) if ident.hvp_undefined is not None else {}
    for method in adapter_hvp_methods(adapter):
        try:
            res = yield HvpCall(fn, x_d, tuple(names), u_d, v_d, dtype, method)
        except Exception as exc:  # any adapter failure becomes a record
            outcome.fault, outcome.crash = Fault.ADAPTER, f"hvp ({method}) raised {describe_exception(exc)}"
            return outcome
        try:
            if not isinstance(res, Mapping):
                raise AdapterContractError(f"hvp returned {type(res).__name__}, not a dict name -> H v")
            got[method] = {
                n: np.asarray(
                    _validate_array(f"H v for {n!r} ({method})", res.get(n), x_d[n].shape, dtype),
                    dtype=np.float64,
                )
                for n in names
            }
        except AdapterContractError as exc:
            outcome.fault, outcome.contract = Fault.ADAPTER, str(exc)
            return outcome
        for n in names:
            if n in undefined:  # no single second derivative there: any value is accepted
                got[method][n] = np.where(undefined[n], np.asarray(ref[n], dtype=np.float64), got[method][n])
            outcome.comparisons.append(
                _compare_arrays("hvp-analytic", f"{n} [{method}]", got[method][n], ref[n], allowed[n])
            )
    methods = list(got)
    if methods and records_bits(dtype):
        outcome.bits = effective_bits(
            {
                f"{n} [{m}]": (got[m][n], np.asarray(ref[n], dtype=np.float64), mags[n])
                for m in methods
                for n in names
            }
        )
    if len(methods) == 2:
        a, b = got[methods[0]], got[methods[1]]
        for n in names:
            cmp = _compare_arrays("hvp-methods", n, a[n], b[n], 2 * allowed[n])
            outcome.comparisons.append(cmp)

    # finite differences of the adapter's own gradient along v, projected on w
    u_fd = u_d64.astype(fd_dtype)
    adapter_gradient = _adapter_gradient(fn, names, u_fd, fd_dtype)

    w_flat = np.concatenate([w[n].reshape(-1) for n in names])
    gmag = ident.gradient_magnitude(x_d64, params, u_d64) if set(names) <= set(ident.wrt) else None
    grad_scale = float(sum(np.sum(np.abs(w[n]) * gmag[n]) for n in names)) if gmag is not None else 0.0
    h0 = fd.step_size(fd_dtype, x_d64)
    h = _safe_step(ident, x_d64, params, v64, direction_step(h0, v64))
    # (direction, step, H d per method, closed-form H d, its term magnitudes, its allowance)
    plan: list[tuple[Any, float, dict[str, dict[str, np.ndarray]], Any, Any, Any]] = []
    if h is not None:
        plan.append((v64, h, got, ref, mags, allowed))
    else:
        # every step along v crosses a kink: small inputs fall back to the kink-safe basis
        # directions, each with its own H e_j by every method
        outcome.skipped_directions += 1
        shapes = {n: tuple(np.shape(x_d64[n])) for n in names}
        if sum(int(np.prod(sh)) for sh in shapes.values()) <= settings.full_jacobian_max:
            for d in fd.directions(np.random.default_rng(0), shapes, 0, settings.full_jacobian_max):
                hd = _safe_step(ident, x_d64, params, d, h0)
                if hd is None:
                    continue
                d_d = {n: a.astype(dtype) for n, a in d.items()}
                try:
                    got_d: dict[str, dict[str, np.ndarray]] = {}
                    for m in methods:
                        res_d = yield HvpCall(fn, x_d, tuple(names), u_d, d_d, dtype, m)
                        got_d[m] = {
                            n: np.asarray(
                                _validate_array(f"H v for {n!r} ({m})", res_d.get(n), x_d[n].shape, dtype),
                                dtype=np.float64,
                            )
                            for n in names
                        }
                except AdapterContractError as exc:
                    outcome.fault, outcome.contract = Fault.ADAPTER, str(exc)
                    return outcome
                except Exception as exc:
                    outcome.fault, outcome.crash = Fault.ADAPTER, f"hvp raised {describe_exception(exc)}"
                    return outcome
                ref_d = ident.hvp(x_d64, params, u_d64, d)
                mags_d = ident.hvp_term_magnitude(x_d64, params, u_d64, d)
                allowed_d = {n: tol.allowed(np.maximum(mags_d[n], np.abs(ref_d[n])), 0.0) for n in names}
                plan.append((d, hd, got_d, ref_d, mags_d, allowed_d))

    def along_for(method: str, hd: float) -> AlongFn:
        """The adapter's ``w^T H v'`` by ``method`` along a second direction ``v'`` (one more hvp)."""

        def along(scaled: Mapping[str, np.ndarray]) -> Generator[Request, Any, Along | None]:
            if _safe_step(ident, x_d64, params, scaled, hd) != hd:
                return None
            vs_d = {n: np.asarray(a).astype(dtype) for n, a in scaled.items()}
            vs64 = {n: a.astype(np.float64) for n, a in vs_d.items()}
            try:
                res = yield HvpCall(fn, x_d, tuple(names), u_d, vs_d, dtype, method)
                hw = {
                    n: np.asarray(
                        _validate_array(f"H v for {n!r} ({method})", res.get(n), x_d[n].shape, dtype),
                        dtype=np.float64,
                    )
                    for n in names
                }
            except Exception:  # a second opinion that cannot be had leaves the first one standing
                return None
            ref_w = ident.hvp(x_d64, params, u_d64, vs64)
            mags_w = ident.hvp_term_magnitude(x_d64, params, u_d64, vs64)
            top = {n: np.maximum(mags_w[n], np.abs(ref_w[n])) for n in names}
            value_w = sum(float(np.sum(w[n] * hw[n])) for n in names)
            slack_w = float(sum(np.sum(np.abs(w[n]) * tol.allowed(top[n], 0.0)) for n in names))
            return Along(
                value=value_w,
                mag=max(float(sum(np.sum(np.abs(w[n]) * top[n]) for n in names)), abs(value_w)),
                extra=slack_w + 16 * fd.machine_epsilon(fd_dtype) * grad_scale / hd,
                analytic=sum(float(np.sum(w[n] * ref_w[n])) for n in names),
                direction=vs64,
            )

        return along

    worst_fd: Any = None
    for d, hd, got_d, ref_d, mags_d, allowed_d in plan:
        for method in methods:
            value = sum(float(np.sum(w[n] * got_d[method][n])) for n in names)
            mag = float(sum(np.sum(np.abs(w[n]) * np.maximum(mags_d[n], np.abs(ref_d[n]))) for n in names))
            slack = float(sum(np.sum(np.abs(w[n]) * allowed_d[n]) for n in names))
            try:
                if gmag is None:
                    (base,) = yield from adapter_gradient([x_d64])
                    grad_scale = float(np.sum(np.abs(w_flat * base)))
                extra = slack + 16 * fd.machine_epsilon(fd_dtype) * grad_scale / hd
                cmp = yield from _fd_check(
                    "hvp-fd",
                    f"w^T H v [{method}]",
                    adapter_gradient,
                    x_d64,
                    w_flat,
                    d,
                    hd,
                    fd_dtype,
                    value,
                    max(mag, abs(value)),
                    extra,
                    tol,
                    analytic=sum(float(np.sum(w[n] * ref_d[n])) for n in names),
                    along=along_for(method, hd),
                    rounding=16 * fd.machine_epsilon(fd_dtype) * grad_scale / hd,
                )
            except Exception as exc:
                outcome.fault, outcome.crash = Fault.ADAPTER, f"vjp raised {describe_exception(exc)}"
                return outcome
            if worst_fd is None or cmp.ratio > worst_fd.ratio:
                worst_fd = cmp
    if worst_fd is not None:
        outcome.comparisons.append(worst_fd)

    # the oracle itself: closed-form H v vs differences of the closed-form gradient, float64
    hm = _safe_step(ident, master, params, v, direction_step(fd.step_size("float64", master), v))
    if hm is not None:
        gradient = _closed_form_gradient(ident, params, u, names)
        ref_master = ident.hvp(master, params, u, v) if dtype != "float64" else ref
        value = sum(float(np.sum(w[n] * ref_master[n])) for n in names)
        mag_m = ident.hvp_term_magnitude(master, params, u, v)
        mag = float(sum(np.sum(np.abs(w[n]) * np.maximum(mag_m[n], np.abs(ref_master[n]))) for n in names))
        gm = _closed_form_gradient(ident, params, np.abs(u), names, absolute=True)(
            {k: np.abs(a) for k, a in master.items()}
        )
        gscale = float(np.sum(np.abs(w_flat) * np.abs(gm)))
        oracle_fd = _fd_check(
            "hvp-oracle",
            "w^T H v",
            _local(gradient),
            master,
            w_flat,
            v,
            hm,
            "float64",
            value,
            mag,
            16 * fd.machine_epsilon("float64") * gscale / hm,
            tolerance_for("float64"),
            along=_closed_form_along(
                lambda vs: (
                    ident.hvp(master, params, u, vs),
                    ident.hvp_term_magnitude(master, params, u, vs),
                ),
                lambda vs: _safe_step(ident, master, params, vs, hm) == hm,
                w,
                names,
                16 * fd.machine_epsilon("float64") * gscale / hm,
            ),
            rounding=16 * fd.machine_epsilon("float64") * gscale / hm,
        )
        outcome.comparisons.append(run_one(oracle_fd, _no_adapter_work))

    _classify(outcome, Fault.SECOND_ORDER)
    return outcome


def _closed_form_gradient(
    ident: Identity, params: Mapping[str, Any], u: np.ndarray, names: Sequence[str], absolute: bool = False
) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """``x -> grad_x <u, f(x)>`` over ``names`` from the closed-form gradient, flattened.

    An identity whose Hessian is taken over more inputs than its ``wrt`` (the convolutions:
    over X and K) needs the gradient of every one of them: each comes from the closed form
    of an identity of the same forward that has it in its ``wrt`` (the notes' section
    pairs: ``conv-filter`` and ``conv-input``).
    """
    sources: list[Identity] = [ident]
    missing = [n for n in names if n not in ident.wrt]
    if missing:
        from gradoracle.identities import IDENTITIES

        for other in IDENTITIES.values():
            if (
                other.forward is ident.forward
                and other.reference_gradient is not None
                and set(other.wrt) & set(missing)
            ):
                sources.append(other)
    covered = {n for s in sources for n in s.wrt}
    if not set(names) <= covered:
        raise ValueError(
            f"identity {ident.name!r}: no closed-form gradient for {sorted(set(names) - covered)} "
            "(needed by the second-order self-test)"
        )

    def gradient(arrays: dict[str, np.ndarray]) -> np.ndarray:
        parts: dict[str, np.ndarray] = {}
        for s in sources:
            g = s.gradient_magnitude(arrays, params, u) if absolute else s.gradient(arrays, params, u)
            for n in s.wrt:
                parts.setdefault(n, np.asarray(g[n], dtype=np.float64))
        return np.concatenate([parts[n].reshape(-1) for n in names])

    return gradient


EVALUATORS: dict[str, Callable[..., Any]] = {
    "jvp": evaluate_jvp_example,
    "hvp": evaluate_hvp_example,
}
#: Per mode, the evaluation of one example as a generator of adapter requests
#: (:mod:`gradoracle.batching`): what :func:`gradoracle.runner.check` evaluates in batches.
EVALUATIONS: dict[str, Callable[..., Generator[Request, Any, Any]]] = {
    "jvp": jvp_evaluation,
    "hvp": hvp_evaluation,
}
