"""Framework adapters, loaded lazily by name.

``load_adapter(spec)`` accepts:

- a short name: ``torch``, ``jax``, ``numpy`` (the in-house NumPy backprop engine),
  ``autograd`` (the shipped example adapter for HIPS autograd);
- a name registered by another package in the ``gradoracle.adapters`` entry-point group;
- a ``package.module:Class`` path (the class is instantiated with no arguments);

optionally followed by ``?key=value&key=value`` constructor options, e.g.
``torch?device=cuda``.  Importing this package imports neither torch nor jax.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from importlib.metadata import entry_points
from typing import Any

from gradoracle.adapters.base import Adapter, AdapterBase, ForwardFn, VJPResult

__all__ = [
    "BUILTIN_ADAPTERS",
    "Adapter",
    "AdapterBase",
    "AdapterLoadError",
    "ForwardFn",
    "VJPResult",
    "available_adapter_names",
    "describe_failure",
    "load_adapter",
]

#: Short names of the adapters that ship with gradoracle, as ``module:Class`` paths.
BUILTIN_ADAPTERS: dict[str, str] = {
    "numpy": "gradoracle.adapters.numpy_engine:NumpyEngineAdapter",
    "torch": "gradoracle.adapters.torch_adapter:TorchAdapter",
    "jax": "gradoracle.adapters.jax_adapter:JaxAdapter",
    # a shipped example written only against the public protocol; needs `pip install autograd`
    "autograd": "gradoracle.adapters.autograd_adapter:AutogradAdapter",
}

ENTRY_POINT_GROUP = "gradoracle.adapters"


class AdapterLoadError(ValueError):
    """An adapter spec that names nothing loadable; the message (one line) says how to fix it."""


def describe_failure(exc: BaseException) -> str:
    """``Type: message`` of a failure in an adapter's own code, on one line and cleaned."""
    from gradoracle.text import one_line, safe_str

    if isinstance(exc, SystemExit):
        return one_line(f"SystemExit({safe_str(exc.code)}) (it called sys.exit)")
    text = safe_str(exc)
    return one_line(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _registered() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_adapter_names() -> list[str]:
    """Short names that ``load_adapter`` understands (built-in and entry points)."""
    return sorted(set(BUILTIN_ADAPTERS) | set(_registered()))


def _parse_options(text: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for part in filter(None, text.split("&")):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise AdapterLoadError(f"adapter option {part!r} is not of the form key=value")
        options[key] = value
    return options


def _import_hint(module_name: str, exc: ImportError) -> str:
    """What is true about a failed import of an adapter's module, and how to fix it."""
    missing = exc.name or ""
    if not (isinstance(exc, ModuleNotFoundError) and f"{module_name}.".startswith(f"{missing}.")):
        return f"{module_name!r} itself was found; the import failed inside it."
    cwd = os.getcwd()
    source = module_name.replace(".", "/") + ".py"
    if any(os.path.abspath(entry or os.curdir) == cwd for entry in sys.path):
        return (
            f"It is not importable from the current directory {cwd} or the installed packages; "
            f"run from the directory that holds {source} or install it."
        )
    return (
        f"It is not importable from sys.path (which does not hold the current directory {cwd}) "
        f"or the installed packages; put the directory that holds {source} on sys.path or install it."
    )


def _load_path(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise AdapterLoadError(f"adapter path {path!r} must look like 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = _import_hint(module_name, exc)
        raise AdapterLoadError(
            f"cannot import module {module_name!r} for adapter {path!r}: {describe_failure(exc)}. {hint}"
        ) from exc
    except (Exception, SystemExit) as exc:  # the module's own code failed while it was imported
        raise AdapterLoadError(
            f"importing module {module_name!r} for adapter {path!r} failed: {describe_failure(exc)}. "
            "The module was found; fix the error in its code."
        ) from exc
    try:
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as exc:
        raise AdapterLoadError(f"module {module_name!r} has no attribute {attr!r}") from exc
    return obj


def load_adapter(spec: str | Adapter) -> Adapter:
    """Instantiate the adapter that ``spec`` names (see the module docstring)."""
    if not isinstance(spec, str):
        return spec
    spec = spec.strip()
    target, _, opt_text = spec.partition("?")
    options = _parse_options(opt_text)
    if ":" in target:
        obj = _load_path(target)
    elif target in BUILTIN_ADAPTERS:
        obj = _load_path(BUILTIN_ADAPTERS[target])
    elif target in (registered := _registered()):
        try:
            obj = registered[target].load()
        except (Exception, SystemExit) as exc:  # a third-party entry point may fail in any way
            raise AdapterLoadError(f"entry point {target!r} failed to load: {describe_failure(exc)}") from exc
    else:
        known = available_adapter_names()
        close = difflib.get_close_matches(target, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise AdapterLoadError(
            f"unknown adapter {target!r}.{hint} Known adapters: {', '.join(known)}; "
            "or give a 'package.module:Class' path."
        )
    try:
        adapter = obj(**options) if isinstance(obj, type) else obj
    except TypeError as exc:
        if options:
            raise AdapterLoadError(
                f"adapter {target!r} does not accept options {options}: {describe_failure(exc)}"
            ) from exc
        raise AdapterLoadError(
            f"adapter {target!r} cannot be constructed without arguments ({describe_failure(exc)}): "
            "an adapter class takes its settings as keyword options with defaults "
            "(--adapter 'module:Class?key=value')"
        ) from exc
    except ValueError as exc:  # e.g. torch?device=cuda on a machine without CUDA
        raise AdapterLoadError(f"adapter {spec!r}: {describe_failure(exc)}") from exc
    except (Exception, SystemExit) as exc:  # the constructor failed in its own way
        raise AdapterLoadError(
            f"adapter {spec!r}: constructor raised {describe_failure(exc)}; fix the adapter or its options"
        ) from exc
    # look the members up on the class: reading ``ops`` on the instance may import the framework
    missing = [m for m in ("name", "vjp", "forward", "available", "ops") if not hasattr(type(adapter), m)]
    if missing:
        raise AdapterLoadError(
            f"{target!r} is not an adapter: it lacks {', '.join(missing)} "
            "(see gradoracle.adapters.base.Adapter for the protocol)"
        )
    return adapter
