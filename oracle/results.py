"""Result records and typed errors shared by the runner and every front-end."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from gradoracle.text import FIELD_LIMIT, MESSAGE_LIMIT, NAME_LIMIT, CleanText


class Verdict(StrEnum):
    """The outcome of one identity x adapter x dtype check."""

    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    SKIP = "skip"
    XFAIL = "xfail"  # a failure matched by a known-deviation entry
    NOT_RUN = "not-run"  # interrupted before it ran


class Fault(StrEnum):
    """Where a failure lies (three-way localisation)."""

    NONE = "none"
    FORWARD = "forward"  # the adapter's forward computes another function than the reference
    BACKWARD = "backward"  # its backward is not the derivative of its (correct) forward
    ORACLE = "oracle"  # the closed form disagrees with finite differences: an oracle bug
    ADAPTER = "adapter"  # the adapter broke its contract (raised, wrong shape, NaN, hang, crash)
    NONDETERMINISTIC = "nondeterministic"  # the vjp twice on the same input gave different values
    DTYPE = "dtype"  # the framework returned another dtype than the one asked for (its own promotion)
    FORWARD_MODE = "forward-mode"  # its forward-mode J v is not the derivative of its forward
    SECOND_ORDER = "second-order"  # its Hessian-vector product is not the derivative of its gradient
    # its forward mode and reverse mode disagree (u^T (J v) != (u^T J) v) and, with no closed form,
    # finite differences at the inputs cannot resolve which one is wrong
    MODES_DISAGREE = "modes-disagree"
    PRECISION = "reduced-precision"  # float32 results at fewer mantissa bits (TF32, bf16): right in float64
    DOMAIN = "input-domain"  # the forward is not defined at the drawn inputs (log of a negative, ...)
    # a convention probe's gradient lies outside the generalised (Clarke) gradient at a kink
    OUTSIDE_SUBDIFFERENTIAL = "outside-subdifferential"


@dataclass(frozen=True)
class Words:
    """How messages name what is under test: a framework adapter, or the user's own function.

    A conformance check speaks of "the adapter's forward" and "autodiff"; a check of a
    user's function names the function ("your function matvec") and, for a hand-written
    vjp, "your backward matvec_backward".
    """

    subject: str = "the adapter"  # who computes the forward and the gradient
    forward: str = "the adapter's forward"
    backward: str = "the adapter's backward"
    gradient: str = "autodiff"  # the label of the gradient under test, beside "analytic"
    reference: str = "the notes' closed form"
    user_reference: bool = False  # the closed form is the user's, not gradoracle's
    who: str = ""  # for a user's check: what computed the gradient ("your backward f_backward")
    #: the reference forward is the user's own function again (a user check without a catalogue
    #: identity): a forward mismatch means two calls on the same input gave different outputs
    self_forward: bool = False

    @property
    def user(self) -> bool:
        """True when the thing under test is the user's own function."""
        return self.subject.startswith("your ")


ADAPTER_WORDS = Words()

#: What a user whose function does not repeat itself on the same input can do about it.
REPEAT_HINT = (
    "a function that draws random numbers or keeps state cannot be checked as it is (dropout in a "
    "module's training mode, a global generator): call module.eval() first, or fix the randomness "
    "inside the function (seed a generator on each call, a fixed jax.random key)"
)


def fault_text(fault: Fault, words: Words = ADAPTER_WORDS) -> str:
    """One plain sentence saying what a fault class means for the thing under test."""
    if fault == Fault.FORWARD:
        if words.self_forward:
            return (
                f"{words.forward}, called twice on the same input, returned different outputs "
                "(it is not a function of its inputs alone)"
            )
        return f"{words.forward} computes another function than {words.reference}"
    if fault == Fault.BACKWARD:
        return (
            f"{words.backward} is not the derivative of {words.forward} "
            "(it disagrees with finite differences of that forward)"
        )
    if fault == Fault.ORACLE:
        if words.user_reference:
            return (
                f"{words.reference} disagrees with finite differences of {words.forward}: "
                "your reference gradient, not the backward, is wrong"
            )
        return (
            "gradoracle's closed form disagrees with finite differences "
            "(a bug in gradoracle: please report it)"
        )
    if fault == Fault.ADAPTER:
        if words.user:
            both = f"{words.subject} or {words.who}" if words.who else words.subject
            return f"{both} did not run as the check needs (it raised, or returned something unusable)"
        return "the adapter broke its contract (it raised, hung, crashed, or returned a wrong shape or NaN)"
    if fault == Fault.NONDETERMINISTIC:
        return f"{words.backward}, called twice on the same input, gave different values"
    if fault == Fault.DTYPE:
        if words.user:
            return f"{words.who} or {words.subject} returned another dtype than the inputs' (the one checked)"
        return "the framework returned another dtype than the one asked for (its own dtype promotion)"
    if fault == Fault.OUTSIDE_SUBDIFFERENTIAL:
        return "the gradient at a non-differentiable point lies outside the generalised (Clarke) gradient"
    if fault == Fault.FORWARD_MODE:
        return f"{words.subject}'s forward mode (J v) is not the derivative of {words.forward}"
    if fault == Fault.SECOND_ORDER:
        return f"{words.subject}'s Hessian-vector product is not the derivative of its gradient"
    if fault == Fault.MODES_DISAGREE:
        return (
            f"{words.subject}'s forward mode (J v) and reverse mode (u^T J) disagree, "
            "u^T (J v) != (u^T J) v, and finite differences at these inputs cannot tell which one "
            "is wrong (both lie within their error): one of the two derivative rules is wrong"
        )
    if fault == Fault.PRECISION:
        return (
            f"{words.subject} computes this float32 check at reduced precision (fewer correct mantissa bits "
            "than float32 has; the same example is right in float64): a precision mode such as TF32 or bf16, "
            "not a wrong derivative"
        )
    if fault == Fault.DOMAIN:
        return (
            f"the inputs lie outside the domain of {words.forward} (it is not finite there): "
            "an input-domain problem, not a wrong gradient"
        )
    return ""


