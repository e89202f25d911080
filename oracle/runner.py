"""The check engine shared by the CLI and the pytest plugin.

``check(identity, adapter, dtype, settings) -> CheckResult`` draws inputs with the
identity's Hypothesis strategy and, for every example, compares three ways:

1. the adapter's forward against the reference forward (does it compute the same function?);
2. the adapter's autodiff ``u^T J`` against the closed-form reference (is it right?);
3. the autodiff against central finite differences of the adapter's own forward
   (is its backward the derivative of its forward?);

and, as a self-test of the oracle, the closed form against finite differences of the
reference forward.  Agreement pattern -> fault (:class:`gradoracle.results.Fault`).  The
runner never prints and never lets an adapter's exception escape: everything becomes
a :class:`CheckResult`.
"""

from __future__ import annotations

import hashlib
import queue
import random
import re
import threading
import time
import zlib
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from hypothesis import Phase, given, reject
from hypothesis import __version__ as hypothesis_version
from hypothesis import reproduce_failure as hypothesis_reproduce_failure
from hypothesis import seed as hypothesis_seed
from hypothesis import settings as hypothesis_settings
from hypothesis.control import current_build_context, currently_in_test_context
from hypothesis.database import ReadOnlyDatabase
from hypothesis.internal.conjecture.choice import ChoiceTemplate
from hypothesis.reporting import with_reporter

from gradoracle import finite_differences as fd
from gradoracle.batching import ForwardCall, Request, VjpCall, batches_anything, drive, run_one
from gradoracle.identities import Identity, InvalidShapeError, UnknownIdentityError, get_identity
from gradoracle.precision import describe_finding, effective_bits, precision_record, reduced_precision_finding
from gradoracle.results import (
    ADAPTER_WORDS,
    TOLERANCE_FORMULA_PREFIX,
    AdapterContractError,
    CheckResult,
    ErrorStat,
    Fault,
    GradientMismatch,
    Verdict,
    Words,
    WorstElement,
    fault_text,
    kind_text,
)
from gradoracle.strategies import Example
from gradoracle.tolerances import Tolerance, sci, tolerance_for

DTYPES: tuple[str, ...] = ("float64", "float32")

#: gradoracle's default number of examples per check.
DEFAULT_EXAMPLES = 30
#: Hypothesis's own default ``max_examples``: a loaded profile with another value chose it.
HYPOTHESIS_DEFAULT_MAX_EXAMPLES = 100


@dataclass(frozen=True)
class CheckSettings:
    """Knobs of one check; the defaults are the conformance settings (the CLI's).

    ``seed=None`` lets Hypothesis choose (``--hypothesis-seed``, the profile's
    ``derandomize``, else a fresh random seed).  ``use_profile`` runs the check under the
    loaded Hypothesis profile (its database, ``derandomize``, ``print_blob``, phases,
    health checks, verbosity and backend; see :func:`hypothesis_settings_for`).
    ``reproduce_failure`` is a blob printed under ``print_blob``: the check then replays
    exactly that example (Hypothesis's ``@reproduce_failure``).
    """

    examples: int = DEFAULT_EXAMPLES
    seed: int | None = 0
    directions: int = 2
    full_jacobian_max: int = 12
    timeout_s: float | None = 60.0
    shrink: bool = True
    fd_dtype: str | None = None  # default: float64 when the adapter supports it
    use_profile: bool = False
    reproduce_failure: str | None = None
    #: The oracle's self-test (its closed form against finite differences of its own
    #: reference forward) runs on every example that fails another comparison and on a
    #: sample of about one example in ``oracle_every`` of the rest (1: on every example, as
    #: ``gradoracle selftest`` runs it).  It proves the oracle, not the framework.
    oracle_every: int = 4
    #: Examples of one check that share shapes are evaluated together, up to this many per
    #: batch (one vectorised adapter call each for the vjps and the finite-difference
    #: points, :mod:`gradoracle.batching`), for adapters with ``vjp_batch``/``forward_batch``;
    #: 1 (or an adapter without them): one example at a time, as Hypothesis draws them.
    batch: int = 32

    def with_(self, **changes: Any) -> CheckSettings:
        """A copy with some fields changed."""
        return replace(self, **changes)


def profile_examples(explicit: int | None = None) -> int:
    """Examples per check: ``explicit`` > the loaded profile's ``max_examples`` > 30.

    The profile counts when its ``max_examples`` differs from Hypothesis's default (100):
    a profile that leaves it alone did not ask for 100 gradient checks per identity.
    """
    if explicit is not None:
        return int(explicit)
    profile = hypothesis_settings.default
    chosen = profile.max_examples if profile is not None else HYPOTHESIS_DEFAULT_MAX_EXAMPLES
    return DEFAULT_EXAMPLES if chosen == HYPOTHESIS_DEFAULT_MAX_EXAMPLES else int(chosen)


def profile_settings(
    examples: int | None = None, seed: int | None = None, base: CheckSettings | None = None
) -> CheckSettings:
    """Settings for checks run in a user's Hypothesis world (the pytest plugin and fixture).

    Precedence: explicit values (``--gradoracle-examples`` / ``--gradoracle-seed`` or their
    ini keys) > the loaded Hypothesis profile > gradoracle's defaults; without an explicit
    seed Hypothesis chooses (``--hypothesis-seed``, ``derandomize``, else random) and the
    profile's example database replays earlier failures first.
    """
    return (base or CheckSettings()).with_(examples=profile_examples(examples), seed=seed, use_profile=True)


def hypothesis_settings_for(settings: CheckSettings) -> hypothesis_settings:
    """The Hypothesis settings of one check.

    Always: ``max_examples = settings.examples``, no deadline (an adapter's first call may
    compile; the per-example ``timeout_s`` guards hangs), one bug per check, no ``explain``
    phase (it reruns the test to explain lines of *its* code), shrinking per
    ``settings.shrink``.  With ``use_profile`` everything else is the loaded profile's
    (database, derandomize, print_blob, verbosity, backend, the health checks it
    suppresses: gradoracle suppresses none of its own); without (the CLI), no database,
    no blob, derandomize off: the seed alone decides.
    """
    parent = hypothesis_settings.default
    if settings.use_profile and parent is not None:
        phases = [p for p in parent.phases if p is not Phase.explain]
        if not settings.shrink:
            phases = [p for p in phases if p is not Phase.shrink]
        return hypothesis_settings(
            parent,
            max_examples=settings.examples,
            deadline=None,
            phases=phases,
            report_multiple_bugs=False,
        )
    return hypothesis_settings(
        max_examples=settings.examples,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.explicit, Phase.generate] + ([Phase.shrink] if settings.shrink else []),
        suppress_health_check=(),
        report_multiple_bugs=False,
        print_blob=False,
    )


