"""The one guard every call into an adapter goes through: its own thread, a time limit, any exception.

gradoracle runs other people's code.  Every call into an adapter (loading it, ``name``,
``available()``, ``supported_ops()``, the checks' ``vjp``/``forward`` and the convention
probes) runs through an :class:`AdapterGuard`:

- **one thread per adapter instance**: all of an adapter's calls, checks and probes alike,
  run on the guard's own thread, so a framework with thread-bound state (a SQLite cache,
  a CUDA context, JAX's thread-local x64 flag) sees a single thread;
- **a time limit** per call (:data:`DEFAULT_TIMEOUT_S`, ``--timeout``): a call that does
  not return in time is abandoned (its thread is a daemon) and the guard is marked
  *hung*: every later call on it fails at once, naming the call that hung;
- **any exception** - ``SystemExit``, ``KeyboardInterrupt`` raised by the adapter, one
  whose ``__str__`` raises - becomes an :class:`AdapterCallError` with a printable
  description; nothing the adapter raises reaches the caller as itself unless the
  caller lists it in ``passthrough`` (the oracle's own exceptions).

What a thread cannot contain (a segfault, ``os._exit``, a C call that holds the
interpreter lock forever) is contained by process isolation: :mod:`gradoracle.isolation`
runs the guarded work in worker processes and records a worker's death.

:class:`AdapterSession` keeps one loaded adapter (and its guard) per spec in a process:
the checks of one adapter share its instance and thread (and whatever it compiled), two
adapters never share anything, and an adapter that hung is replaced by a fresh instance.
"""

from __future__ import annotations

import collections
import gc
import importlib
import os
import queue
import sys
import threading
import time
import traceback
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from gradoracle.options import DEFAULT_TIMEOUT_S as DEFAULT_OPTION_TIMEOUT_S

T = TypeVar("T")

#: Default limit (seconds) on one call into an adapter: one example of a check (a vjp and a
#: few dozen forwards on the catalogue's small inputs, ~0.01-0.3 s; a first JAX compile
#: ~1 s), one convention probe, ``available()``.  ``--timeout`` / ``gradoracle_timeout``.
DEFAULT_TIMEOUT_S: float = DEFAULT_OPTION_TIMEOUT_S

#: Longest exception description kept in a record (the rest is cut, with a note).
MAX_DESCRIPTION = 4000


