"""gradoracle: a gradient-verification test oracle for ML frameworks.

Importing this package imports neither torch nor jax; adapters load lazily by name.
The public names below are imported on first access (PEP 562), so that loading the
pytest plugin (``oracle.pytest_plugin``) does not import NumPy or the catalogue.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real names for type checkers; at run time they load on first access
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
    from oracle.reporting import load_report, write_reports
    from oracle.results import (
        AdapterContractError,
        CheckResult,
        ErrorStat,
        Fault,
        GradientMismatch,
        Verdict,
        WorstElement,
    )
    from oracle.runner import CheckSettings, ExampleOutcome, check, evaluate_example, reproduce, run_checks
    from oracle.strategies import Example
    from oracle.tolerances import Tolerance, tolerance_for
    from oracle.user_checks import (
        FrameworkUnavailableError,
        GradOracle,
        UserCheckError,
        check_gradients,
        check_gradients_at,
    )

_EXPORTS: dict[str, str] = {
    "IDENTITIES": "oracle.identities",
    "SOURCES": "oracle.identities",
    "Identity": "oracle.identities",
    "InvalidShapeError": "oracle.identities",
    "UnknownIdentityError": "oracle.identities",
    "all_identities": "oracle.identities",
    "get_identity": "oracle.identities",
    "select_identities": "oracle.identities",
    "ALL_OPS": "oracle.ops",
    "ELEMENTWISE_OPS": "oracle.ops",
    "Ops": "oracle.ops",
    "AdapterContractError": "oracle.results",
    "CheckResult": "oracle.results",
    "ErrorStat": "oracle.results",
    "Fault": "oracle.results",
    "GradientMismatch": "oracle.results",
    "Verdict": "oracle.results",
    "WorstElement": "oracle.results",
    "CheckSettings": "oracle.runner",
    "ExampleOutcome": "oracle.runner",
    "check": "oracle.runner",
    "evaluate_example": "oracle.runner",
    "reproduce": "oracle.runner",
    "run_checks": "oracle.runner",
    "Example": "oracle.strategies",
    "Tolerance": "oracle.tolerances",
    "tolerance_for": "oracle.tolerances",
    "write_reports": "oracle.reporting",
    "load_report": "oracle.reporting",
    "FrameworkUnavailableError": "oracle.user_checks",
    "GradOracle": "oracle.user_checks",
    "UserCheckError": "oracle.user_checks",
    "check_gradients": "oracle.user_checks",
    "check_gradients_at": "oracle.user_checks",
}

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
    "FrameworkUnavailableError",
    "GradOracle",
    "GradientMismatch",
    "Identity",
    "InvalidShapeError",
    "Ops",
    "Tolerance",
    "UnknownIdentityError",
    "UserCheckError",
    "Verdict",
    "WorstElement",
    "__version__",
    "all_identities",
    "check",
    "check_gradients",
    "check_gradients_at",
    "evaluate_example",
    "get_identity",
    "load_report",
    "reproduce",
    "run_checks",
    "select_identities",
    "tolerance_for",
    "write_reports",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first access (PEP 562) and cache it in the module."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'oracle' has no attribute {name!r}")
