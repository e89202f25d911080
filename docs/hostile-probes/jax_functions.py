"""Probe: 25 JAX functions (softplus, logsumexp, linear algebra, expm, scan, fori_loop, conv,
reduce_window...) checked with ``check_gradients(..., framework="jax")`` in float64 and float32,
reverse and forward mode, 30 examples each: 100 checks in one process.  Prints one line per
check and, at the end, the process's memory maps and peak resident memory (Linux).

JAX's gradients are correct, so each check should pass; the float32 layer norm fails, as the
README explains (judged by finite differences alone, float32 rounding of a gradient that is a
small difference of larger terms).  Run: ``python docs/hostile-probes/jax_functions.py [name ...]``
(2-3 minutes on 2 cores).  Before session 19 this process aborted in LLVM at its 59th check.
"""

from __future__ import annotations

import sys
from typing import Any

import jax
import jax.nn as jnn
import jax.numpy as jnp
import jax.scipy.special as jss
from framework_probe import run  # docs/hostile-probes/framework_probe.py, beside this script

N, MN, NN = {"x": ("n",)}, {"x": ("m", "n")}, {"A": ("n", "n")}
EYE = jnp.eye


def _conv(x: Any, w: Any) -> Any:
    return jax.lax.conv_general_dilated(x, w, (2, 2), "SAME")


def _pool(x: Any) -> Any:
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2), (1, 2, 2), "VALID")


def _layer_norm(x: Any) -> Any:
    return (x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-5)


FUNCTIONS: dict[str, tuple[Any, dict[str, Any]]] = {
    "softplus": (jnn.softplus, N),
    "logsumexp": (lambda x: jss.logsumexp(x), N),
    "log_softmax": (lambda x: jnn.log_softmax(x, -1), MN),
    "gelu": (jnn.gelu, N),
    "silu": (jnn.silu, N),
    "cumprod": (lambda x: jnp.cumprod(x), N),
    "prod": (lambda x: jnp.prod(x), N),
    "norm": (jnp.linalg.norm, N),
    "det": (lambda A: jnp.linalg.det(A), NN),
    "slogdet": (lambda A: jnp.linalg.slogdet(A + 4 * EYE(A.shape[0]))[1], NN),
    "solve": (lambda A, b: jnp.linalg.solve(A + 4 * EYE(A.shape[0]), b), {"A": ("n", "n"), "b": ("n",)}),
    "eigh": (lambda A: jnp.linalg.eigvalsh(A + A.T), NN),
    "svdvals": (lambda A: jnp.linalg.svd(A, compute_uv=False), {"A": ("m", "n")}),
    "cholesky": (lambda A: jnp.linalg.cholesky(A @ A.T + EYE(A.shape[0])), NN),
    "expm": (jax.scipy.linalg.expm, NN),
    "atan2": (jnp.arctan2, {"y": ("n",), "x": ("n",)}),
    "sort": (lambda x: jnp.sort(x), N),
    "erf": (jss.erf, N),
    "gammaln": (lambda x: jss.gammaln(jnp.abs(x) + 0.5), N),
    "conv": (_conv, {"x": (1, 2, 6, 6), "w": (3, 2, 3, 3)}),
    "reduce_max": (_pool, {"x": (1, 4, 4)}),
    "scan": (lambda x: jax.lax.scan(lambda c, a: (jnp.sin(c) * a, c), 1.0, x)[0], N),
    "fori_loop": (lambda x: jax.lax.fori_loop(0, 3, lambda i, c: jnp.tanh(c) * 1.5, x), N),
    "where": (lambda x: jnp.where(x > 0, jnp.sqrt(jnp.abs(x) + 1), x**2), N),
    "layer_norm": (_layer_norm, MN),
}


if __name__ == "__main__":
    run("jax", FUNCTIONS, sys.argv[1:])