class AdapterCallError(Exception):
    """A call into an adapter that did not return normally: ``kind`` is ``timeout``,
    ``raised`` or ``hung`` (an earlier call hung, so this one was not made)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def _sanitize(text: str) -> str:
    """Adapter text made safe for every output (:func:`gradoracle.text.clean_text` when present)."""
    try:
        clean = importlib.import_module("gradoracle.text").clean_text
    except (ImportError, AttributeError):
        clean = None
    if clean is not None:
        return str(clean(text, MAX_DESCRIPTION))
    text = text.encode("utf-8", "replace").decode("utf-8")
    if len(text) > MAX_DESCRIPTION:
        text = f"{text[:MAX_DESCRIPTION]}... [cut: {len(text)} characters in all]"
    return text


def describe_exception(exc: BaseException) -> str:
    """``"Type: message"`` for any exception, even one whose ``__str__`` raises or lies.

    The last traceback frame is named for exceptions other than the usual adapter
    errors, so an oracle bug is told apart from an adapter's failure.
    """
    try:
        name = type(exc).__qualname__
    except Exception:
        name = "exception"
    try:
        text = str(exc)
        if not isinstance(text, str):
            raise TypeError(f"__str__ returned {type(text).__name__}")
    except BaseException as inner:
        text = f"<unprintable: its __str__ raised {type(inner).__name__}>"
    where = ""
    tb = exc.__traceback__
    if tb is not None:
        try:
            frame = traceback.extract_tb(tb)[-1]
            where = f" (at {frame.filename}:{frame.lineno} in {frame.name})"
        except Exception:
            where = ""
    return _sanitize(f"{name}: {text}{where}" if text else f"{name}{where}")


#: Environment variables whose prefix marks the run's own configuration (``GRADORACLE_LARGE_SHAPES``
#: is read at every draw): an adapter's change to them is undone after its call.
RUN_ENV_PREFIX = "GRADORACLE_"


@dataclass(frozen=True)
class _ProcessState:
    """What of the process an adapter call may change and the run depends on (the rest of the
    interpreter's global state is the adapter's own business)."""

    cwd: str | None  # ``--out reports`` is relative to it
    recursion_limit: int  # a limit of 60 made the run's own code raise RecursionError
    warning_filters: tuple[Any, ...]  # an "error" filter would turn any warning of the run into a crash
    run_env: tuple[tuple[str, str], ...]  # the GRADORACLE_* variables the run reads
    stdout: Any  # a replaced ``sys.stdout`` swallows the table, the JSON and the report paths
    stderr: Any
    gc_enabled: bool  # ``gc.disable()`` lets a long run's memory grow without bound
    switch_interval: float  # a huge interval starves the guard's timer thread


def _process_state() -> _ProcessState:
    """A snapshot of the process state an adapter call must leave as it found it."""
    try:
        cwd: str | None = os.getcwd()
    except OSError:
        cwd = None
    return _ProcessState(
        cwd=cwd,
        recursion_limit=sys.getrecursionlimit(),
        warning_filters=tuple(warnings.filters),
        run_env=tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(RUN_ENV_PREFIX))),
        stdout=sys.stdout,
        stderr=sys.stderr,
        gc_enabled=gc.isenabled(),
        switch_interval=sys.getswitchinterval(),
    )


def _restore_process_state(state: _ProcessState) -> None:
    """Undo an adapter's change to any part of ``state``: its ``os.chdir``,
    ``sys.setrecursionlimit``, warning filters (it keeps what it added, except "error"
    filters, and loses nothing of the run's), ``GRADORACLE_*`` variables, ``sys.stdout`` /
    ``sys.stderr``, ``gc.disable()`` and ``sys.setswitchinterval`` (each only where it changed,
    so a well-behaved adapter costs a comparison per call).  Only for a call whose caller still
    waits for it: a caller gone on Ctrl-C or a timeout has moved on, the state with it."""
    if sys.getrecursionlimit() != state.recursion_limit:
        sys.setrecursionlimit(state.recursion_limit)
    if state.cwd is not None:
        try:
            if os.getcwd() != state.cwd:
                os.chdir(state.cwd)
        except OSError:  # the directory is gone (or the adapter's is): stay where it is
            pass
    if tuple(warnings.filters) != state.warning_filters:
        # keep what the adapter added (torch's import adds "ignore" filters for its own
        # warnings) except "error" filters, in front of the run's own filters, all of them
        kept = [f for f in warnings.filters if f not in state.warning_filters and f[0] != "error"]
        warnings.filters[:] = kept + list(state.warning_filters)  # type: ignore[index]
        warnings._filters_mutated()  # type: ignore[attr-defined]  # drop the per-module caches
    env = {k: v for k, v in os.environ.items() if k.startswith(RUN_ENV_PREFIX)}
    if env != dict(state.run_env):
        for k in env.keys() - dict(state.run_env).keys():
            del os.environ[k]
        os.environ.update(dict(state.run_env))
    if sys.stdout is not state.stdout:
        sys.stdout = state.stdout
    if sys.stderr is not state.stderr:
        sys.stderr = state.stderr
    if gc.isenabled() != state.gc_enabled:
        (gc.enable if state.gc_enabled else gc.disable)()
    if sys.getswitchinterval() != state.switch_interval:
        sys.setswitchinterval(state.switch_interval)


class AdapterGuard:
    """All calls into one adapter instance: on one thread, each with a time limit.

    ``call(func, timeout, what)`` runs ``func()`` on the guard's thread and returns its
    value; :class:`AdapterCallError` when it raises (any ``BaseException`` not in
    ``passthrough``) or does not return within ``timeout`` seconds (``None``: no limit).
    After a timeout the guard is hung for good (:attr:`hung` says which call).
    """

    def __init__(self, label: str = "adapter") -> None:
        self.label = label
        self.hung: str | None = None
        # Jobs and results carry a call number: a call abandoned by KeyboardInterrupt leaves its
        # late result in the queue, and the next call must not take it for its own.
        self._jobs: queue.SimpleQueue[tuple[int, Callable[[], Any]] | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[tuple[int, bool, Any]] = queue.SimpleQueue()
        self._calls = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one call at a time (callers on several threads queue up)
        # the number of the call a caller still waits for, under its own lock: process state is
        # restored only for such a call (a caller that gave up on it, on Ctrl-C or a timeout,
        # has moved on, and pytest may have replaced sys.stderr since: restoring the stale one
        # "lost sys.stderr")
        self._awaited: int | None = None
        self._awaited_lock = threading.Lock()

    @property
    def thread(self) -> threading.Thread | None:
        """The thread every call runs on (``None`` before the first call)."""
        return self._thread

    def _loop(self) -> None:
        # Nothing of a finished call stays bound in this frame while it waits for the next: the
        # call's closure holds the adapter, whose collection is what ends this thread (the
        # guard's finalizer, _forget), and the user's function with its models and tensors.
        # Held here, one thread per checked adapter lived for the session with all of that.
        while (job := self._jobs.get()) is not None:
            number, func = job
            del job
            state = _process_state()
            try:
                answer: tuple[bool, Any] = (True, func())
            except BaseException as exc:
                answer = (False, exc)
            del func
            with self._awaited_lock:
                if self._awaited == number:
                    _restore_process_state(state)  # before the caller resumes
            del state
            self._results.put((number, *answer))
            del answer

    def call(
        self,
        func: Callable[[], T],
        timeout: float | None,
        what: str,
        passthrough: tuple[type[BaseException], ...] = (),
    ) -> T:
        """``func()`` on the adapter's thread, within ``timeout`` seconds (see the class docstring)."""
        with self._lock:
            if self.hung is not None:
                raise AdapterCallError(
                    f"{what} not attempted: adapter {self.label!r} hung earlier ({self.hung}) and was "
                    "abandoned",
                    "hung",
                )
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, daemon=True, name=f"gradoracle-adapter-{self.label}"
                )
                self._thread.start()
            self._calls += 1
            number = self._calls
            with self._awaited_lock:
                self._awaited = number
            self._jobs.put((number, func))
            deadline = None if not timeout else time.monotonic() + timeout
            try:
                while True:  # results of earlier, abandoned calls are dropped
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    got, ok, value = (
                        self._results.get(timeout=left) if left is not None else self._results.get()
                    )
                    if got == number:
                        break
            except queue.Empty:
                self.hung = f"{what} did not return within {timeout:g} s"
                raise AdapterCallError(
                    f"{what} did not return within {timeout:g} s (the --timeout limit per call into "
                    "an adapter); the call was abandoned and the adapter is not called again",
                    "timeout",
                ) from None
            finally:
                with self._awaited_lock:
                    self._awaited = None
        if ok:
            return value
        if passthrough and isinstance(value, passthrough):
            raise value
        raise AdapterCallError(f"{what} raised {describe_exception(value)}", "raised") from None

    def close(self) -> None:
        """Let the thread end once it is idle (a hung thread is left to the daemon flag)."""
        if self._thread is not None and self.hung is None:
            self._jobs.put(None)
            self._thread = None


