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

import contextlib
import functools
import hashlib
import importlib.util
import io
import math
import os
import random
import re
import sysconfig
import time
import traceback
import unittest
import weakref
import zipfile
import zlib
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import Phase, given, reject
from hypothesis import __version__ as hypothesis_version
from hypothesis import reproduce_failure as hypothesis_reproduce_failure
from hypothesis import seed as hypothesis_seed
from hypothesis import settings as hypothesis_settings
from hypothesis.control import current_build_context, currently_in_test_context
from hypothesis.database import ReadOnlyDatabase
from hypothesis.errors import DidNotReproduce, Flaky
from hypothesis.internal.conjecture.choice import ChoiceTemplate
from hypothesis.reporting import with_reporter

from gradoracle import finite_differences as fd
from gradoracle.batching import (
    ForwardCall,
    Request,
    VjpCall,
    batches_anything,
    drive,
    raised_by_adapter,
    run_one,
)
from gradoracle.guard import (
    DEFAULT_TIMEOUT_S,
    AdapterCallError,
    AdapterFacts,
    AdapterGuard,
    describe_exception,
    guard_for,
    process_session,
    read_facts,
)
from gradoracle.identities import Identity, InvalidShapeError, UnknownIdentityError, get_identity
from gradoracle.options import DEFAULT_CONFIGURATIONS
from gradoracle.precision import (
    describe_finding,
    effective_bits,
    precision_record,
    records_bits,
    reduced_precision_finding,
)
from gradoracle.results import (
    ADAPTER_WORDS,
    REPEAT_HINT,
    TOLERANCE_FORMULA_PREFIX,
    AdapterContractError,
    CheckResult,
    ErrorStat,
    Fault,
    GradientMismatch,
    InputSpecError,
    Verdict,
    Words,
    WorstElement,
    fault_text,
    kind_text,
)
from gradoracle.strategies import Example
from gradoracle.text import MESSAGE_LIMIT
from gradoracle.tolerances import EPS32, Tolerance, sci, tolerance_for

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
    timeout_s: float | None = DEFAULT_TIMEOUT_S  # per call into the adapter (one example)
    repeat_vjp: bool = True  # call the vjp twice per example: nondeterminism is a named fault
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
    #: Layer identities draw their hyper-parameter configuration from a fixed covering pool
    #: (every value of every hyper-parameter occurs, then pairs of values up to this many
    #: configurations; the arrays are drawn freely in each): one compiled program per
    #: configuration, not per example.  0: Hypothesis draws every configuration
    #: (:func:`gradoracle.layer_strategies.covering_pool`).
    configurations: int = DEFAULT_CONFIGURATIONS
    #: The modes the run checks (a matrix of checks fills it in): a hint handed to the
    #: adapter's ``plan_modes`` before each check, so that it prepares for exactly these (the
    #: JAX adapter's combined program).  Empty: unknown, the adapter prepares for every mode.
    modes: tuple[str, ...] = ()
    #: The folder for the inputs of a failing example too large to write out in its repro
    #: snippet (``report --out DIR`` sets ``DIR/repro``); None: :func:`repro_directory`'s
    #: default.  Where files go, not how a check runs: the report's settings leave it out.
    repro_dir: str | None = None

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
    #: a finite-difference search that found no step resolving the derivative to the tolerance
    #: (:func:`_refine_steps`): ``(step, error estimate, allowance with it)`` of its finest
    #: numbers, which ``fd`` shows; the comparison fails on the allowance without the estimate
    unresolved: tuple[float, float, float] | None = None

    @property
    def ratio(self) -> float:
        return self.abs_error / self.allowed if self.allowed > 0 else (0.0 if self.abs_error == 0 else np.inf)

    @property
    def rel_error(self) -> float:
        return self.abs_error / self.scale if self.scale > 0 else self.abs_error

    @property
    def failed(self) -> bool:
        return not self.abs_error <= self.allowed


@dataclass(frozen=True)
class Nondeterminism:
    """Two vjp calls on one input that disagreed: where, and both values."""

    what: str  # "output" or the input name of a gradient
    index: list[int]
    first: float
    second: float
    allowed: float  # 0.0: bit-identical required


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
    nondeterminism: Nondeterminism | None = None
    bits: float | None = None  # effective correct mantissa bits (gradoracle.precision)

    @property
    def failures(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.failed]

    @property
    def passed(self) -> bool:
        return self.fault == Fault.NONE


# ------------------------------------------------------------------ the oracle's own errors


@functools.cache
def _code_places() -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
    """Where the code :func:`_frame_kind` tells apart lives (computed on the first exception it
    classifies, not at import): gradoracle's package and ``gradoracle.adapters`` (beside the
    package in the repository's layout, inside it in a wheel), the catalogue's reference code,
    and the installed libraries and standard library (their frames are looked through).

    Reference code is the catalogue's closed forms and reference forwards, which read only what
    the oracle drew (inputs, directions, cotangents), never an adapter's results; not
    ``identities/record.py``, whose Identity methods also call a user's own functions."""
    package = Path(__file__).resolve().parent
    spec = importlib.util.find_spec("gradoracle.adapters")
    adapters = package / "adapters"
    if spec is not None and spec.origin:
        adapters = Path(spec.origin).resolve().parent
    paths = sysconfig.get_paths()
    kinds = ("stdlib", "platstdlib", "purelib", "platlib")
    libraries = sorted({str(Path(paths[k]).resolve()) + os.sep for k in kinds if paths.get(k)})
    reference = (
        str(package / "identities") + os.sep,
        str(package / "reference_layers.py"),
        str(package / "reference_ops.py"),
    )
    return str(package) + os.sep, str(adapters) + os.sep, reference, tuple(libraries)


def _frame_kind(filename: str) -> str:
    """``"reference"`` (the catalogue's reference code), ``"library"`` (an installed library or
    the standard library, not gradoracle) or ``"other"`` (gradoracle's other code, a user's)."""
    if not filename or filename.startswith("<"):
        return "library"
    try:
        where = str(Path(filename).resolve())
    except (OSError, ValueError):
        return "other"
    package, adapters, (reference_dir, *reference_files), libraries = _code_places()
    if where.startswith((package, adapters)):
        in_catalogue = where.startswith(reference_dir) and not where.endswith(os.sep + "record.py")
        return "reference" if in_catalogue or where in reference_files else "other"
    return "library" if where.startswith(libraries) else "other"


class OracleInternalError(Exception):
    """An example's evaluation raised in the oracle's own reference code, not in an adapter call:
    a bug in gradoracle (fault ``oracle``), not the adapter's."""


def oracle_own_error(exc: BaseException) -> str | None:
    """Where in the oracle's reference code ``exc`` was raised (``"file:line in function"``), or
    None when it is not the oracle's own: an adapter call raised it (or it was raised while
    handling one), it is an adapter contract or input-shape error, or the innermost frame of its
    traceback outside the libraries is not reference code (:func:`_frame_kind`)."""
    if isinstance(exc, (AdapterContractError, InvalidShapeError)) or raised_by_adapter(exc):
        return None
    try:
        frames = traceback.extract_tb(exc.__traceback__)
    except Exception:
        return None
    # the innermost frame that is not a library's decides: raised in reference code (or in a
    # library it called, NumPy's einsum), it is the oracle's; in a user's function or in the rest
    # of gradoracle (which also handles adapter results), it is not
    for frame in reversed(frames):
        kind = _frame_kind(frame.filename)
        if kind == "library":
            continue
        if kind == "reference":
            return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"
        return None
    return None


def _evaluate_owned(evaluate_mode: Callable[..., ExampleOutcome], *args: Any) -> ExampleOutcome:
    """``evaluate_mode(*args)``; an exception of the oracle's own reference code
    (:func:`oracle_own_error`) is raised as :class:`OracleInternalError`, every other one as is."""
    try:
        return evaluate_mode(*args)
    except Exception as exc:
        where = oracle_own_error(exc)
        if where is None:
            raise
        raise OracleInternalError(
            f"gradoracle's own reference code raised {describe_exception(exc)} ({where}), not the "
            "adapter: a bug in gradoracle; please report it with this example"
        ) from exc


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


#: The constant inputs :func:`_fails_everywhere` tries (with a standard normal draw besides).
EVERYWHERE_FILLS = (1.0, 0.5, 2.0, -1.5, 10.0, -10.0)
EVERYWHERE_TEXT = (
    f"at every input tried (these shapes filled with each of {', '.join(map(str, EVERYWHERE_FILLS))}, "
    "and a standard normal draw): not an input domain to restrict the inputs to, but the function "
    "failing wherever it is called"
)
_EVERYWHERE: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], bool]] = weakref.WeakKeyDictionary()


def _fails_everywhere(
    ident: Identity,
    x_d64: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
    kind: type[BaseException] | None,
) -> bool:
    """Whether a user's forward that failed at the drawn example in a way that reads as a domain
    (raised ``kind``: ``ZeroDivisionError``, ``math domain error``; or, with ``kind=None``, gave
    a value that is not finite) fails so at every input tried: ``x_d64``'s shapes filled with
    each of :data:`EVERYWHERE_FILLS` and with a standard normal draw.  A function with a domain
    (``log``, ``sqrt``, ``1 / (x_0 - x_1)``) runs at some of them; one that divides by a zero of
    its own (``x.sum() / len([])``, ``log(x - x)``) runs at none.  Asked once per function,
    shapes, parameters and kind (a failing example is replayed while it shrinks)."""
    key = (
        tuple(sorted((n, np.shape(a)) for n, a in x_d64.items())),
        repr(sorted(params.items())),
        kind,
    )
    try:
        known = _EVERYWHERE.setdefault(ident, {})
    except TypeError:  # an identity that cannot be weakly referenced: asked every time
        known = {}
    if key in known:
        return known[key]
    rng = np.random.default_rng(0)
    trials = [{n: np.full(np.shape(a), c) for n, a in x_d64.items()} for c in EVERYWHERE_FILLS]
    trials.append({n: rng.standard_normal(np.shape(a)) for n, a in x_d64.items()})
    everywhere = True
    for inputs in trials:
        try:
            with np.errstate(all="ignore"):
                out = np.asarray(ident.reference_forward(inputs, params), dtype=np.float64)
        except Exception as exc:
            if kind is not None and isinstance(exc, kind):
                continue
        else:
            if kind is None and out.size and not np.all(np.isfinite(out)):
                continue
        everywhere = False  # it ran (or failed otherwise) there
        break
    known[key] = everywhere
    return everywhere


def reference_output(
    ident: Identity, x_d64: Mapping[str, np.ndarray], params: Mapping[str, Any], outcome: ExampleOutcome
) -> np.ndarray | None:
    """The reference forward ``f(x)`` at the example, or ``None`` with an input-domain finding
    recorded on ``outcome``: a user's function that raises a domain error there, or any forward
    that is not finite there (log of a negative), is outside its domain, not a wrong gradient."""
    try:
        with np.errstate(all="ignore"):  # a forward outside its domain is reported, not warned about
            ref_out = np.asarray(ident.reference_forward(x_d64, params))
    except (ValueError, ArithmeticError) as exc:
        if ident.family != "user" or not _is_domain_error(exc):
            raise
        if _fails_everywhere(ident, x_d64, params, type(exc)):
            # not a domain to restrict the inputs to: the function fails wherever it is called
            outcome.fault = Fault.ADAPTER
            outcome.crash = f"the forward raised {describe_exception(exc)}, and raises it {EVERYWHERE_TEXT}"
            return None
        outcome.fault = Fault.DOMAIN
        outcome.domain = f"the forward raised {type(exc).__name__}: {exc}"
        return None
    if ref_out.size and not np.all(np.isfinite(ref_out)):
        if ident.family == "user" and _fails_everywhere(ident, x_d64, params, None):
            outcome.fault = Fault.ADAPTER
            outcome.crash = f"{_domain_text(ref_out, x_d64)}; it is not finite {EVERYWHERE_TEXT}"
            return None
        outcome.fault = Fault.DOMAIN
        outcome.domain = _domain_text(ref_out, x_d64)
        return None
    return ref_out


def _overflow_text(result: Any, ref_out: np.ndarray, dtype: str) -> str | None:
    """Where a user function's output in ``dtype`` is not finite though its float64 output is
    (``exp(700)`` in float32): that output is past the dtype's range, which made its gradient
    inf too (None when that is not what happened)."""
    try:
        out = np.asarray(getattr(result, "output", None), dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if out.shape != ref_out.shape or np.all(np.isfinite(out)) or not np.all(np.isfinite(ref_out)):
        return None
    first = [int(i) for i in np.argwhere(~np.isfinite(out))[0]] if out.ndim else []
    at = tuple(first)
    where = f" at output element {first}" if out.ndim else ""
    largest = float(np.finfo(np.dtype(dtype)).max)
    return (
        f"in {dtype} the forward gives {out[at]}{where}, where float64 gives {float(ref_out[at]):.6g}: "
        f"the output is beyond {dtype}'s range (largest {largest:.3g}), so the {dtype} forward and "
        f"gradient overflow there"
    )


def _rounding_sample(ident: Identity, compute: Callable[[], Any]) -> Any:
    """The float32 evaluation ``compute()`` that samples the rounding (``eta``), or None where a
    user's function or reference cannot give one: it raises in float32 (a matrix singular
    once rounded to float32; a float64 check crashed on it) or is not finite there.  A catalogue
    identity's float32 evaluation is the oracle's own and must work: its failures propagate.
    Either runs without NumPy warnings: a float64 value past float32's range is inf in float32
    (inf * 0 in a dense layer's matmul warned "invalid value", an error under ``-W error``), and
    :func:`_sampled_noise` reads only the finite elements of the sample."""
    if ident.family != "user":
        with np.errstate(all="ignore"):
            return compute()
    try:
        with np.errstate(all="ignore"):
            sample = compute()
        values = sample.values() if isinstance(sample, Mapping) else [sample]
        finite = all(np.all(np.isfinite(np.asarray(v, dtype=np.float64))) for v in values)
    except Exception:
        return None
    return sample if finite else None


def _sampled_noise(sample: Any, exact: np.ndarray) -> float:
    """``eta = max |sample_i - exact_i|`` over the elements where that is finite (0.0 without a
    sample, or where no element is: the allowance then floors it).  An element past float32's
    range in the sample (``exp(100)``, a product of 1e20s) says nothing of the rounding, and an
    infinite or NaN ``eta`` would make every allowance infinite or NaN: a comparison that passes
    anything."""
    if sample is None or not exact.size:
        return 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(np.asarray(sample, dtype=np.float64) - exact)
    finite = diff[np.isfinite(diff)]
    return float(np.max(finite)) if finite.size else 0.0


def _not_finite(value: float | None) -> bool:
    return value is not None and not math.isfinite(value)


def _fd_domain_text(inputs: Mapping[str, np.ndarray], fd_dtype: str) -> str:
    """What finite differences that are not finite mean (``log`` at ``x = 1e-13``: ``x - a`` is
    negative for every step tried, ``h ~ 6e-6`` down to ``h / 8^6 ~ 2e-11``,
    :func:`_domain_safe_steps`): the function is not finite a step away from the inputs, so they
    judged nothing."""
    h = fd.step_size(fd_dtype, inputs)
    smallest = h / 8**DOMAIN_CUTS
    return (
        f"the finite differences are not finite (the function gives nan or inf at x +- h, a step h = "
        f"{h:.2g} from the inputs, eps^(1/3) max(1, max |x|) in {fd_dtype}, and at every smaller step "
        f"tried, down to {smallest:.2g}): an input lies that close to the edge of the function's "
        "domain (log, sqrt, 1/x near 0), where finite differences cannot judge the gradient; keep the "
        f"inputs more than {2 * smallest:.2g} inside the domain"
    )


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
    ref = np.asarray(ref)
    diff = np.abs(g - ref)
    if not diff.size:
        return Comparison(kind, name, 0.0, 0.0, 0.0, [], None, None, magnitude=None)
    allowed = np.broadcast_to(np.asarray(allowed, dtype=np.float64), diff.shape)  # a view
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / allowed)  # exact agreement even where nothing is allowed
    at = np.unravel_index(int(ratio.argmax()), diff.shape)
    mag = (
        np.broadcast_to(np.asarray(magnitude, dtype=np.float64), diff.shape)[at]
        if magnitude is not None
        else None
    )
    return Comparison(
        kind=kind,
        input=name,
        abs_error=float(diff[at]),
        scale=float(np.abs(ref).max()),
        allowed=float(allowed[at]),
        index=[int(i) for i in at],
        autodiff=float(g[at]),
        analytic=float(ref[at]),
        magnitude=None if mag is None else float(mag),
    )


