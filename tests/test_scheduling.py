"""``--jobs`` scheduling (issue 16): the checks of one identity on one adapter stay on the worker
that compiled their programs, and the run's tail stays parallel."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import pytest

from gradoracle.isolation import WorkerPool, _Queues, _Worker


@dataclass(frozen=True)
class PidJob:
    """Records which worker process ran it (sleeps a little so both workers get work)."""

    name: str
    affinity: Any
    pause: float = 0.05

    @property
    def label(self) -> str:
        return self.name

    def run(self, timeout: float | None) -> tuple[str, int]:
        time.sleep(self.pause)
        return (self.name, os.getpid())

    def died(self, reason: str) -> tuple[str, int]:
        return (self.name, -1)


def _worker() -> _Worker:
    return _Worker(process=None, conn=None)  # type: ignore[arg-type]


def test_queues_keep_a_group_on_its_worker_and_steal_only_at_the_tail() -> None:
    jobs = [PidJob(f"{g}{i}", g) for g in "abc" for i in range(3)]
    q = _Queues(jobs)
    w1, w2 = _worker(), _worker()
    assert q.take(w1, set()) == 0  # a0: w1 opens group a
    assert q.take(w2, {w1.affinity}) == 3  # b0: w2 opens the first group nobody holds
    assert q.take(w1, {w2.affinity}) == 1  # a1: w1 stays on a
    assert q.take(w1, {w2.affinity}) == 2  # a2
    assert q.take(w1, {w2.affinity}) == 6  # a is done: c0, the next free group
    assert q.take(w2, {w1.affinity}) == 4  # b1
    assert q.take(w2, {w1.affinity}) == 5  # b2
    # every group left is held by w1: w2 takes the last job of the largest one
    assert q.take(w2, {w1.affinity}) == 8
    assert q.take(w1, {w2.affinity}) == 7
    assert not q
    # jobs without an affinity are a group each, in order
    q = _Queues([PidJob("x", None), PidJob("y", None)])
    w = _worker()
    assert [q.take(w, set()), q.take(w, set())] == [0, 1]


@dataclass(frozen=True)
class AdapterJob(PidJob):
    """A job of one adapter (``loads``), as the report's checks, loads and probes are."""

    loads: str | None = None


def test_a_worker_opens_groups_of_an_adapter_it_has_loaded_first() -> None:
    """A framework is imported by as few workers as the balance needs: a worker that loaded torch
    takes the next free torch group, not the first free group (whose adapter it would have to
    import).  Negative control: jobs that say nothing of their adapter keep the first-free order."""
    order = [("jax", "i1"), ("torch", "i1"), ("jax", "i2"), ("torch", "i2"), ("jax", "i3"), ("torch", "i3")]
    jobs = [AdapterJob(f"{a}-{i}", (a, i), loads=a) for a, i in order]
    q = _Queues(jobs)
    w_jax, w_torch = _worker(), _worker()
    w_jax.loaded.add("jax")
    w_torch.loaded.add("torch")
    assert q.take(w_torch, set()) == 1  # torch/i1, not jax/i1 (the first free group)
    assert q.take(w_jax, {w_torch.affinity}) == 0
    assert q.take(w_torch, {w_jax.affinity}) == 3  # torch/i2
    assert q.take(w_jax, {w_torch.affinity}) == 2
    assert q.take(w_torch, {w_jax.affinity}) == 5  # torch/i3
    # no torch group left: the torch worker takes the first free group and now has jax too
    assert q.take(w_torch, {w_jax.affinity}) == 4
    assert w_torch.loaded == {"torch", "jax"} and not q
    # negative control: without ``loads`` the first free group, whatever the worker loaded
    q = _Queues([PidJob(j.name, j.affinity) for j in jobs])
    w = _worker()
    w.loaded.add("torch")
    assert q.take(w, set()) == 0