def simplest_values_drawn() -> tuple[bool, bool]:
    """(whether Hypothesis made this example by filling choices with their simplest values,
    whether it holds an array of zeros or is entirely at its simplest).

    While it generates, Hypothesis runs every new prefix once with all later choices at
    their simplest (first the all-simplest example: first shapes, seed 0, all values 0),
    and its mutations set whole choices to their simplest: arrays of zeros, which make
    examples identical in value and put a ReLU of ``W x`` or a user's kinked function on
    its kink.  The runner rejects such examples while it generates (see :func:`check`).
    """
    try:
        data = current_build_context().data
        probe = any(isinstance(c, ChoiceTemplate) for c in (data.prefix or ()))
        nodes = data.nodes
        simplest = bool(nodes) and all(node.trivial for node in nodes)
        zeros = any(node.type == "bytes" and node.value and node.trivial for node in nodes)
        return probe, simplest or zeros
    except Exception:  # another Hypothesis version's internals: keep the example
        return False, False


@dataclass
class Comparison:
    """One comparison on one example: worst error, what it was allowed, where."""

    kind: str
    input: str
    abs_error: float
    scale: float
    allowed: float
    index: list[int] = field(default_factory=list)
    autodiff: float | None = None
    analytic: float | None = None
    fd: float | None = None
    magnitude: float | None = None  # m_i of the worst element (what rtol multiplies)

    @property
    def ratio(self) -> float:
        return self.abs_error / self.allowed if self.allowed > 0 else (0.0 if self.abs_error == 0 else np.inf)

    @property
    def rel_error(self) -> float:
        return self.abs_error / self.scale if self.scale > 0 else self.abs_error

    @property
    def failed(self) -> bool:
        return not self.abs_error <= self.allowed


@dataclass
class ExampleOutcome:
    """Everything one example showed."""

    example: Example
    comparisons: list[Comparison] = field(default_factory=list)
    fault: Fault = Fault.NONE
    crash: str | None = None
    contract: str | None = None
    domain: str | None = None  # the forward is not finite at these inputs: what and where
    skipped_directions: int = 0
    bits: float | None = None  # effective correct mantissa bits (gradoracle.precision)

    @property
    def failures(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.failed]

    @property
    def passed(self) -> bool:
        return self.fault == Fault.NONE


# ------------------------------------------------------------------ one example


def _is_domain_error(exc: BaseException) -> bool:
    """An exception that says the inputs are outside the function's domain (``math.log(-1)``...)."""
    if isinstance(exc, ArithmeticError):  # ZeroDivisionError, FloatingPointError, OverflowError
        return True
    return "domain" in str(exc).lower()


def _domain_text(out: np.ndarray, inputs: Mapping[str, np.ndarray]) -> str:
    """Where the forward's output is not finite, and the inputs' ranges there."""
    bad = np.argwhere(~np.isfinite(out))
    first = [int(i) for i in bad[0]] if out.ndim else []
    value = out[tuple(first)] if out.ndim else out
    ranges = ", ".join(
        f"{n} in [{float(np.min(v)):.3g}, {float(np.max(v)):.3g}]" for n, v in inputs.items() if v.size
    )
    where = f" at output element {first} ({len(bad)} of {out.size} not finite)" if out.ndim else ""
    return f"the forward gives {value}{where}; the inputs: {ranges}"


def _fd_dtype(adapter: Any, dtype: str, settings: CheckSettings) -> str:
    if settings.fd_dtype:
        return settings.fd_dtype
    return "float64" if "float64" in getattr(adapter, "dtypes", DTYPES) else dtype


