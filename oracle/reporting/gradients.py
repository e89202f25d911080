"""The gradients behind a failure, for the report's pictures.

A failed check keeps its (shrunk) counterexample: inputs, params and the example seed.
Re-running that one example gives, per differentiated input, the adapter's autodiff
``u^T J`` and the closed form from the notes, with the same cotangent ``u`` the runner
drew (``u ~ U(-1, 1)`` from ``numpy.random.default_rng(seed)``, cast to the dtype under
test).  They are stored in the counterexample as ``gradients = {input: {"autodiff":
..., "analytic": ...}}`` (nested lists), so a report can be drawn, or merged, without
the adapter.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

import numpy as np

from gradoracle.guard import DEFAULT_TIMEOUT_S
from gradoracle.identities import get_identity
from gradoracle.results import CheckResult, Verdict
from gradoracle.runner import _cotangent


def adapter_spec_from_repro(repro: str | None) -> str | None:
    """The adapter spec in a repro snippet's ``reproduce(identity, spec, dtype, ...)`` call."""
    if not repro:
        return None
    try:
        tree = ast.parse(repro)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "reproduce"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            return node.args[1].value
    return None


def failure_gradients(
    identity: str,
    adapter: Any,
    dtype: str,
    counterexample: Mapping[str, Any],
    timeout: float | None = DEFAULT_TIMEOUT_S,
) -> dict[str, dict[str, Any]]:
    """``{input: {"autodiff": list, "analytic": list}}`` at the counterexample.

    ``adapter`` is an adapter object or a spec string (this process's instance of it);
    the vjp is a guarded call (its thread, ``timeout``).  Failures raise;
    :func:`attach_gradients` turns them into "no picture".
    """
    from gradoracle.guard import guard_for, process_session

    ident = get_identity(identity)
    if isinstance(adapter, str):
        entry = process_session().get(adapter, timeout)
        if entry.facts is None:
            raise RuntimeError(entry.error or f"adapter {adapter!r} failed to load")
        ad, guard = entry.adapter, entry.guard
    else:
        ad, guard = adapter, guard_for(adapter)
    params = dict(counterexample.get("params") or {})
    master = {k: np.asarray(v, dtype=np.float64) for k, v in counterexample["inputs"].items()}
    x_d = {k: v.astype(dtype) for k, v in master.items()}
    x_d64 = {k: v.astype(np.float64) for k, v in x_d.items()}
    rng = np.random.default_rng(int(counterexample.get("seed", 0)))
    ref_out = ident.reference_forward(x_d64, params)
    u_d = _cotangent(rng, ref_out.shape).astype(dtype)

    def fn(ops: Any, arrays: Mapping[str, Any]) -> Any:
        return ident.forward(ops, arrays, params)

    def autodiff() -> dict[str, np.ndarray]:
        vjp = ad.vjp(fn, x_d, ident.wrt, u_d, dtype)
        return {name: np.asarray(vjp.grads[name], dtype=np.float64) for name in ident.wrt}

    grads = guard.call(autodiff, timeout, f"vjp at the counterexample of {identity}/{dtype}")
    ref = ident.gradient(x_d64, params, u_d.astype(np.float64))
    out: dict[str, dict[str, Any]] = {}
    for name in ident.wrt:
        got = grads[name]
        want = np.asarray(ref[name], dtype=np.float64)
        if got.shape != want.shape:
            continue
        out[name] = {"autodiff": got.tolist(), "analytic": want.tolist()}
    return out


def attach_gradients(
    result: CheckResult, adapter: Any = None, timeout: float | None = DEFAULT_TIMEOUT_S
) -> bool:
    """Store :func:`failure_gradients` in a failed result's counterexample; True when stored.

    Only failures (not crashes) qualify.  ``adapter`` defaults to the spec in the repro
    snippet.  Any exception (the adapter may be broken in any way) means no pictures.
    """
    ce = result.counterexample
    if result.verdict not in (Verdict.FAIL, Verdict.XFAIL) or not ce or "inputs" not in ce:
        return False
    if "gradients" in ce:
        return True
    adapter = adapter if adapter is not None else adapter_spec_from_repro(result.repro)
    if adapter is None:
        return False
    try:
        ce["gradients"] = failure_gradients(result.identity, adapter, result.dtype, ce, timeout)
    except Exception:  # a broken adapter may fail anywhere; the report just has no picture
        ce["gradients"] = {}  # tried: the report writer does not call the adapter again
        return False
    return True
