"""Hostile-input probes of the user-facing checks (session 14): false failures and detection.

Run with the package under test importable (``python docs/hostile-probes/hostile_probes.py``);
needs torch.  Prints one line per probe of README "Check your own function's backward",
"Hostile inputs": the false failures of a correct framework and how often a wrong rule is
caught.  About two minutes on 2 cores.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gradoracle.user_checks import check_gradients, check_gradients_at

warnings.simplefilter("ignore")
torch.set_num_threads(1)

ELEMENTWISE = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "silu": torch.nn.functional.silu,
    "gelu": torch.nn.functional.gelu,
    "softplus": torch.nn.functional.softplus,
    "sin": torch.sin,
    "exp": torch.exp,
    "log": lambda x: torch.log(x.abs() + 1e-3),
    "x3": lambda x: x**3,
    "sumsq": lambda x: (x * x).sum(),
}


def _fails(call: Any) -> int:
    try:
        call()
        return 0
    except Exception:
        return 1


def _tailed(rng: np.random.Generator, big: float, name: str, dtype: str) -> np.ndarray:
    size = int(rng.integers(20, 200))
    x = rng.standard_normal(size)
    k = int(rng.integers(1, 4))
    x[rng.integers(0, size, k)] = big * rng.choice([-1, 1], k)
    if name == "exp":
        x = np.minimum(x, 60 if dtype == "float64" else 40)
    return x


def tails(mode: str) -> tuple[int, int]:
    """10 functions x 2 dtypes x 5 scales (1e1..1e6) x 8 inputs, 1-3 entries at the scale."""
    rng, runs, bad = np.random.default_rng(0), 0, 0
    for name, f in ELEMENTWISE.items():
        for dtype in ("float64", "float32"):
            for big in (1e1, 1e2, 1e3, 1e4, 1e6):
                for trial in range(8):
                    x = _tailed(rng, big, name, dtype).astype(dtype)
                    runs += 1
                    bad += _fails(
                        lambda f=f, x=x, dtype=dtype, trial=trial: check_gradients_at(
                            lambda x: f(x), {"x": x}, framework="torch", dtype=dtype, seed=trial, mode=mode
                        )
                    )
    return runs, bad


def tails_with_identity(mode: str) -> tuple[int, int]:
    """7 catalogue elementwise identities x 2 dtypes x 3 scales x 6 inputs, ``identity=``."""
    names = ("tanh", "sigmoid", "silu", "softplus", "sin", "gelu", "exp")
    rng, runs, bad = np.random.default_rng(0), 0, 0
    for name in names:
        f = ELEMENTWISE[name]
        for dtype in ("float64", "float32"):
            for big in (1e2, 1e4, 1e6):
                for trial in range(6):
                    x = _tailed(rng, big, name, dtype).astype(dtype)
                    runs += 1
                    bad += _fails(
                        lambda f=f, x=x, dtype=dtype, trial=trial, name=name: check_gradients_at(
                            lambda x: f(x),
                            {"x": x},
                            framework="torch",
                            dtype=dtype,
                            seed=trial,
                            mode=mode,
                            identity=f"elementwise-{name}",
                        )
                    )
    return runs, bad


def strategies_on_kinks(mode: str) -> tuple[int, list[str]]:
    """Your own strategy drawing 0.0 and ties, or tails of 1e5: 6 functions x 2 strategies."""
    kinks = arrays(np.float64, (6,), elements=st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.0]))
    tail = arrays(np.float64, (30,), elements=st.one_of(st.floats(-3, 3), st.sampled_from([1e5, -1e5])))
    functions = {
        "relu": torch.relu,
        "abs": torch.abs,
        "max": lambda x: x.max(),
        "clamp": lambda x: x.clamp(-1, 1),
        "tanh": torch.tanh,
        "sin": torch.sin,
    }
    failed = []
    for name, f in functions.items():
        for label, strategy in (("kinks", kinks), ("tails", tail)):
            if _fails(
                lambda f=f, strategy=strategy: check_gradients(
                    lambda x: f(x), inputs={"x": strategy}, framework="torch", modes=mode, examples=100
                )
            ):
                failed.append(f"{name}/{label}")
    return 2 * len(functions), failed


def near_kinks() -> dict[str, tuple[int, int]]:
    """relu and abs with 3 of 40 inputs at +-c from the kink, c = 1e-7 .. 1.5e-5 (a step away or
    less), 6 inputs each: runs and false failures per mode."""
    rng = np.random.default_rng(1)
    out = {"vjp": [0, 0], "jvp": [0, 0]}
    for c in (1e-7, 3e-7, 1e-6, 2e-6, 4e-6, 8e-6, 1.5e-5):
        for trial in range(6):
            x = rng.standard_normal(40)
            x[rng.integers(0, 40, 3)] = c * rng.choice([-1, 1], 3)
            for mode in ("vjp", "jvp"):
                for f in (torch.relu, torch.abs):
                    out[mode][0] += 1
                    out[mode][1] += _fails(
                        lambda f=f, x=x, mode=mode, trial=trial: check_gradients_at(
                            lambda x: f(x), {"x": x}, framework="torch", mode=mode, seed=trial
                        )
                    )
    return {mode: (runs, bad) for mode, (runs, bad) in out.items()}


def softmax_jvp() -> tuple[int, int]:
    """softmax in forward mode at four logit vectors, seeds 0-7."""
    runs = bad = 0
    for logits in ([-6.0, 2.5], [0.0, 50.0], [3.0, -1.0, 10.0], [0.0, 700.0]):
        for seed in range(8):
            runs += 1
            bad += _fails(
                lambda logits=logits, seed=seed: check_gradients_at(
                    lambda x: torch.softmax(x, 0),
                    {"x": np.array(logits)},
                    framework="torch",
                    mode="jvp",
                    seed=seed,
                )
            )
    return runs, bad


def _custom(f: Any, df: Any, backward_factor: float = 1.0, jvp_factor: float = 1.0) -> Any:
    class F(torch.autograd.Function):
        @staticmethod
        def forward(x: Any) -> Any:
            return f(x)

        @staticmethod
        def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
            ctx.save_for_backward(inputs[0])
            ctx.save_for_forward(inputs[0])

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            return backward_factor * g * df(ctx.saved_tensors[0])

        @staticmethod
        def jvp(ctx: Any, t: Any) -> Any:
            return jvp_factor * t * df(ctx.saved_tensors[0])

    return lambda x: F.apply(x)


def wrong_rules(mode: str) -> dict[str, str]:
    """A rule scaled by 1, 1.5, 1.01, 1.0001 on tanh and sin beside 1e6 (10 inputs each):
    how many checks fail, and how many of those name the rule's mode."""
    rng = np.random.default_rng(5)
    rules = {"tanh": (torch.tanh, lambda x: 1 - torch.tanh(x) ** 2), "sin": (torch.sin, torch.cos)}
    fault = "backward" if mode == "vjp" else "forward-mode"
    out = {}
    for factor in (1.0, 1.5, 1.01, 1.0001):
        counts = {name: [0, 0] for name in rules}
        for trial in range(10):
            size = int(rng.integers(20, 200))
            x = rng.standard_normal(size)
            k = int(rng.integers(1, 4))
            x[rng.integers(0, size, k)] = 1e6 * rng.choice([-1, 1], k)
            for name, (f, df) in rules.items():
                scaled = {"backward_factor": factor} if mode == "vjp" else {"jvp_factor": factor}
                g = _custom(f, df, **scaled)
                try:
                    check_gradients_at(g, {"x": x}, framework="torch", mode=mode, seed=trial)
                except Exception as exc:
                    counts[name][0] += 1
                    counts[name][1] += f"fault: {fault}" in str(exc)
        out[f"x{factor}"] = ", ".join(f"{n} {c[0]}/10 failed ({c[1]} as {fault})" for n, c in counts.items())
    return out


