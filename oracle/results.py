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
    # a convention probe's gradient lies outside the generalised (Clarke) gradient at a kink
    OUTSIDE_SUBDIFFERENTIAL = "outside-subdifferential"


FAULT_TEXT: dict[Fault, str] = {
    Fault.NONE: "",
    Fault.FORWARD: "the adapter's forward computes another function than the notes' forward",
    Fault.BACKWARD: "the adapter's backward is not the derivative of its forward",
    Fault.ORACLE: "the oracle's closed form disagrees with finite differences (a bug in gradoracle)",
    Fault.ADAPTER: "the adapter broke its contract",
    Fault.NONDETERMINISTIC: "the adapter's vjp, called twice on the same input, gave different values",
    Fault.DTYPE: "the framework returned another dtype than the one asked for (its own dtype promotion)",
    Fault.OUTSIDE_SUBDIFFERENTIAL: (
        "the gradient at a non-differentiable point lies outside the generalised (Clarke) gradient"
    ),
}

#: The comparisons made on every example.
KINDS: tuple[str, ...] = ("forward", "analytic", "fd", "oracle")
KIND_TEXT: dict[str, str] = {
    "forward": "adapter forward vs reference forward",
    "analytic": "autodiff vs analytic",
    "fd": "autodiff vs finite differences of the adapter's forward",
    "oracle": "analytic vs finite differences of the reference forward",
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

    @property
    def id(self) -> str:
        """``identity-adapter-dtype``, the id used in tests and reports."""
        return f"{self.identity}-{self.adapter}-{self.dtype}"

    @property
    def ok(self) -> bool:
        """True for a pass, a skip and an expected (known) deviation."""
        return self.verdict in (Verdict.PASS, Verdict.SKIP, Verdict.XFAIL)

    def max_rel(self, kind: str) -> float:
        """The worst norm-wise relative error of ``kind`` over all inputs."""
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
    ) -> None:
        super().__init__(message)
        self.identity = identity
        self.adapter = adapter
        self.dtype = dtype
        self.fault = fault
        self.worst = worst
        self.repro = repro


class AdapterContractError(Exception):
    """The adapter returned something the protocol forbids (wrong shape, dtype, NaN, ...)."""


class AdapterCrashError(Exception):
    """The adapter raised or hung; wraps the original exception's text."""
