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
from functools import cache
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


@cache
def fresh_sys_path() -> tuple[str, ...]:
    """``sys.path`` of a fresh interpreter run from a neutral folder without ``PYTHONPATH``.

    Asked once per process (a subprocess of ~30 ms); on failure, the entries under this
    interpreter's prefixes stand in for it.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    with tempfile.TemporaryDirectory() as neutral:
        try:
            proc = subprocess.run(
                [sys.executable, "-c", "import sys, json; print(json.dumps(sys.path[1:]))"],
                capture_output=True,
                text=True,
                env=env,
                cwd=neutral,
                timeout=30,
                check=True,
            )
            entries = json.loads(proc.stdout)
            return tuple(str(Path(e).resolve()) for e in entries if e)
        except (OSError, subprocess.SubprocessError, ValueError):
            prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix}
            return tuple(
                str(Path(e).resolve()) for e in sys.path if e and any(e.startswith(p) for p in prefixes)
            )


def import_root(module_name: str) -> str | None:
    """The ``sys.path`` folder ``module_name`` was imported from (None: unknown, builtin, not loaded)."""
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    depth = module_name.count(".") + (2 if path.name == "__init__.py" else 1)
    root = path
    for _ in range(depth):
        root = root.parent
    return str(root)


def needs(modules: Iterable[str], extra_variables: Sequence[str] = ()) -> str:
    """``PYTHONPATH=/a/b JAX_ENABLE_X64=1`` that the snippet importing ``modules`` needs ('' if none)."""
    default = set(fresh_sys_path())
    roots: list[str] = []
    for name in modules:
        root = import_root(name)
        if root is not None and root not in default and root not in roots:
            roots.append(root)
    parts = []
    if roots:
        parts.append("PYTHONPATH=" + os.pathsep.join(roots))
    names = list(RELEVANT_VARIABLES) + sorted(k for k in os.environ if k.startswith("GRADORACLE_"))
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
