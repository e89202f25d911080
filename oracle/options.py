"""Options shared by the CLI and the pytest plugin, defined once.

Each :class:`SharedOption` knows its CLI flag (``--adapter``), its pytest flag
(``--gradoracle-adapter``), its ini key (``gradoracle_adapter``), its type and default.
:func:`add_to_argparse` and :func:`add_to_pytest` register the same set on each
front-end, and :func:`run_config` turns the parsed values into a :class:`RunConfig`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gradoracle.runner import CheckSettings

#: The dtypes a check can run in (``gradoracle.runner.DTYPES`` is this tuple).
DTYPES: tuple[str, ...] = ("float64", "float32")

DEFAULT_ADAPTERS: tuple[str, ...] = ("numpy", "torch", "jax")


@dataclass(frozen=True)
class SharedOption:
    """One option as both front-ends spell it."""

    name: str  # dest, and the CLI flag without dashes
    help: str
    multiple: bool = False
    type: Callable[[str], Any] = str
    default: Any = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None

    @property
    def cli_flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def pytest_flag(self) -> str:
        return "--gradoracle-" + self.name.replace("_", "-")

    @property
    def ini_key(self) -> str:
        return "gradoracle_" + self.name


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


#: Default ``--timeout`` (seconds per call into an adapter); :data:`gradoracle.guard.DEFAULT_TIMEOUT_S`.
DEFAULT_TIMEOUT_S = 20.0


def timeout_seconds(text: str) -> float | None:
    """``--timeout`` value: seconds > 0, or 0 / ``none`` for no limit."""
    if str(text).strip().lower() in ("none", "0", "0.0"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds > 0 (or 0 / none for no limit), got {text!r}")
    return value


#: Default ``--configurations``: hyper-parameter configurations per layer identity and check.
DEFAULT_CONFIGURATIONS = 8


def configurations_count(text: str) -> int:
    """``--configurations`` value: a positive count, or ``all`` / ``0`` (draw them freely) -> 0."""
    word = str(text).strip().lower()
    if word in ("all", "0", "free"):
        return 0
    try:
        value = int(word)
    except ValueError:
        value = -1
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a number of configurations >= 1, or 'all' to draw them freely; got {text!r}"
        )
    return value


#: The check's modes (``gradoracle.modes.MODES`` is this tuple): reverse, forward, second order.
MODES: tuple[str, ...] = ("vjp", "jvp", "hvp")


def _mode(text: str) -> str:
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in MODES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown mode {text!r}; choose from {', '.join(MODES)} (vjp: reverse mode, jvp: forward mode, "
            "hvp: Hessian-vector products); repeat the flag or separate with commas"
        )
    return ",".join(names)


def _dtype(text: str) -> str:
    if text not in DTYPES:
        raise argparse.ArgumentTypeError(f"unknown dtype {text!r}; choose from {', '.join(DTYPES)}")
    return text


SHARED_OPTIONS: tuple[SharedOption, ...] = (
    SharedOption(
        "adapter",
        "adapter to put under test: a short name (numpy, torch, jax), an entry point of the "
        "'gradoracle.adapters' group, or 'package.module:Class'; repeatable",
        multiple=True,
        metavar="NAME_OR_PATH",
    ),
    SharedOption(
        "identity",
        "identity to check: a name from 'gradoracle list' (that identity alone), 'family:NAME', "
        "a 'notes:' source label, or a glob over names ('elementwise-*'); repeatable; default: all",
        multiple=True,
        metavar="NAME",
    ),
    SharedOption(
        "dtype", "dtype to check; repeatable; default: float64 and float32", multiple=True, type=_dtype
    ),
    SharedOption(
        "mode",
        "mode to check: vjp (reverse mode), jvp (forward mode), hvp (Hessian-vector products); repeatable "
        "or comma-separated; default: every mode the adapter supports",
        multiple=True,
        type=_mode,
        metavar="MODE",
    ),
    SharedOption(
        "examples",
        "Hypothesis examples per check (default 30; a layer check adds one for each configuration of its "
        "covering set they did not draw)",
        type=_positive_int,
        default=30,
        metavar="N",
    ),
    SharedOption(
        "configurations",
        "hyper-parameter configurations (shapes, stride, padding, groups, ...) of each layer identity: a "
        "fixed covering set where every value of every hyper-parameter occurs at least once, grown with "
        "pairs of values up to N, the arrays drawn freely in each; every configuration of the set is "
        "evaluated in every check (one extra example for each one the examples did not draw); 'all' = "
        "Hypothesis draws every configuration, none guaranteed (slower with JAX: one program each) "
        f"(default {DEFAULT_CONFIGURATIONS})",
        type=configurations_count,
        default=DEFAULT_CONFIGURATIONS,
        metavar="N|all",
    ),
    SharedOption(
        "seed", "seed for Hypothesis and the random directions (default 0)", type=int, default=0, metavar="S"
    ),
    SharedOption(
        "timeout",
        f"time limit in seconds on each call into an adapter (one example of a check, one probe, "
        f"available()); a call past it is recorded as a hang; 0 = none (default {DEFAULT_TIMEOUT_S:g})",
        type=timeout_seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
    ),
    SharedOption(
        "max_hangs",
        "stop calling an adapter after it hung (past --timeout) in this many checks: its other checks "
        "are errors that say so; 0 = no limit (default 3)",
        type=_non_negative_int,
        default=3,
        metavar="N",
    ),
    SharedOption(
        "known_deviations",
        "TOML file of known deviations (identity, adapter, dtype, reason, link)",
        type=Path,
        metavar="FILE",
    ),
)


@dataclass(frozen=True)
class RunConfig:
    """What to run, resolved from either front-end."""

    adapters: tuple[str, ...] = ()
    identities: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = DTYPES
    #: the modes asked for; ``()``: every mode each adapter supports
    modes: tuple[str, ...] = ()
    examples: int = 30
    seed: int = 0
    timeout: float | None = DEFAULT_TIMEOUT_S
    #: checks of one adapter that may hang before it is not called again; 0: no limit
    max_hangs: int = 3
    #: configurations per layer identity (0: drawn freely)
    configurations: int = DEFAULT_CONFIGURATIONS
    known_deviations: Path | None = None
    settings: CheckSettings = field(default_factory=lambda: _check_settings())


def _check_settings(**kwargs: Any) -> CheckSettings:
    """``CheckSettings(**kwargs)``, importing the runner (NumPy, Hypothesis) only when needed."""
    from gradoracle.runner import CheckSettings

    return CheckSettings(**kwargs)


def add_to_argparse(parser: argparse.ArgumentParser, exclude: Sequence[str] = ()) -> None:
    """Register the shared options on a CLI sub-command."""
    for opt in SHARED_OPTIONS:
        if opt.name in exclude:
            continue
        kwargs: dict[str, Any] = {"help": opt.help, "dest": opt.name, "type": opt.type}
        if opt.metavar:
            kwargs["metavar"] = opt.metavar
        if opt.multiple:
            kwargs.update(action="append", default=[])
        else:
            kwargs["default"] = opt.default
        parser.add_argument(opt.cli_flag, **kwargs)


def add_to_pytest(parser: Any) -> None:
    """Register the shared options in the ``gradoracle`` group of pytest, each also an ini key."""
    group = parser.getgroup("gradoracle", "gradient conformance checks (gradoracle)")
    for opt in SHARED_OPTIONS:
        kwargs: dict[str, Any] = {"help": opt.help, "dest": "gradoracle_" + opt.name}
        if opt.metavar:
            kwargs["metavar"] = opt.metavar
        if opt.multiple:
            kwargs.update(action="append", default=[])
        else:
            kwargs["default"] = None
        group.addoption(opt.pytest_flag, **kwargs)
        parser.addini(
            opt.ini_key,
            help=opt.help,
            type="args" if opt.multiple else "string",
            default=[] if opt.multiple else None,
        )


def run_config(values: dict[str, Any], settings: CheckSettings | None = None) -> RunConfig:
    """A :class:`RunConfig` from parsed values (missing or empty values take the defaults)."""
    examples = values.get("examples") or 30
    seed = values.get("seed")
    seed = 0 if seed is None else int(seed)
    base = settings or _check_settings()
    timeout = values.get("timeout", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, str):
        timeout = timeout_seconds(timeout)
    raw = values.get("configurations")
    configurations = DEFAULT_CONFIGURATIONS if raw is None or raw == "" else configurations_count(str(raw))
    return RunConfig(
        adapters=tuple(values.get("adapter") or ()),
        identities=tuple(values.get("identity") or ()),
        dtypes=tuple(dict.fromkeys(values.get("dtype") or DTYPES)),
        modes=modes_from(values.get("mode")),
        examples=int(examples),
        seed=seed,
        timeout=timeout,
        max_hangs=3 if values.get("max_hangs") is None else _non_negative_int(str(values["max_hangs"])),
        configurations=configurations,
        known_deviations=Path(values["known_deviations"]) if values.get("known_deviations") else None,
        settings=base.with_(
            examples=int(examples), seed=seed, timeout_s=timeout, configurations=configurations
        ),
    )


def modes_from(values: Sequence[str] | str | None) -> tuple[str, ...]:
    """The modes named in ``values`` (repeated or comma-separated), in :data:`MODES` order.

    ``()`` when none are named (each adapter then runs every mode it supports); an unknown
    name raises ``ValueError`` naming the choices.
    """
    if isinstance(values, str):
        values = [values]
    names: list[str] = []
    for value in values or ():
        try:
            names += _mode(str(value)).split(",")
        except argparse.ArgumentTypeError as exc:
            raise ValueError(str(exc)) from None
    return tuple(m for m in MODES if m in names)
