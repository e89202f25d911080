"""Process isolation: guarded work in worker processes that may die without taking the run down.

A :class:`WorkerPool` runs :class:`Job` objects (one check, or the convention probes of
one adapter) in spawned worker processes, one job per worker at a time.  Inside a worker
every call into an adapter still goes through :mod:`gradoracle.guard` (its own thread, a
time limit, any exception); the pool contains what a thread cannot:

- a worker that **dies** (segfault, ``os._exit``, the out-of-memory killer) is recorded as
  an error of the job it was running, naming the signal or the exit code, and a fresh
  worker carries on with the next job;
- a worker whose adapter **hung** (a call abandoned after ``--timeout``) is replaced once
  its job's record is in, so no abandoned thread keeps running beside later checks;
- a worker that goes **silent** (no heartbeat for :func:`watchdog_s`: a C call holding the
  interpreter lock, which no thread can interrupt) is killed and its job recorded as hung;
- what an adapter **prints** (Python or C, stdout or stderr) goes to a capture file of its
  worker, never to the terminal: like pytest's capture, a passing check's output is dropped,
  and a failing or erroring check's record (or a dead worker's) carries its cleaned tail.

Each worker keeps one loaded adapter per spec (:class:`gradoracle.guard.AdapterSession`),
so the checks of one adapter share its instance, thread and compiled code, and two
adapters never share anything.  Ctrl-C stops the workers (they ignore SIGINT; the
parent terminates them) and propagates as ``KeyboardInterrupt``.

:func:`usable_cores` and :func:`effective_jobs` cap ``--jobs`` at the cores this process
may run on (``--jobs 0``: all of them).
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for
from typing import Any, Protocol

from gradoracle.guard import DEFAULT_TIMEOUT_S

#: Seconds between a busy worker's heartbeats.
HEARTBEAT_S = 0.5

#: Characters of an adapter's captured output kept in a record (the tail: where errors are).
OUTPUT_TAIL_CHARS = 2000


class Job(Protocol):
    """A unit of guarded work that runs in a worker (or in this process).

    A job may also have an ``affinity`` attribute (any hashable, or ``None``): jobs with the
    same one are kept on one worker while it has them (:meth:`WorkerPool.run`); and a
    ``loads`` attribute (an adapter spec, or ``None``): the adapter the job loads in its
    worker, so that a worker which has it loaded is preferred for it.
    """

    @property
    def label(self) -> str: ...

    def run(self, timeout: float | None) -> Any:
        """Do the work (in whichever process) and return a picklable record."""
        ...

    def died(self, reason: str) -> Any:
        """The record of this job when its worker died or hung (``reason`` says how)."""
        ...


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` without one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def effective_jobs(requested: int) -> tuple[int, str | None]:
    """``(workers, note)``: ``--jobs`` capped at :func:`usable_cores`; 0 means all of them.

    ``note`` says what was changed (``None`` when the request stands).
    """
    cores = usable_cores()
    if requested < 0:
        raise ValueError(f"--jobs {requested}: expected 0 (all usable cores) or a positive number")
    if requested == 0:
        return cores, None
    if requested > cores:
        return cores, (
            f"--jobs {requested} capped at {cores}: this process may use {cores} CPU core(s); more worker "
            "processes would only compete for them"
        )
    return requested, None


def describe_exit(exitcode: int | None) -> str:
    """How a worker ended: ``was killed by signal SIGSEGV (Segmentation fault)``, ``exited with code 3``."""
    if exitcode is None:
        return "stopped responding"
    if exitcode < 0:
        try:
            sig = signal.Signals(-exitcode)
            text = signal.strsignal(sig) or ""
            name = f"{sig.name} ({text})" if text else sig.name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = "; SIGKILL is often the out-of-memory killer" if exitcode == -signal.SIGKILL else ""
        return f"was killed by signal {name}{hint}"
    return f"exited with code {exitcode} (os._exit, or an exit the guard could not catch)"


def watchdog_s(timeout: float | None) -> float | None:
    """How long a busy worker may go without a heartbeat before it is killed (``None``: never)."""
    if not timeout:
        return None
    return timeout + max(5.0, timeout)


# ----------------------------------------------------------------------- the worker


def output_tail(raw: bytes, limit: int = OUTPUT_TAIL_CHARS) -> str:
    """The last ``limit`` characters of captured output, cleaned (:func:`gradoracle.text.clean_text`),
    with a note of the original length when cut; ``""`` when nothing but whitespace was printed."""
    from gradoracle.text import clean_text

    text = raw.decode("utf-8", errors="replace")
    if not text.strip():
        return ""
    tail = text[-limit:]
    head = f"(last {limit} of {len(text)} characters) " if len(text) > limit else ""
    return head + clean_text(tail, None).strip()


def _capture_output(path: str) -> Any:
    """Send this process's stdout and stderr (file descriptors 1 and 2: Python and C alike) to ``path``."""
    capture = open(path, "w+b")  # noqa: SIM115 - kept open for the life of the worker
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os.dup2(capture.fileno(), 1)
    os.dup2(capture.fileno(), 2)
    return capture


