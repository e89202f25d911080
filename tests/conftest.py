"""Test-suite plumbing: modules imported before ``pytester`` takes its ``sys.modules`` snapshot.

``pytester.runpytest()`` (in process) restores ``sys.modules`` afterwards, dropping every module
first imported during the inner run.  A module imported lazily by the runner (a Hypothesis
internal, ``gradoracle.modes``, jaxlib, matplotlib) is then imported a second time by a later
test on the same xdist worker, and two copies of its classes meet ("binary(...) returned
non-strategy BytesStrategy", a re-imported jaxlib aborting).  Every test that uses
``pytester`` first runs, once per worker, the same in-process work as the inner runs do.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import tempfile
from typing import Any

import pytest

# A failing check on a large example saves its inputs for the repro snippet (``.npz``); the suite's
# many deliberately failing checks write them here, not into the checkout's ``.gradoracle/repro``
# (tests of the default location unset it).
os.environ.setdefault("GRADORACLE_REPRO_DIR", tempfile.mkdtemp(prefix="gradoracle-test-repro-"))


@pytest.fixture(scope="session")
def _imported_before_pytester() -> None:
    import gradoracle
    from gradoracle.runner import CheckSettings, check

    for info in pkgutil.walk_packages(gradoracle.__path__, "gradoracle."):
        if info.name.endswith("__main__"):  # runs the command line
            continue
        with contextlib.suppress(Exception):  # a framework extra that is not installed
            importlib.import_module(info.name)
    for name in ("hypothesis.extra.numpy", "jinja2", "matplotlib", "matplotlib.pyplot", "jax", "torch"):
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    settings = CheckSettings(examples=2)
    for adapter in ("numpy", "jax", "torch"):  # the lazy imports of a real check, reverse mode and modes
        for mode in ("vjp", "jvp", "hvp"):
            check("elementwise-sigmoid", adapter, "float64", settings, mode)


@pytest.fixture(autouse=True)
def _imports_before_pytester(request: Any) -> None:
    """Autouse fixtures run before ``pytester``, so its snapshot holds these imports."""
    if "pytester" in request.fixturenames:
        request.getfixturevalue("_imported_before_pytester")
