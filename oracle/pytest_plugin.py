"""gradoracle's pytest plugin (registered through the ``pytest11`` entry point).

Active once gradoracle is installed; ``-p no:gradoracle`` disables it.  It adds:

- the ``gradoracle`` option group (``--gradoracle-adapter``, ``-identity``, ``-dtype``,
  ``-examples``, ``-seed``, ``-timeout``, ``-max-hangs``, ``-known-deviations``, ``-report``,
  ``-isolate``), each also an ini key ``gradoracle_<name>``;
- every call into an adapter (checks and convention probes) through its guard
  (:mod:`gradoracle.guard`: one thread per adapter, ``--gradoracle-timeout``, any
  exception a record); ``--gradoracle-isolate`` runs each check in a worker process
  (:mod:`gradoracle.isolation`), so an adapter that segfaults fails its item, not the session;
- with at least one adapter, the conformance suite as pytest items, one per
  identity x adapter x dtype (``gradoracle::conv-input[torch-float32]``), selectable with
  ``-k``, working under pytest-xdist, failing with the oracle's diagnostic; known
  deviations become xfail; a "gradoracle conformance" terminal summary (the matrix and
  stale deviation entries); ``--gradoracle-report DIR`` writes the report files, with the
  convention probes judged: a probe value outside the generalised gradient is listed in the
  summary and fails the session (``outside-subdifferential``);
- the ``gradoracle`` fixture (:class:`gradoracle.user_checks.GradOracle`) with which a test
  checks a function of its own.

Loading this module imports nothing beyond pytest and the standard library: the option
definitions are read in ``pytest_addoption`` and everything numeric is imported inside the
hooks that need it, only when the suite or the fixture is used.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import sys
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from gradoracle.deviations import Deviation, DeviationOutcome
    from gradoracle.results import CheckResult
    from gradoracle.runner import CheckSettings
    from gradoracle.user_checks import GradOracle

#: ``user_properties`` key under which an item carries its result (JSON) to the controller.
RESULT_PROPERTY = "gradoracle_result"
#: Node id of the virtual collector that holds the conformance items.
SUITE_NODE = "gradoracle"
REPORT_FORMATS: tuple[str, ...] = ("json", "md", "html", "junit")


# ----------------------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    """The shared options (``gradoracle.options``) plus ``--gradoracle-report``."""
    from gradoracle.options import add_to_pytest

    add_to_pytest(parser)
    help_text = (
        "write the conformance report files (json, md, html, junit; as 'gradoracle report') to DIR "
        "at the end of the session"
    )
    parser.getgroup("gradoracle").addoption(
        "--gradoracle-report", dest="gradoracle_report", default=None, metavar="DIR", help=help_text
    )
    parser.addini("gradoracle_report", help=help_text, type="string", default=None)
    isolate_help = (
        "run each conformance check in a worker process (as 'gradoracle check' and 'report' do): an "
        "adapter that crashes the interpreter (segfault, os._exit) or hangs in C fails its own item "
        "instead of the session; costs a process start (~1-2 s) per pytest process"
    )
    parser.getgroup("gradoracle").addoption(
        "--gradoracle-isolate",
        dest="gradoracle_isolate",
        action="store_true",
        default=None,
        help=isolate_help,
    )
    parser.addini("gradoracle_isolate", help=isolate_help, type="bool", default=False)
    parser.getgroup("gradoracle").addoption(
        "--gradoracle-reproduce-failure",
        dest="gradoracle_reproduce_failure",
        default=None,
        metavar="BLOB",
        help="replay exactly the example of this blob (printed under a Hypothesis profile with "
        "print_blob=True) in the selected gradoracle checks and fixture calls",
    )


@dataclass
class PluginConfig:
    """The options as resolved for this session (command line over ini file)."""

    adapters: tuple[str, ...] = ()
    identities: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = ()
    modes: tuple[str, ...] = ()  # () = every mode each adapter supports
    examples: int | None = None  # None: the Hypothesis profile's, else gradoracle's 30
    seed: int | None = None  # None: Hypothesis chooses (--hypothesis-seed, derandomize, random)
    configurations: int | None = None  # None: the default covering set; 0: drawn freely ('all')
    known_deviations: Path | None = None
    report_dir: Path | None = None
    timeout: float | None = 20.0
    max_hangs: int = 3  # checks of one adapter that may hang before it is not called again; 0: no limit
    isolate: bool = False
    sources: dict[str, str] = field(default_factory=dict)  # option -> "command line" | ini path


def _ini_base(config: pytest.Config) -> Path:
    inipath = getattr(config, "inipath", None)
    return Path(inipath).parent if inipath else Path(config.invocation_params.dir)


def _resolve_options(config: pytest.Config) -> PluginConfig:
    """Command line first, then the ini key; values checked with the shared option types."""
    from gradoracle.options import DEFAULT_TIMEOUT_S, SHARED_OPTIONS

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    ini_name = str(getattr(config, "inipath", None) or "the ini file")
    invocation = Path(config.invocation_params.dir)
    options = [(o.name, o.pytest_flag, o.ini_key, o.multiple, o.type) for o in SHARED_OPTIONS]
    options.append(("report", "--gradoracle-report", "gradoracle_report", False, Path))
    for name, flag, ini_key, multiple, kind in options:
        cli = config.getoption("gradoracle_" + name, default=None)
        raw: Any
        if multiple:
            raw, where = (
                (list(cli), "command line") if cli else (list(config.getini(ini_key) or []), ini_name)
            )
        else:
            ini_value = config.getini(ini_key)
            raw, where = (cli, "command line") if cli is not None else (ini_value or None, ini_name)
        if raw is None or raw == []:
            continue
        label = f"{flag} (ini key {ini_key}, from {where})"
        try:
            converted = [kind(v) for v in raw] if multiple else kind(raw)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            raise pytest.UsageError(f"gradoracle: bad value {raw!r} for {label}: {exc}") from exc
        if isinstance(converted, Path) and not converted.is_absolute():
            converted = (invocation if where == "command line" else _ini_base(config)) / converted
        values[name] = converted
        sources[name] = where
    isolate_cli = config.getoption("gradoracle_isolate", default=None)
    isolate = bool(isolate_cli) if isolate_cli is not None else bool(config.getini("gradoracle_isolate"))
    return PluginConfig(
        timeout=values.get("timeout", DEFAULT_TIMEOUT_S),
        max_hangs=int(values.get("max_hangs", 3)),
        isolate=isolate,
        adapters=tuple(dict.fromkeys(values.get("adapter", ()))),
        identities=tuple(values.get("identity", ())),
        dtypes=tuple(dict.fromkeys(values.get("dtype", ()))),
        modes=_modes(values.get("mode", ())),
        examples=int(values["examples"]) if "examples" in values else None,
        seed=int(values["seed"]) if "seed" in values else None,
        configurations=int(values["configurations"]) if "configurations" in values else None,
        known_deviations=values.get("known_deviations"),
        report_dir=values.get("report"),
        sources=sources,
    )


def _modes(values: Sequence[str]) -> tuple[str, ...]:
    from gradoracle.options import modes_from

    return modes_from(values)


#: Options that only the conformance suite reads (the fixture takes dtypes, modes, examples,
#: seed, timeout and configurations): given on the command line without an adapter they would
#: do nothing, so they are a usage error.
SUITE_ONLY: tuple[str, ...] = ("report", "known_deviations", "identity", "max_hangs")

_CONFIG_KEY = pytest.StashKey[PluginConfig]()


_SELECTORS_KEY = pytest.StashKey[list[str]]()


def _take_selectors(config: pytest.Config) -> list[str]:
    """The conformance node ids among the command-line arguments, taken out of them.

    ``gradoracle``, ``gradoracle::NAME`` and ``gradoracle::NAME[ADAPTER-DTYPE]`` name no file,
    so pytest would answer "file or directory not found"; they are removed from the paths
    pytest collects and select conformance items instead.  (Under xdist the controller
    leaves them for the workers, which collect.)  A real file or folder called
    ``gradoracle`` keeps its ordinary meaning.
    """
    base = Path(config.invocation_params.dir)
    taken = [
        a
        for a in config.args
        if (a == SUITE_NODE or a.startswith(SUITE_NODE + "::")) and not (base / SUITE_NODE).exists()
    ]
    xdist_controller = getattr(config.option, "dist", "no") != "no" and not hasattr(config, "workerinput")
    if taken and not xdist_controller:
        config.args[:] = [a for a in config.args if a not in taken]
    return taken


def _check_blob(blob: str | None) -> None:
    """A ``--gradoracle-reproduce-failure`` value Hypothesis cannot decode is a usage error (it was
    an error in every selected check, quoting Hypothesis's internals)."""
    if not blob:
        return
    from hypothesis.core import decode_failure
    from hypothesis.errors import InvalidArgument

    try:
        decode_failure(blob.encode())
    except (InvalidArgument, ValueError) as exc:
        raise pytest.UsageError(
            f"gradoracle: --gradoracle-reproduce-failure {blob!r} is not a blob Hypothesis printed ({exc}); "
            "copy the value from a failure's 'replay exactly this example' line"
        ) from None


def pytest_configure(config: pytest.Config) -> None:
    """Resolve the options; with adapters, register the conformance suite for this session."""
    config.addinivalue_line("markers", "gradoracle: a gradoracle conformance check (added by the plugin)")
    options = _resolve_options(config)
    config.stash[_CONFIG_KEY] = options
    _check_blob(config.getoption("gradoracle_reproduce_failure", default=None))
    selectors = _take_selectors(config)
    config.stash[_SELECTORS_KEY] = selectors
    if selectors and not options.adapters:
        raise pytest.UsageError(
            f"gradoracle: {selectors[0]!r} names a conformance check, but no adapter is under test: "
            "add --gradoracle-adapter NAME (or the ini key gradoracle_adapter)"
        )
    if options.adapters:
        config.pluginmanager.register(ConformanceSuite(config, options), "gradoracle-conformance")
    elif suite_only := [name for name in SUITE_ONLY if options.sources.get(name) == "command line"]:
        # from the ini file they simply wait for a session that runs the suite
        flag = "--gradoracle-" + suite_only[0].replace("_", "-")
        raise pytest.UsageError(
            f"gradoracle: {flag} needs the conformance suite: name an adapter with --gradoracle-adapter "
            "(or the ini key gradoracle_adapter)"
        )


# ------------------------------------------------------------------------- the fixture

#: Hypothesis refuses ``@settings`` / ``@seed`` on a test without ``@given`` with this phrase.
POINTLESS = "on a test without `@given` is completely pointless"
#: Where a test of the fixture sets what those decorators would have (shown under the refusal).
DECORATOR_HINT = (
    "gradoracle: Hypothesis' decorators apply to @given tests only; a test of the gradoracle fixture "
    "sets a check's examples and seed as arguments, gradoracle.check(..., examples=50, seed=1), or every "
    "check's in a Hypothesis profile (settings.register_profile / --hypothesis-profile) or with "
    "--gradoracle-examples / --gradoracle-seed; checks run without a deadline (the per-call timeout, "
    "--gradoracle-timeout, guards hangs)"
)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under Hypothesis' refusal of ``@settings(...)`` on a test of the fixture without ``@given``,
    a section saying where the fixture's examples, seed and deadline are set."""
    report: pytest.TestReport = yield
    if call.when != "call" or call.excinfo is None or "gradoracle" not in getattr(item, "fixturenames", ()):
        return report
    if POINTLESS in str(call.excinfo.value):
        report.sections.append(("gradoracle", DECORATOR_HINT))
    drawn = _fixture_drawn_how(item.config, call.excinfo.value)
    if drawn:
        report.sections.append(("gradoracle", drawn))
    return report


def _fixture_drawn_how(config: pytest.Config, exc: BaseException) -> str | None:
    """How a failing fixture check's examples were drawn and how to draw them again
    (:func:`_drawn_how`), when Hypothesis generated its seed; None for a seed the command line
    or the check gave (the user has it), and for anything but a :class:`GradientMismatch`."""
    from gradoracle.results import GradientMismatch

    if not isinstance(exc, GradientMismatch) or exc.hypothesis_seed is None:
        return None
    options = config.stash.get(_CONFIG_KEY, None) or PluginConfig()
    return _drawn_how(_check_settings(config, options), exc.hypothesis_seed)


def _check_settings(config: pytest.Config, options: PluginConfig) -> CheckSettings:
    """The checks' settings: explicit gradoracle options > the loaded Hypothesis profile > defaults.

    Computed when a check runs, so that a profile loaded by a conftest.py counts.
    """
    from gradoracle.runner import profile_settings

    settings = profile_settings(options.examples, options.seed).with_(timeout_s=options.timeout)
    if options.configurations is not None:
        settings = settings.with_(configurations=options.configurations)
    if options.report_dir is not None:  # a large failing example's inputs beside the report, as
        # `gradoracle report --out DIR` keeps them (GRADORACLE_REPRO_DIR, when set, wins)
        settings = settings.with_(repro_dir=os.path.abspath(Path(options.report_dir) / "repro"))
    blob = config.getoption("gradoracle_reproduce_failure", default=None)
    return settings.with_(reproduce_failure=blob) if blob else settings


@pytest.fixture(scope="session")
def gradoracle(request: pytest.FixtureRequest) -> GradOracle:
    """Check a function of your own: ``gradoracle.check(forward, vjp=..., inputs=..., identity=...)``.

    See :mod:`gradoracle.user_checks`.  Examples and seed: ``--gradoracle-examples`` /
    ``--gradoracle-seed`` (or their ini keys) > the loaded Hypothesis profile > 30 examples,
    a seed chosen by Hypothesis; dtypes: ``--gradoracle-dtype`` / ``gradoracle_dtype``, else
    float64.  Session-scoped (it holds only settings), so a Hypothesis ``@given`` test can
    take it; there, each ``check`` draws one example through the test's own Hypothesis run.
    """
    from gradoracle.user_checks import GradOracle

    options = request.config.stash.get(_CONFIG_KEY, None) or PluginConfig()
    settings = _check_settings(request.config, options)
    return GradOracle(
        examples=settings.examples,
        seed=settings.seed,
        dtypes=options.dtypes or ("float64",),
        settings=settings,
        modes=options.modes,
        verbose=request.config.get_verbosity() > 0,
    )


# ---------------------------------------------------------------- the conformance suite


class CheckFailed(Exception):
    """Raised by an item whose check failed or errored; carries the result for repr_failure."""

    def __init__(self, result: CheckResult) -> None:
        super().__init__(result.message)
        self.result = result


class UnexpectedFault(Exception):
    """A failure of another kind than its known deviation's ``fault``: not the expected one."""

    def __init__(self, result: CheckResult) -> None:
        super().__init__(result.message)
        self.result = result


class ConformanceItem(pytest.Item):
    """One identity x adapter x dtype check, run through :func:`gradoracle.runner.check`."""

    def __init__(
        self,
        *,
        identity: str,
        family: str,
        source: str,
        spec: str,
        adapter_label: str,
        dtype: str,
        suite: ConformanceSuite,
        mode: str = "vjp",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.identity = identity
        self.spec = spec
        self.adapter_label = adapter_label
        self.dtype = dtype
        self.mode = mode
        self.suite = suite
        self.source = source
        self.add_marker("gradoracle")
        self.extra_keyword_matches.update({family, source, adapter_label, dtype, mode})
        self.deviation = suite.deviation_for(identity, adapter_label, dtype, mode)
        if self.deviation is not None:
            # a known deviation is an expected failure: XFAIL while it fails, XPASS (a failure
            # under xfail_strict) once it passes; only the check's own failure counts as expected
            link = f" ({self.deviation.link})" if self.deviation.link else ""
            reason = f"known deviation: {self.deviation.reason}{link}"
            self.add_marker(pytest.mark.xfail(reason=reason, raises=CheckFailed))

    def runtest(self) -> None:
        """Run the check; map its verdict to a pytest outcome (skip, failure; xfail by the marker)."""
        from gradoracle.results import Verdict

        result = self.suite.run_check(self.identity, self.spec, self.adapter_label, self.dtype, self.mode)
        # the raw result travels to the controller, which applies the known deviations once
        payload = {"label": self.adapter_label, "result": result.to_dict()}
        self.user_properties.append((RESULT_PROPERTY, json.dumps(payload, default=str)))
        if result.verdict == Verdict.SKIP:
            # reported at the item ("gradoracle:1: reason"), not at this line of the plugin
            raise pytest.skip.Exception(result.message, _use_item_location=True)
        if result.verdict in (Verdict.FAIL, Verdict.ERROR):
            if self.deviation is not None and not self.deviation.accepts(result):
                # the entry accepts another kind of failure (its ``fault``): this one is not expected
                raise UnexpectedFault(result)
            raise CheckFailed(result)
        if self.deviation is not None:
            import warnings

            from gradoracle.deviations import StaleDeviationWarning

            warnings.warn(
                StaleDeviationWarning(
                    f"{self.nodeid} passes: the known deviation {self.deviation.label()} "
                    f"({self.deviation.reason}) is stale; remove it from the known-deviations file"
                ),
                stacklevel=1,
            )

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        """The oracle's diagnostic (worst element, three values, tolerance, repro) verbatim."""
        if isinstance(excinfo.value, (CheckFailed, UnexpectedFault)):
            from gradoracle.results import brief_message

            message = brief_message(excinfo.value.result.message, self.config.get_verbosity() > 0)
            return f"{message}\n{self._rerun_text(excinfo.value.result)}"
        return str(super().repr_failure(excinfo))

    def _rerun_text(self, r: CheckResult) -> str:
        """How the failure was found and how to run it again."""
        settings = self.suite.check_settings()
        found = (
            f"(verdict {r.verdict}: example {r.first_failure} of {r.examples} drawn failed"
            if r.first_failure
            else f"(verdict {r.verdict}: {r.examples} example(s) drawn"
        )
        lines = [f"{found}, then {r.shrink_calls} shrinking call(s); {settings.examples} examples per check)"]
        lines.append(f"rerun this check alone: pytest '{self.nodeid}'")
        if r.blob:
            lines.append(
                f"replay exactly this example: pytest '{self.nodeid}' --gradoracle-reproduce-failure={r.blob}"
            )
        lines.append(_drawn_how(settings, r.hypothesis_seed))
        return "\n".join(lines)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, 0, f"gradoracle: {self.name}"


def _drawn_how(settings: CheckSettings, hypothesis_seed: str | None) -> str:
    """How a failing check's examples were drawn and how to draw them again, true to this session:
    the blob replayed, ``--gradoracle-seed``, ``--hypothesis-seed``, ``derandomize``, or a random
    seed (and whether the profile's example database will replay the failure first)."""
    import hypothesis.core
    from hypothesis import settings as hypothesis_settings

    profile = hypothesis_settings.default
    if settings.reproduce_failure:
        return "the example replayed is the one of --gradoracle-reproduce-failure"
    if settings.seed is not None:
        return f"examples drawn with --gradoracle-seed {settings.seed}: the same command draws them again"
    forced = getattr(hypothesis.core, "global_force_seed", None)
    if forced is not None:
        return f"examples drawn with --hypothesis-seed={forced}: the same command draws them again"
    if getattr(profile, "derandomize", False):
        return "examples drawn derandomized (your Hypothesis profile's derandomize=True): each run draws them"
    if getattr(profile, "database", None) is None:
        replay = "your Hypothesis profile has no example database, so the next run draws new examples"
    else:
        replay = "the example database replays the failing one first on the next run"
    if hypothesis_seed is None:
        return f"examples drawn with a random seed; {replay}"
    return (
        f"examples drawn with a random seed: --hypothesis-seed={hypothesis_seed} draws them again; {replay}"
    )


class SuiteCollector(pytest.Collector):
    """The virtual collector ``gradoracle`` holding every conformance item."""

    def __init__(self, *, suite: ConformanceSuite, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.suite = suite

    def collect(self) -> Iterator[ConformanceItem]:
        for ident in self.suite.identities:
            for spec, label in self.suite.adapter_labels:
                for dtype in self.suite.dtypes:
                    for mode in self.suite.adapter_modes[label]:
                        suffix = "" if mode == "vjp" else f"-{mode}"
                        name = f"{ident.name}[{label}-{dtype}{suffix}]"
                        if not self.suite.selected(name):
                            continue
                        yield ConformanceItem.from_parent(
                            self,
                            name=name,
                            # parsed like a parametrized test's id (pytest 9 compares structured
                            # ids: names and params), so --lf / --ff / --sw find it again
                            nodeid=f"{SUITE_NODE}::{name}",
                            identity=ident.name,
                            family=ident.family,
                            source=ident.source,
                            spec=spec,
                            adapter_label=label,
                            dtype=dtype,
                            mode=mode,
                            suite=self.suite,
                        )


def _adapter_label(spec: str, adapter: Any, taken: set[str]) -> str:
    """The adapter's own name, made unique (and free of id-breaking characters)."""
    try:
        name = str(getattr(adapter, "name", "") or spec)
    except Exception:  # a name property that raises: the spec names it
        name = spec
    label = "".join(c if c.isalnum() or c in "_.:-" else "_" for c in name)
    if label in taken:
        label = "".join(c if c.isalnum() or c in "_.-" else "_" for c in spec)
    while label in taken:
        label += "_"
    taken.add(label)
    return label


class ConformanceSuite:
    """The session-level plugin registered when adapters are given."""

    def __init__(self, config: pytest.Config, options: PluginConfig) -> None:
        from gradoracle.adapters import AdapterLoadError, load_adapter
        from gradoracle.deviations import DeviationFileError, load_deviations
        from gradoracle.identities import UnknownIdentityError, select_identities
        from gradoracle.modes import adapter_modes
        from gradoracle.runner import DTYPES

        self.config = config
        self.options = options
        self.selectors: list[str] = config.stash.get(_SELECTORS_KEY, [])
        self.dtypes: tuple[str, ...] = options.dtypes or DTYPES
        try:
            self.identities = select_identities(list(options.identities))
        except UnknownIdentityError as exc:
            raise pytest.UsageError(f"gradoracle: --gradoracle-identity: {exc}") from exc
        self.deviations: list[Deviation] = []
        if options.known_deviations is not None:
            try:
                self.deviations = load_deviations(options.known_deviations)
            except DeviationFileError as exc:
                raise pytest.UsageError(f"gradoracle: --gradoracle-known-deviations: {exc}") from exc
        if any(":" in spec.partition("?")[0] for spec in options.adapters):
            # 'mymod:MyAdapter' next to the tests must import under the `pytest` script too
            for folder in (str(config.rootpath), str(config.invocation_params.dir)):
                if folder not in sys.path:
                    sys.path.append(folder)
        taken: set[str] = set()
        self.adapter_labels: list[tuple[str, str]] = []
        #: per adapter label, the modes it runs (--gradoracle-mode, or every mode it supports)
        self.adapter_modes: dict[str, tuple[str, ...]] = {}
        self._pool: Any = None  # the worker pool of --gradoracle-isolate, started on first use
        for spec in options.adapters:
            if options.isolate:  # loaded in the worker: a constructor that crashes ends it, not pytest
                from gradoracle.matrix import LoadJob

                record = self._worker_pool().run([LoadJob(spec)])[0]
                if "info" not in record:
                    self._worker_pool().close()
                    raise pytest.UsageError(f"gradoracle: --gradoracle-adapter {spec}: {record['error']}")
                adapter = record["info"]
            else:
                try:
                    adapter = load_adapter(spec)
                except AdapterLoadError as exc:
                    raise pytest.UsageError(f"gradoracle: --gradoracle-adapter {spec}: {exc}") from exc
                except Exception as exc:  # the user's module or constructor failed in its own way
                    raised = f"loading it raised {type(exc).__name__}: {exc}"
                    raise pytest.UsageError(f"gradoracle: --gradoracle-adapter {spec}: {raised}") from exc
            label = _adapter_label(spec, adapter, taken)
            self.adapter_labels.append((spec, label))
            self.adapter_modes[label] = options.modes or adapter_modes(adapter)
        self.results: list[tuple[str, CheckResult]] = []  # (adapter label, result), in report order
        self.written: dict[str, Path] = {}
        self.report_problem: str | None = None
        self.probe_failures: list[Any] = []  # convention probes outside the generalised gradient
        self._outcome: DeviationOutcome | None = None
        from gradoracle.matrix import HangBreaker

        self.hang_breaker = HangBreaker(options.max_hangs)  # per pytest process (each xdist worker)
        self.started = time.perf_counter()

    def _worker_pool(self) -> Any:
        if self._pool is None:
            from gradoracle.isolation import WorkerPool

            self._pool = WorkerPool(1, self.options.timeout)
        return self._pool

    def run_check(self, identity: str, spec: str, label: str, dtype: str, mode: str = "vjp") -> CheckResult:
        """One check: through the adapter's guard here, or in a worker process with --gradoracle-isolate."""
        from gradoracle.identities import get_identity
        from gradoracle.matrix import CheckJob, CheckTask
        from gradoracle.results import CheckResult
        from gradoracle.runner import check

        task = CheckTask(identity, get_identity(identity).source, spec, label, dtype, mode)
        instead = self.hang_breaker.result_for(task)  # the adapter hung in --gradoracle-max-hangs checks
        if instead is not None:
            return instead
        if not self.options.isolate:
            result = check(identity, spec, dtype, self.check_settings(), mode)
        else:
            records = self._worker_pool().run([CheckJob(task, self.check_settings())])
            result = CheckResult.from_dict(records[0])
        self.hang_breaker.record(spec, result)
        return result

    def pytest_unconfigure(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    @property
    def settings(self) -> CheckSettings:
        """The checks' settings as they stand now (see :func:`_check_settings`)."""
        return self.check_settings()

    def check_settings(self) -> CheckSettings:
        """The settings of the suite's checks, with the modes the suite runs as the adapters' hint
        (``CheckSettings.modes``)."""
        settings = _check_settings(self.config, self.options)
        planned = {m for modes in self.adapter_modes.values() for m in modes}
        if settings.modes or not planned:
            return settings
        from gradoracle.modes import MODES

        return settings.with_(modes=tuple(m for m in MODES if m in planned))

    def deviation_for(
        self, identity: str, adapter_label: str, dtype: str, mode: str = "vjp"
    ) -> Deviation | None:
        """The known deviation covering one check, if any."""
        from gradoracle.results import CheckResult, Verdict

        probe = CheckResult(identity, "", adapter_label, dtype, Verdict.SKIP, mode=mode)
        return next((d for d in self.deviations if d.matches(probe)), None)

    def selected(self, name: str) -> bool:
        """Whether the command line's conformance node ids (if any) select the item ``name``."""
        if not self.selectors:
            return not self._named_other_tests()
        for selector in self.selectors:
            wanted = selector.partition("::")[2]
            if not wanted or wanted == name or (("[" not in wanted) and name.split("[")[0] == wanted):
                return True
        return False

    def _named_other_tests(self) -> bool:
        """True when the command line names tests of its own (``path::test``) and no conformance id:
        ``pytest tests/test_x.py::test_a`` runs that test, not the suite besides."""
        from_args = self.config.args_source == pytest.Config.ArgsSource.ARGS
        return from_args and any("::" in a for a in self.config.args)

    def pytest_report_header(self) -> list[str]:
        adapters = ", ".join(
            f"{label} ({spec})" if label != spec else label for spec, label in self.adapter_labels
        )
        settings = self.check_settings()
        if self.options.examples is not None:
            examples_from = "gradoracle option"
        elif settings.examples != 30:
            examples_from = "Hypothesis profile"
        else:
            examples_from = "gradoracle default"
        seed = (
            f"seed {settings.seed}"
            if settings.seed is not None
            else "seed chosen by Hypothesis (--hypothesis-seed, derandomize, else random)"
        )
        lines = [
            f"gradoracle: adapters {adapters}; {len(self.identities)} identities x {', '.join(self.dtypes)}"
            f"{' x modes ' + ', '.join(self.options.modes) if self.options.modes else ''}; "
            f"{settings.examples} examples per check ({examples_from}), {seed}"
        ]
        if self.options.known_deviations is not None:
            lines.append(f"gradoracle: known deviations from {self.options.known_deviations}")
        return lines

    # ---- collection -------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, session: pytest.Session, items: list[pytest.Item]) -> None:
        """Append the conformance items (before -k / -m deselection, which run after this)."""
        collector = SuiteCollector.from_parent(
            session, name=SUITE_NODE, path=session.config.rootpath / SUITE_NODE, nodeid=SUITE_NODE, suite=self
        )
        # the standard collection protocol: counted by the terminal ("collected N items"), and a
        # crash in collect() becomes a collection error instead of an internal error
        report = collector.ihook.pytest_make_collect_report(collector=collector)
        collector.ihook.pytest_collectreport(report=report)
        if report.passed:
            items.extend(x for x in report.result if isinstance(x, pytest.Item))

    # ---- results, from this process or (under xdist) from the workers ------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        from gradoracle.results import CheckResult

        if report.when != "call":  # the teardown report carries the same user_properties
            return
        for key, value in report.user_properties:
            if key == RESULT_PROPERTY and isinstance(value, str):
                payload = json.loads(value)
                self.results.append((payload["label"], CheckResult.from_dict(payload["result"])))

    def _is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    def _ordered(self) -> list[tuple[str, CheckResult]]:
        """The results in suite order (identity, adapter, dtype), whatever order workers sent them in."""
        idents = {i.name: n for n, i in enumerate(self.identities)}
        labels = {label: n for n, (_, label) in enumerate(self.adapter_labels)}
        dtypes = {d: n for n, d in enumerate(self.dtypes)}
        modes = {m: n for n, m in enumerate(("vjp", "jvp", "hvp"))}
        return sorted(
            self.results,
            key=lambda lr: (
                idents.get(lr[1].identity, -1),
                labels.get(lr[0], -1),
                dtypes.get(lr[1].dtype, -1),
                modes.get(lr[1].mode, -1),
            ),
        )

    def _deviation_outcome(self) -> DeviationOutcome | None:
        """Apply the known deviations to every result, once (as ``gradoracle report`` does)."""
        if self.options.known_deviations is None:
            return None
        if self._outcome is None:
            from gradoracle.reporting.known_deviations import apply_known_deviations

            self._outcome = apply_known_deviations([r for _, r in self.results], self.deviations)
        return self._outcome

    def _stopped(self, session: pytest.Session, exitstatus: int) -> str | None:
        """Why the session ended before running every selected check (``None``: it did not)."""
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            return "the pytest session was interrupted (Ctrl-C) before this check ran"
        if session.shouldfail or session.shouldstop:
            reason = session.shouldfail or session.shouldstop
            return f"the pytest session stopped early ({reason}; -x / --maxfail) before this check ran"
        return None

    def _add_not_run(self, session: pytest.Session, why: str) -> None:
        """A ``not-run`` record for every selected conformance item without a result (this process's
        items; under xdist the controller collects none, so only what the workers reported counts)."""
        from gradoracle.results import CheckResult, Verdict

        done = {(r.identity, label, r.dtype, r.mode) for label, r in self.results}
        for item in session.items:
            if not isinstance(item, ConformanceItem):
                continue
            key = (item.identity, item.adapter_label, item.dtype, item.mode)
            if key not in done:
                record = CheckResult(
                    item.identity,
                    item.source,
                    item.adapter_label,
                    item.dtype,
                    Verdict.NOT_RUN,
                    message=f"not run: {why}",
                    mode=item.mode,
                )
                self.results.append((item.adapter_label, record))
                done.add(key)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Write the report files (controller only) once every result is in.

        A session cut short (Ctrl-C, ``-x``, ``--maxfail``) marks the selected checks that did
        not run ``not-run`` (the report's status is then ``incomplete``, never ``conform``) and,
        interrupted, runs no convention probe (as ``gradoracle report`` after a Ctrl-C).
        """
        if self._is_worker():
            return
        stopped = self._stopped(session, exitstatus)
        if stopped is not None:
            self._add_not_run(session, stopped)
        if self.options.report_dir is None or not self.results:
            return
        import dataclasses

        from gradoracle.matrix import run_probe_jobs
        from gradoracle.reporting import write_reports

        results = [r for _, r in self._ordered()]
        deviations = self._deviation_outcome()
        from gradoracle.guard import process_session
        from gradoracle.reporting.environment import frameworks_that_ran

        # every probe is a guarded call (time limit, any exception); in a worker with --gradoracle-isolate
        pool = self._worker_pool() if self.options.isolate else None
        interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
        probes: list[Any] = []
        if not interrupted:  # after a Ctrl-C the adapter's thread may still be inside a check
            try:
                probes = run_probe_jobs(self.adapter_labels, self.dtypes, self.settings.timeout_s, pool)
            except KeyboardInterrupt:  # a Ctrl-C during the probes loses only the probes
                interrupted = True
        self.probes = probes  # the terminal summary shows them
        loaded = [
            entry.adapter
            for entry in (process_session().get(spec) for spec, _ in self.adapter_labels)
            if entry.adapter is not None
        ]
        workers = getattr(self.config.option, "numprocesses", None)
        meta: dict[str, Any] = {
            "front_end": "pytest plugin",
            "invocation": shlex.join(["pytest", *self.config.invocation_params.args]),
            "adapters": list(self.options.adapters),
            "identities": [i.name for i in self.identities],
            "dtypes": list(self.dtypes),
            "examples": self.settings.examples,
            "seed": self.settings.seed,
            "settings": {k: v for k, v in dataclasses.asdict(self.settings).items() if k != "repro_dir"},
            "jobs": workers if isinstance(workers, int) and workers > 0 else 1,
            "isolation": "process" if self.options.isolate else "none",
            "shard": None,
            "modes": list(self.options.modes),
            "planned_checks": len(self.identities)
            * len(self.dtypes)
            * sum(len(self.adapter_modes[label]) for _, label in self.adapter_labels),
            "interrupted": interrupted,
            "duration_s": time.perf_counter() - self.started,
            "frameworks": frameworks_that_ran(loaded, results),
        }
        if self.options.known_deviations is not None:
            meta["known_deviations"] = {
                "file": str(self.options.known_deviations),
                "entries": [d.to_dict() for d in self.deviations],
            }
        formats = list(REPORT_FORMATS)
        missing = [m for m in ("jinja2", "matplotlib") if importlib.util.find_spec(m) is None]
        if missing:  # the HTML page needs the 'report' extra; the other files do not
            formats.remove("html")
            self.report_problem = (
                f"report.html not written: {', '.join(missing)} not installed "
                "(pip install 'gradoracle[report]')"
            )
        try:
            self.written = write_reports(
                results, probes, self.options.report_dir, formats, meta=meta, deviations=deviations
            )
        except (OSError, ValueError, ImportError) as exc:
            self.report_problem = f"cannot write the report to {self.options.report_dir}: {exc}"
        # a value outside the generalised gradient is a failure, not a convention: the session fails
        self.probe_failures = [p for p in probes if getattr(p, "verdict", None) == "fail"]
        if self.probe_failures and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    # ---- the terminal summary ----------------------------------------------------------

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self._is_worker() or (not self.results and not self.report_problem):
            return
        terminalreporter.write_sep("=", "gradoracle conformance")
        markup = bool(getattr(terminalreporter._tw, "hasmarkup", False))
        width = int(getattr(terminalreporter._tw, "fullwidth", 120))
        if self.results:
            outcome = self._deviation_outcome()
            rows = [i.name for i in self.identities]
            columns = [
                _column(label, dtype, mode)
                for _, label in self.adapter_labels
                for dtype in self.dtypes
                for mode in self.adapter_modes[label]
            ]
            terminalreporter.write(matrix_text(self._ordered(), markup, width, rows, columns))
            for line in outcome.warnings() if outcome is not None else []:
                terminalreporter.write_line(f"WARNING: {line}", yellow=True, bold=True)
        if self.probe_failures:
            terminalreporter.write_line(
                f"FAILED: {len(self.probe_failures)} convention probe(s) outside the generalised (Clarke) "
                "gradient (fault outside-subdifferential):",
                red=True,
                bold=True,
            )
            for probe in self.probe_failures:
                terminalreporter.write_line(probe.message())
        if getattr(self, "probes", None):
            terminalreporter.write(conventions_text(self.probes, markup, width))
        for fmt, path in self.written.items():
            terminalreporter.write_line(f"gradoracle report ({fmt}): {path}")
        if self.report_problem:
            terminalreporter.write_line(f"WARNING: {self.report_problem}", red=True)


# ---------------------------------------------------------------------------- the matrix


def _column(label: str, dtype: str, mode: str) -> str:
    """``torch-float32``, with `` jvp`` / `` hvp`` after the dtype outside reverse mode."""
    return f"{label}-{dtype}" if mode == "vjp" else f"{label}-{dtype} {mode}"


def _cell(result: CheckResult) -> tuple[str, str]:
    """``verdict error/tolerance`` and a colour for one matrix cell (the same scale in every dtype)."""
    verdict = str(result.verdict)
    colour = {"pass": "green", "fail": "red", "error": "magenta", "skip": "yellow", "xfail": "cyan"}
    err = f" {result.max_ratio():.2g}" if result.errors and verdict in ("pass", "fail", "xfail") else ""
    shown = verdict.upper() if verdict in ("fail", "error") else verdict
    precision = result.precision or {}
    if precision.get("mode"):
        shown += f" {precision['mode']} {float(precision['bits']):.1f}b"
    return f"{shown}{err}", colour.get(verdict, "white")


def conventions_text(probes: Sequence[Any], markup: bool, width: int) -> str:
    """The convention probes as the probe x framework table (see ``cli.common.conventions_table``)."""
    from io import StringIO

    from rich.console import Console

    from gradoracle.cli.common import conventions_table

    buffer = StringIO()
    console = Console(
        file=buffer,
        width=max(width, 40),
        force_terminal=markup,
        color_system="standard" if markup else None,
        highlight=False,
    )
    console.print(conventions_table(probes))
    return buffer.getvalue()


def matrix_text(
    results: Sequence[tuple[str, CheckResult]],
    markup: bool,
    width: int,
    row_order: Sequence[str] = (),
    column_order: Sequence[str] = (),
) -> str:
    """The conformance matrix: identities x (adapter-dtype), verdict and max relative error.

    Rows and columns follow ``row_order`` / ``column_order`` (the suite's order, whatever
    order xdist workers reported in); those without a result are left out.
    """
    from io import StringIO

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from gradoracle.text import NAME_LIMIT, clean_text

    cells_by_row: dict[str, dict[str, CheckResult]] = {}
    for label, r in results:
        cells_by_row.setdefault(r.identity, {})[_column(label, r.dtype, r.mode)] = r
    seen_columns = {col for cells in cells_by_row.values() for col in cells}
    columns = [c for c in column_order if c in seen_columns]
    columns += sorted(seen_columns - set(columns))
    row_names = [n for n in row_order if n in cells_by_row]
    row_names += [n for n in cells_by_row if n not in row_names]
    rows = {n: cells_by_row[n] for n in row_names}
    table = Table()
    table.add_column("identity", no_wrap=True)
    for col in columns:
        label, _, dtype = col.rpartition("-")
        table.add_column(Text(clean_text(f"{label}\n{dtype}", NAME_LIMIT)), no_wrap=True)
    for identity, cells in rows.items():
        rendered = []
        for col in columns:
            if col not in cells:
                rendered.append("")
                continue
            text, colour = _cell(cells[col])
            rendered.append(f"[{colour}]{text}[/]" if markup else text)
        table.add_row(Text(clean_text(identity, NAME_LIMIT)), *rendered)
    counts: dict[str, int] = {}
    for _, r in results:
        counts[str(r.verdict)] = counts.get(str(r.verdict), 0) + 1
    buffer = StringIO()
    console = Console(
        file=buffer,
        width=max(width, 8 + 16 * (len(columns) + 2)),  # never truncate a cell
        force_terminal=markup,
        color_system="standard" if markup else None,
        highlight=False,
        markup=markup,
    )
    console.print(table)
    console.print(
        "cells: verdict and error/tolerance, the worst error as a fraction of what the tolerance "
        "allows (a check fails above 1; the same scale for float32 and float64)",
        soft_wrap=True,
    )
    console.print(", ".join(f"{n} {v}" for v, n in sorted(counts.items())), markup=False)
    return buffer.getvalue()
