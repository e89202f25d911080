"""Mutation testing of gradoracle's own code: does the test suite notice a wrong oracle?

A dev script, not collected by pytest (``tests/tools`` holds no ``test_*.py``).  For one
source file and a list of pytest node ids it enumerates AST mutants, applies them one at a
time to the file in place, runs ``pytest -x -q -p no:cacheprovider <tests>`` with a
per-mutant timeout, and records every mutant as ``killed`` (the tests failed or the module
no longer imports), ``survived`` (the tests passed) or ``timeout`` into a JSON file.

Mutation operators (no dependency beyond :mod:`ast`)::

    binop       +  <-> -,  *  <-> /            (also in augmented assignments: += <-> -=)
    compare     <  <-> <=, >  <-> >=, == <-> !=
    const       c -> c + 1, c -> 0, c -> -c    (int and float literals; not bools)
    transpose   x.T -> x, x.transpose(..) / np.transpose(x, ..) -> x, x[::-1] -> x,
                np.flip(x, ..) / np.rot90(x, ..) / np.swapaxes(x, ..) -> x
    axis        axis=k -> k + 1 and k - 1 (-1 for 0); axis=(i, j) -> its last entry dropped,
                every entry minus 1
    summean     sum <-> mean (np.sum, x.sum(), np.mean, ...)
    minmax      max <-> min, maximum <-> minimum, argmax <-> argmin
    neg         -x -> x (a dropped unary minus)
    swapargs    f(a, b) -> f(b, a): adjacent positional arguments of the same kind (two
                non-literal expressions, or two literals of the same type)

Docstrings, annotations and f-strings are never mutated.  Each mutant replaces the source
text of one node by ``ast.unparse`` of the mutated node (parenthesised where needed); the
rest of the file stays byte-identical, and a mutant whose text does not parse back to the
mutated tree is dropped before anything runs.

Safety.  The original bytes are kept in memory and in a backup under
``$TMPDIR/gradoracle-mutate/``; every mutant is written, tested and restored inside a
``try/finally`` that writes the original back (bytes and mtime) and checks its SHA-256.
SIGINT, SIGTERM and SIGHUP unwind through that ``finally`` (the running pytest's process
group is killed first).  A backup left by a run that was SIGKILLed is restored by the next
run before it starts.  Each mutant gets a distinct mtime and the child processes use a
private ``PYTHONPYCACHEPREFIX``, so no stale bytecode of a mutant can outlive it, and a
private ``HYPOTHESIS_STORAGE_DIRECTORY``, so no mutant's failing example enters the
repository's Hypothesis database.  A ``sitecustomize`` on the children's ``PYTHONPATH`` maps
``gradoracle`` to the ``oracle/`` and ``adapters/`` next to this script, so a copy of the
repository can be mutated while the worktree stays untouched (a test that starts a
subprocess with ``PYTHONPATH`` removed imports the editable install's checkout instead).

Usage (from the repository root)::

    nice -n 10 .venv/bin/python tests/tools/mutate.py oracle/reference_ops.py \\
        --tests tests/test_identities.py tests/test_layers.py \\
        --sample 60 --seed 1 --timeout 90 --out reports/_mutants/reference_ops.json

    # every mutant, listed without running anything
    .venv/bin/python tests/tools/mutate.py oracle/tolerances.py --list

    # run again only the survivors of an earlier run (after adding tests)
    nice -n 10 .venv/bin/python tests/tools/mutate.py oracle/reference_ops.py \\
        --tests tests/test_self_mutation_gaps.py tests/test_identities.py \\
        --rerun reports/_mutants/reference_ops.json --out reports/_mutants/reference_ops.rerun.json

Options: ``--sample N --seed S`` (a seeded sample of the mutants), ``--only NAME ...``
(only mutants inside these functions/classes, matched on the qualified name's parts),
``--operators OP ...``, ``--timeout SECONDS`` (per mutant), ``--workers N`` (passed to
pytest-xdist as ``-n``), ``--rerun JSON`` (the mutants recorded there as survived or
timeout), ``--ids I ...``, ``--list``, ``--out JSON``.  The exit status is 0 when every
mutant that ran was killed, 1 when some survived or timed out, 2 on a usage error or when
the tests fail on the unmutated file.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BACKUP_DIR = Path(tempfile.gettempdir()) / "gradoracle-mutate"

BINOP_SWAP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
}
CMP_SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
}
NAME_SWAPS: dict[str, tuple[str, dict[str, str]]] = {
    "summean": ("summean", {"sum": "mean", "mean": "sum", "nansum": "nanmean", "nanmean": "nansum"}),
    "minmax": (
        "minmax",
        {
            "max": "min",
            "min": "max",
            "maximum": "minimum",
            "minimum": "maximum",
            "argmax": "argmin",
            "argmin": "argmax",
            "amax": "amin",
            "amin": "amax",
        },
    ),
}
REMOVABLE_CALLS = {"transpose", "flip", "rot90", "swapaxes", "flipud", "fliplr"}
OPERATORS = ("binop", "compare", "const", "transpose", "axis", "summean", "minmax", "neg", "swapargs")


@dataclass
class Mutant:
    """One mutant: where, which operator, the source text before and after."""

    id: int
    file: str
    line: int
    col: int
    end_line: int
    end_col: int
    operator: str
    before: str
    after: str
    scope: str
    status: str = "pending"
    rc: int | None = None
    seconds: float | None = None
    killed_by: str | None = None
    detail: str | None = None

    def key(self) -> tuple[int, int, str, str]:
        """What identifies a mutant across runs on the same source."""
        return (self.line, self.col, self.operator, self.after)

    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Candidate:
    """A node path and a function producing the mutated node (a deep copy)."""

    node: ast.AST
    operator: str
    make: Callable[[ast.AST], ast.AST]
    scope: str
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ enumeration


def _skip_ranges(tree: ast.Module) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Source ranges never mutated: docstrings, annotations, f-strings, ``__future__`` imports."""
    ranges: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ranges.append(body[0])
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.returns is not None:
                ranges.append(node.returns)
            args = node.args
            for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
                if a is not None and a.annotation is not None:
                    ranges.append(a.annotation)
        if isinstance(node, ast.AnnAssign):
            ranges.append(node.annotation)
        if isinstance(node, (ast.JoinedStr, ast.ImportFrom, ast.Import)):
            ranges.append(node)
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id in {"__all__", "TypeAlias"} for t in node.targets
        ):
            ranges.append(node)
    out = []
    for n in ranges:
        if getattr(n, "lineno", None) is None:
            continue
        out.append(((n.lineno, n.col_offset), (n.end_lineno or n.lineno, n.end_col_offset or 0)))
    return out


