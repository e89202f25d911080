"""The run engine for many checks: ordering, sharding, parallel processes, Ctrl-C.

A *matrix* is every identity x adapter x dtype x mode.  :func:`plan_tasks` lists it in one
canonical order (:func:`sort_key`: the notes' order of identities, then the built-in
adapters in :data:`gradoracle.options.DEFAULT_ADAPTERS` order followed by others by name,
then float64 before float32), so the order never depends on how the flags were written.

- ``--shard K/N`` keeps every N-th task starting at the K-th (:func:`select_shard`);
  the N shards are disjoint, cover the matrix, and each gets a similar mix of slow and
  fast adapters.
- ``isolate=True`` (the CLI's default at any ``--jobs``) runs every task in spawned worker
  processes (:class:`gradoracle.isolation.WorkerPool`, ``jobs`` of them): a worker that
  dies (a segfaulting adapter, ``os._exit``) takes down only the check it was running,
  which is recorded as an error naming the signal or exit code, and a fresh worker
  carries on.  Results come back as :meth:`CheckResult.to_dict`.
- Every call into an adapter goes through :mod:`gradoracle.guard` (time limit, any
  exception, one thread per adapter instance); every check uses the same
  :class:`CheckSettings` (hence the same Hypothesis seed) and each process keeps one
  adapter instance per spec, so a check's result depends on (identity, adapter spec,
  dtype, settings) and that adapter's own state, never on another adapter.
- :class:`ProbeJob` runs an adapter's convention probes the same way (guarded, isolated).
- Ctrl-C (``KeyboardInterrupt``) stops the run: the results so far are kept and every
  other task becomes a :data:`Verdict.NOT_RUN` record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from gradoracle.guard import AdapterCallError, process_session, setup_timeout
from gradoracle.identities import IDENTITIES, Identity
from gradoracle.isolation import WorkerPool, run_jobs_in_process
from gradoracle.modes import MODES, adapter_modes
from gradoracle.options import DEFAULT_ADAPTERS
from gradoracle.results import CheckResult, Fault, Verdict
from gradoracle.runner import DTYPES, CheckSettings, check

#: Message of the records of checks an interruption kept from running.
NOT_RUN_MESSAGE = "not run: the run was interrupted (Ctrl-C) before this check finished"
NOT_RUN_TERMINATED = (
    "not run: the run was stopped by SIGTERM (a cancelled job, kill) before this check finished"
)


class Terminated(KeyboardInterrupt):
    """SIGTERM raised where a Ctrl-C would be (``gradoracle report``'s handler): the run stops
    the same way, and the checks that did not run say which signal stopped it."""


OnStart = Callable[["CheckTask"], None]
OnResult = Callable[[CheckResult], None]


class ShardError(ValueError):
    """A ``--shard`` value that is not ``K/N`` with ``1 <= K <= N``."""


@dataclass(frozen=True)
class CheckTask:
    """One check to run: which identity, which adapter (spec and name), which dtype."""

    identity: str
    source: str
    adapter_spec: str
    adapter_name: str
    dtype: str
    mode: str = "vjp"

    @property
    def id(self) -> str:
        """``identity-adapter-dtype``, plus ``-mode`` outside reverse mode (as :attr:`CheckResult.id`)."""
        base = f"{self.identity}-{self.adapter_name}-{self.dtype}"
        return base if self.mode == "vjp" else f"{base}-{self.mode}"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass
class MatrixOutcome:
    """The results of a matrix run, in task order, and whether it was interrupted."""

    results: list[CheckResult] = field(default_factory=list)
    interrupted: bool = False

    @property
    def not_run(self) -> list[CheckResult]:
        """The records of checks that did not run."""
        return [r for r in self.results if r.verdict == Verdict.NOT_RUN]


# ------------------------------------------------------------------ ordering, shards


def sort_key(identity: str, adapter: str, dtype: str, mode: str = "vjp") -> tuple[Any, ...]:
    """The canonical position of a check: notes' order, built-in adapters first, float64 first,
    then the modes in :data:`gradoracle.modes.MODES` order (vjp, jvp, hvp)."""
    names = list(IDENTITIES)
    i = (names.index(identity), "") if identity in IDENTITIES else (len(names), identity)
    a = (
        (DEFAULT_ADAPTERS.index(adapter), "")
        if adapter in DEFAULT_ADAPTERS
        else (len(DEFAULT_ADAPTERS), adapter)
    )
    d = (DTYPES.index(dtype), "") if dtype in DTYPES else (len(DTYPES), dtype)
    m = (MODES.index(mode), "") if mode in MODES else (len(MODES), mode)
    return (*i, *a, *d, *m)


def result_sort_key(result: CheckResult) -> tuple[Any, ...]:
    """:func:`sort_key` of a result."""
    return sort_key(result.identity, result.adapter, result.dtype, result.mode)


def plan_tasks(
    identities: Sequence[Identity],
    adapters: Sequence[tuple[str, Any]],
    dtypes: Sequence[str],
    modes: Sequence[str] = (),
) -> list[CheckTask]:
    """Every identity x adapter x dtype x mode in canonical order.

    ``adapters`` are ``(spec, name)`` pairs, or ``(spec, adapter)`` pairs; ``modes`` empty
    means every mode each adapter supports (:func:`gradoracle.modes.adapter_modes`: an
    adapter given by name alone runs reverse mode only).  A mode named explicitly is planned
    for every adapter: one that lacks it gets a ``skip`` record that says so.
    """
    tasks = []
    for spec, adapter in adapters:
        name = adapter if isinstance(adapter, str) else str(getattr(adapter, "name", spec))
        chosen = tuple(modes) or (("vjp",) if isinstance(adapter, str) else adapter_modes(adapter))
        for ident in identities:
            for dtype in dict.fromkeys(dtypes):
                for mode in dict.fromkeys(chosen):
                    tasks.append(CheckTask(ident.name, ident.source, spec, name, dtype, mode))
    return sorted(tasks, key=lambda t: sort_key(t.identity, t.adapter_name, t.dtype, t.mode))


def planned_modes(tasks: Sequence[CheckTask]) -> tuple[str, ...]:
    """The modes ``tasks`` check, in :data:`gradoracle.modes.MODES` order (``CheckSettings.modes``)."""
    asked = {t.mode for t in tasks}
    return tuple(m for m in MODES if m in asked)


def parse_shard(text: str) -> Shard:
    """``"K/N"`` -> :class:`Shard`; anything else is a :class:`ShardError` saying what fits."""
    k_text, sep, n_text = text.strip().partition("/")
    try:
        k, n = int(k_text), int(n_text)
    except ValueError:
        k = n = 0
    if not sep or n < 1 or not 1 <= k <= n:
        raise ShardError(
            f"--shard {text!r}: expected K/N with 1 <= K <= N (e.g. --shard 2/4 runs the second of four "
            "slices)"
        )
    return Shard(k, n)


def select_shard(tasks: Sequence[CheckTask], shard: Shard | None) -> list[CheckTask]:
    """Tasks ``K-1, K-1+N, K-1+2N, ...`` of the canonical list (all of them without a shard)."""
    if shard is None:
        return list(tasks)
    return list(tasks[shard.index - 1 :: shard.count])


# ----------------------------------------------------------------------- one task


def not_run_result(task: CheckTask, message: str = NOT_RUN_MESSAGE) -> CheckResult:
    """The record of a check that did not run."""
    return CheckResult(
        task.identity,
        task.source,
        task.adapter_name,
        task.dtype,
        Verdict.NOT_RUN,
        message=message,
        mode=task.mode,
    )


def run_task(task: CheckTask, settings: CheckSettings) -> CheckResult:
    """Run one check with a freshly loaded adapter; a failure also gets its gradients attached.

    The counterexample of a failure gains ``adapter_spec`` and ``gradients`` (autodiff and
    analytic gradient per input at the counterexample) for the report's pictures.
    """
    from gradoracle.reporting.gradients import attach_gradients

    result = check(task.identity, task.adapter_spec, task.dtype, settings, task.mode)
    if result.counterexample is not None:
        result.counterexample.setdefault("adapter_spec", task.adapter_spec)
        attach_gradients(result, task.adapter_spec, settings.timeout_s)
    return result


def _worker_died(task: CheckTask, reason: str) -> CheckResult:
    return CheckResult(
        task.identity,
        task.source,
        task.adapter_name,
        task.dtype,
        Verdict.ERROR,
        Fault.ADAPTER,
        f"{reason}; a fresh worker carried on with the other checks. The adapter probably crashed or "
        f"hung the interpreter. Rerun it alone with 'gradoracle check --identity {task.identity} "
        f"--adapter {task.adapter_spec} --dtype {task.dtype} --mode {task.mode}'.",
        mode=task.mode,
    )


#: Words of a check's message that mean a call into the adapter hung: the guard's time limit
#: (:meth:`gradoracle.guard.AdapterGuard.call`) or the watchdog killing a silent worker.
HANG_MARKS: tuple[str, ...] = ("did not return within", "was silent for")

#: Default of ``--max-hangs``: checks of one adapter that may hang before it is not called again.
DEFAULT_MAX_HANGS = 3


def hung(result: CheckResult) -> bool:
    """Whether a check ended because a call into its adapter hung (past ``--timeout``)."""
    return (
        result.verdict == Verdict.ERROR
        and result.fault == Fault.ADAPTER
        and any(mark in result.message for mark in HANG_MARKS)
    )


class HangBreaker:
    """Stops calling an adapter after it hung in ``limit`` checks (``None`` or 0: never stops).

    Each hang costs the full ``--timeout``; an adapter that hangs in every check would cost
    that for each one (pytest-xdist's ``--max-worker-restart`` is the same idea).  Once
    tripped, the adapter's remaining checks are error records that name the hangs and say how
    to rerun one check alone, so the run ends in seconds with every check accounted for.
    """

    def __init__(self, limit: int | None = DEFAULT_MAX_HANGS) -> None:
        self.limit = limit or None
        self.hangs: dict[str, list[str]] = {}  # adapter spec -> ids of the checks that hung

    def record(self, spec: str, result: CheckResult) -> None:
        """Note ``result`` of a check of the adapter ``spec``."""
        if hung(result):
            self.hangs.setdefault(spec, []).append(result.id)

    def tripped(self, spec: str) -> bool:
        """Whether ``spec`` hung in ``limit`` checks already."""
        return self.limit is not None and len(self.hangs.get(spec, ())) >= self.limit

    def result_for(self, task: CheckTask) -> CheckResult | None:
        """The error record standing for ``task`` once its adapter tripped the breaker, else ``None``."""
        if not self.tripped(task.adapter_spec):
            return None
        ids = self.hangs[task.adapter_spec]
        checks = f"{len(ids)} check{'s' if len(ids) != 1 else ''}"
        return CheckResult(
            task.identity,
            task.source,
            task.adapter_name,
            task.dtype,
            Verdict.ERROR,
            Fault.ADAPTER,
            f"not run: adapter {task.adapter_name!r} hung in {checks} already "
            f"({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''}), each past the --timeout "
            f"limit, so it is not called again (--max-hangs {self.limit}). Rerun this check alone "
            f"with 'gradoracle check --identity {task.identity} --adapter {task.adapter_spec} "
            f"--dtype {task.dtype} --mode {task.mode}', or raise --max-hangs (0: no limit).",
            mode=task.mode,
        )


@dataclass(frozen=True)
class CheckJob:
    """One check as a :class:`gradoracle.isolation.Job` (its record is ``CheckResult.to_dict()``)."""

    task: CheckTask
    settings: CheckSettings

    @property
    def label(self) -> str:
        return self.task.id

    @property
    def affinity(self) -> tuple[str, str]:
        """The checks of one identity on one adapter (its dtypes and modes) share a worker: they
        draw the same examples, so the programs one compiles (JAX: per shape, dtype and kind)
        serve the others."""
        return (self.task.adapter_spec, self.task.identity)

    @property
    def loads(self) -> str:
        """The adapter the check loads in its worker (a worker that has it is preferred)."""
        return self.task.adapter_spec

    def run(self, timeout: float | None) -> dict[str, Any]:
        """Run the check (:func:`run_task`)."""
        return run_task(self.task, self.settings).to_dict()

    def died(self, reason: str) -> dict[str, Any]:
        """An error record naming how the worker ended."""
        return _worker_died(self.task, reason).to_dict()

    def with_output(self, record: dict[str, Any], printed: str) -> dict[str, Any]:
        """``record`` with what the adapter printed during the check (kept for a failure or an
        error only, as pytest shows a failing test's captured output)."""
        if record.get("verdict") not in (Verdict.FAIL, Verdict.ERROR):
            return record
        indented = "\n".join("    " + line for line in printed.splitlines())
        return {
            **record,
            "message": f"{record.get('message', '')}\n  output of the adapter during this check:\n{indented}",
        }


@dataclass(frozen=True)
class AdapterInfo:
    """An adapter loaded in a worker process, as the process that plans the run sees it.

    What planning and the report read of an adapter: its ``name``, the modes it declares
    (``has_jvp``, ``hvp_methods``: :func:`gradoracle.modes.adapter_modes`), the distributions
    it runs on (``frameworks``: :func:`gradoracle.reporting.environment.adapter_frameworks`)
    and the framework runtime of the worker (torch's threads, JAX's devices).
    """

    spec: str
    name: str
    available: bool
    why: str  # why it is not available ("" when it is)
    has_jvp: bool
    hvp_methods: tuple[str, ...]
    frameworks: tuple[str, ...]
    runtime: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadJob:
    """Loading one adapter (import, constructor, ``available()``) in a worker, so that an adapter
    that crashes or hangs while loading ends that worker, not the run; the worker keeps the
    adapter for the checks it runs next.  Its record: ``{"info": AdapterInfo}`` (loaded, available
    or not) or ``{"error": message}``.

    A run with several workers loads each adapter once, the adapters spread over the workers
    (``spread``: each load is a group of its own, so an idle worker takes the next); the checks
    then go first to a worker that has their adapter loaded (:class:`gradoracle.isolation._Queues`),
    and another worker loads it only when the balance of the run needs it there.  Without
    ``spread`` the loads of a run share one worker.
    """

    spec: str
    spread: bool = False

    @property
    def label(self) -> str:
        return f"loading adapter {self.spec}"

    @property
    def affinity(self) -> tuple[str, str]:
        """Spread: one group per adapter (the loads go to the workers side by side); else one group."""
        return ("load", self.spec if self.spread else "")

    @property
    def loads(self) -> str:
        """The adapter this job loads."""
        return self.spec

    def run(self, timeout: float | None) -> dict[str, Any]:
        """Load the adapter through this process's session and read what planning needs."""
        from gradoracle.modes import adapter_hvp_methods
        from gradoracle.reporting.environment import adapter_frameworks, framework_runtime

        entry = process_session().get(self.spec, timeout)
        facts = entry.facts
        if facts is None:
            return {"error": entry.error or f"adapter {self.spec!r} failed to load"}
        ad = entry.adapter

        def read() -> tuple[bool, tuple[str, ...], tuple[str, ...]]:
            return (
                bool(getattr(ad, "has_jvp", False)),
                adapter_hvp_methods(ad),
                tuple(adapter_frameworks(ad)),
            )

        try:
            has_jvp, methods, frameworks = entry.guard.call(
                read, setup_timeout(timeout), f"{facts.name}'s modes"
            )
        except AdapterCallError as exc:
            return {"error": f"adapter {self.spec!r}: {exc}"}
        runtime = framework_runtime()
        info = AdapterInfo(
            self.spec, facts.name, facts.available, facts.why, has_jvp, methods, frameworks, runtime
        )
        return {"info": info}

    def died(self, reason: str) -> dict[str, Any]:
        """The error of an adapter whose loading ended its worker."""
        return {"error": f"adapter {self.spec!r} could not be loaded: {reason}"}


@dataclass(frozen=True)
class ProbeJob:
    """The convention probes of one adapter in some dtypes, each probe a guarded call."""

    spec: str
    adapter_name: str
    dtypes: tuple[str, ...]
    timeout: float | None

    @property
    def label(self) -> str:
        return f"convention probes [{self.adapter_name}]"

    @property
    def loads(self) -> str:
        """The adapter the probes load (a worker that has it is preferred)."""
        return self.spec

    def run(self, timeout: float | None) -> list[dict[str, Any]]:
        """Every probe in every dtype the adapter supports (none when it is not available)."""
        return [p.to_dict() for p in guarded_probes(self.spec, self.dtypes, self.timeout)]

    def died(self, reason: str) -> list[dict[str, Any]]:
        """An error record per probe and dtype naming how the worker ended."""
        from gradoracle.conventions import ERROR, PROBES, ProbeResult

        return [
            ProbeResult(
                p.name,
                self.adapter_name,
                dtype,
                p.description,
                notes_text=p.notes_text,
                error=f"not run: {reason}",
                verdict=ERROR,
            ).to_dict()
            for dtype in self.dtypes
            for p in PROBES
        ]


def guarded_probes(adapter: Any, dtypes: Sequence[str], timeout: float | None) -> list[Any]:
    """The convention probes of one adapter (an object or a spec), each :func:`run_probe` call
    through the adapter's guard: a probe that raises, hangs or returns nonsense is a record."""
    from gradoracle.conventions import ERROR, PROBES, ProbeResult, run_probe
    from gradoracle.guard import guard_for, read_facts

    spec = adapter if isinstance(adapter, str) else None
    if isinstance(adapter, str):
        entry = process_session().get(adapter, timeout)
        if entry.facts is None:
            return []
        ad, guard, facts = entry.adapter, entry.guard, entry.facts
    else:
        ad, guard = adapter, guard_for(adapter)
        try:
            facts = read_facts(ad, guard, timeout)
        except AdapterCallError:
            return []
    if not facts.available:
        return []
    out: list[Any] = []
    for dtype in dtypes:
        if dtype not in facts.dtypes:
            continue
        for probe in PROBES:
            what = f"{facts.name} probe {probe.name}/{dtype}"
            try:
                res = guard.call(partial(run_probe, probe, ad, dtype, spec), timeout, what)
            except AdapterCallError as exc:
                res = ProbeResult(
                    probe.name,
                    facts.name,
                    dtype,
                    probe.description,
                    notes_text=probe.notes_text,
                    error=str(exc),
                    verdict=ERROR,
                )
            out.append(res)
    return out


def run_matrix(
    tasks: Sequence[CheckTask],
    settings: CheckSettings,
    jobs: int = 1,
    on_start: OnStart | None = None,
    on_result: OnResult | None = None,
    isolate: bool | None = None,
    pool: WorkerPool | None = None,
    max_hangs: int | None = DEFAULT_MAX_HANGS,
) -> MatrixOutcome:
    """Run ``tasks``; results come back in task order.

    ``isolate`` runs them in ``jobs`` worker processes (default: when ``jobs > 1``; a
    ``pool`` given is used, and kept open, instead of a new one); otherwise in this process.
    ``on_start(task)`` is called as a task is handed out and ``on_result(result)`` as it
    finishes.  An adapter that hung in ``max_hangs`` checks is not called again
    (:class:`HangBreaker`; ``None`` or 0: no limit).  A ``KeyboardInterrupt`` ends the run
    early: the outcome is marked ``interrupted`` and every task without a result gets a
    ``not-run`` record.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if not settings.modes:
        settings = settings.with_(modes=planned_modes(tasks))
    if isolate is None:
        isolate = pool is not None or jobs > 1
    done: dict[int, CheckResult] = {}
    interrupted = False
    message = NOT_RUN_MESSAGE
    work = [CheckJob(task, settings) for task in tasks]

    def started(i: int) -> None:
        if on_start is not None:
            on_start(tasks[i])

    breaker = HangBreaker(max_hangs)

    def finished(i: int, record: dict[str, Any]) -> None:
        done[i] = CheckResult.from_dict(record)
        breaker.record(tasks[i].adapter_spec, done[i])
        if on_result is not None:
            on_result(done[i])

    def skip(i: int) -> dict[str, Any] | None:
        instead = breaker.result_for(tasks[i])
        return None if instead is None else instead.to_dict()

    try:
        if not isolate:
            run_jobs_in_process(work, settings.timeout_s, started, finished, skip)
        elif pool is not None:
            pool.run(work, started, finished, skip)
        else:
            with WorkerPool(min(jobs, max(1, len(tasks))), settings.timeout_s) as own:
                own.run(work, started, finished, skip)
    except KeyboardInterrupt as exc:
        interrupted = True
        if isinstance(exc, Terminated):
            message = NOT_RUN_TERMINATED
    results = [done[i] if i in done else not_run_result(task, message) for i, task in enumerate(tasks)]
    return MatrixOutcome(results, interrupted)


def run_probe_jobs(
    adapters: Sequence[tuple[str, str]],
    dtypes: Sequence[str],
    timeout: float | None,
    pool: WorkerPool | None = None,
) -> list[Any]:
    """The convention probes of every ``(spec, name)`` adapter, in ``pool`` (or in this process)."""
    from gradoracle.conventions import ProbeResult

    # one job per adapter and dtype: the probes of one adapter (JAX's take about 1.2 s) run on
    # every worker instead of holding one worker at the end of a run while the others wait
    work = [ProbeJob(spec, name, (dtype,), timeout) for spec, name in adapters for dtype in dtypes]
    records = pool.run(work) if pool is not None else run_jobs_in_process(work, timeout)
    return [ProbeResult(**record) for i in range(len(work)) for record in records.get(i, [])]
