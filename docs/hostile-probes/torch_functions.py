"""Probe: 35 PyTorch functions (activations, normalisations, reductions, linear algebra,
convolutions, pooling, interpolation, distances) checked with ``check_gradients(...,
framework="torch")`` in float64 and float32, reverse and forward mode, 30 examples each.
Prints one line per check: pass, or the message's first lines.

torch's gradients are correct, so every float64 check should pass.  What does not, and why
(session 19): ``cdist`` and ``pdist`` in forward mode (torch has no forward-mode rule: the
message says so and names ``modes='vjp'``); float32 ``layer_norm``, ``cross_entropy``,
``normalize`` and ``matrix_exp`` (judged by finite differences alone, float32 rounding of a
gradient that is a small difference of larger terms; the message says so and that the same
example passes in float64).  Run: ``python docs/hostile-probes/torch_functions.py [name ...]``.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
import torch.nn.functional as F
from framework_probe import run  # docs/hostile-probes/framework_probe.py, beside this script

N, MN, NN = {"x": ("n",)}, {"x": ("m", "n")}, {"A": ("n", "n")}


def _shifted(A: Any) -> Any:
    return A + 4 * torch.eye(A.shape[0], dtype=A.dtype)


FUNCTIONS: dict[str, tuple[Any, dict[str, Any]]] = {
    "softplus": (F.softplus, N),
    "logsumexp": (lambda x: torch.logsumexp(x, 0), N),
    "log_softmax": (lambda x: F.log_softmax(x, -1), MN),
    "layer_norm": (lambda x: F.layer_norm(x, x.shape[-1:]), MN),
    "gelu": (F.gelu, N),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), N),
    "silu": (lambda x: F.silu(x), N),
    "mish": (lambda x: F.mish(x), N),
    "elu": (lambda x: F.elu(x), N),
    "cumsum": (lambda x: torch.cumsum(x, 0), N),
    "cumprod": (lambda x: torch.cumprod(x, 0), N),
    "prod": (torch.prod, N),
    "norm": (torch.linalg.vector_norm, N),
    "det": (lambda A: torch.linalg.det(A), NN),
    "inv": (lambda A: torch.linalg.inv(_shifted(A)), NN),
    "solve": (lambda A, b: torch.linalg.solve(_shifted(A), b), {"A": ("n", "n"), "b": ("n",)}),
    "cdist": (lambda a, b: torch.cdist(a, b), {"a": ("m", "k"), "b": ("n", "k")}),
    "atan2": (lambda y, x: torch.atan2(y, x), {"y": ("n",), "x": ("n",)}),
    "hypot": (lambda y, x: torch.hypot(y, x), {"y": ("n",), "x": ("n",)}),
    "sort": (lambda x: torch.sort(x).values, N),
    "topk": (lambda x: torch.topk(x, 1).values, N),
    "cross_entropy": (lambda z, t: F.cross_entropy(z, t.softmax(-1)), {"z": ("m", "n"), "t": ("m", "n")}),
    "conv1d": (lambda x, w: F.conv1d(x, w, padding=1), {"x": (2, 3, 7), "w": (4, 3, 3)}),
    "conv2d_s2": (lambda x, w: F.conv2d(x, w, stride=2, padding=1), {"x": (1, 2, 6, 6), "w": (3, 2, 3, 3)}),
    "max_pool": (lambda x: F.max_pool2d(x, 2), {"x": (1, 1, 4, 4)}),
    "avg_pool": (lambda x: F.avg_pool2d(x, 3, stride=2, padding=1), {"x": (1, 2, 5, 5)}),
    "interpolate": (lambda x: F.interpolate(x, scale_factor=2, mode="bilinear"), {"x": (1, 1, 3, 3)}),
    "erf": (torch.erf, N),
    "lgamma": (lambda x: torch.lgamma(x.abs() + 0.5), N),
    "expm1": (torch.expm1, N),
    "sigmoid_tanh": (lambda x, y: torch.sigmoid(x) * torch.tanh(y), {"x": ("n",), "y": ("n",)}),
    "matrix_exp": (lambda A: torch.linalg.matrix_exp(A), NN),
    "einsum": (lambda a, b: torch.einsum("ij,jk->ik", a, b), {"a": ("m", "k"), "b": ("k", "n")}),
    "normalize": (lambda x: F.normalize(x, dim=-1), MN),
    "pdist": (lambda x: F.pdist(x), MN),
}


if __name__ == "__main__":
    run("torch", FUNCTIONS, sys.argv[1:])