def _inside(node: ast.AST, ranges: list[tuple[tuple[int, int], tuple[int, int]]]) -> bool:
    start = (node.lineno, node.col_offset)  # type: ignore[attr-defined]
    end = (node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]
    return any(lo <= start and end <= hi for lo, hi in ranges)


def _call_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _is_minus_one_step(s: ast.expr) -> bool:
    return (
        isinstance(s, ast.Slice)
        and s.lower is None
        and s.upper is None
        and isinstance(s.step, ast.UnaryOp)
        and isinstance(s.step.op, ast.USub)
        and isinstance(s.step.operand, ast.Constant)
        and s.step.operand.value == 1
    )


def _number(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, (int, float))
        and not isinstance(node.value, bool)
    )


def _kind(node: ast.expr) -> str | None:
    if isinstance(node, ast.Starred):
        return None
    if isinstance(node, ast.Constant):
        return f"const:{type(node.value).__name__}"
    return "expr"


def _with(node: ast.AST, **changes: Any) -> ast.AST:
    new = copy.deepcopy(node)
    for k, v in changes.items():
        setattr(new, k, v)
    return new


def _constant_variants(value: int | float) -> list[int | float]:
    out: list[int | float] = []
    for v in (value + 1, 0 * value, -value):
        if v != value and v not in out:
            out.append(v)
    return out


