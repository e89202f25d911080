"""float32 checks without a closed form: correct gradients with cancellation, and small faults.

    python docs/hostile-probes/float32_rounding.py [on|off] [seeds]

``on`` (the default) is gradoracle as it is; ``off`` sets ``ROUNDING_PROBES = 0``, so a failing
float32 example is not judged again with its measured rounding (the checks before session 20).
Prints, per function, how many of ``seeds`` (default 5) checks of 30 examples fail:

- correct torch functions whose float32 gradient is a small difference of larger terms
  (``layer_norm``, ``normalize``, soft-target ``cross_entropy``) or not (``softmax``, ``tanh``,
  ``exp``, ``matrix_exp``): each failure is a false one;
- the same functions with a float32-only backward ``1 + delta`` times the true one
  (``delta`` = 1e-3, 1e-4, 3e-5, 1e-5), or computed in a lower precision inside the float32
  function (its gradient rounded to bfloat16; its inputs and cotangent rounded to bfloat16;
  its inputs rounded to float16): each pass is a miss.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch
import torch.nn.functional as F

import gradoracle.runner as runner
from gradoracle import check_gradients
from gradoracle.results import GradientMismatch

MN = {"x": ("m", "n")}


def _soft_ce(x: Any) -> Any:
    target = torch.softmax(torch.arange(x.shape[-1], dtype=x.dtype).expand_as(x), -1)
    return F.cross_entropy(x, target)


CORRECT: dict[str, tuple[Any, dict[str, Any]]] = {
    "layer_norm": (lambda x: F.layer_norm(x, x.shape[-1:]), MN),
    "normalize": (lambda x: F.normalize(x, dim=-1), MN),
    "cross_entropy soft": (_soft_ce, MN),
    "softmax": (lambda x: F.softmax(x, -1), MN),
    "tanh": (torch.tanh, MN),
    "exp": (torch.exp, MN),
    "matrix_exp": (torch.linalg.matrix_exp, {"x": ("n", "n")}),
}
FAULTY = ("layer_norm", "softmax", "tanh", "exp")
DELTAS = (1e-3, 1e-4, 3e-5, 1e-5)


LOWER = ("bf16 gradient", "bf16 inputs", "fp16 inputs")


def float32_off(base: Any, factor: float = 1.0, lower: str = "") -> Any:
    """``base`` whose float32 backward is ``factor`` times the true one, or computed in the
    ``lower`` precision of :data:`LOWER` (float64 is exact)."""

    class Off(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any) -> Any:
            ctx.save_for_backward(x)
            return base(x)

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            (x,) = ctx.saved_tensors
            float32 = x.dtype == torch.float32
            if float32 and lower == "bf16 inputs":
                x, g = x.bfloat16().float(), g.bfloat16().float()
            if float32 and lower == "fp16 inputs":
                x = x.half().float()
            with torch.enable_grad():
                xx = x.detach().requires_grad_()
                (gx,) = torch.autograd.grad(base(xx), xx, g)
            if float32 and lower == "bf16 gradient":
                gx = gx.bfloat16().float()
            return gx * factor if float32 else gx

    return Off.apply


def failures(fn: Any, spec: dict[str, Any], seeds: int) -> int:
    failed = 0
    for seed in range(seeds):
        try:
            check_gradients(fn, spec, framework="torch", dtypes=("float32",), examples=30, seed=seed)
        except GradientMismatch:
            failed += 1
    return failed


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "on"
    seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    if mode == "off":
        runner.ROUNDING_PROBES = 0
    torch.set_num_threads(1)
    start = time.perf_counter()
    print(f"measurement {mode}; failing checks of {seeds} seeds, 30 float32 examples each")
    for name, (fn, spec) in CORRECT.items():
        print(f"  correct {name:20s} {failures(fn, spec, seeds)}/{seeds} fail (false failures)")
    for name in FAULTY:
        fn, spec = CORRECT[name]
        cells = [f"{d:g}: {failures(float32_off(fn, 1 + d), spec, seeds)}/{seeds}" for d in DELTAS]
        print(f"  float32 off {name:16s} caught " + ", ".join(cells))
        cells = [f"{low}: {failures(float32_off(fn, lower=low), spec, seeds)}/{seeds}" for low in LOWER]
        print(f"  float32 low {name:16s} caught " + ", ".join(cells))
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
