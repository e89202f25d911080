"""Helpers shared by the self-test's kill matrix and campaigns.

Versions, the code fingerprint that tags every saved unit, example digests, Hypothesis
example drawing, the spawned process pool, the append-only parts files, and the Markdown
table helper.  Nothing here prints.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from gradoracle.identities import Identity, get_identity

Callback = Callable[..., None]


def _write(path: Path, text: str) -> Path:
    from gradoracle.reporting.atomic import atomic_write_text

    return atomic_write_text(path, text)


def _versions() -> dict[str, str | None]:
    from gradoracle.reporting.environment import package_versions

    return package_versions()


#: Modules whose source decides every campaign's numbers: the runner and everything it
#: uses.  With the module of the adapter under test (:func:`adapter_modules`) their hash
#: tags every saved unit, so units computed by other code are never mixed into a report
#: (and a resumed run recomputes them); an edit to another adapter does not invalidate
#: them.  This module's own report-writing code is deliberately not part of it.
FINGERPRINT_MODULES: tuple[str, ...] = (
    "gradoracle.runner",
    "gradoracle.tolerances",
    "gradoracle.identities",
    "gradoracle.finite_differences",
    "gradoracle.strategies",
    "gradoracle.reference_ops",
    "gradoracle.ops",
    "gradoracle.adapters.base",
)
#: What the threshold tools other than gradoracle run on.
TOOL_MODULES: dict[str, tuple[str, ...]] = {
    "gradcheck": ("gradoracle.adapters.torch_adapter",),
    "gradcheck-tuned": ("gradoracle.adapters.torch_adapter",),
    "check_grads": ("gradoracle.adapters.jax_adapter",),
}
_FINGERPRINTS: dict[tuple[str, ...], str] = {}


def code_fingerprint(extra: Sequence[str] = ()) -> str:
    """sha256 (12 hex digits) of the source of :data:`FINGERPRINT_MODULES` plus ``extra`` modules.

    A package's digest covers every ``.py`` file under it.

    Computed once per process and module set, i.e. for the code this process imported
    (a file edited later does not change it, which is the point).
    """
    key = tuple(sorted(set(extra)))
    if key not in _FINGERPRINTS:
        import hashlib
        import importlib.util

        digest = hashlib.sha256()
        for name in (*FINGERPRINT_MODULES, *key):
            spec = importlib.util.find_spec(name)
            origin = spec.origin if spec is not None else None
            digest.update(name.encode())
            if origin and Path(origin).is_file():
                # a package counts with every module in it (the identities are one module per section)
                files = (
                    sorted(Path(origin).parent.rglob("*.py"))
                    if origin.endswith("__init__.py")
                    else [Path(origin)]
                )
                for path in files:
                    digest.update(path.read_bytes())
        _FINGERPRINTS[key] = digest.hexdigest()[:12]
    return _FINGERPRINTS[key]


def adapter_modules(spec: str) -> tuple[str, ...]:
    """The modules that define the adapter ``spec`` names (for a mutant, also its real adapter's)."""
    from gradoracle.adapters import load_adapter

    adapter = load_adapter(spec)
    modules = {type(adapter).__module__}
    modules.update(getattr(adapter, "source_modules", ()))  # a mutant: every catalogue module
    inner = getattr(adapter, "inner", None)
    if inner is not None:
        modules.add(type(inner).__module__)
        modules.update(c.__module__ for c in type(inner).__mro__)
    return tuple(sorted(m for m in modules if m.startswith("gradoracle.")))


def example_digest(example: Any) -> bytes:
    """6 bytes identifying an example (its seed, params and input values)."""
    import hashlib

    h = hashlib.blake2b(digest_size=6)
    h.update(repr((example.seed, sorted(example.params.items()))).encode())
    for name in sorted(example.inputs):
        h.update(name.encode())
        h.update(np.ascontiguousarray(example.inputs[name], dtype=np.float64).tobytes())
    return h.digest()


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "n/a"
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.{digits}g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.{digits - 1}e}"


def _md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(str(c) for c in row) + " |" for row in rows)
    return lines


def draw_examples(identity: Identity | str, count: int, seed: int) -> list[Any]:
    """``count`` examples of ``identity`` drawn by its Hypothesis strategy (generation only)."""
    from hypothesis import HealthCheck, Phase, given
    from hypothesis import seed as hypothesis_seed
    from hypothesis import settings as hypothesis_settings

    ident = get_identity(identity)
    out: list[Any] = []

    def body(example: Any) -> None:
        out.append(example)

    test = given(ident.strategy())(body)
    test = hypothesis_settings(
        max_examples=count,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )(test)
    hypothesis_seed(seed)(test)()
    return out


def _spawn_pool(
    worker: Callable[..., Any],
    items: Sequence[Any],
    jobs: int,
    on_done: Callable[[Any, Any], None],
    should_stop: Callable[[], bool] = lambda: False,
) -> bool:
    """Run ``worker(item)`` for every item (in ``jobs`` spawned processes when ``jobs > 1``).

    ``on_done(item, result)`` is called in this process as each finishes; no new item
    starts once ``should_stop()`` is true.  Returns True when every item ran.
    """
    if jobs <= 1:
        for item in items:
            if should_stop():
                return False
            on_done(item, worker(item))
        return True
    context = multiprocessing.get_context("spawn")
    executor = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_ignore_sigint)
    pending = list(items)[::-1]
    inflight: dict[Future[Any], Any] = {}
    complete = True
    try:
        while pending or inflight:
            while pending and len(inflight) < jobs and not should_stop():
                item = pending.pop()
                inflight[executor.submit(worker, item)] = item
            if not inflight:
                complete = not pending
                break
            finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
            for future in finished:
                item = inflight.pop(future)
                on_done(item, future.result())
    except BaseException:
        processes = list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        raise
    executor.shutdown(wait=True)
    return complete and not pending


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _read_parts(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    parts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            parts.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill mid-write: that unit simply reruns
    return parts


def _append_part(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line with a single ``write`` on an ``O_APPEND`` descriptor.

    Campaigns running at the same time can share a parts file: their lines never interleave.
    """
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(record, default=str) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        while written < len(data):  # not expected for regular files; finish the line anyway
            written += os.write(fd, data[written:])
    finally:
        os.close(fd)


def run_resumable(
    worker: Callable[[Any], dict[str, Any]],
    units: Sequence[Any],
    parts_path: Path,
    jobs: int,
    time_budget_s: float | None,
    fresh: bool,
    on_unit: Callback | None,
) -> tuple[bool, float]:
    """Run the units whose ``key`` is not yet in the parts file, appending each record as it ends.

    ``on_unit(unit, record, done, total)`` after each unit.  No unit starts after
    ``time_budget_s``; Ctrl-C stops the run.  Returns (every unit ran, seconds taken); rerunning
    the same call resumes where it stopped.
    """
    if fresh and parts_path.exists():
        parts_path.unlink()
    done_keys = {p["key"] for p in _read_parts(parts_path)}
    todo = [u for u in units if u.key not in done_keys]
    start = time.perf_counter()
    counter = {"done": len(units) - len(todo)}

    def on_done(unit: Any, record: dict[str, Any]) -> None:
        _append_part(parts_path, record)
        counter["done"] += 1
        if on_unit is not None:
            on_unit(unit, record, counter["done"], len(units))

    def should_stop() -> bool:
        return time_budget_s is not None and time.perf_counter() - start > time_budget_s

    complete = False
    try:
        complete = _spawn_pool(worker, todo, jobs, on_done, should_stop)
    except KeyboardInterrupt:
        complete = False
    return complete, time.perf_counter() - start