# ------------------------------------------------------------ guards of adapter objects


#: id(adapter) -> (its guard, the adapter itself when it cannot be weakly referenced: held so
#: that its id is never reused by another object while the entry exists).
_GUARDS: dict[int, tuple[AdapterGuard, Any]] = {}
_GUARDS_LOCK = threading.Lock()


def _register(adapter: Any, guard: AdapterGuard) -> None:
    """Make ``guard`` the guard of ``adapter`` (the caller holds :data:`_GUARDS_LOCK`)."""
    key = id(adapter)
    try:
        weakref.finalize(adapter, _forget, key, guard)
        _GUARDS[key] = (guard, None)
    except TypeError:  # not weak-referenceable: keep it alive so its id stays its own
        _GUARDS[key] = (guard, adapter)


def guard_for(adapter: Any) -> AdapterGuard:
    """The guard of an adapter object: one per instance for its lifetime (made on first use)."""
    with _GUARDS_LOCK:
        _drain_forgotten()
        entry = _GUARDS.get(id(adapter))
        if entry is not None:
            return entry[0]
        guard = AdapterGuard(_safe_label(adapter))
        _register(adapter, guard)
        return guard


#: (id, guard) of adapters that are gone, left by their finalizers for the next holder of
#: :data:`_GUARDS_LOCK` to remove (:func:`_forget`).
_FORGOTTEN: collections.deque[tuple[int, AdapterGuard]] = collections.deque()


