"""gradoracle: a gradient-verification test oracle for ML frameworks.

Importing this package imports neither torch nor jax; adapters load lazily by name.
The public names below are imported on first access (PEP 562), so that loading the
pytest plugin (``gradoracle.pytest_plugin``) does not import NumPy or the catalogue.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real names for type checkers; at run time they load on first access
    from gradoracle.deviations import StaleDeviationWarning
    from gradoracle.identities import (
        IDENTITIES,
        SOURCES,
        Identity,
        InvalidShapeError,
        UnknownIdentityError,
        all_identities,
        get_identity,
        select_identities,
    )
    from gradoracle.ops import ALL_OPS, ELEMENTWISE_OPS, Ops
    from gradoracle.reporting import load_report, write_reports
    from gradoracle.results import (
        AdapterContractError,
        CheckResult,
        ErrorStat,
        Fault,
        GradientMismatch,
        Verdict,
        WorstElement,
    )
    from gradoracle.runner import (
        CheckSettings,
        ExampleOutcome,
        check,
        evaluate_example,
        reproduce,
        run_checks,
    )
    from gradoracle.strategies import Example
    from gradoracle.tolerances import Tolerance, tolerance_for
    from gradoracle.user_checks import (
        FrameworkUnavailableError,
        GradOracle,
        UserCheckError,
        check_gradients,
        check_gradients_at,
    )

_EXPORTS: dict[str, str] = {
    "StaleDeviationWarning": "gradoracle.deviations",
    "IDENTITIES": "gradoracle.identities",
    "SOURCES": "gradoracle.identities",
    "Identity": "gradoracle.identities",
    "InvalidShapeError": "gradoracle.identities",
    "UnknownIdentityError": "gradoracle.identities",
    "all_identities": "gradoracle.identities",
    "get_identity": "gradoracle.identities",
    "select_identities": "gradoracle.identities",
    "ALL_OPS": "gradoracle.ops",
    "ELEMENTWISE_OPS": "gradoracle.ops",
    "Ops": "gradoracle.ops",
    "AdapterContractError": "gradoracle.results",
    "CheckResult": "gradoracle.results",
    "ErrorStat": "gradoracle.results",
    "Fault": "gradoracle.results",
    "GradientMismatch": "gradoracle.results",
    "Verdict": "gradoracle.results",
    "WorstElement": "gradoracle.results",
    "CheckSettings": "gradoracle.runner",
    "ExampleOutcome": "gradoracle.runner",
    "check": "gradoracle.runner",
    "evaluate_example": "gradoracle.runner",
    "reproduce": "gradoracle.runner",
    "run_checks": "gradoracle.runner",
    "Example": "gradoracle.strategies",
    "Tolerance": "gradoracle.tolerances",
    "tolerance_for": "gradoracle.tolerances",
    "write_reports": "gradoracle.reporting",
    "load_report": "gradoracle.reporting",
    "FrameworkUnavailableError": "gradoracle.user_checks",
    "GradOracle": "gradoracle.user_checks",
    "UserCheckError": "gradoracle.user_checks",
    "check_gradients": "gradoracle.user_checks",
    "check_gradients_at": "gradoracle.user_checks",
}


def _installed_version() -> str:
    """The version from the installed distribution's metadata (pyproject.toml is the one source)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gradoracle")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return "0+unknown"


__version__ = _installed_version()

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
    "StaleDeviationWarning",
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
    raise AttributeError(f"module 'gradoracle' has no attribute {name!r}")
