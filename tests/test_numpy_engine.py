"""Tests of the in-house NumPy backprop engine on its own (no oracle identities).

- every op's forward against the ops.py semantics, recomputed here independently;
- every backward rule against central finite differences of the engine's own forward
  (float64, small shapes, inputs kept away from kinks and tied maxima);
- hand-computed examples from the notes (Wx, xW, conv2d 3x3 * 2x2, pools, floor mode);
- overlapping pools, max-pool ties, accumulation, ``z = x``, float32 end to end;
- negative controls: mutant ``Rules`` that the same finite-difference check rejects;
- the engine does not import the oracle's identities.
"""

from __future__ import annotations

import ast
import math
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradoracle.adapters.numpy_engine as engine_module
from gradoracle.adapters import Adapter, load_adapter
from gradoracle.adapters.numpy_engine import GradientShapeError, NumpyEngineAdapter, Rules, Tensor
from gradoracle.ops import ALL_OPS, LEAKY_RELU_SLOPE

ENGINE = NumpyEngineAdapter()
FAST = settings(max_examples=30, deadline=None)
SEEDS = st.integers(min_value=0, max_value=2**32 - 1)

UNARY_OPS: tuple[str, ...] = (
    "relu",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "exp",
    "log",
    "softplus",
    "sin",
    "square",
    "abs",
    "elu",
    "silu",
    "gelu",
    "maximum_zero",
    "clamp_min_zero",
)
KINKED_AT_ZERO = {"relu", "leaky_relu", "abs", "maximum_zero", "clamp_min_zero"}


# --------------------------------------------------------------------------------------
# Independent scalar references (ops.py semantics, one Python float at a time)
# --------------------------------------------------------------------------------------

SCALAR_REFERENCE: dict[str, Callable[[float], float]] = {
    "relu": lambda v: v if v > 0 else 0.0,
    "leaky_relu": lambda v: v if v > 0 else 0.01 * v,
    "sigmoid": lambda v: 1.0 / (1.0 + math.exp(-v)),
    "tanh": math.tanh,
    "exp": math.exp,
    "log": math.log,
    "softplus": lambda v: math.log1p(math.exp(v)),
    "sin": math.sin,
    "square": lambda v: v * v,
    "abs": lambda v: -v if v < 0 else v,
    "elu": lambda v: v if v > 0 else math.expm1(v),
    "silu": lambda v: v / (1.0 + math.exp(-v)),
    "gelu": lambda v: 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))),
    "maximum_zero": lambda v: v if v > 0 else 0.0,
    "clamp_min_zero": lambda v: v if v > 0 else 0.0,
}


def scalar_map(name: str, x: np.ndarray) -> np.ndarray:
    f = SCALAR_REFERENCE[name]
    return np.array([f(float(v)) for v in x.ravel()]).reshape(x.shape)