def _drain(capture: Any) -> bytes:
    """What was printed since the last drain (the file is emptied)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    capture.seek(0)
    raw: bytes = capture.read()
    capture.seek(0)
    capture.truncate()
    return raw


def _worker_main(conn: Connection, timeout: float | None, output_path: str | None = None) -> None:
    """A worker: run the jobs the parent sends, one at a time, until it sends ``None``; then
    leave with ``os._exit`` (status 0, or 1 after an error of the worker's own, printed).

    Every result has been sent by then, so the interpreter's shutdown would only tear down the
    frameworks the checks loaded (JAX's and torch's exit handlers: about 0.8 s per worker
    here) and could meet an adapter thread abandoned mid-call in C++ code.
    """
    status = 0
    try:
        _serve(conn, timeout, output_path)
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status)


def _serve(conn: Connection, timeout: float | None, output_path: str | None) -> None:
    """The worker's loop (:func:`_worker_main`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    capture = _capture_output(output_path) if output_path else None
    from gradoracle.guard import process_session

    session = process_session()
    session.timeout = timeout
    send_lock = threading.Lock()
    busy = threading.Event()

    def send(message: Any) -> None:
        with send_lock:
            conn.send(message)

    def heartbeat() -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            if busy.is_set():
                try:
                    send(("alive",))
                except OSError:
                    return

    threading.Thread(target=heartbeat, daemon=True, name="gradoracle-heartbeat").start()
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        job: Job = message
        busy.set()
        try:
            record = job.run(timeout)
        except BaseException as exc:
            from gradoracle.guard import describe_exception

            record = job.died(f"the job raised {describe_exception(exc)}")
        if capture is not None:
            printed = output_tail(_drain(capture))
            attach = getattr(job, "with_output", None)
            if printed and attach is not None:
                record = attach(record, printed)
        busy.clear()
        send(("done", record, session.tainted()))
        if session.tainted():
            return  # an abandoned adapter thread may still run: the parent starts a fresh worker


# ----------------------------------------------------------------------- the pool


@dataclass
class _Worker:
    process: Any
    conn: Connection
    job: int | None = None
    last_heard: float = 0.0
    affinity: Any = None  # the affinity key of the last job it ran (what it has compiled)
    loaded: set[Any] = field(default_factory=set)  # the adapters its jobs loaded (``Job.loads``)
    output_path: str | None = None  # where the worker's stdout and stderr go

    def last_output(self) -> str:
        """The cleaned tail of what the worker printed since its last job (``""``: nothing)."""
        if not self.output_path:
            return ""
        try:
            with open(self.output_path, "rb") as f:
                return output_tail(f.read())
        except OSError:
            return ""


class _Queues:
    """Job indices grouped by affinity key (:attr:`Job.affinity`), groups in first-seen order.

    :meth:`take` gives a worker the next job of the group it worked on last (its compiled
    programs and loaded adapter serve it again); a worker without one opens the first group
    no busy worker holds, a group of an adapter it has loaded (:attr:`Job.loads`) before any
    other (a framework is then imported by as few workers as the run's balance needs: torch
    takes about 1.2 s of CPU to import, once per worker that runs a torch check); when every
    group left is held, it takes the last job of the largest group (so the run's tail stays
    parallel).  Jobs without an affinity are a group each, in order.
    """

    def __init__(self, jobs: Sequence[Any]) -> None:
        self.groups: dict[Any, collections.deque[int]] = {}
        self.loads: dict[Any, Any] = {}  # group -> the adapter its jobs load
        for i, job in enumerate(jobs):
            key = getattr(job, "affinity", None)
            key = ("job", i) if key is None else ("key", key)
            self.groups.setdefault(key, collections.deque()).append(i)
            self.loads.setdefault(key, getattr(job, "loads", None))

    def __bool__(self) -> bool:
        return bool(self.groups)

    def has(self, key: Any) -> bool:
        return key is not None and key in self.groups

    def take(self, worker: _Worker, held: set[Any]) -> int:
        key = worker.affinity
        if key not in self.groups:
            free = [k for k in self.groups if k not in held]
            ready = [k for k in free if self.loads[k] in worker.loaded]  # never holds None
            key = (ready or free)[0] if free else max(self.groups, key=lambda k: len(self.groups[k]))
            queue = self.groups[key]
            i = queue.popleft() if free else queue.pop()
        else:
            i = self.groups[key].popleft()
        if not self.groups[key]:
            del self.groups[key]
        worker.affinity = key
        if self.loads[key] is not None:
            worker.loaded.add(self.loads[key])
        return i

    def put_back(self, key: Any, i: int) -> None:
        self.groups.setdefault(key, collections.deque()).appendleft(i)


class WorkerPool:
    """Up to ``workers`` spawned processes running :class:`Job` objects (module docstring)."""

    def __init__(self, workers: int, timeout: float | None = DEFAULT_TIMEOUT_S) -> None:
        """``workers`` processes at most; ``timeout`` per adapter call (the watchdog's basis)."""
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.timeout = timeout
        self._context = multiprocessing.get_context("spawn")  # no fork: framework threads may be live
        self._idle: list[_Worker] = []
        self.started = 0  # worker processes started (fresh ones after deaths included)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> _Worker:
        parent, child = self._context.Pipe()
        fd, output_path = tempfile.mkstemp(prefix="gradoracle-worker-", suffix=".out")
        os.close(fd)
        process = self._context.Process(
            target=_worker_main,
            args=(child, self.timeout, output_path),
            daemon=True,
            name="gradoracle-worker",
        )
        process.start()
        child.close()
        self.started += 1
        return _Worker(process, parent, output_path=output_path)

    @staticmethod
    def _kill(worker: _Worker) -> None:
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=5)
        worker.conn.close()
        if worker.output_path:
            with contextlib.suppress(OSError):
                os.unlink(worker.output_path)

    def run(
        self,
        jobs: Sequence[Job],
        on_start: Callable[[int], None] | None = None,
        on_result: Callable[[int, Any], None] | None = None,
        skip: Callable[[int], Any] | None = None,
    ) -> dict[int, Any]:
        """Run every job; ``{index: record}``.  ``KeyboardInterrupt`` stops the workers and propagates
        (the records so far are passed to ``on_result`` as they come).  ``skip(i)``, asked as job
        ``i`` comes up, may return a record for it instead of running it (``None``: run it).

        Jobs that share an ``affinity`` key (a check's identity and adapter) go to the worker
        that ran the group's earlier jobs while it lasts (:class:`_Queues`): that worker has
        the adapter loaded and its programs compiled (JAX compiles per shape and dtype)."""
        todo = _Queues(jobs)
        done: dict[int, Any] = {}
        busy: list[_Worker] = []
        limit = watchdog_s(self.timeout)

        def finish(worker: _Worker, record: Any) -> None:
            assert worker.job is not None
            done[worker.job] = record
            if on_result is not None:
                on_result(worker.job, record)
            worker.job = None

        try:
            while todo or busy:
                while todo and len(busy) < self.workers:
                    # an idle worker whose group has jobs left first, then any idle one
                    ranked = sorted(range(len(self._idle)), key=lambda k: todo.has(self._idle[k].affinity))
                    worker = self._idle.pop(ranked[-1]) if self._idle else self._start()
                    i = todo.take(worker, {w.affinity for w in busy})
                    instead = skip(i) if skip is not None else None
                    if instead is not None:
                        done[i] = instead
                        if on_result is not None:
                            on_result(i, instead)
                        self._idle.append(worker)
                        continue
                    try:
                        worker.conn.send(jobs[i])
                    except OSError:  # died while idle: start another for this job
                        self._kill(worker)
                        todo.put_back(worker.affinity, i)
                        continue
                    worker.job, worker.last_heard = i, time.monotonic()
                    busy.append(worker)
                    if on_start is not None:
                        on_start(i)
                if not busy:
                    continue
                ready = set(
                    wait_for([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=1.0)
                )
                now = time.monotonic()
                for worker in list(busy):
                    job = jobs[worker.job] if worker.job is not None else None
                    if worker.conn in ready:
                        try:
                            message = worker.conn.recv()
                        except (EOFError, OSError):
                            message = None
                        if message is not None and message[0] == "alive":
                            worker.last_heard = now
                            continue
                        if message is not None and message[0] == "done":
                            _, record, tainted = message
                            finish(worker, record)
                            busy.remove(worker)
                            if tainted:
                                self._kill(worker)
                            else:
                                self._idle.append(worker)
                            continue
                    if worker.conn in ready or worker.process.sentinel in ready:
                        worker.process.join(timeout=5)
                        how = describe_exit(worker.process.exitcode)
                        printed = worker.last_output()
                        said = f"; what it printed last: {printed}" if printed else ""
                        assert job is not None
                        finish(worker, job.died(f"the worker process running it {how}{said}"))
                        busy.remove(worker)
                        self._kill(worker)
                    elif limit is not None and now - worker.last_heard > limit:
                        assert job is not None
                        self._kill(worker)
                        finish(
                            worker,
                            job.died(
                                f"the worker process running it was silent for {limit:g} s (an adapter call "
                                "that holds the interpreter and ignores the --timeout) and was killed"
                            ),
                        )
                        busy.remove(worker)
        except BaseException:
            for worker in busy:
                self._kill(worker)
            raise
        return done

    def close(self) -> None:
        """Ask idle workers to exit (and make sure they do)."""
        for worker in self._idle:
            with contextlib.suppress(OSError):
                worker.conn.send(None)
        for worker in self._idle:
            worker.process.join(timeout=5)
            self._kill(worker)
        self._idle.clear()


def run_jobs_in_process(
    jobs: Sequence[Job],
    timeout: float | None,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[int, Any], None] | None = None,
    skip: Callable[[int], Any] | None = None,
) -> dict[int, Any]:
    """The same jobs in this process (no isolation: a crashing adapter ends the run);
    ``skip`` as in :meth:`WorkerPool.run`."""
    done: dict[int, Any] = {}
    for i, job in enumerate(jobs):
        instead = skip(i) if skip is not None else None
        if instead is not None:
            done[i] = instead
        else:
            if on_start is not None:
                on_start(i)
            done[i] = job.run(timeout)
        if on_result is not None:
            on_result(i, done[i])
    return done