def test_a_pool_sends_checks_to_the_worker_that_loaded_their_adapter() -> None:
    """Across runs of one pool (the report's load pass, then its checks' pass), the first check of
    each adapter goes to the worker that loaded it, though the checks come interleaved and the
    first-free order would send the first check of ``a`` to whichever worker asks first."""
    loads = [AdapterJob("load-a", ("load", "a"), 0.3, "a"), AdapterJob("load-b", ("load", "b"), 0.3, "b")]
    order = [("a", "i1"), ("b", "i1"), ("a", "i2"), ("b", "i2")]
    checks = [AdapterJob(f"{a}-{i}-{k}", (a, i), 0.05, a) for a, i in order for k in range(2)]
    with WorkerPool(2, timeout=30.0) as pool:
        loaded = pool.run(loads)
        done = pool.run(checks)
    loader = {"a": loaded[0][1], "b": loaded[1][1]}
    assert loader["a"] != loader["b"]  # the two loads ran side by side, one per worker
    first = {a: next(done[n][1] for n, j in enumerate(checks) if j.loads == a) for a in "ab"}
    assert first == loader


def test_a_report_loads_each_adapter_once_spread_over_the_workers() -> None:
    """The report sends one load per adapter, each a group of its own (so two workers load two
    adapters side by side), not one copy per worker (every worker importing every framework:
    torch alone costs about 1.2 s of CPU per worker).  A run of one check loads in one worker."""
    from rich.console import Console

    from gradoracle.cli.common import load_adapters
    from gradoracle.matrix import AdapterInfo, LoadJob

    class RecordingPool:
        workers = 2

        def __init__(self) -> None:
            self.work: list[Any] = []

        def run(self, work: list[Any]) -> dict[int, Any]:
            self.work = list(work)
            return {
                i: {"info": AdapterInfo(j.spec, j.spec, True, "", False, (), ())} for i, j in enumerate(work)
            }

    pool = RecordingPool()
    quiet = Console(quiet=True)
    loaded = load_adapters(["numpy", "torch", "jax"], False, quiet, pool=pool, checks=10)
    assert [spec for spec, _ in loaded] == ["numpy", "torch", "jax"]
    assert [j.spec for j in pool.work] == ["numpy", "torch", "jax"]  # once each
    assert all(isinstance(j, LoadJob) and j.loads == j.spec for j in pool.work)
    assert len({j.affinity for j in pool.work}) == 3  # a group each: spread over the workers
    load_adapters(["numpy", "torch"], False, quiet, pool=pool, checks=1)
    assert len({j.affinity for j in pool.work}) == 1  # one check: one worker loads both


def test_a_pool_runs_each_group_on_one_worker() -> None:
    groups = ["g1", "g2", "g3", "g4"]
    jobs = [PidJob(f"{g}-{i}", g) for g in groups for i in range(4)]
    with WorkerPool(2, timeout=30.0) as pool:
        done = pool.run(jobs)
    assert len(done) == len(jobs)
    pids: dict[str, set[int]] = {}
    for i, job in enumerate(jobs):
        name, pid = done[i]
        assert name == job.name
        pids.setdefault(job.affinity, set()).add(pid)
    # each group ran on one worker (no stealing: there were always free groups but the last)
    assert sum(len(p) == 1 for p in pids.values()) >= len(groups) - 1
    assert len(set().union(*pids.values())) == 2  # and both workers worked
    # negative control: without affinity, consecutive jobs of a group spread over the workers
    with WorkerPool(2, timeout=30.0) as pool:
        plain = [PidJob(j.name, None) for j in jobs]
        spread = pool.run(plain)
    by_group: dict[str, set[int]] = {}
    for i, job in enumerate(jobs):
        by_group.setdefault(job.affinity, set()).add(spread[i][1])
    assert any(len(p) == 2 for p in by_group.values())


def test_jobs_default_is_auto_one_per_core_up_to_the_cap() -> None:
    import argparse

    from gradoracle.cli.common import (
        AUTO_JOBS,
        AUTO_JOBS_CAP,
        add_isolation_options,
        jobs_count,
        worker_count,
    )
    from gradoracle.isolation import usable_cores

    parser = argparse.ArgumentParser()
    add_isolation_options(parser)
    args = parser.parse_args([])
    assert args.jobs == AUTO_JOBS and args.isolate
    assert worker_count(args.jobs, args.isolate) == min(usable_cores(), AUTO_JOBS_CAP)
    assert worker_count(AUTO_JOBS, isolate=False) == 1  # in-process: one at a time
    assert jobs_count("auto") == AUTO_JOBS and jobs_count("0") == 0 and jobs_count("3") == 3
    assert worker_count(1) == 1
    with pytest.raises(argparse.ArgumentTypeError, match="auto"):
        jobs_count("-2")