def _cotangent(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return np.asarray(rng.uniform(-1.0, 1.0, size=shape))


def _compare_arrays(
    kind: str,
    name: str,
    got: np.ndarray,
    ref: np.ndarray,
    allowed: np.ndarray,
    magnitude: np.ndarray | None = None,
) -> Comparison:
    """Element-wise ``|got - ref| <= allowed``; records the element with the worst ratio.

    ``magnitude`` (the ``m_i`` the allowance was computed from) is recorded at that element,
    so a message can say what the allowance is made of.
    """
    g = np.asarray(got, dtype=np.float64)
    diff = np.abs(g - ref)
    allowed = np.broadcast_to(np.asarray(allowed, dtype=np.float64), diff.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / allowed)
    flat = int(np.argmax(ratio)) if diff.size else 0
    index = [int(i) for i in np.unravel_index(flat, diff.shape)] if diff.size else []
    return Comparison(
        kind=kind,
        input=name,
        abs_error=float(diff.reshape(-1)[flat]) if diff.size else 0.0,
        scale=float(np.max(np.abs(ref))) if ref.size else 0.0,
        allowed=float(allowed.reshape(-1)[flat]) if diff.size else 0.0,
        index=index,
        autodiff=float(g.reshape(-1)[flat]) if g.size else None,
        analytic=float(np.asarray(ref).reshape(-1)[flat]) if ref.size else None,
        magnitude=(
            float(np.broadcast_to(np.asarray(magnitude, dtype=np.float64), diff.shape).reshape(-1)[flat])
            if magnitude is not None and diff.size
            else None
        ),
    )


def _validate_vjp(
    result: Any, ident: Identity, ref_out: np.ndarray, inputs: Mapping[str, np.ndarray], dtype: str
) -> None:
    out = getattr(result, "output", None)
    grads = getattr(result, "grads", None)
    if out is None or grads is None:
        raise AdapterContractError(f"vjp returned {type(result).__name__}, not a VJPResult(output, grads)")
    out = np.asarray(out)
    if out.shape != ref_out.shape:
        raise AdapterContractError(
            f"forward output has shape {list(out.shape)}, expected {list(ref_out.shape)}"
        )
    if out.dtype != np.dtype(dtype):
        raise AdapterContractError(f"forward output has dtype {out.dtype}, expected {dtype}")
    for name in ident.wrt:
        if name not in grads or grads[name] is None:
            raise AdapterContractError(f"no gradient returned for input {name!r}")
        g = np.asarray(grads[name])
        if g.shape != inputs[name].shape:
            raise AdapterContractError(
                f"gradient for {name!r} has shape {list(g.shape)}, expected {list(inputs[name].shape)}"
            )
        if g.dtype != np.dtype(dtype):
            raise AdapterContractError(f"gradient for {name!r} has dtype {g.dtype}, expected {dtype}")
        if not np.all(np.isfinite(g)):
            bad = np.argwhere(~np.isfinite(g))[0].tolist()
            raise AdapterContractError(f"gradient for {name!r} is not finite at {bad}: {g[tuple(bad)]}")
    if not np.all(np.isfinite(out)):
        raise AdapterContractError("forward output is not finite")


def _kink_safe_step(
    ident: Identity,
    inputs: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
    d: Mapping[str, np.ndarray],
    h: float,
    base: np.ndarray | None = None,
) -> float | None:
    """The largest ``h' <= h`` (halving) with no kink between ``x - 2h' v`` and ``x + 2h' v``.

    ``base`` is ``smooth_pattern(inputs)`` when the caller has it already.
    """
    if ident.smooth_pattern is None:
        return h
    if base is None:
        base = ident.smooth_pattern(inputs, params)
    for _ in range(8):
        if all(
            np.array_equal(ident.smooth_pattern(fd.perturbed(inputs, d, t, "float64"), params), base)
            for t in (2 * h, -2 * h)
        ):
            return h
        h /= 2
    return None


def _kink_safe_steps(
    ident: Identity,
    inputs: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
    dirs: Sequence[Mapping[str, np.ndarray]],
    h: float,
) -> list[float | None]:
    """:func:`_kink_safe_step` for every direction (the unperturbed pattern computed once)."""
    if ident.smooth_pattern is None:
        return [h] * len(dirs)
    base = ident.smooth_pattern(inputs, params)
    return [_kink_safe_step(ident, inputs, params, d, h, base) for d in dirs]


def _fd_comparisons(
    kind: str,
    fn: Any,
    ident: Identity,
    inputs: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
    u: np.ndarray,
    grads: Mapping[str, np.ndarray],
    dirs: Sequence[Mapping[str, np.ndarray]],
    fd_dtype: str,
    tol: Tolerance,
    slack: Mapping[str, np.ndarray],
    outcome: ExampleOutcome,
    ref_grads: Mapping[str, np.ndarray] | None = None,
    output_scale: float = 0.0,
    steps: Sequence[float | None] | None = None,
) -> Generator[ForwardCall, Any, None]:
    """Compare ``<g, v>`` with ``D(h) ~ u^T J v`` for every direction ``v``; worst one recorded.

    A generator (:mod:`gradoracle.batching`): it asks for the forward ``fn`` at all the
    points ``x +- h v`` of all directions in one :class:`ForwardCall`, then at ``x +- 2h v``
    for the directions that need a Richardson estimate (those that would fail), in one more.

    ``steps`` are the kink-safe steps of the directions (:func:`_kink_safe_steps`) when the
    caller has them already.

    ``output_scale`` is ``sum_i |u_i| m_i`` over the output's term magnitudes: each
    evaluation of ``s(t) = <u, f(x + t v)>`` is off by up to ~``eps * output_scale``, so
    ``D(h)`` carries a rounding error up to ``~eps * output_scale / h`` (the textbook term),
    which the allowance includes deterministically (a Richardson estimate may be lucky).
    """
    h0 = fd.step_size(fd_dtype, inputs)
    eps_fd = fd.machine_epsilon(fd_dtype)
    if steps is None:
        steps = _kink_safe_steps(ident, inputs, params, dirs, h0)
    g64 = {n: np.asarray(grads[n], dtype=np.float64) for n in grads}
    gabs = {n: float(np.max(np.abs(g))) if g.size else 0.0 for n, g in g64.items()}
    u64 = np.asarray(u, dtype=np.float64)

    def s(out: np.ndarray) -> float:  # s(t) = <u, f(x + t v)>, accumulated in float64
        return float(np.sum(u64 * np.asarray(out, dtype=np.float64)))

    active: list[tuple[int, Mapping[str, np.ndarray], float]] = []
    for k, d in enumerate(dirs):
        h = steps[k]
        if h is None:
            outcome.skipped_directions += 1
        else:
            active.append((k, d, h))
    if not active:
        return
    points = [fd.perturbed(inputs, d, t, fd_dtype) for _, d, h in active for t in (h, -h)]
    outs = yield ForwardCall(fn, points, fd_dtype)
    rows: list[dict[str, Any]] = []
    for j, (k, d, h) in enumerate(active):
        p = sum(float(np.sum(g64[n] * d[n])) for n in d)
        mag = sum(float(np.sum(np.abs(g64[n] * d[n]))) for n in d)
        gmax = max(gabs[n] for n in d)
        vmax = max(float(np.max(np.abs(d[n]))) if d[n].size else 0.0 for n in d)
        mag = max(mag, gmax * vmax)
        extra = sum(float(np.sum(np.abs(d[n]) * slack[n])) for n in d if n in slack)
        extra += 16 * eps_fd * output_scale / h
        value = (s(outs[2 * j]) - s(outs[2 * j + 1])) / (2 * h)
        rows.append({"k": k, "d": d, "h": h, "p": p, "mag": mag, "extra": extra, "value": value})
    close = [r for r in rows if abs(r["p"] - r["value"]) > tol.fd_allowed(r["mag"]) + r["extra"]]
    if close:  # Richardson: D(2h) as well, D_R = (4 D(h) - D(2h)) / 3, error ~ |D(h) - D(2h)|
        far = yield ForwardCall(
            fn,
            [fd.perturbed(inputs, r["d"], t, fd_dtype) for r in close for t in (2 * r["h"], -2 * r["h"])],
            fd_dtype,
        )
        for j, r in enumerate(close):
            d2 = (s(far[2 * j]) - s(far[2 * j + 1])) / (4 * r["h"])
            r["value"], r["error"] = (4 * r["value"] - d2) / 3, abs(r["value"] - d2)
    worst: Comparison | None = None
    for r in rows:
        k, d, p, mag, value = r["k"], r["d"], r["p"], r["mag"], r["value"]
        allowed = (
            tol.fd_allowed(mag, r["error"]) + r["extra"] if "error" in r else tol.fd_allowed(mag) + r["extra"]
        )
        basis = fd.is_basis(d)
        name, index = (
            ("projection", [k])
            if basis is None
            else (basis[0], list(np.unravel_index(basis[1], grads[basis[0]].shape)))
        )
        analytic = None
        if ref_grads is not None:
            analytic = sum(float(np.sum(ref_grads[n] * d[n])) for n in d)
        comp = Comparison(
            kind=kind,
            input=name,
            abs_error=abs(p - value),
            scale=mag,
            allowed=allowed,
            index=[int(i) for i in index],
            autodiff=p if kind == "fd" else None,
            analytic=p if kind == "oracle" else analytic,
            fd=value,
        )
        if worst is None or comp.ratio > worst.ratio:
            worst = comp
    if worst is not None:
        outcome.comparisons.append(worst)


def oracle_sampled(example: Example, every: int) -> bool:
    """Whether the oracle's self-test samples ``example``: about one in ``every``, chosen by a
    CRC-32 of the example's values and seed (so the choice is the same on every replay)."""
    if every <= 1:
        return True
    crc = zlib.crc32(repr(example.seed).encode())
    for name in sorted(example.inputs):
        crc = zlib.crc32(np.ascontiguousarray(example.inputs[name], dtype=np.float64).tobytes(), crc)
    return crc % every == 0


_FORWARDS: dict[tuple[Any, str], Any] = {}


def forward_for(ident: Identity, params: Mapping[str, Any]) -> Any:
    """``fn(ops, inputs)`` for an identity and its hyperparameters: one stable object per pair,
    so adapters that cache compiled code per function (JAX's jit) reuse it across examples."""
    key = (ident.forward, repr(sorted(params.items())))
    fn = _FORWARDS.get(key)
    if fn is None:
        forward = ident.forward
        frozen = dict(params)

        def fn(ops: Any, arrays: Mapping[str, Any]) -> Any:
            return forward(ops, arrays, frozen)

        fn.__qualname__ = f"{ident.name}{frozen or ''}"
        _FORWARDS[key] = fn
    return fn


def evaluate_example(
    identity: Identity | str,
    adapter: Any,
    dtype: str,
    example: Example,
    settings: CheckSettings | None = None,
) -> ExampleOutcome:
    """Run the three-way comparison on one example (see the module docstring).

    The adapter's finite-difference points go to it in one ``forward_batch`` call when it
    has one (:mod:`gradoracle.batching`); :func:`evaluate_examples` evaluates many at once.
    """
    return evaluate_examples(identity, adapter, dtype, [example], settings)[0]


def evaluate_examples(
    identity: Identity | str,
    adapter: Any,
    dtype: str,
    examples: Sequence[Example],
    settings: CheckSettings | None = None,
) -> list[ExampleOutcome]:
    """:func:`evaluate_example` for each example, their adapter calls batched (:func:`batching.drive`).

    Raises what one example's evaluation raises outside the adapter (an
    :class:`InvalidShapeError`), as :func:`evaluate_example` would.
    """
    ident = get_identity(identity)
    settings = settings or CheckSettings()
    results = drive(adapter, [_evaluation(ident, adapter, dtype, ex, settings) for ex in examples])
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return list(results)


def _evaluation(
    ident: Identity, adapter: Any, dtype: str, example: Example, settings: CheckSettings
) -> Generator[Request, Any, ExampleOutcome]:
    """One example's three-way comparison, asking for adapter work (:mod:`gradoracle.batching`)."""
    params = example.params
    ident.check_shapes(example.inputs, params)
    outcome = ExampleOutcome(example)
    tol = tolerance_for(dtype, _fd_dtype(adapter, dtype, settings))
    fn = forward_for(ident, params)

    rng = np.random.default_rng(example.seed)
    master = {k: np.asarray(v, dtype=np.float64) for k, v in example.inputs.items()}
    x_d = {k: v.astype(dtype) for k, v in master.items()}
    x_d64 = {k: v.astype(np.float64) for k, v in x_d.items()}  # exact: the inputs the adapter sees
    x_32 = {k: v.astype(np.float32) for k, v in x_d64.items()}

    try:
        with np.errstate(all="ignore"):  # a forward outside its domain is reported, not warned about
            ref_out = np.asarray(ident.reference_forward(x_d64, params))
    except (ValueError, ArithmeticError) as exc:
        if ident.family != "user" or not _is_domain_error(exc):
            raise
        outcome.fault = Fault.DOMAIN
        outcome.domain = f"the forward raised {type(exc).__name__}: {exc}"
        return outcome
    if ref_out.size and not np.all(np.isfinite(ref_out)):
        outcome.fault = Fault.DOMAIN
        outcome.domain = _domain_text(ref_out, x_d64)
        return outcome
    u = _cotangent(rng, ref_out.shape)
    u_d = u.astype(dtype)
    u_d64 = u_d.astype(np.float64)

    # 1. the adapter's forward and backward, in the dtype under test
    try:
        result = yield VjpCall(fn, x_d, tuple(ident.wrt), u_d, dtype)
    except Exception as exc:  # any adapter failure becomes a record
        outcome.fault, outcome.crash = Fault.ADAPTER, f"vjp raised {type(exc).__name__}: {exc}"
        return outcome
    try:
        _validate_vjp(result, ident, ref_out, x_d, dtype)
    except AdapterContractError as exc:
        outcome.fault, outcome.contract = Fault.ADAPTER, str(exc)
        return outcome
    out = np.asarray(result.output)
    grads = {n: np.asarray(result.grads[n]) for n in ident.wrt}

    # 2. the closed form, with the tolerance model of gradoracle.tolerances: per element, the
    # magnitude of the terms the gradient is computed from, plus the oracle's own float32
    # rounding (eta).  An identity without a closed form (an ad-hoc user check) is compared
    # with finite differences only; its rounding room then comes from the autodiff gradient.
    has_reference = ident.reference_gradient is not None
    ref: dict[str, np.ndarray] | None = None
    allowed: dict[str, np.ndarray] = {}
    if has_reference:
        ref = ident.gradient(x_d64, params, u_d64)
        ref32 = ident.gradient(x_32, params, u_d64.astype(np.float32))
        mags = ident.gradient_magnitude(x_d64, params, u_d64)
        for name in ident.wrt:
            r = np.asarray(ref[name], dtype=np.float64)
            eta = float(np.max(np.abs(np.asarray(ref32[name], dtype=np.float64) - r))) if r.size else 0.0
            mag = np.maximum(mags[name], np.abs(r))
            allowed[name] = tol.allowed(mag, eta)
            outcome.comparisons.append(_compare_arrays("analytic", name, grads[name], r, allowed[name], mag))
    else:
        for name in ident.wrt:
            g64 = np.asarray(grads[name], dtype=np.float64)
            allowed[name] = tol.allowed(
                np.full(g64.shape, float(np.max(np.abs(g64))) if g64.size else 0.0), 0.0
            )
    out32 = np.asarray(ident.reference_forward(x_32, params), dtype=np.float64)
    eta_f = float(np.max(np.abs(out32 - ref_out))) if ref_out.size else 0.0
    out_mag = np.maximum(ident.output_magnitude(x_d64, params), np.abs(ref_out))
    outcome.comparisons.append(
        _compare_arrays("forward", "output", out, ref_out, tol.allowed(out_mag, eta_f), out_mag)
    )
    if ref is not None:
        outcome.bits = effective_bits(
            {
                "output": (out, ref_out, out_mag),
                **{n: (grads[n], ref[n], np.maximum(mags[n], np.abs(ref[n]))) for n in ident.wrt},
            }
        )

    # 3. finite differences of the adapter's own forward (float64 when it can)
    fd_dtype = _fd_dtype(adapter, dtype, settings)
    shapes = {n: x_d[n].shape for n in ident.wrt}
    dirs = fd.directions(rng, shapes, settings.directions, settings.full_jacobian_max)

    # In float64 the adapter's inputs, cotangent and FD dtype are the master's, so both
    # finite-difference passes share the kink-safe steps and the output magnitudes.
    same_point = dtype == "float64" and fd_dtype == "float64"
    steps = _kink_safe_steps(ident, x_d64, params, dirs, fd.step_size(fd_dtype, x_d64))

    try:
        yield from _fd_comparisons(
            "fd",
            fn,
            ident,
            x_d64,
            params,
            u_d64,
            grads,
            dirs,
            fd_dtype,
            tol,
            allowed,
            outcome,
            ref,
            output_scale=float(np.sum(np.abs(u_d64) * out_mag)),
            steps=steps,
        )
    except Exception as exc:  # the adapter's forward may fail on its own
        outcome.fault, outcome.crash = Fault.ADAPTER, f"forward raised {type(exc).__name__}: {exc}"
        return outcome

    # 4. the oracle itself: closed form vs finite differences of the reference forward, float64,
    # on a sample of the examples and on every example where something else failed (so that
    # a wrong closed form is always told apart from a wrong backward)
    if ref is not None and (outcome.failures or oracle_sampled(example, settings.oracle_every)):
        ref_master = ident.gradient(master, params, u) if dtype != "float64" else ref
        tol64 = tolerance_for("float64")
        master_mag = (
            out_mag if same_point else np.maximum(ident.output_magnitude(master, params), np.abs(ref_out))
        )
        oracle_fd = _fd_comparisons(
            "oracle",
            fn,
            ident,
            master,
            params,
            u,
            ref_master,
            dirs,
            "float64",
            tol64,
            {},
            outcome,
            output_scale=float(np.sum(np.abs(u) * master_mag)),
            steps=steps if same_point else None,
        )
        run_one(
            oracle_fd, lambda call: [ident.reference_forward(p, params) for p in getattr(call, "points", ())]
        )

    failed = {c.kind for c in outcome.failures}
    if "oracle" in failed:
        outcome.fault = Fault.ORACLE
    elif "forward" in failed:
        outcome.fault = Fault.FORWARD
    elif failed & {"analytic", "fd"}:
        outcome.fault = Fault.BACKWARD
    return outcome


# ------------------------------------------------------------------ diagnostics


def _adapter_spec(adapter: Any, spec: str | None) -> str:
    if spec:
        return spec
    cls = type(adapter)
    return f"{cls.__module__}:{cls.__qualname__}"


def repro_snippet(
    ident: Identity,
    adapter_spec: str,
    dtype: str,
    example: Example,
    env: Sequence[str] = (),
    mode: str = "vjp",
) -> str:
    """A runnable Python snippet that reproduces one example's check.

    When the adapter's module is importable only through this run's ``sys.path`` (the current
    directory, ``PYTHONPATH``) or the run set variables that matter (``env``, ``JAX_*``...), the
    snippet's first line says so (:mod:`gradoracle.repro_env`).
    """
    from gradoracle.repro_env import needs_line

    path = adapter_spec.partition("?")[0]
    modules = [path.partition(":")[0]] if ":" in path else []
    needs = needs_line(modules, env)
    lines = [needs] if needs else []
    lines += ["import numpy as np", "from gradoracle import reproduce", "", "inputs = {"]
    for name, arr in example.inputs.items():
        lines.append(f"    {name!r}: np.array({np.asarray(arr, dtype=np.float64).tolist()!r}),")
    lines.append("}")
    lines.append(
        f"reproduce({ident.name!r}, {adapter_spec!r}, {dtype!r}, inputs, params={dict(example.params)!r}, "
        f"seed={example.seed}{'' if mode == 'vjp' else f', mode={mode!r}'})  "
        "# raises GradientMismatch while the fault is there"
    )
    return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.9g}"