def _axis_variants(value: ast.expr) -> list[ast.expr]:
    if _number(value) and isinstance(value.value, int):  # type: ignore[attr-defined]
        k = value.value  # type: ignore[attr-defined]
        options = [k + 1, k - 1 if k > 0 else -1] if k >= 0 else [k - 1, k + 1]
        return [ast.Constant(v) for v in dict.fromkeys(options) if v != k]
    if (
        isinstance(value, ast.UnaryOp)
        and isinstance(value.op, ast.USub)
        and _number(value.operand)
        and isinstance(value.operand.value, int)  # type: ignore[attr-defined]
    ):
        k = -value.operand.value  # type: ignore[attr-defined]
        return [ast.Constant(v) for v in (k - 1, k + 1) if v != k]
    if (
        isinstance(value, ast.Tuple)
        and value.elts
        and all(
            _number(e) and isinstance(e.value, int)  # type: ignore[attr-defined]
            for e in value.elts
        )
    ):
        ints = [e.value for e in value.elts]  # type: ignore[attr-defined]
        out: list[ast.expr] = []
        if len(ints) > 1:
            out.append(ast.Tuple([ast.Constant(v) for v in ints[:-1]], ast.Load()))
        out.append(ast.Tuple([ast.Constant(v - 1) for v in ints], ast.Load()))
        return out
    return []


def _scopes(tree: ast.Module) -> dict[int, str]:
    """``id(node) -> 'Class.method'`` for every node inside a def or class."""
    out: dict[int, str] = {}

    def visit(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{scope}.{child.name}" if scope else child.name
                out[id(child)] = inner
                visit(child, inner)
            else:
                out[id(child)] = scope
                visit(child, scope)

    visit(tree, "")
    return out


def candidates(tree: ast.Module) -> Iterator[Candidate]:
    """Every mutation site of ``tree``, in source order of the nodes."""
    skip = _skip_ranges(tree)
    scopes = _scopes(tree)
    nodes = [n for n in ast.walk(tree) if hasattr(n, "lineno") and not isinstance(n, ast.stmt | ast.arg)]
    nodes += [n for n in ast.walk(tree) if isinstance(n, ast.AugAssign)]
    nodes.sort(key=lambda n: (n.lineno, n.col_offset, -(n.end_lineno or 0), -(n.end_col_offset or 0)))  # type: ignore[attr-defined]
    for node in nodes:
        if _inside(node, skip):
            continue
        scope = scopes.get(id(node), "")
        if isinstance(node, ast.BinOp) and type(node.op) in BINOP_SWAP:
            yield Candidate(node, "binop", lambda n: _with(n, op=BINOP_SWAP[type(n.op)]()), scope)
        if isinstance(node, ast.AugAssign) and type(node.op) in BINOP_SWAP:
            yield Candidate(node, "binop", lambda n: _with(n, op=BINOP_SWAP[type(n.op)]()), scope)
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in CMP_SWAP:

                    def flip(n: ast.AST, i: int = i) -> ast.AST:
                        new = copy.deepcopy(n)
                        new.ops[i] = CMP_SWAP[type(new.ops[i])]()  # type: ignore[attr-defined]
                        return new

                    yield Candidate(node, "compare", flip, scope)
        if _number(node):
            for v in _constant_variants(node.value):  # type: ignore[attr-defined]
                yield Candidate(node, "const", lambda n, v=v: ast.Constant(v), scope)
        if isinstance(node, ast.Attribute) and node.attr in {"T", "mT"} and isinstance(node.ctx, ast.Load):
            yield Candidate(node, "transpose", lambda n: copy.deepcopy(n.value), scope)
        if isinstance(node, ast.Call):
            name = _call_name(node.func)
            if name in REMOVABLE_CALLS:
                if isinstance(node.func, ast.Attribute) and not (
                    isinstance(node.func.value, ast.Name) and node.func.value.id in {"np", "numpy", "jnp"}
                ):
                    yield Candidate(node, "transpose", lambda n: copy.deepcopy(n.func.value), scope)
                elif node.args and not isinstance(node.args[0], ast.Starred):
                    yield Candidate(node, "transpose", lambda n: copy.deepcopy(n.args[0]), scope)
            for kw in node.keywords:
                if kw.arg == "axis" or kw.arg == "axes":
                    for variant in _axis_variants(kw.value):
                        yield Candidate(kw.value, "axis", lambda n, v=variant: v, scope)
            positional = node.args
            for i in range(len(positional) - 1):
                a, b = positional[i], positional[i + 1]
                ka, kb = _kind(a), _kind(b)
                if ka is None or ka != kb or ast.dump(a) == ast.dump(b):
                    continue

                def swap(n: ast.AST, i: int = i) -> ast.AST:
                    new = copy.deepcopy(n)
                    args = new.args  # type: ignore[attr-defined]
                    args[i], args[i + 1] = args[i + 1], args[i]
                    return new

                yield Candidate(node, "swapargs", swap, scope)
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            s = node.slice
            parts = s.elts if isinstance(s, ast.Tuple) else [s]
            if any(_is_minus_one_step(p) for p in parts) and all(
                _is_minus_one_step(p)
                or (isinstance(p, ast.Slice) and p.lower is None and p.upper is None and p.step is None)
                or (isinstance(p, ast.Constant) and p.value is Ellipsis)
                for p in parts
            ):
                yield Candidate(node, "transpose", lambda n: copy.deepcopy(n.value), scope)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and not _number(node.operand):
            yield Candidate(node, "neg", lambda n: copy.deepcopy(n.operand), scope)
        if isinstance(node, ast.Call):
            func = node.func
            name = _call_name(func)
            for op, (_, table) in NAME_SWAPS.items():
                if name in table:
                    new_name = table[name]
                    if isinstance(func, ast.Attribute):
                        yield Candidate(func, op, lambda n, new_name=new_name: _with(n, attr=new_name), scope)
                    elif isinstance(func, ast.Name) and name != "sum":  # not the builtin sum
                        yield Candidate(func, op, lambda n, new_name=new_name: _with(n, id=new_name), scope)


def _offsets(source: str) -> list[int]:
    """Character offset of the start of every line (1-based line numbers index it)."""
    out = [0, 0]
    for line in source.splitlines(keepends=True):
        out.append(out[-1] + len(line))
    return out


def _parents(tree: ast.Module) -> dict[int, tuple[ast.AST, str, int | None]]:
    """``id(node) -> (parent, field, list index or None)`` for every node of ``tree``."""
    out: dict[int, tuple[ast.AST, str, int | None]] = {}
    for parent in ast.walk(tree):
        for name, value in ast.iter_fields(parent):
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, ast.AST):
                        out[id(item)] = (parent, name, i)
            elif isinstance(value, ast.AST):
                out[id(value)] = (parent, name, None)
    return out