def _forget(key: int, guard: AdapterGuard) -> None:
    """An adapter's finalizer: its guard's thread ends, and its entry goes.

    It never waits for :data:`_GUARDS_LOCK`.  A finalizer runs wherever the garbage collector
    runs, which may be inside :func:`guard_for` on this very thread, the lock held (creating a
    guard allocates and may collect a dead adapter): waiting there deadlocked the process (a
    test session hung with no CPU, in ``_forget`` under ``_register``).  The entry is queued and
    removed now if the lock is free, else by the lock's holder."""
    guard.close()
    _FORGOTTEN.append((key, guard))
    if _GUARDS_LOCK.acquire(blocking=False):
        try:
            _drain_forgotten()
        finally:
            _GUARDS_LOCK.release()


def _drain_forgotten() -> None:
    """Remove the entries :func:`_forget` queued (the caller holds :data:`_GUARDS_LOCK`)."""
    while _FORGOTTEN:
        key, guard = _FORGOTTEN.popleft()
        entry = _GUARDS.get(key)
        if entry is not None and entry[0] is guard:
            del _GUARDS[key]


def _safe_label(adapter: Any) -> str:
    try:
        return _sanitize(str(type(adapter).__dict__.get("name", None) or type(adapter).__name__))[:80]
    except Exception:
        return "adapter"


# ---------------------------------------------------------------- adapter facts


@dataclass(frozen=True)
class AdapterFacts:
    """What the runner reads from an adapter before checking it, read once through its guard."""

    name: str
    available: bool
    why: str
    dtypes: tuple[str, ...]
    supported_ops: frozenset[str] | None  # None when supported_ops() failed
    ops_error: str | None = None


def dtype_names(value: Any) -> tuple[str, ...]:
    """An adapter's ``dtypes`` as a tuple of names: one string is one name (``dtypes = "float64"``
    is ``("float64",)``, not its seven letters); anything but strings or an iterable of them is a
    ``TypeError`` that says what to write."""
    if isinstance(value, str):
        return (value,)
    try:
        names = tuple(value)
    except TypeError:
        names = None
    if names is None or not all(isinstance(n, str) for n in names):
        raise TypeError(
            f"dtypes must be a tuple of dtype names such as ('float64', 'float32'), got {value!r:.80}"
        )
    return names


#: Set-up calls (loading an adapter, its name, ``available()``, dtypes, ops and modes) import
#: frameworks, the slowest thing an adapter legitimately does (importing torch took over 20 s on
#: this project's 2-core machine at load 16): they get this many times the per-call limit
#: (20 s -> 120 s by default) before they count as hung.
SETUP_FACTOR = 6.0


def setup_timeout(timeout: float | None) -> float | None:
    """The limit of a set-up call: ``SETUP_FACTOR x timeout`` (none when ``timeout`` is none or 0)."""
    return timeout * SETUP_FACTOR if timeout else timeout


