"""The run engine for many checks: ordering, sharding, parallel processes, Ctrl-C.

A *matrix* is every identity x adapter x dtype x mode.  :func:`plan_tasks` lists it in one
canonical order (:func:`sort_key`: the notes' order of identities, then the built-in
adapters in :data:`gradoracle.options.DEFAULT_ADAPTERS` order followed by others by name,
then float64 before float32), so the order never depends on how the flags were written.

- ``--shard K/N`` keeps every N-th task starting at the K-th (:func:`select_shard`);
  the N shards are disjoint, cover the matrix, and each gets a similar mix of slow and
  fast adapters.
- ``--jobs N`` runs tasks in N spawned worker processes.  Each worker loads the adapter
  from its spec string (``torch``, ``pkg.mod:Class?k=v``) and sends the result back as
  :meth:`CheckResult.to_dict`.  A worker that dies (a segfaulting adapter) takes down
  only the checks it was running: each is retried alone once, then recorded as an error.
- Every check uses the same :class:`CheckSettings` (hence the same Hypothesis seed),
  and each check loads a fresh adapter, so a check's result depends only on
  (identity, adapter spec, dtype, settings): not on sharding, jobs, or what ran before.
- Ctrl-C (``KeyboardInterrupt``) stops the run: the results so far are kept and every
  other task becomes a :data:`Verdict.NOT_RUN` record.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from gradoracle.identities import IDENTITIES, Identity
from gradoracle.modes import MODES, adapter_modes
from gradoracle.options import DEFAULT_ADAPTERS
from gradoracle.results import CheckResult, Fault, Verdict
from gradoracle.runner import DTYPES, CheckSettings, check

#: Message of the records of checks an interruption kept from running.
NOT_RUN_MESSAGE = "not run: the run was interrupted (Ctrl-C) before this check finished"

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
        attach_gradients(result, task.adapter_spec)
    return result


def _worker_init() -> None:
    # Ctrl-C is the parent's business: it keeps what finished and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _worker(task: CheckTask, settings: CheckSettings) -> dict[str, Any]:
    return run_task(task, settings).to_dict()


# ---------------------------------------------------------------------- the engine


def _worker_died(task: CheckTask, exc: BaseException) -> CheckResult:
    return CheckResult(
        task.identity,
        task.source,
        task.adapter_name,
        task.dtype,
        Verdict.ERROR,
        Fault.ADAPTER,
        f"the worker process running this check died ({type(exc).__name__}: {exc}); the adapter "
        "probably crashed the interpreter (a segfault or os._exit). Rerun it alone with "
        f"'gradoracle check --identity {task.identity} --adapter {task.adapter_spec} --dtype {task.dtype} "
        f"--mode {task.mode}'.",
        mode=task.mode,
    )


def _stop_workers(executor: ProcessPoolExecutor) -> None:
    """Cancel what has not started and terminate the workers (Ctrl-C must not wait for them)."""
    # ProcessPoolExecutor has no public terminate before Python 3.14; shutdown() forgets
    # the processes, so take them first.
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)


def _run_pool(
    tasks: Sequence[CheckTask],
    todo: deque[int],
    settings: CheckSettings,
    jobs: int,
    done: dict[int, CheckResult],
    on_start: OnStart | None,
    on_result: OnResult | None,
) -> list[int]:
    """Run ``todo`` (indices into ``tasks``) on one pool; the indices in flight if the pool broke."""
    context = multiprocessing.get_context("spawn")  # no fork: torch/jax threads may be live here
    executor = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_worker_init)
    inflight: dict[Future[dict[str, Any]], int] = {}
    try:
        while todo or inflight:
            while todo and len(inflight) < jobs:
                i = todo.popleft()
                try:
                    future = executor.submit(_worker, tasks[i], settings)
                except BrokenProcessPool:  # a worker died since the last wait
                    _stop_workers(executor)
                    if inflight:
                        todo.appendleft(i)
                        return list(inflight.values())
                    return [i]  # retried alone (and so pinned) by the caller
                if on_start is not None:
                    on_start(tasks[i])
                inflight[future] = i
            finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
            for future in finished:
                i = inflight.pop(future)
                try:
                    result = CheckResult.from_dict(future.result())
                except BrokenProcessPool:
                    broken = [i, *inflight.values()]
                    _stop_workers(executor)
                    return broken
                done[i] = result
                if on_result is not None:
                    on_result(result)
    except BaseException:
        _stop_workers(executor)
        raise
    executor.shutdown(wait=True)
    return []


def _run_parallel(
    tasks: Sequence[CheckTask],
    settings: CheckSettings,
    jobs: int,
    done: dict[int, CheckResult],
    on_start: OnStart | None,
    on_result: OnResult | None,
) -> None:
    todo: deque[int] = deque(range(len(tasks)))
    suspects: list[int] = []
    while todo:
        suspects += _run_pool(tasks, todo, settings, jobs, done, on_start, on_result)
    for i in suspects:  # each alone, so a crash is pinned on the check that caused it
        if i in done:
            continue
        if _run_pool(tasks, deque([i]), settings, 1, done, on_start, on_result):
            done[i] = _worker_died(tasks[i], BrokenProcessPool("the worker exited abruptly"))
            if on_result is not None:
                on_result(done[i])


def run_matrix(
    tasks: Sequence[CheckTask],
    settings: CheckSettings,
    jobs: int = 1,
    on_start: OnStart | None = None,
    on_result: OnResult | None = None,
) -> MatrixOutcome:
    """Run ``tasks`` (in this process when ``jobs == 1``); results come back in task order.

    ``on_start(task)`` is called as a task is handed out and ``on_result(result)`` as it
    finishes.  A ``KeyboardInterrupt`` ends the run early: the outcome is marked
    ``interrupted`` and every task without a result gets a ``not-run`` record.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    done: dict[int, CheckResult] = {}
    interrupted = False
    try:
        if jobs == 1 or len(tasks) <= 1:
            for i, task in enumerate(tasks):
                if on_start is not None:
                    on_start(task)
                done[i] = run_task(task, settings)
                if on_result is not None:
                    on_result(done[i])
        else:
            _run_parallel(tasks, settings, min(jobs, len(tasks)), done, on_start, on_result)
    except KeyboardInterrupt:
        interrupted = True
    results = [done[i] if i in done else not_run_result(task) for i, task in enumerate(tasks)]
    return MatrixOutcome(results, interrupted)
