"""gradoracle: a gradient-verification test oracle for ML frameworks.

Importing this package imports neither torch nor jax; adapters load lazily by name.
"""

from oracle.identities import (
    IDENTITIES,
    SOURCES,
    Identity,
    InvalidShapeError,
    UnknownIdentityError,
    all_identities,
    get_identity,
    select_identities,
)
from oracle.ops import ALL_OPS, ELEMENTWISE_OPS, Ops
from oracle.results import (
    AdapterContractError,
    CheckResult,
    ErrorStat,
    Fault,
    GradientMismatch,
    Verdict,
    WorstElement,
)
from oracle.runner import (
    CheckSettings,
    ExampleOutcome,
    check,
    evaluate_example,
    reproduce,
    run_checks,
)
from oracle.strategies import Example
from oracle.tolerances import Tolerance, tolerance_for

__version__ = "0.1.0"

__all__ = [
    "ALL_OPS",
    "ELEMENTWISE_OPS",
    "IDENTITIES",
    "SOURCES",
    "AdapterContractError",
    "CheckResult",
    "CheckSettings",
    "ErrorStat",
    "Example",
    "ExampleOutcome",
    "Fault",
    "GradientMismatch",
    "Identity",
    "InvalidShapeError",
    "Ops",
    "Tolerance",
    "UnknownIdentityError",
    "Verdict",
    "WorstElement",
    "__version__",
    "all_identities",
    "check",
    "evaluate_example",
    "get_identity",
    "reproduce",
    "run_checks",
    "select_identities",
    "tolerance_for",
]