def _allowed_text(c: Comparison, tol: Tolerance) -> str:
    """The allowance of a comparison in words (:meth:`Tolerance.explain`)."""
    if c.kind in ("fd", "oracle"):
        fd_tol = tol if c.kind == "fd" else tolerance_for("float64")
        return fd_tol.explain_fd(c.allowed, c.scale)
    return tol.explain(c.allowed, c.magnitude)


def describe_outcome(
    ident: Identity,
    adapter_name: str,
    dtype: str,
    outcome: ExampleOutcome,
    tol: Tolerance,
    repro: str,
    words: Words | None = None,
    mode: str = "vjp",
) -> tuple[str, WorstElement | None]:
    """The failure message (identity, adapter, input, worst element, three values, tolerance, repro).

    ``words`` names the thing under test (a framework adapter by default; the user's own
    function and backward for :mod:`gradoracle.user_checks`).  The allowance is spelled
    out for the worst element; the tolerance formula is the ``tolerance formula:`` line,
    which terminal front-ends show with ``--verbose`` (:func:`gradoracle.results.brief_message`).
    """
    from gradoracle.specification import source_words

    words = words or ADAPTER_WORDS
    source = source_words(ident.source)
    if words.user:
        head = f"{words.subject} ({source}) / {words.who} / {dtype}"
    else:
        head = f"{ident.name} ({source}) / adapter {adapter_name} / {dtype}"
    if mode != "vjp":
        head += f" / mode {mode}"
    ex = outcome.example
    shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in ex.inputs.items())
    worst: WorstElement | None = None
    lines = [
        f"gradient check failed: {head}",
        f"  fault: {outcome.fault} - {fault_text(outcome.fault, words)}",
    ]
    if outcome.domain:
        lines.append(f"  {outcome.domain}")
        lines.append(f"  hint: {domain_hint(ident, words)}")
    elif outcome.crash or outcome.contract:
        lines.append(f"  {outcome.crash or outcome.contract}")
    else:
        failures = sorted(outcome.failures, key=lambda c: -c.ratio)
        w = failures[0]
        analytic_cmp = {c.input: c for c in outcome.comparisons if c.kind == "analytic"}
        fd_value = w.fd
        autodiff, analytic = w.autodiff, w.analytic
        if w.kind == "analytic":
            fd_cmp = next(
                (
                    c
                    for c in outcome.comparisons
                    if c.kind == "fd" and c.input == w.input and c.index == w.index
                ),
                None,
            )
            fd_value = fd_cmp.fd if fd_cmp else None
        worst = WorstElement(
            kind=w.kind,
            input=w.input,
            index=w.index,
            autodiff=autodiff,
            analytic=analytic,
            fd=fd_value,
            abs_error=w.abs_error,
            allowed=w.allowed,
        )
        where = f"input {w.input!r}" + (
            f", element {w.index}" if w.input != "projection" else f", direction {w.index}"
        )
        got = "output" if w.kind == "forward" else words.gradient
        ref = "reference" if w.kind == "forward" else "analytic"
        lines.append(f"  worst: {kind_text(w.kind, words)}, {where}")
        lines.append(
            f"    {got} = {_fmt(autodiff)}   {ref} = {_fmt(analytic)}   finite differences = {_fmt(fd_value)}"
        )
        lines.append(
            f"    |error| {sci(w.abs_error)} > {_allowed_text(w, tol)} (error/tolerance = {w.ratio:.3g})"
        )
        for c in failures[1:4]:
            also = f"{kind_text(c.kind, words)} on {c.input!r}"
            lines.append(f"  also: {also}: error/tolerance = {c.ratio:.3g}")
        ok = [n for n, c in analytic_cmp.items() if not c.failed]
        if ok:
            matched = "your reference" if words.user_reference else "the notes"
            lines.append(f"  inputs whose gradient matched {matched}: {', '.join(ok)}")
    lines.append(f"  example: {shapes}, params={dict(ex.params)}, seed={ex.seed}")
    lines.append(f"{TOLERANCE_FORMULA_PREFIX}{tol.describe()}")
    lines.append("  repro:")
    lines.extend("    " + line for line in repro.splitlines())
    return "\n".join(lines), worst


