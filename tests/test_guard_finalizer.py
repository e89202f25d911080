"""An adapter's finalizer never waits for the guards' lock.

A full test session hung with no CPU: the garbage collector ran inside ``guard_for`` (creating a
guard allocates), with ``_GUARDS_LOCK`` held, and finalised a dead adapter whose ``_forget``
then waited for that same lock on the same thread.  ``_forget`` now queues the entry when the
lock is taken, and the lock's next holder removes it.
"""

from __future__ import annotations

import gc
import threading
from typing import Any

import pytest

from gradoracle import guard as guard_module
from gradoracle.guard import _GUARDS, _GUARDS_LOCK, _forget, guard_for


class _Adapter:
    name = "finalised"


def _in_thread(action: Any, seconds: float = 10.0) -> bool:
    """Whether ``action`` returns within ``seconds`` (run on a daemon thread, so a deadlock
    fails the test instead of hanging the session)."""
    done = threading.Event()

    def run() -> None:
        action()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(seconds)


def test_a_finalizer_run_while_the_lock_is_held_does_not_wait() -> None:
    adapter = _Adapter()
    guard = guard_for(adapter)
    key = id(adapter)

    def finalised_inside_guard_for() -> None:
        with _GUARDS_LOCK:  # as when the collector runs inside guard_for
            _forget(key, guard)

    assert _in_thread(finalised_inside_guard_for), "_forget waited for the lock its own thread held"
    assert _GUARDS.get(key, (None,))[0] is guard  # queued, not removed yet: the lock was taken
    guard_for(_Adapter())  # the lock's next holder removes it
    assert key not in _GUARDS or _GUARDS[key][0] is not guard
    del adapter


def test_a_dead_adapter_leaves_no_entry() -> None:  # the ordinary path still removes it
    adapter = _Adapter()
    guard = guard_for(adapter)
    key = id(adapter)
    assert _GUARDS[key][0] is guard
    del adapter
    gc.collect()
    assert _GUARDS.get(key, (None,))[0] is not guard  # removed at once: the lock was free
    assert not guard_module._FORGOTTEN
    assert guard._thread is None  # and its thread told to end


def _old_forget(key: int, guard: Any) -> None:
    """``_forget`` as it was: a blocking acquire of the guards' lock."""
    with guard_module._GUARDS_LOCK:
        entry = guard_module._GUARDS.get(key)
        if entry is not None and entry[0] is guard:
            del guard_module._GUARDS[key]
    guard.close()


def test_the_old_forget_deadlocks_in_the_same_scenario(monkeypatch: pytest.MonkeyPatch) -> None:
    # the negative control, on a private lock and table: the thread it leaves stuck holds them only
    monkeypatch.setattr(guard_module, "_GUARDS_LOCK", threading.Lock())
    monkeypatch.setattr(guard_module, "_GUARDS", {})
    guard = guard_module.AdapterGuard("old")

    def finalised_inside_guard_for() -> None:
        with guard_module._GUARDS_LOCK:
            _old_forget(1, guard)

    assert not _in_thread(finalised_inside_guard_for, seconds=0.5)
