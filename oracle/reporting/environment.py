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
from functools import cache
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


def framework_runtime() -> dict[str, Any]:
    """``{"torch": ..., "jax": ...}``: the threads and devices of the frameworks this process has
    imported (``None`` for one it has not)."""
    return {"torch": _torch_info(), "jax": _jax_info()}


def collect_environment(runtime: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Python, platform, package versions, devices, thread counts and BLAS of this process.

    ``runtime`` (:func:`framework_runtime` of the worker processes that loaded the adapters)
    stands in for a framework this process has not imported."""
    here = framework_runtime()
    torch = here["torch"] or (runtime or {}).get("torch")
    jax = here["jax"] or (runtime or {}).get("jax")
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


#: The distributions each built-in adapter module runs on.
BUILTIN_FRAMEWORKS: dict[str, tuple[str, ...]] = {
    "gradoracle.adapters.numpy_engine": ("numpy",),
    "gradoracle.adapters.torch_adapter": ("torch",),
    "gradoracle.adapters.jax_adapter": ("jax", "jaxlib"),
    "gradoracle.adapters.autograd_adapter": ("autograd",),
}
#: Distributions that are tools of gradoracle, not a framework under test.
NOT_FRAMEWORKS: frozenset[str] = frozenset(
    {"gradoracle", "hypothesis", "pytest", "rich", "jinja2", "matplotlib"}
)


@cache
def _owners() -> dict[str, list[str]]:
    """Top-level import name -> distributions (scanned once per process)."""
    return dict(metadata.packages_distributions())


def _distributions_of_module(module_name: str) -> list[str]:
    """The installed distributions a module belongs to or imports at its top level."""
    module = sys.modules.get(module_name)
    if module is None:
        return []
    owners = _owners()
    tops = [module_name.split(".")[0]]
    for value in list(vars(module).values()):
        try:
            name = value.__name__ if isinstance(value, type(sys)) else getattr(value, "__module__", None)
        except Exception:  # a module attribute that misbehaves on access says nothing about frameworks
            continue
        if isinstance(name, str) and name:
            tops.append(name.split(".")[0])
    found: list[str] = []
    for top in tops:
        for dist in owners.get(top, []):
            if dist not in found and dist.lower() not in NOT_FRAMEWORKS:
                found.append(dist)
    return found


def adapter_frameworks(adapter: Any) -> dict[str, str]:
    """``{distribution: version}`` of the framework(s) an adapter runs on.

    An adapter may say it with a ``frameworks`` attribute (distribution names); a built-in
    adapter (or a subclass of one) is known; otherwise the distributions its module belongs
    to and imports (numpy for a NumPy-based one, ``mylib`` for ``import mylib``) are taken.
    An adapter wrapping another (``inner``, as a user check's) reports the inner one's.
    """
    declared = getattr(adapter, "frameworks", None)
    names: list[str] = []
    if isinstance(declared, str):
        names = [declared]
    elif isinstance(declared, list | tuple):
        names = [str(n) for n in declared]
    inner = getattr(adapter, "inner", None)
    if not names and inner is not None and inner is not adapter:
        return adapter_frameworks(inner)
    if not names:
        # the adapter's own modules first (a third party's), then a built-in base class's framework
        for cls in type(adapter).__mro__:
            if cls is object or cls.__module__.startswith("gradoracle."):
                continue
            names += [n for n in _distributions_of_module(cls.__module__) if n not in names]
        builtin = next(
            (c.__module__ for c in type(adapter).__mro__ if c.__module__ in BUILTIN_FRAMEWORKS), None
        )
        if builtin is not None:
            names += [n for n in BUILTIN_FRAMEWORKS[builtin] if n not in names]
    versions = package_versions(tuple(names))
    return {name: version for name, version in versions.items() if version}


def frameworks_that_ran(adapters: Any, results: Any) -> dict[str, dict[str, str]]:
    """``{adapter name: {distribution: version}}`` for every adapter with a check that ran.

    ``adapters`` are adapter objects; a check ran unless it was skipped or not run, so an
    installed framework whose adapter was not used is not named.
    """
    ran = {str(r.adapter) for r in results if str(r.verdict) not in ("skip", "not-run")}
    out: dict[str, dict[str, str]] = {}
    for adapter in adapters:
        name = str(getattr(adapter, "name", ""))
        if name in ran and name not in out:
            out[name] = adapter_frameworks(adapter)
    return out
