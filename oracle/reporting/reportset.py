"""A report set is one unit: the ``--out`` directory holds the whole previous set or the whole new one.

``report.json``, ``report.md``, ``report.html`` and ``junit.xml`` of one run are a *set*:
every file carries the run's id (``run_id`` in the JSON, a comment in the Markdown, a
``<meta>`` in the HTML, a property in the JUnit XML) and ``report-set.json`` (the
manifest) lists them with their sizes and SHA-256.  :func:`write_report_set` writes a set:

1. under an exclusive lock on the directory (:func:`report_dir_lock`; a second run on the
   same ``--out`` is refused with :class:`ReportDirLocked`, naming the run that holds it);
2. every file into a fresh hidden staging directory beside them
   (``.gradoracle-staging-<run id>``), flushed and fsync'ed: a disk-full error or a crash
   here leaves the previous set untouched and the staging directory is removed;
3. a commit journal (``COMMIT`` in the staging directory) written atomically: from then on
   the switch is decided;
4. the switch: the old manifest removed, each file moved over its old one with
   :func:`os.replace`, the previous set's files of formats not written this time removed,
   the new manifest moved in last; Ctrl-C and SIGTERM wait until it is done.

A switch cut short (SIGKILL, power loss) is finished by the next writer or reader of the
directory (:func:`recover`: a staging directory with a journal is rolled forward, one
without is deleted).  Between the crash and that, the directory has no manifest and
:func:`verify_report_set` says so.  Files of other tools in the directory (``bench.json``,
``selftest.json``, a user's own) are never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gradoracle.text import clean_text

#: The manifest of a report set.
MANIFEST_NAME = "report-set.json"
#: The lock file (hidden) that serialises writers of one directory.
LOCK_NAME = ".gradoracle.lock"
#: Prefix of the staging directories (hidden) a set is written into before the switch.
STAGING_PREFIX = ".gradoracle-staging-"
#: The commit journal inside a staging directory.
JOURNAL_NAME = "COMMIT"
MANIFEST_FORMAT = "gradoracle report set"


class ReportDirLocked(OSError):
    """Another run holds the directory's lock; the message names it and says what to do."""


class ReportSetError(ValueError):
    """A directory whose report set is incomplete or mixed; the message says which file and why."""


def new_run_id() -> str:
    """A fresh run id: UTC time and 8 random hex digits (``20260130T041500Z-1a2b3c4d``)."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


# ------------------------------------------------------------------------- locking

_held: dict[str, list[int]] = {}  # resolved directory -> [fd, depth]
_held_guard = threading.Lock()


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {info['pid']}, started {info['started']}: {clean_text(info['command'], 200)}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that did not say which"


@contextlib.contextmanager
def report_dir_lock(directory: str | Path) -> Iterator[None]:
    """Hold the exclusive lock of ``directory`` (created if needed) while the body runs.

    Re-entrant within one process.  Raises :class:`ReportDirLocked` at once when another
    process holds it.  On entry, a switch that another run left unfinished is completed
    (:func:`recover`).  The lock is an OS lock on ``.gradoracle.lock``: a run that dies
    releases it.
    """
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
            entered = True
        else:
            entered = False
    if entered:
        try:
            yield
        finally:
            with _held_guard:
                _held[key][1] -= 1
        return
    lock_path = path / LOCK_NAME
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if not _try_lock(fd):
            raise ReportDirLocked(
                f"{clean_text(str(path))}: another gradoracle run is writing its reports there "
                f"({_holder(lock_path)}); wait for it to finish, or write to another directory (--out)"
            )
        info = {
            "pid": os.getpid(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode("utf-8", "backslashreplace"), 0)
        with _held_guard:
            _held[key] = [fd, 1]
        try:
            recover(path)
            yield
        finally:
            with _held_guard:
                _held.pop(key, None)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing releases the lock


def holds_lock(directory: str | Path) -> bool:
    """True while this process holds ``directory``'s lock."""
    with _held_guard:
        return str(Path(directory).resolve()) in _held


# ------------------------------------------------------------------------- writing


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the body is done (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    names = [s for s in ("SIGINT", "SIGTERM") if hasattr(signal, s)]
    sigs = [getattr(signal, s) for s in names]
    previous = {}
    for sig in sigs:
        try:
            previous[sig] = signal.signal(sig, lambda signum, frame: caught.append(signum))
        except (ValueError, OSError):  # pragma: no cover - not settable here
            continue
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)


def _apply_journal(staging: Path, out: Path) -> None:
    """Finish the switch a journal describes (idempotent: safe to run again after a crash)."""
    journal = json.loads((staging / JOURNAL_NAME).read_text(encoding="utf-8"))
    with contextlib.suppress(FileNotFoundError):
        (out / MANIFEST_NAME).unlink()
    for name in journal["install"]:
        src = staging / name
        if src.exists():
            os.replace(src, out / name)
    for name in journal["remove"]:
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
    if (staging / MANIFEST_NAME).exists():
        os.replace(staging / MANIFEST_NAME, out / MANIFEST_NAME)
    _fsync_dir(out)
    shutil.rmtree(staging, ignore_errors=True)