def _statement(parents: dict[int, tuple[ast.AST, str, int | None]], node: ast.AST) -> ast.AST:
    """The innermost statement holding ``node`` (``node`` itself when it is one)."""
    while not isinstance(node, ast.stmt):
        node = parents[id(node)][0]
    return node


def _dump_replaced(
    parents: dict[int, tuple[ast.AST, str, int | None]], target: ast.AST, new: ast.AST
) -> tuple[ast.AST, str]:
    """The statement holding ``target`` and its dump with ``target`` replaced by ``new`` (the tree
    is put back as it was)."""
    stmt = _statement(parents, target)
    parent, name, index = parents[id(target)]
    if index is None:
        setattr(parent, name, new)
    else:
        getattr(parent, name)[index] = new
    try:
        return stmt, _strip(new if stmt is target else stmt)
    finally:
        if index is None:
            setattr(parent, name, target)
        else:
            getattr(parent, name)[index] = target


def _statement_at(tree: ast.Module, like: ast.AST) -> ast.AST | None:
    """The statement of ``tree`` of the type of ``like`` that starts where ``like`` starts."""
    line, col = like.lineno, like.col_offset  # type: ignore[attr-defined]
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        start = getattr(node, "lineno", None)
        if start is not None and not (start <= line <= (node.end_lineno or start)):  # type: ignore[attr-defined]
            continue
        if type(node) is type(like) and start == line and node.col_offset == col:  # type: ignore[attr-defined]
            return node
        todo.extend(ast.iter_child_nodes(node))
    return None


def _strip(dump_tree: ast.AST) -> str:
    return ast.dump(dump_tree, annotate_fields=False, include_attributes=False)


