"""The environment a report was produced in: versions, device, threads, BLAS.

Versions come from :mod:`importlib.metadata`, so nothing is imported to learn them.
torch and jax are asked about devices and threads only when they are already imported
(that is, when the run used them); the report never imports a framework on its own.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from importlib import metadata
from typing import Any

#: Distributions whose versions every report records (None when not installed).
PACKAGES: tuple[str, ...] = (
    "gradoracle",
    "numpy",
    "torch",
    "jax",
    "jaxlib",
    "hypothesis",
    "rich",
    "jinja2",
    "matplotlib",
)

#: Environment variables that set thread counts of the numeric libraries.
THREAD_VARIABLES: tuple[str, ...] = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "XLA_FLAGS",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """``{distribution: version}`` from installed metadata, ``None`` when not installed."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def blas_info() -> dict[str, Any]:
    """NumPy's BLAS and LAPACK (name, version, configuration) from ``np.show_config``."""
    import numpy as np

    try:
        config = np.show_config(mode="dicts")
    except (TypeError, ValueError) as exc:  # NumPy < 2 has no mode="dicts"
        return {"error": f"numpy.show_config(mode='dicts') failed: {exc}"}
    deps: dict[str, Any] = dict((config or {}).get("Build Dependencies", {}))
    out: dict[str, Any] = {}
    for key in ("blas", "lapack"):
        dep: dict[str, Any] = dict(deps.get(key) or {})
        out[key] = {
            "name": dep.get("name"),
            "version": dep.get("version"),
            "configuration": dep.get("openblas configuration"),
        }
    return out


def _torch_info() -> dict[str, Any] | None:
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    info: dict[str, Any] = {"threads": torch.get_num_threads()}
    try:
        info["interop_threads"] = torch.get_num_interop_threads()
        info["cuda_available"] = bool(torch.cuda.is_available())
        if info["cuda_available"]:
            info["cuda_device"] = torch.cuda.get_device_name(0)
    except (RuntimeError, AttributeError) as exc:  # a broken CUDA setup must not stop the report
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info


def _jax_info() -> dict[str, Any] | None:
    jax = sys.modules.get("jax")
    if jax is None:
        return None
    try:
        devices = [str(d) for d in jax.devices()]
        return {"backend": jax.default_backend(), "devices": devices}
    except (RuntimeError, AttributeError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def _cpu_count() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count()


def collect_environment() -> dict[str, Any]:
    """Python, platform, package versions, devices, thread counts and BLAS of this process."""
    torch = _torch_info()
    jax = _jax_info()
    devices = ["cpu"]
    if torch and torch.get("cuda_device"):
        devices.append(f"torch: {torch['cuda_device']}")
    if jax and jax.get("backend") not in (None, "cpu"):
        devices.append(f"jax: {jax['backend']} {', '.join(jax.get('devices', []))}")
    return {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
        },
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
        },
        "packages": package_versions(),
        "device": ", ".join(devices),
        "threads": {
            "cpu_count": os.cpu_count(),
            "usable_cpus": _cpu_count(),
            "env": {name: os.environ.get(name) for name in THREAD_VARIABLES},
            "torch": torch,
            "jax": jax,
        },
        "blas": blas_info(),
    }


def hypothesis_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Hypothesis settings every check runs under (as :func:`gradoracle.runner.hypothesis_settings_for`
    applies them): the CLI's fixed ones, or, with ``use_profile`` (the pytest plugin), the loaded
    profile's where gradoracle does not decide."""
    s = dict(settings or {})
    shrink = bool(s.get("shrink", True))
    out: dict[str, Any] = {
        "version": package_versions(("hypothesis",))["hypothesis"],
        "max_examples": s.get("examples"),
        "seed": s.get("seed"),
        "derandomize": False,
        "database": None,
        "deadline": None,
        "phases": ["explicit", "generate", *(["shrink"] if shrink else [])],
        "suppress_health_check": [],
        "report_multiple_bugs": False,
    }
    if s.get("use_profile"):
        from hypothesis import Phase
        from hypothesis import settings as loaded

        profile = loaded.default
        if profile is not None:
            phases = [p.name for p in profile.phases if p is not Phase.explain]
            out.update(
                profile=loaded.get_current_profile_name(),
                derandomize=bool(profile.derandomize),
                database=None if profile.database is None else repr(profile.database),
                phases=[p for p in phases if shrink or p != "shrink"],
                suppress_health_check=[h.name for h in profile.suppress_health_check],
                print_blob=bool(profile.print_blob),
            )
    return out