def recover(directory: str | Path) -> list[str]:
    """Finish or undo what an interrupted writer left in ``directory``; what was done, as lines.

    A staging directory with a commit journal is rolled forward (the new set was complete);
    one without is deleted (the previous set stays).  Call it only under the lock.
    """
    out = Path(directory)
    done: list[str] = []
    if not out.is_dir():
        return done
    for staging in sorted(out.glob(f"{STAGING_PREFIX}*")):
        if not staging.is_dir():
            continue
        if (staging / JOURNAL_NAME).is_file():
            _apply_journal(staging, out)
            done.append(f"finished switching to report set {staging.name[len(STAGING_PREFIX) :]}")
        else:
            shutil.rmtree(staging, ignore_errors=True)
            done.append(f"removed the unfinished report set {staging.name[len(STAGING_PREFIX) :]}")
    return done


def write_report_set(
    directory: str | Path,
    files: Mapping[str, bytes],
    run_id: str,
    owned: Iterable[str] = (),
) -> dict[str, Path]:
    """Write ``files`` (name -> bytes) into ``directory`` as one set (see the module docstring).

    ``owned`` names the files that belong to report sets (files of the previous set not
    in ``files`` are removed in the switch).  Returns ``{name: path}``.
    """
    out = Path(directory)
    with report_dir_lock(out):
        staging = out / f"{STAGING_PREFIX}{run_id}"
        staging.mkdir()
        try:
            mode = 0o666 & ~_umask()
            entries: dict[str, dict[str, Any]] = {}
            for name, data in files.items():
                _write_synced(staging / name, data)
                os.chmod(staging / name, mode)
                entries[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            manifest = {
                "format": MANIFEST_FORMAT,
                "version": 1,
                "run_id": run_id,
                "written": datetime.now(UTC).isoformat(timespec="seconds"),
                "files": entries,
            }
            _write_synced(staging / MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
            os.chmod(staging / MANIFEST_NAME, mode)
            stale = sorted(n for n in set(owned) - set(files) if (out / n).exists())
            journal = {"run_id": run_id, "install": list(files), "remove": stale}
            _write_synced(staging / f"{JOURNAL_NAME}.tmp", json.dumps(journal).encode("utf-8"))
            os.replace(staging / f"{JOURNAL_NAME}.tmp", staging / JOURNAL_NAME)
            _fsync_dir(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        with _signals_deferred():
            _apply_journal(staging, out)
    return {name: out / name for name in files}


# ------------------------------------------------------------------------- reading


def read_manifest(directory: str | Path) -> dict[str, Any] | None:
    """The manifest of ``directory``'s report set, ``None`` when there is none."""
    path = Path(directory) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ReportSetError(f"{path}: the report-set manifest cannot be read: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ReportSetError(f"{path}: not a gradoracle report-set manifest")
    return data


def verify_report_set(directory: str | Path, names: Iterable[str] | None = None) -> str | None:
    """``None`` when ``directory`` holds one complete set; otherwise what is wrong, in a sentence.

    Checks the manifest against the files (size and SHA-256) it lists, or only ``names``.
    A directory without a manifest (reports of an older gradoracle) is accepted unless a
    staging directory shows a switch was cut short.
    """
    out = Path(directory)
    pending = [p.name for p in out.glob(f"{STAGING_PREFIX}*") if (p / JOURNAL_NAME).is_file()]
    try:
        manifest = read_manifest(out)
    except ReportSetError as exc:
        return str(exc)
    if manifest is None:
        if pending:
            return (
                f"{out}: a report set was being switched in when its writer stopped; run gradoracle "
                "(report or merge) on this directory again to finish it"
            )
        return None
    listed: Mapping[str, Any] = manifest.get("files") or {}
    for name in names if names is not None else listed:
        if name not in listed:
            if names is None:
                return f"{out / name} of report set {manifest.get('run_id')} is missing"
            continue  # not a file of the set (a user's own file beside it)
        try:
            data = (out / name).read_bytes()
        except OSError as exc:
            return f"{out / name} of report set {manifest.get('run_id')} cannot be read: {exc}"
        if hashlib.sha256(data).hexdigest() != listed[name].get("sha256"):
            return (
                f"{out / name} does not belong to the report set {manifest.get('run_id')} in {out} "
                "(its content changed after the set was written)"
            )
    return None


def settle(directory: str | Path) -> None:
    """Finish a switch of report sets left half done in ``directory``, if it can be done now.

    A no-op when nothing is pending, when another run holds the lock (it will) or when the
    directory is not writable (:func:`verify_report_set` then says what is wrong).
    """
    out = Path(directory)
    if not any(out.glob(f"{STAGING_PREFIX}*")):
        return
    with contextlib.suppress(OSError), report_dir_lock(out):  # ReportDirLocked is an OSError
        pass