def _exp_vjp(factor: float) -> Any:
    return lambda g, x: {"x": factor * g * np.exp(x)}


def exp_magnitude_hole() -> dict[float, str]:
    """A hand-written exp backward, correct and 1.5x too large, one input at -30 or -800."""
    out = {}
    for low in (-30.0, -800.0):
        x = np.linspace(-2, 2, 30)
        x[0] = low
        good = _fails(lambda x=x: check_gradients_at(np.exp, {"x": x}, vjp=_exp_vjp(1.0)))
        bad = _fails(lambda x=x: check_gradients_at(np.exp, {"x": x}, vjp=_exp_vjp(1.5)))
        out[low] = f"correct {'fails' if good else 'passes'}, 1.5x {'fails' if bad else 'passes'}"
    return out


def main() -> int:
    import gradoracle

    print(f"gradoracle at {gradoracle.__file__}")
    for mode in ("vjp", "jvp"):
        print(f"{mode} tails (runs, false failures): {tails(mode)}")
    for mode in ("hvp", "jvp"):
        print(f"{mode} tails with identity= (runs, false failures): {tails_with_identity(mode)}")
    print(f"jvp on your strategy's kinks and tails (checks, failed): {strategies_on_kinks('jvp')}")
    print(f"softmax jvp (runs, false failures): {softmax_jvp()}")
    print(f"relu and abs a step or less from the kink (runs, false failures): {near_kinks()}")
    for mode in ("vjp", "jvp"):
        for factor, text in wrong_rules(mode).items():
            print(f"{mode} rule {factor}: {text}")
    print(f"exp with a large negative input: {exp_magnitude_hole()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