FAULT_TEXT: dict[Fault, str] = {f: fault_text(f) for f in Fault}


def kind_text(kind: str, words: Words = ADAPTER_WORDS) -> str:
    """What a comparison kind compares, in the words of the thing under test."""
    fwd = words.forward.removeprefix("the ")
    return {
        "forward": (
            f"{words.forward} vs itself, called again on the same input"
            if words.self_forward
            else f"{words.forward} vs the reference forward"
        ),
        "analytic": f"{words.gradient} vs analytic ({words.reference})",
        "fd": f"{words.gradient} vs finite differences of {fwd}",
        "oracle": f"analytic ({words.reference}) vs finite differences of the reference forward",
        "jvp-analytic": "forward-mode J v vs the closed-form directional derivative",
        "jvp-fd": "forward-mode J v vs finite differences of the adapter's forward",
        "transpose": (
            "transpose identity u^T (J v) = (u^T J) v between the adapter's forward and reverse modes"
        ),
        "jvp-oracle": "closed-form J v vs finite differences of the reference forward",
        "hvp-analytic": "Hessian-vector product vs the closed form",
        "hvp-fd": "Hessian-vector product vs finite differences of the adapter's gradient",
        "hvp-methods": "reverse-over-reverse vs forward-over-reverse Hessian-vector products",
        "hvp-oracle": "closed-form H v vs finite differences of the closed-form gradient",
    }.get(kind, kind)


#: The line of a failure message that holds the tolerance formula (shown with --verbose).
TOLERANCE_FORMULA_PREFIX = "  tolerance formula: "


def brief_message(message: str, verbose: bool = False) -> str:
    """A failure message as a terminal shows it: without the tolerance formula unless ``verbose``.

    The allowance of the worst element stays in words (``allowed 3.7e-15 = 128 ulp x
    magnitude of the terms 1.3e-1``); the formula it comes from is one ``--verbose`` away.
    """
    if verbose:
        return message
    return "\n".join(line for line in message.split("\n") if not line.startswith(TOLERANCE_FORMULA_PREFIX))


#: The comparisons made on every example.
KINDS: tuple[str, ...] = (
    "forward",
    "analytic",
    "fd",
    "oracle",
    "jvp-analytic",
    "jvp-fd",
    "transpose",
    "jvp-oracle",
    "hvp-analytic",
    "hvp-fd",
    "hvp-methods",
    "hvp-oracle",
)
KIND_TEXT: dict[str, str] = {k: kind_text(k) for k in KINDS}


#: Per mode, the comparison kinds shown as "analytic" and "finite differences" in tables.
MODE_KINDS: dict[str, tuple[str, str]] = {
    "vjp": ("analytic", "fd"),
    "jvp": ("jvp-analytic", "jvp-fd"),
    "hvp": ("hvp-analytic", "hvp-fd"),
}


@dataclass
class ErrorStat:
    """Worst errors of one comparison kind for one input, over all examples of a check."""

    max_abs: float = 0.0
    max_rel: float = 0.0
    max_ratio: float = 0.0  # error / allowed; > 1 fails

    def update(self, abs_err: float, rel_err: float, ratio: float) -> None:
        self.max_abs = max(self.max_abs, abs_err)
        self.max_rel = max(self.max_rel, rel_err)
        self.max_ratio = max(self.max_ratio, ratio)


@dataclass
class WorstElement(CleanText):
    """The element of one gradient where a comparison failed worst."""

    _text_limits: ClassVar[dict[str, int]] = {"kind": NAME_LIMIT, "input": FIELD_LIMIT}

    kind: str
    input: str
    index: list[int]
    autodiff: float | None
    analytic: float | None
    fd: float | None
    abs_error: float
    allowed: float