def enumerate_mutants(path: Path, rel: str) -> tuple[list[Mutant], dict[int, str]]:
    """All mutants of ``path`` whose text parses back to the mutated tree, and their sources."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    line_start = _offsets(source)
    parents = _parents(tree)
    mutants: list[Mutant] = []
    texts: dict[int, str] = {}
    seen: set[tuple[int, int, str, str]] = set()
    for cand in candidates(tree):
        node = cand.node
        start = line_start[node.lineno] + node.col_offset  # type: ignore[attr-defined]
        end = line_start[node.end_lineno] + node.end_col_offset  # type: ignore[attr-defined]
        # col offsets are UTF-8 byte offsets; the reference files are ASCII where it matters
        before = source[start:end]
        new = cand.make(node)
        stmt, expected = _dump_replaced(parents, node, new)
        replacement = ast.unparse(new)
        mutated = None
        for text in (replacement, f"({replacement})"):
            attempt = source[:start] + text + source[end:]
            try:
                parsed = ast.parse(attempt)
                found = _statement_at(parsed, stmt)
                if len(parsed.body) == len(tree.body) and found is not None and _strip(found) == expected:
                    mutated, replacement = attempt, text
                    break
            except SyntaxError:
                continue
        if mutated is None or mutated == source:
            continue
        short_before = " ".join(before.split())
        short_after = " ".join(replacement.split())
        key = (node.lineno, node.col_offset, cand.operator, short_after)  # type: ignore[attr-defined]
        if key in seen:
            continue
        seen.add(key)
        m = Mutant(
            id=len(mutants),
            file=rel,
            line=node.lineno,  # type: ignore[attr-defined]
            col=node.col_offset,  # type: ignore[attr-defined]
            end_line=node.end_lineno,  # type: ignore[attr-defined]
            end_col=node.end_col_offset,  # type: ignore[attr-defined]
            operator=cand.operator,
            before=short_before,
            after=short_after,
            scope=cand.scope,
        )
        mutants.append(m)
        texts[m.id] = mutated
    return mutants, texts


# ------------------------------------------------------------------------------ applying safely


class Interrupted(BaseException):
    """SIGTERM or SIGHUP, turned into an exception so that ``finally`` blocks run."""


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Restorer:
    """Holds the original bytes and mtime of the file under mutation and puts them back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.original = path.read_bytes()
        self.digest = _sha(self.original)
        st = path.stat()
        self.times = (st.st_atime_ns, st.st_mtime_ns)
        BACKUP_DIR.mkdir(parents=True, exist_ok=True)
        tag = hashlib.sha256(str(path).encode()).hexdigest()[:16]
        self.backup = BACKUP_DIR / f"{tag}.orig"
        self.meta = BACKUP_DIR / f"{tag}.json"

    @staticmethod
    def recover(path: Path) -> bool:
        """Restore ``path`` from a backup left by a killed run; True when one was restored."""
        tag = hashlib.sha256(str(path).encode()).hexdigest()[:16]
        backup, meta = BACKUP_DIR / f"{tag}.orig", BACKUP_DIR / f"{tag}.json"
        if not (backup.exists() and meta.exists()):
            return False
        info = json.loads(meta.read_text())
        data = backup.read_bytes()
        if _sha(data) != info["sha256"]:
            raise SystemExit(f"backup {backup} is damaged; restore {path} from git by hand")
        path.write_bytes(data)
        os.utime(path, ns=tuple(info["times"]))
        backup.unlink()
        meta.unlink()
        return True

    def write_backup(self) -> None:
        self.backup.write_bytes(self.original)
        self.meta.write_text(json.dumps({"path": str(self.path), "sha256": self.digest, "times": self.times}))

    def drop_backup(self) -> None:
        for p in (self.backup, self.meta):
            if p.exists():
                p.unlink()

    def apply(self, text: str, serial: int) -> None:
        self.path.write_bytes(text.encode("utf-8"))
        # a distinct mtime per mutant: bytecode cached for one mutant is never valid for another
        base = self.times[1] // 1_000_000_000
        os.utime(self.path, (base + 10 + serial, base + 10 + serial))

    def restore(self) -> None:
        self.path.write_bytes(self.original)
        os.utime(self.path, ns=self.times)
        if _sha(self.path.read_bytes()) != self.digest:
            raise SystemExit(f"{self.path} was NOT restored byte-identical; restore it from {self.backup}")


# ------------------------------------------------------------------------------ running