class DtypeChange(AdapterContractError):
    """An output or gradient in another dtype than the one asked for (``what``, ``got``)."""

    def __init__(self, what: str, got: str, expected: str) -> None:
        super().__init__(f"{what} has dtype {got}, expected {expected}")
        self.what, self.got, self.expected = what, got, expected


def _dtype_name(value: Any) -> str | None:
    """The dtype of a framework array as a NumPy name (``torch.float64`` -> ``float64``)."""
    dt = getattr(value, "dtype", None)
    if dt is None:
        return None
    text = str(dt)
    for candidate in (text, text.rpartition(".")[2], text.replace("dtype(", "").strip("')\"")):
        try:
            return np.dtype(candidate).name
        except TypeError:
            continue
    return text


class _DtypeTracingOps:
    """An ops namespace that records the first op whose result has another dtype than asked."""

    def __init__(self, ops: Any, dtype: str, found: list[str]) -> None:
        self._ops, self._dtype, self._found = ops, dtype, found

    def __getattr__(self, name: str) -> Any:
        op = getattr(self._ops, name)
        if not callable(op):
            return op

        def traced(*args: Any, **kwargs: Any) -> Any:
            out = op(*args, **kwargs)
            got = _dtype_name(out)
            inputs_ok = all(_dtype_name(a) in (None, self._dtype) for a in args)
            if not self._found and got is not None and got != self._dtype and inputs_ok:
                self._found.append(f"ops.{name} returned {got} for {self._dtype} input")
            return out

        return traced


def locate_dtype_change(
    ident: Identity, adapter: Any, inputs: Mapping[str, np.ndarray], params: Mapping[str, Any], dtype: str
) -> str | None:
    """Which op of the identity's forward returns another dtype than its inputs (``None``: none did).

    Runs the forward once more with an ops namespace that looks at every op's result.
    """
    found: list[str] = []

    def traced(ops: Any, arrays: Mapping[str, Any]) -> Any:
        return ident.forward(_DtypeTracingOps(ops, dtype, found), arrays, params)

    try:
        adapter.forward(traced, inputs, dtype)
    except Exception:  # the localisation is a courtesy; the finding stands without it
        return None
    return found[0] if found else None