@dataclass
class CheckResult(CleanText):
    """Everything one check found; JSON-able through :meth:`to_dict`.

    Its text fields are cleaned on every assignment (:mod:`gradoracle.text`): an adapter's
    name or exception text never carries markup, terminal control or megabytes into a report.
    """

    _text_limits: ClassVar[dict[str, int]] = {
        "identity": NAME_LIMIT,
        "source": NAME_LIMIT,
        "adapter": NAME_LIMIT,
        "dtype": NAME_LIMIT,
        "message": MESSAGE_LIMIT,
        "repro": MESSAGE_LIMIT,
        "fd_dtype": NAME_LIMIT,
    }

    identity: str
    source: str
    adapter: str
    dtype: str
    verdict: Verdict
    fault: Fault = Fault.NONE
    message: str = ""
    examples: int = 0  # drawn (generated or replayed) up to the first failure; shrinking apart
    errors: dict[str, dict[str, ErrorStat]] = field(default_factory=dict)
    worst: WorstElement | None = None
    counterexample: dict[str, Any] | None = None
    repro: str | None = None
    tolerance: dict[str, Any] = field(default_factory=dict)
    fd_dtype: str = ""
    duration_s: float = 0.0
    deviation: dict[str, Any] | None = None
    #: 1-based index of the first failing example among the ``examples`` drawn
    first_failure: int | None = None
    #: calls Hypothesis made after the first failure (shrinking and the final replay)
    shrink_calls: int = 0
    #: the seed Hypothesis generated when none was given (rerun with --hypothesis-seed)
    hypothesis_seed: str | None = None
    #: the ``@reproduce_failure`` blob, when the profile has ``print_blob``
    blob: str | None = None
    #: ``vjp`` (reverse mode), ``jvp`` (forward mode) or ``hvp`` (second order)
    mode: str = "vjp"
    #: float32 checks: effective correct mantissa bits and, when the evidence shows one,
    #: the reduced-precision mode (:mod:`gradoracle.precision`)
    precision: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        """``identity-adapter-dtype`` (reverse mode) or ``identity-adapter-dtype-mode``."""
        base = f"{self.identity}-{self.adapter}-{self.dtype}"
        return base if self.mode == "vjp" else f"{base}-{self.mode}"

    @property
    def ok(self) -> bool:
        """True for a pass, a skip and an expected (known) deviation."""
        return self.verdict in (Verdict.PASS, Verdict.SKIP, Verdict.XFAIL)

    def max_rel(self, kind: str) -> float:
        """The worst norm-wise relative error of ``kind`` over all inputs.

        ``analytic`` and ``fd`` stand for this result's mode's kinds (:data:`MODE_KINDS`).
        """
        kinds = MODE_KINDS.get(self.mode, MODE_KINDS["vjp"])
        kind = {"analytic": kinds[0], "fd": kinds[1]}.get(kind, kind)
        return max((s.max_rel for s in self.errors.get(kind, {}).values()), default=0.0)

    def max_ratio(self, kind: str | None = None) -> float:
        """The worst error/tolerance ratio (of one kind, or of all)."""
        kinds = [kind] if kind else list(self.errors)
        return max((s.max_ratio for k in kinds for s in self.errors.get(k, {}).values()), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict for JSON (enums as strings)."""
        d = asdict(self)
        d["verdict"] = str(self.verdict)
        d["fault"] = str(self.fault)
        d["id"] = self.id
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckResult:
        """Inverse of :meth:`to_dict` (used by ``gradoracle merge``)."""
        errors = {k: {n: ErrorStat(**s) for n, s in v.items()} for k, v in d.get("errors", {}).items()}
        worst = WorstElement(**d["worst"]) if d.get("worst") else None
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k not in ("errors", "worst")}
        fields["verdict"] = Verdict(d["verdict"])
        fields["fault"] = Fault(d.get("fault", "none"))
        return cls(**fields, errors=errors, worst=worst)


class InputSpecError(ValueError):
    """The caller's description of the inputs cannot work (a user check's strategy drew text, NaN,
    a list instead of a dict): :func:`gradoracle.runner.check` raises it to the caller instead of
    recording it as the adapter's error, since the fix is in the caller's arguments."""


class GradientMismatch(AssertionError):
    """A gradient that disagrees with the oracle; the message is the full diagnostic."""

    def __init__(
        self,
        message: str,
        *,
        identity: str,
        adapter: str,
        dtype: str,
        fault: Fault,
        worst: WorstElement | None = None,
        repro: str | None = None,
        hypothesis_seed: str | None = None,
    ) -> None:
        super().__init__(message)
        self.identity = identity
        self.adapter = adapter
        self.dtype = dtype
        self.fault = fault
        self.worst = worst
        self.repro = repro
        #: the seed Hypothesis generated for the failing check, when none was given
        self.hypothesis_seed = hypothesis_seed


class AdapterContractError(Exception):
    """The adapter returned something the protocol forbids (wrong shape, dtype, NaN, ...)."""


class AdapterCrashError(Exception):
    """The adapter raised or hung; wraps the original exception's text."""
