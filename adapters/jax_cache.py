"""JAX's persistent compilation cache, on by default, and a count of the programs compiled.

XLA compilation is most of what a JAX check costs (30-250 ms per program on a 2-core
CPU; a default report compiles a few hundred programs).  JAX can keep compiled
programs on disk and load them in a later run instead of compiling again; gradoracle
turns that on the first time the JAX adapter imports JAX, in the user's cache directory:

- ``$GRADORACLE_JAX_CACHE`` unset, ``1`` or ``on``: the default directory
  (:func:`default_cache_dir`: ``$XDG_CACHE_HOME/gradoracle/jax`` or
  ``~/.cache/gradoracle/jax`` on Linux, ``~/Library/Caches/gradoracle/jax`` on macOS,
  ``%LOCALAPPDATA%\\gradoracle\\jax`` on Windows);
- ``0``, ``off``, ``false`` or ``no``: off (gradoracle leaves JAX's configuration alone);
- anything else: that directory.

A cache the user configured for JAX itself (``JAX_COMPILATION_CACHE_DIR`` or
``jax.config.update("jax_compilation_cache_dir", ...)`` before the first check) wins and
is left untouched, thresholds included.  When gradoracle sets the directory it also sets
``jax_persistent_cache_min_compile_time_secs = 0`` (JAX's default, 1 s, would keep none
of these small programs).  These are process-wide JAX settings; they change where
compiled code comes from, never what it computes (the cache key covers the program,
the compiler options and the JAX/XLA versions).

CI recipe: point ``GRADORACLE_JAX_CACHE`` at a directory the CI caches between runs,
keyed by the lock file, e.g. for GitHub Actions::

    - uses: actions/cache@v4
      with:
        path: ~/.cache/gradoracle/jax
        key: gradoracle-jax-${{ runner.os }}-${{ hashFiles('requirements*.txt', 'uv.lock') }}

:func:`compile_stats` counts XLA compilations and persistent-cache hits of this process
(``jax.monitoring`` events), which ``gradoracle bench`` reports.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CacheState", "cache_state", "compile_stats", "configure_persistent_cache", "default_cache_dir"]

#: The environment variable that turns the cache off or moves it.
ENV_VAR = "GRADORACLE_JAX_CACHE"
_OFF = frozenset({"0", "off", "false", "no"})
_ON = frozenset({"", "1", "on", "true", "yes"})

#: jax.monitoring event names (jax 0.4.30 and later).
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


@dataclass(frozen=True)
class CacheState:
    """Where this process's JAX compilation cache is and who chose it."""

    directory: str | None
    chosen_by: str  # "gradoracle", "user", "off", "unavailable", "not configured yet"
    reason: str = ""


_LOCK = threading.Lock()
_STATE = CacheState(None, "not configured yet")
_COUNTS = {"programs": 0, "cache_hits": 0, "compile_s": 0.0}
_LISTENING = False


def default_cache_dir() -> Path:
    """The per-user cache directory gradoracle uses for JAX's compiled programs."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "gradoracle" / "jax"


def _listen(jax: Any) -> None:
    """Count compilations and cache hits (once per process)."""
    global _LISTENING
    monitoring = getattr(jax, "monitoring", None)
    if _LISTENING or monitoring is None:
        return

    def on_duration(event: str, duration: float, **_: object) -> None:
        if event == _COMPILE_EVENT:
            with _LOCK:
                _COUNTS["programs"] += 1
                _COUNTS["compile_s"] += float(duration)
            _write_stats()

    def on_event(event: str, **_: object) -> None:
        if event == _CACHE_HIT_EVENT:
            with _LOCK:
                _COUNTS["cache_hits"] += 1
            _write_stats()

    try:
        monitoring.register_event_duration_secs_listener(on_duration)
        monitoring.register_event_listener(on_event)
    except AttributeError:  # an old JAX without these hooks: no counts
        return
    _LISTENING = True


#: When set, every process writes its counts to ``jax-stats-<pid>.json`` in this directory
#: after each program (``gradoracle bench`` sums them over a report's worker processes).
STATS_ENV_VAR = "GRADORACLE_JAX_STATS_DIR"


def _write_stats() -> None:
    directory = os.environ.get(STATS_ENV_VAR)
    if not directory:
        return
    import json

    target = Path(directory) / f"jax-stats-{os.getpid()}.json"
    try:
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(compile_stats()))
        os.replace(tmp, target)
    except OSError:  # a statistics file is never worth failing a check
        pass


def configure_persistent_cache() -> CacheState:
    """Turn on JAX's persistent compilation cache per ``$GRADORACLE_JAX_CACHE`` (module docstring).

    Idempotent; imports jax.  Never raises for a cache that cannot be used (an unwritable
    directory): the run goes on without it and :func:`cache_state` says why.
    """
    global _STATE
    if _STATE.chosen_by != "not configured yet":
        return _STATE
    import jax

    _listen(jax)
    setting = os.environ.get(ENV_VAR, "").strip()
    state: CacheState
    user_dir = os.environ.get("JAX_COMPILATION_CACHE_DIR") or getattr(
        jax.config, "jax_compilation_cache_dir", None
    )
    if setting.lower() in _OFF:
        state = CacheState(user_dir or None, "user" if user_dir else "off", f"{ENV_VAR}={setting}")
    elif user_dir:
        state = CacheState(str(user_dir), "user", "JAX's own cache setting")
    else:
        directory = default_cache_dir() if setting.lower() in _ON else Path(setting).expanduser()
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if not os.access(directory, os.W_OK):
                raise PermissionError(f"{directory} is not writable")
        except OSError as exc:
            state = CacheState(None, "unavailable", f"cannot use {directory}: {exc}")
        else:
            jax.config.update("jax_compilation_cache_dir", str(directory))
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            state = CacheState(str(directory), "gradoracle")
    with _LOCK:
        if _STATE.chosen_by == "not configured yet":
            _STATE = state
        return _STATE


def cache_state() -> CacheState:
    """The cache this process uses (``chosen_by="not configured yet"`` before JAX's first use)."""
    return _STATE


def compile_stats() -> dict[str, float]:
    """Counted in this process since the JAX adapter first imported JAX: ``programs`` (each
    program JAX had to build, compiled by XLA or loaded from the persistent cache),
    ``cache_hits`` (of those, loaded from disk), ``compile_s`` (seconds spent on them);
    XLA compilations = ``programs - cache_hits``."""
    with _LOCK:
        return dict(_COUNTS)