def domain_hint(ident: Identity, words: Words) -> str:
    """How to keep the inputs inside the forward's domain (the user's check) or whom to tell."""
    if ident.family != "user":
        return (
            f"the strategy of {ident.name} drew inputs outside its forward's domain: "
            "a bug in gradoracle's strategy (please report it with the repro below)"
        )
    first = ident.wrt[0] if ident.wrt else "x"
    return (
        "restrict the inputs to where the function is defined: pass a Hypothesis strategy for the "
        f"input, e.g. inputs={{{first!r}: hypothesis.extra.numpy.arrays(np.float64, (3,), "
        "elements=st.floats(0.1, 10))}, or map the drawn values into the domain inside your "
        "function (np.log(1 + x**2) instead of np.log(x))"
    )


def reproduce(
    identity: str,
    adapter: Any,
    dtype: str,
    inputs: Mapping[str, Any],
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    settings: CheckSettings | None = None,
    mode: str = "vjp",
) -> ExampleOutcome:
    """Re-run one example in ``mode``; raise :class:`GradientMismatch` with the full diagnostic on failure."""
    from gradoracle.adapters import load_adapter

    ident = get_identity(identity)
    spec = adapter if isinstance(adapter, str) else None
    ad = load_adapter(adapter)
    example = Example(
        {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()}, dict(params or {}), seed
    )
    settings = settings or CheckSettings()
    from gradoracle import modes as mode_checks

    if mode not in mode_checks.MODES:
        raise mode_checks.UnknownModeError(
            f"unknown mode {mode!r}; use one of {', '.join(mode_checks.MODES)}"
        )
    gap = mode_checks.unsupported_reason(ad, mode) or mode_checks.identity_mode_gap(ident, mode)
    if gap:
        raise mode_checks.UnknownModeError(gap)
    evaluate = evaluate_example if mode == "vjp" else mode_checks.EVALUATORS[mode]
    outcome = evaluate(ident, ad, dtype, example, settings)
    if not outcome.passed:
        tol = tolerance_for(dtype, _fd_dtype(ad, dtype, settings))
        repro = repro_snippet(
            ident, _adapter_spec(ad, spec), dtype, example, getattr(ad, "repro_env", ()), mode
        )
        message, worst = describe_outcome(
            ident, ad.name, dtype, outcome, tol, repro, getattr(ad, "words", None), mode
        )
        raise GradientMismatch(
            message,
            identity=ident.name,
            adapter=ad.name,
            dtype=dtype,
            fault=outcome.fault,
            worst=worst,
            repro=repro,
        )
    return outcome