def _validate_vjp(
    result: Any, ident: Identity, ref_out: np.ndarray, inputs: Mapping[str, np.ndarray], dtype: str
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The output and the gradients of a vjp result as the arrays that were validated (each read
    once: a result whose attributes change between reads cannot slip other arrays past)."""
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
        raise DtypeChange("forward output", str(out.dtype), dtype)
    checked: dict[str, np.ndarray] = {}
    for name in ident.wrt:
        g = grads[name] if name in grads else None  # noqa: SIM401 (any mapping, .get or not)
        if g is None:
            raise AdapterContractError(f"no gradient returned for input {name!r}")
        g = checked[name] = np.asarray(g)
        if g.shape != inputs[name].shape:
            raise AdapterContractError(
                f"gradient for {name!r} has shape {list(g.shape)}, expected {list(inputs[name].shape)}"
            )
        if g.dtype != np.dtype(dtype):
            raise DtypeChange(f"gradient for {name!r}", str(g.dtype), dtype)
        if not np.isfinite(g).all():
            bad = np.argwhere(~np.isfinite(g))[0].tolist()
            raise AdapterContractError(f"gradient for {name!r} is not finite at {bad}: {g[tuple(bad)]}")
    if not np.isfinite(out).all():
        raise AdapterContractError("forward output is not finite")
    return out, checked


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
    # Per direction v (the rows of V, all inputs' elements side by side): <g, v>, sum |g_i v_i|,
    # sum |v_i| slack_i and <r, v>, as matrix-vector products over the directions.
    names = list(active[0][1])
    V = np.stack([_flat([d[n] for n in names]) for _, d, _ in active])
    absV = np.abs(V)
    g_flat = _flat([g64[n] for n in names])
    projections = V @ g_flat
    mags = absV @ np.abs(g_flat)
    if any(n in slack for n in names):
        extras = absV @ _flat([np.broadcast_to(slack.get(n, 0.0), g64[n].shape) for n in names])
    else:
        extras = np.zeros(len(active))
    analytics = (
        V @ _flat([np.asarray(ref_grads[n], dtype=np.float64) for n in names])
        if ref_grads is not None
        else None
    )
    # per point: s(t) = sum u_i f_i(x + t v) and sum |u_i f_i(x + t v)|, the scale of its rounding
    terms = [u64 * np.asarray(out, dtype=np.float64) for out in outs]
    sums = [float(np.sum(t)) for t in terms]
    scales = [float(np.sum(np.abs(t))) for t in terms]
    rows: list[dict[str, Any]] = []
    for j, (k, d, h) in enumerate(active):
        mag = float(mags[j])
        # the rounding of s(+-h) is relative to what was evaluated there: x^2 at x ~ 1e-20 is
        # 1e-40 at x but h^2 ~ 4e-11 at x +- h (output_scale alone failed a correct backward)
        evaluated = max(scales[2 * j], scales[2 * j + 1], output_scale)
        rounding = 16 * eps_fd * evaluated / h
        extra = float(extras[j]) + rounding
        plus, minus = sums[2 * j], sums[2 * j + 1]
        value = (plus - minus) / (2 * h)
        rows.append(
            {
                "k": k,
                "d": d,
                "h": h,
                "p": float(projections[j]),
                "mag": mag,
                "extra": extra,
                "room": float(extras[j]),
                "rounding": rounding,
                "evaluated": evaluated,
                "value": value,
                "near": (plus, minus),
            }
        )
    blind = [r for r in rows if not math.isfinite(r["value"])]
    if blind:  # a domain's edge within a step (log at x = 1e-6, h = 6e-6): smaller steps
        yield from _domain_safe_steps(fn, inputs, blind, u64, output_scale, fd_dtype)
    close = [r for r in rows if abs(r["p"] - r["value"]) > tol.fd_allowed(r["mag"]) + r["extra"]]
    if close:  # Richardson: D(2h) as well, D_R = (4 D(h) - D(2h)) / 3, error ~ |D(h) - D(2h)|
        pending = [r for r in close if "far" not in r]
        far = yield ForwardCall(
            fn,
            [fd.perturbed(inputs, r["d"], t, fd_dtype) for r in pending for t in (2 * r["h"], -2 * r["h"])],
            fd_dtype,
        )
        for j, r in enumerate(pending):
            r["far"] = (s(far[2 * j]), s(far[2 * j + 1]))
            d2 = (r["far"][0] - r["far"][1]) / (4 * r["h"])
            r["value"], r["error"] = (4 * r["value"] - d2) / 3, abs(r["value"] - d2)
        blind = [r for r in pending if not math.isfinite(r["value"])]  # the edge between h and 2h
        if blind:
            yield from _domain_safe_steps(fn, inputs, blind, u64, output_scale, fd_dtype)
        close = [r for r in close if math.isfinite(r["value"])]
        yield from _per_element_rescue(fn, inputs, close, u64, g64, ref_grads, slack, tol, fd_dtype)
        yield from _refine_steps(fn, inputs, close, s, tol, fd_dtype, g64)
        if ident.family == "user" and ident.smooth_pattern is None:
            yield from _judge_at_kinks(fn, inputs, close, rows, s, tol, fd_dtype)
    worst: Comparison | None = None
    for j, r in enumerate(rows):
        k, d, p, mag, value = r["k"], r["d"], r["p"], r["mag"], r["value"]
        allowed = (
            tol.fd_allowed(mag, r["error"]) + r["extra"] if "error" in r else tol.fd_allowed(mag) + r["extra"]
        )
        basis = fd.is_basis(r.get("named", d))
        name, index = (
            ("projection", [k])
            if basis is None
            else (basis[0], list(np.unravel_index(basis[1], grads[basis[0]].shape)))
        )
        analytic = r.get("analytic", None if analytics is None else float(analytics[j]))
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
            unresolved=r.get("unresolved"),
        )
        if worst is None or comp.ratio > worst.ratio:
            worst = comp
    if worst is not None:
        outcome.comparisons.append(worst)


def _richardson_points(
    fn: Any,
    inputs: Mapping[str, np.ndarray],
    rows: Sequence[Mapping[str, Any]],
    steps: Sequence[float],
    fd_dtype: str,
) -> ForwardCall:
    """The forward at ``x +- a v`` and ``x +- 2a v`` for each direction ``v`` and its step ``a``,
    in that order, as one call: the points of ``D(a)`` and ``D(2a)`` for Richardson's estimate."""
    return ForwardCall(
        fn,
        [
            fd.perturbed(inputs, r["d"], t, fd_dtype)
            for r, a in zip(rows, steps, strict=True)
            for t in (a, -a, 2 * a, -2 * a)
        ],
        fd_dtype,
    )


#: How many times a direction whose finite difference is not finite has its step cut (by 8 each
#: time, down to ``h / 8^6 ~ 2e-11`` in float64) looking for a step inside the function's domain
#: (:func:`_domain_safe_steps`).
DOMAIN_CUTS = 6


def _domain_safe_steps(
    fn: Any,
    inputs: Mapping[str, np.ndarray],
    rows: Sequence[dict[str, Any]],
    u64: np.ndarray,
    output_scale: float,
    fd_dtype: str,
) -> Generator[ForwardCall, Any, None]:
    """Directions whose ``D(h)`` or ``D(2h)`` is not finite, measured at steps 8, 64, ... times smaller.

    An input closer to the edge of the function's domain than ``2h`` (``log`` at ``x = 1e-6``
    with ``h = 6e-6``; ``sqrt`` of a variance near 0) puts ``x - h v`` outside it: the function
    gives nan or inf there and the finite difference judges nothing.  Each such direction tries
    ``a = h/8, h/64, ...`` (up to :data:`DOMAIN_CUTS` times; four forwards per direction, one call
    for all of them) until ``s(+-a)`` and ``s(+-2a)`` are all finite, and takes that step's
    numbers with Richardson's estimate ``D_R = (4 D(a) - D(2a)) / 3``, its error ``|D(a) - D(2a)|``
    and the rounding allowance ``16 eps sum |u f| / a`` (which grows as the step shrinks).  A
    direction with no finite step is left as it was: an input-domain finding, as before.
    """
    eps_fd = fd.machine_epsilon(fd_dtype)
    pending = list(rows)
    for _ in range(DOMAIN_CUTS):
        if not pending:
            return
        steps = [r.get("domain_tried", r["h"]) / 8 for r in pending]
        outs = yield _richardson_points(fn, inputs, pending, steps, fd_dtype)
        left = []
        for j, (r, a) in enumerate(zip(pending, steps, strict=True)):
            terms = [u64 * np.asarray(outs[4 * j + i], dtype=np.float64) for i in range(4)]
            plus, minus, plus2, minus2 = (float(np.sum(t)) for t in terms)
            r["domain_tried"] = a
            if not all(math.isfinite(v) for v in (plus, minus, plus2, minus2)):
                left.append(r)
                continue
            evaluated = max([output_scale] + [float(np.sum(np.abs(t))) for t in terms])
            rounding = 16 * eps_fd * evaluated / a
            d1, d2 = (plus - minus) / (2 * a), (plus2 - minus2) / (4 * a)
            r.update(
                h=a,
                value=(4 * d1 - d2) / 3,
                error=abs(d1 - d2),
                rounding=rounding,
                extra=r["room"] + rounding,
                evaluated=evaluated,
                near=(plus, minus),
                far=(plus2, minus2),
            )
        pending = left


def _fails(r: Mapping[str, Any], tol: Tolerance, margin: float = 1.0) -> bool:
    """Whether direction ``r`` disagrees beyond ``margin`` times its allowance (with its error
    estimate, if any)."""
    return abs(r["p"] - r["value"]) > margin * (tol.fd_allowed(r["mag"], r.get("error", 0.0)) + r["extra"])


#: How far past its allowance the per-element measurement must miss to fail a direction that
#: passed along ``v`` on Richardson's wide error estimate (:func:`_per_element_rescue`): a kink
#: that only the small elements reach misses by about its allowance; a wrong gradient by far more.
FINER_MARGIN = 4.0


#: The per-element second opinion runs only where an element the direction moves takes a step
#: this many times smaller than the common step ``h`` (:func:`_per_element_rescue`).
SPREAD = 4.0


def _spread(inputs: Mapping[str, np.ndarray], d: Mapping[str, np.ndarray]) -> float:
    """``max(1, max |x|) / max(1, min |x_i|)`` over the elements ``x_i`` that ``d`` moves."""
    top = max([1.0] + [float(np.max(np.abs(x))) for x in inputs.values() if x.size])
    moved = [np.abs(inputs[n])[np.asarray(v) != 0] for n, v in d.items()]
    low = min((float(np.min(m)) for m in moved if m.size), default=top)
    return top / max(1.0, low)


def element_scaled(inputs: Mapping[str, np.ndarray], d: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``v (.) w`` with ``w_i = max(1, |x_i|) / max(1, max_j |x_j|)``: along it the step ``h`` moves
    each element by ``eps^(1/3) max(1, |x_i|) v_i``, its own central-difference step."""
    top = max([1.0] + [float(np.max(np.abs(x))) for x in inputs.values() if x.size])
    return {n: v * (np.maximum(1.0, np.abs(inputs[n])) / top) for n, v in d.items()}


def _resolves(
    trial: Mapping[str, Any], r: Mapping[str, Any], w: Mapping[str, np.ndarray], tol: Tolerance
) -> bool:
    """Whether the measurement along ``v (.) w`` (``trial``) could have seen direction ``r``'s miss
    along ``v``: that miss, carried along ``v (.) w`` (times ``rho = sum |g_i v_i w_i| / sum |g_i v_i|``,
    or ``sum |v_i w_i| / sum |v_i|`` where ``g`` vanishes on either), must exceed the trial's fast
    bound ``fd_rtol sum |g_i v_i w_i| + rounding``.  For a basis direction ``v = e_i`` the trial is
    the step ``h w_i`` along ``e_i`` and ``rho = w_i`` exactly; where outputs of 1e8 make the
    rounding of ``s`` at that step larger than ``w_i |miss|``, a pass there says nothing.  The
    bound is the measurement's own noise: the room for the gradient's rounding (``slack``) is
    left out (beside 7e13 it is set by that element, and it would hide what the step resolves)."""
    if r["mag"] > 0 and trial["mag"] > 0:
        rho = trial["mag"] / r["mag"]
    else:
        d = r.get("named", r["d"])
        moved = sum(float(np.sum(np.abs(d[n]))) for n in d)
        rho = sum(float(np.sum(np.abs(w[n]))) for n in w) / moved if moved > 0 else 0.0
    return bool(tol.fd_rtol * trial["mag"] + trial["rounding"] < rho * abs(r["p"] - r["value"]))


def held_miss(miss: float, allowed: float, error: float, value: float) -> float:
    """The miss a failing direction holds against a noisier measurement's pass
    (:func:`finer_step_taken`'s ``held``, :func:`_resolves`): ``miss`` where it is clear, more
    than :data:`FINER_MARGIN` times ``allowed`` with a converged error estimate (``error <= |value|
    / 10``), else inf.  A narrow failure (tanh at 13 beside 2.6e16, stepped by 1.5e11 far past its
    curvature, missing by one allowance made of Richardson's estimate) is overturned by any pass,
    as before; and a step far past the function's scale (tanh at 13 beside 7e16, stepped by 4e11)
    gives ``D(h) ~ 1/h``, an estimate half its value and a "miss" of four allowances that measures
    nothing."""
    return miss if miss > FINER_MARGIN * allowed and error <= 0.1 * abs(value) else math.inf


def _clear_miss(r: Mapping[str, Any], tol: Tolerance) -> float:
    """:func:`held_miss` of direction ``r`` (its miss, allowance, error estimate and value)."""
    error = r.get("error", 0.0)
    allowed = tol.fd_allowed(r["mag"], error) + r["extra"]
    return held_miss(abs(r["p"] - r["value"]), allowed, error, r["value"])


def _per_element_rescue(
    fn: Any,
    inputs: Mapping[str, np.ndarray],
    rows: Sequence[dict[str, Any]],
    u64: np.ndarray,
    grads: Mapping[str, np.ndarray],
    ref_grads: Mapping[str, np.ndarray] | None,
    slack: Mapping[str, np.ndarray],
    tol: Tolerance,
    fd_dtype: str,
) -> Generator[ForwardCall, Any, None]:
    """Directions that needed Richardson, measured again with each element's own step.

    The step ``h = eps^(1/3) max(1, max |x|)`` is one for all elements, so where an input's
    elements differ in magnitude by orders (a user's strategy drew 0 beside 5e5) the small ones
    are stepped far past their curvature: ``D(h)`` is truncation error, and Richardson's estimate
    of it is either too short (failing a correct backward) or so wide that it passes a wrong one
    (sin at 1e6 passed a backward 1.5 times too large).  A direction ``v`` that missed the fast
    bound and moves an element :data:`SPREAD` or more times smaller than the largest
    (:func:`_spread`) is measured once more along :func:`element_scaled` ``v (.) w`` (``D(h)`` and
    ``D(2h)``: four forwards, one call for all such directions), which steps every element at its
    own scale, and compared with ``<g, v (.) w>`` under the same allowance (``fd_rtol sum |g_i v_i
    w_i|``, the error estimate, the rounding of ``s`` at ``h``).  Where the two verdicts differ
    the finer measurement decides, and its numbers are the direction's (a pass only where it could
    have seen the miss along ``v``, :func:`_resolves`); where they agree, the
    numbers along ``v`` stand, so a failure reads as before.  A correct gradient rarely gets here;
    a wrong one costs one more call per example, and its error shows along ``v (.) w`` as along
    ``v``.
    """
    # only where the magnitudes differ: some element the direction moves takes a step at least
    # SPREAD times smaller than h (else the second measurement would only be the same one again)
    pending = [r for r in rows if "error" in r and _spread(inputs, r["d"]) >= SPREAD]
    if not pending:
        return
    scaled = [element_scaled(inputs, r["d"]) for r in pending]
    eps_fd = fd.machine_epsilon(fd_dtype)
    outs = yield ForwardCall(
        fn,
        [
            fd.perturbed(inputs, w, t, fd_dtype)
            for r, w in zip(pending, scaled, strict=True)
            for t in (r["h"], -r["h"], 2 * r["h"], -2 * r["h"])
        ],
        fd_dtype,
    )
    for j, (r, w) in enumerate(zip(pending, scaled, strict=True)):
        terms = [u64 * np.asarray(outs[4 * j + i], dtype=np.float64) for i in range(4)]
        plus, minus, plus2, minus2 = (float(np.sum(t)) for t in terms)
        h = r["h"]
        d1, d2 = (plus - minus) / (2 * h), (plus2 - minus2) / (4 * h)
        g = {n: np.asarray(grads[n], dtype=np.float64) for n in w}
        p = float(sum(np.sum(g[n] * w[n]) for n in w))
        room = float(
            sum(np.sum(np.abs(w[n]) * np.broadcast_to(slack[n], w[n].shape)) for n in w if n in slack)
        )
        evaluated = max([r["evaluated"]] + [float(np.sum(np.abs(t))) for t in terms[:2]])
        trial = {
            "p": p,
            "mag": float(sum(np.sum(np.abs(g[n] * w[n])) for n in w)),
            "value": (4 * d1 - d2) / 3,
            "error": abs(d1 - d2),
            "extra": room + 16 * eps_fd * evaluated / h,
            "rounding": 16 * eps_fd * evaluated / h,
            "evaluated": evaluated,
        }
        if _fails(trial, tol) == _fails(r, tol):
            continue  # both measurements agree on the verdict: the one along v stands
        if not _fails(trial, tol) and math.isfinite(_clear_miss(r, tol)) and not _resolves(trial, r, w, tol):
            continue  # a pass that could not have seen v's clear miss is no evidence: v's failure stands
        if _fails(trial, tol) and not _fails(trial, tol, FINER_MARGIN):
            continue  # a narrow miss along v (.) w (a kink only small elements reach) does not
            # overturn v's pass; a wrong gradient misses by far more
        if ref_grads is not None:
            trial["analytic"] = float(
                sum(np.sum(np.asarray(ref_grads[n], dtype=np.float64) * w[n]) for n in w)
            )
        # the finer measurement's numbers become the direction's, its points too (a user's kink
        # test and the step refinement read them along v (.) w); the name stays v's
        trial.update(named=r["d"], d=w, near=(plus, minus), far=(plus2, minus2))
        r.update(trial)


#: How many times a direction's step is cut (by 8 each time: h/8, h/64, h/512) when it fails or
#: passed only on Richardson's wide error estimate (:func:`_refine_steps`).
REFINEMENTS = 3

#: How many times in all a searching direction's step may be cut (:func:`search_step`: its first
#: numbers measured nothing): ``h / 8^12 ~ 1.5e-11 h``, so sin at ``x = 1e12`` (``h = 6e6``)
#: reaches steps of ``1e-2``, its own scale.
MAX_REFINEMENTS = 12

#: A smaller step is not taken where the inputs' spacing bends it too far: where the step its
#: points actually take, ``w = (x(a) - x(-a)) / 2a``, differs from ``v`` by more than this part of
#: ``max |v|``.  :func:`input_rounding` corrects the finite difference for any bend exactly where
#: the gradient is right; a wrong one's miss is seen along ``w``, not ``v``, so ``w`` must keep
#: most of ``v`` (below the spacing of floats at ``x``, ``x + a v`` rounds to ``x`` and ``w = 0``).
RESOLUTION = 0.5


def unconverged(held_value: float, held_error: float, value: float, error: float, fast: float) -> bool:
    """Whether two steps' Richardson estimates of one derivative disagree by more than both their
    error estimates and the fast bound: ``|D_R(a) - D_R(A)| > e(A) + e(a) + fast``.

    Where ``A`` is in the asymptotic range, ``D_R(A)`` is within ``e(A) = |D(A) - D(2A)|`` of the
    derivative and ``D_R(a)`` (``a < A``) closer still, so they agree.  Where they do not, ``A``
    was not: its small error estimate was a coincidence (sin at ``x = 3.9e6`` stepped by
    ``h = 23``, far past its period: ``D(h)`` and ``D(2h)`` both near 0), and its numbers are no
    evidence for or against the gradient.
    """
    return abs(value - held_value) > held_error + error + fast


def snapped_steps(
    inputs: Mapping[str, np.ndarray], d: Mapping[str, np.ndarray], a: float, fd_dtype: str
) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """The points ``x + s, x - s, x + 2s, x - 2s`` of ``D(a)`` and ``D(2a)``, with ``s = fl(x + a v)
    - x`` the step along ``v = d`` that the inputs' floats can take, and ``s``.

    ``x + a v`` rounds to the floats near ``x``.  Stepping by the rounded ``s`` on both sides, and by
    ``2s`` for ``D(2a)``, makes both differences central differences along one direction ``s / a``
    (``x - s`` and ``x +- 2s`` are floats where ``x + s`` is, away from a power of two), so their
    even terms cancel and Richardson's extrapolation stays exact; :func:`input_rounding` accounts
    for ``s / a != v``.
    """
    x = {n: np.asarray(v, dtype=fd_dtype) for n, v in inputs.items()}
    step: dict[str, np.ndarray] = {}
    points: list[dict[str, np.ndarray]] = [dict(x) for _ in range(4)]
    with np.errstate(over="ignore", invalid="ignore"):
        for n, v in d.items():
            x64 = x[n].astype(np.float64)
            step[n] = (x64 + np.multiply(v, a, dtype=np.float64)).astype(fd_dtype).astype(np.float64) - x64
            for i, t in enumerate((1.0, -1.0, 2.0, -2.0)):
                points[i][n] = (x64 + t * step[n]).astype(fd_dtype)
    return points, step


def input_rounding(
    grads: Mapping[str, np.ndarray], d: Mapping[str, np.ndarray], step: Mapping[str, np.ndarray], a: float
) -> float:
    """``<g, v - s/a>`` for the step ``s`` the points of ``D(a)`` take (:func:`snapped_steps`)
    instead of ``a v``.

    ``D(a)`` and ``D(2a)`` measure ``<g, s/a>``, not ``<g, v>``: at ``x = 3.9e6`` the floats are
    4.7e-10 apart, so a step of ``6e-3`` is off by 1e-7 of itself, as much as the finite
    differences' tolerance.  Adding ``<g, v - s/a>`` makes them estimates of ``<g, v>`` again
    (exact where ``g`` is the derivative; a wrong ``g`` moves them by ``<g - g*, v - s/a>``, a
    small part of the miss it has along ``v``); :func:`bend` says how far the spacing bent it.
    """
    off = {n: np.asarray(v, dtype=np.float64) - step[n] / a for n, v in d.items()}
    return sum(float(np.sum(np.asarray(grads[n], dtype=np.float64) * off[n])) for n in off)


def bend(d: Mapping[str, np.ndarray], step: Mapping[str, np.ndarray], a: float) -> float:
    """``max |v - s/a| / max |v|``: how far the inputs' floats bend the step ``a v`` into ``s``
    (:func:`snapped_steps`)."""
    top = max((float(np.max(np.abs(v))) for v in d.values() if np.size(v)), default=0.0)
    if top == 0.0:
        return 0.0
    off = max(
        float(np.max(np.abs(np.asarray(v, dtype=np.float64) - step[n] / a)))
        for n, v in d.items()
        if np.size(v)
    )
    return off / top


def search_step(
    failed_first: bool,
    searching: bool,
    held: tuple[float, float],
    trial: tuple[float, float],
    fast: float,
    rounding: float,
    size: float,
    finer: bool | None,
) -> tuple[bool | None, bool]:
    """``(taken, searching)`` for a smaller step's numbers (:func:`_refine_steps`, and forward
    mode's and second order's ``_fd_check``): ``taken`` as :func:`finer_step_taken` says
    (``finer``), ``None`` to stop.  ``held`` and ``trial`` are ``(estimate - checked value, error
    estimate)`` of the held numbers and of the smaller step's; ``fast`` the smaller step's fast
    bound, ``rounding`` its rounding allowance, ``size`` the derivative's size (``sum |g v|`` or
    the smaller step's estimate, the larger).

    A direction that failed at its first step searches once the smaller step shows the held
    numbers measured nothing (:func:`unconverged`, or an error estimate grown past what rounding
    explains): it takes the smaller step's numbers whatever they say, until no digit is left
    (:data:`NO_DIGITS`).  A searching direction stops where a smaller step is not taken and its
    error estimate is down to rounding.
    """
    (held_miss_, held_error), (miss, error) = held, trial
    measured_nothing = unconverged(held_miss_, held_error, miss, error, fast) or held_error < error > rounding
    if failed_first and measured_nothing:
        return (None if error > NO_DIGITS * size else True), True
    if searching and not finer and error <= rounding:
        return None, searching
    return finer, searching


def finer_step_taken(
    failing: bool,
    miss: float,
    allowed: float,
    fast: float,
    error: float,
    best: float,
    held: float = math.inf,
) -> bool | None:
    """Whether a direction takes a smaller step's numbers (:func:`_refine_steps`, and forward mode's
    and second order's ``_fd_check``): ``True`` take them; ``False`` not, but a smaller step may
    do; ``None`` stop refining.  ``miss = |p - D_R|`` at the smaller step, ``allowed`` its
    allowance with the error estimate ``error``, ``fast`` without it; ``best`` the error estimate
    of the numbers the direction holds, ``held`` their miss; ``failing`` whether those fail.

    - no more precise (``error >= best``: a kink a step away, or rounding): not here;
    - a pass is overturned only by a miss of more than :data:`FINER_MARGIN` times the allowance (a
      narrow miss is the smaller step's rounding): stop, where rounding makes up the allowance;
      where Richardson's error estimate still does (``allowed > FINER_MARGIN * fast``: truncation,
      as for sin at 1e6 stepped by ``h/8 = 0.76``, where a backward 1.5 times too large missed by
      1.6 allowances), a narrow miss is no verdict: not here, a smaller step may decide;
    - a failure is overturned only by a pass within the fast bound, not on the error estimate,
      and only by one that could have seen it (``fast < held``): where the smaller step's rounding
      alone exceeds the miss the direction holds (outputs of 1e8 beside the element it moves), a
      pass there is no evidence, and a still smaller step would be noisier: stop.
    """
    if error >= best:
        return False
    if not failing and allowed < miss <= FINER_MARGIN * allowed:
        return False if allowed > FINER_MARGIN * fast else None
    if failing and miss <= fast and fast >= held:
        return None
    return not (failing and fast < miss <= allowed)


def _inconclusive(r: Mapping[str, Any], tol: Tolerance) -> bool:
    """Whether direction ``r`` passed only because Richardson's error estimate widened its
    allowance: it misses the fast bound ``fd_rtol sum |g v| + extra`` but not the widened one."""
    return (
        "error" in r
        and not _fails(r, tol)
        and abs(r["p"] - r["value"]) > tol.fd_allowed(r["mag"]) + r["extra"]
    )


#: A failing direction's search (:func:`_refine_steps`) ends where the smaller step's error
#: estimate exceeds this many times the directional derivative's size (``sum |g v|`` or the
#: estimate's own): no digit of it is left, and a still smaller step is noisier.
NO_DIGITS = 8.0


def _refine_steps(
    fn: Any,
    inputs: Mapping[str, np.ndarray],
    rows: Sequence[dict[str, Any]],
    s: Callable[[np.ndarray], float],
    tol: Tolerance,
    fd_dtype: str,
    grads: Mapping[str, np.ndarray],
) -> Generator[ForwardCall, Any, None]:
    """Directions that fail, or pass only on a wide error estimate, measured again at a step 8 times smaller.

    ``h = eps^(1/3) max(1, max |x|)`` assumes the function varies on the scale of ``|x|``.  One
    that does not (sin at ``x = 1e6`` has its curvature at scale 1, not 1e6) is stepped far past
    its curvature; Richardson's error estimate ``|D(h) - D(2h)|`` then grows so wide that a wrong
    gradient passes under it (:func:`_inconclusive`), or falls short and fails a correct one.  An
    input a step or less from a kink (relu at ``x = 1e-6``) is stepped across it.  Such a
    direction is measured again with ``D(h/8)`` and ``D(h/4)`` (four forwards, one call for all of
    them), the rounding allowance ``16 eps |s| / h`` growing 8 times, up to :data:`REFINEMENTS`
    times; a step's numbers are taken only where its error estimate is the smallest yet.  A
    failing direction takes the smaller step's numbers when they fail too, or pass within the fast
    bound (the step, not the gradient, was wrong; a pass only on the error estimate is not enough
    to overturn a failure); a passing one takes them when they pass,
    or when they fail by more than :data:`FINER_MARGIN` times their allowance (a narrow miss at
    the smaller step is its rounding).  The points of the last step taken are the direction's, so
    a user's kink test reads them at that step, where a
    smooth function's curvature no longer passes for a kink.

    A failing direction may have been stepped so far past the function's scale that its numbers
    measure nothing: sin at ``x = 3.9e6`` stepped by ``h = 23`` has ``D(h)`` and ``D(2h)`` near 0
    and, by coincidence, close to each other; at ``x = 4.4e13`` (``h = 2.7e8``) ``D(h) ~ 1e-9``
    with an error estimate a tenth of it, a "clear" miss of a correct ``cos x``.  Two signs tell
    it: the smaller step's estimate disagrees with the held one beyond both error estimates
    (:func:`unconverged`), or its error estimate is larger than the held one and larger than
    rounding explains (truncation error falls with the step; only rounding grows).  Then the
    direction *searches*: it takes the smaller step's numbers whatever they say and goes on down,
    to ``h / 8^``:data:`MAX_REFINEMENTS`, until it passes within the fast bound, or its error
    estimate stops falling because of rounding, or no digit is left (:data:`NO_DIGITS`); steps
    that agree do not end it (near multiples of pi, ``sin(8a) ~ 8 sin(a)``, they agree on a value
    near 0).  A search that ends on a pass only within its error
    estimate fails on the fast bound, showing its finest numbers, and says that finite differences
    could not decide (:attr:`Comparison.unresolved`): a failure is overturned only by a pass within
    the fast bound, as before.  Every smaller step is read with the step its points
    actually take (:func:`input_rounding`): at ``x = 1e9`` the floats are 1.2e-7 apart and a step
    of ``0.02`` is bent by 6e-6 of itself; a step bent by more than :data:`RESOLUTION` is not
    taken.
    """
    eps_fd = fd.machine_epsilon(fd_dtype)
    failed = {id(r) for r in rows if _fails(r, tol)}
    for round_ in range(MAX_REFINEMENTS):
        extended = round_ >= REFINEMENTS
        pending = [
            r
            for r in rows
            if (_inconclusive(r, tol) or _fails(r, tol))
            and not r.get("settled")
            and (not extended or r.get("searching"))
        ]
        if not pending:
            break
        measured = []
        for r in pending:
            a = r["tried"] = r.get("tried", r["h"]) / 8
            points, step = snapped_steps(inputs, r["d"], a, fd_dtype)
            if bend(r["d"], step, a) > RESOLUTION:  # x + a v rounds to the inputs' spacing
                r["settled"] = True  # no smaller step helps
            else:
                measured.append((r, a, points, input_rounding(grads, r["d"], step, a)))
        if not measured:
            continue
        outs = yield ForwardCall(fn, [pt for _, _, points, _ in measured for pt in points], fd_dtype)
        for j, (r, a, _, c) in enumerate(measured):
            plus, minus, plus2, minus2 = (s(o) for o in outs[4 * j : 4 * j + 4])
            d1 = (plus - minus) / (2 * a) + c
            d2 = (plus2 - minus2) / (4 * a) + c
            evaluated = r["evaluated"]
            rounding = 16 * eps_fd * evaluated / a
            trial = {
                "p": r["p"],
                "mag": r["mag"],
                "value": (4 * d1 - d2) / 3,
                "error": abs(d1 - d2),
                "extra": r["extra"] - r["rounding"] + rounding,
            }
            miss = abs(trial["p"] - trial["value"])
            fast = tol.fd_allowed(trial["mag"]) + trial["extra"]
            failing = _fails(r, tol)
            taken, searching = search_step(
                id(r) in failed,
                bool(r.get("searching")),
                (r["value"] - r["p"], r.get("error", 0.0)),
                (trial["value"] - r["p"], trial["error"]),
                fast,
                rounding,
                max(trial["mag"], abs(trial["value"])),
                finer_step_taken(
                    failing,
                    miss,
                    tol.fd_allowed(trial["mag"], trial["error"]) + trial["extra"],
                    fast,
                    trial["error"],
                    r.get("error", math.inf),
                    _clear_miss(r, tol),
                ),
            )
            r["searching"] = searching
            if taken is None:
                r["settled"] = True
            if not taken:
                continue
            # the smaller step's points become the direction's (a user's kink test reads them)
            r.update(trial, rounding=rounding, h=a, near=(plus, minus), far=(plus2, minus2))
    for r in rows:
        if r.get("searching") and _inconclusive(r, tol):
            # no step resolved it: a failure is overturned only within the fast bound, so the
            # direction fails on it, showing the finest numbers (not the first step's, which
            # measured nothing), and the message says that finite differences could not decide
            widened = tol.fd_allowed(r["mag"], r["error"]) + r["extra"]
            r.update(unresolved=(r["h"], r["error"], widened), error=0.0)


def _judge_at_kinks(
    fn: Any,
    inputs: Mapping[str, np.ndarray],
    close: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    s: Callable[[np.ndarray], float],
    tol: Tolerance,
    fd_dtype: str,
) -> Generator[ForwardCall, Any, None]:
    """A user function's failing directions that cross a kink: judged against the one-sided slopes.

    A function with no known kinks (a user's, without a catalogue identity) can be handed an
    input exactly at one (relu at 0, a tie of a max: Hypothesis draws 0.0 first). There
    the central difference averages the two sides and no backward matches it.  Along ``v`` the
    one-sided slopes ``D+ = (s(h) - s(0)) / h`` and ``D- = (s(0) - s(-h)) / h`` bound every
    generalised (Clarke) gradient's ``<g, v>``; a kink is told from curvature by its jump
    ``D+ - D-`` staying the same at step ``2h`` (curvature doubles it).  At a kink the
    basis direction's finite-difference value becomes the interval ``[min(D+, D-), max(D+, D-)]``:
    ``<g, v>`` inside passes, outside fails by its distance to the interval; a direction that
    moves many elements at a kink is not judged (see :func:`_judge_kink`).

    Each direction's interval alone misses a gradient that is too large jointly (a max whose
    tied maxima all get ``u``: each coordinate's slope lies in ``[0, u]``); with two or more
    kinked directions their sum is judged too (one more row: the tie moves as a whole).
    """
    failing = [r for r in close if "far" in r and _fails(r, tol)]
    if not failing:
        return
    (base,) = yield ForwardCall(fn, [fd.perturbed(inputs, failing[0]["d"], 0.0, fd_dtype)], fd_dtype)
    s0 = s(base)
    kinked = [r for r in failing if _judge_kink(r, s0, tol, fd.is_basis(r.get("named", r["d"])) is not None)]
    if len(kinked) < 2:
        return
    h = min(r["h"] for r in kinked)
    d = {n: np.sum([r["d"][n] for r in kinked], axis=0) for n in kinked[0]["d"]}
    ts = (h, -h, 2 * h, -2 * h)
    outs = yield ForwardCall(fn, [fd.perturbed(inputs, d, t, fd_dtype) for t in ts], fd_dtype)
    plus, minus, plus2, minus2 = (s(o) for o in outs)
    joint = {
        "k": len(rows),
        "d": d,
        "h": h,
        "p": float(sum(r["p"] for r in kinked)),
        "mag": float(sum(r["mag"] for r in kinked)),
        "extra": float(sum(r["extra"] for r in kinked)),
        "value": (plus - minus) / (2 * h),
        "near": (plus, minus),
        "far": (plus2, minus2),
    }
    d2 = (plus2 - minus2) / (4 * h)
    joint["value"], joint["error"] = (4 * joint["value"] - d2) / 3, abs(joint["value"] - d2)
    _judge_kink(joint, s0, tol, interval=False)
    rows.append(joint)


def _judge_kink(r: dict[str, Any], s0: float, tol: Tolerance, interval: bool) -> bool:
    """Whether direction ``r`` crosses a kink.  If so, with ``interval`` (a basis direction: one
    input element moves) its value becomes the nearest point of the one-sided slopes' interval
    to ``<g, v>``; otherwise (a direction moving many elements, which may cross several kinks
    whose one-sided slopes do not bound the generalised gradient) it is not judged: its value
    becomes ``<g, v>`` (see :func:`_judge_at_kinks`)."""
    h = r["h"]
    (plus, minus), (plus2, minus2) = r["near"], r["far"]
    up, down = (plus - s0) / h, (s0 - minus) / h
    up2, down2 = (plus2 - s0) / (2 * h), (s0 - minus2) / (2 * h)
    jump, jump2 = up - down, up2 - down2
    noise = tol.fd_allowed(r["mag"]) + r["extra"]
    if abs(jump) <= 4 * noise or abs(jump2 - jump) > 0.25 * abs(jump):
        return False  # no kink: curvature or noise, the central difference stands
    low, high = (min(up, down), max(up, down)) if interval else (r["p"], r["p"])
    r["value"] = float(min(max(r["p"], low), high))
    r["error"] = abs(up - up2) + abs(down - down2)  # the one-sided slopes' own truncation
    return True


def _flat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """The arrays' elements in one float64 vector, in order (a view when there is one array)."""
    if len(arrays) == 1:
        return np.asarray(arrays[0], dtype=np.float64).reshape(-1)
    return np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays])


def oracle_sampled(example: Example, every: int) -> bool:
    """Whether the oracle's self-test samples ``example``: about one in ``every``, chosen by a
    CRC-32 of the example's values and seed (so the choice is the same on every replay)."""
    if every <= 1:
        return True
    crc = zlib.crc32(repr(example.seed).encode())
    for name in sorted(example.inputs):
        crc = zlib.crc32(np.ascontiguousarray(example.inputs[name], dtype=np.float64).tobytes(), crc)
    return crc % every == 0


#: The stable forward objects of :func:`forward_for`, per identity forward (held weakly: a user
#: check's forward closes over the user's function, its model and tensors, which must go when
#: the check's identity goes, as they did not: every checked model stayed alive for the session)
#: and params.  A forward that cannot be weakly referenced is kept in a bounded strong cache.
_FORWARDS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_STRONG_FORWARDS: dict[Any, dict[str, Any]] = {}
_STRONG_FORWARDS_SIZE = 256


def forward_for(ident: Identity, params: Mapping[str, Any]) -> Any:
    """``fn(ops, inputs) = ident.forward(ops, inputs, params)`` for an identity and its
    hyperparameters: one stable object per pair, so adapters that cache compiled code per
    function (JAX's jit) reuse it across examples.  ``fn`` refers to the identity's forward
    weakly, and is forgotten with it."""
    return forward_of(ident.forward, ident.name, params)


def forward_of(forward: Callable[..., Any], name: str, params: Mapping[str, Any]) -> Any:
    """:func:`forward_for` of a forward ``forward(ops, inputs, params)`` named ``name``."""
    key = repr(sorted(params.items()))
    try:
        ref: Callable[[], Any] = weakref.ref(forward)
        per_params = _FORWARDS.setdefault(forward, {})
    except TypeError:  # not weakly referenceable (a builtin): a bounded strong cache
        ref = lambda: forward  # noqa: E731
        per_params = _STRONG_FORWARDS.setdefault(forward, {})
        if len(_STRONG_FORWARDS) > _STRONG_FORWARDS_SIZE:
            _STRONG_FORWARDS.pop(next(iter(_STRONG_FORWARDS)))
    fn = per_params.get(key)
    if fn is None:
        frozen = dict(params)

        def fn(ops: Any, arrays: Mapping[str, Any]) -> Any:
            target = ref()
            if target is None:
                raise RuntimeError(f"the forward of identity {name!r} was called after its identity was gone")
            return target(ops, arrays, frozen)

        fn.__qualname__ = f"{name}{frozen or ''}"
        per_params[key] = fn
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
    # no copies where the dtype is already right: the oracle never writes into these, and the
    # adapter is handed copies (gradoracle.batching: every call, single or stacked)
    x_d = {k: v.astype(dtype, copy=False) for k, v in master.items()}
    x_d64 = {k: v.astype(np.float64, copy=False) for k, v in x_d.items()}  # exact: what the adapter sees
    with np.errstate(over="ignore"):  # values beyond float32's range: inf there, no warning
        x_32 = {k: v.astype(np.float32) for k, v in x_d64.items()}

    ref_out = reference_output(ident, x_d64, params, outcome)
    if ref_out is None:
        return outcome
    u = _cotangent(rng, ref_out.shape)
    u_d = u.astype(dtype, copy=False)
    u_d64 = u_d.astype(np.float64, copy=False)

    # 1. the adapter's forward and backward, in the dtype under test - twice, on the same
    # input: a vjp that does not repeat itself is a finding of its own (nondeterministic)
    results = []
    for _ in range(2 if settings.repeat_vjp else 1):
        try:
            result = yield VjpCall(fn, x_d, tuple(ident.wrt), u_d, dtype)  # the adapter gets copies
        except Exception as exc:  # any adapter failure becomes a record
            outcome.fault, outcome.crash = Fault.ADAPTER, f"vjp raised {describe_exception(exc)}"
            return outcome
        try:
            validated = _validate_vjp(result, ident, ref_out, x_d, dtype)
        except DtypeChange as exc:
            outcome.fault, outcome.contract = (
                Fault.DTYPE,
                _dtype_finding(exc, ident, adapter, x_d, params, dtype),
            )
            return outcome
        except AdapterContractError as exc:
            overflow = _overflow_text(result, ref_out, dtype) if ident.family == "user" else None
            if overflow is not None:  # a user's forward past the dtype's range: not its backward's fault
                outcome.fault, outcome.domain = Fault.DOMAIN, overflow
                return outcome
            outcome.fault, outcome.contract = Fault.ADAPTER, str(exc)
            return outcome
        except Exception as exc:  # a result object whose attributes or arrays misbehave
            outcome.fault, outcome.contract = Fault.ADAPTER, f"vjp result unusable: {describe_exception(exc)}"
            return outcome
        results.append(validated)
    (out, grads), (out2, grads2) = results[0], results[-1]
    rtol = _nondeterminism_rtol(adapter)
    for what, a, b in [("output", out, out2), *((n, grads[n], grads2[n]) for n in ident.wrt)]:
        found = _disagreement(what, a, b, rtol)
        if found is not None:
            outcome.fault, outcome.nondeterminism = Fault.NONDETERMINISTIC, found
            return outcome

    # 2. the closed form, with the tolerance model of gradoracle.tolerances: per element, the
    # magnitude of the terms the gradient is computed from, plus the oracle's own float32
    # rounding (eta).  An identity without a closed form (an ad-hoc user check) is compared
    # with finite differences only; its rounding room then comes from the autodiff gradient.
    has_reference = ident.reference_gradient is not None
    ref: dict[str, np.ndarray] | None = None
    allowed: dict[str, np.ndarray] = {}
    if has_reference:
        ref = ident.gradient(x_d64, params, u_d64)
        ref32 = _rounding_sample(ident, lambda: ident.gradient(x_32, params, u_d64.astype(np.float32)))
        mags = ident.gradient_magnitude(x_d64, params, u_d64)
        for name in ident.wrt:
            r = np.asarray(ref[name], dtype=np.float64)
            eta = _sampled_noise(ref32[name] if ref32 is not None else None, r)
            mag = np.maximum(mags[name], np.abs(r))
            allowed[name] = tol.allowed(mag, eta, exact_floor=True)
            outcome.comparisons.append(_compare_arrays("analytic", name, grads[name], r, allowed[name], mag))
    else:
        for name in ident.wrt:
            allowed[name] = largest_allowance(tol, grads[name])
    out32 = _rounding_sample(ident, lambda: ident.reference_forward(x_32, params))
    eta_f = _sampled_noise(out32, ref_out)
    out_mag = np.maximum(ident.output_magnitude(x_d64, params), np.abs(ref_out))
    outcome.comparisons.append(
        _compare_arrays(
            "forward", "output", out, ref_out, tol.allowed(out_mag, eta_f, exact_floor=True), out_mag
        )
    )
    if ref is not None and records_bits(dtype):
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
        outcome.fault, outcome.crash = Fault.ADAPTER, f"forward raised {describe_exception(exc)}"
        return outcome

    # 3a. a float32 check without a closed form (a user's framework function) that failed only
    # on its finite differences: is the float32 gradient as close to the framework's own
    # float64 one as float32 rounding lets it be, measured at inputs a few ulps away?
    if (
        not has_reference
        and ident.family == "user"
        and dtype == "float32"
        and fd_dtype == "float64"
        and {c.kind for c in outcome.failures} == {"fd"}
    ):
        yield from _float32_rounding_rejudge(
            "fd",
            _vjp_gradient_at(fn, tuple(ident.wrt), u_d64),
            fn,
            ident,
            example,
            x_d64,
            params,
            u_d64,
            grads,
            dirs,
            tol,
            outcome,
            output_scale=float(np.sum(np.abs(u_d64) * out_mag)),
            steps=steps,
        )

    # 3b. only the finite differences failed (the gradients match the closed form, the vjp's
    # output matches the reference): is the adapter's forward() the function its vjp
    # differentiates?  One more call, on this failing path only.
    if ref is not None and {c.kind for c in outcome.failures} == {"fd"}:
        try:
            (at_x,) = yield ForwardCall(fn, [fd.perturbed(x_d64, {}, 0.0, fd_dtype)], fd_dtype)
            at_x = np.asarray(at_x, dtype=np.float64)
        except Exception:  # the forward's own failures show in the finite differences already
            at_x = None
        if at_x is not None and at_x.shape == ref_out.shape:
            tol_fwd = tolerance_for(fd_dtype) if fd_dtype != dtype else tol
            c = _compare_arrays(
                "forward", "output", at_x, ref_out, tol_fwd.allowed(out_mag, eta_f, exact_floor=True), out_mag
            )
            if c.failed:
                outcome.fault = Fault.ADAPTER
                outcome.contract = (
                    "the adapter's forward() and its vjp compute different functions: at the "
                    f"example's inputs forward() (or forward_batch) gives {_fmt(c.autodiff)} at "
                    f"output element {c.index} where the vjp's output and the notes' forward give "
                    f"{_fmt(c.analytic)} ({fd_dtype}). The gradients match the notes' closed form; "
                    "the finite differences of forward() cannot confirm them. Make forward() and "
                    "forward_batch run the same computation as vjp"
                )
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
        run_one(oracle_fd, lambda call: _reference_at(ident, params, getattr(call, "points", ())))

    if ref is not None:
        settle_undecided(outcome, "analytic", ("fd", "oracle"))
    failed = {c.kind for c in outcome.failures}
    if ident.family == "user" and failed:
        # finite differences that are not finite (a step across the edge of the function's
        # domain) judged nothing: alone, they are an input-domain finding; beside a failing
        # closed-form comparison, the user's reference is not blamed for them
        blind = [c for c in outcome.failures if c.kind in ("fd", "oracle") and _not_finite(c.fd)]
        if len(blind) == len(outcome.failures):
            outcome.fault, outcome.domain = Fault.DOMAIN, _fd_domain_text(x_d64, fd_dtype)
            return outcome
        if all(c in blind for c in outcome.failures if c.kind == "oracle"):
            failed.discard("oracle")
    if "oracle" in failed:
        outcome.fault = Fault.ORACLE
    elif "forward" in failed:
        outcome.fault = Fault.FORWARD
    elif failed & {"analytic", "fd"}:
        outcome.fault = Fault.BACKWARD
    return outcome


#: How many perturbed inputs measure the float32 rounding of a gradient without a closed form
#: (:func:`_float32_rounding_rejudge`), and by how many float32 ulps each element moves at most.
ROUNDING_PROBES = 6
ROUNDING_ULPS = 4


def largest_allowance(tol: Tolerance, g: np.ndarray, noise: float = 0.0) -> np.ndarray:
    """The room of a gradient without a closed form: ``tol.allowed`` with every element's
    magnitude ``max_j |g_j|`` (no term magnitudes are known) and rounding ``eta = noise``."""
    g64 = np.asarray(g, dtype=np.float64)
    return tol.allowed(np.full(g64.shape, float(np.max(np.abs(g64))) if g64.size else 0.0), noise)


def _float32_rounding_rejudge(
    kind: str,
    gradient_at: Callable[[Mapping[str, np.ndarray], str], Generator[Request, Any, Mapping[str, np.ndarray]]],
    fn: Any,
    ident: Identity,
    example: Example,
    x_d64: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
    u_d64: np.ndarray,
    grads: Mapping[str, np.ndarray],
    dirs: Sequence[Mapping[str, np.ndarray]],
    tol: Tolerance,
    outcome: ExampleOutcome,
    output_scale: float,
    steps: Sequence[float | None] | None = None,
) -> Generator[Request, Any, None]:
    """Finite differences judged again with the float32 gradient's measured rounding as ``eta``.

    A check without a closed form allows a float32 gradient ``128 eps_32 max |g|``; a correct
    gradient that is a small difference of larger terms (``layer_norm``'s, ``normalize``'s) is
    off by ``eps_32`` times those terms, which nothing in the black box shows.  This measures it,
    as discrete stochastic arithmetic does: the float32 error of the gradient ``u^T J`` (``grads``,
    compared as ``kind``), ``e(x) = g_32(x) - g_64(x)`` with ``g_64`` the same function's float64
    gradient at the same float32 point (``gradient_at(point, dtype)`` asks the adapter for it), at
    the example's inputs and at :data:`ROUNDING_PROBES` points moved by up to
    :data:`ROUNDING_ULPS` float32 ulps per element.  Rounding error changes from point to point;
    a fault of the float32 code (a wrong constant, a missing term) does not, and neither does the
    exact gradient, which the difference removes.  ``eta = max_k ||e(x_k) - e(x)||_inf`` then
    enters the allowance :func:`largest_allowance` as the catalogue's measured rounding does
    (:meth:`~gradoracle.tolerances.Tolerance.allowed`), and the finite differences are compared
    again.  Only where the float64 gradient itself passes the same finite differences: its
    disagreement with them is the backward's, whatever the float32 rounding.  Runs only on a
    failing example; anything that does not run leaves the failure as it was.
    """
    rng = np.random.default_rng([int(example.seed) & 0xFFFFFFFF, 0x20C0])
    wrt = tuple(ident.wrt)
    x32 = {k: np.asarray(v, dtype=np.float32) for k, v in x_d64.items()}

    def flat(g: Mapping[str, np.ndarray]) -> np.ndarray:
        return _flat([np.asarray(g[n], dtype=np.float64) for n in wrt])

    try:
        g64 = {
            n: np.asarray(a, dtype=np.float64) for n, a in (yield from gradient_at(x_d64, "float64")).items()
        }
        if any(g64[n].shape != np.shape(grads[n]) or not np.all(np.isfinite(g64[n])) for n in wrt):
            return
        e0 = flat(grads) - flat(g64)
        eta = 0.0
        for _ in range(ROUNDING_PROBES):
            moved = dict(x32)
            with np.errstate(all="ignore"):
                for n in wrt:
                    ulps = rng.integers(-ROUNDING_ULPS, ROUNDING_ULPS + 1, size=x32[n].shape)
                    moved[n] = (x32[n].astype(np.float64) * (1.0 + ulps * EPS32)).astype(np.float32)
            if not all(np.all(np.isfinite(moved[n])) for n in wrt):
                return
            low = flat((yield from gradient_at(moved, "float32")))
            high = flat(
                (yield from gradient_at({k: v.astype(np.float64) for k, v in moved.items()}, "float64"))
            )
            e = low - high
            if e.shape != e0.shape or not np.all(np.isfinite(e)):
                return
            eta = max(eta, float(np.max(np.abs(e - e0))) if e.size else 0.0)
    except Exception:  # the measurement is a second opinion: the failure stands without it
        return
    if eta <= 0.0:
        return
    # the float64 gradient against the same finite differences, at its own tolerance
    tol64 = tolerance_for("float64")
    scratch = ExampleOutcome(example)
    slack64 = {n: largest_allowance(tol64, g64[n]) for n in wrt}
    widened = {n: largest_allowance(tol, grads[n], eta) for n in wrt}
    again = ExampleOutcome(example)
    try:
        yield from _fd_comparisons(
            kind,
            fn,
            ident,
            x_d64,
            params,
            u_d64,
            g64,
            dirs,
            "float64",
            tol64,
            slack64,
            scratch,
            output_scale=output_scale,
            steps=steps,
        )
        if scratch.failures:
            return
        yield from _fd_comparisons(
            kind,
            fn,
            ident,
            x_d64,
            params,
            u_d64,
            grads,
            dirs,
            "float64",
            tol,
            widened,
            again,
            output_scale=output_scale,
            steps=steps,
        )
    except Exception:  # a forward that fails now, where it ran before: the failure stands
        return
    outcome.comparisons[:] = [c for c in outcome.comparisons if c.kind != kind] + again.comparisons


def _vjp_gradient_at(
    fn: Any, wrt: tuple[str, ...], u: np.ndarray
) -> Callable[[Mapping[str, np.ndarray], str], Generator[Request, Any, Mapping[str, np.ndarray]]]:
    """``gradient_at(point, dtype)`` for :func:`_float32_rounding_rejudge`: ``u^T J`` from the
    adapter's vjp, in ``dtype``."""

    def at(point: Mapping[str, np.ndarray], dtype: str) -> Generator[Request, Any, Mapping[str, np.ndarray]]:
        result = yield VjpCall(
            fn, {k: np.asarray(v, dtype=dtype) for k, v in point.items()}, wrt, u.astype(dtype), dtype
        )
        return {n: result.grads[n] for n in wrt}

    return at


def settle_undecided(outcome: ExampleOutcome, analytic: str, fd_kinds: Sequence[str]) -> None:
    """Failing finite-difference comparisons that no step resolved (:attr:`Comparison.unresolved`),
    where a closed form judged the gradient too (comparisons of kind ``analytic``).

    Finite differences are the second opinion there.  Where the gradient matches the closed form,
    undecided finite differences are no finding: they pass on their error estimate (sin at
    ``x = 3e15``, where floats are 0.5 apart, is beyond any step).  Where it does not, they do not
    blame the closed form either: the oracle's own comparison is dropped from the failures, and the
    gradient's disagreement with the closed form stands (the notes' closed forms are proven by
    the selftest).
    """
    undecided = [(c, c.unresolved) for c in outcome.failures if c.kind in fd_kinds and c.unresolved]
    if not undecided:
        return
    judged = [c for c in outcome.comparisons if c.kind == analytic]
    if not judged or any(c.failed for c in judged):
        undecided = [(c, u) for c, u in undecided if c.kind.endswith("oracle")]
    for c, (_, _, widened) in undecided:
        c.allowed = widened


def _reference_at(ident: Identity, params: Mapping[str, Any], points: Sequence[Any]) -> list[np.ndarray]:
    """The reference forward at the finite differences' points; a point past its range (inf or
    nan there: a replayed example near float64's largest values) is judged by them, not warned
    about (a suite run with ``-W error`` would make the warning an error of the oracle's)."""
    with np.errstate(all="ignore"):
        return [np.asarray(ident.reference_forward(p, params)) for p in points]


def _nondeterminism_rtol(adapter: Any) -> float:
    """How far two vjp calls may differ, relative to the largest magnitude: 0.0 (bit-identical)
    unless the adapter documents nondeterminism with ``nondeterminism_rtol`` (a finite number
    >= 0; anything else, ``inf`` and NaN included, counts as 0.0)."""
    try:
        rtol = float(getattr(adapter, "nondeterminism_rtol", 0.0) or 0.0)
    except Exception:  # a property that raises, a string that is no number
        return 0.0
    return rtol if math.isfinite(rtol) and rtol > 0.0 else 0.0


def _adapter_words(adapter: Any) -> Words | None:
    """The adapter's optional ``words`` (how messages name it), ``None`` unless it is a :class:`Words`."""
    try:
        words = getattr(adapter, "words", None)
    except Exception:  # an optional attribute: one that raises is not there
        return None
    return words if isinstance(words, Words) else None


def _adapter_repro_env(adapter: Any) -> tuple[str, ...]:
    """The adapter's optional ``repro_env`` (variable names a repro needs) as strings; ``()``
    when it is missing, raises or is not a string or a collection of strings."""
    try:
        env = getattr(adapter, "repro_env", ())
        if isinstance(env, str):
            return (env,)
        names = tuple(env)
    except Exception:
        return ()
    return names if all(isinstance(n, str) for n in names) else ()


def _disagreement(what: str, a: np.ndarray, b: np.ndarray, rtol: float) -> Nondeterminism | None:
    """The worst element where two results of the same call differ beyond ``rtol`` (None: agree)."""
    if a.shape != b.shape:
        return Nondeterminism(what, [], float("nan"), float("nan"), 0.0)
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if rtol == 0.0:
        same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
        if np.all(same):
            return None
        diff = np.where(same, 0.0, np.abs(a64 - b64))
        diff = np.where(np.isnan(diff), np.inf, diff)
        allowed = 0.0
    else:
        scale = float(np.max(np.abs(a64))) if a64.size else 0.0
        allowed = rtol * scale
        diff = np.abs(a64 - b64)
        if not np.any(diff > allowed) and not np.any(np.isnan(diff)):
            return None
    flat = int(np.argmax(np.where(np.isnan(diff), np.inf, diff)))
    index = [int(i) for i in np.unravel_index(flat, a64.shape)] if a64.ndim else []
    return Nondeterminism(what, index, float(a64.reshape(-1)[flat]), float(b64.reshape(-1)[flat]), allowed)


def _dtype_finding(
    exc: DtypeChange,
    ident: Identity,
    adapter: Any,
    inputs: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
    dtype: str,
) -> str:
    """The framework's dtype promotion as a finding: what came back in which dtype, and which op."""
    words = _adapter_words(adapter)
    if words is not None and words.user and not ident.ops:
        culprit = words.subject if exc.what == "forward output" else words.who
        got = str(exc.got) if exc.what == "forward output" else ""
        if "complex" in got:  # torch.fft.fft, jnp.fft: a cast to float drops the imaginary part
            advice = (
                "A complex output has no real gradient to compare: return real values "
                "(torch.view_as_real(y), jnp.stack([y.real, y.imag]) or abs(y))"
            )
        elif "int" in got or "bool" in got:  # argmax, comparisons: piecewise constant, no gradient
            advice = (
                "An integer or boolean output (indices, a mask) is piecewise constant and has no "
                "gradient: return the floating values it selects (torch.max(x, 1).values, not .indices)"
            )
        else:
            advice = (
                "Return it in the inputs' dtype (NumPy and JAX: .astype(x.dtype), torch: .to(x.dtype)); "
                "a narrower float loses precision"
            )
        return (
            f"the {exc.what} has dtype {exc.got}, asked for {dtype}: {culprit} returned it from {dtype} "
            f"inputs. {advice}"
        )
    located = locate_dtype_change(ident, adapter, inputs, params, dtype)
    ops = ", ".join(sorted(ident.ops))
    if located is not None:
        where = f"in the forward, {located}"
    elif exc.what == "forward output":
        where = f"no op of the forward ({ops}) changed the dtype: the adapter's conversion did"
    else:
        where = (
            f"every op of the forward ({ops}) kept {dtype}: the backward of one of them (or the "
            "adapter's conversion) changed it"
        )
    return (
        f"the {exc.what} has dtype {exc.got}, asked for {dtype} ({where}). A dtype the framework "
        f"chose, not a wrong value: cast back in the adapter only if the framework's users get {dtype} "
        "too, else record it as a known deviation"
    )


# ------------------------------------------------------------------ diagnostics


def _adapter_spec(adapter: Any, spec: str | None) -> str:
    if spec:
        return spec
    cls = type(adapter)
    return f"{cls.__module__}:{cls.__qualname__}"


#: The variable naming the folder of repro input files (it wins over ``report --out``).
REPRO_DIR_ENV = "GRADORACLE_REPRO_DIR"
#: Their folder without it or ``--out``: under the current directory, as Hypothesis keeps ``.hypothesis/``.
DEFAULT_REPRO_DIR = os.path.join(".gradoracle", "repro")
#: Characters of a failing check's message that are not its repro snippet, at most: the
#: diagnostic (identity, worst element and its three values, tolerance, "also" lines, example
#: shapes: 1,194 and 1,257 measured on large linear and conv2d layer failures), the notes put
#: before it (top-up, precision finding, nondeterminism: under 500), the snippet's indentation,
#: and the tail of what the adapter printed that a worker appends
#: (``isolation.OUTPUT_TAIL_CHARS``, 2,000, and its heading).
REPRO_MESSAGE_ROOM = 4096
#: The longest repro snippet whose inputs are written out inline (``np.array([...])``): a longer
#: one loads them from an ``.npz`` file, so the whole failure message stays within
#: ``MESSAGE_LIMIT`` (8,192 - 4,096 = 4,096 characters).
INLINE_REPRO_LIMIT = MESSAGE_LIMIT - REPRO_MESSAGE_ROOM


def repro_directory(configured: str | None = None) -> Path:
    """The folder of repro input files, absolute: ``$GRADORACLE_REPRO_DIR`` > ``configured``
    (``report --out DIR``: ``DIR/repro``) > ``./.gradoracle/repro``."""
    chosen = os.environ.get(REPRO_DIR_ENV) or configured or DEFAULT_REPRO_DIR
    return Path(os.path.abspath(os.path.expanduser(chosen)))


def _file_part(text: str) -> str:
    """``text`` as a piece of a file name: letters, digits, ``._+-`` (the rest ``_``), 48 at most."""
    part = re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._-")[:48]
    return part or "_"


def repro_inputs_path(
    directory: Path, identity: str, adapter: str, dtype: str, mode: str, arrays: Mapping[str, np.ndarray]
) -> Path:
    """``directory/IDENTITY-ADAPTER-DTYPE-MODE-DIGEST.npz``; DIGEST = blake2b-64 of the inputs' names,
    shapes and float64 bytes: the same failure names the same file."""
    digest = hashlib.blake2b(digest_size=8)
    for name, arr in arrays.items():
        a = np.ascontiguousarray(arr, dtype=np.float64)
        digest.update(f"{name}\0{a.shape}\0".encode())
        digest.update(a.tobytes())
    stem = "-".join(_file_part(p) for p in (identity, adapter, dtype, mode))
    return directory / f"{stem}-{digest.hexdigest()}.npz"


def _holds(path: Path, arrays: Mapping[str, np.ndarray]) -> bool:
    """Whether the ``.npz`` file ``path`` holds exactly ``arrays`` (bit for bit, no other key)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if sorted(npz.files) != sorted(arrays):
                return False
            for name, arr in arrays.items():
                got, want = npz[name], np.asarray(arr, dtype=np.float64)
                if got.dtype != want.dtype or got.shape != want.shape or got.tobytes() != want.tobytes():
                    return False
    except Exception:  # unreadable or not an npz: written again
        return False
    return True


def write_repro_inputs(path: Path, arrays: Mapping[str, np.ndarray]) -> str | None:
    """Write ``arrays`` as float64 to the ``.npz`` file ``path`` (``np.savez``'s format, any input
    name, no pickles; atomically, :func:`gradoracle.reporting.atomic.atomic_write_bytes`); a file
    already holding them is kept.  None when the file holds them, else why it could not be written."""
    from gradoracle.reporting.atomic import atomic_write_bytes

    try:
        if path.exists() and _holds(path, arrays):
            return None
        data = io.BytesIO()
        with zipfile.ZipFile(data, "w", zipfile.ZIP_STORED) as zf:
            for name, arr in arrays.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                    master = np.ascontiguousarray(arr, dtype=np.float64)
                    np.lib.format.write_array(member, master, allow_pickle=False)
        atomic_write_bytes(path, data.getvalue())
    except Exception as exc:  # a read-only folder, a full disk: the check keeps its record
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass(frozen=True)
class Repro:
    """A repro snippet.  With ``inputs_file``, ``snippet`` loads the example's inputs from it
    (written by :meth:`settle`) and ``inline`` is the same snippet with them written out."""

    snippet: str
    inline: str
    inputs_file: Path | None = None
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)

    def settle(self) -> str:
        """The snippet, its inputs file written; when that fails, the inline snippet with a
        first line that says why it may be cut.

        Inside a Hypothesis test (a check of one example in the user's own ``@given`` test), each
        shrinking step that fails writes its file; the file this process wrote before for the
        same identity, adapter, dtype and mode is removed (:func:`_supersede`), so the folder
        keeps the last one: the example Hypothesis reports."""
        if self.inputs_file is None:
            return self.snippet
        why = write_repro_inputs(self.inputs_file, self.arrays)
        if why is None:
            _supersede(self.inputs_file)
            return self.snippet
        note = (
            f"# the inputs could not be saved to {self.inputs_file} ({why}), so they are written out: "
            f"this snippet is {len(self.inline):,} characters and a message or report keeps "
            f"{MESSAGE_LIMIT:,} (set {REPRO_DIR_ENV} to a writable folder for a file instead)"
        )
        return f"{note}\n{self.inline}"


#: The inputs file this process last wrote inside a Hypothesis test, per file name without its
#: digest (identity, adapter, dtype, mode).
_WRITTEN_IN_TEST: dict[Path, Path] = {}


def _supersede(path: Path) -> None:
    """Inside a Hypothesis test, remove the inputs file written before ``path`` for the same
    check (only a file this process wrote there); outside one, nothing."""
    from hypothesis import currently_in_test_context

    if not currently_in_test_context():
        return
    key = path.with_name(path.stem.rpartition("-")[0])
    previous = _WRITTEN_IN_TEST.get(key)
    _WRITTEN_IN_TEST[key] = path
    if previous is not None and previous != path:
        with contextlib.suppress(OSError):
            previous.unlink()


def swap_repro(message: str, old: str, new: str) -> str:
    """``message`` (a :func:`describe_outcome` text) with its repro block ``old`` replaced by ``new``."""
    if old == new:
        return message
    block = "\n".join("    " + line for line in old.splitlines())
    return message.replace(block, "\n".join("    " + line for line in new.splitlines()), 1)


def inputs_lines(
    arrays: Mapping[str, Any], inline_room: int, name: tuple[str, str, str, str], directory: str | None
) -> tuple[list[str], list[str], Path | None, dict[str, np.ndarray]]:
    """The lines that bind ``inputs`` in a repro snippet: written out inline, and (when those
    are longer than ``inline_room`` characters) the lines that load them from their ``.npz``
    file instead, that file's path (``name`` = identity, adapter, dtype, mode; in
    :func:`repro_directory` of ``directory``) and the float64 arrays it is to hold.
    Returns (inline lines, file lines or the inline ones, path or None, arrays)."""
    masters = {str(k): np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
    inline = ["inputs = {"]
    inline += [f"    {k!r}: np.array({v.tolist()!r})," for k, v in masters.items()]
    inline.append("}")
    if sum(len(line) + 1 for line in inline) <= inline_room:
        return inline, inline, None, masters
    path = repro_inputs_path(repro_directory(directory), *name, masters)
    loads = [
        f"with np.load({str(path)!r}, allow_pickle=False) as npz:  "
        f"# the inputs (float64, exact): {', '.join(f'{k} {v.shape}' for k, v in masters.items())}",
        "    inputs = dict(npz)",
    ]
    return inline, loads, path, masters


def build_repro(
    ident: Identity,
    adapter_spec: str,
    dtype: str,
    example: Example,
    env: Sequence[str] = (),
    mode: str = "vjp",
    adapter_label: str | None = None,
    directory: str | None = None,
) -> Repro:
    """A runnable Python snippet that reproduces one example's check, its file not yet written
    (:meth:`Repro.settle` writes it).

    Inputs whose inline ``np.array([...])`` would make the snippet longer than
    :data:`INLINE_REPRO_LIMIT` are loaded from an ``.npz`` file named by identity, adapter
    (``adapter_label``, default the spec's last part), dtype, mode and a digest of the inputs, in
    :func:`repro_directory` of ``directory``.  When the adapter's module is importable only
    through this run's ``sys.path`` or the run set variables that matter (``env``, ``JAX_*``...),
    the snippet's first line says so (:mod:`gradoracle.repro_env`).
    """
    from gradoracle.repro_env import needs_line

    path = adapter_spec.partition("?")[0]
    modules = [path.partition(":")[0]] if ":" in path else []
    needs = needs_line(modules, env)
    head = [needs] if needs else []
    head += ["import numpy as np", "from gradoracle import reproduce", ""]
    call = (
        f"reproduce({ident.name!r}, {adapter_spec!r}, {dtype!r}, inputs, params={dict(example.params)!r}, "
        f"seed={example.seed}{'' if mode == 'vjp' else f', mode={mode!r}'})  "
        "# raises GradientMismatch while the fault is there"
    )
    room = INLINE_REPRO_LIMIT - sum(len(line) + 1 for line in head) - len(call)
    label = adapter_label or path.rpartition(":")[2]
    inline, loads, file, masters = inputs_lines(
        example.inputs, room, (ident.name, label, dtype, mode), directory
    )
    inline_text = "\n".join([*head, *inline, call])
    if file is None:
        return Repro(inline_text, inline_text)
    return Repro("\n".join([*head, *loads, call]), inline_text, file, masters)


def repro_snippet(
    ident: Identity,
    adapter_spec: str,
    dtype: str,
    example: Example,
    env: Sequence[str] = (),
    mode: str = "vjp",
    adapter_label: str | None = None,
    directory: str | None = None,
) -> str:
    """A runnable Python snippet that reproduces one example's check (:func:`build_repro`),
    its inputs file (if any) written."""
    return build_repro(ident, adapter_spec, dtype, example, env, mode, adapter_label, directory).settle()


def _fmt(x: float | None, digits: int = 9) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def _fmt_apart(*values: float | None) -> list[str]:
    """``values`` at 9 significant digits, or at more (up to 17, every float64 apart) where two
    that differ would print alike (a jvp off by 3e-13 relative showed three equal numbers)."""
    for digits in (9, 12, 15, 17):
        shown = [_fmt(v, digits) for v in values]
        pairs = [(a, b) for a, b in zip(values, shown, strict=True) if a is not None]
        if all(x == y or sx != sy for x, sx in pairs for y, sy in pairs):
            break
    return shown


def _allowed_text(c: Comparison, tol: Tolerance) -> str:
    """The allowance of a comparison in words (:meth:`Tolerance.explain`)."""
    if c.kind in ("fd", "oracle"):
        fd_tol = tol if c.kind == "fd" else tolerance_for("float64")
        return fd_tol.explain_fd(c.allowed, c.scale)
    return tol.explain(c.allowed, c.magnitude)


def _unresolved_hint(c: Comparison, words: Words) -> str:
    """The hint of a direction no finite-difference step resolved (:attr:`Comparison.unresolved`)."""
    if c.unresolved is None:
        return ""
    step, error, _ = c.unresolved
    fix = (
        "pass a closed form (reference=...) to judge the gradient at such inputs, or draw inputs "
        "where the floats resolve the function's scale"
        if words.user
        else "the drawn inputs are beyond what finite differences resolve"
    )
    return (
        f"finite differences could not decide here: the first step (relative to the largest |x|) "
        f"stepped far past the scale {words.forward} varies on, and at the finest step tried, "
        f"{sci(step)}, their own error estimate is still {sci(error)}, more than the tolerance "
        f"(the error above is judged without it: a failure is overturned only by a pass within the "
        f"tolerance); {fix}"
    )


def _noisy_fd_hint(c: Comparison, tol: Tolerance, words: Words) -> str:
    """A hint when a failing finite-difference comparison's allowance is mostly the finite
    differences' own error (``allowed - fd_rtol * scale`` more than half of it): the forward is
    not smooth at the step's scale, so the finite differences are too noisy to judge it."""
    if c.kind != "fd" or not c.allowed or not np.isfinite(c.allowed):
        return ""
    noise = c.allowed - tol.fd_rtol * c.scale
    if noise <= 0.5 * c.allowed:
        return ""
    fix = (
        "pass a closed form (reference=...) to judge the gradient without them, or check in the dtype "
        "your forward computes in"
        if words.user
        else "a forward evaluated in a lower precision than the finite differences' dtype shows this"
    )
    return (
        f"the finite differences are noisy here: {100 * noise / c.allowed:.0f}% of the allowance is their "
        f"own error estimate, so {words.forward} is not smooth at the step's scale (computed in a lower "
        f"precision than asked, rounded, or with steps or kinks); {fix}"
    )


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
    nd = outcome.nondeterminism
    if nd is not None and nd.what == "output" and words.user:
        # the outputs differ: the user's function does not repeat itself, whatever its backward does
        lines[-1] = (
            f"  fault: {outcome.fault} - {words.forward}, called twice on the same input, "
            "returned different outputs"
        )
    if outcome.domain:
        lines.append(f"  {outcome.domain}")
        lines.append(f"  hint: {domain_hint(ident, words)}")
    elif outcome.crash or outcome.contract:
        lines.append(f"  {outcome.crash or outcome.contract}")
        hint = (
            ident.crash_hint(ex.params)
            if outcome.crash and outcome.fault != Fault.ORACLE and ident.crash_hint is not None
            else ""
        )
        if hint:
            lines.append(f"  hint: {hint}")
    elif nd is not None:
        element = f", element {nd.index}" if nd.index else ""
        target = "the forward output" if nd.what == "output" else f"the gradient for input {nd.what!r}"
        bound = "bit-identical results" if nd.allowed == 0.0 else f"a difference <= {nd.allowed:.3e}"
        lines.append(f"  two vjp calls on the same input disagree on {target}{element}:")
        lines.append(
            f"    first call = {_fmt(nd.first)}   second call = {_fmt(nd.second)}   (expected {bound})"
        )
        if words.user:
            lines.append(f"  hint: {REPEAT_HINT}")
        else:
            lines.append(
                "    a framework that documents nondeterminism can declare nondeterminism_rtol on its adapter"
            )
        worst = WorstElement(
            kind="nondeterministic",
            input=nd.what,
            index=nd.index,
            autodiff=nd.first,
            analytic=None,
            fd=None,
            abs_error=abs(nd.first - nd.second) if np.isfinite(nd.first - nd.second) else float("inf"),
            allowed=nd.allowed,
        )
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
        if w.kind == "transpose":
            got, ref = "forward mode u^T (J v)", "reverse mode (u^T J) v"
        lines.append(f"  worst: {kind_text(w.kind, words)}, {where}")
        shown = _fmt_apart(autodiff, analytic, fd_value)
        lines.append(f"    {got} = {shown[0]}   {ref} = {shown[1]}   finite differences = {shown[2]}")
        lines.append(
            f"    |error| {sci(w.abs_error)} > {_allowed_text(w, tol)} (error/tolerance = {w.ratio:.3g})"
        )
        noisy = _unresolved_hint(w, words) or _noisy_fd_hint(w, tol, words)
        if noisy:
            lines.append(f"  hint: {noisy}")
        if w.kind == "forward" and words.self_forward:
            lines.append(f"  hint: {REPEAT_HINT}")
        for c in failures[1:4]:
            also = f"{kind_text(c.kind, words)} on {c.input!r}"
            lines.append(f"  also: {also}: error/tolerance = {c.ratio:.3g}")
        ok = [n for n, c in analytic_cmp.items() if not c.failed]
        if ok:
            matched = "your reference" if words.user_reference else "the notes"
            lines.append(f"  inputs whose gradient matched {matched}: {', '.join(ok)}")
    lines.append(f"  example: {shapes}, params={dict(ex.params)}, example seed={ex.seed}")
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
            ident,
            _adapter_spec(ad, spec),
            dtype,
            example,
            _adapter_repro_env(ad),
            mode,
            ad.name,
            settings.repro_dir,
        )
        message, worst = describe_outcome(
            ident, ad.name, dtype, outcome, tol, repro, _adapter_words(ad), mode
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


def _plan_modes(
    ad: Any, guard: AdapterGuard, modes: tuple[str, ...], timeout: float | None, label: str
) -> None:
    """``ad.plan_modes(modes)`` through its guard, when the adapter has the (optional) hook."""

    def plan() -> None:
        hook = getattr(ad, "plan_modes", None)
        if callable(hook):
            hook(modes)

    guard.call(plan, timeout, f"{label}.plan_modes()")


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

    Every call into the adapter goes through its guard (:mod:`gradoracle.guard`): its own
    thread, ``settings.timeout_s`` per example, any exception a record.
    """
    from gradoracle import modes as mode_checks

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
    timeout = settings.timeout_s
    facts: AdapterFacts
    if isinstance(adapter, str):  # one instance per spec in this process, on its own thread
        entry = process_session().get(adapter, timeout)
        if entry.facts is None:
            return result(Verdict.ERROR, Fault.ADAPTER, entry.error or f"adapter {adapter_label!r} failed")
        ad, guard, facts = entry.adapter, entry.guard, entry.facts
    else:
        ad, guard = adapter, guard_for(adapter)
        try:
            facts = read_facts(ad, guard, timeout)
        except AdapterCallError as exc:
            return result(Verdict.ERROR, Fault.ADAPTER, f"adapter {adapter_label!r}: {exc}")
    adapter_label = facts.name
    if not facts.available:
        return result(Verdict.SKIP, message=f"adapter {adapter_label!r} is not available: {facts.why}")
    if dtype not in facts.dtypes:
        return result(Verdict.SKIP, message=f"adapter {adapter_label!r} does not support {dtype}")
    if facts.supported_ops is None:
        return result(Verdict.ERROR, Fault.ADAPTER, facts.ops_error or "supported_ops() failed")
    missing = sorted(ident.ops - facts.supported_ops)
    if missing:
        return result(
            Verdict.SKIP, message=f"adapter {adapter_label!r} does not implement {', '.join(missing)}"
        )
    gap = mode_checks.unsupported_reason(ad, mode) or mode_checks.identity_mode_gap(ident, mode)
    if gap:
        return result(Verdict.SKIP, message=gap)
    if settings.modes:
        try:
            _plan_modes(ad, guard, settings.modes, timeout, adapter_label)
        except AdapterCallError as exc:
            return result(Verdict.ERROR, Fault.ADAPTER, f"adapter {adapter_label!r}: {exc}")
    evaluate_mode = evaluate_example if mode == "vjp" else mode_checks.EVALUATORS[mode]

    fd_dtype = settings.fd_dtype or ("float64" if "float64" in facts.dtypes else dtype)
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
        "outcomes": [],
        "top_up": None,  # (pool index, why) while a top-up run draws
    }
    what = f"{adapter_label} on one example of {ident.name}/{dtype}"
    # inside the user's own @given test, check() draws one example through it (no nesting)
    nested = currently_in_test_context()
    skip_simplest = settings.reproduce_failure is None and not nested

    known: dict[bytes, ExampleOutcome] = {}  # outcomes of the batched pass, by example digest
    alone: set[bytes] = set()  # digests whose failing batched outcome was replaced by one alone
    recording: list[Example] | None = None  # the examples Hypothesis draws, in the recording pass
    # a layer identity's covering pool (0: none, or inside the user's own @given test, where the
    # user's test draws one example and nothing is topped up): the configurations the examples
    # used are collected, and each one no example used is evaluated by a top-up run
    pool_size = 0 if nested else ident.pool_size(settings.configurations)
    drawing: dict[str, int | None] = {"index": None}  # the pool index of the example being drawn
    covered: set[int] = set()  # pool indices of the examples evaluated (or recorded)

    def saw(index: int) -> None:
        drawing["index"] = index

    def evaluate(example: Example) -> ExampleOutcome:
        digest = example_digest(example) if known else b""
        cached = known.get(digest) if known else None
        if cached is not None and (cached.passed or digest in alone):
            return cached
        # through the adapter's guard: its own thread, the time limit, any exception a record
        # (after a hang the guard refuses further calls at once)
        try:
            outcome: ExampleOutcome = guard.call(
                lambda: _evaluate_owned(evaluate_mode, ident, ad, dtype, example, settings),
                timeout,
                what,
                passthrough=(InvalidShapeError, OracleInternalError),
            )
        except AdapterCallError as exc:
            outcome = ExampleOutcome(example, fault=Fault.ADAPTER, crash=str(exc))
        except OracleInternalError as exc:
            outcome = ExampleOutcome(example, fault=Fault.ORACLE, crash=str(exc))
        if cached is not None:
            # failed in the batched pass: what the example gives alone is what the record and its
            # repro show; when alone it passes, the batched methods disagree with the single calls
            outcome = _batch_disagreement(cached, outcome) if outcome.passed else outcome
            known[digest] = outcome
            alone.add(digest)
        return outcome

    def body(example: Example) -> None:
        if skip_simplest:
            # Hypothesis replays database entries first, then generates, starting with an
            # example made of simplest choices; until the first failure, generated examples
            # with zero arrays are rejected (replays and shrinking keep them).
            probe, degenerate = simplest_values_drawn()
            state["generating"] = state["generating"] or probe
            if degenerate and state["generating"] and state["first_failure"] is None:
                reject()
        if drawing["index"] is not None:
            covered.add(drawing["index"])
            drawing["index"] = None
        if recording is not None:
            recording.append(example)
            return
        state["calls"] += 1
        if state["first_failure"] is None:
            state["drawn"] += 1
        outcome = evaluate(example)
        state["last"] = outcome
        state["outcomes"].append(outcome)
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
            # the inputs file (a large example's) is written once, for the example reported,
            # not for every failing example the shrinker tries
            pending = build_repro(
                ident,
                _adapter_spec(ad, spec),
                dtype,
                example,
                _adapter_repro_env(ad),
                mode,
                adapter_label,
                settings.repro_dir,
            )
            state["repro"] = pending
            message, worst = describe_outcome(
                ident, adapter_label, dtype, outcome, tol, pending.snippet, _adapter_words(ad), mode
            )
            raise GradientMismatch(
                message,
                identity=ident.name,
                adapter=adapter_label,
                dtype=dtype,
                fault=outcome.fault,
                worst=worst,
                repro=pending.snippet,
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

    def hypothesis_test(
        record: bool, strategy: Any, examples: int, seed: int | None, key: bytes | None
    ) -> Any:
        """``body`` over ``strategy`` under the check's Hypothesis settings with ``examples``
        examples, ``seed`` (None: Hypothesis's choice) and the example-database ``key`` (None:
        the check's own); ``record``: the recording pass, which never shrinks and only reads the
        example database (a saved failure is drawn first but neither deleted nor re-saved: the
        one-at-a-time pass does that)."""
        wrapped = given(strategy)(body)
        hs = hypothesis_settings_for(settings.with_(examples=examples))
        if record:
            db = hs.database
            hs = hypothesis_settings(
                hs,
                database=None if db is None else ReadOnlyDatabase(db),
                phases=[p for p in hs.phases if p is not Phase.shrink],
            )
        wrapped = hs(wrapped)
        if seed is not None and run_seed["generated"] is None:
            wrapped = hypothesis_seed(seed)(wrapped)  # the user's seed: as @seed, no database
        elif seed is not None:
            # a seed the check chose (to draw the same examples in both passes and derive the
            # top-ups'): Hypothesis's random choice made explicit, the example database kept
            wrapped._hypothesis_internal_use_seed = seed
        if settings.reproduce_failure:
            blob = settings.reproduce_failure.encode()
            wrapped = hypothesis_reproduce_failure(hypothesis_version, blob)(wrapped)
        if hs.database is None:
            # no example database: its key (a digest of the test's source, about 3 ms per
            # check spent in `inspect.getsource` and `tokenize`) would be computed and unused
            wrapped._hypothesis_internal_database_key = None
        elif key is not None and not _global_seed_forced():
            # (under --hypothesis-seed Hypothesis runs without the database: keep it so)
            wrapped._hypothesis_internal_database_key = key
        return wrapped

    def run_pass(strategy: Any, examples: int, seed: int | None, key: bytes | None, batched: bool) -> None:
        """One Hypothesis run of ``examples`` examples of ``strategy``; a failure raises (shrunk
        by Hypothesis), a pass adds its examples to the counts.

        ``batched``: Hypothesis chooses the examples (a pass that only records them), the adapter
        evaluates them in batches; a clean batch is the whole pass.  Otherwise the one-at-a-time
        pass replays the same examples (answered from ``known``) up to the failing one and
        Hypothesis shrinks it.  Both passes must draw the same examples: one seed for both."""
        nonlocal recording, test
        batch_failed: list[Example] = []
        state["generating"] = False
        drawing["index"] = None
        if batched:
            recording = []
            with with_reporter(lambda _: None):
                hypothesis_test(True, strategy, examples, seed, key)()
            drawn, recording = recording, None
            state["generating"] = False
            batch_failed = _evaluate_in_batches(
                ident, ad, dtype, drawn, settings, guard, known, state, evaluation_for(mode)
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
                return
        test = hypothesis_test(False, strategy, examples, seed, key)
        with with_reporter(reported.append):
            test()
        if batch_failed:
            # the replay drew other examples than the recording pass: report the
            # batch's failure as it was found (unshrunk) rather than lose it
            body(batch_failed[0])

    try:
        if nested:
            # one example, drawn (and shrunk) by the user's test
            body(current_build_context().data.draw(ident.examples(settings.configurations)))
        else:
            # one example-database entry per check (the closure's source is the same for all)
            mode_key = "" if mode == "vjp" else f":{mode}"
            key = f"gradoracle:{ident.name}:{adapter_label}:{dtype}{mode_key}{_own_key(ad)}".encode()
            body._hypothesis_internal_add_digest = key  # type: ignore[attr-defined]
            batched = settings.batch > 1 and batches_anything(ad) and not settings.reproduce_failure
            if (batched or pool_size) and run_seed["seed"] is None and not _seed_fixed_elsewhere(settings):
                # one seed for the recording and the one-at-a-time passes, and the top-ups' seeds
                # derived from it: the seed reported draws every example of the check again
                run_seed["seed"] = run_seed["generated"] = _fresh_seed()
            space = ident.configurations
            top_up = space is not None and pool_size > 0 and _tops_up(settings)
            configs = space.pool(settings.configurations).configurations if space and top_up else ()
            keys = [key + b":configuration:" + _configuration_key(c) for c in configs]

            def top_up_pass(k: int, why: str, batch_it: bool) -> None:
                state["top_up"] = (k, why)
                strategy = ident.examples(settings.configurations, only=k, seen=saw)
                run_pass(strategy, TOP_UP_EXAMPLES, _top_up_seed(run_seed["seed"], k), keys[k], batch_it)
                state["top_up"] = None

            # a seed of the user's own (--gradoracle-seed, the CLI, --hypothesis-seed) runs without
            # the database, as Hypothesis's @seed does; otherwise a top-up's failure saved in the
            # database is replayed first (one at a time: Hypothesis deletes the entry once it passes)
            own_seed = settings.seed is not None or _global_seed_forced()
            database = None if own_seed else hypothesis_settings_for(settings).database
            saved = [k for k in range(len(configs)) if _has_saved(database, keys[k])]
            for k in saved:
                top_up_pass(k, "a failure of it was saved in the example database", False)
            main = ident.examples(settings.configurations, seen=saw if pool_size else None)
            run_pass(main, settings.examples, run_seed["seed"], None, batched)
            # every configuration of the covering pool is evaluated at least once
            for k in range(len(configs)):
                if k not in covered:
                    top_up_pass(k, f"none of the check's {settings.examples} examples drew it", batched)
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
        fault, message, precision, repro = exc.fault, str(exc), None, exc.repro
        pending: Repro | None = state.get("repro")
        if pending is not None and repro == pending.snippet:
            repro = pending.settle()  # its inputs file written, or written out inline
            message = swap_repro(message, pending.snippet, repro)
        if state.get("top_up") is not None:
            k, why = state["top_up"]
            message = (
                f"found by the top-up example of configuration {k + 1} of the {pool_size} of the covering "
                f"set ({why}; every configuration is evaluated at least once)\n{message}"
            )
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
            repro=repro,
            precision=precision,
            **counts(),
            **provenance(exc),
            **common,
        )
    except InvalidShapeError as exc:
        return result(Verdict.ERROR, Fault.NONE, f"invalid input shapes: {exc}", **counts(), **common)
    except Flaky as exc:  # failed once, passed when replayed: the adapter does not repeat itself
        return _flaky_result(
            exc,
            state["outcomes"],
            ident,
            ad,
            spec,
            adapter_label,
            dtype,
            tol,
            result,
            {**common, **counts(), **provenance(exc)},
            mode,
            settings.repro_dir,
        )
    except DidNotReproduce:  # --gradoracle-reproduce-failure's example passes now
        message = (
            "the example of --gradoracle-reproduce-failure no longer fails this check (the fault is fixed, "
            "or the blob belongs to another check or Hypothesis version); run without the option"
        )
        return result(Verdict.ERROR, Fault.NONE, message, **counts(), **common)
    except unittest.SkipTest:  # Hypothesis ran no example (a profile without the generate phase)
        return result(Verdict.SKIP, Fault.NONE, no_examples_message(), **counts(), **common)
    except InputSpecError:  # the caller's inputs cannot work: theirs to fix, not a record
        raise
    except Exception as exc:  # other Hypothesis errors (health checks, ...) become records too
        return result(
            Verdict.ERROR,
            Fault.ADAPTER,
            describe_exception(exc),
            errors=stats,
            **counts(),
            **provenance(exc),
            **common,
        )
    bits = state.get("bits") if records_bits(dtype) else None
    return result(Verdict.PASS, errors=stats, precision=precision_record(bits), **counts(), **common)


#: Examples of a top-up run: one check evaluates every configuration of a layer identity's
#: covering pool; a configuration none of its examples drew gets a Hypothesis run of its own,
#: of this many examples (values drawn, shrunk and replayed as in the main run).
TOP_UP_EXAMPLES = 1


def _tops_up(settings: CheckSettings) -> bool:
    """Whether a check tops up the configurations its examples did not draw: not when it replays
    one blob (``reproduce_failure``), nor under a profile whose phases generate no example."""
    if settings.reproduce_failure:
        return False
    return Phase.generate in hypothesis_settings_for(settings).phases


def _configuration_key(configuration: Mapping[str, Any]) -> bytes:
    """A short digest of one configuration (its top-up's example-database key ends with it)."""
    text = repr(sorted(configuration.items())).encode()
    return hashlib.blake2b(text, digest_size=8).hexdigest().encode()


def _top_up_seed(seed: int | None, index: int) -> int | None:
    """The seed of the top-up of configuration ``index``: derived from the check's seed (None
    when Hypothesis chooses: ``derandomize`` or ``--hypothesis-seed`` then decide)."""
    if seed is None:
        return None
    digest = hashlib.blake2b(f"{seed}:top-up:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _fresh_seed() -> int:
    """A random seed for a check that the user left to Hypothesis (reported, so it can be rerun)."""
    return random.getrandbits(128)


def _has_saved(database: Any, key: bytes) -> bool:
    """Whether the example database holds an entry under ``key`` (a database that cannot be
    read counts as empty)."""
    if database is None:
        return False
    try:
        return next(iter(database.fetch(key)), None) is not None
    except Exception:  # a user's database that fails to read: nothing to replay from it
        return False


#: The start of the message of a check in which Hypothesis ran no example (see :func:`no_examples_message`).
NO_EXAMPLES = "no example ran"


def no_examples_message() -> str:
    """Why a check ran no example: the loaded Hypothesis profile's phases generate none, and the
    example database held no saved example of this check (Hypothesis's own ``SkipTest``)."""
    phases = getattr(hypothesis_settings.default, "phases", ())
    named = ", ".join(f"Phase.{p.name}" for p in phases) or "none"
    return (
        f"{NO_EXAMPLES}: your Hypothesis profile's phases ({named}) do not include Phase.generate and "
        "the example database holds no saved example of this check, so nothing was checked; add "
        "Phase.generate to the profile's phases (or load a profile that generates) to check it"
    )


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


def _own_key(adapter: Any) -> str:
    """``:KEY`` when the adapter names its own example-database entry (``example_database_key``
    in its instance ``__dict__``: a user check, keyed by its test and its functions), else ``""``."""
    try:
        value = object.__getattribute__(adapter, "__dict__").get("example_database_key")
    except Exception:  # no __dict__, or one that misbehaves: the default key
        return ""
    return f":{value}" if isinstance(value, str) and value else ""


def _global_seed_forced() -> bool:
    """Whether ``--hypothesis-seed`` fixed Hypothesis's global seed (it then uses no database)."""
    import hypothesis.core

    return getattr(hypothesis.core, "global_force_seed", None) is not None


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
    guard: AdapterGuard,
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
            if guard.hung is not None:  # the adapter hung: the replay records it per example
                return [ex for ex in examples if example_digest(ex) not in known]
            timeout = None if settings.timeout_s is None else settings.timeout_s * len(chunk)
            evaluations = [evaluation(ident, adapter, dtype, ex, settings) for ex in chunk]
            try:
                outcomes = guard.call(
                    partial(drive, adapter, evaluations),
                    timeout,
                    f"{len(chunk)} examples of {ident.name}/{dtype} evaluated together",
                )
            except AdapterCallError:
                continue  # no outcomes: these examples are evaluated one at a time in the replay
            for ex, outcome in zip(chunk, outcomes, strict=True):
                if isinstance(outcome, ExampleOutcome):
                    known[example_digest(ex)] = outcome
    failed = [ex for ex in examples if not (known.get(example_digest(ex)) or _NOT_PASSED).passed]
    return failed


_NOT_PASSED = ExampleOutcome(Example({}), fault=Fault.ADAPTER)


def _outcome_summary(outcome: ExampleOutcome) -> str:
    """One line: an outcome's fault and what showed it (the worst comparison, or the message)."""
    failures = sorted(outcome.failures, key=lambda c: -c.ratio)
    if outcome.crash or outcome.contract or outcome.domain:
        what = str(outcome.crash or outcome.contract or outcome.domain)
    elif outcome.nondeterminism is not None:
        what = f"two calls disagree on {outcome.nondeterminism.what!r}"
    elif failures:
        w = failures[0]
        what = f"{w.kind} comparison on {w.input!r} element {w.index}, error/tolerance {w.ratio:.3g}"
    else:
        what = "no comparison recorded"
    return f"{outcome.fault}: {what}"


def _batch_disagreement(batched: ExampleOutcome, alone: ExampleOutcome) -> ExampleOutcome:
    """An example that failed evaluated with others in one batched call (``vjp_batch``,
    ``forward_batch``, ``jvp_batch``, ``hvp_batch``) and passed alone: an adapter fault."""
    return replace(
        alone,
        fault=Fault.ADAPTER,
        contract=(
            "the adapter's batched methods disagree with its single calls: evaluated together with "
            f"other examples in one batched call this example failed ({_outcome_summary(batched)}); "
            "evaluated alone it passes (so does the repro below). Check that vjp_batch, forward_batch, "
            "jvp_batch and hvp_batch give row i the answer of vjp, forward, jvp and hvp on example i "
            "(or that the adapter is deterministic)"
        ),
    )


def _flaky_result(
    exc: BaseException,
    outcomes: Sequence[ExampleOutcome],
    ident: Identity,
    adapter: Any,
    spec: str | None,
    label: str,
    dtype: str,
    tol: Tolerance,
    result: Any,
    common: Mapping[str, Any],
    mode: str = "vjp",
    repro_dir: str | None = None,
) -> CheckResult:
    """A Hypothesis ``Flaky`` (an example failed, then passed when replayed) as a ``nondeterministic``
    record: the failing example's diagnostic and repro, and what its replay gave."""
    failed = next((o for o in outcomes if not o.passed), None)
    if failed is None:
        return result(
            Verdict.FAIL,
            Fault.NONDETERMINISTIC,
            f"the check failed once and passed when Hypothesis replayed it ({describe_exception(exc)})",
            **common,
        )
    repro = repro_snippet(
        ident,
        _adapter_spec(adapter, spec),
        dtype,
        failed.example,
        _adapter_repro_env(adapter),
        mode,
        label,
        repro_dir,
    )
    words = _adapter_words(adapter)
    message, worst = describe_outcome(ident, label, dtype, failed, tol, repro, words, mode)
    who = "the adapter"
    if words is not None and words.user:
        who = f"{words.subject} or {words.who}" if words.who else words.subject
        message = f"{message}\n  hint: {REPEAT_HINT}"
    head = (
        f"nondeterministic: this example failed ({failed.fault}) and passed when replayed on the same "
        f"input, so {who} does not give the same answer twice; the failing call:"
    )
    example = failed.example
    counter = {
        "inputs": {k: np.asarray(v).tolist() for k, v in example.inputs.items()},
        "params": dict(example.params),
        "seed": example.seed,
    }
    return result(
        Verdict.FAIL,
        Fault.NONDETERMINISTIC,
        f"{head}\n{message}",
        worst=worst,
        counterexample=counter,
        repro=repro,
        **common,
    )


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