SITECUSTOMIZE = """\
# written by tests/tools/mutate.py: import gradoracle from {repo}
import importlib.util
import sys

_WHERE = {{"gradoracle": {oracle!r}, "gradoracle.adapters": {adapters!r}}}


class _MutantCopyFinder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        folder = _WHERE.get(name)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            name, folder + "/__init__.py", submodule_search_locations=[folder]
        )


sys.meta_path.insert(0, _MutantCopyFinder)
"""


def _package_view(root: Path) -> Path:
    """A folder for the children's ``PYTHONPATH`` whose ``sitecustomize`` maps ``gradoracle`` to this
    repository's ``oracle/`` and ``gradoracle.adapters`` to its ``adapters/`` (the mapping of the
    editable install): the tests import the code of the copy of the repository this script lies
    in, whatever checkout the virtual environment's editable install points at, so a copy can be
    mutated while the working tree stays untouched."""
    view = root / "view"
    view.mkdir(parents=True)
    text = SITECUSTOMIZE.format(repo=REPO, oracle=str(REPO / "oracle"), adapters=str(REPO / "adapters"))
    (view / "sitecustomize.py").write_text(text)
    return view


def _pytest_command(args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-rf", "--no-header"]
    if args.workers:
        cmd += ["-n", str(args.workers)]
    else:
        cmd += ["-p", "no:xdist"]
    return cmd + shlex.split(args.pytest_args) + list(args.tests)


def _run_tests(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[str, int | None, float, str]:
    """``(status, rc, seconds, output)`` of one pytest run."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        status = "survived" if proc.returncode == 0 else "killed"
        if proc.returncode in (4, 5):  # usage error, no tests collected: nothing was tested
            status = "error"
        return status, proc.returncode, time.monotonic() - t0, out.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, _ = proc.communicate()
        return "timeout", None, time.monotonic() - t0, out.decode("utf-8", "replace")
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _killer(output: str) -> tuple[str | None, str | None]:
    """The first failing test and the first line of its error, from pytest's summary."""
    for line in output.splitlines():
        m = re.match(r"(FAILED|ERROR) (\S+)(?: - (.*))?", line)
        if m:
            return m.group(2), (m.group(3) or "")[:200]
    for line in output.splitlines():
        if "Error" in line and ("import" in line.lower() or line.startswith("E ")):
            return "(collection)", line.strip()[:200]
    return None, output.strip().splitlines()[-1][:200] if output.strip() else None


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", help="source file to mutate, relative to the repository root")
    parser.add_argument("--tests", nargs="+", default=[], help="pytest node ids to run per mutant")
    parser.add_argument("--sample", type=int, default=0, help="run a seeded sample of N mutants (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per mutant")
    parser.add_argument("--workers", type=int, default=0, help="pytest-xdist -n (0: no xdist)")
    parser.add_argument("--pytest-args", default="", help="more pytest arguments, one string")
    parser.add_argument("--only", nargs="+", default=[], help="only mutants inside these defs/classes")
    parser.add_argument("--operators", nargs="+", default=list(OPERATORS), choices=OPERATORS)
    parser.add_argument("--ids", nargs="+", type=int, default=[], help="only these mutant ids")
    parser.add_argument("--rerun", help="JSON of an earlier run: run its survived/timeout mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--out", help="JSON file to write (default reports/_mutants/<stem>.json)")
    args = parser.parse_args(argv)

    path = (REPO / args.file).resolve()
    if not path.is_file():
        parser.error(f"{args.file}: no such file")
    rel = str(path.relative_to(REPO))
    if Restorer.recover(path):
        print(f"restored {rel} from the backup of an interrupted run", file=sys.stderr)

    mutants, texts = enumerate_mutants(path, rel)
    total = len(mutants)
    chosen = [m for m in mutants if m.operator in args.operators]
    if args.only:
        wanted = set(args.only)
        chosen = [m for m in chosen if wanted & set(m.scope.split("."))]
    if args.ids:
        ids = set(args.ids)
        chosen = [m for m in chosen if m.id in ids]
    if args.rerun:
        earlier = json.loads(Path(args.rerun).read_text())
        keys = {
            (r["line"], r["col"], r["operator"], r["after"])
            for r in earlier["mutants"]
            if r["status"] in ("survived", "timeout")
        }
        chosen = [m for m in chosen if m.key() in keys]
    eligible = len(chosen)
    if args.sample and args.sample < len(chosen):
        chosen = sorted(random.Random(args.seed).sample(chosen, args.sample), key=lambda m: m.id)

    if args.list:
        for m in chosen:
            print(f"{m.id:4d} {m.where():40s} {m.operator:9s} {m.scope:32s} {m.before!r} -> {m.after!r}")
        print(f"{len(chosen)} of {total} mutants", file=sys.stderr)
        return 0
    if not args.tests:
        parser.error("--tests is required unless --list")

    out_path = Path(args.out) if args.out else REPO / "reports" / "_mutants" / f"{path.stem}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    cache = Path(tempfile.mkdtemp(prefix="gradoracle-mutate-"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_package_view(cache)), *filter(None, [env.get("PYTHONPATH")])])
    probe = subprocess.run(
        [sys.executable, "-c", "import gradoracle.adapters as a; print(a.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    if Path(probe.stdout.strip()).resolve() != (REPO / "adapters" / "__init__.py").resolve():
        print(f"the tests would import {probe.stdout.strip()}, not this copy's code", file=sys.stderr)
        return 2
    env["PYTHONPYCACHEPREFIX"] = str(cache / "pycache")
    env["HYPOTHESIS_STORAGE_DIRECTORY"] = str(cache / "hypothesis")
    env.pop("PYTEST_ADDOPTS", None)
    cmd = _pytest_command(args)

    record: dict[str, Any] = {
        "file": rel,
        "sha256": _sha(path.read_bytes()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else " ".join(argv),
        "pytest": " ".join(cmd[1:]),
        "tests": args.tests,
        "seed": args.seed,
        "sample": args.sample,
        "timeout": args.timeout,
        "mutants_total": total,
        "mutants_eligible": eligible,
        "load_start": _loadavg(),
        "mutants": [],
    }

    old_handlers = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGTERM, signal.SIGHUP)}
    # Ctrl-C even where the shell started this in the background with SIGINT ignored
    old_handlers[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    restorer = Restorer(path)
    try:
        status, rc, secs, output = _run_tests(cmd, env, max(args.timeout, 5 * args.timeout))
        record["baseline"] = {"status": status, "rc": rc, "seconds": round(secs, 1)}
        print(f"baseline (unmutated): {status} in {secs:.1f}s, load {_loadavg()}", flush=True)
        if status != "survived":
            print(output[-3000:], file=sys.stderr)
            print("the tests fail on the unmutated file: nothing to measure", file=sys.stderr)
            return 2
        for n, m in enumerate(chosen, 1):
            restorer.write_backup()
            try:
                restorer.apply(texts[m.id], n)
                status, rc, secs, output = _run_tests(cmd, env, args.timeout)
            finally:
                restorer.restore()
                restorer.drop_backup()
            m.status, m.rc, m.seconds = status, rc, round(secs, 1)
            if status in ("killed", "error"):
                m.killed_by, m.detail = _killer(output)
            print(
                f"[{n}/{len(chosen)}] {status:8s} {secs:5.1f}s {m.where()} {m.operator} "
                f"{m.before!r} -> {m.after!r}" + (f"  ({m.killed_by})" if m.killed_by else ""),
                flush=True,
            )
            record["mutants"].append(asdict(m))
            out_path.write_text(json.dumps(record, indent=1))
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"interrupted ({str(exc) or 'SIGINT'}); {rel} restored", file=sys.stderr)
        record["interrupted"] = True
        return 130
    finally:
        restorer.restore()
        restorer.drop_backup()
        for s, h in old_handlers.items():
            signal.signal(s, h)
        shutil.rmtree(cache, ignore_errors=True)  # the children's bytecode and Hypothesis data
        record["load_end"] = _loadavg()
        counts: dict[str, int] = {}
        for r in record["mutants"]:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        record["counts"] = counts
        out_path.write_text(json.dumps(record, indent=1))
    print(f"{rel}: {counts} -> {out_path}")
    return 0 if set(counts) <= {"killed"} else 1


if __name__ == "__main__":
    sys.exit(main())