def ref_conv2d(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    kh, kw = k.shape
    out = np.zeros((x.shape[0] - kh + 1, x.shape[1] - kw + 1))
    for u in range(out.shape[0]):
        for v in range(out.shape[1]):
            out[u, v] = sum(x[u + a, v + b] * k[a, b] for a in range(kh) for b in range(kw))
    return out


def ref_pool(x: np.ndarray, k: int, stride: int | None, reduce: Callable[[list[float]], float]) -> np.ndarray:
    s = k if stride is None else stride
    ho, wo = (x.shape[0] - k) // s + 1, (x.shape[1] - k) // s + 1
    out = np.zeros((ho, wo))
    for u in range(ho):
        for v in range(wo):
            out[u, v] = reduce([float(x[u * s + a, v * s + b]) for a in range(k) for b in range(k)])
    return out


# --------------------------------------------------------------------------------------
# Cases: a forward, its inputs, which inputs to differentiate
# --------------------------------------------------------------------------------------


@dataclass
class Case:
    fn: Callable[[Any, Any], Any]
    inputs: dict[str, np.ndarray]
    wrt: tuple[str, ...]


def unary_input(op: str, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Inputs in the op's domain, at least 0.1 away from a kink at 0."""
    if op == "log":
        return rng.uniform(0.3, 3.0, shape)
    if op in KINKED_AT_ZERO:
        return rng.uniform(0.1, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
    return rng.normal(0.0, 1.5, shape)


def distinct_map(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A feature map whose values are pairwise >= 0.1 apart (no tied maxima)."""
    return rng.permutation(h * w).reshape(h, w) * 0.1 + rng.uniform(-1.0, 1.0)


def make_case(op: str, rng: np.random.Generator) -> Case:
    """A random, kink-free instance of ``op`` with small shapes."""
    dim = lambda lo=1, hi=4: int(rng.integers(lo, hi + 1))  # noqa: E731
    if op in UNARY_OPS:
        shape = (dim(),) if rng.random() < 0.5 else (dim(), dim())
        return Case(lambda o, i: getattr(o, op)(i["x"]), {"x": unary_input(op, rng, shape)}, ("x",))
    if op == "matmul":
        n, m, p = dim(), dim(), dim()
        kind = rng.integers(3)
        shapes = [((n, m), (m,)), ((n,), (n, m)), ((n, m), (m, p))][kind]
        a, b = rng.normal(size=shapes[0]), rng.normal(size=shapes[1])
        return Case(lambda o, i: o.matmul(i["a"], i["b"]), {"a": a, "b": b}, ("a", "b"))
    if op == "add":
        shape = (dim(), dim())
        a, b = rng.normal(size=shape), rng.normal(size=shape)
        return Case(lambda o, i: o.add(i["a"], i["b"]), {"a": a, "b": b}, ("a", "b"))
    if op == "softmax_cross_entropy":
        n = dim(2, 5)
        z, y = rng.normal(0.0, 2.0, n), rng.dirichlet(np.ones(n))
        return Case(lambda o, i: o.softmax_cross_entropy(i["z"], i["y"]), {"z": z, "y": y}, ("z", "y"))
    if op == "conv2d":
        kh, kw = dim(1, 3), dim(1, 3)
        x, k = rng.normal(size=(kh + dim(0, 3), kw + dim(0, 3))), rng.normal(size=(kh, kw))
        return Case(lambda o, i: o.conv2d(i["x"], i["k"]), {"x": x, "k": k}, ("x", "k"))
    if op in ("max_pool2d", "avg_pool2d"):
        size = dim(1, 3)
        stride = None if rng.random() < 0.4 else dim(1, 3)
        h, w = size + dim(0, 4), size + dim(0, 4)
        x = distinct_map(rng, h, w) if op == "max_pool2d" else rng.normal(size=(h, w))
        return Case(lambda o, i: getattr(o, op)(i["x"], size, stride), {"x": x}, ("x",))
    if op == "sum":
        return Case(lambda o, i: o.sum(i["x"]), {"x": rng.normal(size=(dim(), dim()))}, ("x",))
    # kinks (#13): two-argument maximum and clamp, kept >= 0.1 away from ties and bounds
    if op == "maximum":
        shape = (dim(), dim())
        a = rng.normal(size=shape)
        b = a + rng.uniform(0.1, 1.0, shape) * rng.choice([-1.0, 1.0], shape)
        return Case(lambda o, i: o.maximum(i["a"], i["b"]), {"a": a, "b": b}, ("a", "b"))
    if op == "clamp":
        x = rng.uniform(0.1, 0.9, (dim(), dim())) * rng.choice([-1.0, 1.0]) + rng.choice([-2.0, 0.0, 2.0])
        return Case(lambda o, i: o.clamp(i["x"], -1.0, 1.0), {"x": x}, ("x",))
    return make_layer_case(op, rng)


def make_layer_case(op: str, rng: np.random.Generator) -> Case:
    """A random instance of a layer op: a few batch rows, channels, and drawn hyper-parameters."""
    dim = lambda lo=1, hi=3: int(rng.integers(lo, hi + 1))  # noqa: E731
    if op in ("linear", "dense"):
        n_in, n_out, batch = dim(), dim(), (dim(),) if rng.random() < 0.5 else (dim(), dim())
        w = rng.normal(size=(n_out, n_in) if op == "linear" else (n_in, n_out))
        inputs = {"x": rng.normal(size=(*batch, n_in)), "w": w, "b": rng.normal(size=n_out)}
        return Case(lambda o, i: getattr(o, op)(i["x"], i["w"], i["b"]), inputs, ("x", "w", "b"))
    if op == "cross_entropy":
        n, c = dim(), dim(2, 4)
        reduction, eps = ("mean", "sum")[dim(0, 1)], (0.0, 0.2)[dim(0, 1)]
        if rng.random() < 0.5:
            t, wrt = rng.integers(0, c, size=n).astype(float), ("z",)
        else:
            t, wrt = rng.dirichlet(np.ones(c), size=n), ("z", "t")
        return Case(
            lambda o, i: o.cross_entropy(i["z"], i["t"], reduction, eps),
            {"z": rng.normal(size=(n, c)), "t": t},
            wrt,
        )
    rank = dim(1, 3)
    axes = lambda lo, hi: tuple(dim(lo, hi) for _ in range(rank))  # noqa: E731
    if op == "conv_nd":
        groups, kernel, stride, dilation = dim(1, 2), axes(1, 2), axes(1, 2), axes(1, 2)
        padding = "same" if rng.random() < 0.25 else axes(0, 1)
        if padding == "same":
            stride = (1,) * rank
        spatial = tuple(d * (k - 1) + 1 + dim(0, 2) for k, d in zip(kernel, dilation, strict=True))
        inputs = {
            "x": rng.normal(size=(dim(1, 2), groups * dim(1, 2), *spatial)),
            "b": rng.normal(size=groups * 2),
        }
        inputs["k"] = rng.normal(size=(groups * 2, inputs["x"].shape[1] // groups, *kernel))
        return Case(
            lambda o, i: o.conv_nd(i["x"], i["k"], i["b"], stride, padding, dilation, groups),
            inputs,
            ("x", "k", "b"),
        )
    window, stride = axes(1, 3), axes(1, 3)
    padding = tuple(min(dim(0, 1), w // 2) for w in window)
    dilation, ceil = axes(1, 2) if op == "max_pool_nd" else (1,) * rank, bool(rng.random() < 0.5)
    spatial = tuple(d * (w - 1) + 1 + dim(0, 3) for w, d in zip(window, dilation, strict=True))
    shape = (dim(1, 2), dim(1, 2), *spatial)
    if op == "max_pool_nd":
        x = rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1
        return Case(
            lambda o, i: o.max_pool_nd(i["x"], window, stride, padding, dilation, ceil), {"x": x}, ("x",)
        )
    if op == "avg_pool_nd":
        cip = bool(rng.random() < 0.5)
        return Case(
            lambda o, i: o.avg_pool_nd(i["x"], window, stride, padding, ceil, cip),
            {"x": rng.normal(size=shape)},
            ("x",),
        )
    if op == "global_avg_pool":
        return Case(lambda o, i: o.global_avg_pool(i["x"]), {"x": rng.normal(size=shape)}, ("x",))
    raise AssertionError(f"no case for {op}")


# --------------------------------------------------------------------------------------
# Central finite differences of the engine's own forward
# --------------------------------------------------------------------------------------


def fd_vjp(adapter: Any, case: Case, name: str, u: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """``u^T J`` for input ``name`` by central differences, one element at a time."""
    x = case.inputs[name]
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += eps
        minus[idx] -= eps
        f_plus = adapter.forward(case.fn, {**case.inputs, name: plus}, "float64")
        f_minus = adapter.forward(case.fn, {**case.inputs, name: minus}, "float64")
        grad[idx] = np.sum(u * (f_plus - f_minus)) / (2 * eps)
    return grad


def fd_agrees(
    adapter: Any, case: Case, seed: int = 0, rtol: float = 1e-5, atol: float = 1e-6
) -> tuple[bool, float]:
    """Whether the adapter's ``vjp`` matches finite differences of its forward (and the worst gap)."""
    rng = np.random.default_rng(seed)
    out = adapter.forward(case.fn, case.inputs, "float64")
    u = np.asarray(rng.standard_normal(out.shape))
    result = adapter.vjp(case.fn, case.inputs, case.wrt, u, "float64")
    np.testing.assert_allclose(result.output, out, rtol=1e-14, atol=1e-14)
    ok, worst = True, 0.0
    for name in case.wrt:
        fd = fd_vjp(adapter, case, name, u)
        ad = result.grads[name]
        assert ad.shape == fd.shape
        gap = np.abs(ad - fd)
        worst = max(worst, float(np.max(gap, initial=0.0)))
        ok = ok and bool(np.all(gap <= atol + rtol * np.abs(fd)))
    return ok, worst


def vjp64(fn: Callable[[Any, Any], Any], inputs: dict[str, np.ndarray], wrt: tuple[str, ...], u: Any) -> Any:
    return ENGINE.vjp(fn, inputs, wrt, np.asarray(u, dtype=float), "float64")


# --------------------------------------------------------------------------------------
# The adapter surface
# --------------------------------------------------------------------------------------


def test_adapter_surface() -> None:
    assert isinstance(ENGINE, Adapter)
    assert ENGINE.name == "numpy"
    assert ENGINE.dtypes == ("float64", "float32")
    assert ENGINE.has_jvp is False
    assert ENGINE.available() == (True, "")
    assert ENGINE.supported_ops() == frozenset(ALL_OPS)
    assert all(callable(getattr(ENGINE.ops, op)) for op in ALL_OPS)
    loaded = load_adapter("numpy")
    assert isinstance(loaded, NumpyEngineAdapter)
    assert loaded.name == "numpy"
    assert load_adapter("numpy?name=numpy-x").name == "numpy-x"
    mutant = NumpyEngineAdapter(rules=Rules(), name="numpy-mutant-x")
    assert mutant.name == "numpy-mutant-x"
    assert ENGINE.name == "numpy"


def test_bad_arguments_raise() -> None:
    case = make_case("sum", np.random.default_rng(0))
    with pytest.raises(ValueError, match="float16"):
        ENGINE.forward(case.fn, case.inputs, "float16")
    with pytest.raises(KeyError, match="nope"):
        ENGINE.vjp(case.fn, case.inputs, ["nope"], np.array(1.0), "float64")
    with pytest.raises(ValueError, match="cotangent shape"):
        ENGINE.vjp(case.fn, case.inputs, ["x"], np.ones(3), "float64")


def test_forward_records_no_tape() -> None:
    seen: list[Tensor] = []

    def fn(o: Any, i: Any) -> Any:
        h = o.relu(o.matmul(i["W"], i["x"]))
        seen.append(h)
        return o.sum(h)

    inputs = {"W": np.ones((2, 3)), "x": np.ones(3)}
    assert float(ENGINE.forward(fn, inputs, "float64")) == pytest.approx(6.0)
    assert seen[0].parents == ()
    assert seen[0].backward is None
    assert not seen[0].requires_grad
    vjp64(fn, inputs, ("x",), 1.0)
    assert seen[1].requires_grad
    assert len(seen[1].parents) == 1


# --------------------------------------------------------------------------------------
# Forward semantics (ops.py), recomputed independently
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", UNARY_OPS)
@FAST
@given(data=st.data())
def test_elementwise_forward_matches_semantics(op: str, data: st.DataObject) -> None:
    low = 1e-3 if op == "log" else -30.0
    x = data.draw(
        hnp.arrays(np.float64, hnp.array_shapes(max_dims=2, max_side=4), elements=st.floats(low, 30.0))
    )
    got = ENGINE.forward(lambda o, i: getattr(o, op)(i["x"]), {"x": x}, "float64")
    assert got.dtype == np.float64
    assert got.shape == x.shape
    np.testing.assert_allclose(got, scalar_map(op, x), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("op", UNARY_OPS)
def test_elementwise_forward_float32(op: str) -> None:
    x = unary_input(op, np.random.default_rng(1), (3, 4))
    got = ENGINE.forward(lambda o, i: getattr(o, op)(i["x"]), {"x": x}, "float32")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, scalar_map(op, x.astype(np.float32)), rtol=2e-6, atol=1e-6)


def test_extreme_inputs_stay_finite() -> None:
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    for op in ("sigmoid", "softplus", "silu", "elu"):
        for dtype in ("float64", "float32"):
            with np.errstate(over="raise", invalid="raise", divide="raise"):
                out = ENGINE.forward(lambda o, i, op=op: getattr(o, op)(i["x"]), {"x": x}, dtype)
            assert np.all(np.isfinite(out)), (op, dtype, out)
    z = np.array([1000.0, -1000.0, 0.0])
    y = np.array([0.2, 0.3, 0.5])
    loss = ENGINE.forward(lambda o, i: o.softmax_cross_entropy(i["z"], i["y"]), {"z": z, "y": y}, "float64")
    assert loss == pytest.approx(0.3 * 2000.0 + 0.5 * 1000.0)


@FAST
@given(seed=SEEDS)
def test_matmul_forward_all_three_shapes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, m, p = rng.integers(1, 5, size=3)
    W, x, r, B = rng.normal(size=(n, m)), rng.normal(size=m), rng.normal(size=n), rng.normal(size=(m, p))
    mm = lambda o, i: o.matmul(i["a"], i["b"])  # noqa: E731
    wx = ENGINE.forward(mm, {"a": W, "b": x}, "float64")
    xw = ENGINE.forward(mm, {"a": r, "b": W}, "float64")
    ab = ENGINE.forward(mm, {"a": W, "b": B}, "float64")
    assert wx.shape == (n,)
    assert xw.shape == (m,)
    assert ab.shape == (n, p)
    np.testing.assert_allclose(wx, [sum(W[i, k] * x[k] for k in range(m)) for i in range(n)], rtol=1e-12)
    np.testing.assert_allclose(xw, [sum(r[k] * W[k, i] for k in range(n)) for i in range(m)], rtol=1e-12)
    expected = [[sum(W[i, k] * B[k, j] for k in range(m)) for j in range(p)] for i in range(n)]
    np.testing.assert_allclose(ab, expected, rtol=1e-12, atol=1e-14)


@FAST
@given(seed=SEEDS)
def test_add_sum_softmax_ce_forward(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    np.testing.assert_array_equal(
        ENGINE.forward(lambda o, i: o.add(i["a"], i["b"]), {"a": a, "b": b}, "float64"), a + b
    )
    total = ENGINE.forward(lambda o, i: o.sum(i["a"]), {"a": a}, "float64")
    assert total.shape == ()
    assert float(total) == pytest.approx(math.fsum(a.ravel()), rel=1e-12)
    z, y = rng.normal(0, 3, 4), rng.dirichlet(np.ones(4))
    loss = ENGINE.forward(lambda o, i: o.softmax_cross_entropy(i["z"], i["y"]), {"z": z, "y": y}, "float64")
    log_norm = math.log(sum(math.exp(v) for v in z))
    assert loss.shape == ()
    assert float(loss) == pytest.approx(
        -sum(yk * (zk - log_norm) for yk, zk in zip(y, z, strict=True)), rel=1e-10
    )


@FAST
@given(seed=SEEDS)
def test_conv2d_forward_is_valid_cross_correlation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    kh, kw = rng.integers(1, 4, size=2)
    x, k = rng.normal(size=(kh + rng.integers(0, 4), kw + rng.integers(0, 4))), rng.normal(size=(kh, kw))
    got = ENGINE.forward(lambda o, i: o.conv2d(i["x"], i["k"]), {"x": x, "k": k}, "float64")
    np.testing.assert_allclose(got, ref_conv2d(x, k), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
@FAST
@given(seed=SEEDS)
def test_pool_forward_floor_mode_and_stride(op: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 4))
    stride = None if rng.random() < 0.3 else int(rng.integers(1, 4))
    x = rng.normal(size=(size + rng.integers(0, 5), size + rng.integers(0, 5)))
    got = ENGINE.forward(lambda o, i: getattr(o, op)(i["x"], size, stride), {"x": x}, "float64")
    reduce = max if op == "max_pool2d" else (lambda vals: math.fsum(vals) / len(vals))
    np.testing.assert_allclose(got, ref_pool(x, size, stride, reduce), rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------------------
# Every backward rule against finite differences of the engine's own forward
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ALL_OPS)
@FAST
@given(seed=SEEDS)
def test_backward_rule_matches_finite_differences(op: str, seed: int) -> None:
    case = make_case(op, np.random.default_rng(seed))
    ok, worst = fd_agrees(ENGINE, case, seed=seed)
    assert ok, f"{op}: autodiff differs from central differences by {worst:.3g}"


@pytest.mark.parametrize("seed", range(4))
def test_chained_cnn_matches_finite_differences(seed: int) -> None:
    rng = np.random.default_rng(seed)

    def fn(o: Any, i: Any) -> Any:
        z = o.conv2d(i["x"], i["k"])
        pooled = o.max_pool2d(o.tanh(z), 2, 1)
        return o.sum(o.square(o.avg_pool2d(pooled, 2)))

    case = Case(fn, {"x": rng.normal(size=(7, 6)), "k": rng.normal(size=(2, 3))}, ("x", "k"))
    ok, worst = fd_agrees(ENGINE, case, seed=seed)
    assert ok, worst


def test_mlp_softmax_ce_matches_notes_backward_pass() -> None:
    """The notes' MLP example, steps A-E, written out here by hand."""
    rng = np.random.default_rng(3)
    n, h, m = 4, 5, 3
    inputs = {
        "x": rng.normal(size=n),
        "W1": rng.normal(size=(h, n)),
        "b1": rng.normal(size=h),
        "W2": rng.normal(size=(m, h)),
        "b2": rng.normal(size=m),
        "y": np.eye(m)[1],
    }

    def fn(o: Any, i: Any) -> Any:
        hidden = o.relu(o.add(o.matmul(i["W1"], i["x"]), i["b1"]))
        return o.softmax_cross_entropy(o.add(o.matmul(i["W2"], hidden), i["b2"]), i["y"])

    wrt = ("x", "W1", "b1", "W2", "b2")
    res = vjp64(fn, inputs, wrt, 1.0)
    z1 = inputs["W1"] @ inputs["x"] + inputs["b1"]
    hid = np.maximum(z1, 0)
    z2 = inputs["W2"] @ hid + inputs["b2"]
    yhat = np.exp(z2) / np.exp(z2).sum()
    delta2 = yhat - inputs["y"]
    delta1 = (inputs["W2"].T @ delta2) * (z1 > 0)
    np.testing.assert_allclose(res.grads["W2"], np.outer(delta2, hid), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(res.grads["b2"], delta2, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(res.grads["W1"], np.outer(delta1, inputs["x"]), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(res.grads["b1"], delta1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(res.grads["x"], inputs["W1"].T @ delta1, rtol=1e-12, atol=1e-14)
    assert set(res.grads) == set(wrt)


# --------------------------------------------------------------------------------------
# Hand-computed examples
# --------------------------------------------------------------------------------------


def test_hand_matmul_wx_and_xw() -> None:
    W = np.array([[1.0, 2.0], [3.0, 4.0]])
    res = vjp64(
        lambda o, i: o.matmul(i["W"], i["x"]), {"W": W, "x": np.array([5.0, 6.0])}, ("W", "x"), [1.0, -1.0]
    )
    np.testing.assert_array_equal(res.output, [17.0, 39.0])
    np.testing.assert_array_equal(res.grads["W"], [[5.0, 6.0], [-5.0, -6.0]])  # delta x^T
    np.testing.assert_array_equal(res.grads["x"], [-2.0, -2.0])  # W^T delta
    res = vjp64(
        lambda o, i: o.matmul(i["x"], i["W"]), {"W": W, "x": np.array([1.0, 2.0])}, ("W", "x"), [1.0, -1.0]
    )
    np.testing.assert_array_equal(res.output, [7.0, 10.0])
    np.testing.assert_array_equal(res.grads["W"], [[1.0, -1.0], [2.0, -2.0]])  # x^T delta
    np.testing.assert_array_equal(res.grads["x"], [-1.0, -1.0])  # delta W^T


def test_hand_matmul_matrix_matrix() -> None:
    A = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0]])
    B = np.array([[1.0], [2.0], [3.0]])
    res = vjp64(lambda o, i: o.matmul(i["A"], i["B"]), {"A": A, "B": B}, ("A", "B"), [[2.0], [-1.0]])
    np.testing.assert_array_equal(res.output, [[5.0], [-1.0]])
    np.testing.assert_array_equal(res.grads["A"], [[2.0, 4.0, 6.0], [-1.0, -2.0, -3.0]])  # delta B^T
    np.testing.assert_array_equal(res.grads["B"], [[2.0], [3.0], [1.0]])  # A^T delta


def test_hand_conv2d_3x3_with_2x2_kernel() -> None:
    X = np.arange(1.0, 10.0).reshape(3, 3)
    K = np.array([[1.0, 2.0], [3.0, 4.0]])
    delta = np.array([[1.0, 0.0], [0.0, 2.0]])
    res = vjp64(lambda o, i: o.conv2d(i["X"], i["K"]), {"X": X, "K": K}, ("X", "K"), delta)
    np.testing.assert_array_equal(res.output, [[37.0, 47.0], [67.0, 77.0]])
    # dJ/dK[a,b] = X[a,b] * 1 + X[a+1,b+1] * 2  (correlation of X with delta)
    np.testing.assert_array_equal(res.grads["K"], [[11.0, 14.0], [20.0, 23.0]])
    # dJ/dX = delta * rot180(K): K stamped at (0,0) with weight 1 and at (1,1) with weight 2
    np.testing.assert_array_equal(res.grads["X"], [[1.0, 2.0, 0.0], [3.0, 6.0, 4.0], [0.0, 6.0, 8.0]])


def test_hand_max_pool_4x4_router() -> None:
    X = np.array([[1.0, 5.0, 2.0, 0.0], [3.0, 4.0, 8.0, 1.0], [9.0, 0.0, 1.0, 1.5], [2.0, 7.0, 3.0, 6.0]])
    delta = np.array([[10.0, 20.0], [30.0, 40.0]])
    res = vjp64(lambda o, i: o.max_pool2d(i["X"], 2), {"X": X}, ("X",), delta)
    np.testing.assert_array_equal(res.output, [[5.0, 8.0], [9.0, 6.0]])
    expected = np.zeros((4, 4))
    expected[0, 1], expected[1, 2], expected[2, 0], expected[3, 3] = 10.0, 20.0, 30.0, 40.0
    np.testing.assert_array_equal(res.grads["X"], expected)


def test_max_pool_tie_goes_to_first_row_major_index() -> None:
    fn = lambda o, i: o.max_pool2d(i["X"], 2)  # noqa: E731
    res = vjp64(fn, {"X": np.ones((2, 2))}, ("X",), [[3.0]])
    np.testing.assert_array_equal(res.grads["X"], [[3.0, 0.0], [0.0, 0.0]])
    res = vjp64(fn, {"X": np.array([[0.0, 2.0], [2.0, 2.0]])}, ("X",), [[3.0]])
    np.testing.assert_array_equal(res.grads["X"], [[0.0, 3.0], [0.0, 0.0]])
    res = vjp64(fn, {"X": np.array([[0.0, 1.0], [2.0, 2.0]])}, ("X",), [[3.0]])
    np.testing.assert_array_equal(res.grads["X"], [[0.0, 0.0], [3.0, 0.0]])


def test_hand_avg_pool_spreads_delta_over_k_squared() -> None:
    X = np.arange(16.0).reshape(4, 4)
    res = vjp64(lambda o, i: o.avg_pool2d(i["X"], 2), {"X": X}, ("X",), [[4.0, 8.0], [12.0, 16.0]])
    np.testing.assert_array_equal(res.output, [[2.5, 4.5], [10.5, 12.5]])
    expected = [[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0], [3.0, 3.0, 4.0, 4.0], [3.0, 3.0, 4.0, 4.0]]
    np.testing.assert_array_equal(res.grads["X"], expected)
    res = vjp64(lambda o, i: o.avg_pool2d(i["X"], 3), {"X": X[:3, :3]}, ("X",), [[9.0]])
    np.testing.assert_allclose(res.grads["X"], np.ones((3, 3)), rtol=1e-15)


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
def test_floor_mode_leftover_row_and_column_get_zero(op: str) -> None:
    X = distinct_map(np.random.default_rng(5), 5, 5)
    delta = np.array([[1.0, 2.0], [3.0, 4.0]])
    res = vjp64(lambda o, i: getattr(o, op)(i["X"], 2), {"X": X}, ("X",), delta)
    assert res.output.shape == (2, 2)
    grad = res.grads["X"]
    np.testing.assert_array_equal(grad[4, :], 0.0)
    np.testing.assert_array_equal(grad[:, 4], 0.0)
    assert grad[:4, :4].sum() == pytest.approx(delta.sum())
    for u in range(2):
        for v in range(2):
            window = grad[2 * u : 2 * u + 2, 2 * v : 2 * v + 2]
            assert window.sum() == pytest.approx(delta[u, v])
            if op == "max_pool2d":
                assert np.count_nonzero(window) == 1
                assert (
                    window[np.unravel_index(np.argmax(X[2 * u : 2 * u + 2, 2 * v : 2 * v + 2]), (2, 2))]
                    == delta[u, v]
                )
            else:
                np.testing.assert_allclose(window, delta[u, v] / 4)


def test_overlapping_windows_accumulate() -> None:
    X = np.array([[1.0, 2.0, 3.0], [4.0, 9.0, 5.0], [6.0, 7.0, 8.0]])
    delta = np.array([[1.0, 2.0], [3.0, 4.0]])
    res = vjp64(lambda o, i: o.max_pool2d(i["X"], 2, 1), {"X": X}, ("X",), delta)
    np.testing.assert_array_equal(res.output, [[9.0, 9.0], [9.0, 9.0]])
    expected = np.zeros((3, 3))
    expected[1, 1] = 10.0  # every window routes to the centre
    np.testing.assert_array_equal(res.grads["X"], expected)
    res = vjp64(lambda o, i: o.avg_pool2d(i["X"], 2, 1), {"X": X}, ("X",), delta)
    np.testing.assert_allclose(
        res.grads["X"], [[0.25, 0.75, 0.5], [1.0, 2.5, 1.5], [0.75, 1.75, 1.0]], rtol=1e-15
    )


def test_softmax_ce_backward_is_yhat_minus_y() -> None:
    z, y = np.array([1.0, 2.0, 0.5]), np.array([0.1, 0.6, 0.3])
    res = vjp64(lambda o, i: o.softmax_cross_entropy(i["z"], i["y"]), {"z": z, "y": y}, ("z", "y"), 2.0)
    yhat = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(res.grads["z"], 2.0 * (yhat - y), rtol=1e-12)
    np.testing.assert_allclose(res.grads["y"], -2.0 * np.log(yhat), rtol=1e-12)


def test_conventions_at_zero() -> None:
    x = np.array([-1.0, 0.0, 1.0])
    expected = {
        "relu": [0.0, 0.0, 1.0],
        "leaky_relu": [LEAKY_RELU_SLOPE, LEAKY_RELU_SLOPE, 1.0],
        "abs": [-1.0, 0.0, 1.0],
        "maximum_zero": [0.0, 0.5, 1.0],
        "clamp_min_zero": [0.0, 1.0, 1.0],
        "elu": [math.exp(-1.0), 1.0, 1.0],
    }
    for op, want in expected.items():
        res = vjp64(lambda o, i, op=op: getattr(o, op)(i["x"]), {"x": x}, ("x",), np.ones(3))
        np.testing.assert_allclose(res.grads["x"], want, rtol=1e-15, err_msg=op)


# --------------------------------------------------------------------------------------
# Accumulation, identity, constants
# --------------------------------------------------------------------------------------


def test_input_used_twice_accumulates() -> None:
    x, u = np.array([1.0, -2.0, 3.0]), np.array([0.5, 1.0, -1.0])
    res = vjp64(lambda o, i: o.add(i["x"], i["x"]), {"x": x}, ("x",), u)
    np.testing.assert_array_equal(res.grads["x"], 2.0 * u)
    res = vjp64(lambda o, i: o.add(o.sin(i["x"]), o.square(i["x"])), {"x": x}, ("x",), u)
    np.testing.assert_allclose(res.grads["x"], u * (np.cos(x) + 2.0 * x), rtol=1e-14)


def test_weight_used_twice_accumulates() -> None:
    rng = np.random.default_rng(7)
    W, x, u = rng.normal(size=(3, 3)), rng.normal(size=3), rng.normal(size=3)
    fn = lambda o, i: o.matmul(i["W"], o.matmul(i["W"], i["x"]))  # noqa: E731
    res = vjp64(fn, {"W": W, "x": x}, ("W", "x"), u)
    # z = W h, h = W x: dJ/dW = u h^T + (W^T u) x^T
    np.testing.assert_allclose(res.grads["W"], np.outer(u, W @ x) + np.outer(W.T @ u, x), rtol=1e-12)
    np.testing.assert_allclose(res.grads["x"], W.T @ (W.T @ u), rtol=1e-12)
    ok, worst = fd_agrees(ENGINE, Case(fn, {"W": W, "x": x}, ("W", "x")))
    assert ok, worst


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_identity_forward_returns_cotangent(dtype: str) -> None:
    x, c, u = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([5.0]), np.array([[0.5, -1.0], [2.0, 3.0]])
    res = ENGINE.vjp(lambda o, i: i["x"], {"x": x, "c": c}, ["x", "c"], u, dtype)
    np.testing.assert_array_equal(res.output, x)
    np.testing.assert_array_equal(res.grads["x"], u)
    np.testing.assert_array_equal(res.grads["c"], np.zeros(1))  # unused input: zero gradient
    assert res.grads["x"].dtype == np.dtype(dtype)
    assert res.output.dtype == np.dtype(dtype)
    assert res.grads["x"] is not u


def test_constants_get_no_gradient_but_shape_the_result() -> None:
    W, x, u = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([1.0, 1.0]), np.array([1.0, 0.0])
    res = vjp64(lambda o, i: o.matmul(i["W"], i["x"]), {"W": W, "x": x}, ("x",), u)
    assert set(res.grads) == {"x"}
    np.testing.assert_array_equal(res.grads["x"], [1.0, 2.0])
    res = vjp64(lambda o, i: o.matmul(i["W"], i["x"]), {"W": W, "x": x}, (), u)
    assert res.grads == {}
    np.testing.assert_array_equal(res.output, [3.0, 7.0])


# --------------------------------------------------------------------------------------
# float32: float32 in, float32 arithmetic, float32 out
# --------------------------------------------------------------------------------------


def _float_dtypes(value: Any) -> list[np.dtype[Any]]:
    if isinstance(value, tuple | list):
        return [d for item in value for d in _float_dtypes(item)]
    if isinstance(value, np.ndarray | np.generic) and np.issubdtype(value.dtype, np.floating):
        return [value.dtype]
    if isinstance(value, float):
        return [np.dtype(np.float64)]
    return []


class DtypeSpyRules(Rules):
    """Records the float dtypes of everything every rule method returns."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[np.dtype[Any]]]] = []

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if callable(attr) and name.endswith(("_forward", "_backward", "_grad", "_argmax")):
            seen = super().__getattribute__("seen")

            def spy(*args: Any, **kwargs: Any) -> Any:
                result = attr(*args, **kwargs)
                seen.append((name, _float_dtypes(result)))
                return result

            return spy
        return attr


@pytest.mark.parametrize("op", ALL_OPS)
def test_float32_in_float32_arithmetic_and_out(op: str) -> None:
    case = make_case(op, np.random.default_rng(11))
    spy = DtypeSpyRules()
    adapter = NumpyEngineAdapter(rules=spy)
    out64 = ENGINE.forward(case.fn, case.inputs, "float64")
    u = np.random.default_rng(12).standard_normal(out64.shape)
    res = adapter.vjp(case.fn, case.inputs, case.wrt, u, "float32")
    names = {name for name, _ in spy.seen}
    assert any(n.endswith("_forward") for n in names)
    assert any(n.endswith("_backward") for n in names)
    for name, dtypes in spy.seen:
        assert all(d == np.float32 for d in dtypes), f"{name} returned {dtypes} from float32 inputs"
    assert res.output.dtype == np.float32
    assert all(g.dtype == np.float32 for g in res.grads.values())
    ref = ENGINE.vjp(case.fn, case.inputs, case.wrt, u, "float64")
    np.testing.assert_allclose(res.output, ref.output, rtol=1e-4, atol=1e-5)
    for name in case.wrt:
        np.testing.assert_allclose(res.grads[name], ref.grads[name], rtol=1e-3, atol=1e-4)


def test_float32_rounds_like_float32() -> None:
    fn = lambda o, i: o.add(o.add(i["a"], i["b"]), i["c"])  # noqa: E731
    inputs = {"a": np.array([1.0]), "b": np.array([1e-8]), "c": np.array([-1.0])}
    assert ENGINE.forward(fn, inputs, "float32")[0] == 0.0  # 1 + 1e-8 == 1 in float32
    assert ENGINE.forward(fn, inputs, "float64")[0] == pytest.approx(1e-8, rel=1e-6)


# --------------------------------------------------------------------------------------
# Negative controls: the same finite-difference check rejects wrong rules
# --------------------------------------------------------------------------------------


class TransposeForgotten(Rules):
    """dJ/dx = W delta instead of W^T delta for z = W x."""

    def matmul_backward(
        self, delta: np.ndarray, a: np.ndarray, b: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        da, db = super().matmul_backward(delta, a, b)
        return da, (a @ delta if a.ndim == 2 and b.ndim == 1 else db)


class NoRot180(Rules):
    """dJ/dX = full correlation of delta with K instead of rot180(K)."""

    def conv2d_input_grad(self, delta: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        kh, kw = k.shape
        padded = np.pad(delta, ((kh - 1, kh - 1), (kw - 1, kw - 1)))
        return engine_module._correlate_valid(padded, k)


class AvgPoolWithoutOneOverKSquared(Rules):
    """Average pool spreads delta, not delta / k^2."""

    def avg_pool2d_backward(self, delta: np.ndarray, x: np.ndarray, k: int, stride: int) -> np.ndarray:
        return super().avg_pool2d_backward(delta, x, k, stride) * (k * k)


class MaxPoolSpreads(Rules):
    """Max pool spreads delta / k^2 over the window instead of routing it to the argmax."""

    def max_pool2d_backward(
        self, delta: np.ndarray, x: np.ndarray, k: int, stride: int, argmax: tuple[np.ndarray, np.ndarray]
    ) -> np.ndarray:
        return super().avg_pool2d_backward(delta, x, k, stride)


class SigmoidPrimeIsS(Rules):
    """sigmoid' = s instead of s (1 - s)."""

    def sigmoid_backward(self, delta: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return delta * z


class SoftmaxForgetsUpstream(Rules):
    """dJ/dz = yhat - y, ignoring the upstream delta."""

    def softmax_cross_entropy_backward(
        self, delta: np.ndarray, z: np.ndarray, y: np.ndarray, cache: tuple[np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        _, dy = super().softmax_cross_entropy_backward(delta, z, y, cache)
        return cache[0] - y, dy


NEGATIVE_CONTROLS: list[tuple[type[Rules], Case]] = [
    (
        TransposeForgotten,
        Case(
            lambda o, i: o.matmul(i["W"], i["x"]),
            {
                "W": np.array([[1.0, 2.0, 0.5], [-3.0, 4.0, 1.0], [0.0, 2.0, -1.0]]),
                "x": np.array([1.0, -1.0, 2.0]),
            },
            ("W", "x"),
        ),
    ),
    (
        NoRot180,
        Case(
            lambda o, i: o.conv2d(i["x"], i["k"]),
            {"x": np.arange(16.0).reshape(4, 4) % 5, "k": np.array([[1.0, 2.0], [3.0, 4.0]])},
            ("x", "k"),
        ),
    ),
    (
        AvgPoolWithoutOneOverKSquared,
        Case(lambda o, i: o.avg_pool2d(i["x"], 2), {"x": np.arange(16.0).reshape(4, 4)}, ("x",)),
    ),
    (
        MaxPoolSpreads,
        Case(lambda o, i: o.max_pool2d(i["x"], 2), {"x": np.arange(16.0).reshape(4, 4) * 0.3}, ("x",)),
    ),
    (SigmoidPrimeIsS, Case(lambda o, i: o.sigmoid(i["x"]), {"x": np.array([-1.0, 0.5, 2.0])}, ("x",))),
    (
        SoftmaxForgetsUpstream,
        Case(
            lambda o, i: o.square(o.softmax_cross_entropy(i["z"], i["y"])),
            {"z": np.array([1.0, -0.5, 2.0]), "y": np.array([0.2, 0.5, 0.3])},
            ("z",),
        ),
    ),
]


@pytest.mark.parametrize(
    ("rules_cls", "case"), NEGATIVE_CONTROLS, ids=[c.__name__ for c, _ in NEGATIVE_CONTROLS]
)
def test_negative_control_wrong_rule_is_detected(rules_cls: type[Rules], case: Case) -> None:
    correct_ok, _ = fd_agrees(ENGINE, case)
    assert correct_ok, "the correct engine must pass on this case, or the control proves nothing"
    mutant = NumpyEngineAdapter(rules=rules_cls(), name=f"numpy-mutant-{rules_cls.__name__}")
    mutant_ok, worst = fd_agrees(mutant, case)
    assert not mutant_ok, f"{rules_cls.__name__} slipped through the finite-difference check"
    assert worst > 1e-2


def test_rule_returning_wrong_shape_raises() -> None:
    class WrongShape(Rules):
        def sum_backward(self, delta: np.ndarray, x: np.ndarray) -> np.ndarray:
            return np.asarray(delta)

    adapter = NumpyEngineAdapter(rules=WrongShape())
    with pytest.raises(GradientShapeError, match="'sum'"):
        adapter.vjp(lambda o, i: o.sum(i["x"]), {"x": np.ones((2, 2))}, ["x"], np.array(1.0), "float64")


# --------------------------------------------------------------------------------------
# Independence from the oracle's reference gradients
# --------------------------------------------------------------------------------------


def test_engine_source_imports_nothing_from_the_oracle_but_ops() -> None:
    tree = ast.parse(Path(engine_module.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute):
            called = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            assert called not in {"__import__", "import_module"}, "dynamic import in the engine"
    oracle_imports = {
        name
        for name in imported
        if name.split(".")[0] == "gradoracle" and not name.startswith("gradoracle.adapters")
    }
    assert oracle_imports <= {
        "gradoracle.ops",
        "gradoracle.ops.ALL_OPS",
        "gradoracle.ops.ELU_ALPHA",
        "gradoracle.ops.LEAKY_RELU_SLOPE",
    }
    assert not any("identit" in name or "reference" in name for name in imported)


def test_engine_calls_no_oracle_code_at_runtime() -> None:
    """No oracle module is loaded by the engine, and no oracle function runs inside it.

    ``oracle/__init__`` may import the identities itself (so ``sys.modules`` alone cannot
    tell), hence a profiler records the file of every Python function the engine calls.
    """
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        import numpy as np
        import gradoracle.ops
        before = set(sys.modules)
        from gradoracle.adapters.numpy_engine import NumpyEngineAdapter
        oracle_dir = str(Path(gradoracle.ops.__file__).parent)
        called = set()
        def profile(frame, event, arg):
            if event == "call" and frame.f_code.co_filename.startswith(oracle_dir):
                called.add(frame.f_code.co_filename + ":" + frame.f_code.co_name)
        e = NumpyEngineAdapter()
        mlp = lambda o, i: o.softmax_cross_entropy(o.matmul(i["W"], o.gelu(i["x"])), i["y"])
        cnn = lambda o, i: o.sum(o.avg_pool2d(o.max_pool2d(o.conv2d(i["a"], i["b"]), 2, 1), 2))
        sys.setprofile(profile)
        mlp_inputs = {"W": np.ones((2, 3)), "x": np.ones(3), "y": np.array([0.5, 0.5])}
        e.vjp(mlp, mlp_inputs, ["W", "x"], np.array(1.0), "float32")
        e.vjp(cnn, {"a": np.eye(6), "b": np.ones((2, 2))}, ["a", "b"], np.array(1.0), "float64")
        e.forward(cnn, {"a": np.eye(6), "b": np.ones((2, 2))}, "float64")
        sys.setprofile(None)
        new = sorted(
            m for m in set(sys.modules) - before
            if m.split(".")[0] == "gradoracle" and not m.startswith("gradoracle.adapters")
        )
        print(";".join(new + sorted(called)))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "", f"the engine used oracle code: {done.stdout}"
