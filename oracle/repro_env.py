"""What a repro snippet needs to run on its own: ``PYTHONPATH`` entries and environment variables.

A repro imports the adapter module (``reproduce('mlp', 'my_adapter:MyAdapter', ...)``) or the
user's functions (``from test_mine import f``).  Run as ``python repro.py`` from elsewhere, such
a module is found only if its folder is on a fresh interpreter's ``sys.path``; when it is not
(the module sits in the current directory, a pytest rootdir, or a ``PYTHONPATH`` entry of this
run), the snippet says so in a ``# needs:`` line, with the variables this run set that change
what frameworks do (``JAX_ENABLE_X64``, ``CUDA_VISIBLE_DEVICES``, ``GRADORACLE_*``, ...) and those
an adapter names in its ``repro_env`` attribute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

#: The comment line that carries the needs (``gradoracle.reporting.tables.repro_needs`` reads it).
NEEDS_PREFIX = "# needs: "

#: Environment variables that change what a framework computes or where it runs.
RELEVANT_VARIABLES: tuple[str, ...] = (
    "JAX_ENABLE_X64",
    "JAX_PLATFORMS",
    "JAX_PLATFORM_NAME",
    "JAX_DEFAULT_MATMUL_PRECISION",
    "XLA_FLAGS",
    "CUDA_VISIBLE_DEVICES",
    "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
    "NVIDIA_TF32_OVERRIDE",
)


_FRESH: dict[str, bool] = {}


def fresh_importable(tops: Iterable[str]) -> dict[str, bool]:
    """Whether a fresh interpreter, run from a neutral folder without ``PYTHONPATH``, imports each name.

    Asked in one subprocess for the names not asked before (cached for the process); when the
    subprocess cannot run, a name counts as importable (no note rather than a wrong one).
    """
    todo = sorted({t for t in tops if t and t not in _FRESH})
    if todo:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
        code = (
            "import importlib.util, json, sys\n"
            "out = {}\n"
            "for name in sys.argv[1:]:\n"
            "    try:\n"
            "        out[name] = importlib.util.find_spec(name) is not None\n"
            "    except Exception:\n"
            "        out[name] = False\n"
            "print(json.dumps(out))\n"
        )
        with tempfile.TemporaryDirectory() as neutral:
            try:
                proc = subprocess.run(
                    [sys.executable, "-c", code, *todo],
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=neutral,
                    timeout=60,
                    check=True,
                )
                answers = json.loads(proc.stdout)
            except (OSError, subprocess.SubprocessError, ValueError):
                answers = {}
        for name in todo:
            _FRESH[name] = bool(answers.get(name, True))
    return {t: _FRESH.get(t, True) for t in tops}


def import_root(module_name: str) -> str | None:
    """The folder that makes ``module_name``'s top-level package importable (None: unknown)."""
    top = module_name.split(".")[0]
    module = sys.modules.get(top)
    file = getattr(module, "__file__", None)
    if not file:
        import importlib.util

        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        file = spec.origin if spec is not None and spec.has_location else None
    if not file:
        return None
    path = Path(file).resolve()
    return str(path.parent.parent if path.name == "__init__.py" else path.parent)


#: ``GRADORACLE_*`` variables that only say where a run writes its files (a large failing
#: example's inputs), never what it computes: a snippet does not need them.
OUTPUT_ONLY_VARIABLES: frozenset[str] = frozenset({"GRADORACLE_REPRO_DIR"})


def needs(modules: Iterable[str], extra_variables: Sequence[str] = ()) -> str:
    """``PYTHONPATH=/a/b JAX_ENABLE_X64=1`` that the snippet importing ``modules`` needs ('' if none)."""
    tops = [m.split(".")[0] for m in modules if m and m != "__main__"]
    fresh = fresh_importable(tops)
    roots: list[str] = []
    for top in tops:
        if fresh.get(top, True):
            continue
        root = import_root(top)
        if root is not None and root not in roots:
            roots.append(root)
    parts = []
    if roots:
        parts.append("PYTHONPATH=" + os.pathsep.join(roots))
    names = list(RELEVANT_VARIABLES) + sorted(
        k for k in os.environ if k.startswith("GRADORACLE_") and k not in OUTPUT_ONLY_VARIABLES
    )
    names += [n for n in extra_variables if n not in names]
    for name in names:
        value = os.environ.get(name)
        if value is not None:
            parts.append(f"{name}={value}")
    return " ".join(parts)


def needs_line(modules: Iterable[str], extra_variables: Sequence[str] = ()) -> str | None:
    """The ``# needs: ...`` comment for a snippet (None when it runs as it is)."""
    text = needs(modules, extra_variables)
    if not text:
        return None
    return f"{NEEDS_PREFIX}{text}  (run it as: {text} python repro.py)"