@dataclass(frozen=True)
class AtexitJob:
    """Registers an exit handler in the worker that would write ``marker`` at a normal exit."""

    marker: str

    @property
    def label(self) -> str:
        return "atexit"

    affinity: Any = None

    def run(self, timeout: float | None) -> int:
        import atexit
        from pathlib import Path

        atexit.register(Path(self.marker).write_text, "the interpreter shut down normally")
        return os.getpid()

    def died(self, reason: str) -> int:
        return -1


def _run_atexit_job_and_exit(marker: str) -> None:
    AtexitJob(marker).run(None)


def test_workers_leave_with_status_0_without_the_interpreters_shutdown(tmp_path: Any) -> None:
    """After the last result the worker ``os._exit``s: the frameworks' exit handlers (JAX's and
    torch's teardown, ~0.8 s per worker) do not run, and the exit status is still 0."""
    import multiprocessing

    marker = tmp_path / "marker.txt"
    pool = WorkerPool(1, timeout=30.0)
    pid = pool.run([AtexitJob(str(marker))])[0]
    processes = [w.process for w in pool._idle]
    pool.close()
    assert pid > 0 and [p.exitcode for p in processes] == [0]
    assert not marker.exists()
    # negative control: the same handler in a process that exits the normal way does run
    control = multiprocessing.get_context("spawn").Process(
        target=_run_atexit_job_and_exit, args=(str(marker),)
    )
    control.start()
    control.join(60)
    assert control.exitcode == 0 and marker.read_text() == "the interpreter shut down normally"


def test_a_run_of_fewer_checks_than_jobs_starts_fewer_workers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """Each worker loads every adapter before the checks, but a run with fewer checks than
    ``--jobs`` starts (and loads in) only as many workers as it has checks.  Negative control:
    two checks start two."""
    from gradoracle.cli import main
    from gradoracle.isolation import usable_cores

    if usable_cores() < 2:
        pytest.skip("needs two usable cores for --jobs 2")
    started: list[int] = []
    real = WorkerPool._start

    def counting(self: WorkerPool) -> Any:
        started.append(1)
        return real(self)

    monkeypatch.setattr(WorkerPool, "_start", counting)
    args = ["report", "--identity", "matvec-jacobian", "--adapter", "numpy", "--mode", "vjp"]
    args += ["--examples", "2", "--jobs", "2", "--format", "json", "-q"]
    assert main([*args, "--dtype", "float64", "--out", str(tmp_path / "one")]) == 0
    assert len(started) == 1
    started.clear()
    assert main([*args, "--out", str(tmp_path / "two")]) == 0  # float64 and float32
    assert len(started) == 2


def test_the_probes_of_one_adapter_are_one_job_per_dtype_in_order() -> None:
    """The convention probes go to the pool as one job per adapter and dtype, so that one
    adapter's probes (JAX's take about 1.2 s) spread over the workers at the end of a run
    instead of holding one worker while the others wait; the records keep the order adapter,
    then dtype, then probe, and equal the probes run as one job (the earlier way, which the
    first assertion rejects)."""
    from gradoracle.conventions import PROBES
    from gradoracle.matrix import ProbeJob, guarded_probes, run_probe_jobs

    class RecordingPool:
        def __init__(self) -> None:
            self.work: list[Any] = []

        def run(self, work: list[Any]) -> dict[int, Any]:
            self.work = list(work)
            return {i: job.run(None) for i, job in enumerate(work)}

    pool = RecordingPool()
    records = run_probe_jobs([("numpy", "numpy")], ("float64", "float32"), 20.0, pool)  # type: ignore[arg-type]
    assert [(j.spec, j.dtypes) for j in pool.work] == [("numpy", ("float64",)), ("numpy", ("float32",))]
    assert all(isinstance(j, ProbeJob) for j in pool.work)
    assert [(r.dtype, r.probe) for r in records] == [
        (d, p.name) for d in ("float64", "float32") for p in PROBES
    ]
    together = guarded_probes("numpy", ("float64", "float32"), 20.0)
    assert [r.to_dict() for r in records] == [r.to_dict() for r in together]