def read_facts(adapter: Any, guard: AdapterGuard, timeout: float | None) -> AdapterFacts:
    """``name``, ``available()``, ``dtypes`` and ``supported_ops()`` through the guard.

    Raises :class:`AdapterCallError` when ``name`` or ``available()`` fails or hangs, or
    returns something else than the protocol says.
    """

    def name() -> str:
        value = adapter.name
        if not isinstance(value, str) or not value:
            raise TypeError(f"adapter name must be a non-empty string, got {type(value).__name__}")
        return value

    setup = setup_timeout(timeout)
    label = guard.call(name, setup, "reading the adapter's name")
    label = _sanitize(label)
    guard.label = label

    def available() -> tuple[bool, str]:
        ok, why = adapter.available()
        return bool(ok), str(why)

    ok, why = guard.call(available, setup, f"{label}.available()")
    from gradoracle.options import DTYPES

    dtypes = guard.call(lambda: dtype_names(getattr(adapter, "dtypes", DTYPES)), setup, f"{label}.dtypes")
    ops: frozenset[str] | None = None
    ops_error = None
    if ok:
        try:
            ops = guard.call(
                lambda: frozenset(str(o) for o in adapter.supported_ops()),
                setup,
                f"{label}.supported_ops()",
            )
        except AdapterCallError as exc:
            ops_error = str(exc)
    return AdapterFacts(label, ok, _sanitize(why), dtypes, ops, ops_error)


# ----------------------------------------------------------------- one process's adapters


@dataclass
class GuardedAdapter:
    """A loaded adapter, its guard and its facts (``facts`` is None when loading failed)."""

    spec: str
    adapter: Any
    guard: AdapterGuard
    facts: AdapterFacts | None
    error: str | None = None


class AdapterSession:
    """One loaded adapter per spec in this process, each loaded on (and bound to) its own thread.

    ``get(spec)`` loads it on first use; after a hang the next ``get`` loads a fresh
    instance on a fresh thread (the hung one is abandoned).
    """

    def __init__(self, timeout: float | None = DEFAULT_TIMEOUT_S) -> None:
        self.timeout = timeout
        self._loaded: dict[str, GuardedAdapter] = {}
        self._lock = threading.Lock()

    def get(self, spec: str, timeout: float | str | None = "session") -> GuardedAdapter:
        """The adapter ``spec`` names, loaded through its guard (``error`` set when that failed);
        loading and reading its facts take at most ``timeout`` s each (default the session's)."""
        limit = self.timeout if isinstance(timeout, str) else timeout
        with self._lock:
            entry = self._loaded.get(spec)
            if entry is None or entry.guard.hung is not None:
                entry = self._load(spec, limit)
                self._loaded[spec] = entry
            return entry

    def _load(self, spec: str, timeout: float | None) -> GuardedAdapter:
        from gradoracle.adapters import AdapterLoadError, load_adapter

        label = spec.partition("?")[0]
        guard = AdapterGuard(label)
        try:
            adapter = guard.call(
                lambda: load_adapter(spec),
                setup_timeout(timeout),
                f"loading adapter {spec!r}",
                passthrough=(AdapterLoadError,),
            )
        except AdapterLoadError as exc:
            return GuardedAdapter(spec, None, guard, None, _sanitize(str(exc)))
        except AdapterCallError as exc:
            return GuardedAdapter(spec, None, guard, None, f"adapter {label!r} failed to load: {exc}")
        with _GUARDS_LOCK:  # calls made through guard_for(adapter) use the same thread
            _drain_forgotten()
            _register(adapter, guard)
        try:
            facts = read_facts(adapter, guard, timeout)
        except AdapterCallError as exc:
            return GuardedAdapter(spec, adapter, guard, None, f"adapter {label!r}: {exc}")
        return GuardedAdapter(spec, adapter, guard, facts)

    def tainted(self) -> bool:
        """Whether an adapter of this session hung (its thread may still be running)."""
        return any(e.guard.hung is not None for e in self._loaded.values())

    def close(self) -> None:
        """Let every idle adapter thread end."""
        with self._lock:
            for entry in self._loaded.values():
                entry.guard.close()
            self._loaded.clear()


_SESSION: AdapterSession | None = None


def process_session() -> AdapterSession:
    """This process's :class:`AdapterSession` (made on first use)."""
    global _SESSION
    if _SESSION is None:
        _SESSION = AdapterSession()
    return _SESSION