# ----------------------------------------------------------------------- a check


class _TimeoutError(Exception):
    """An adapter call that did not return within the per-example timeout."""


class _ExampleWorker:
    """One daemon thread that runs every example of a check, each with a timeout.

    A thread per example cost ~0.8 ms CPU and ~2-3 ms wall per example here (measured
    over the 56 numpy checks x 50 examples: 5.4 s CPU / 11.6 s wall with a thread per
    example, 3.2 s / 3.3 s without); handing work to one waiting thread costs ~13 us.
    A call that does not return in time is abandoned (the thread is a daemon and gets
    no more work: the check stops calling the adapter).
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while (func := self._jobs.get()) is not None:
            try:
                self._results.put((True, func()))
            except BaseException as exc:  # re-raised in the caller's thread
                self._results.put((False, exc))

    def call(self, func: Any, timeout: float | None) -> Any:
        """``func()`` in the worker thread; :class:`_TimeoutError` after ``timeout`` seconds."""
        if timeout is None:
            return func()
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True, name="gradoracle-check")
            self._thread.start()
        self._jobs.put(func)
        try:
            ok, value = self._results.get(timeout=timeout)
        except queue.Empty:
            raise _TimeoutError(
                f"adapter did not return within {timeout:g} s (per-example timeout)"
            ) from None
        if not ok:
            raise value
        return value

    def close(self) -> None:
        """Let the thread end once it is idle."""
        if self._thread is not None:
            self._jobs.put(None)


def check(
    identity: Identity | str,
    adapter: Any,
    dtype: str = "float64",
    settings: CheckSettings | None = None,
    mode: str = "vjp",
) -> CheckResult:
    """Check one identity on one adapter in one dtype and one mode over Hypothesis-drawn examples.

    ``mode`` is ``vjp`` (reverse mode, :func:`evaluate_example`), ``jvp`` (forward mode) or
    ``hvp`` (second order), the last two from :mod:`gradoracle.modes`.
    """
    from gradoracle import modes as mode_checks
    from gradoracle.adapters import AdapterLoadError, load_adapter

    start = time.perf_counter()
    settings = settings or CheckSettings()
    spec = adapter if isinstance(adapter, str) else None
    adapter_label = spec.partition("?")[0] if spec else getattr(adapter, "name", "?")
    try:
        ident = get_identity(identity)
    except UnknownIdentityError as exc:
        return CheckResult(
            str(identity), "", adapter_label, dtype, Verdict.ERROR, Fault.NONE, str(exc), mode=mode
        )

    def result(verdict: Verdict, fault: Fault = Fault.NONE, message: str = "", **kw: Any) -> CheckResult:
        return CheckResult(
            ident.name,
            ident.source,
            adapter_label,
            dtype,
            verdict,
            fault,
            message,
            duration_s=time.perf_counter() - start,
            mode=mode,
            **kw,
        )

    if mode not in mode_checks.MODES:
        return result(
            Verdict.ERROR, message=f"unknown mode {mode!r}; use one of {', '.join(mode_checks.MODES)}"
        )
    if dtype not in DTYPES:
        return result(Verdict.ERROR, message=f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    try:
        ad = load_adapter(adapter)
        adapter_label = str(getattr(ad, "name", adapter_label))
        available, why = ad.available()
    except (AdapterLoadError, Exception) as exc:
        return result(Verdict.ERROR, Fault.ADAPTER, f"adapter {adapter_label!r} failed to load: {exc}")
    if not available:
        return result(Verdict.SKIP, message=f"adapter {adapter_label!r} is not available: {why}")
    if dtype not in getattr(ad, "dtypes", DTYPES):
        return result(Verdict.SKIP, message=f"adapter {adapter_label!r} does not support {dtype}")
    try:
        missing = sorted(ident.ops - set(ad.supported_ops()))
    except Exception as exc:
        return result(Verdict.ERROR, Fault.ADAPTER, f"supported_ops() raised {type(exc).__name__}: {exc}")
    if missing:
        return result(
            Verdict.SKIP, message=f"adapter {adapter_label!r} does not implement {', '.join(missing)}"
        )
    gap = mode_checks.unsupported_reason(ad, mode) or mode_checks.identity_mode_gap(ident, mode)
    if gap:
        return result(Verdict.SKIP, message=gap)
    evaluate_mode = evaluate_example if mode == "vjp" else mode_checks.EVALUATORS[mode]

    fd_dtype = _fd_dtype(ad, dtype, settings)
    tol = tolerance_for(dtype, fd_dtype)
    stats: dict[str, dict[str, ErrorStat]] = {}
    # drawn: examples generated or replayed before the first failure (shrink calls apart);
    # first_failure: the 1-based index of the first failing one among them
    state: dict[str, Any] = {
        "calls": 0,
        "drawn": 0,
        "first_failure": None,
        "fault": None,
        "generating": False,
        "last": None,
        "timeout": None,
    }
    worker = _ExampleWorker()
    # inside the user's own @given test, check() draws one example through it (no nesting)
    nested = currently_in_test_context()
    skip_simplest = settings.reproduce_failure is None and not nested

    known: dict[bytes, ExampleOutcome] = {}  # outcomes of the batched pass, by example digest
    recording: list[Example] | None = None  # the examples Hypothesis draws, in the recording pass

    def evaluate(example: Example) -> ExampleOutcome:
        cached = known.get(example_digest(example)) if known else None
        if cached is not None:
            return cached
        if state["timeout"] is not None:
            # the adapter hung once: do not call it again (its thread may still be busy)
            return ExampleOutcome(example, fault=Fault.ADAPTER, crash=state["timeout"])
        try:
            outcome: ExampleOutcome = worker.call(
                lambda: evaluate_mode(ident, ad, dtype, example, settings), settings.timeout_s
            )
            return outcome
        except _TimeoutError as exc:
            state["timeout"] = str(exc)
            return ExampleOutcome(example, fault=Fault.ADAPTER, crash=str(exc))

    def body(example: Example) -> None:
        if skip_simplest:
            # Hypothesis replays database entries first, then generates, starting with an
            # example made of simplest choices; until the first failure, generated examples
            # with zero arrays are rejected (replays and shrinking keep them).
            probe, degenerate = simplest_values_drawn()
            state["generating"] = state["generating"] or probe
            if degenerate and state["generating"] and state["first_failure"] is None:
                reject()
        if recording is not None:
            recording.append(example)
            return
        state["calls"] += 1
        if state["first_failure"] is None:
            state["drawn"] += 1
        outcome = evaluate(example)
        state["last"] = outcome
        if outcome.bits is not None:
            state["bits"] = min(state.get("bits", outcome.bits), outcome.bits)
        if not outcome.passed and state["first_failure"] is None:
            state["first_failure"] = state["drawn"]
            state["fault"] = outcome.fault
        elif not outcome.passed and outcome.fault != state["fault"]:
            # Shrinking keeps the first failure's fault: an example that fails another way
            # (a forward fault shrunk to all-zero inputs, where only the backward differs)
            # counts as passing for the shrinker, so the shrunk example shows the fault found.
            return
        for c in outcome.comparisons:
            stats.setdefault(c.kind, {}).setdefault(c.input, ErrorStat()).update(
                c.abs_error, c.rel_error, c.ratio
            )
        if not outcome.passed:
            repro = repro_snippet(
                ident, _adapter_spec(ad, spec), dtype, example, getattr(ad, "repro_env", ()), mode
            )
            message, worst = describe_outcome(
                ident, adapter_label, dtype, outcome, tol, repro, getattr(ad, "words", None), mode
            )
            raise GradientMismatch(
                message,
                identity=ident.name,
                adapter=adapter_label,
                dtype=dtype,
                fault=outcome.fault,
                worst=worst,
                repro=repro,
            )

    common: dict[str, Any] = {"tolerance": tol.to_dict(), "fd_dtype": fd_dtype}
    reported: list[object] = []
    test: Any = None
    run_seed: dict[str, Any] = {"seed": settings.seed, "generated": None}

    def counts() -> dict[str, Any]:
        drawn = state["drawn"]
        return {
            "examples": drawn,
            "first_failure": state["first_failure"],
            "shrink_calls": max(0, state["calls"] - drawn),
        }

    def provenance(exc: BaseException | None = None) -> dict[str, Any]:
        generated = getattr(test, "_hypothesis_internal_use_generated_seed", None) or run_seed["generated"]
        notes = [*reported, *(getattr(exc, "__notes__", None) or [])]
        blob = next((m.group(1) for n in notes if (m := _BLOB.search(str(n)))), None)
        return {"hypothesis_seed": None if generated is None else str(generated), "blob": blob}

    def hypothesis_test(record: bool) -> Any:
        """``body`` under the check's Hypothesis settings; ``record``: the recording pass, which
        never shrinks and only reads the example database (a saved failure is drawn first but
        neither deleted nor re-saved: the one-at-a-time pass does that)."""
        wrapped = given(ident.strategy())(body)
        hs = hypothesis_settings_for(settings)
        if record:
            db = hs.database
            hs = hypothesis_settings(
                hs,
                database=None if db is None else ReadOnlyDatabase(db),
                phases=[p for p in hs.phases if p is not Phase.shrink],
            )
        wrapped = hs(wrapped)
        if run_seed["seed"] is not None:
            wrapped = hypothesis_seed(run_seed["seed"])(wrapped)
        if settings.reproduce_failure:
            blob = settings.reproduce_failure.encode()
            wrapped = hypothesis_reproduce_failure(hypothesis_version, blob)(wrapped)
        return wrapped

    batch_failed: list[Example] = []
    try:
        try:
            if nested:
                # one example, drawn (and shrunk) by the user's test
                body(current_build_context().data.draw(ident.strategy()))
            else:
                # one example-database entry per check (the closure's source is the same for all)
                mode_key = "" if mode == "vjp" else f":{mode}"
                key = f"gradoracle:{ident.name}:{adapter_label}:{dtype}{mode_key}".encode()
                body._hypothesis_internal_add_digest = key  # type: ignore[attr-defined]
                if settings.batch > 1 and batches_anything(ad) and not settings.reproduce_failure:
                    # Hypothesis chooses the examples (a pass that only records them), the
                    # adapter evaluates them in batches; a clean batch is the whole check.
                    # Otherwise the one-at-a-time pass replays the same examples (answered
                    # from `known`) up to the failing one and Hypothesis shrinks it.  Both
                    # passes must draw the same examples: one seed for both.
                    if run_seed["seed"] is None and not _seed_fixed_elsewhere(settings):
                        run_seed["seed"] = run_seed["generated"] = random.getrandbits(128)
                    recording = []
                    with with_reporter(lambda _: None):
                        hypothesis_test(record=True)()
                    drawn, recording = recording, None
                    state["generating"] = False
                    batch_failed = _evaluate_in_batches(
                        ident, ad, dtype, drawn, settings, worker, known, state, evaluation_for(mode)
                    )
                    if not batch_failed:
                        for example in drawn:
                            state["calls"] += 1
                            state["drawn"] += 1
                            outcome = known[example_digest(example)]
                            if outcome.bits is not None:
                                state["bits"] = min(state.get("bits", outcome.bits), outcome.bits)
                            for c in outcome.comparisons:
                                stats.setdefault(c.kind, {}).setdefault(c.input, ErrorStat()).update(
                                    c.abs_error, c.rel_error, c.ratio
                                )
                        bits = state.get("bits") if dtype == "float32" else None
                        return result(
                            Verdict.PASS, errors=stats, precision=precision_record(bits), **counts(), **common
                        )
                test = hypothesis_test(record=False)
                with with_reporter(reported.append):
                    test()
                if batch_failed:
                    # the replay drew other examples than the recording pass: report the
                    # batch's failure as it was found (unshrunk) rather than lose it
                    body(batch_failed[0])
        finally:
            worker.close()
    except GradientMismatch as exc:
        last: ExampleOutcome | None = state["last"]
        crashed = last is not None and (last.crash is not None or last.domain is not None)
        counter = None
        if last is not None:
            counter = {
                "inputs": {k: np.asarray(v).tolist() for k, v in last.example.inputs.items()},
                "params": dict(last.example.params),
                "seed": last.example.seed,
            }
        fault, message, precision = exc.fault, str(exc), None
        if dtype == "float32" and last is not None and not crashed:
            finding = reduced_precision_finding(
                last, lambda: _passes_in_float64(evaluate_mode, ident, ad, last.example, settings)
            )
            if finding is not None:
                fault = Fault.PRECISION
                message = describe_finding(finding[0], finding[1]) + "\n" + message
                precision = precision_record(*finding)
        return result(
            Verdict.ERROR if crashed else Verdict.FAIL,
            fault,
            message,
            errors=stats,
            worst=exc.worst,
            counterexample=counter,
            repro=exc.repro,
            precision=precision,
            **counts(),
            **provenance(exc),
            **common,
        )
    except InvalidShapeError as exc:
        return result(Verdict.ERROR, Fault.NONE, f"invalid input shapes: {exc}", **counts(), **common)
    except Exception as exc:  # Hypothesis errors (flaky failures, health checks, ...) become records too
        return result(
            Verdict.ERROR,
            Fault.ADAPTER,
            f"{type(exc).__name__}: {exc}",
            errors=stats,
            **counts(),
            **provenance(exc),
            **common,
        )
    bits = state.get("bits") if dtype == "float32" else None
    return result(Verdict.PASS, errors=stats, precision=precision_record(bits), **counts(), **common)


#: ``@reproduce_failure('6.x', b'BLOB')`` as Hypothesis prints it under ``print_blob``.
_BLOB = re.compile(r"@reproduce_failure\([^,]+, b'([^']+)'\)")


def _passes_in_float64(
    evaluate: Any, ident: Identity, adapter: Any, example: Example, settings: CheckSettings
) -> bool:
    """Whether ``example`` conforms when the adapter runs it in float64 (a precision finding's proof)."""
    if "float64" not in getattr(adapter, "dtypes", DTYPES):
        return False
    try:
        return bool(evaluate(ident, adapter, "float64", example, settings).passed)
    except Exception:  # the float64 run failing in any way: no evidence for a precision mode
        return False


def _seed_fixed_elsewhere(settings: CheckSettings) -> bool:
    """Whether Hypothesis itself draws the same examples on every run of a test: a
    ``--hypothesis-seed`` (its global seed) or a ``derandomize`` profile."""
    import hypothesis.core

    if getattr(hypothesis.core, "global_force_seed", None) is not None:
        return True
    return bool(settings.use_profile and getattr(hypothesis_settings.default, "derandomize", False))


def example_digest(example: Example) -> bytes:
    """A digest of an example's values, parameters and seed (equal examples, equal digests)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((sorted(example.params.items()), example.seed)).encode())
    for name in sorted(example.inputs):
        a = np.ascontiguousarray(example.inputs[name], dtype=np.float64)
        h.update(f"{name}{a.shape}".encode())
        h.update(a.tobytes())
    return h.digest()


def evaluation_for(mode: str) -> Any:
    """The evaluation of one example in ``mode`` as a generator of adapter requests:
    ``(identity, adapter, dtype, example, settings) -> Generator`` (:mod:`gradoracle.batching`)."""
    if mode == "vjp":
        return _evaluation
    from gradoracle.modes import EVALUATIONS

    return EVALUATIONS[mode]


def _evaluate_in_batches(
    ident: Identity,
    adapter: Any,
    dtype: str,
    examples: Sequence[Example],
    settings: CheckSettings,
    worker: _ExampleWorker,
    known: dict[bytes, ExampleOutcome],
    state: dict[str, Any],
    evaluation: Any = None,
) -> list[Example]:
    """Evaluate ``examples`` in batches of up to ``settings.batch`` that share shapes and
    parameters; record each outcome in ``known``.  Returns the examples that did not pass,
    in drawing order (an example whose evaluation raised, or every example of a batch that
    timed out, has no outcome and counts as not passed: the replay evaluates it alone)."""
    evaluation = evaluation or _evaluation
    groups: dict[tuple[Any, ...], list[Example]] = {}
    order: dict[bytes, int] = {}
    for i, ex in enumerate(examples):
        digest = example_digest(ex)
        if digest in order:
            continue
        order[digest] = i
        shapes = tuple(sorted((k, np.shape(v)) for k, v in ex.inputs.items()))
        groups.setdefault((shapes, repr(sorted(ex.params.items()))), []).append(ex)
    for members in groups.values():
        for start in range(0, len(members), settings.batch):
            chunk = members[start : start + settings.batch]
            if state["timeout"] is not None:
                return [ex for ex in examples if example_digest(ex) not in known]
            try:
                timeout = None if settings.timeout_s is None else settings.timeout_s * len(chunk)
                outcomes = worker.call(
                    lambda chunk=chunk: drive(
                        adapter, [evaluation(ident, adapter, dtype, ex, settings) for ex in chunk]
                    ),
                    timeout,
                )
            except _TimeoutError:
                state["timeout"] = (
                    f"adapter did not return within {settings.timeout_s:g} s (per-example timeout; "
                    f"{len(chunk)} examples evaluated together were allowed {timeout:g} s)"
                )
                continue
            for ex, outcome in zip(chunk, outcomes, strict=True):
                if isinstance(outcome, ExampleOutcome):
                    known[example_digest(ex)] = outcome
    failed = [ex for ex in examples if not (known.get(example_digest(ex)) or _NOT_PASSED).passed]
    return failed


_NOT_PASSED = ExampleOutcome(Example({}), fault=Fault.ADAPTER)


def run_checks(
    identities: Sequence[Identity | str],
    adapters: Sequence[Any],
    dtypes: Sequence[str],
    settings: CheckSettings | None = None,
    progress: Any = None,
    modes: Sequence[str] = ("vjp",),
) -> list[CheckResult]:
    """Every identity x adapter x dtype x mode, in that order; ``progress(result)`` after each."""
    out: list[CheckResult] = []
    for adapter in adapters:
        for dtype in dtypes:
            for identity in identities:
                for mode in modes:
                    res = check(identity, adapter, dtype, settings, mode)
                    out.append(res)
                    if progress is not None:
                        progress(res)
    return out
